"""Decode stage: probe a recording, stream analysis frames and the narration audio.

Frames are streamed one at a time from an ffmpeg subprocess (never the whole
video in memory). Analysis frames are grayscale, at most ANALYSIS_MAX_W x
ANALYSIS_MAX_H and ANALYSIS_MAX_FPS: text on a 720p screen still changes
several pixels per typed character at that size, and 10 frames a second times
a change to 0.1 s, far inside the 1.5 s a reader (and the scorer) cares about,
while costing a small fraction of decoding itself. The ffmpeg binary is the one
on PATH, else the one shipped in the imageio-ffmpeg wheel.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import ffmpeg
import numpy as np

from .model import MediaInfo

ANALYSIS_MAX_W = 960
ANALYSIS_MAX_H = 600
ANALYSIS_MAX_FPS = 10.0
AUDIO_RATE = 16000
# Only local files may be opened: a crafted playlist must not reach the network.
_INPUT_OPTS = {"protocol_whitelist": "file,pipe"}


class DecodeError(Exception):
    """The recording cannot be read; the message says why in one line."""


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


def probe(path: Path) -> MediaInfo:
    """Container facts via PyAV (the imageio-ffmpeg wheel has no ffprobe)."""
    import av

    if not path.is_file():
        raise DecodeError("not a file")
    if path.stat().st_size == 0:
        raise DecodeError("file is empty (0 bytes)")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            video = container.streams.video[0] if container.streams.video else None
            has_audio = bool(container.streams.audio)
            duration = container.duration / 1e6 if container.duration else 0.0
            if video is None:
                return MediaInfo(duration, 0, 0, 0.0, False, has_audio)
            if not duration and video.duration and video.time_base:
                duration = float(video.duration * video.time_base)
            rate = video.average_rate or video.guessed_rate or video.base_rate
            fps = float(rate) if rate else 0.0
            width, height = video.codec_context.width, video.codec_context.height
            rotation = _rotation(container)
    except av.error.FFmpegError as exc:
        raise DecodeError(f"not a readable video ({exc.strerror or exc})") from exc
    if rotation in (90, 270):
        width, height = height, width
    return MediaInfo(round(duration, 3), width, height, round(fps, 3), True, has_audio, rotation)


def _rotation(container) -> int:
    """Display rotation of the first video frame, in degrees (0 when unknown)."""
    try:
        for frame in container.decode(video=0):
            return int(round(getattr(frame, "rotation", 0) or 0)) % 360
    except Exception:
        return 0
    return 0


@dataclass(frozen=True)
class AnalysisGeometry:
    """Size and rate at which frames are analysed, and how they map to the source."""

    width: int
    height: int
    fps: float
    scale: float  # source pixels per analysis pixel


def analysis_geometry(info: MediaInfo) -> AnalysisGeometry:
    scale = max(1.0, info.width / ANALYSIS_MAX_W, info.height / ANALYSIS_MAX_H)
    width = max(2, int(info.width / scale) // 2 * 2)
    height = max(2, int(info.height / scale) // 2 * 2)
    fps = min(ANALYSIS_MAX_FPS, info.fps) if info.fps > 0 else ANALYSIS_MAX_FPS
    return AnalysisGeometry(width, height, fps, info.width / width)


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


def _run(stream_spec) -> tuple[subprocess.Popen, _StderrSink]:
    args = ffmpeg.compile(stream_spec, cmd=ffmpeg_binary())
    args = [args[0], "-nostdin", "-hide_banner", "-loglevel", "error", *args[1:]]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, _StderrSink(proc.stderr)


def _read_exact(stream, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = stream.read(size - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _finish(proc: subprocess.Popen, sink: _StderrSink, what: str, *, strict: bool) -> None:
    proc.stdout.close()
    code = proc.wait()
    if code != 0 and strict:
        raise DecodeError(f"ffmpeg could not decode the {what}: {sink.last_line() or f'exit {code}'}")


def stream_gray_frames(path: Path, geometry: AnalysisGeometry) -> Iterator[np.ndarray]:
    """Yield analysis frames (uint8, height x width), one at a time, at geometry.fps."""
    spec = (ffmpeg.input(str(path), **_INPUT_OPTS)
            .video.filter("fps", fps=geometry.fps)
            .filter("scale", geometry.width, geometry.height, flags="area")
            .output("pipe:", format="rawvideo", pix_fmt="gray"))
    proc, sink = _run(spec)
    size = geometry.width * geometry.height
    try:
        while True:
            buf = _read_exact(proc.stdout, size)
            if len(buf) < size:
                break
            yield np.frombuffer(buf, np.uint8).reshape(geometry.height, geometry.width)
    finally:
        if proc.poll() is None and not proc.stdout.closed:
            # the consumer stopped early: do not leave ffmpeg running
            proc.kill()
        _finish(proc, sink, "video", strict=False)


def grab_rgb_frames(path: Path, info: MediaInfo, geometry: AnalysisGeometry,
                    indexes: Sequence[int]) -> dict[int, np.ndarray]:
    """Full-resolution RGB frames at the given analysis frame indexes, in one decode pass.

    The same fps filter as the analysis stream puts frames on the same grid, so an
    index chosen during analysis shows exactly the frame that was analysed.
    """
    wanted = sorted(set(indexes))
    if not wanted:
        return {}
    expr = "+".join(f"eq(n,{n})" for n in wanted)
    spec = (ffmpeg.input(str(path), **_INPUT_OPTS)
            .video.filter("fps", fps=geometry.fps)
            .filter("select", expr)
            .filter("scale", info.width, info.height)
            .output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough"))
    proc, sink = _run(spec)
    size = info.width * info.height * 3
    out: dict[int, np.ndarray] = {}
    try:
        for n in wanted:
            buf = _read_exact(proc.stdout, size)
            if len(buf) < size:
                break
            out[n] = np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
    finally:
        _finish(proc, sink, "video", strict=False)
    return out


def read_audio(path: Path) -> np.ndarray:
    """The first audio track as 16 kHz mono float32 in [-1, 1]."""
    spec = (ffmpeg.input(str(path), **_INPUT_OPTS)
            .audio.output("pipe:", format="s16le", acodec="pcm_s16le", ac=1, ar=AUDIO_RATE))
    proc, sink = _run(spec)
    with tempfile.TemporaryFile() as spool:  # keeps peak memory to one float32 copy
        shutil.copyfileobj(proc.stdout, spool, 1 << 20)
        _finish(proc, sink, "audio", strict=True)
        spool.seek(0)
        pcm = np.frombuffer(spool.read(), np.int16)
    return pcm.astype(np.float32) / 32768.0


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
