"""Broken and hostile inputs: one clear line per failure, nothing lost, nothing let in.

Real files from tests/fixtures/broken/ (made from the fixture recordings by
make_broken.py), real ffmpeg, the real bundled model, real `sopline` processes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline import decode, frames
from pipeline.build import BuildSettings, build
from pipeline.cli import main
from pipeline.schemas import validate

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN = FIXTURES / "broken"
CLIP = BROKEN / "short-0.5s.mp4"  # the cheapest real recording, for cases about names and sidecars

# file -> what its one-line error must say
FAILING = {
    "empty.mp4": "empty (0 bytes)",
    "truncated.mp4": "cut short",
    "truncated-data.mp4": "stops after 2.1 s of the 4.0 s",
    "text.mp4": "not a video: a text file",
    "lfs-pointer.mp4": "Git LFS pointer",
    "image.mp4": "not a video: a PNG image",
    "corrupt-moov.mp4": "damaged index",
    "unsupported-codec.mp4": "codec is not supported",
    "audio-only.mp4": "no video stream",
    "long-2h.mp4": "lasts 2:00:00 (7200 s), longer than the maximum of 3600 s (--max-duration)",
    "huge-frame.mp4": "the video is 9600x5400, larger than the supported 8K",
}
TOLERATED = ["vfr.mp4", "odd-1366x767.webm", "rotated.mp4", "4k60.mp4", "no-audio.mp4", "silent-audio.mp4",
             "short-0.5s.mp4"]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def error_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Build good recordings under the broken files' names, then swap in the broken
    corpus beside the awkward-but-valid files and build again through the CLI."""
    src = tmp_path_factory.mktemp("recordings")
    out = tmp_path_factory.mktemp("sops")
    for name in FAILING:
        shutil.copy(CLIP, src / name)
    assert not build([src], out, BuildSettings()).failed
    before = {stem(name): folder_bytes(out / stem(name)) for name in FAILING}
    for name in FAILING:
        shutil.copy(BROKEN / name, src / name)
    for name in TOLERATED:
        shutil.copy(BROKEN / name, src / name)
    result = CliRunner().invoke(main, ["build", str(src), "-o", str(out), "--threads", "2",
                                       "--max-duration", "3600"])
    return {"src": src, "out": out, "before": before, "result": result,
            "index": json.loads((out / "index.json").read_text("utf-8"))}


def sop(corpus, name: str) -> dict:
    return json.loads((corpus["out"] / stem(name) / "sop.json").read_text("utf-8"))


def entry(corpus, name: str) -> dict:
    return {e["sop"]: e for e in corpus["index"]["sops"]}[f"{stem(name)}/sop.json"]


# ------------------------------------------------------------ failures

@pytest.mark.parametrize("name", sorted(FAILING))
def test_a_broken_file_fails_in_one_line_naming_it_and_the_problem(corpus, name):
    lines = [ln for ln in error_lines(corpus["result"].output) if f"/{name}: " in ln]
    assert len(lines) == 1, corpus["result"].output
    assert FAILING[name] in lines[0]


def test_no_traceback_and_exit_status_1_with_the_failures_counted(corpus):
    result = corpus["result"]
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert len(error_lines(result.output)) == len(FAILING)
    assert f"{len(FAILING)} failed of {len(FAILING) + len(TOLERATED)}" in result.output.splitlines()[-1]


@pytest.mark.parametrize("name", sorted(FAILING))
def test_the_manifest_records_the_failure_and_its_reason(corpus, name):
    e = entry(corpus, name)
    assert e["status"] == "failed"
    assert FAILING[name] in e["error"] and "\n" not in e["error"]


def test_the_manifest_holds_no_machine_path_or_memory_address(corpus):
    text = (corpus["out"] / "index.json").read_text("utf-8")
    assert str(corpus["src"]) not in text and str(corpus["out"]) not in text and "/tmp" not in text
    assert not re.search(r"0x[0-9a-f]{8,}", text)  # ffmpeg log prefixes carry pointers


@pytest.mark.parametrize("name", sorted(FAILING))
def test_the_previous_good_sop_is_left_byte_identical(corpus, name):
    assert folder_bytes(corpus["out"] / stem(name)) == corpus["before"][stem(name)]


# ------------------------------------------------------- tolerated cases

@pytest.mark.parametrize("name", TOLERATED)
def test_an_awkward_but_valid_recording_builds_a_valid_sop(corpus, name):
    assert entry(corpus, name)["status"] == "built"
    doc = sop(corpus, name)
    assert validate("sop", doc) == []
    assert doc["steps"]
    for step in doc["steps"]:
        if step["screenshot"]:
            png = corpus["out"] / stem(name) / step["screenshot"]["path"]
            assert hashlib.sha256(png.read_bytes()).hexdigest() == step["screenshot"]["sha256"]
            assert Image.open(png).size == (doc["source"]["width"], doc["source"]["height"])


def test_rotated_phone_recording_reports_its_displayed_size(corpus):
    source = sop(corpus, "rotated.mp4")["source"]
    assert (source["width"], source["height"]) == (1200, 720)  # stored 720x1200, display matrix 90 degrees


def test_rotated_phone_recording_screenshots_are_upright(corpus):
    doc = sop(corpus, "rotated.mp4")
    original = FIXTURES / "gui-release.mp4"  # what was recorded, before it was stored turned
    info = decode.probe(original)
    geometry = decode.analysis_geometry(info)
    for step in doc["steps"]:
        shot = step["screenshot"]
        index = round(shot["time_s"] * geometry.fps)
        truth = frames.grab_rgb_frames(original, info, geometry, [index])[index].astype(float)
        got = np.asarray(Image.open(corpus["out"] / "rotated" / shot["path"]).convert("RGB"), float)
        upright = np.abs(got - truth).mean()
        turned = np.abs(got[::-1, ::-1] - truth).mean()
        assert upright < 3 and upright * 5 < turned


def test_rotated_phone_recording_finds_the_same_steps_as_the_original(corpus):
    truth = json.loads((FIXTURES / "gui-release.truth.json").read_text())
    wanted = [s["action_start_s"] for s in truth["steps"] if s["visual"] and s["action_start_s"] < 7]
    changes = [s["change_s"] for s in sop(corpus, "rotated.mp4")["steps"]]
    assert len(changes) == len(wanted)
    assert all(abs(c - w) <= 1.5 for c, w in zip(changes, wanted))


def test_variable_frame_rate_keeps_its_average_rate_and_finds_its_steps(corpus):
    doc = sop(corpus, "vfr.mp4")
    assert doc["source"]["fps"] < 5  # frames only when the screen changed
    truth = json.loads((FIXTURES / "term-deploy.truth.json").read_text())
    wanted = [s["action_start_s"] for s in truth["steps"] if s["action_start_s"] < 11]
    changes = [s["change_s"] for s in doc["steps"] if s["change_s"] is not None]
    assert len(changes) == len(wanted)
    assert all(abs(c - w) <= 1.5 for c, w in zip(changes, wanted))


def test_odd_dimensions_are_kept_exactly(corpus):
    source = sop(corpus, "odd-1366x767.webm")["source"]
    assert (source["width"], source["height"]) == (1366, 767)


def test_4k_60fps_clip_keeps_its_resolution_and_rate(corpus):
    source = sop(corpus, "4k60.mp4")["source"]
    assert (source["width"], source["height"], source["fps"]) == (3840, 2160, 60.0)


def test_video_without_audio_has_no_transcript(corpus):
    doc = sop(corpus, "no-audio.mp4")
    assert doc["source"]["has_audio"] is False and doc["transcript"] == []


def test_silent_audio_track_warns_and_builds_from_the_screen(corpus):
    doc = sop(corpus, "silent-audio.mp4")
    assert doc["source"]["has_audio"] is True and doc["transcript"] == []
    assert all(s["change_s"] is not None for s in doc["steps"])
    assert "warning: silent-audio.mp4: no speech recognised" in corpus["result"].output


def test_half_second_recording_has_its_duration(corpus):
    assert sop(corpus, "short-0.5s.mp4")["source"]["duration_s"] == 0.5


def test_max_duration_refuses_a_short_file_over_a_small_limit(tmp_path):
    shutil.copy(CLIP, tmp_path / "clip.mp4")
    report = build([tmp_path / "clip.mp4"], tmp_path / "out", BuildSettings(max_duration_s=0.25))
    assert [r.message for r in report.failed] == [
        "the recording lasts 0:00 (0.5 s), longer than the maximum of 0.25 s (--max-duration); refused before decoding"]
    assert not (tmp_path / "out" / "clip").exists()


def test_a_webm_without_a_declared_duration_is_measured_and_still_limited(tmp_path):
    live = tmp_path / "live.webm"  # as a browser's MediaRecorder writes it: no duration in the header
    subprocess.run([decode.ffmpeg_binary(), "-v", "error", "-i", str(BROKEN / "odd-1366x767.webm"), "-c", "copy",
                    "-f", "webm", "-live", "1", str(live)], check=True, stdin=subprocess.DEVNULL)
    assert decode.probe(live).duration_s == pytest.approx(8.0, abs=0.1)
    report = build([live], tmp_path / "out", BuildSettings(max_duration_s=5))
    assert "longer than the maximum of 5 s" in report.failed[0].message


# ------------------------------------------------------------- ffmpeg

def ffmpeg_children() -> list[int]:
    """Live ffmpeg processes started by this test process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            comm = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid() and comm.startswith("ffmpeg") and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_a_decode_over_its_time_limit_is_killed_and_named(tmp_path):
    path = BROKEN / "4k60.mp4"
    geometry = decode.analysis_geometry(decode.probe(path))
    with pytest.raises(decode.DecodeError, match=r"^ffmpeg took longer than 0\.1 s decoding the video and was stopped"):
        for _ in frames.VideoPass(path, geometry, timeout_s=0.1):
            time.sleep(0.05)
    assert ffmpeg_children() == []


def test_time_limits_scale_with_duration_and_pixel_rate_above_a_floor():
    assert decode.stage_timeout(0) == decode.TIMEOUT_FLOOR_S
    assert decode.stage_timeout(600) > decode.stage_timeout(60) > decode.stage_timeout(1)
    assert decode.stage_timeout(60, 3840 * 2160 * 60) > decode.stage_timeout(60, 1920 * 1080 * 30)


def test_a_hung_ffmpeg_fails_its_recording_in_one_line(tmp_path, monkeypatch):
    src = tmp_path / "rec"
    src.mkdir()
    shutil.copy(BROKEN / "4k60.mp4", src / "heavy.mp4")
    monkeypatch.setattr(decode, "TIMEOUT_FLOOR_S", 0.02)  # every ffmpeg pass now "hangs" past its limit
    monkeypatch.setattr(decode, "TIMEOUT_PER_MEDIA_S", 0.0)
    report = build([src], tmp_path / "out", BuildSettings())
    assert [r.recording.source.name for r in report.failed] == ["heavy.mp4"]
    assert re.fullmatch(r"(cannot transcribe the audio: )?ffmpeg took longer than 0\.02 s [a-z ]+ and was "
                        r"stopped \(a hung or pathologically slow decode\)", report.failed[0].message)
    deadline = time.monotonic() + 10
    while ffmpeg_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ffmpeg_children() == []


def test_ffmpeg_opens_only_local_files_of_the_supported_containers():
    spec = decode._input(Path("-x.mp4")).output("pipe:", format="null")
    args = decode.ffmpeg.compile(spec, cmd="ffmpeg")
    i = args.index("-i")
    assert args[i + 1] == "file:" + os.path.abspath("-x.mp4")
    assert args[args.index("-protocol_whitelist") + 1] == "file"
    assert args[args.index("-format_whitelist") + 1] == decode.SUPPORTED_FORMATS


def test_a_playlist_renamed_mp4_is_refused_without_touching_the_network(tmp_path):
    path = tmp_path / "playlist.mp4"
    path.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/a.ts\n#EXT-X-ENDLIST\n")
    with pytest.raises(decode.DecodeError, match="playlist"):
        decode.probe(path)


def test_ffmpeg_itself_refuses_a_playlist_and_never_connects(tmp_path):
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        path = tmp_path / "playlist.mp4"
        path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:{port}/a.ts\n"
                        "#EXT-X-ENDLIST\n")
        with pytest.raises(decode.DecodeError, match="ffmpeg failed reading the audio"):
            decode.read_audio(path, duration_s=1.0)  # straight to ffmpeg, no sniffing first
        with pytest.raises(BlockingIOError):
            server.accept()


# ------------------------------------------------------------ hostile names and sidecars

NAMES = ["with space.mp4", "it's \"quoted\".mp4", "-rec.mp4", "ünïcødé 日本語.mp4", "http:evil.mp4",
         "$(touch pwned).mp4", "semi;colon `x`.mp4", "q?a=1#frag 100%25.mp4", "new\nline\ttab.mp4"]
ESCAPING_IDS = {"parent-id": "../../etc/x", "absolute-id": "/etc/x", "backslash-id": "..\\\\x\\\\y"}
HOSTILE_TEXT = {
    "title": "<script>alert(1)</script> | Deploy",
    "summary": "[click me](javascript:alert(1)) and ![x](https://evil.example/x.png) <img src=x onerror=alert(1)>",
    "owner": "ops | <b>root</b>",
    "prerequisites": ["`rm -rf /`", "# not a heading", "| a | b |"],
    "expected_outcome": "<details><summary>x</summary></details> & &amp;",
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One real `sopline` process over hostile file names, sidecars and output links."""
    import yaml

    root = tmp_path_factory.mktemp("hostile")
    src, out, outside = root / "src", root / "out", root / "outside"
    for d in (src / "team", out, outside):
        d.mkdir(parents=True)
    for name in NAMES:
        shutil.copy(CLIP, src / name)
    shutil.copy(CLIP, src / "html.mp4")
    (src / "html.sop.yaml").write_text(yaml.safe_dump(HOSTILE_TEXT, allow_unicode=True), "utf-8")
    for name, value in ESCAPING_IDS.items():
        shutil.copy(CLIP, src / f"{name}.mp4")
        (src / f"{name}.sop.yaml").write_text(f'id: "{value}"\n', "utf-8")
    (outside / "secret.sop.yaml").write_text("title: SECRET-FROM-OUTSIDE\n", "utf-8")
    for name, target in {"linked": outside / "secret.sop.yaml", "device": Path("/dev/zero")}.items():
        shutil.copy(CLIP, src / f"{name}.mp4")
        (src / f"{name}.sop.yaml").symlink_to(target)
    shutil.copy(CLIP, src / "folder.mp4")
    (src / "folder.sop.yaml").mkdir()
    sidecars = {"bad-yaml": "title: [unclosed\n", "wrong-type": "review_every_days: weekly\ntags: deploy\n",
                "unknown": "title: Fine\nreviewer: bob\n", "huge": "summary: " + "x" * 300_000 + "\n",
                "long-title": "title: " + "y" * 5000 + "\n", "deep": "title: " + "[" * 5000 + "]" * 5000 + "\n"}
    for name, text in sidecars.items():
        shutil.copy(CLIP, src / f"{name}.mp4")
        (src / f"{name}.sop.yaml").write_text(text, "utf-8")
    shutil.copy(CLIP, src / "team" / "through-link.mp4")
    (out / "team").symlink_to(outside, target_is_directory=True)
    cwd = root / "cwd"
    cwd.mkdir()
    shutil.copy(CLIP, cwd / "-solo.mp4")  # a file argument with a leading dash, after "--"
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "build", "-o", str(out), "--threads", "2",
                          "--", str(src), "-solo.mp4"], capture_output=True, text=True, cwd=cwd, timeout=600)
    return {"src": src, "out": out, "outside": outside, "cwd": cwd, "run": run,
            "index": {e["sop"]: e for e in json.loads((out / "index.json").read_text("utf-8"))["sops"]}}


@pytest.mark.parametrize("name", NAMES)
def test_file_names_with_spaces_quotes_dashes_and_unicode_build(hostile, name):
    doc = json.loads((hostile["out"] / stem(name) / "sop.json").read_text("utf-8"))
    assert doc["source"]["path"] == name and validate("sop", doc) == []


def test_a_name_that_looks_like_shell_is_never_run(hostile):
    assert not any(p.name == "pwned" for p in hostile["src"].parent.rglob("*"))


def test_a_file_argument_with_a_leading_dash_works_after_a_double_dash(hostile):
    doc = json.loads((hostile["out"] / "-solo" / "sop.json").read_text("utf-8"))
    assert doc["source"]["path"] == "-solo.mp4"


@pytest.mark.parametrize("name", sorted(ESCAPING_IDS))
def test_an_id_that_tries_to_leave_the_output_folder_is_refused(hostile, name):
    e = hostile["index"][f"{name}/sop.json"]
    assert e["status"] == "failed" and "is not a safe SOP id" in e["error"]
    assert not (hostile["out"] / name).exists()


def test_nothing_is_written_outside_the_output_folder(hostile):
    assert sorted(p.name for p in hostile["outside"].rglob("*")) == ["secret.sop.yaml"]
    assert not any(p.name in ("x", "y", "etc") for p in hostile["out"].parent.rglob("*") if p.is_dir())
    assert [p.name for p in hostile["cwd"].iterdir()] == ["-solo.mp4"]


def test_a_symlinked_output_subfolder_is_refused(hostile):
    e = hostile["index"]["team/through-link/sop.json"]
    assert e["status"] == "failed" and "'team' is a symbolic link" in e["error"]


@pytest.mark.parametrize("name, words", [
    ("linked", "symbolic link to a file outside the recording's folder"),
    ("device", "symbolic link to a file outside the recording's folder"),
    ("folder", "not a regular file"),
    ("bad-yaml", "invalid YAML at line 2"),
    ("wrong-type", "review_every_days: 'weekly' is not of type 'integer'"),
    ("huge", "larger than 256 KB"),
    ("long-title", "title: 5000 characters, more than the 300 allowed"),
    ("deep", "nested too deeply"),
])
def test_a_bad_sidecar_fails_its_recording_in_one_clear_line(hostile, name, words):
    e = hostile["index"][f"{name}/sop.json"]
    assert e["status"] == "failed" and words in e["error"]
    assert "\n" not in e["error"] and len(e["error"]) < 400
    assert str(hostile["src"]) not in e["error"]
    assert sum(f"/{name}.mp4: " in ln for ln in error_lines(hostile["run"].stderr)) == 1


def test_no_outside_file_content_reaches_any_output(hostile):
    for p in hostile["out"].rglob("*"):
        if p.is_file():
            assert b"SECRET-FROM-OUTSIDE" not in p.read_bytes()


def test_an_unknown_sidecar_key_warns_and_builds(hostile):
    assert hostile["index"]["unknown/sop.json"]["status"] == "built"
    assert "warning: unknown.mp4: sidecar unknown.sop.yaml: unknown key 'reviewer' ignored" in hostile["run"].stderr


def test_the_hostile_run_exits_1_without_traceback(hostile):
    assert hostile["run"].returncode == 1
    assert "Traceback" not in hostile["run"].stderr


def assert_inert(md: str, own_tags: set[str], own_links: tuple[str, ...] = ()) -> None:
    """No tag, link or image can form from the text: outside code spans (where
    nothing is interpreted) only the renderer's own tags and links remain."""
    text = re.sub(r"(?<![\\`])(`+)(?!`).*?(?<!`)\1(?!`)", " ", md, flags=re.S)
    assert set(re.findall(r"<\s*/?\s*([a-zA-Z][a-zA-Z0-9]*)", text)) <= own_tags
    assert [m for m in re.findall(r"(?<!\\)\]\(([^)]*)", text) if not m.startswith(own_links)] == []


HOSTILE = ("<script>alert(1)</script> [x](javascript:alert(1)) ![i](https://evil.example/i.png) | a | b | "
           "<img src=x onerror=alert(1)> `tick` **bold** <!-- c --> &lt;b&gt;")


def test_markdown_and_html_from_a_sidecar_render_inert(hostile):
    md = (hostile["out"] / "html" / "sop.md").read_text("utf-8")
    assert_inert(md, {"details", "summary"}, ("images/",))
    owner_row = next(ln for ln in md.splitlines() if ln.startswith("| Owner |"))
    assert owner_row.count("|") - owner_row.count("\\|") == 3  # the value's pipe cannot open a column
    assert not re.search(r"^#+ not a heading", md, re.M)


def test_markdown_and_html_in_narration_render_inert_in_sop_md():
    from pipeline import render
    from pipeline.model import Box, Callout, GeneratorInfo, Screenshot, Sentence, Sop, SourceInfo, Step

    said = Sentence(1.0, 2.0, HOSTILE)
    step = Step("x", 1, 1.0, 2.0, 1.5, "Run " + HOSTILE, "warning", (said,), (Callout("warning", HOSTILE),),
                (HOSTILE, "kubectl get pods | grep `x`"), Screenshot("images/step-01.png", 2.0, "a" * 64, Box(1, 1, 9, 9)))
    sop = Sop("x", HOSTILE, HOSTILE, SourceInfo("a | b.mp4", "b" * 64, 3.0, 64, 64, 10.0, True),
              GeneratorInfo("sopline", "0", "m", "c" * 64), {"owner": HOSTILE, "prerequisites": [HOSTILE]},
              (step,), (said,))
    md = render.sop_markdown(sop)
    assert_inert(md, {"details", "summary"}, ("images/",))
    assert md.count("<details>") == md.count("</details>") == 1


def test_markdown_and_html_in_a_sop_render_inert_in_the_pr_diff(hostile, tmp_path):
    from pipeline.diffreport import to_markdown
    from pipeline.sopdiff import diff_trees, load_side

    old, new = tmp_path / "old" / "html", tmp_path / "new" / "html"
    shutil.copytree(hostile["out"] / "html", old)
    shutil.copytree(hostile["out"] / "html", new)
    doc = json.loads((new / "sop.json").read_text("utf-8"))
    doc["summary"] = HOSTILE
    doc["metadata"]["role"] = HOSTILE
    for step in doc["steps"]:
        step.update(instruction="Run " + HOSTILE, callouts=[{"kind": "warning", "text": HOSTILE}], inputs=[HOSTILE],
                    narration=[{"start_s": step["start_s"], "end_s": step["end_s"], "text": HOSTILE}])
    doc["steps"].append(dict(doc["steps"][0], id="added", number=len(doc["steps"]) + 1, screenshot=None))
    (new / "sop.json").write_text(json.dumps(doc), "utf-8")
    md = to_markdown(diff_trees(load_side(old.parent), load_side(new.parent)))
    assert "Run &lt;script&gt;" in md
    assert_inert(md, {"details", "summary", "sub"})


def test_sidecar_text_stays_plain_data_in_sop_json(hostile):
    doc = json.loads((hostile["out"] / "html" / "sop.json").read_text("utf-8"))
    assert doc["title"] == HOSTILE_TEXT["title"]
    assert doc["metadata"]["prerequisites"] == HOSTILE_TEXT["prerequisites"]


# ----------------------------------------------------------- concurrency

def test_a_second_concurrent_build_into_the_same_folder_is_refused(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name in ("vfr.mp4", "rotated.mp4"):
        shutil.copy(BROKEN / name, src / name)
    cmd = [sys.executable, "-m", "pipeline.cli", "build", str(src), "-o", str(out), "--threads", "1"]
    first = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    lines: list[str] = []
    started = threading.Event()

    def drain():
        for line in first.stderr:
            lines.append(line)
            if line.rstrip().endswith(": starting"):  # inside the lock: a recording is being built
                started.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert started.wait(300), "".join(lines)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        first.wait(600)
        reader.join(10)
    assert second.returncode == 1
    assert "another sopline build is writing to this folder" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, "".join(lines)
    index = json.loads((out / "index.json").read_text())
    assert sorted(e["sop"] for e in index["sops"]) == ["rotated/sop.json", "vfr/sop.json"]
    assert all(e["status"] == "built" for e in index["sops"])


# ---------------------------------------------------------------- corpus

def test_the_committed_corpus_is_what_make_broken_wrote():
    sums = (BROKEN / "SHA256SUMS").read_text().splitlines()
    recorded = dict(reversed(ln.split("  ", 1)) for ln in sums if not ln.startswith("#"))
    files = sorted(p.name for p in BROKEN.iterdir() if p.suffix in (".mp4", ".webm"))
    assert sorted(recorded) == files
    for name in files:
        assert hashlib.sha256((BROKEN / name).read_bytes()).hexdigest() == recorded[name], name


def test_the_corpus_was_made_from_the_current_fixture_recordings():
    sources = [ln.split()[2:] for ln in (BROKEN / "SHA256SUMS").read_text().splitlines() if ln.startswith("# source")]
    assert sources
    for digest, name in sources:
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == digest, name


def test_the_corpus_stays_small():
    assert sum(p.stat().st_size for p in BROKEN.iterdir()) < 1_500_000
