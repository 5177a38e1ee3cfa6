"""Audit: is the SOP library still trustworthy?

SOPs rot quietly: a recording is re-recorded and nobody rebuilds, a recording
is deleted and its SOP lingers, nobody has looked at a procedure in a year. The
scheduled job runs :func:`audit` over a built SOP tree and the recordings it
was built from and reports findings, each with a severity, so a team can fail
the job (or open an issue) only on what matters to them.

Severities, lowest first: ``info`` < ``low`` < ``medium`` < ``high``.

=================  ========  ====================================================
kind               severity  meaning
=================  ========  ====================================================
invalid            high      sop.json (or the sidecar, or index.json) unreadable
                             or failing its schema
build_failed       high      the last build of the recording failed
stale              high      the recording changed since the SOP was built
stale              medium    the sidecar or the edits overlay changed since then
orphaned           medium    the SOP's recording is gone
missing            medium    a recording has no SOP
overdue_review     medium    not reviewed within ``review_every_days`` (sidecar)
                             or ``max_age`` days
orphaned_edits     medium    human edits whose step no longer exists
no_owner           low       the sidecar names no owner
generator_drift    low       built by another sopline version
model_drift        low       built with another speech model
=================  ========  ====================================================

The review age is dated from the ``last_reviewed`` date in the sidecar
(written by ``sopline review``), else from the last git commit touching the
recording or its sidecar, else (outside git, or uncommitted) from the newest
file modification time of the two. Dates are UTC days; nothing in the report
depends on the clock except the as-of date, which callers may pin.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping, Sequence

from . import __version__
from .build import INDEX_NAME, discover
from .edits import edits_path_for
from .fsutil import sha256_file
from .render import md_escape
from .sidecar import SidecarError, load_sidecar, sidecar_path_for
from .sopread import MAX_SOP_BYTES, SopReadError, parse_sop

SEVERITIES = ("info", "low", "medium", "high")
DEFAULT_MAX_AGE_DAYS = 180
INDEX_KEY = "index.json"  # the `sop` of findings about the manifest itself

KINDS = {  # kind -> label shown to people
    "invalid": "invalid",
    "build_failed": "build failed",
    "stale": "stale",
    "orphaned": "orphaned",
    "missing": "missing",
    "overdue_review": "overdue review",
    "orphaned_edits": "orphaned edits",
    "no_owner": "no owner",
    "generator_drift": "generator drift",
    "model_drift": "model drift",
}
_GIT_TIMEOUT_S = 60
_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX")


def severity_rank(severity: str) -> int:
    """Position of ``severity`` in :data:`SEVERITIES` (``info`` is 0)."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(f"unknown severity {severity!r}; expected one of {', '.join(SEVERITIES)}") from None


@dataclass(frozen=True)
class Finding:
    """One problem with one SOP (or with a recording that has none)."""

    sop: str  # SOP folder relative to the SOP tree, posix ("ops/deploy"); "index.json" for the manifest
    kind: str  # a key of KINDS
    severity: str  # one of SEVERITIES
    message: str  # one line, no absolute paths
    source: str | None = None  # recording relative to the recordings root, when known
    facts: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def sort_key(self) -> tuple:
        return (-severity_rank(self.severity), self.sop, self.kind, self.message)

    def to_dict(self) -> dict:
        doc: dict[str, Any] = {"sop": self.sop, "kind": self.kind, "severity": self.severity,
                               "message": self.message, "source": self.source}
        if self.facts:
            doc["facts"] = dict(self.facts)
        return doc


@dataclass(frozen=True)
class AuditReport:
    """Findings sorted most severe first, then by SOP."""

    as_of: date
    findings: tuple[Finding, ...]
    sops: int  # SOPs audited
    recordings: int  # recordings found under the recordings root
    max_age_days: int

    def at_or_above(self, severity: str) -> tuple[Finding, ...]:
        """Findings of ``severity`` or worse (what `--fail-on` fails on)."""
        floor = severity_rank(severity)
        return tuple(f for f in self.findings if severity_rank(f.severity) >= floor)

    def counts(self) -> dict:
        by_severity = {s: 0 for s in SEVERITIES}
        by_kind = {k: 0 for k in KINDS}
        for f in self.findings:
            by_severity[f.severity] += 1
            by_kind[f.kind] += 1
        return {"sops": self.sops, "recordings": self.recordings, "findings": len(self.findings),
                "by_severity": by_severity, "by_kind": by_kind}


# ---------------------------------------------------------------- the audit

@dataclass(frozen=True)
class _Sop:
    rel: str  # SOP folder relative to the tree
    entry: Mapping | None  # its index.json entry


@dataclass(frozen=True)
class _Context:
    sops: Path
    recordings: Path
    today: date
    max_age: int
    version: str
    model: str


def audit(sops: Path, recordings: Path, today: date, max_age: int = DEFAULT_MAX_AGE_DAYS, *,
          model_label: str | None = None, generator_version: str = __version__) -> AuditReport:
    """Audit the SOP tree ``sops`` (a `sopline build` output) against the
    recordings under ``recordings`` (the build root its sources are relative to).

    ``model_label`` is the model the library is meant to be built with (default:
    the bundled model's label; the model itself is never loaded).
    """
    sops, recordings = Path(sops), Path(recordings)
    if max_age < 1:
        raise ValueError(f"max_age must be at least 1 day, got {max_age}")
    if model_label is None:
        from .transcribe import resolve_model

        model_label = resolve_model(None).label
    ctx = _Context(sops, recordings, today, max_age, generator_version, model_label)
    findings: list[Finding] = []
    entries, index_problem = _read_index(sops)
    if index_problem:
        findings.append(Finding(INDEX_KEY, "invalid", "high", index_problem))
    listed = {s.rel for s in entries}
    unlisted = [_Sop(rel, None) for rel in _sop_folders(sops) if rel not in listed]
    claimed: set[str] = set()
    all_sops = sorted(entries + unlisted, key=lambda s: s.rel)
    for sop in all_sops:
        sop_findings, source = _audit_sop(sop, ctx)
        findings += sop_findings
        if source:
            claimed.add(source)
    found = discover([recordings], sops) if recordings.is_dir() else []
    for rec in found:
        if str(rec.source) not in claimed:
            findings.append(Finding(str(rec.rel), "missing", "medium",
                                    f"recording {rec.source} has no SOP; build it", str(rec.source)))
    return AuditReport(today, tuple(sorted(findings, key=Finding.sort_key)), len(all_sops), len(found), max_age)


def _read_index(sops: Path) -> tuple[list[_Sop], str | None]:
    path = sops / INDEX_NAME
    if not path.is_file():
        return [], None
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return [], f"{INDEX_NAME}: not readable JSON ({_one_line(str(exc))}); SOPs are matched by their source.path"
    if not isinstance(doc, dict) or not isinstance(doc.get("sops"), list):
        return [], f"{INDEX_NAME}: no \"sops\" list; SOPs are matched by their source.path"
    out: dict[str, _Sop] = {}
    bad = 0
    for entry in doc["sops"]:
        key = entry.get("sop") if isinstance(entry, dict) else None
        rel = key[: -len("/sop.json")] if isinstance(key, str) and key.endswith("/sop.json") else None
        if rel is None or not _safe_rel(rel):
            bad += 1
            continue
        out.setdefault(rel, _Sop(rel, entry))
    problem = f"{INDEX_NAME}: {bad} entr{'y' if bad == 1 else 'ies'} without a valid \"sop\" path ignored" if bad else None
    return list(out.values()), problem


def _sop_folders(sops: Path) -> list[str]:
    """SOP folders holding a sop.json, skipping hidden (staging) folders."""
    if not sops.is_dir():
        return []
    rels = []
    for path in sops.rglob("sop.json"):
        rel = path.parent.relative_to(sops)
        if rel.parts and not any(p.startswith(".") for p in rel.parts):
            rels.append(rel.as_posix())
    return sorted(rels)


def _audit_sop(sop: _Sop, ctx: _Context) -> tuple[list[Finding], str | None]:
    """Findings for one SOP and the recording (relative source) it claims."""
    out: list[Finding] = []
    entry = sop.entry or {}
    failed = entry.get("status") == "failed"
    if failed:
        error = entry.get("error")
        reason = _one_line(error) if isinstance(error, str) and error else "no reason recorded"
        out.append(Finding(sop.rel, "build_failed", "high", f"last build failed: {reason}",
                           _str(entry.get("source"))))

    doc = _read_doc(sop, ctx, out, report_absent=not failed)
    source = _str(entry.get("source")) or _get(doc, "source", "path")
    if source is None:
        if doc is not None and not any(f.kind == "invalid" for f in out):
            out.append(Finding(sop.rel, "invalid", "high", f"{sop.rel}/sop.json: no source.path"))
        return out, None
    if not _safe_rel(source):
        out.append(Finding(sop.rel, "invalid", "high",
                           f"source {source!r} is not a relative path inside the recordings folder"))
        return out, None

    recording = ctx.recordings / source
    if not recording.is_file():
        out.append(Finding(sop.rel, "orphaned", "medium",
                           f"recording {source} is gone; delete the SOP or restore the recording", source))
        return out, source
    if failed and doc is None:  # never built: nothing to review or own yet
        return out, source

    side_rel_dir = PurePosixPath(source).parent
    try:
        side_path: Path | None = sidecar_path_for(recording)
    except SidecarError as exc:
        side_path = None
        out.append(Finding(sop.rel, "invalid", "high", f"{source}: {exc.reason}", source))
    edits_path = edits_path_for(recording)

    if not failed:
        out += _stale(sop, entry, doc, recording, side_path, edits_path, source)

    fields: dict | None = None
    if side_path is not None and side_path.exists():
        try:
            fields = load_sidecar(side_path).fields
        except SidecarError as exc:
            shown = (side_rel_dir / side_path.name).as_posix()
            out.append(Finding(sop.rel, "invalid", "high", str(exc).replace(str(side_path), shown), source))
    elif side_path is not None:
        fields = {}
    meta = doc.get("metadata") if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict) else {}
    known = fields if fields is not None else meta

    if not _str(known.get("owner")):  # the sidecar as the next build will read it
        out.append(Finding(sop.rel, "no_owner", "low",
                           "no owner; set `owner` in the recording's sidecar", source))

    overdue = _overdue(sop.rel, source, known, [recording] + ([side_path] if side_path else []), ctx)
    if overdue:
        out.append(overdue)

    if doc is not None:
        out += _drift(sop.rel, source, doc, ctx)
        orphaned = _get(doc, "edits", "orphaned", kind=list)
        if orphaned:
            out.append(_orphaned_edits(sop.rel, source, orphaned))
    return out, source


def _read_doc(sop: _Sop, ctx: _Context, out: list[Finding], report_absent: bool) -> dict | None:
    """The sop.json as a dict, even when it fails the schema (then an `invalid`
    finding is added and the other checks use what they can read)."""
    path = ctx.sops / Path(*PurePosixPath(sop.rel).parts) / "sop.json"
    where = f"{sop.rel}/sop.json"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SOP_BYTES + 1)
    except FileNotFoundError:
        if report_absent:
            out.append(Finding(sop.rel, "invalid", "high", f"{where} is missing (listed in {INDEX_NAME})",
                               _str((sop.entry or {}).get("source"))))
        return None
    except OSError as exc:
        out.append(Finding(sop.rel, "invalid", "high", f"{where}: {exc.strerror or exc}"))
        return None
    try:
        return parse_sop(data, where)
    except SopReadError as exc:
        out.append(Finding(sop.rel, "invalid", "high", str(exc), _str((sop.entry or {}).get("source"))))
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _stale(sop: _Sop, entry: Mapping, doc: dict | None, recording: Path, side_path: Path | None,
           edits_path: Path, source: str) -> list[Finding]:
    out = []
    built = _str(entry.get("sha256")) if sop.entry else _get(doc, "source", "sha256")
    if built:
        now = sha256_file(recording)
        if now != built:
            out.append(Finding(sop.rel, "stale", "high",
                               f"recording {source} changed since the SOP was built "
                               f"(sha256 {built[:12]} then, {now[:12]} now); rebuild it",
                               source, {"built_sha256": built, "current_sha256": now}))
    for what, key, path in (("sidecar", "sidecar_sha256", side_path), ("edits overlay", "edits_sha256", edits_path)):
        if key not in entry or path is None:  # older index without the field: cannot tell
            continue
        then = _str(entry.get(key))
        now = sha256_file(path) if path.is_file() else None
        if then == now:
            continue
        name = (PurePosixPath(source).parent / path.name).as_posix()
        change = "was added" if then is None else "was removed" if now is None else "changed"
        out.append(Finding(sop.rel, "stale", "medium",
                           f"{what} {name} {change} since the SOP was built; rebuild it",
                           source, {"file": name, "built_sha256": then, "current_sha256": now}))
    return out


def _overdue(rel: str, source: str, fields: Mapping, paths: Sequence[Path], ctx: _Context) -> Finding | None:
    interval = fields.get("review_every_days")
    interval = interval if isinstance(interval, int) and not isinstance(interval, bool) and interval > 0 \
        else ctx.max_age
    reviewed = fields.get("last_reviewed")
    since: date | None = None
    if isinstance(reviewed, Mapping) and isinstance(reviewed.get("date"), str):
        try:
            since, dated_from = date.fromisoformat(reviewed["date"]), "review"
        except ValueError:
            return Finding(rel, "invalid", "high",
                           f"sidecar of {source}: last_reviewed.date {reviewed['date']!r} is not a YYYY-MM-DD date",
                           source)
    if since is None:
        since, dated_from = last_change_date(paths)
    age = (ctx.today - since).days
    if age <= interval:
        return None
    due = date.fromordinal(since.toordinal() + interval)
    what = {"review": "last reviewed", "git": "last committed", "file time": "last modified"}[dated_from]
    by = f" by {reviewed['by']}" if dated_from == "review" and isinstance(reviewed.get("by"), str) else ""
    return Finding(rel, "overdue_review", "medium",
                   f"{what} {since.isoformat()}{by} ({age} days ago); review every {interval} days, "
                   f"due {due.isoformat()}; record a review with `sopline review`",
                   source, {"since": since.isoformat(), "dated_from": dated_from, "due": due.isoformat(),
                            "review_every_days": interval, "age_days": age})


def last_change_date(paths: Sequence[Path]) -> tuple[date, str]:
    """The UTC day of the last git commit touching any of ``paths`` (siblings),
    and ``"git"``; else the newest modification time and ``"file time"``."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    committed = _git_date(existing)
    if committed is not None:
        return committed, "git"
    newest = max(p.stat().st_mtime for p in existing)
    return datetime.fromtimestamp(newest, timezone.utc).date(), "file time"


def _git_date(paths: Sequence[Path]) -> date | None:
    if not paths:
        return None
    cwd = paths[0].parent
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
    # No shell; literal pathspecs so a file name like ':(glob)x' is just a name.
    cmd = ["git", "--literal-pathspecs", "-C", str(cwd), "log", "-1", "--format=%cI", "--",
           *[os.path.relpath(p, cwd) for p in paths]]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, env=env,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    for line in proc.stdout.splitlines():
        try:
            return datetime.fromisoformat(line.strip()).astimezone(timezone.utc).date()
        except ValueError:
            continue
    return None  # untracked: never committed


def _drift(rel: str, source: str, doc: Mapping, ctx: _Context) -> list[Finding]:
    out = []
    version = _get(doc, "generator", "version")
    if version is not None and version != ctx.version:
        out.append(Finding(rel, "generator_drift", "low",
                           f"built by sopline {version}; current is {ctx.version}; rebuild to update",
                           source, {"built": version, "current": ctx.version}))
    model = _get(doc, "generator", "model")
    if model is not None and model != ctx.model:
        out.append(Finding(rel, "model_drift", "low",
                           f"built with speech model {model}; current is {ctx.model}; rebuild to update",
                           source, {"built": model, "current": ctx.model}))
    return out


def _orphaned_edits(rel: str, source: str, orphaned: list) -> Finding:
    described = []
    for item in orphaned:
        if isinstance(item, Mapping):
            step = _str(item.get("step")) or "?"
            reason = _str(item.get("reason"))
            described.append(f"{step} ({reason})" if reason else step)
    shown = "; ".join(described[:5]) + (f"; and {len(described) - 5} more" if len(described) > 5 else "")
    n = len(orphaned)
    return Finding(rel, "orphaned_edits", "medium",
                   f"{n} human edit{'s' if n != 1 else ''} no longer match a step: {shown}; "
                   "update or remove them in the edits overlay", source,
                   {"steps": [d.split(" (", 1)[0] for d in described]})


# ---------------------------------------------------------------- output

def to_markdown(report: AuditReport) -> str:
    """The report as Markdown for an issue or a job summary; every cell is
    escaped so a recording name cannot break the table."""
    lines = [f"# SOP library audit, {report.as_of.isoformat()}", "", _summary(report)]
    if report.findings:
        lines += ["", "| SOP | finding | severity | detail |", "| --- | --- | --- | --- |"]
        for f in report.findings:
            lines.append(f"| {md_escape(f.sop)} | {md_escape(KINDS.get(f.kind, f.kind))} | "
                         f"{md_escape(f.severity)} | {md_escape(f.message)} |")
    return "\n".join(lines) + "\n"


def _summary(report: AuditReport) -> str:
    scope = (f"{report.sops} SOP{'s' if report.sops != 1 else ''} and {report.recordings} "
             f"recording{'s' if report.recordings != 1 else ''}")
    if not report.findings:
        return f"No findings in {scope}."
    counts = report.counts()["by_severity"]
    parts = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES) if counts[s])
    n = len(report.findings)
    return f"**{n} finding{'s' if n != 1 else ''}** ({parts}) in {scope}."


def to_json(report: AuditReport) -> str:
    """The report as JSON (schemas/audit.schema.json), stable key order."""
    doc = {"schema_version": 1, "as_of": report.as_of.isoformat(),
           "generator": {"name": "sopline", "version": __version__},
           "max_age_days": report.max_age_days,
           "findings": [f.to_dict() for f in report.findings],
           "counts": report.counts()}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- helpers

def _safe_rel(path: str) -> bool:
    p = PurePosixPath(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts and "\\" not in path \
        and "\x00" not in path and not PureWindowsPath(path).drive


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _get(doc: Any, *keys: str, kind: type = str) -> Any:
    """doc[k1][k2]... if every level is a dict and the leaf has type ``kind``
    (non-empty for str), else None: tolerant of hand-broken documents."""
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    if kind is str:
        return _str(doc)
    return doc if isinstance(doc, kind) else None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
