"""The transcribe stage in its own process, serving every recording of a build.

Transcription (CTranslate2 plus faster-whisper's Python around it) and the video
analysis each want a core. In one process they contend for the GIL and the
build took 1.2-1.4x as long as transcription alone (bench/RESULTS.md); in a
child process each has its own interpreter. The child loads the model once
and reads the audio itself, so the narration never sits in the parent's
memory either. Workers are shared by settings and live until the interpreter
exits, so a program that calls `build` many times pays the start-up once.
"""
from __future__ import annotations

import atexit
import contextlib
import itertools
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import memory
from .align import SilenceMap
from .model import Transcript
from .transcribe import TranscribeError, resolve_model


class SpeechModelError(TranscribeError):
    """The model could not be loaded: a failure of the whole build, not of one recording."""


@dataclass(frozen=True)
class Heard:
    """What the speech process returns for one recording; while it works on a long one,
    also what it has heard so far (``until_s``: the narration up to that second)."""

    transcript: Transcript
    silence: Optional[SilenceMap]
    until_s: Optional[float] = None  # None: the whole recording
    pieces_helped: int = 0  # pieces a helper thread transcribed (while the build lent a core)


class _Progress:
    """The latest partial `Heard` of each recording being transcribed, by its future."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens = itertools.count()
        self._latest: dict[int, Heard | None] = {}  # live tokens only
        self._token_of: dict[Future, int] = {}

    def follow(self, submit: Callable[[int], Future]) -> Future:
        """``submit(token)``'s future; what is told under the token is kept until it is done."""
        with self._lock:
            token = next(self._tokens)
            self._latest[token] = None
        future = submit(token)

        def forget(_):
            with self._lock:
                self._latest.pop(token, None)
                self._token_of.pop(future, None)

        with self._lock:
            self._token_of[future] = token
        future.add_done_callback(forget)
        return future

    def tell(self, token: int, heard: Heard) -> None:
        with self._lock:
            if token in self._latest:  # not for a recording already finished
                self._latest[token] = heard

    def so_far(self, future: Future) -> Heard | None:
        with self._lock:
            token = self._token_of.get(future)
            return self._latest.get(token) if token is not None else None


class SpeechWorker:
    """One child process with the model loaded; `listen` queues a recording,
    `heard_so_far` tells what of it the child has transcribed yet, `core_lent` lets up to
    ``workers`` threads of it share a long narration's pieces while the caller leaves a
    core idle."""

    def __init__(self, model: str | None, cpu_threads: int, glossary: Sequence[str], workers: int = 1):
        self.label = resolve_model(model).label  # no model load: the child does that
        context = multiprocessing.get_context("spawn")  # never fork a process holding threads
        self._progress = _Progress()
        self._told = context.SimpleQueue()  # (token, partial Heard) from the child
        self._spare_core = context.Event()
        self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=_load_in_child,
                                         initargs=(model, cpu_threads, tuple(glossary), workers,
                                                   self._told, self._spare_core))
        self._reader = threading.Thread(target=self._read_told, name="speech-progress", daemon=True)
        self._reader.start()

    def _read_told(self) -> None:
        while (told := self._told.get()) is not None:
            self._progress.tell(*told)

    def listen(self, path: Path, has_audio: bool, duration_s: float | None) -> Future:
        path = Path(os.path.abspath(path))  # the child keeps its folder, the caller may have moved on
        return self._progress.follow(
            lambda token: self._pool.submit(_listen_telling, path, has_audio, duration_s, token))

    def heard_so_far(self, future: Future) -> Heard | None:
        """The narration transcribed so far (a partial `Heard`), None before the first piece."""
        return self._progress.so_far(future)

    @contextlib.contextmanager
    def core_lent(self, lent: bool = True):
        """While the block runs (after the caller's video pass, until the transcript
        arrives), the caller leaves a core idle when ``lent``: the speech process's helper
        threads work only then."""
        if lent:
            self._spare_core.set()
        try:
            yield
        finally:
            self._spare_core.clear()

    def result(self, future: Future) -> Heard:
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise TranscribeError("the speech process died (out of memory?)") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._told.put(None)
        self._reader.join()


class LocalSpeech(SpeechWorker):
    """The same service in a thread of this process: for `--jobs` workers, which are
    processes already (a process pool's worker joins its children before its own exit
    handlers run, so a nested pool would never be shut down)."""

    def __init__(self, model: str | None, cpu_threads: int, glossary: Sequence[str], workers: int = 1):
        from concurrent.futures import ThreadPoolExecutor

        self.label = resolve_model(model).label
        self._spare_core = threading.Event()
        self._args = (model, cpu_threads, tuple(glossary), workers, None, self._spare_core)
        self._progress = _Progress()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="speech")

    def listen(self, path: Path, has_audio: bool, duration_s: float | None) -> Future:
        return self._progress.follow(
            lambda token: self._pool.submit(self._listen, Path(path), has_audio, duration_s, token))

    def _listen(self, path: Path, has_audio: bool, duration_s: float | None, token: int) -> Heard:
        if _transcriber is None and _load_error is None:
            _load(*self._args)
        return _listen(path, has_audio, duration_s, lambda heard: self._progress.tell(token, heard))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# The features of a whole piece of narration (tens of MB) are mapped and unmapped; the
# per-window buffers of the decoder stay in the heap.
SPEECH_LARGE_BUFFER_BYTES = 8 << 20
# Free heap the speech process keeps for the next window's buffers instead of faulting
# them in again (memory.py).
SPEECH_HEAP_KEEP_BYTES = 32 << 20


_workers: dict[tuple, SpeechWorker] = {}
_workers_lock = threading.Lock()


def worker_for(model: str | None, cpu_threads: int, glossary: Sequence[str],
               in_process: bool = False, workers: int = 1) -> SpeechWorker:
    """The shared worker for these settings, started on first use; ``in_process`` for a
    caller that is itself a worker process (`--jobs`): speech then runs in a thread."""
    key = (model, cpu_threads, tuple(glossary), in_process, workers)
    with _workers_lock:
        worker = _workers.get(key)
        if worker is None or getattr(worker._pool, "_broken", False):  # noqa: SLF001 - a dead child is replaced
            kind = LocalSpeech if in_process else SpeechWorker
            worker = _workers[key] = kind(model, cpu_threads, glossary, workers)
        return worker


def _close_all() -> None:
    with _workers_lock:
        for worker in _workers.values():
            worker.close()
        _workers.clear()


atexit.register(_close_all)


# ---------------------------------------------------------------- in the child

# malloc arenas of the speech process (memory.limit_arenas): one per speech thread, at
# least two (measured with two speech threads: 468 MB and 11.4 s for 10 minutes, against
# 536 MB and 12.6 s with glibc's default, 438 MB and 15.6 s with one arena).
SPEECH_ARENAS_AT_LEAST = 2

_transcriber = None
_load_error: str | None = None
_told = None  # the queue back to the parent: what is heard so far
_spare_core = None  # set by the parent while it leaves a core idle


def _load(model: str | None, cpu_threads: int, glossary: tuple[str, ...], workers: int = 1,
          told=None, spare_core=None) -> None:
    global _transcriber, _load_error, _told, _spare_core
    from .transcribe import Transcriber

    _told, _spare_core = told, spare_core
    memory.map_large_buffers(SPEECH_LARGE_BUFFER_BYTES, SPEECH_HEAP_KEEP_BYTES)

    try:
        _transcriber = Transcriber(model, cpu_threads, glossary, workers)
    except Exception as exc:  # noqa: BLE001 - reported with the first recording, in one line
        _load_error = str(exc)


def _load_in_child(model: str | None, cpu_threads: int, glossary: tuple[str, ...], workers: int,
                   told, spare_core) -> None:
    memory.limit_arenas(max(SPEECH_ARENAS_AT_LEAST, workers))  # before any thread starts
    _load(model, cpu_threads, glossary, workers, told, spare_core)


def _listen_telling(path: Path, has_audio: bool, duration_s: float | None, token: int) -> Heard:
    return _listen(path, has_audio, duration_s, lambda heard: _told.put((token, heard)))


def _listen(path: Path, has_audio: bool, duration_s: float | None,
            tell: Callable[[Heard], None] = lambda heard: None) -> Heard:
    """The recording's transcript and silences; ``tell`` gets what is heard so far after
    each piece of a long narration but the last."""
    from . import decode

    if _transcriber is None:
        raise SpeechModelError(_load_error or "the speech model is not loaded")
    if not has_audio:
        return Heard(Transcript((), "en", _transcriber.spec.label), None)
    try:
        audio = decode.read_audio_pcm(path, duration_s)  # int16, memory-mapped: flat in length
    except OSError as exc:  # DecodeError among them: sent back as plain text
        raise TranscribeError(str(exc)) from None
    silence = SilenceMap(audio)
    decode.release_pages(audio)  # each piece is paged in again as it is transcribed
    transcript = _transcriber.transcribe(audio, lambda until_s, so_far: tell(Heard(so_far, silence, until_s)),
                                         _spare_core)
    heard = Heard(transcript, silence, pieces_helped=_transcriber.pieces_helped)
    del audio
    memory.give_back_freed()  # this process lives on between recordings: hand back the features' memory
    return heard
