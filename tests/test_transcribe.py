"""Transcribe stage with the real bundled model on real human speech."""
from pathlib import Path

import numpy as np
import pytest

from pipeline.decode import read_audio
from pipeline.model import Word
from pipeline.build import BuildSettings, Builder
from pipeline.transcribe import ONE_THREAD_MODEL_BYTES, Transcriber, apply_glossary, default_threads, join_fragments, split_sentences

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


def test_a_tiny_model_gets_one_thread_and_a_larger_one_every_core(tmp_path):
    """tiny.en's matrix products are too small to split over threads (slower, and twice the
    CPU); a larger model's are not."""
    assert default_threads(None, 8) == 1  # the bundled tiny.en
    assert default_threads("tiny.en", 8) == 1 and default_threads("Systran/faster-whisper-tiny", 8) == 1
    assert default_threads("small.en", 8) == 8 and default_threads("small.en", 0) == 1
    for name, size in (("small", ONE_THREAD_MODEL_BYTES), ("large", ONE_THREAD_MODEL_BYTES + 1)):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "model.bin", "wb") as weights:
            weights.truncate(size)  # sparse: only its size is read
    assert default_threads(str(tmp_path / "small"), 4) == 1
    assert default_threads(str(tmp_path / "large"), 4) == 4
    assert Builder(BuildSettings()).speech_threads == 1
    assert Builder(BuildSettings(cpu_threads=3)).speech_threads == 3  # --threads wins
    assert Builder(BuildSettings(model="medium.en", cores=2)).speech_threads == 2  # a --jobs worker's share


def test_one_thread_hears_the_same_words_as_two(transcriber):
    one = Transcriber(cpu_threads=1).transcribe(read_audio(SPEECH / "jfk.mp3"))
    assert one == transcriber.transcribe(read_audio(SPEECH / "jfk.mp3"))


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


RECORDING = Path(__file__).parent / "fixtures" / "term-deploy.mp4"  # 20 s, three narrated steps


def test_long_audio_is_cut_into_contiguous_pieces_in_its_pauses(transcriber):
    from pipeline.align import SilenceMap
    from pipeline.decode import read_audio_pcm
    from pipeline.transcribe import chunk_bounds

    audio = read_audio_pcm(RECORDING)  # int16, as the build passes it
    bounds = chunk_bounds(audio, chunk_s=8.0)  # nominal cuts at 8 s and 16 s fall in speech
    assert len(bounds) >= 3
    assert bounds[0][0] == 0 and bounds[-1][1] == audio.size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, no gap or overlap
    cuts = [start / 16000 for start, _ in bounds[1:]]
    silent = SilenceMap(audio).silent
    assert all(silent[int(c / 0.01) - 20:int(c / 0.01) + 20].all() for c in cuts)  # 0.2 s of silence each side
    words = [w for s in transcriber.transcribe(audio).sentences for w in s.words]
    assert not any(w.start_s < c < w.end_s for w in words for c in cuts)  # no word is split


def test_narration_up_to_one_and_a_half_pieces_long_stays_one_piece():
    from pipeline.decode import read_audio_pcm
    from pipeline.transcribe import chunk_bounds

    audio = read_audio_pcm(RECORDING)
    seconds = audio.size / 16000
    assert chunk_bounds(audio, chunk_s=seconds / 1.49) == [(0, audio.size)]
    assert len(chunk_bounds(audio, chunk_s=seconds / 1.6)) == 2


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


def test_a_long_narration_tells_what_is_heard_after_each_piece_but_the_last():
    from pipeline.decode import read_audio_pcm
    from pipeline.transcribe import chunk_bounds

    audio = read_audio_pcm(RECORDING)
    pieces = Transcriber(cpu_threads=1)
    pieces.chunk_s = 5.0
    told = []
    whole = pieces.transcribe(audio, lambda until_s, so_far: told.append((until_s, so_far)))
    assert [until_s for until_s, _ in told] == [end / 16000 for _, end in chunk_bounds(audio, 5.0)[:-1]]
    words = [w for s in whole.sentences for w in s.words]
    for until_s, so_far in told:
        heard = [w for s in so_far.sentences for w in s.words]
        assert heard == [w for w in words if w.start_s < until_s]  # exactly the words before the cut
        assert so_far.sentences[:-1] == whole.sentences[:len(so_far.sentences) - 1]
    assert 0 < len(told[0][1].sentences) < len(told[-1][1].sentences)


def test_pieces_shared_with_a_helper_thread_give_the_same_transcript():
    """While a core is spare, a second thread takes the next pieces: the words are those of
    one thread alone, and what is heard so far is still told in order, a run from the start."""
    import threading

    from pipeline.decode import read_audio_pcm
    from pipeline.transcribe import chunk_bounds

    audio = read_audio_pcm(RECORDING)
    alone = Transcriber(cpu_threads=1)
    alone.chunk_s = 3.0
    shared = Transcriber(cpu_threads=1, workers=2)
    shared.chunk_s = 3.0
    never, lent = threading.Event(), threading.Event()
    lent.set()
    told = []
    whole = alone.transcribe(audio)
    assert shared.transcribe(audio, spare_core=never) == whole and shared.pieces_helped == 0
    assert shared.transcribe(audio, lambda until_s, so_far: told.append((until_s, so_far)), lent) == whole
    assert shared.pieces_helped > 0
    cuts = [end / 16000 for _, end in chunk_bounds(audio, 3.0)[:-1]]
    assert len(cuts) >= 4 and told and [until_s for until_s, _ in told] == sorted(until_s for until_s, _ in told)
    words = [w for s in whole.sentences for w in s.words]
    for until_s, so_far in told:
        assert until_s in cuts
        assert [w for s in so_far.sentences for w in s.words] == [w for w in words if w.start_s < until_s]


def test_a_helper_threads_failure_reaches_the_caller(monkeypatch):
    import threading

    from pipeline.decode import read_audio_pcm

    shared = Transcriber(cpu_threads=1, workers=2)
    shared.chunk_s = 3.0
    lent = threading.Event()
    lent.set()
    real = shared._raw_words

    def failing_in_helpers(audio, offset_s):
        if threading.current_thread().name.startswith("speech-helper"):
            raise MemoryError("no room for the features")
        return real(audio, offset_s)

    monkeypatch.setattr(shared, "_raw_words", failing_in_helpers)
    with pytest.raises(MemoryError, match="no room"):
        shared.transcribe(read_audio_pcm(RECORDING), spare_core=lent)


def test_the_speech_process_tells_the_build_what_it_has_heard_so_far(tmp_path, monkeypatch):
    """Over the process boundary: a narration longer than one and a half pieces (padded
    with silence here) is told after its first piece, and forgotten once it is done."""
    import subprocess

    from pipeline import decode, speech

    padded = tmp_path / "long.wav"
    subprocess.run([decode.ffmpeg_binary(), "-loglevel", "error", "-i", str(RECORDING), "-vn", "-ac", "1",
                    "-ar", "16000", "-af", "apad=whole_dur=300", str(padded)], check=True)
    told = []
    tell = speech._Progress.tell
    monkeypatch.setattr(speech._Progress, "tell", lambda self, token, heard: (told.append(heard), tell(self, token, heard)))
    worker = speech.SpeechWorker(None, 1, ())
    try:
        future = worker.listen(padded, True, 300.0)
        heard = worker.result(future)
        assert worker.heard_so_far(future) is None
    finally:
        worker.close()
    cuts = [t.until_s for t in told]  # pieces of ~90 s, cut at the start of each search in the padding
    assert len(cuts) >= 2 and 69 < cuts[0] < 110 and cuts == sorted(cuts) and cuts[-1] < 300
    assert told[0].transcript == heard.transcript and heard.transcript.sentences and heard.until_s is None


def test_the_speech_process_shares_the_pieces_once_the_build_lends_it_a_core(tmp_path):
    """The lent core crosses the process boundary: with it, a helper thread of the speech
    process takes the second of two pieces of 200 s of narration."""
    import subprocess

    from pipeline import decode, speech

    looped = tmp_path / "looped.wav"
    subprocess.run([decode.ffmpeg_binary(), "-loglevel", "error", "-stream_loop", "-1", "-i", str(RECORDING),
                    "-vn", "-ac", "1", "-ar", "16000", "-t", "200", str(looped)], check=True)
    worker = speech.SpeechWorker(None, 1, (), workers=2)
    try:
        with worker.core_lent():
            heard = worker.result(worker.listen(looped, True, 200.0))
    finally:
        worker.close()
    assert heard.pieces_helped == 1
    starts = [s.start_s for s in heard.transcript.sentences]
    assert starts == sorted(starts) and starts[0] < 10 and starts[-1] > 180
