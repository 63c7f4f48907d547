"""The report sections of the built-in analyses (:data:`mimlens.analysis.registry.ANALYSES`): attention
(figures and per-layer tables of one model or several overlaid), CKA and the other similarity measures (within
one model, between pairs) and the diagnostics (figures and per-block tables).

Each takes the run, the report's assets and the analysis's documents (one per model; ``labels`` name them) and
returns the sections to show; the figures are the run's own ``figures/*.png``.
"""

from __future__ import annotations

from typing import Any

from mimlens.report import explanations as ex
from mimlens.report.blocks import Section, explain, facts, table
from mimlens.report.rundirs import Assets, Run, run_figure
from mimlens.report.summary import DIAGNOSTICS_COLUMNS, LAYER_COLUMNS, attention_layer_rows, diagnostics_rows

ATTENTION_FIGURES = (("attention_distance", "Attention distance (F1)"), ("attention_entropy", "Attention entropy (F3)"),
                     ("head_kl", "Head diversity (F3)"))


def attention_section(run: Run, assets: Assets, docs: list[dict[str, Any]], labels: list[str]) -> list[Section]:
    """The distance, entropy and head-KL figures, then one per-layer table per model."""
    sections = []
    for stem, title in ATTENTION_FIGURES:
        fig = run_figure(run, assets, stem)
        if fig:
            sections.append(Section(title, fig + explain(ex.READING[stem])))
    note = "Means over the heads of each layer; 'uniform' is uniform attention over the same keys."
    if len(docs) == 1:
        tables = table(LAYER_COLUMNS, attention_layer_rows(docs[0]), note)
    else:
        tables = "".join(table(LAYER_COLUMNS, attention_layer_rows(doc), f"{label}: {run.show(doc.get('model'))}")
                         for doc, label in zip(docs, labels, strict=True))
    sections.append(Section("Per-layer numbers", tables))
    return sections


def _off_diagonal(matrix: list[list[float | None]] | None) -> float | None:
    """The mean of the cells off the diagonal (null cells, NaN, left out)."""
    n = len(matrix or [])
    off = [matrix[i][j] for i in range(n) for j in range(n) if i != j and matrix[i][j] is not None]
    return sum(off) / len(off) if off else None


def _interval(values: list[float | None] | None) -> str | None:
    """'[low, high]', the percentile 95 % interval of replicates (null ones left out), or None without any."""
    values = [v for v in values or [] if v is not None]
    if not values:
        return None
    from mimlens.analysis.cka import percentile_interval

    low, high = percentile_interval(values)
    return f"[{float(low):.3f}, {float(high):.3f}]"


def cka_calibration_rows(doc: dict[str, Any]) -> list[list[Any]]:
    """Per block, its CKA with the last block, the 95 % interval, the null mean and the p-value (``cka.json``
    with an interval or a null; none without)."""
    matrix, interval = doc.get("matrix") or [], doc.get("interval")
    null, p = doc.get("null_mean"), doc.get("p_value")
    if len(matrix) < 2 or (interval is None and null is None):
        return []
    rows = []
    for i, layer in enumerate(doc["layers_a"][:-1]):
        low, high = (None, None) if interval is None else (interval["low"][i][-1], interval["high"][i][-1])
        rows.append([layer, matrix[i][-1], None if low is None else f"[{low:.3f}, {high:.3f}]",
                     None if null is None else null[i][-1], None if p is None else p[i][-1]])
    return rows


CALIBRATION_COLUMNS = ["block", "CKA with the last block", "95 % interval", "null mean", "p-value"]


def cka_section(run: Run, assets: Assets, docs: list[dict[str, Any]], labels: list[str]) -> list[Section]:
    """CKA between the layers of each model: the heat map, its mean off the diagonal with its 95 % interval over
    images and the permutation null's mean, and per block the CKA with the last block, calibrated likewise."""
    sections = []
    for doc, label in zip(docs, labels, strict=True):
        matrix = doc.get("matrix") or []
        stats = facts({
            "estimator": doc.get("estimator"), "sample unit": doc.get("unit"), "images": doc.get("num_images"),
            "mean CKA between different layers": _off_diagonal(matrix),
            "its 95 % interval over images": _interval(doc.get("off_diagonal_replicates")),
            "its mean under the null (permuted images)": _off_diagonal(doc.get("null_mean")),
            "CKA(first block, last block)": matrix[0][-1] if len(matrix) > 1 else None,
        })
        rows = cka_calibration_rows(doc)
        calibration = table(CALIBRATION_COLUMNS, rows, ex.CKA_CALIBRATION.format(
            bootstrap=doc.get("bootstrap"), permutations=doc.get("permutations"))) if rows else ""
        stem = "cka_within" if len(docs) == 1 else f"cka_within_{label}"
        title = "CKA between layers (F5)" if len(docs) == 1 else f"CKA between layers of {label} (F5)"
        sections.append(Section(title, run_figure(run, assets, stem) + stats + calibration
                                + explain(ex.READING["cka_within"])))
    return sections


def cka_pair_section(run: Run, assets: Assets, pairs: list[dict[str, Any]]) -> list[Section]:
    """CKA between models: each pair's heat map, mean diagonal and CKA between the last blocks."""
    rows = []
    for pair in pairs:
        matrix = pair.get("matrix") or [[]]
        diag = [matrix[i][i] for i in range(min(len(matrix), len(matrix[0]))) if matrix[i][i] is not None]
        rows.append([pair.get("model_a"), pair.get("model_b"), pair.get("unit"), pair.get("num_images"),
                     sum(diag) / len(diag) if diag else None, matrix[-1][-1] if matrix[0] else None])
    estimators = sorted({str(p.get("estimator")) for p in pairs})
    figures = "".join(run_figure(run, assets, p.stem) for p in sorted((run.path / "figures").glob("cka_across*.png")))
    body = figures + table(["model A", "model B", "unit", "images", "mean diagonal CKA", "CKA(last, last)"], rows,
                           "Estimator: " + "; ".join(estimators))
    return [Section("CKA between models (F5)", body + explain(ex.READING["cka_across"]))]


def diagnostics_section(run: Run, assets: Assets, docs: list[dict[str, Any]], labels: list[str]) -> list[Section]:
    """The NMI, high-frequency and high-norm figures, then one per-block table per model."""
    from mimlens.report.figures_diagnostics import FIGURES

    body = "".join(run_figure(run, assets, stem) for stem in FIGURES) + explain(ex.READING["diagnostics"])
    for doc, label in zip(docs, labels, strict=True):
        note = (f"{label}: {run.show(doc.get('model'))}; {doc.get('num_images')} images, prefix keys "
                f"{doc.get('prefix_policy')}, low band up to {doc.get('high_frequency_cutoff')}π; NMI is the mean over "
                "heads; norms of patch tokens; prefix norms: the mean norm of each prefix token.")
        body += table(DIAGNOSTICS_COLUMNS, diagnostics_rows(doc), note)
    return [Section("Attention and feature diagnostics", body)]


def _similarity_rows(doc: dict[str, Any], across: bool) -> list[list[Any]]:
    """Per measure: the mean off the diagonal and (first, last) within a model; the mean diagonal and (last,
    last) between two."""
    from mimlens.report.figures_similarity import LABELS

    rows = []
    for name, matrix in doc.get("measures", {}).items():
        n = len(matrix)
        if across:
            cells = [matrix[i][i] for i in range(min(n, len(matrix[0]) if n else 0)) if matrix[i][i] is not None]
            rows.append([LABELS.get(name, name), sum(cells) / len(cells) if cells else None,
                         matrix[-1][-1] if n else None])
        else:
            rows.append([LABELS.get(name, name), _off_diagonal(matrix), matrix[0][-1] if n > 1 else None])
    return rows


def similarity_calibration_rows(doc: dict[str, Any], across: bool) -> list[list[Any]]:
    """Per calibrated measure, at (first block, last block) within a model or (last, last) between two: the value,
    the 95 % interval, the null mean and the p-value (none without a calibration)."""
    from mimlens.report.figures_similarity import LABELS

    interval, null, p = doc.get("interval") or {}, doc.get("null_mean") or {}, doc.get("p_value") or {}
    rows = []
    for name, matrix in doc.get("measures", {}).items():
        if name not in interval and name not in p or not matrix or (len(matrix) < 2 and not across):
            continue
        i, j = (-1, -1) if across else (0, -1)
        low, high = (interval[name]["low"][i][j], interval[name]["high"][i][j]) if name in interval else (None, None)
        rows.append([LABELS.get(name, name), matrix[i][j],
                     None if low is None or high is None else f"[{low:.3f}, {high:.3f}]",
                     null[name][i][j] if name in null else None, p[name][i][j] if name in p else None])
    return rows


def _similarity_calibration(doc: dict[str, Any], across: bool) -> str:
    rows = similarity_calibration_rows(doc, across)
    caption = ex.SIMILARITY_CALIBRATION.format(cell="(last, last)" if across else "(first block, last block)",
                                               replicates=doc.get("replicates"), permutations=doc.get("permutations"))
    return table(["measure", "value", "95 % interval", "null mean", "p-value"], rows, caption) if rows else ""


def similarity_section(run: Run, assets: Assets, docs: list[dict[str, Any]], labels: list[str]) -> list[Section]:
    """The similarity measures between the blocks of each model: one heat map per measure and a summary table."""
    sections = []
    for doc, label in zip(docs, labels, strict=True):
        stem = "similarity_within" if len(docs) == 1 else f"similarity_within_{label}"
        stats = facts({"sample": doc.get("estimator"), "images": doc.get("num_images"),
                       "notes": "; ".join(doc.get("notes", []))})
        body = table(["measure", "mean between different blocks", "(first block, last block)"],
                     _similarity_rows(doc, across=False), "Procrustes is an angle in radians: 0 = the same.")
        title = "Similarity between blocks" if len(docs) == 1 else f"Similarity between blocks of {label}"
        sections.append(Section(title, run_figure(run, assets, stem) + stats + body
                                + _similarity_calibration(doc, across=False)))
    return sections


def similarity_pair_section(run: Run, assets: Assets, pairs: list[dict[str, Any]]) -> list[Section]:
    """The similarity measures between models: each pair's heat maps and, per measure, the mean diagonal."""
    figures = "".join(run_figure(run, assets, p.stem)
                      for p in sorted((run.path / "figures").glob("similarity_across*.png")))
    tables = "".join(table(["measure", "mean diagonal", "(last, last)"], _similarity_rows(pair, across=True),
                           f"{pair.get('model_a')} vs {pair.get('model_b')}: {pair.get('num_images')} images; "
                           f"{pair.get('estimator')}") + _similarity_calibration(pair, across=True)
                     for pair in pairs)
    return [Section("Similarity between models", figures + tables)]
