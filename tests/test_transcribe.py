"""Transcribe stage with the real bundled model on real human speech."""
from pathlib import Path

import numpy as np
import pytest

from pipeline.decode import read_audio
from pipeline.model import Word
from pipeline.transcribe import Transcriber, apply_glossary, join_fragments, split_sentences

SPEECH = Path(__file__).parent / "fixtures" / "speech"


@pytest.fixture(scope="module")
def transcriber():
    return Transcriber(cpu_threads=2)


def test_real_speech_is_transcribed_with_word_times(transcriber):
    transcript = transcriber.transcribe(read_audio(SPEECH / "jfk.mp3"))
    text = " ".join(s.text for s in transcript.sentences).lower()
    assert "ask not what your country can do for you" in text
    words = [w for s in transcript.sentences for w in s.words]
    assert all(a.start_s <= b.start_s for a, b in zip(words, words[1:]))
    assert words[-1].end_s <= 11.5


def test_the_default_model_is_the_bundled_one_and_named_without_a_path(transcriber):
    assert transcriber.spec.label.startswith("tiny.en")
    assert "/" not in transcriber.spec.label


def test_without_glossary_the_model_mishears_the_domain_word(transcriber):
    text = " ".join(s.text for s in transcriber.transcribe(read_audio(SPEECH / "hotwords.mp3")).sentences)
    assert "ComfyUI" not in text


def test_glossary_terms_are_recognised():
    glossed = Transcriber(cpu_threads=2, glossary=["ComfyUI"])
    text = " ".join(s.text for s in glossed.transcribe(read_audio(SPEECH / "hotwords.mp3")).sentences)
    assert "ComfyUI" in text


def test_transcription_is_deterministic(transcriber):
    audio = read_audio(SPEECH / "jfk.mp3")
    assert transcriber.transcribe(audio) == transcriber.transcribe(audio)


def test_silence_gives_no_sentences(transcriber):
    assert transcriber.transcribe(np.zeros(16000 * 3, np.float32)).sentences == ()


def test_word_pieces_without_a_leading_space_are_joined():
    words = join_fragments([(0.0, 0.3, " hot", 0.9), (0.3, 0.5, "-fix", 0.8), (0.6, 0.9, " build", 0.9)])
    assert [w.text for w in words] == ["hot-fix", "build"]
    assert words[0].end_s == 0.5


def test_sentences_split_at_punctuation_and_long_silence():
    words = [Word(0, 0.4, "Run"), Word(0.5, 0.9, "it."), Word(1.0, 1.3, "Then"), Word(1.4, 1.8, "wait"),
             Word(3.5, 3.8, "done")]
    assert [s.text for s in split_sentences(words)] == ["Run it.", "Then wait", "done"]


def test_glossary_snaps_a_near_miss_onto_the_term_but_keeps_plurals():
    words = [Word(i, i + 1, t) for i, t in enumerate("list the namespaces with kubctl".split())]
    fixed = apply_glossary(words, ["kubectl", "namespace"])
    assert [w.text for w in fixed] == ["list", "the", "namespaces", "with", "kubectl"]


def test_long_audio_is_cut_into_pieces_at_its_quietest_points():
    from pipeline.transcribe import chunk_bounds

    rng = np.random.default_rng(7)
    audio = (rng.standard_normal(16000 * 600) * 0.1).astype(np.float32)
    audio[16000 * 190:16000 * 191] = 0  # a pause near the first nominal boundary (180 s)
    bounds = chunk_bounds(audio)
    assert bounds[0][0] == 0 and bounds[-1][1] == audio.size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, no gap or overlap
    assert 190 * 16000 <= bounds[0][1] <= 191 * 16000
    assert chunk_bounds(audio[:16000 * 260]) == [(0, 16000 * 260)]  # short narration: one piece


def test_speech_transcribed_in_pieces_keeps_its_words_and_times(transcriber):
    audio = read_audio(SPEECH / "jfk.mp3")
    whole = [w for s in transcriber.transcribe(audio).sentences for w in s.words]
    pieces = Transcriber(cpu_threads=2)
    pieces.chunk_s = 4.0  # the 11 s clip in three pieces, cut in its pauses
    cut = [w for s in pieces.transcribe(audio).sentences for w in s.words]
    text = lambda ws: " ".join(w.text.lower().strip(",.") for w in ws)  # noqa: E731
    assert "what your country can do for you" in text(cut)  # short pieces lose some context
    assert all(a.start_s <= b.start_s for a, b in zip(cut, cut[1:]))
    assert abs(cut[-1].end_s - whole[-1].end_s) < 0.5  # times are on the recording's clock
