"""Paper-style attention figures (Xie et al. 2023, Figs. 1, 2b, 3, 4) from ``AttentionStats``.

Each figure has layers on the x axis: small dots are heads (for head KL, ordered head pairs), the large
dots joined by a line are layer means, and a dashed line of the same colour is uniform attention over
the same keys — what an untrained layer gives, so a "global" layer is only global if it sits well below
it in entropy and near it in distance. The y axis of distance and entropy always spans at least
``UNIFORM_MARGIN`` (10 %) of the uniform value on each side of the uniform line, so heads that all sit
within a hair of uniform attention draw as the flat line they are, not as structure on a ±0.03 px axis.
Swin blocks are grouped by stage (ticks ``stage.block``, a gap and a rule between stages). Several models
are overlaid with a legend, or drawn side by side.

Every function takes one model or a sequence of them, each an ``AttentionStats``, an ``attention.json``
document (dict) or the path of one, and returns the path of the PNG it wrote (atomically).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mimlens.analysis.attention import AttentionStats
from mimlens.errors import MimlensError
from mimlens.report.style import save_png

__all__ = [
    "plot_attention_distance",
    "plot_attention_entropy",
    "plot_head_kl",
    "run_colour",
    "save_attention_figures",
]

StatsLike = AttentionStats | dict | str | os.PathLike
_STAGE_GAP = 0.8
UNIFORM_MARGIN = 0.1  # distance and entropy axes include [(1 - m) u_min, (1 + m) u_max], u: the uniform values


def run_colour(index: int) -> str:
    """The colour of the ``index``-th run of a comparison figure (matplotlib's default cycle)."""
    return f"C{index % 10}"


def _as_stats(item: StatsLike) -> AttentionStats:
    if isinstance(item, AttentionStats):
        return item
    if isinstance(item, dict):
        return AttentionStats.from_json(item)
    path = Path(item)
    try:
        return AttentionStats.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise MimlensError(f"cannot read attention statistics from {path}: {error}") from None


def _as_list(stats: StatsLike | Sequence[StatsLike]) -> list[AttentionStats]:
    if isinstance(stats, (AttentionStats, dict, str, os.PathLike)):
        stats = [stats]
    items = [_as_stats(s) for s in stats]
    if not items:
        raise MimlensError("no attention statistics to plot")
    return items


def _labels(items: list[AttentionStats], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return [s.model or f"model {i + 1}" for i, s in enumerate(items)]
    if len(labels) != len(items):
        raise MimlensError(f"{len(labels)} labels for {len(items)} models: give one label per model")
    return list(labels)


def _positions(stats: AttentionStats) -> tuple[list[float], list[str], list[float]]:
    """x position and tick label of every layer, and the x of each rule between stages."""
    xs, ticks, rules = [], [], []
    x, block, stages = 0.0, 0, len({info.stage for info in stats.layers})
    for i, info in enumerate(stats.layers):
        if i and info.stage != stats.layers[i - 1].stage:
            rules.append(x + (_STAGE_GAP - 1) / 2)
            x += _STAGE_GAP
            block = 0
        xs.append(x)
        ticks.append(f"{info.stage}.{block}" if stages > 1 else str(i))
        x += 1
        block += 1
    return xs, ticks, rules


def _layer_axis(ax, stats: AttentionStats) -> None:
    xs, ticks, rules = _positions(stats)
    for rule in rules:
        ax.axvline(rule, color="0.75", linewidth=0.8)
    ax.set_xticks(xs)
    ax.set_xticklabels(ticks, fontsize=7, rotation=90 if len(xs) > 24 else 0)
    ax.set_xlabel("stage.block" if rules else "block")


def _series(stats: AttentionStats, metric: str) -> tuple[list[torch.Tensor], list[float], list[float] | None]:
    """Per-layer dot values, layer means and the uniform reference of one metric."""
    if metric == "head_kl":
        dots = [kl[~torch.eye(kl.shape[0], dtype=torch.bool)] for kl in stats.head_kl]
        return dots, list(stats.head_kl_mean), [0.0] * len(stats.layers)
    dots = getattr(stats, metric)
    means = [float(torch.nanmean(d)) if d.numel() else math.nan for d in dots]
    return dots, means, [u[metric] for u in stats.uniform]


_YLABELS = {
    "distance_px": "averaged attention distance (px)",
    "distance_frac": "averaged attention distance (fraction of image side)",
    "entropy": "attention entropy (nats)",
    "entropy_norm": "attention entropy / ln(keys)",
    "head_kl": "KL divergence between heads (nats)",
}


def _plot(
    items: list[AttentionStats],
    labels: list[str],
    metric: str,
    path: str | os.PathLike,
    uniform: bool,
    layout: str,
    title: str | None,
) -> Path:
    from matplotlib.figure import Figure

    if layout not in ("overlay", "side"):
        raise MimlensError(f"layout {layout!r} is not one of overlay, side")
    panels = len(items) if layout == "side" else 1
    depth = max(len(s.layers) for s in items)
    width = max(5.0, 0.42 * depth + 2.5)
    figure = Figure(figsize=(width * panels, 4.0))
    axes = figure.subplots(1, panels, sharey=True, squeeze=False)[0]
    shift = 0.5 / max(1, len(items)) if layout == "overlay" else 0.0
    references: list[float] = []
    for m, (stats, label) in enumerate(zip(items, labels, strict=True)):
        ax = axes[m if layout == "side" else 0]
        colour = run_colour(m)
        xs = _positions(stats)[0]
        offset = (m - (len(items) - 1) / 2) * shift
        dots, means, reference = _series(stats, metric)
        references += reference
        dot_x = [x + offset for x, d in zip(xs, dots, strict=True) for _ in range(d.numel())]
        dot_y = [v for d in dots for v in d.tolist()]
        ax.scatter(dot_x, dot_y, s=7 if metric == "head_kl" else 12, color=colour, alpha=0.5, linewidths=0)
        ax.plot([x + offset for x in xs], means, color=colour, marker="o", markersize=6, linewidth=1.2, label=label)
        if uniform:
            ax.plot(xs, reference, color=colour, linestyle="--", linewidth=1.0, alpha=0.8,
                    label=f"{label}: uniform attention")  # fmt: skip
        if layout == "side":
            _layer_axis(ax, stats)
            ax.set_title(label, fontsize=9)
    if layout == "overlay":
        _layer_axis(axes[0], max(items, key=lambda s: len(s.layers)))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
        if metric != "head_kl":
            _around_uniform(ax, references)
    axes[0].set_ylabel(_YLABELS[metric])
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_png(figure, path)


def _around_uniform(ax, references: list[float]) -> None:
    """Widen the y limits to include ``UNIFORM_MARGIN`` of the uniform value either side of the uniform line."""
    finite = [r for r in references if math.isfinite(r)]
    if not finite:
        return
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, (1 - UNIFORM_MARGIN) * min(finite)), max(high, (1 + UNIFORM_MARGIN) * max(finite)))


def plot_attention_distance(
    stats: StatsLike | Sequence[StatsLike],
    path: str | os.PathLike,
    labels: Sequence[str] | None = None,
    unit: str = "px",
    uniform: bool = True,
    layout: str = "overlay",
    title: str | None = None,
) -> Path:
    """Averaged attention distance per head vs layer (paper Figs. 1 and 2b).

    ``unit``: ``px`` (input pixels at the analysed resolution) or ``frac`` (fraction of the image side),
    the one to use when models were analysed at different resolutions.
    """
    if unit not in ("px", "frac"):
        raise MimlensError(f"unit {unit!r} is not one of px, frac")
    items = _as_list(stats)
    return _plot(items, _labels(items, labels), f"distance_{unit}", path, uniform, layout, title)


def plot_attention_entropy(
    stats: StatsLike | Sequence[StatsLike],
    path: str | os.PathLike,
    labels: Sequence[str] | None = None,
    normalised: bool = False,
    uniform: bool = True,
    layout: str = "overlay",
    title: str | None = None,
) -> Path:
    """Attention entropy per head vs layer (paper Fig. 3); ``normalised`` divides by ln(number of keys)."""
    items = _as_list(stats)
    metric = "entropy_norm" if normalised else "entropy"
    return _plot(items, _labels(items, labels), metric, path, uniform, layout, title)


def plot_head_kl(
    stats: StatsLike | Sequence[StatsLike],
    path: str | os.PathLike,
    labels: Sequence[str] | None = None,
    uniform: bool = True,
    layout: str = "overlay",
    title: str | None = None,
) -> Path:
    """KL divergence between heads: small dots per ordered pair, large dots the layer mean (paper Fig. 4)."""
    items = _as_list(stats)
    return _plot(items, _labels(items, labels), "head_kl", path, uniform, layout, title)


def save_attention_figures(
    stats: StatsLike | Sequence[StatsLike],
    out_dir: str | os.PathLike,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    layout: str = "overlay",
) -> dict[str, Path]:
    """``attention_distance.png``, ``attention_entropy.png`` and ``head_kl.png`` in ``out_dir``.

    Distances are in pixels, unless the models were analysed at different image sizes (then a fraction
    of the image side).
    """
    items = _as_list(stats)
    names = _labels(items, labels)
    unit = "px" if len({s.image_size for s in items}) == 1 else "frac"
    out_dir = Path(out_dir)
    return {
        "attention_distance": plot_attention_distance(
            items, out_dir / "attention_distance.png", names, unit, layout=layout, title=title
        ),  # fmt: skip
        "attention_entropy": plot_attention_entropy(
            items, out_dir / "attention_entropy.png", names, layout=layout, title=title
        ),  # fmt: skip
        "head_kl": plot_head_kl(items, out_dir / "head_kl.png", names, layout=layout, title=title),
    }
