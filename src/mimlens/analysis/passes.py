"""The built-in analyses of :mod:`mimlens.analysis.registry`: attention statistics, CKA between layers, the
diagnostics per block and the other similarity measures between layers.

Attention: :func:`mimlens.analysis.attention.attention_stats` over this process's share of the images (sums
all-reduced), written as ``attention.json`` with the model's record (``meta``: model, architecture, weights,
loading, data, skipped files, seed or step) and ``attention.csv``. CKA:
:func:`mimlens.analysis.cka.cka_matrix` within one model or between two, on the same raw images in the same
order (it splits the batches over processes itself), with the unit, prefix policy, batch and calibration
(``cka_bootstrap``, ``cka_permutations``) of the ``analysis`` section. Diagnostics:
:func:`mimlens.analysis.diagnostics.diagnostics` over this process's share of the images, written as
``diagnostics.json`` with the model's record. Similarity: :func:`mimlens.analysis.similarity_pass.similarity_matrix`
within one model or between two, with the settings of ``analysis.similarity`` (measures, pooled token, k, image
cap, replicates and permutations of the calibration); its per-block series are each block's value with the last
block (the matrix's last column).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mimlens.analysis.registry import MeasureContext


def attention_measure(ctx: MeasureContext):
    """:class:`AttentionStats` of ``ctx.model`` (this process's share of the images; the sums are all-reduced)."""
    from mimlens.analysis.attention import attention_stats

    return attention_stats(ctx.model, ctx.shard(), prefix_policy=ctx.settings["prefix_policy"], device=ctx.device,
                           progress=ctx.progress)


def attention_document(stats, meta: dict[str, Any]) -> dict[str, Any]:
    """``attention.json``: the statistics' own JSON with the model's record ``meta`` (its ``model`` first)."""
    doc = stats.to_json(meta.get("model"))
    doc.update({key: value for key, value in meta.items() if key != "model"})
    return doc


def attention_figures(docs: list[dict[str, Any]], labels: list[str], fig_dir: Path, title: str) -> None:
    from mimlens.report.figures_attention import save_attention_figures

    save_attention_figures(docs, fig_dir, labels=labels, title=title)


def attention_tables(doc: dict[str, Any], out: Path) -> None:
    """``attention.csv``: one row per layer, head and metric."""
    from mimlens.analysis.attention import AttentionStats

    AttentionStats.from_json(doc).save_csv(out)


def attention_summary(doc: dict[str, Any]) -> str:
    """The per-layer table next to the uniform-attention reference."""
    from mimlens.report.summary import LAYER_COLUMNS, attention_layer_rows, text_table

    return text_table(LAYER_COLUMNS, attention_layer_rows(doc))


def attention_block_series(doc: dict[str, Any]) -> dict[str, list[float | None]]:
    """Per block (``layers`` in forward order): the mean over heads of the attention distance (px) and of the
    entropy (nats), and the layer's mean KL between heads (nats; None for a one-head layer), as in
    docs/attention.md."""
    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    layers = doc["layers"]
    return {"attention distance (px)": [mean(layer["distance_px"]) for layer in layers],
            "attention entropy (nats)": [mean(layer["entropy"]) for layer in layers],
            "KL between heads (nats)": [layer["head_kl_mean"] for layer in layers]}


def _cka(ctx: MeasureContext, model_b=None):
    from mimlens.analysis.cka import cka_matrix

    settings = ctx.settings
    return cka_matrix(ctx.model, ctx.batches(), model_b, unit=settings["cka_unit"],
                      batch_size=max(4, settings["batch_size"]), prefix_policy=settings["prefix_policy"],
                      device=ctx.device, progress=ctx.progress, bootstrap=settings["cka_bootstrap"],
                      permutations=settings["cka_permutations"])


def cka_measure(ctx: MeasureContext):
    """:class:`CKAResult` between the layers of ``ctx.model``, its axes named by ``ctx.label``."""
    result = _cka(ctx)
    result.model_a = ctx.label  # the axes name the model as the user did, not its timm class
    return result


def cka_between(ctx: MeasureContext, model_b, label_b: str):
    """:class:`CKAResult` between the layers of ``ctx.model`` (rows) and ``model_b`` (columns)."""
    result = _cka(ctx, model_b)
    result.model_a, result.model_b = ctx.label, label_b
    return result


def cka_figures(docs: list[dict[str, Any]], labels: list[str], fig_dir: Path, title: str) -> None:
    from mimlens.analysis.cka import CKAResult
    from mimlens.report.figures_cka import plot_cka

    for doc, label in zip(docs, labels, strict=True):
        name = "cka_within" if len(docs) == 1 else f"cka_within_{label}"
        plot_cka(CKAResult.from_json(doc), fig_dir / f"{name}.png", title=f"CKA between layers of {title}")


def cka_pair_figures(docs: list[dict[str, Any]], fig_dir: Path) -> None:
    from mimlens.analysis.cka import CKAResult
    from mimlens.report.figures_cka import plot_cka

    for doc in docs:
        result = CKAResult.from_json(doc)
        name = "cka_across" if len(docs) == 1 else f"cka_across_{result.model_a}_vs_{result.model_b}"
        plot_cka(result, fig_dir / f"{name}.png")


def cka_summary(doc: dict[str, Any]) -> str:
    """Mean CKA on the diagonal and between the last blocks (between models), or between different layers with
    its 95 % interval over images when the document has replicates."""
    import math

    matrix = [[math.nan if v is None else v for v in row] for row in doc["matrix"]]
    label = f"{doc.get('model_a')} vs {doc['model_b']}" if doc.get("model_b") else f"{doc.get('model_a')} (within)"
    if doc.get("model_b"):
        diagonal = [matrix[i][i] for i in range(min(len(matrix), len(matrix[0])))]
        diagonal = [v for v in diagonal if not math.isnan(v)]
        mean = sum(diagonal) / len(diagonal) if diagonal else math.nan
        return f"  {label}: mean diagonal {mean:.3f}, last blocks {matrix[-1][-1]:.3f}"
    off = [v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j and not math.isnan(v)]
    text = f"  {label}: mean CKA between different layers {sum(off) / len(off) if off else math.nan:.3f}"
    replicates = [v for v in doc.get("off_diagonal_replicates") or [] if v is not None]
    if replicates:
        from mimlens.analysis.cka import LEVEL, percentile_interval

        low, high = percentile_interval(replicates)
        text += f" ({LEVEL:.0%} interval over images {float(low):.3f} to {float(high):.3f})"
    return text


def diagnostics_measure(ctx: MeasureContext):
    """:class:`Diagnostics` of ``ctx.model`` (this process's share of the images; the sums are all-reduced)."""
    from mimlens.analysis.diagnostics import diagnostics

    return diagnostics(ctx.model, ctx.shard(), prefix_policy=ctx.settings["prefix_policy"],
                       batch_size=ctx.settings["batch_size"], device=ctx.device, progress=ctx.progress)


def diagnostics_document(result, meta: dict[str, Any]) -> dict[str, Any]:
    """``diagnostics.json``: the result's own JSON with the model's record ``meta`` (its ``model`` first)."""
    return {**result.to_json(meta.get("model")), **{key: value for key, value in meta.items() if key != "model"}}


def diagnostics_figures(docs: list[dict[str, Any]], labels: list[str], fig_dir: Path, title: str) -> None:
    from mimlens.report.figures_diagnostics import save_diagnostics_figures

    save_diagnostics_figures(docs, fig_dir, labels, title=title)


def diagnostics_summary(doc: dict[str, Any]) -> str:
    """One row per block: NMI against uniform attention, high-frequency share, high-norm tokens and norms."""
    from mimlens.report.summary import DIAGNOSTICS_COLUMNS, diagnostics_rows, text_table

    return text_table(DIAGNOSTICS_COLUMNS, diagnostics_rows(doc))


def diagnostics_block_series(doc: dict[str, Any]) -> dict[str, list[float | None]]:
    """Per block: mean NMI over heads, high-frequency share, high-norm tokens per image (None for null)."""
    keys = {"nmi": "nmi_mean", "high_frequency_share": "high_frequency_share",
            "high_norm_tokens": "high_norm_per_image"}
    return {quantity: [None if b[key] is None else float(b[key]) for b in doc["blocks"]]
            for quantity, key in keys.items()}


def cka_block_series(doc: dict[str, Any]) -> dict[str, list[float | None]]:
    """Per block of a within-model ``cka.json``: its CKA with the last block (the last column of the matrix;
    None where the cell is null). A document between two models is no one model's: an error."""
    from mimlens.errors import MimlensError

    if doc.get("model_b"):
        raise MimlensError(f"cka.json between {doc.get('model_a')} and {doc['model_b']}: expected a within-model "
                           "document for per-block series")
    return {"CKA with the last block": [row[-1] for row in doc["matrix"]]}


def _similarity(ctx: MeasureContext, model_b=None):
    from mimlens.analysis.choices import check_similarity
    from mimlens.analysis.similarity_pass import similarity_matrix

    options = ctx.settings["similarity"]
    check_similarity(options, "analysis.similarity", images=len(ctx.dataset))  # before any forward pass
    return similarity_matrix(ctx.model, ctx.batches(), model_b, measures=options["measures"],
                             pooled=options["pooled"], prefix_policy=ctx.settings["prefix_policy"], k=options["k"],
                             max_images=options["max_images"], replicates=options["replicates"],
                             permutations=options["permutations"], batch_size=ctx.settings["batch_size"],
                             device=ctx.device, progress=ctx.progress)


def similarity_measure(ctx: MeasureContext):
    """:class:`SimilarityResult` between the blocks of ``ctx.model``, its axes named by ``ctx.label``."""
    result = _similarity(ctx)
    result.model_a = ctx.label
    return result


def similarity_between(ctx: MeasureContext, model_b, label_b: str):
    """:class:`SimilarityResult` between the blocks of ``ctx.model`` (rows) and ``model_b`` (columns)."""
    result = _similarity(ctx, model_b)
    result.model_a, result.model_b = ctx.label, label_b
    return result


def similarity_figures(docs: list[dict[str, Any]], labels: list[str], fig_dir: Path, title: str) -> None:
    from mimlens.report.figures_similarity import plot_similarity

    for doc, label in zip(docs, labels, strict=True):
        name = "similarity_within" if len(docs) == 1 else f"similarity_within_{label}"
        plot_similarity(doc, fig_dir / f"{name}.png", title=f"Similarity between blocks of {title}")


def similarity_pair_figures(docs: list[dict[str, Any]], fig_dir: Path) -> None:
    from mimlens.report.figures_similarity import plot_similarity

    for doc in docs:
        name = "similarity_across" if len(docs) == 1 else f"similarity_across_{doc['model_a']}_vs_{doc['model_b']}"
        plot_similarity(doc, fig_dir / f"{name}.png")


def similarity_block_series(doc: dict[str, Any]) -> dict[str, list[float | None]]:
    """Each measure between every block and the last block (the matrix's last column; the last value is the
    measure's identity value): how close each block already is to the representation the model ends with."""
    return {f"{name} with the last block": [row[-1] for row in matrix] for name, matrix in doc["measures"].items()}


def similarity_summary(doc: dict[str, Any]) -> str:
    """Per measure: the mean between different blocks (within), or on the diagonal and between the last blocks."""
    import math

    label = f"{doc.get('model_a')} vs {doc['model_b']}" if doc.get("model_b") else f"{doc.get('model_a')} (within)"
    lines = [f"  {label}, {doc['num_images']} images:"]
    for name, rows in doc["measures"].items():
        matrix = [[math.nan if v is None else v for v in row] for row in rows]
        if doc.get("model_b"):
            diagonal = [matrix[i][i] for i in range(min(len(matrix), len(matrix[0]))) if not math.isnan(matrix[i][i])]
            mean = sum(diagonal) / len(diagonal) if diagonal else math.nan
            lines.append(f"    {name}: mean diagonal {mean:.3f}, last blocks {matrix[-1][-1]:.3f}")
        else:
            off = [v for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j and not math.isnan(v)]
            lines.append(f"    {name}: mean between different blocks {sum(off) / len(off) if off else math.nan:.3f}")
    return "\n".join(lines)
