"""End to end: real recordings, real ffmpeg, the real bundled model, through `sopline build`."""
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.build import BuildSettings, build
from pipeline.cli import main
from pipeline.schemas import validate

FIXTURES = Path(__file__).parent / "fixtures"
RECORDINGS = ["term-deploy", "gui-release", "web-scale", "narration-only", "no-audio"]
TOLERANCE_S = 1.5


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build every fixture recording once; tests read the results."""
    src = tmp_path_factory.mktemp("recordings")
    for name in RECORDINGS:
        shutil.copy(FIXTURES / f"{name}.mp4", src / f"{name}.mp4")
    out = tmp_path_factory.mktemp("sops")
    report = build([src], out, BuildSettings())
    assert not report.failed, [r.message for r in report.failed]
    return out


def sop(built, name):
    return json.loads((built / name / "sop.json").read_text())


def truth(name):
    return json.loads((FIXTURES / f"{name}.truth.json").read_text())


def matched(sop_doc, truth_doc):
    """Truth step index -> SOP step, matched like the corpus scorer does (nearest first)."""
    cands = []
    for ti, t in enumerate(truth_doc["steps"]):
        target = t["action_start_s"] if t["visual"] else t["sentences"][0]["start_s"]
        for si, s in enumerate(sop_doc["steps"]):
            at = s["change_s"] if t["visual"] and s["change_s"] is not None else s["start_s"]
            if abs(at - target) <= TOLERANCE_S:
                cands.append((abs(at - target), ti, si))
    pairs, used = {}, set()
    for _, ti, si in sorted(cands):
        if ti not in pairs and si not in used:
            pairs[ti] = sop_doc["steps"][si]
            used.add(si)
    return pairs


@pytest.mark.parametrize("name", ["term-deploy", "gui-release", "web-scale"])
def test_every_performed_step_is_found_once(built, name):
    doc, t = sop(built, name), truth(name)
    assert len(doc["steps"]) == len(t["steps"])
    assert len(matched(doc, t)) == len(t["steps"])


@pytest.mark.parametrize("name", ["term-deploy", "gui-release", "web-scale"])
def test_each_screenshot_shows_the_settled_result(built, name):
    t = truth(name)
    pairs = matched(sop(built, name), t)
    for ti, step in pairs.items():
        tstep = t["steps"][ti]
        if not tstep["visual"]:
            continue
        next_action = t["steps"][ti + 1]["action_start_s"] if ti + 1 < len(t["steps"]) else t["duration_s"] + 1
        assert tstep["settled_s"] - 0.1 <= step["screenshot"]["time_s"] < next_action + 0.1


@pytest.mark.parametrize("name", ["term-deploy", "gui-release", "web-scale"])
def test_narration_sentences_land_in_their_step(built, name):
    t = truth(name)
    for ti, step in matched(sop(built, name), t).items():
        for sentence in t["steps"][ti]["sentences"]:
            mid = (sentence["start_s"] + sentence["end_s"]) / 2
            assert any(n["start_s"] - 0.25 <= mid <= n["end_s"] + 0.25 for n in step["narration"]), sentence


def test_sop_json_is_valid_against_the_schema(built):
    for name in RECORDINGS:
        assert validate("sop", sop(built, name)) == []


def test_instructions_are_imperative_not_speech(built):
    for name in ["term-deploy", "gui-release", "web-scale"]:
        for step in sop(built, name)["steps"]:
            first = step["instruction"].split()[0].lower()
            assert first not in {"i", "i'm", "so", "now", "okay", "then", "first", "next", "finally", "we"}


def test_a_spoken_only_step_is_a_note_without_change(built):
    doc, t = sop(built, "gui-release"), truth("gui-release")
    spoken = [ti for ti, s in enumerate(t["steps"]) if not s["visual"]]
    pairs = matched(doc, t)
    for ti in spoken:
        assert pairs[ti]["change_s"] is None
        assert pairs[ti]["kind"] in ("note", "warning")


def test_narration_without_any_screen_change_gives_note_steps(built):
    doc, t = sop(built, "narration-only"), truth("narration-only")
    assert len(doc["steps"]) == len(t["steps"])
    assert all(s["change_s"] is None and s["screenshot"] is None for s in doc["steps"])
    assert all(s["kind"] in ("note", "warning", "verification") for s in doc["steps"])


def test_a_recording_without_audio_still_yields_its_steps(built):
    doc, t = sop(built, "no-audio"), truth("no-audio")
    assert doc["source"]["has_audio"] is False
    assert doc["transcript"] == []
    visual = [s for s in t["steps"] if s["visual"]]
    assert len(matched(doc, t)) == len(visual)
    assert all(s["narration"] == [] and s["screenshot"] for s in doc["steps"])


def test_screenshots_exist_with_their_hash_and_a_highlight(built):
    import hashlib

    doc = sop(built, "term-deploy")
    for step in doc["steps"]:
        shot = step["screenshot"]
        data = (built / "term-deploy" / shot["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shot["sha256"]
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot["highlight"]["w"] > 0


def test_values_named_in_narration_are_listed_as_inputs(built):
    inputs = [i for s in sop(built, "gui-release")["steps"] for i in s["inputs"]]
    assert "billing" in inputs  # "I'm typing the service name, billing."


def test_the_manifest_lists_each_sop_with_its_source_and_hash(built):
    index = json.loads((built / "index.json").read_text())
    by_sop = {e["sop"]: e for e in index["sops"]}
    assert set(by_sop) == {f"{n}/sop.json" for n in RECORDINGS}
    assert all(len(e["sha256"]) == 64 and e["status"] == "built" for e in index["sops"])


def test_no_machine_path_or_clock_time_in_outputs(built, tmp_path):
    text = "".join(p.read_text() for p in built.rglob("*.json")) + "".join(p.read_text() for p in built.rglob("*.md"))
    assert str(built) not in text and str(FIXTURES) not in text and "/tmp" not in text


def test_rebuilding_gives_byte_identical_output(tmp_path):
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert not build([FIXTURES / "term-deploy.mp4"], out, BuildSettings()).failed
        outputs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1]


def test_screenshots_rendered_while_transcription_runs_are_the_ones_rendered_after(tmp_path, monkeypatch):
    """The build renders likely screenshots while it waits for transcription, as many as
    there is time for: none, or all of them, must give the same bytes, and steps must
    actually take the early ones."""
    import hashlib

    from pipeline import screenshots, segment

    early: set[str] = set()

    def everything(self, video, events, duration_s, fps, content_changes, heard_so_far, until):
        self.render(video, fps, content_changes, segment.likely_plans(events, duration_s, fps), until=lambda: False)
        early.update(hashlib.sha256(self.get(key)[0]).hexdigest() for key in self._spilled)

    outputs = []
    for name, stand_in in (("none", lambda self, *args, **kwargs: None), ("all", everything)):
        monkeypatch.setattr(screenshots.EarlyShots, "render_while_heard", stand_in)
        out = tmp_path / name
        assert not build([FIXTURES / "web-scale.mp4"], out, BuildSettings(cores=2)).failed  # a core to spare
        outputs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1]
    shots = [s["screenshot"]["sha256"] for s in json.loads(outputs[1][Path("web-scale/sop.json")])["steps"]
             if s["screenshot"]]
    assert len(shots) >= 3 and len(early & set(shots)) >= len(shots) - 1


def test_the_speech_process_starts_on_the_next_recording_before_this_one_is_written(tmp_path, monkeypatch):
    """Recordings are transcribed back to back: the next one is queued for the speech
    process while this one is still being built, and the SOPs are those built alone."""
    from pipeline import render, speech

    events: list[str] = []
    listen, write = speech.SpeechWorker.listen, render.write_sop_folder

    def listening(self, path, *args):
        events.append(f"listen {Path(path).stem}")
        return listen(self, path, *args)

    def writing(sop, pngs, folder):
        events.append(f"write {folder.name}")
        return write(sop, pngs, folder)

    monkeypatch.setattr(speech.SpeechWorker, "listen", listening)
    monkeypatch.setattr(render, "write_sop_folder", writing)
    src = tmp_path / "rec"
    src.mkdir()
    for name in ("narration-only", "web-scale"):
        shutil.copy(FIXTURES / f"{name}.mp4", src / f"{name}.mp4")
    together = tmp_path / "together"
    assert not build([src], together, BuildSettings()).failed
    assert events == ["listen narration-only", "listen web-scale", "write narration-only", "write web-scale"]
    monkeypatch.undo()
    alone = tmp_path / "alone"
    assert not build([src / "web-scale.mp4"], alone, BuildSettings()).failed
    queued_doc, alone_doc = (json.loads((out / "web-scale" / "sop.json").read_text()) for out in (together, alone))
    assert (queued_doc["steps"], queued_doc["transcript"]) == (alone_doc["steps"], alone_doc["transcript"])


def test_sidecar_metadata_reaches_the_sop(tmp_path):
    src = tmp_path / "rec"
    src.mkdir()
    shutil.copy(FIXTURES / "web-scale.mp4", src / "scale.mp4")
    (src / "scale.sop.yaml").write_text("title: Scale the API\nowner: sre@example.com\nreview_every_days: 30\n"
                                        "prerequisites: [Console access]\n")
    out = tmp_path / "out"
    assert not build([src], out, BuildSettings()).failed
    doc = json.loads((out / "scale" / "sop.json").read_text())
    assert doc["title"] == "Scale the API"
    assert doc["metadata"]["owner"] == "sre@example.com"
    assert "Console access" in (out / "scale" / "sop.md").read_text()


def test_bad_inputs_fail_alone_with_one_line_and_keep_the_previous_sop(tmp_path):
    src = tmp_path / "rec"
    (src / "team").mkdir(parents=True)
    shutil.copy(FIXTURES / "narration-only.mp4", src / "team" / "good.mp4")
    shutil.copy(FIXTURES / "no-audio.mp4", src / "broken.mp4")
    out = tmp_path / "out"
    runner = CliRunner()
    assert runner.invoke(main, ["build", str(src), "-o", str(out)]).exit_code == 0
    before = (out / "broken" / "sop.json").read_bytes()
    (src / "broken.mp4").write_bytes(b"")  # the recording is now a zero-byte file
    (src / "team" / "good.sop.yaml").write_text("review_every_days: [not, a, number]\n")
    (src / "other.mp4").write_text("this is text, not a video")
    result = runner.invoke(main, ["build", str(src), "-o", str(out)])
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 3
    assert any("broken.mp4" in e and "empty" in e for e in errors)
    assert any("good.mp4" in e and "sidecar" in e for e in errors)
    assert any("other.mp4" in e for e in errors)
    assert "Traceback" not in result.output
    assert (out / "broken" / "sop.json").read_bytes() == before
    index = json.loads((out / "index.json").read_text())
    assert {e["sop"]: e["status"] for e in index["sops"]}["broken/sop.json"] == "failed"


def test_the_numpy_path_builds_the_same_sop_and_the_cli_says_it_runs(tmp_path, monkeypatch):
    """Without the compiled kernel (an install with no C compiler) the build says so once and
    gives byte-identical SOPs, screenshots included: the kernel is only a faster way."""
    import pipeline.luma

    src = tmp_path / "rec"
    src.mkdir()
    shutil.copy(FIXTURES / "no-audio.mp4", src / "deploy.mp4")
    runner = CliRunner()
    compiled = runner.invoke(main, ["build", str(src), "-o", str(tmp_path / "compiled")])
    assert compiled.exit_code == 0, compiled.output
    assert ("compiled frame-analysis kernel" in compiled.output) == (pipeline.luma._tiles is None)
    monkeypatch.setattr(pipeline.luma, "_tiles", None)
    plain = runner.invoke(main, ["build", str(src), "-o", str(tmp_path / "numpy")])
    assert plain.exit_code == 0, plain.output
    assert "note: sopline was installed without its compiled frame-analysis kernel" in plain.output
    files = sorted(p.relative_to(tmp_path / "numpy") for p in (tmp_path / "numpy").rglob("*") if p.is_file())
    assert any(f.suffix == ".png" for f in files)
    assert files == sorted(p.relative_to(tmp_path / "compiled") for p in (tmp_path / "compiled").rglob("*")
                           if p.is_file())
    for f in files:
        assert (tmp_path / "numpy" / f).read_bytes() == (tmp_path / "compiled" / f).read_bytes(), f


def test_cli_validate_accepts_built_sops_and_rejects_a_broken_one(built, tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["validate", str(built)]).exit_code == 0
    bad = tmp_path / "x" / "sop.json"
    bad.parent.mkdir()
    doc = sop(built, "term-deploy")
    doc["steps"][0]["kind"] = "chore"
    bad.write_text(json.dumps(doc))
    result = runner.invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 1 and "chore" in result.output


def test_cli_schema_prints_the_sop_schema():
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["$schema"].endswith("2020-12/schema")


def test_cli_usage_error_exits_2(tmp_path):
    assert CliRunner().invoke(main, ["build", str(tmp_path / "missing.mp4"), "-o", str(tmp_path)]).exit_code == 2


def test_a_second_build_into_the_same_folder_at_once_is_refused(tmp_path):
    from pipeline.build import output_lock

    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):
        result = CliRunner().invoke(main, ["build", str(FIXTURES / "no-audio.mp4"), "-o", str(out)])
    assert result.exit_code == 1
    assert "another sopline build" in result.output
    assert not (out / "no-audio").exists()


def test_a_filler_only_block_without_change_joins_the_step_before():
    from pipeline.build import _fold_contentless
    from pipeline.instruct import describe_step
    from pipeline.model import Sentence, StepPlan

    said = [("Next I drain the pool.", 0.0, 2.0), ("Okay.", 3.0, 3.4), ("Then I restart the worker.", 5.0, 7.0)]
    plans = [StepPlan(a, b, None, (Sentence(a, b, t),), (), None, None) for t, a, b in said]
    texts = [describe_step([p.sentences[0].text], False) for p in plans]
    assert texts[1].instruction == ""  # nothing left once the filler goes
    folded, kept = _fold_contentless(plans, texts)
    assert [t.instruction for t in kept] == ["Drain the pool.", "Restart the worker."]
    assert [s.text for s in folded[0].sentences] == ["Next I drain the pool.", "Okay."]
    assert folded[0].end_s == 3.4


def test_a_filler_only_first_block_joins_the_next_step():
    from pipeline.build import _fold_contentless
    from pipeline.instruct import describe_step
    from pipeline.model import Sentence, StepPlan

    said = [("So.", 0.5, 0.9), ("Now I open the console.", 2.0, 4.0)]
    plans = [StepPlan(a, b, None, (Sentence(a, b, t),), (), None, None) for t, a, b in said]
    folded, kept = _fold_contentless(plans, [describe_step([t], False) for t, _, _ in said])
    assert len(folded) == 1 and folded[0].start_s == 0.5
    assert [s.text for s in folded[0].sentences] == ["So.", "Now I open the console."]


def test_frames_kept_during_the_analysis_pass_are_the_exact_frames_a_second_pass_grabs():
    """Screenshots come from frames kept (compressed) while analysing; they must be the
    very pixels an exact pass at those indexes returns, and a second pass must reach
    hundreds of indexes."""
    import numpy as np

    from pipeline import decode, frames

    path = Path(__file__).parent / "fixtures" / "term-deploy.mp4"
    info = decode.probe(path)
    geometry = decode.analysis_geometry(info)
    grabbed = frames.grab_rgb_frames(path, info, geometry, list(range(150)))
    assert sorted(grabbed) == list(range(150))
    video = frames.VideoPass(path, geometry)
    for n, luma in enumerate(video):
        assert luma.shape == (info.height, info.width)
        assert video.scaler.full(luma).shape == (geometry.height, geometry.width)
        if n in (0, 37, 38, 120):
            video.keep(n)
        if n == 81:
            video.keep(80)  # the frame before the current one is still at hand
    assert set(video.kept) == {0, 37, 38, 80, 120, video.count - 1}
    for n in (0, 37, 38, 80, 120):
        assert video.rgb(n).shape == (info.height, info.width, 3)
        assert np.array_equal(video.rgb(n), grabbed[n])


@pytest.mark.parametrize("name", ["term-deploy", "gui-release", "web-scale"])
def test_each_screenshot_shows_the_screen_at_its_time(built, name):
    """Screenshots come from a frame kept in the same still stretch, not the frame at
    time_s itself: apart from the highlight outline they must show the same pixels."""
    import numpy as np
    from PIL import Image

    from pipeline import decode, frames

    doc = sop(built, name)
    path = FIXTURES / f"{name}.mp4"
    info = decode.probe(path)
    geometry = decode.analysis_geometry(info)
    shots = {round(s["screenshot"]["time_s"] * geometry.fps): s["screenshot"] for s in doc["steps"] if s.get("screenshot")}
    assert shots
    exact = frames.grab_rgb_frames(path, info, geometry, list(shots))
    for n, shot in shots.items():
        got = np.asarray(Image.open(built / name / shot["path"]).convert("RGB"), np.int16)
        outside = np.ones(got.shape[:2], bool)
        if shot.get("highlight"):
            box = shot["highlight"]
            pad = 12  # the outline is drawn a few pixels outside the box
            outside[max(0, box["y"] - pad):box["y"] + box["h"] + pad, max(0, box["x"] - pad):box["x"] + box["w"] + pad] = False
        delta = np.abs(got - exact[n])[outside]
        assert (delta > 40).mean() < 0.001, (name, n, float((delta > 40).mean()))
