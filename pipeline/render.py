"""Render stage: a :class:`~pipeline.model.Sop` to sop.json, sop.md and screenshots.

Output must be byte-identical for identical input (PR diffs and content-hash
skipping rely on it), so nothing here reads the clock, the machine or
dictionary order it does not control. Text that came from speech or a
sidecar is untrusted: sop.md renders it inert (no links, HTML or formatting
can form), since the Markdown is published and shown in pull requests.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import unicodedata
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw

from pipeline import fsutil
from pipeline.model import Box, EditsInfo, Sentence, Sop, Step
from pipeline.schemas import validate

SCHEMA_VERSION = 1
SOP_JSON = "sop.json"
SOP_MD = "sop.md"

HIGHLIGHT_RGB = (255, 59, 48)  # #ff3b30
HIGHLIGHT_WIDTH = 3
HIGHLIGHT_PAD = 4  # gap between the changed region and the inner edge of the outline
_HALO_RGB = (255, 255, 255)  # 1px outside the outline, so it shows on red UI too
_PNG_COMPRESS_LEVEL = 3  # as small as 6 on screen content (within 10 %), in about half the time

_METADATA_ORDER = ("owner", "role", "approvers", "prerequisites", "expected_outcome",
                   "review_every_days", "tags")
_KIND_BADGE = {"verification": "Verification", "warning": "Warning", "note": "Note"}
_CALLOUT_LABEL = {"warning": "Warning", "tip": "Tip", "verify": "Verify"}


def image_path(number: int) -> str:
    """Conventional path of step ``number``'s screenshot, relative to sop.json."""
    return f"images/step-{number:02d}.png"


# --------------------------------------------------------------------- PNG

def screenshot_png(frame: np.ndarray, highlight: Box | None = None) -> bytes:
    """PNG of an RGB frame with ``highlight`` (frame pixels) outlined in red, so the
    reader's eye lands on what changed. Nothing else is altered: the screenshot
    stays a faithful record of the screen.

    Deterministic: no metadata chunks, fixed compression level.
    """
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {arr.shape} {arr.dtype}")
    height, width = arr.shape[:2]
    outline = _outline_rect(highlight, width, height) if highlight is not None else None
    if outline is None:
        img = Image.fromarray(np.ascontiguousarray(arr))
    else:
        x0, y0, x1, y1 = outline
        img = Image.fromarray(np.ascontiguousarray(arr))
        draw = ImageDraw.Draw(img)
        draw.rectangle((x0 - 1, y0 - 1, x1 + 1, y1 + 1), outline=_HALO_RGB, width=1)
        draw.rectangle((x0, y0, x1, y1), outline=HIGHLIGHT_RGB, width=HIGHLIGHT_WIDTH)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _outline_rect(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Outer corners (inclusive) of the outline around ``box``, clipped to the
    image; None when the box is empty or entirely off-screen."""
    if box.w <= 0 or box.h <= 0:
        return None
    grow = HIGHLIGHT_PAD + HIGHLIGHT_WIDTH
    x0, y0 = box.x - grow, box.y - grow
    x1, y1 = box.x + box.w - 1 + grow, box.y + box.h - 1 + grow
    if x1 < 0 or y1 < 0 or x0 >= width or y0 >= height:
        return None
    return max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)


# -------------------------------------------------------------------- JSON

def sop_to_dict(sop: Sop) -> dict:
    """The sop.json document: schema_version first, then DESIGN.md's field
    order; times rounded to 3 decimals. Raises ValueError on an absolute path."""
    src, gen = sop.source, sop.generator
    doc = {
        "schema_version": SCHEMA_VERSION,
        "id": sop.id,
        "title": sop.title,
        "summary": sop.summary,
        "source": {
            "path": _relative(src.path, "source.path"),
            "sha256": src.sha256,
            "duration_s": _t(src.duration_s),
            "width": int(src.width),
            "height": int(src.height),
            "fps": _t(src.fps),
            "has_audio": bool(src.has_audio),
        },
        "generator": {
            "name": gen.name,
            "version": gen.version,
            "model": gen.model,
            "settings_sha256": gen.settings_sha256,
        },
        "metadata": _metadata(sop.metadata),
        "steps": [_step_dict(step) for step in sop.steps],
        "transcript": [_timed(s) for s in sop.transcript],
    }
    if sop.edits is not None:  # only SOPs with an edits overlay carry the key
        doc["edits"] = _edits_dict(sop.edits)
    return doc


def sop_json_bytes(sop: Sop) -> bytes:
    """sop.json's exact bytes: 2-space indent, UTF-8, trailing newline."""
    return _json_bytes(sop_to_dict(sop))


def _json_bytes(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _step_dict(step: Step) -> dict:
    shot = step.screenshot
    doc = {
        "id": step.id,
        "number": int(step.number),
        "start_s": _t(step.start_s),
        "end_s": _t(step.end_s),
        "change_s": None if step.change_s is None else _t(step.change_s),
        "instruction": step.instruction,
        "kind": step.kind,
        "narration": [_timed(s) for s in step.narration],
        "callouts": [c.as_dict() for c in step.callouts],
        "inputs": list(step.inputs),
        "screenshot": None if shot is None else {
            "path": _relative(shot.path, f"steps[{step.number}].screenshot.path"),
            "time_s": _t(shot.time_s),
            "sha256": shot.sha256,
            "highlight": shot.highlight.as_dict() if shot.highlight else None,
        },
    }
    # Human-edit fields appear only when set, so SOPs without edits keep their bytes.
    if step.notes:
        doc["notes"] = list(step.notes)
    if step.links:
        doc["links"] = [link.as_dict() for link in step.links]
    if step.origin != "generated":
        doc["origin"] = step.origin
    if step.edited is not None:
        doc["edited"] = {"fields": list(step.edited.fields), "by": step.edited.by,
                         "generated": _plain(step.edited.generated)}
        if step.edited.merged:
            doc["edited"]["merged"] = list(step.edited.merged)
    return doc


def _edits_dict(edits: EditsInfo) -> dict:
    doc = {
        "path": _relative(edits.path, "edits.path"),
        "sha256": edits.sha256,
        "applied": int(edits.applied),
        "dropped": list(edits.dropped),
        "merged": list(edits.merged),
        "orphaned": [{"step": o.step, "fields": list(o.fields), "reason": o.reason} for o in edits.orphaned],
        "sop_fields": list(edits.sop_fields),
    }
    if edits.generated:
        doc["generated"] = _plain(edits.generated)
    if edits.by:
        doc["by"] = edits.by
    return doc


def _timed(sentence: Sentence) -> dict:
    return {"start_s": _t(sentence.start_s), "end_s": _t(sentence.end_s), "text": sentence.text}


def _t(seconds: float) -> float:
    return round(float(seconds), 3) + 0.0  # + 0.0 turns -0.0 into 0.0


def _metadata(metadata: Mapping) -> dict:
    """Known keys in a fixed order, then any others sorted, so the sidecar's
    key order does not change the output."""
    known = [k for k in _METADATA_ORDER if k in metadata]
    extra = sorted((k for k in metadata if k not in _METADATA_ORDER), key=str)
    return {k: _plain(metadata[k]) for k in known + extra}


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _relative(path: str, what: str) -> str:
    """Refuse absolute or escaping paths: outputs must not leak the build
    machine's layout, and must not point outside the SOP folder."""
    posix, win = PurePosixPath(path), PureWindowsPath(path)
    if (not path or posix.is_absolute() or win.drive or "\\" in path
            or ".." in posix.parts or "\x00" in path):
        raise ValueError(f"{what} must be a relative POSIX path without '..', got {path!r}")
    return path


# ---------------------------------------------------------------- Markdown

_MD_ESCAPES = {c: "\\" + c for c in "\\`*_[]()#|~$"}
_MD_ESCAPES.update({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_MD_TABLE = str.maketrans(_MD_ESCAPES)
_ORDERED_MARKER = re.compile(r"^(\d{1,9})\.")


def md_escape(text: str) -> str:
    """``text`` as inert inline Markdown: shows literally, forms no link, HTML,
    emphasis, code, table cell break or heading, wherever it is placed on a
    line. Whitespace (newlines included) collapses to single spaces and
    control characters are dropped."""
    out = _one_line(text).translate(_MD_TABLE)
    if out[:1] in ("-", "+", "="):  # list item / setext underline at line start
        out = "\\" + out
    return _ORDERED_MARKER.sub(r"\1\\.", out)


def md_code(text: str) -> str:
    """``text`` as an inline code span, fenced with more backticks than any run
    inside it (so backticks in a command cannot close the span early)."""
    text = "".join(" " if _is_control(ch) or ch in "\r\n" else ch for ch in str(text))
    fence = "`" * (_longest_backtick_run(text) + 1)
    if text.strip(" ") and (text[0] in "` " or text[-1] in "` "):
        text = f" {text} "  # renderers strip exactly one space each side
    return f"{fence}{text}{fence}"


def md_code_block(text: str) -> str:
    """``text`` as a fenced code block, for multi-line commands."""
    lines = str(text).replace("\r\n", "\n").replace("\r", "\n")
    lines = "".join(ch for ch in lines if ch in "\n\t" or not _is_control(ch))
    fence = "`" * max(3, _longest_backtick_run(lines) + 1)
    return f"{fence}\n{lines}\n{fence}"


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def _one_line(text: str) -> str:
    return " ".join("".join(" " if _is_control(ch) else ch for ch in str(text)).split())


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_URL_SAFE = "/:?#@!$'*+,;=-._~%&"


def safe_url(url: str) -> str | None:
    """``url`` as a Markdown link destination when it is http(s) or relative,
    else None. javascript:, data:, protocol-relative (//host) and anything with
    whitespace, control characters or backslashes is refused. The result is
    percent-encoded and its ``&`` written as ``&amp;``, so no character
    reference can turn a harmless-looking relative URL into a scheme."""
    if not isinstance(url, str) or not url or len(url) > 2000:
        return None
    if any(ch.isspace() or _is_control(ch) or ch == "\\" for ch in url):
        return None
    match = _SCHEME.match(url)
    if match:
        if match.group(1).lower() not in ("http", "https") or not re.match(r"^[A-Za-z]+://[^/?#]", url):
            return None
    elif url.startswith("//"):
        return None
    return quote(url, safe=_URL_SAFE).replace("&", "&amp;")


def md_link(title: str, url: str) -> str:
    """A Markdown link with an inert title, or the title and the URL as code when
    the URL is not allowed."""
    dest = safe_url(url)
    if dest is None:
        return f"{md_escape(title)} ({md_code(url)})"
    return f"[{md_escape(title) or dest}]({dest})"


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_INLINE_LINK = re.compile(r"(!?)\[([^\[\]\n]{1,500})\]\(\s*([^\s()<>]{1,2000})(?:\s+\"[^\"\n]*\")?\s*\)")
_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "\\[",
                               "]": "\\]", "`": "\\`"})


def md_markdown(text: str) -> list[str]:
    """Lines of Markdown a person wrote (a note), made safe to publish: emphasis,
    lists, code spans and fenced code blocks, tables and http(s)/relative links
    keep working; raw HTML, character references, images, headings, reference
    definitions and links to other schemes come out as literal text. An
    unclosed code fence is closed, so a note cannot swallow what follows it."""
    lines = str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    fence: str | None = None
    for raw in lines:
        line = "".join(ch for ch in raw if ch == "\t" or not _is_control(ch))
        match = _FENCE.match(line)
        if fence is not None:
            out.append(line)
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not match.group(2).strip():
                fence = None
            continue
        # A fence opens only at the first column: an indented one may belong to a list
        # item, which ends (closing the fence) where our line-by-line reading would not.
        if match and line[:1] in "`~" and not (match.group(1)[0] == "`" and "`" in match.group(2)):
            fence = match.group(1)
            info = re.sub(r"[^A-Za-z0-9_+-]", "", match.group(2))[:32]
            out.append(fence + info)
            continue
        out.append(_md_line(line))
    if fence is not None:
        out.append(fence)
    while out and not out[-1].strip():
        out.pop()
    while out and not out[0].strip():
        out.pop(0)
    return out


def _md_line(line: str) -> str:
    indent = len(line) - len(line.lstrip(" \t"))
    body = _md_inline(line[indent:], links=True)
    if body.startswith("#"):
        body = "\\" + body  # no headings inside a note
    return line[:indent] + body


def _md_inline(text: str, links: bool) -> str:
    """Code spans verbatim, allowed links re-emitted, everything else escaped."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "`":
            run = len(text[i:]) - len(text[i:].lstrip("`"))
            close = _closing_run(text, i + run, run)
            if close is None:
                out.append("\\`" * run)
                i += run
            else:
                out.append(text[i:close + run])
                i = close + run
            continue
        match = _INLINE_LINK.match(text, i) if links and ch in "![" else None
        if match:
            label, url = match.group(2), match.group(3)
            dest = safe_url(url)
            if dest is None:
                out.append(_md_inline(match.group(0), links=False))
            else:  # an image becomes a plain link: nothing is fetched when the page is viewed
                if out and out[-1] == "!":
                    out[-1] = "\\!"
                out.append(f"[{_md_inline(label, links=False)}]({dest})")
            i = match.end()
            continue
        out.append(ch.translate(_TEXT_ESCAPES))
        i += 1
    return "".join(out)


def _closing_run(text: str, start: int, run: int) -> int | None:
    """Index of the next backtick run of exactly ``run`` characters at or after
    ``start`` (how CommonMark closes a code span), or None."""
    for match in re.finditer(r"`+", text[start:]):
        if len(match.group(0)) == run:
            return start + match.start()
    return None


def format_ts(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a reader; seconds are truncated."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def sop_markdown(sop: Sop, mark_edited: bool | None = None) -> str:
    """sop.md: the SOP as a team would publish it. Steps a person edited or added
    read like the others, with a small "(edited)"/"(added)" marker after the
    heading unless ``mark_edited`` is False (default: the overlay's
    ``mark_edited``, on when absent)."""
    if mark_edited is None:
        mark_edited = sop.edits.mark_edited if sop.edits is not None else True
    blocks: list[str] = [f"# {md_escape(sop.title)}"]
    if sop.summary.strip():
        blocks.append(md_escape(sop.summary))
    blocks += _metadata_blocks(sop.metadata)
    blocks.append("## Procedure")
    if not sop.steps:
        blocks.append("_No steps were found in the recording._")
    for step in sop.steps:
        blocks += _step_blocks(step, mark_edited)
    blocks += _source_blocks(sop)
    return "\n\n".join(blocks) + "\n"


def _metadata_blocks(meta: Mapping) -> list[str]:
    rows = []
    if meta.get("owner"):
        rows.append(("Owner", md_escape(meta["owner"])))
    if meta.get("role"):
        rows.append(("Role", md_escape(meta["role"])))
    if meta.get("approvers"):
        rows.append(("Approvers", ", ".join(md_escape(a) for a in meta["approvers"])))
    if meta.get("review_every_days"):
        days = int(meta["review_every_days"])
        rows.append(("Review", f"every {days} day{'s' if days != 1 else ''}"))
    if meta.get("tags"):
        rows.append(("Tags", ", ".join(md_escape(t) for t in meta["tags"])))
    blocks = []
    if rows:
        blocks.append("\n".join(["| Field | Value |", "| --- | --- |"]
                                + [f"| {k} | {v} |" for k, v in rows]))
    if meta.get("prerequisites"):
        blocks.append("## Prerequisites")
        blocks.append("\n".join(f"- {md_escape(p)}" for p in meta["prerequisites"]))
    if meta.get("expected_outcome"):
        blocks.append("## Expected outcome")
        blocks.append(md_escape(meta["expected_outcome"]))
    return blocks


def _edit_marker(step: Step) -> str:
    if step.origin == "manual":
        word = "added"
    elif step.edited is not None and step.edited.fields:
        word = "edited"
    else:
        return ""
    by = step.edited.by if step.edited is not None else None
    return f" _({word}{' by ' + md_escape(by) if by else ''})_"


def _step_blocks(step: Step, mark_edited: bool = True) -> list[str]:
    instruction = md_escape(step.instruction)
    marker = _edit_marker(step) if mark_edited else ""
    blocks = [f"### {int(step.number)}. {instruction}{marker}"]
    if step.kind in _KIND_BADGE:
        blocks.append(f"**{_KIND_BADGE[step.kind]}**")
    shot = step.screenshot
    if shot is not None:
        url = quote(_relative(shot.path, "screenshot path"), safe="/-._~")
        blocks.append(f"![Step {int(step.number)}: {instruction}]({url})")
    for callout in step.callouts:
        label = _CALLOUT_LABEL.get(callout.kind, "Note")
        blocks.append(f"> **{label}:** {md_escape(callout.text)}")
    for note in step.notes:
        lines = md_markdown(note)
        if len(lines) == 1 and not _FENCE.match(lines[0]):
            blocks.append(f"> **Note:** {lines[0]}")
        elif lines:  # a blockquote contains the note's own blocks (lists, code)
            blocks.append("\n".join(["> **Note:**", ">"] + [f"> {ln}".rstrip() for ln in lines]))
    if step.links:
        blocks.append("**Links:**")
        blocks.append("\n".join(f"- {md_link(link.title, link.url)}" for link in step.links))
    inputs = [value for value in step.inputs if value.strip()]
    if inputs:
        blocks.append("**Inputs:**")
        bullets: list[str] = []
        for value in inputs:
            if "\n" in value.strip("\r\n"):
                if bullets:
                    blocks.append("\n".join(bullets))
                    bullets = []
                blocks.append(md_code_block(value.strip("\r\n")))
            else:
                bullets.append(f"- {md_code(value.strip())}")
        if bullets:
            blocks.append("\n".join(bullets))
    if step.narration:
        span = f"{format_ts(step.narration[0].start_s)}–{format_ts(step.narration[-1].end_s)}"
        lines = "\n".join(f"- {format_ts(s.start_s)} {md_escape(s.text)}" for s in step.narration)
        blocks.append(f"<details>\n<summary>Narration ({span})</summary>\n\n{lines}\n\n</details>")
    return blocks


def _source_blocks(sop: Sop) -> list[str]:
    src, gen = sop.source, sop.generator
    video = f"{int(src.width)}×{int(src.height)}, {_t(src.fps):g} fps"
    video += ", with audio" if src.has_audio else ", no audio"
    generated = md_escape(f"{gen.name} {gen.version}")
    lines = [
        f"- Recording: {md_code(_relative(src.path, 'source.path'))}",
        f"- Recording SHA-256: {md_code(src.sha256)}",
        f"- Duration: {format_ts(src.duration_s)} ({_t(src.duration_s):g} s)",
        f"- Video: {video}",
        f"- Generator: {generated}",
    ]
    if gen.model:
        lines.append(f"- Speech model: {md_code(gen.model)}")
    lines.append(f"- Settings SHA-256: {md_code(gen.settings_sha256)}")
    return ["## Source", "\n".join(lines)]


# ------------------------------------------------------------------ folder

def write_sop_folder(sop: Sop, pngs: Mapping[str, bytes], dest: Path) -> None:
    """Write sop.json, sop.md and the screenshots to ``dest``, replacing any
    previous SOP there as a whole: everything is written to a hidden sibling
    first and swapped in only once complete, so a failure or interruption
    leaves the previous version untouched.

    ``pngs`` maps paths relative to sop.json ("images/step-01.png") to PNG
    bytes. Raises ValueError when the SOP breaks the schema, a step's
    screenshot is missing from ``pngs`` or its sha256 does not match.
    """
    dest = Path(dest)
    doc = sop_to_dict(sop)
    errors = validate("sop", doc)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValueError(f"{SOP_JSON} would not match the schema: {errors[0]}{more}")
    for key in pngs:
        _relative(key, "image path")
        if key in (SOP_JSON, SOP_MD):
            raise ValueError(f"image path {key!r} would overwrite {key}")
    expected = {s.screenshot.path: s.screenshot.sha256 for s in sop.steps if s.screenshot}
    missing = sorted(set(expected) - set(pngs))
    if missing:
        raise ValueError(f"screenshot {missing[0]} is referenced by a step but was not given")
    markdown = sop_markdown(sop).encode("utf-8")
    _refuse_links(dest, PurePosixPath(sop.source.path))

    fsutil.remove_leftovers(dest)
    staging = fsutil.staging_dir_for(dest)
    try:
        for key in sorted(pngs):
            data = pngs[key]
            if key in expected and hashlib.sha256(data).hexdigest() != expected[key]:
                raise ValueError(f"screenshot {key}: sha256 in the SOP does not match its bytes")
            _write(staging / key, data)
        _write(staging / SOP_MD, markdown)
        _write(staging / SOP_JSON, _json_bytes(doc))  # last: its presence means complete
        fsutil.replace_dir_atomically(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _refuse_links(dest: Path, source: PurePosixPath) -> None:
    """Refuse to write through a symbolic link below the output folder. ``dest`` is
    OUT/<source without suffix>, so its last len(source.parts) components are the
    folders sopline owns; a link there (a pull request can commit one into a docs
    tree) would send the new SOP, and the removal of the old one, outside OUT."""
    depth = min(max(len(source.parts), 1), len(dest.parts))
    rel = dest.parts[len(dest.parts) - depth:]
    for i in range(depth):  # outermost first
        if dest.parents[depth - 2 - i].is_symlink() if i < depth - 1 else dest.is_symlink():
            raise OSError(f"output folder entry {PurePosixPath(*rel[: i + 1]).as_posix()!r} is a symbolic "
                          f"link; refusing to write the SOP through it")
