"""Decode stage: probe a recording, read the narration audio, and the geometry and
time limits of the video pass (frames.py decodes the video itself, in-process).

Analysis frames are grayscale, at most ANALYSIS_MAX_W x ANALYSIS_MAX_H and
ANALYSIS_MAX_FPS: text on a 720p screen still changes several pixels per typed
character at that size, and 10 frames a second times a change to 0.1 s, far
inside the 1.5 s a reader (and the scorer) cares about. The audio is read by an
ffmpeg subprocess; the ffmpeg binary is the one on PATH, else the one shipped in
the imageio-ffmpeg wheel.

Recordings come from pull requests, so they are untrusted: files are opened by
absolute ``file:`` URL (a name like ``-x.mp4`` or ``http:x.mp4`` stays a file
name), only the local-file protocol and the MP4/MOV and Matroska/WebM demuxers
are allowed (a playlist renamed .mp4 cannot reach the network or other files),
ffmpeg runs without a shell, and every pass has a time limit scaled to the
recording after which it is stopped and reported in one line.
"""
from __future__ import annotations

import mmap
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from .model import MediaInfo

ANALYSIS_MAX_W = 960
ANALYSIS_MAX_H = 600
ANALYSIS_MAX_FPS = 10.0
AUDIO_RATE = 16000
# The demuxers of the accepted suffixes (.mp4 .mov / .mkv .webm), as ffmpeg names them,
# plus plain audio files (mp3, wav) for the audio reader of the library API.
SUPPORTED_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,mp3,wav"
# Only local files may be opened, and only as these containers: a crafted
# playlist or concat list must not reach the network or other files.
_INPUT_OPTS = {"protocol_whitelist": "file", "format_whitelist": SUPPORTED_FORMATS}
# Larger frames are refused before decoding: one 8K RGB frame is already 100 MB.
MAX_PIXELS = 7680 * 4320
# Time limit of one ffmpeg pass: TIMEOUT_FLOOR_S plus TIMEOUT_PER_MEDIA_S per second
# of media, scaled up for video heavier than 1080p30. ffmpeg decodes screen
# recordings many times faster than real time, so only a hung one gets there.
TIMEOUT_FLOOR_S = 120.0
TIMEOUT_PER_MEDIA_S = 2.0
_REFERENCE_PIXEL_RATE = 1920 * 1080 * 30
# Packets read at most to decode the first frame while probing.
_PROBE_MAX_PACKETS = 600


class DecodeError(OSError):
    """The recording cannot be read as a video; the message says why in one line.

    An OSError, like any other unreadable file, so callers that turn I/O errors
    into a per-recording failure report this one the same way."""


@dataclass(frozen=True)
class Probe(MediaInfo):
    """MediaInfo plus what decoding needs beyond it.

    ``nominal_fps``: a variable-frame-rate recording (screen recorders write a
    frame only when something changed) has a low average rate but changes as
    fast as its nominal rate, so analysis samples at the nominal one.
    ``video_duration_s``: the length the video track declares, to notice a file
    whose frame data stops early.
    """

    nominal_fps: float = 0.0
    video_duration_s: float = 0.0


def ffmpeg_binary() -> str:
    """ffmpeg on PATH, else the static build inside the imageio-ffmpeg wheel."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise DecodeError(f"no ffmpeg binary found ({exc})") from exc


def _url(path: Path) -> str:
    """The ``file:`` URL ffmpeg opens: absolute, so no name is read as an option or protocol."""
    return "file:" + os.path.abspath(path)


# ------------------------------------------------------------------- probe

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"version https://git-lfs", "a Git LFS pointer (run git lfs pull to fetch the recording)"),
    (b"#EXTM3U", "a playlist (m3u)"),
    (b"ffconcat", "an ffmpeg concat list"),
)


def _sniff(path: Path) -> str | None:
    """What a file that is plainly not a video is, from its first bytes; None otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text and all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return "a text file"
    return None


def probe(path: Path) -> Probe:
    """Container facts via PyAV (the imageio-ffmpeg wheel has no ffprobe), checked
    enough that decoding will not fail later for a reason visible now: the file is
    a supported container with a decodable video track of a sane size."""
    import av

    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise DecodeError(f"cannot read the file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError("not a regular file")
    if st.st_size == 0:
        raise DecodeError("file is empty (0 bytes)")
    kind = _sniff(path)
    if kind:
        raise DecodeError(f"not a video: {kind}")
    try:
        with av.open(_url(path), container_options=dict(_INPUT_OPTS), metadata_errors="ignore") as container:
            return _inspect(container)
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV parsing untrusted bytes: any failure is this file's
        hint = _mp4_index_problem(path)
        if hint:
            raise DecodeError(hint) from None
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise DecodeError(f"not a readable MP4/MOV/MKV/WebM video ({reason}); truncated, "
                          f"damaged or another format") from None


def _mp4_index_problem(path: Path) -> str | None:
    """Why an MP4/MOV that ffmpeg cannot open has no usable index (moov atom), from
    its top-level boxes; None when it is not an MP4 or the index is there."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if f.read(8)[4:8] != b"ftyp":
                return None
            offset, kinds = 0, []
            while offset + 8 <= size:
                f.seek(offset)
                head = f.read(16)
                box, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if box == 1 and len(head) == 16:
                    box = int.from_bytes(head[8:16], "big")
                elif box == 0:
                    box = size - offset
                if box < 8:
                    return None
                kinds.append(kind)
                if offset + box > size:
                    if b"moov" in kinds[:-1]:
                        return None
                    name = kind.decode("latin-1") if kind.isalnum() else "?"
                    return (f"the file is cut short: it ends inside its '{name}' box, before the "
                            f"index (moov atom) a player needs; was the copy or recording interrupted?")
                offset += box
    except OSError:
        return None
    if b"moov" not in kinds:
        return "the MP4 has no index (moov atom): the recording was never finalised"
    return None


def _inspect(container) -> Probe:
    import av

    videos = [s for s in container.streams.video
              if not (s.disposition & av.stream.Disposition.attached_pic)]  # cover art is not video
    has_audio = bool(container.streams.audio)
    duration = container.duration / 1e6 if container.duration else 0.0
    if not videos:
        return Probe(round(duration, 3), 0, 0, 0.0, False, has_audio)
    video = videos[0]
    if video.codec_context is None:
        if video.frames:
            raise DecodeError("the video codec is not supported (ffmpeg has no decoder for it)")
        raise DecodeError("the video track cannot be decoded (unknown codec or damaged index/moov atom)")
    width, height = video.codec_context.width, video.codec_context.height
    if width <= 0 or height <= 0:
        raise DecodeError("the video track has no picture size (damaged index/moov atom?)")
    if width * height > MAX_PIXELS:
        raise DecodeError(f"the video is {width}x{height}, larger than the supported 8K (7680x4320)")
    video_duration = float(video.duration * video.time_base) if video.duration and video.time_base else 0.0
    if not duration:
        duration = video_duration or _demuxed_duration(container, video)
    rate = video.average_rate or video.guessed_rate or video.base_rate
    fps = float(rate) if rate else 0.0
    nominal = max(float(video.guessed_rate or 0), float(video.base_rate or 0), fps)
    rotation = _first_frame_rotation(container, video)
    if rotation in (90, 270):
        width, height = height, width
    return Probe(round(duration, 3), width, height, round(fps, 3), True, has_audio, rotation,
                 round(nominal, 3), round(video_duration or duration, 3))


def _first_frame_rotation(container, video) -> int:
    """Decode the first frame (so an undecodable track fails here, in one line) and
    return its display rotation in degrees."""
    import av

    packets = 0
    for packet in container.demux(video):
        packets += 1
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            frames = []
        for frame in frames:
            return int(round(getattr(frame, "rotation", 0) or 0)) % 360
        if packets >= _PROBE_MAX_PACKETS:
            break
    raise DecodeError("no video frame could be decoded (damaged or truncated video data)")


def _demuxed_duration(container, video) -> float:
    """Duration from the last packet of a stream, for containers that do not declare
    one (a WebM from a browser's MediaRecorder): demuxing reads, it does not decode."""
    end = 0.0
    for packet in container.demux(video):
        if packet.pts is not None and packet.time_base:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    container.seek(0)
    return end


def _media_seconds(path: Path) -> float:
    """The duration of a recording, for a time limit: declared, else demuxed; 0 when unreadable."""
    import av

    try:
        with av.open(_url(path), container_options=dict(_INPUT_OPTS), metadata_errors="ignore") as container:
            if container.duration:
                return container.duration / 1e6
            streams = list(container.streams.audio) or list(container.streams.video)
            return _demuxed_duration(container, streams[0]) if streams else 0.0
    except Exception:  # noqa: BLE001 - the decode itself will report what is wrong
        return 0.0


# ---------------------------------------------------------------- geometry

@dataclass(frozen=True)
class AnalysisGeometry:
    """Size and rate at which frames are analysed, and how they map to the source."""

    width: int
    height: int
    fps: float
    scale: float  # source pixels per analysis pixel
    duration_s: float = 0.0  # the video track's declared length, 0 if unknown
    source_pixel_rate: float = 0.0  # source pixels per second, for time limits
    # The source's frame rate if it is steady (its average within 10 % of its nominal rate),
    # else 0: a variable-rate recording may hold one frame for seconds, so none is skimmed.
    steady_fps: float = 0.0


def analysis_geometry(info: MediaInfo) -> AnalysisGeometry:
    scale = max(1.0, info.width / ANALYSIS_MAX_W, info.height / ANALYSIS_MAX_H)
    width = max(2, int(info.width / scale) // 2 * 2)
    height = max(2, int(info.height / scale) // 2 * 2)
    rate = max(info.fps, getattr(info, "nominal_fps", 0.0))
    fps = min(ANALYSIS_MAX_FPS, rate) if rate > 0 else ANALYSIS_MAX_FPS
    duration = getattr(info, "video_duration_s", 0.0) or info.duration_s
    steady = info.fps if info.fps >= 0.9 * rate else 0.0
    return AnalysisGeometry(width, height, fps, info.width / width, duration, source_pixel_rate(info), steady)


def source_pixel_rate(info: MediaInfo) -> float:
    """Source pixels decoded per second of media: every frame is decoded, at the average rate."""
    return float(info.width * info.height * max(info.fps, 1.0))


def stage_timeout(duration_s: float, pixel_rate: float = 0.0) -> float:
    """Wall-clock limit, in seconds, of one ffmpeg pass over ``duration_s`` of media."""
    load = max(1.0, pixel_rate / _REFERENCE_PIXEL_RATE)
    return TIMEOUT_FLOOR_S + TIMEOUT_PER_MEDIA_S * max(0.0, duration_s) * load


# ------------------------------------------------------------ ffmpeg runs

_LOG_PREFIX = re.compile(r"\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*")


class _StderrSink:
    """Collects ffmpeg's stderr on a thread so the pipe never fills and blocks it."""

    def __init__(self, stream):
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream):
        for chunk in iter(lambda: stream.read(4096), b""):
            if sum(map(len, self._chunks)) < 65536:
                self._chunks.append(chunk)

    def last_line(self) -> str:
        self._thread.join(timeout=5)
        lines = [ln.strip() for ln in b"".join(self._chunks).decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1] if lines else ""


class _Ffmpeg:
    """One ffmpeg pass: the process, its stderr, and a watchdog that kills it when
    the pass outlives its time limit (a hung decode must not hang the build)."""

    def __init__(self, stream_spec, path: Path, what: str, timeout_s: float):
        args = ffmpeg.compile(stream_spec, cmd=ffmpeg_binary())
        args = [args[0], "-nostdin", "-hide_banner", "-loglevel", "error", *args[1:]]
        self.path, self.what, self.timeout_s = Path(path), what, timeout_s
        self.timed_out = False
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, shell=False)
        self._sink = _StderrSink(self.proc.stderr)
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def stdout(self):
        return self.proc.stdout

    def _expire(self) -> None:
        if self.proc.poll() is None:
            self.timed_out = True
            self.proc.kill()

    def abort(self) -> None:
        """Stop ffmpeg early (the reader has what it needs, or failed)."""
        self._timer.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.stdout.close()
        self.proc.wait()

    def finish(self, *, strict: bool) -> None:
        """Wait for ffmpeg; raise DecodeError if it was killed for time, or (strict)
        if it failed."""
        self.proc.stdout.close()
        code = self.proc.wait()
        self._timer.cancel()
        if self.timed_out:
            limit = f"{self.timeout_s:.0f}" if self.timeout_s >= 10 else f"{self.timeout_s:.2g}"
            raise DecodeError(f"ffmpeg took longer than {limit} s {self.what} and was "
                              f"stopped (a hung or pathologically slow decode)")
        if code != 0 and strict:
            raise DecodeError(f"ffmpeg failed {self.what}: {self.problem() or f'exit status {code}'}")

    def problem(self) -> str:
        """ffmpeg's last error line, without machine paths or memory addresses (it may
        end up in index.json, which must be deterministic and path-free)."""
        line = _LOG_PREFIX.sub("", self._sink.last_line())
        for text in (_url(self.path), os.path.abspath(self.path), str(self.path)):
            line = line.replace(text, self.path.name)
        line = " ".join(line.split())
        return line if len(line) <= 200 else line[:199] + "\u2026"


def _input(path: Path):
    return ffmpeg.input(_url(path), **_INPUT_OPTS)


def read_audio_pcm(path: Path, duration_s: float | None = None, timeout_s: float | None = None) -> np.ndarray:
    """The first audio track as 16 kHz mono int16, memory-mapped from an unlinked temp
    file: a long narration is paged in piece by piece as it is used, so memory stays
    flat in the recording's length."""
    spec = (_input(path)
            .audio.output("pipe:", format="s16le", acodec="pcm_s16le", ac=1, ar=AUDIO_RATE))
    if timeout_s is None:
        timeout_s = stage_timeout(_media_seconds(path) if duration_s is None else duration_s)
    run = _Ffmpeg(spec, path, "reading the audio", timeout_s)
    with tempfile.TemporaryFile() as spool:
        try:
            shutil.copyfileobj(run.stdout, spool, 1 << 20)
        except BaseException:
            run.abort()
            raise
        run.finish(strict=True)
        size = spool.tell() // 2 * 2
        if size == 0:
            return np.zeros(0, np.int16)
        return np.memmap(spool, dtype=np.int16, mode="r", shape=(size // 2,))  # the map keeps the file


def release_pages(array: np.ndarray) -> None:
    """Drop the pages of a memory-mapped array (as `read_audio_pcm` returns) from this
    process's resident memory once read: they stay in the page cache and are read again
    if used. Touched pages otherwise stay resident, 58 MB for 30 minutes of narration."""
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mapped, "madvise"):
        mapped.madvise(mmap.MADV_DONTNEED)


def read_audio(path: Path, duration_s: float | None = None, timeout_s: float | None = None) -> np.ndarray:
    """The first audio track as 16 kHz mono float32 in [-1, 1]."""
    audio = read_audio_pcm(path, duration_s, timeout_s).astype(np.float32)
    audio *= 1.0 / 32768.0
    return audio


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
