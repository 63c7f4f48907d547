"""Which block to transfer from: each model's per-block diagnostics beside its per-block frozen-probe scores, how
they correlate across blocks, and the block a probe would choose per task with the uncertainty of that choice.

Inputs, per model: the ``block_series`` of every analysis document it has (:mod:`mimlens.analysis.registry`;
entry i of a series is block i, the 0-based block index of ``probe.json``'s rows) and its ``probe.json``
(:mod:`mimlens.tasks.probes.layerwise`). A block's probe score is its row's primary metric on all items.

- Correlation: Spearman's ρ (Spearman 1904; ``scipy.stats.spearmanr``): the Pearson correlation of the ranks,
  ties given their average rank, over the probed blocks where both the diagnostic and the score have a value
  (``n`` of them); none below :data:`MIN_BLOCKS` blocks or when either side is constant. Pooled over models:
  each quantity is first ranked within its model and the ranks scaled to [0, 1] ((rank - 1) / (blocks - 1)),
  so only the order of a model's blocks counts, not its level; ρ is then taken over all models' blocks together
  (``n``: every block of every model with both values).
- Choice: the block with the best primary metric on the selection half of the items, then read on the judgement
  half (:data:`mimlens.tasks.uncertainty.SPLIT_RULE`, :mod:`mimlens.findings.judging`); a single block is no
  choice. Its uncertainty: the blocks within errors of it — each block's paired difference with the chosen one on
  the judgement half not worse by more than ``Z`` SEs (:func:`mimlens.tasks.uncertainty.compare`) — and how
  often each block is best over ``RESAMPLES`` bootstrap resamples of the selection half (the same draws for
  every block, :func:`mimlens.tasks.uncertainty.resampled_counts`; blocks tied for best share a draw), i.e. how
  stable the choice is to the items it was made on (Efron & Tibshirani 1993, ch. 6).
- A ``probe.json`` without per-item values (rows without ``values``): the block with the best point value, and
  the blocks whose unpaired difference with it, sqrt(SE_a² + SE_b²), is within ``Z`` SEs; no bootstrap.

``block_choice.json`` (:func:`block_choice`) holds every number the report's section shows; a model without a
probe or an analysis holds ``"not available: <why>"`` in their place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

from mimlens.errors import MimlensError

MIN_BLOCKS = 3  # fewest blocks a rank correlation is given for
NOT_AVAILABLE = "not available: "
POOLING = ("each quantity ranked within its model (average ranks for ties), the ranks scaled to [0, 1], then "
           "Spearman's rho over every model's blocks together")
CHOICE = ("the block with the best primary metric on the selection half of the items; blocks within errors: "
          "paired difference with the chosen block on the judgement half not worse by more than {z:g} SE; "
          "bootstrap: how often each block is best over {r} resamples of the selection half")
POINT_CHOICE = ("no per-item values: the block with the best point value; blocks within errors: unpaired "
                "difference with it within {z:g} x sqrt(SE_a^2 + SE_b^2); no bootstrap")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def spearman(x: Sequence[Any], y: Sequence[Any]) -> dict[str, Any]:
    """``{"rho", "n"}``: Spearman's ρ over the positions where both ``x`` and ``y`` have a finite value; ``rho`` is
    None (with ``why``) below :data:`MIN_BLOCKS` values or when either side is constant."""
    if len(x) != len(y):
        raise MimlensError(f"a rank correlation needs paired values: {len(x)} and {len(y)}")
    pairs = [(a, b) for a, b in ((_number(a), _number(b)) for a, b in zip(x, y, strict=True))
             if a is not None and b is not None]
    found: dict[str, Any] = {"rho": None, "n": len(pairs)}
    if len(pairs) < MIN_BLOCKS:
        return {**found, "why": f"fewer than {MIN_BLOCKS} blocks with both values"}
    xs, ys = np.array(pairs).T
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return {**found, "why": "one of the two is the same at every block"}
    return {**found, "rho": float(spearmanr(xs, ys).statistic)}


def scaled_ranks(values: Sequence[Any]) -> list[float | None]:
    """Within-model ranks of the finite ``values`` scaled to [0, 1] ((rank - 1) / (count - 1)); others None."""
    kept = [i for i, v in enumerate(values) if _number(v) is not None]
    out: list[float | None] = [None] * len(values)
    if kept:
        r = rankdata([float(values[i]) for i in kept])  # ties share their average rank
        for i, rank in zip(kept, r, strict=True):
            out[i] = (rank - 1) / max(len(kept) - 1, 1)
    return out


def block_series(analyses: Mapping[str, Mapping[str, Any]]) -> dict[str, list[float | None]]:
    """Every ``block_series`` of the analysis documents ``{analysis name: document}``, keyed ``"<analysis>:
    <quantity>"``; analyses without the hook give none."""
    from mimlens.analysis.registry import ANALYSES

    series = {}
    for name, doc in analyses.items():
        hook = ANALYSES[name].function("block_series") if name in ANALYSES else None
        for quantity, values in (hook(doc) if hook else {}).items():
            series[f"{name}: {quantity}"] = [_number(v) for v in values]
    return series


def _paired_items(task: Mapping[str, Any]) -> bool:
    return isinstance(task.get("items"), Mapping) and all("values" in row for row in task["rows"])


def resampled_scores(items: Mapping[str, Any], counts: np.ndarray) -> np.ndarray:
    """The metric of an ``items`` section (``statistic``, ``values``) on every resample given as (R, n) item
    multiplicities; a mean leaves out items without a value (NaN where a resample keeps none)."""
    from mimlens.tasks.uncertainty import statistic

    kind, values = items["statistic"], list(items["values"])
    if kind != "mean":
        return np.asarray(statistic(kind).resampled(values, counts), dtype=np.float64)
    present = np.array([v is not None for v in values])
    x = np.array([v if v is not None else 0.0 for v in values], dtype=np.float64)
    weights = counts * present
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ x) / weights.sum(axis=1)


def bootstrap_best(candidates: Sequence[Mapping[str, Any]], higher: bool, resamples: int, seed: int = 0) -> list[float]:
    """How often each of the ``items`` sections (same items) has the best metric over ``resamples`` draws with
    replacement of its items (the same draws for all; blocks tied for best share the draw, NaN counts as worst)."""
    from mimlens.tasks.uncertainty import resampled_counts

    counts = resampled_counts(len(candidates[0]["values"]), resamples, seed)
    scores = np.stack([resampled_scores(c, counts) for c in candidates])
    scores = np.where(np.isnan(scores), -np.inf, scores if higher else -scores)
    best = scores == scores.max(axis=0)
    return (best / best.sum(axis=0)).mean(axis=1).tolist()


def choose(task: Mapping[str, Any], resamples: int | None = None) -> dict[str, Any]:
    """The chosen block of one ``probe.json`` task and its uncertainty (module docstring): the probed ``blocks``
    with their ``scores`` (all items) and ``se``; ``chosen``; ``within_errors`` (blocks, the chosen one included);
    ``bootstrap`` (block -> fraction of resamples it is best in; None without per-item values); ``judgement``
    (block -> paired difference block - chosen with ``se``, ``n`` and ``reading``); ``best_all_items``
    (descriptive); ``items`` (counts) and the ``rule``."""
    from mimlens.findings.judging import compare, pick, reading
    from mimlens.tasks.uncertainty import RESAMPLES, Z, split_items

    resamples = RESAMPLES if resamples is None else resamples
    rows, primary, higher = list(task["rows"]), task["primary"], bool(task["higher_is_better"])
    if not rows:
        raise MimlensError(f"probe task with primary {primary!r} has no rows: expected one per probed block")
    sign = 1.0 if higher else -1.0
    found: dict[str, Any] = {
        "primary": primary, "higher_is_better": higher, "blocks": [r["block"] for r in rows],
        "scores": [_number(r[primary]) for r in rows], "se": [_number(r.get("se")) for r in rows],
        "best_all_items": max(rows, key=lambda r: (sign * r[primary], -r["block"]))["block"]}
    if not _paired_items(task):
        best = next(r for r in rows if r["block"] == found["best_all_items"])
        within = [r["block"] for r in rows
                  if reading({"diff": r[primary] - best[primary],
                              "se": math.hypot(r.get("se") or 0.0, best.get("se") or 0.0)}, higher) != "worse"]
        return {**found, "chosen": best["block"], "within_errors": within, "bootstrap": None, "judgement": None,
                "items": None, "rule": POINT_CHOICE.format(z=Z)}
    items = {str(r["block"]): {**task["items"], "values": r["values"]} for r in rows}
    chosen = pick(items, higher)
    several = len(rows) > 1
    judgement, within = {}, []
    for key, section in items.items():
        if key != chosen:
            difference = compare(section, items[chosen], several)
            judgement[key] = {**difference, "reading": reading(difference, higher)}
        if key == chosen or judgement[key]["reading"] != "worse":
            within.append(int(key))
    halves = [split_items(dict(s), "selection") for s in items.values()] if several else list(items.values())
    frequency = bootstrap_best(halves, higher, resamples) if several else [1.0]
    return {**found, "chosen": int(chosen), "within_errors": within,
            "bootstrap": dict(zip(items, frequency, strict=True)), "judgement": judgement,
            "items": {"all": len(task["items"]["ids"]), "selection": len(halves[0]["values"]) if several else None},
            "rule": CHOICE.format(z=Z, r=resamples)}


def model_entry(analyses: Mapping[str, Any], probe: Mapping[str, Any] | None, missing: Mapping[str, str],
                resamples: int | None = None) -> dict[str, Any]:
    """One model's part of ``block_choice.json``: ``diagnostics`` (quantity -> value per block), ``probe`` (task ->
    the :func:`choose` record), ``correlations`` (quantity -> task -> :func:`spearman`), each ``"not available:
    <why>"`` when the model lacks its documents (``missing``: ``{"analysis" or "probe": why}``)."""
    series = block_series(analyses) if analyses else {}
    diagnostics: Any = series or NOT_AVAILABLE + missing.get("analysis", "no analysis with per-block series")
    tasks: Any = ({t: choose(task, resamples) for t, task in probe["tasks"].items()} if probe
                  else NOT_AVAILABLE + missing.get("probe", "no frozen probes"))
    if isinstance(diagnostics, str) or isinstance(tasks, str):
        correlations: Any = diagnostics if isinstance(diagnostics, str) else tasks
    else:
        correlations = {q: {t: spearman(*aligned(values, record)) for t, record in tasks.items()}
                        for q, values in series.items()}
    return {"diagnostics": diagnostics, "probe": tasks, "correlations": correlations}


def aligned(series: Sequence[Any], record: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    """The diagnostic and the probe score at each probed block of a :func:`choose` record (None where the series
    has no such block)."""
    return ([series[b] if b < len(series) else None for b in record["blocks"]], list(record["scores"]))


def pooled(models: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Quantity -> task -> ``{"rho", "n", "models"}``: :data:`POOLING` over the :func:`model_entry` records that
    have both the quantity and the task."""
    have = {label: m for label, m in models.items()
            if isinstance(m["diagnostics"], dict) and isinstance(m["probe"], dict)}
    quantities = dict.fromkeys(q for m in have.values() for q in m["diagnostics"])
    tasks = dict.fromkeys(t for m in have.values() for t in m["probe"])
    out: dict[str, Any] = {}
    for q in quantities:
        out[q] = {}
        for t in tasks:
            xs, ys, used = [], [], []
            for label, m in have.items():
                if q in m["diagnostics"] and t in m["probe"]:
                    pairs = [(a, b) for a, b in zip(*aligned(m["diagnostics"][q], m["probe"][t]), strict=True)
                             if _number(a) is not None and _number(b) is not None]
                    xs += scaled_ranks([a for a, _ in pairs])
                    ys += scaled_ranks([b for _, b in pairs])
                    used.append(label)
            out[q][t] = {**spearman(xs, ys), "models": used}
    return out


def block_choice(models: Mapping[str, Mapping[str, Any]], resamples: int | None = None) -> dict[str, Any]:
    """``block_choice.json`` from ``{label: {"analyses": {name: doc}, "probe": doc or None, "missing": {...}}}``:
    ``models`` (label -> :func:`model_entry`), ``pooled`` (:func:`pooled`) and the conventions used."""
    from mimlens.tasks.uncertainty import RESAMPLES, SPLIT_RULE, Z

    entries = {label: model_entry(m.get("analyses") or {}, m.get("probe"), m.get("missing") or {}, resamples)
               for label, m in models.items()}
    return {"models": entries, "pooled": pooled(entries),
            "conventions": {"correlation": "Spearman's rho across the probed blocks with both values; none below "
                                           f"{MIN_BLOCKS} blocks", "pooled": POOLING, "split": SPLIT_RULE, "z": Z,
                            "resamples": RESAMPLES if resamples is None else resamples}}


def read_models(out: Path, models: Sequence[str], labels: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The inputs of :func:`block_choice` from a study folder (:mod:`mimlens.findings.folder` layout:
    ``analysis/<model>/<analysis>.json`` of every analysis with a ``block_series``, ``probe/<model>/probe.json``),
    keyed by ``labels[model]`` (else the folder name); what a model lacks is named in its ``missing``."""
    from mimlens.analysis.registry import ANALYSES
    from mimlens.io import read_json

    found, names = {}, [a for a in ANALYSES.values() if a.block_series is not None]
    for model in models:
        analyses = {a.name: read_json(out / "analysis" / model / a.json_name) for a in names
                    if (out / "analysis" / model / a.json_name).is_file()}
        probe_path = out / "probe" / model / "probe.json"
        wanted = " or ".join(f"analysis/{model}/{a.json_name}" for a in names)
        found[labels.get(model, model)] = {
            "analyses": analyses, "probe": read_json(probe_path) if probe_path.is_file() else None,
            "missing": {"analysis": f"no {wanted}", "probe": f"no probe/{model}/probe.json"}}
    return found


def write_block_choice(out: Path, models: Sequence[str], labels: Mapping[str, str],
                       colours: Mapping[str, str]) -> Path:
    """``OUT/block_choice.json`` and ``OUT/figures/block_choice.png`` of ``models`` (folder names; ``labels`` and
    ``colours`` by folder name); returns the JSON's path."""
    from mimlens.io import finite, save_json
    from mimlens.report.figures_block_choice import block_choice_figure

    doc = finite(block_choice(read_models(out, models, labels)))
    block_choice_figure(doc, out / "figures" / "block_choice.png", {labels.get(m, m): colours[m] for m in models})
    return save_json(doc, out / "block_choice.json")
