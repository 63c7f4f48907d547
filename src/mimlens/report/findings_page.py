"""The sections a findings directory (a demo) opens its report with: the findings table with the figures behind
each verdict, the training bars, which block to transfer from (``block_choice.json``), the figures spanning
several runs and what the demo ran.

``findings.json`` is a list of findings rows or ``{"preset", "claims_findings", "bars", "findings", "notice",
"about"}``; a row's optional ``figures`` (paths inside the directory) are shown as thumbnails next to its
numbers. The stage table comes from ``stages/<stage>.json`` (``seconds``, ``expected_minutes``, ``started_at``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mimlens.io import read_json
from mimlens.report import explanations as ex
from mimlens.report.block_choice import block_choice_section
from mimlens.report.blocks import (
    Section,
    duration,
    esc,
    explain,
    facts,
    findings_table,
    notice,
    table,
    thumbnail,
)
from mimlens.report.rundirs import Assets, Run, files_section, run_figure

BARS = {  # bars.json: model -> (label, [(quantity, key)])
    "simmim": ("SimMIM", [("masked L1 of SimMIM", "masked_l1"), ("nearest-visible-pixel fill L1", "nearest_fill_l1"),
                          ("mean-colour fill L1", "mean_fill_l1")]),
    "supervised": ("supervised", [("top-1", "top1"), ("chance", "chance"), ("required top-1", "required")]),
}


def _document(run: Run) -> dict[str, Any]:
    doc = read_json(run.path / "findings.json")
    return {"findings": doc} if isinstance(doc, list) else doc


def demo_title(run: Run) -> str | None:
    """The page title of a demo directory, or None when ``findings.json`` names no preset."""
    preset = _document(run).get("preset")
    return f"mimlens demo ({preset} preset)" if preset else None


def findings_sections(run: Run, assets: Assets) -> list[Section]:
    """Findings, training bars, the figures spanning several runs and "About this demo", as far as the
    directory holds them."""
    doc = _document(run)
    rows = doc.get("findings", [])
    thumbs = {row["id"]: _thumbnails(run, assets, row) for row in rows if isinstance(row, Mapping)}
    lead = notice(doc["notice"]) if doc.get("notice") else ""
    version = doc.get("rules_version", 1) if rows else None
    lead += f'<p class="reason">Findings rules version {esc(version)} (docs/findings.md).</p>' if version else ""
    title = f"Findings: {run.title}" if run.named else "Findings"
    sections = [Section(title, lead + findings_table(rows, {k: v for k, v in thumbs.items() if v})
                        + explain(ex.READING["findings"]))]
    if doc.get("bars"):
        sections.append(Section("Training bars", _bars(doc["bars"]) + run_figure(run, assets, "training_bars")
                                + explain(ex.READING["bars"])))
    choice = block_choice_section(run, assets)
    sections += [choice] if choice else []
    shown = "".join(run_figure(run, assets, p.stem) for p in sorted((run.path / "figures").glob("*.png"))
                    if p.stem not in ("training_bars", "block_choice"))
    if shown:
        sections.append(Section("Figures across runs", shown))
    about = Section("About this study" if doc.get("study") else "About this demo", facts(doc.get("about") or {}))
    about.children = [s for s in (_stages(run), files_section(run, assets)) if s is not None]
    for child in about.children:
        child.folded = True
    return sections + [about]


def _thumbnails(run: Run, assets: Assets, row: Mapping[str, Any]) -> str:
    rels = [r for r in row.get("figures") or [] if (run.path / r).is_file()]
    return "".join(thumbnail(run.path / r, assets.place(run, r), f"{row['id']}: {r}") for r in rels)


def _bars(bars: Mapping[str, Any]) -> str:
    """One small table per training bar: its numbers, the rule and whether it passed."""
    parts = []
    for model, (label, quantities) in BARS.items():
        bar = bars.get(model)
        if not isinstance(bar, Mapping):
            continue
        rows = [[name, bar.get(key)] for name, key in quantities] + [["validation images", bar.get("num_images")]]
        result = "passed" if bar.get("passed") else "not passed"
        parts.append(f'<div>{table(["quantity", "value"], rows, f"{label}: {result}")}'
                     f'<p class="rule">rule: {esc(bar.get("rule", ""))}</p></div>')
    return f'<div class="bars">{"".join(parts)}</div>'


def _stages(run: Run) -> Section | None:
    """Each stage's budget and time, in the order the stages started; None without stage records."""
    records = []
    for path in sorted((run.path / "stages").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("finished"):
            records.append((record.get("started_at") or 0.0, path.stem, record))
    if not records:
        return None
    records.sort()
    rows = [[name, duration(_seconds(r.get("expected_minutes"))), duration(r.get("seconds"))]
            for _, name, r in records]
    first = min(r.get("started_at") or 0.0 for _, _, r in records)
    last = max(r.get("finished_at") or 0.0 for _, _, r in records)
    caption = "Budget from the preset; a stage reused from an earlier run shows the time it first took."
    wall = facts({"stages": len(records), "first start to last finish": duration(last - first) if first else ""})
    return Section("Stages", wall + table(["stage", "budget", "took"], rows, caption, right=("budget", "took")))


def _seconds(minutes: Any) -> float | None:
    return 60.0 * minutes if isinstance(minutes, (int, float)) else None
