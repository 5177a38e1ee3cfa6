"""Decode stage, video: one in-process decode pass that serves both the frame
analysis and the screenshots.

The analysis needs small gray frames; the screenshots need a handful of
full-resolution frames that are only known once the narration has been
aligned, after the pass. Streaming gray frames out of an ffmpeg process and
decoding again for the screenshots cost a second full decode, run after
transcription: at 1080p that was 30 % of the build (bench/RESULTS.md). Here
libavcodec runs in-process (PyAV, the binding faster-whisper already
installs), so while a frame is at hand the caller can keep it: the build keeps
the last frame before every content change, which is the settled picture any
screenshot of that moment shows. Kept frames are stored LZ4-compressed in the
decoder's own YUV layout (a 1080p terminal frame is ~0.2 MB; LZ4 compresses it in
~1 ms where zlib took ~10, and a long recording keeps hundreds) in an unlinked
temporary file, so memory stays flat in the recording's length; a screenshot no
kept frame can stand for is fetched by an exact second pass (:func:`iter_rgb_frames`).

The filters are ffmpeg's own (fps, transpose for rotated phone recordings), so
frame indexes and pixels are those of the command-line tool; where the source has
more frames a second than the analysis reads, the decoder skips the frames no
other frame is predicted from (see SKIM_MIN_SHARE) and the fps filter picks among
the rest. The analysis reads the luma plane of each frame in place;
pipeline/luma.py makes analysis pixels of just the part that changed. The same
input whitelist as every other read applies.
"""
from __future__ import annotations

import bisect
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import lz4.block
import numpy as np

from .decode import _INPUT_OPTS, AnalysisGeometry, DecodeError, _url, source_pixel_rate, stage_timeout
from .luma import TV_TO_PC, AreaScaler
from .model import MediaInfo

# 8-bit planar YUV: the analysis reads the luma plane, with no colour conversion.
_PLANAR_YUV = {"yuv420p", "yuv422p", "yuv444p", "yuvj420p", "yuvj422p", "yuvj444p", "yuv410p", "yuv411p",
               "yuv440p", "yuvj440p"}
# Frame layouts PyAV turns into an array and back without loss.
_STORABLE = {"yuv420p", "yuvj420p", "yuv422p", "yuv444p", "yuvj444p", "nv12", "rgb24", "bgr24", "gray"}
_RANGE_PC = 2  # AVCOL_RANGE_JPEG
# Compressed kept frames (on disk) at most; past it (a video playing on the screen changes
# every frame), the screenshots not kept are fetched by a second pass.
KEEP_BUDGET_BYTES = 256 * 1024 * 1024
# Niceness of the decoder's threads. Transcription runs beside the video pass and is the
# longer of the two (bench/RESULTS.md); given the cores first, it ends no later than alone,
# and the decoder, which can use every core, finishes the pass in the time left.
DECODER_NICE = 10
# libavcodec's frame threads cost CPU: one thread decodes a 720p or 1080p screen recording
# with 30-40 % less (bench/RESULTS.md, round 7). Beside transcription the decoder gets the
# cores transcription leaves (tiny.en takes one, transcribe.default_threads), but only one
# thread unless one thread would take more than half of transcription's time: while the
# source's pixels per second stay under ONE_THREAD_PIXEL_BUDGET. Measured on 2 EPYC cores:
# one thread decodes and analyses ~1.3 G screen pixels a second, and tiny.en on its one
# thread transcribes a second of speech in ~0.052 s (larger models take longer). So 720p30
# and 1080p15 decode on one thread; 1080p30 on the free cores, when there are two or more.
ONE_THREAD_PIXEL_BUDGET = 0.5 * 0.052 * 1.3e9
# Skimming: the decoder skips non-reference frames (most B-frames; no other frame is predicted
# from them, so the rest decode exactly as before) when the source has more frames a second
# than the analysis reads, at a steady rate (in a variable-rate one the frame after a skipped
# one may come seconds later). x264's default B-frames make half the frames of a screen
# recording non-reference, and skipping them halves the decoder's CPU, the video pass's
# largest cost (bench/RESULTS.md, round 12). Skimming must leave SKIM_MIN_SHARE of the
# analysis rate: a stream whose decoded frames fall below it over a window of SKIM_WINDOW_S
# of packets (an encoder that marks most frames non-reference) is decoded whole from there
# on. The decision depends only on the stream, so a second pass for screenshots gets the
# same frames.
SKIM_MIN_SHARE = 0.5
SKIM_WINDOW_S = 2.0
# Keyframes closer than this to the one before are not refreshes of a still picture (see
# VideoPass.keyframes): encoders space periodic keyframes seconds apart.
KEYFRAME_MIN_GAP_S = 1.0


class _Skim:
    """Whether the decoder skips non-reference frames, given what the pass has decoded."""

    def __init__(self, codec_context, geometry: AnalysisGeometry):
        self.codec_context = codec_context
        self.source_fps = geometry.steady_fps
        self.min_fps = SKIM_MIN_SHARE * geometry.fps
        self.window = max(8, round(SKIM_WINDOW_S * self.source_fps))
        self.on = self.source_fps > geometry.fps
        self._window_start = (0, 0)  # packets read, frames decoded when the window began
        if self.on:
            codec_context.skip_frame = "NONREF"

    def update(self, packets: int, decoded: int) -> None:
        """Given the pass's packets read and frames decoded so far, stop skimming once a
        window of packets gave too few frames."""
        read_before, decoded_before = self._window_start
        if not self.on or packets - read_before < self.window:
            return
        if (decoded - decoded_before) / (packets - read_before) * self.source_fps < self.min_fps:
            self.on = False
            self.codec_context.skip_frame = "DEFAULT"
        self._window_start = (packets, decoded)


def decoder_threads(info: MediaInfo, threads: int, speech_threads: int, cores: int) -> int:
    """Decoder threads for the video pass of ``info``. ``threads``: those it may use with
    no transcription beside it (0: libavcodec's choice); ``cores``: the build's, of which
    transcription takes ``speech_threads`` when the recording has audio."""
    if not info.has_audio:
        return threads
    free = cores - speech_threads
    if free >= 2 and source_pixel_rate(info) > ONE_THREAD_PIXEL_BUDGET:
        return free
    return 1


@dataclass(frozen=True)
class _Packed:
    """One kept frame: where its compressed pixels are in the spill file, and what turns
    them back into RGB."""

    offset: int
    size: int
    shape: tuple[int, ...]
    format: str
    colorspace: int
    color_range: int


def _transposes(rotation: int) -> list[tuple[str, str]]:
    """ffmpeg's autorotation filters for a display matrix rotation (degrees, counter-clockwise)."""
    theta = (-rotation) % 360
    if theta == 90:
        return [("transpose", "clock")]
    if theta == 180:
        return [("hflip", ""), ("vflip", "")]
    if theta == 270:
        return [("transpose", "cclock")]
    return []


class VideoPass:
    """Iterate to get the gray analysis frames at ``geometry.fps``; call :meth:`keep`
    for the frame just yielded or the one before it to hold it for a screenshot.

    Raises DecodeError (after the last frame) when the pass ran out of time, or when
    the frames stop well before the length the video track declares: a file cut
    short must fail, not yield an SOP of its first half.
    """

    def __init__(self, path: Path, geometry: AnalysisGeometry, timeout_s: float | None = None,
                 analysis: bool = True, keep_budget: int = KEEP_BUDGET_BYTES, threads: int = 0):
        self.path, self.geometry, self.analysis = Path(path), geometry, analysis
        self.threads = threads  # decoder threads; 0: libavcodec's choice (one per core)
        self.timeout_s = timeout_s if timeout_s is not None else stage_timeout(
            geometry.duration_s, geometry.source_pixel_rate)
        self.count = 0
        self.packets = self.decoded = 0  # read, and decoded (not skimmed), for benchmarks and tests
        # Timestamps of the keyframes after the first frame that follow the previous keyframe
        # by at least KEYFRAME_MIN_GAP_S (in an intra-only stream every frame is a keyframe,
        # and a still screen is coded the same each time); :attr:`keyframes` in seconds.
        self._keyframe_pts: list[int] = []
        self._time_base = None
        self._shown: tuple[int | None, ...] = (None, None, None)  # source timestamps of the last three frames
        self.kept: dict[int, _Packed] = {}
        self.kept_bytes = 0
        # Kept frames go to an unlinked temporary file (made on the first), not memory: their
        # number grows with the recording (about one per step), the process's memory must not.
        self._spill = None
        self.keep_budget = keep_budget
        self._full: dict[int, object] = {}  # index -> full-resolution av.VideoFrame (current, previous)
        self.scaler: AreaScaler | None = None

    def _scaler(self, seen) -> AreaScaler:
        name = seen.format.name
        limited = name in _PLANAR_YUV and seen.color_range != _RANGE_PC and not name.startswith("yuvj")
        return AreaScaler((seen.height, seen.width), (self.geometry.height, self.geometry.width),
                          TV_TO_PC if limited else None)

    # ------------------------------------------------------------ keeping

    def keep(self, index: int) -> bool:
        """Hold frame ``index`` (the current or the previous one); False once the budget is spent."""
        if index in self.kept:
            return True
        frame = self._full.get(index)
        if frame is None:
            raise ValueError(f"frame {index} is no longer at hand")
        if self.kept_bytes >= self.keep_budget:
            return False
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(prefix="sopline-frames-")
        packed, data = _pack(frame, offset=self.kept_bytes)  # appended: the file ends there
        self._spill.seek(packed.offset)
        self._spill.write(data)
        self.kept[index] = packed
        self.kept_bytes += len(data)
        return True

    def rgb(self, index: int) -> np.ndarray:
        """A kept frame as (height, width, 3) uint8 RGB."""
        packed = self.kept[index]
        self._spill.seek(packed.offset)
        return _unpack(packed, self._spill.read(packed.size))

    def close(self) -> None:
        """Drop the kept frames (the spill file goes with them)."""
        if self._spill is not None:
            self._spill.close()
        self.kept.clear()

    @property
    def keyframes(self) -> list[float]:
        """When the encoder coded a keyframe that refreshes the picture (s)."""
        return [float(pts * self._time_base) for pts in self._keyframe_pts]

    def refreshed(self, index: int) -> bool:
        """Whether analysis frame ``index`` shows an encoder keyframe or the source frame right
        after one, seen from frame ``index`` - 1: the keyframe codes the whole picture afresh,
        and the frame after it still settles towards it. Each frame carries its source
        timestamp through the filters. Asked while the pass is at ``index``: the decoder hands
        out frames in presentation order, so every keyframe up to it is known."""
        if index != self.count - 1 or self._shown[2] is None:
            return False
        since = self._shown[0] if self._shown[0] is not None else float("-inf")
        after = bisect.bisect_right(self._keyframe_pts, since)
        return after < len(self._keyframe_pts) and self._keyframe_pts[after] <= self._shown[2]

    # ------------------------------------------------------------ decoding

    def __iter__(self) -> Iterator[np.ndarray]:
        """The source luma plane of each frame: a read-only view of the decoder's buffer (the
        view holds the frame), no copy. :attr:`scaler` turns it into analysis pixels; it is
        set before the first plane is yielded."""
        for index, seen, full in self._frames():
            self._full = {index - 1: self._full.get(index - 1), index: full} if index else {index: full}
            self._shown = (*self._shown[1:], seen.opaque) if index else (None, None, seen.opaque)
            self.count = index + 1
            if self.scaler is None:
                self.scaler = self._scaler(seen)
            yield _luma(seen)
        if self.count and self.count - 1 in self._full:  # the last frame: the screen as the recording ends
            self.keep(self.count - 1)
        self._full = {}
        expected = self.geometry.duration_s * self.geometry.fps
        if expected - self.count >= self.geometry.fps and self.count < 0.8 * expected:
            raise DecodeError(f"the video data stops after {self.count / self.geometry.fps:.1f} s of the "
                              f"{self.geometry.duration_s:.1f} s the file declares (cut short or damaged)")

    def _frames(self) -> Iterator[tuple[int, object, object]]:
        import av

        try:
            yield from self._decoded()
        except av.error.FFmpegError as exc:  # a failure of the libraries, not of ours: this file's problem
            raise DecodeError(f"cannot decode the video: {_reason(exc)}") from None

    def _decoded(self) -> Iterator[tuple[int, object, object]]:
        import av

        deadline = time.monotonic() + self.timeout_s
        try:
            container = av.open(_url(self.path), container_options=dict(_INPUT_OPTS), metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise DecodeError(f"cannot open the video: {_reason(exc)}") from None
        with container:
            videos = [s for s in container.streams.video
                      if not (s.disposition & av.stream.Disposition.attached_pic)]
            if not videos:
                return
            stream = videos[0]
            stream.thread_type = "AUTO"
            if self.threads:  # --jobs: each worker decodes with its share of the cores
                stream.codec_context.thread_count = self.threads
            skim = _Skim(stream.codec_context, self.geometry)
            self._time_base = stream.time_base
            graph = sinks = None
            index = 0
            for packet in container.demux(stream):
                if time.monotonic() > deadline:
                    raise self._late()
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    continue  # a damaged packet: the decoder conceals it, as the ffmpeg tool does
                self.packets += 1
                self.decoded += len(decoded)
                skim.update(self.packets, self.decoded)
                for frame in decoded:
                    if graph is None:
                        graph, source, sinks = self._graph(stream, frame)
                        _lower_decoder_priority()  # its threads exist once it has decoded a frame
                        last_key = frame.time
                    elif frame.key_frame and frame.pts is not None:
                        if last_key is None or frame.time - last_key >= KEYFRAME_MIN_GAP_S:
                            self._keyframe_pts.append(frame.pts)
                        last_key = frame.time
                    frame.opaque = frame.pts  # kept by the filters: which source frame each one shows
                    source.push(frame)
                    for seen, full in _pull(sinks):
                        yield index, seen, full
                        index += 1
                        if time.monotonic() > deadline:
                            raise self._late()
            if graph is not None:
                source.push(None)
                for seen, full in _pull(sinks):
                    yield index, seen, full
                    index += 1

    def _late(self) -> DecodeError:
        limit = f"{self.timeout_s:.0f}" if self.timeout_s >= 10 else f"{self.timeout_s:.2g}"
        return DecodeError(f"ffmpeg took longer than {limit} s decoding the video and was stopped "
                           f"(a hung or pathologically slow decode)")  # its libraries, in this process

    def _graph(self, stream, first):
        import av

        graph = av.filter.Graph()
        source = graph.add_buffer(width=first.width, height=first.height, format=first.format.name,
                                  time_base=stream.time_base)
        chain = [graph.add("fps", f"{self.geometry.fps:g}")]
        chain += [graph.add(name, args) for name, args in _transposes(int(round(first.rotation or 0)) % 360)]
        _link([source, *chain])
        last = chain[-1]
        sinks = []
        if self.analysis and first.format.name not in _PLANAR_YUV:  # RGB-like: a gray copy to analyse
            split, gray, gray_sink, full_sink = (graph.add("split", "2"), graph.add("format", "gray"),
                                                 graph.add("buffersink"), graph.add("buffersink"))
            last.link_to(split)
            split.link_to(gray, 0, 0)
            gray.link_to(gray_sink)
            split.link_to(full_sink, 1, 0)
            sinks = [gray_sink, full_sink]
        else:  # the analysis reads the luma plane of the frame itself
            full_sink = graph.add("buffersink")
            last.link_to(full_sink)
            sinks = [full_sink]
        graph.configure()
        return graph, source, sinks


def _lower_decoder_priority() -> None:
    """Give libavcodec's threads of this process (named "av:<codec>:..." by recent FFmpeg)
    DECODER_NICE. Linux only: elsewhere a thread's priority is not set by its id; there, and
    with a libavcodec that leaves its threads unnamed, they keep the process's priority."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm", encoding="utf-8", errors="replace") as comm:
                if not comm.read().startswith("av:"):
                    continue
            tid = int(task)
            os.setpriority(os.PRIO_PROCESS, tid, max(DECODER_NICE, os.getpriority(os.PRIO_PROCESS, tid)))
        except (OSError, ValueError):
            continue  # the thread ended meanwhile


def _link(nodes) -> None:
    for a, b in zip(nodes, nodes[1:]):
        a.link_to(b)


def _pull(sinks) -> Iterator[tuple[object, object]]:
    """(frame to analyse, full frame) pairs; the same frame twice when it is planar YUV."""
    import av

    while True:
        try:
            frames = [sink.pull() for sink in sinks]
        except (av.error.BlockingIOError, av.error.EOFError):
            return
        yield frames[0], frames[-1]


def _luma(frame) -> np.ndarray:
    """The first plane of a frame as a (height, width) view of the decoder's buffer (no copy)."""
    plane = frame.planes[0]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:frame.height, :frame.width]


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200]


def _pack(frame, offset: int) -> tuple[_Packed, bytes]:
    if frame.format.name not in _STORABLE or frame.width % 2 or frame.height % 2:
        frame = frame.reformat(format="rgb24")  # PyAV has no array form of odd-sized subsampled frames
    arr = np.ascontiguousarray(frame.to_ndarray())  # rows of odd-sized frames come padded
    data = lz4.block.compress(arr)  # the size is stored with it
    return _Packed(offset, len(data), arr.shape, frame.format.name, int(frame.colorspace),
                   int(frame.color_range)), data


def _unpack(packed: _Packed, data: bytes) -> np.ndarray:
    import av

    arr = np.frombuffer(lz4.block.decompress(data), np.uint8).reshape(packed.shape)
    if packed.format == "rgb24":
        return arr
    frame = av.VideoFrame.from_ndarray(arr, format=packed.format)
    frame.colorspace, frame.color_range = packed.colorspace, packed.color_range
    return frame.to_ndarray(format="rgb24")


def iter_rgb_frames(path: Path, info: MediaInfo, geometry: AnalysisGeometry,
                    indexes: Sequence[int], timeout_s: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Full-resolution RGB frames at the given analysis frame indexes, in index order, in
    one pass that stops after the last (a caller can encode each and let it go)."""
    wanted = sorted(set(indexes))
    if not wanted:
        return
    run = VideoPass(path, geometry, timeout_s, analysis=False)
    frames = run._frames()  # noqa: SLF001 - the same pass, without analysis frames
    try:
        position = 0
        for index, _, full in frames:
            if index == wanted[position]:
                yield index, full.to_ndarray(format="rgb24")
                position += 1
                if position == len(wanted):
                    return
    finally:
        frames.close()


def grab_rgb_frames(path: Path, info: MediaInfo, geometry: AnalysisGeometry,
                    indexes: Sequence[int], timeout_s: float | None = None) -> dict[int, np.ndarray]:
    """:func:`iter_rgb_frames` collected into a dict (for a few frames only)."""
    return dict(iter_rgb_frames(path, info, geometry, indexes, timeout_s))
