"""The report's "Which block to transfer from" section, read from a demo's or study's ``block_choice.json``
(:mod:`mimlens.findings.block_choice`): the figure, the chosen block per model and task with its uncertainty,
the rank correlations of each diagnostic with each task's probe score, and per model its numbers by block."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mimlens.io import read_json
from mimlens.report import explanations as ex
from mimlens.report.blocks import Section, explain, facts, fmt, notice, table
from mimlens.report.rundirs import Assets, Run, run_figure

FILE = "block_choice.json"
TITLE = "Which block to transfer from"


def block_choice_section(run: Run, assets: Assets) -> Section | None:
    """The section, or None when the directory has no ``block_choice.json``."""
    if not (run.path / FILE).is_file():
        return None
    doc = read_json(run.path / FILE)
    models, conventions = doc["models"], doc.get("conventions") or {}
    section = Section(TITLE, run_figure(run, assets, "block_choice") + explain(ex.READING["block_choice"]))
    section.body += facts({"correlation": conventions.get("correlation"), "pooled over models":
                           conventions.get("pooled"), "selection and judgement halves": conventions.get("split"),
                           "within errors at": f"{fmt(conventions.get('z'))} SE", "bootstrap resamples":
                           conventions.get("resamples")})
    section.children = [Section("Chosen block per task", _choices(models)),
                        Section("Rank correlation across blocks", _correlations(models, doc.get("pooled") or {}))]
    for label, model in models.items():
        child = Section(f"{label}: by block", _by_block(model))
        child.folded = True
        section.children.append(child)
    return section


def _choices(models: Mapping[str, Any]) -> str:
    rows, lacking, rules = [], [], {}
    for label, model in models.items():
        if isinstance(model["probe"], str):
            lacking.append(notice(f"{label}: {model['probe']}"))
            continue
        for task, r in model["probe"].items():
            at = r["blocks"].index(r["chosen"])
            share = (r.get("bootstrap") or {}).get(str(r["chosen"]))
            items = r.get("items") or {}
            rows.append([label, task, r["primary"], r["chosen"], r["scores"][at], r["se"][at], share,
                         ", ".join(str(b) for b in r["within_errors"]), r["best_all_items"], items.get("selection"),
                         items.get("all")])
            rules[r["rule"]] = None
    headers = ["model", "task", "metric", "chosen block", "score", "SE", "best in (share of resamples)",
               "blocks within errors", "best on all items", "selection items", "items"]
    caption = "score and SE on all items; " + "; ".join(rules)
    return (table(headers, rows, caption) if rows else "") + "".join(lacking)


def _rho(found: Mapping[str, Any] | None) -> str:
    if not found:
        return ""
    return f"{fmt(found['rho'], 2)} (n={found['n']})" if found["rho"] is not None else f"– (n={found['n']})"


def _correlations(models: Mapping[str, Any], pooled: Mapping[str, Any]) -> str:
    usable = {label: m["correlations"] for label, m in models.items() if isinstance(m["correlations"], dict)}
    rows = [[quantity, task, *(_rho((usable[m].get(quantity) or {}).get(task)) for m in usable), _rho(found),
             ", ".join(found["models"])]
            for quantity, by_task in pooled.items() for task, found in by_task.items()]
    lacking = "".join(notice(f"{label}: {m['correlations']}") for label, m in models.items() if label not in usable)
    caption = ("Spearman's rho between the diagnostic and the task's probe score across blocks (n blocks with both "
               "values; – where fewer than 3 or one side is constant); the score's own direction (a lower-is-better "
               "metric gives negative rho where the diagnostic rises as the probe improves)")
    headers = ["diagnostic", "task", *(f"rho {m}" for m in usable), "rho pooled", "pooled models"]
    return (table(headers, rows, caption) if rows else "") + lacking


def _by_block(model: Mapping[str, Any]) -> str:
    diagnostics = model["diagnostics"] if isinstance(model["diagnostics"], dict) else {}
    probes = model["probe"] if isinstance(model["probe"], dict) else {}
    blocks = sorted({b for r in probes.values() for b in r["blocks"]} | set(range(max(
        (len(v) for v in diagnostics.values()), default=0))))
    scores = {t: dict(zip(r["blocks"], r["scores"], strict=True)) for t, r in probes.items()}
    rows = [[b, *(v[b] if b < len(v) else None for v in diagnostics.values()), *(s.get(b) for s in scores.values())]
            for b in blocks]
    headers = ["block", *diagnostics, *(f"{t} {r['primary']}" for t, r in probes.items())]
    lacking = "".join(notice(v) for v in (model["diagnostics"], model["probe"]) if isinstance(v, str))
    return table(headers, rows) + lacking
