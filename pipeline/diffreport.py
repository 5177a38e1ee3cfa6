"""The SOP diff report as JSON and as Markdown for a pull-request comment.

Kept apart from :mod:`pipeline.sopdiff` (which decides what changed) because this
side is about presentation: a summary line per SOP, details folded into
``<details>`` sections, word diffs, and every piece of SOP text escaped so that
narration or a sidecar can never inject HTML, links or table breaks into a comment.
"""
from __future__ import annotations

import html
import json
from collections import Counter
from typing import Iterable
from urllib.parse import quote

from .render import md_code, md_escape
from .sopdiff import SCHEMA_VERSION, DiffReport, FieldChange, SopDiff, StepChange, StepRef, WordOp


# -------------------------------------------------------------------- JSON

def report_dict(report: DiffReport) -> dict:
    """The JSON document (schemas/diff.schema.json)."""
    return {"schema_version": SCHEMA_VERSION, "base": report.base, "changed": report.changed,
            "sops": [_sop_dict(s) for s in report.sops]}


def to_json(report: DiffReport) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _sop_dict(s: SopDiff) -> dict:
    return {"sop": s.sop, "status": s.status, "title": s.title, "steps_old": s.steps_old,
            "steps_new": s.steps_new, "counts": s.counts, "fields": [_field_dict(f) for f in s.fields],
            "steps": [_step_dict(c) for c in s.steps],
            "orphaned": [{"step": o.step, "fields": list(o.fields), "reason": o.reason} for o in s.orphaned],
            "orphaned_changed": s.orphaned_changed, "info": list(s.info)}


def _field_dict(f: FieldChange) -> dict:
    return {"field": f.field, "origin": f.origin, "old": f.old, "new": f.new, "overridden": f.overridden,
            "words": [{"op": w.op, "text": w.text} for w in f.words]}


def _ref_dict(r: StepRef | None) -> dict | None:
    if r is None:
        return None
    return {"number": r.number, "id": r.id, "instruction": r.instruction, "screenshot": r.screenshot}


def _step_dict(c: StepChange) -> dict:
    return {"status": c.status, "origin": c.origin, "moved": c.moved, "old": _ref_dict(c.old),
            "new": _ref_dict(c.new), "match": c.match, "screenshot_changed": c.screenshot_changed,
            "screenshot_similarity": c.screenshot_similarity, "screenshot_origin": c.screenshot_origin,
            "fields": [_field_dict(f) for f in c.fields],
            "reasons": list(c.reasons), "info": list(c.info)}


# ---------------------------------------------------------------- Markdown

def summary_line(s: SopDiff) -> str:
    """"1 step added, 1 changed, screenshot changed in 2; summary changed" (no SOP text)."""
    if s.status == "added":
        return f"new SOP ({_n(s.steps_new or 0, 'step')})"
    if s.status == "removed":
        return f"SOP removed (had {_n(s.steps_old or 0, 'step')})"
    c = s.counts
    parts = []
    first = True
    for key, label in (("added", "added"), ("removed", "removed"), ("changed", "changed"), ("moved", "moved")):
        if c[key]:
            parts.append(f"{_n(c[key], 'step')} {label}" if first else f"{c[key]} {label}")
            first = False
    if c["screenshot_changed"]:
        parts.append(f"screenshot changed in {c['screenshot_changed']}")
    text = ", ".join(parts)
    names = sorted({f.field.split(".")[0] for f in s.fields})
    if names:
        text += ("; " if text else "") + ", ".join(names) + " changed"
    if s.orphaned:
        text += ("; " if text else "") + f"{_n(len(s.orphaned), 'orphaned edit')}"
    return text or "no changes"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def to_markdown(report: DiffReport, image_base: str | None = None, old_image_base: str | None = None) -> str:
    """The report as Markdown for a pull-request comment or a job summary.
    Every text taken from an SOP is escaped to render inert; screenshot paths
    become links when ``image_base`` (new side) / ``old_image_base`` are given."""
    links = _Links(image_base, old_image_base)
    head = "## SOP changes"
    if report.base:
        head += f" against {md_code(report.base)}"
    blocks = [head]
    total = len(report.sops)
    if report.changed:
        blocks.append(f"**{report.changed} of {_n(total, 'SOP')} changed.**")
    else:
        blocks.append(f"No SOP changed ({total} compared).")
    shown = [s for s in report.sops if s.changed or s.orphaned]
    if shown:
        blocks.append("\n".join(f"- {md_code(s.sop)}: {summary_line(s)}" for s in shown))
    for s in shown:
        blocks.append(_details(s, links))
    unchanged = [s for s in report.sops if not s.changed]
    if report.changed and unchanged:
        blocks.append(f"{_n(len(unchanged), 'SOP')} unchanged.")
    return "\n\n".join(blocks) + "\n"


class _Links:
    def __init__(self, new_base: str | None, old_base: str | None):
        self.new_base, self.old_base = new_base, old_base

    def shot(self, path: str | None, side: str) -> str:
        if not path:
            return "_none_"
        base = self.new_base if side == "new" else self.old_base
        if not base:
            return md_code(path)
        url = base.rstrip("/") + "/" + quote(path, safe="/-._~")
        return f"[{md_escape(path)}]({url})"


def _html_text(text: str) -> str:
    clean = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in str(text))
    return html.escape(" ".join(clean.split()), quote=True)


def _details(s: SopDiff, links: _Links) -> str:
    lines = ["<details>", f"<summary>{_html_text(s.sop)}: {_html_text(summary_line(s))}</summary>", ""]
    lines.append(f"**{md_escape(s.title) or md_code(s.sop)}**")
    lines.append("")
    if s.status in ("added", "removed"):
        for c in s.steps:
            ref = c.new or c.old
            lines.append(f"{ref.number}. {md_escape(ref.instruction)}{_origin_tag(c.origin)}")
        if s.steps:
            lines.append("")
    else:
        if s.fields:
            lines += [f"- {_field_line(f)}" for f in s.fields]
            lines.append("")
        for c in s.steps:
            lines += _step_lines(c, links)
        if s.steps:
            lines.append("")
    if s.orphaned:
        lines.append("**Orphaned edits** (their step no longer exists):")
        for o in s.orphaned:
            fields = ", ".join(md_escape(f) for f in o.fields) or "_no fields_"
            reason = f": {md_escape(o.reason)}" if o.reason.strip() else ""
            lines.append(f"- step {md_code(o.step)} ({fields}){reason}")
        lines.append("")
    minor = list(s.info)
    for c in s.steps:
        ref = c.new or c.old
        minor += [f"step {ref.number}: {i}" for i in c.info]
    if minor:
        lines.append("<sub>Not counted as changes: " + "; ".join(md_escape(i) for i in minor) + "</sub>")
        lines.append("")
    lines.append("</details>")
    return "\n".join(lines)


def _origin_tag(origin: str) -> str:
    return " _(human edit)_" if origin == "human" else ""


def _step_lines(c: StepChange, links: _Links) -> list[str]:
    ref = c.new or c.old
    number = (f"step {c.old.number} → {c.new.number}" if c.old and c.new and c.old.number != c.new.number
              else f"step {ref.number}")
    why = f" ({', '.join(md_escape(r) for r in c.reasons)})" if c.reasons else ""
    if c.status in ("added", "removed"):
        line = f"- **{c.status.capitalize()}** {number}: {md_escape(ref.instruction)}{_origin_tag(c.origin)}{why}"
        if c.status == "added" and ref.screenshot:
            line += f" — screenshot {links.shot(ref.screenshot, 'new')}"
        return [line]
    label = "Changed and moved" if c.status == "changed" and c.moved else c.status.capitalize()
    headline = next((f for f in c.fields if f.field == "instruction" and not f.overridden), None)
    if headline is not None:
        origin = "human edit" if headline.origin == "human" else "generated"
        lines = [f"- **{label}** {number}: {_words_md(headline.words)} _({origin})_"]
    else:
        lines = [f"- **{label}** {number}: {md_escape(ref.instruction)}"]
    for f in c.fields:
        if f is not headline:
            lines.append(f"  - {_field_line(f)}")
    if c.screenshot_changed:
        sim = "" if c.screenshot_similarity is None else f" (similarity {c.screenshot_similarity:.2f})"
        origin = "human edit" if c.screenshot_origin == "human" else "generated"
        lines.append(f"  - screenshot ({origin}) changed{sim}: {links.shot(c.old.screenshot, 'old')} → "
                     f"{links.shot(c.new.screenshot, 'new')}")
    return lines


def _field_line(f: FieldChange) -> str:
    name = md_escape(f.field)
    origin = "human edit" if f.origin == "human" else "generated"
    hidden = ", hidden by a human edit" if f.overridden else ""
    return f"{name} ({origin}{hidden}): {_value_change(f)}"


def _value_change(f: FieldChange) -> str:
    if f.words:
        return _words_md(f.words)
    if isinstance(f.old, list) or isinstance(f.new, list):
        old = f.old if isinstance(f.old, list) else ([] if f.old is None else [f.old])
        new = f.new if isinstance(f.new, list) else ([] if f.new is None else [f.new])
        parts = [f"~~{_item_md(f.field, v)}~~" for v in _missing_from(old, new)]
        parts += [f"**{_item_md(f.field, v)}**" for v in _missing_from(new, old)]
        return " ".join(parts) if parts else "same items, different order"
    return f"{_scalar_md(f.old)} → {_scalar_md(f.new)}"


def _missing_from(items: list, other: list) -> list:
    """The items (with repeats, in order) that ``other`` does not also hold."""
    left = Counter(json.dumps(v, sort_keys=True) for v in other)
    out = []
    for v in items:
        key = json.dumps(v, sort_keys=True)
        if left[key]:
            left[key] -= 1
        else:
            out.append(v)
    return out


def _item_md(field_name: str, value) -> str:
    if isinstance(value, dict):
        if "kind" in value and "text" in value:
            return f"{md_escape(value['kind'])}: {md_escape(value['text'])}"
        if "url" in value:
            return f"{md_escape(value.get('title', ''))} {md_code(value['url'])}".strip()
        return md_code(json.dumps(value, sort_keys=True, ensure_ascii=False))
    if field_name == "inputs":
        return md_code(str(value))
    return md_escape(str(value))


def _scalar_md(value) -> str:
    if value is None or value == "" or value == []:
        return "_none_"
    if isinstance(value, (dict, list)):
        return md_code(json.dumps(value, sort_keys=True, ensure_ascii=False))
    return md_escape(str(value))


def _words_md(ops: Iterable[WordOp]) -> str:
    parts = []
    for op in ops:
        text = md_escape(op.text)
        if not text:
            continue
        parts.append(text if op.op == "equal" else f"~~{text}~~" if op.op == "delete" else f"**{text}**")
    return " ".join(parts) or "_empty_"
