"""Standard errors of metrics and of differences between two runs evaluated on the same items.

Conventions: a metric that is a mean over items (top-1 over images, depth metrics over images, SUC over
sequences) has per-item values; two runs on the same items are compared by the paired difference: the mean
of the per-item differences a - b with standard error SE = sd / sqrt(n) (sample sd, n - 1). A metric that is
not a per-item mean (keypoint AP) is compared by a paired bootstrap: the same resampled items (with
replacement, fixed seed, listed in data-set order) for both runs, SE = the sd of the resampled differences;
keypoint AP is evaluated for all resamples at once (:func:`mimlens.tasks.pose.keypoint_ap_resampled`).
"Beats" means better by more than ``Z`` standard errors; the same ``Z`` judges both directions (:func:`judge`),
and a difference within errors is reported with the smallest difference the test detects with 80 % probability
(:func:`detectable`). A rule that picks among candidates (a block, a K, a setting) picks on the selection half
of the items and is judged on the other half (:func:`split_items`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mimlens.errors import MimlensError

Z = 2.0  # a difference counts when beyond this many standard errors
RESAMPLES = 1000
POWER_Z = 0.8416  # one-sided normal quantile of 0.80: a true difference of (Z + POWER_Z) SE is found 80 % of the time
SPLIT_RULE = ("selection half = the items at even positions (0, 2, 4, ...) of the items section in data-set order, "
              "judgement half = the odd positions")


def standard_error(values: Sequence[float]) -> float:
    """SE of the mean of per-item ``values``: sample sd / sqrt(n) (0 for one item)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise MimlensError("no per-item value to take a standard error of")
    return float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean of the per-item differences ``a - b`` (same items, same order) and its SE = sd / sqrt(n)."""
    if len(a) != len(b):
        raise MimlensError(f"paired values need the same items: {len(a)} and {len(b)} values")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return {"diff": float(d.mean()), "se": standard_error(d), "n": int(d.size)}


def resampled_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) item indices drawn with replacement by numpy's PCG64 from ``seed``."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resampled_counts(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) multiplicities of the items in the draws of :func:`resampled_indices`."""
    draws = resampled_indices(n, resamples, seed)
    return np.stack([np.bincount(draw, minlength=n) for draw in draws])


def _resampled(items: Sequence[Any], statistic: Callable[[list], float], resamples: int, seed: int) -> np.ndarray:
    """``statistic`` of every resample of ``items``; a statistic with a ``resampled(items, counts)`` method (a
    vectorised form that takes the draws as multiplicities) is evaluated through it, others draw by draw on
    the resampled items in data-set order."""
    if hasattr(statistic, "resampled"):
        return statistic.resampled(list(items), resampled_counts(len(items), resamples, seed))
    return np.array([statistic([items[i] for i in np.sort(draw)])
                     for draw in resampled_indices(len(items), resamples, seed)])


def paired_bootstrap(items_a: Sequence[Any], items_b: Sequence[Any], statistic: Callable[[list], float],
                     resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float]:
    """``statistic(items_a) - statistic(items_b)`` and its bootstrap SE: the sd (n - 1) of the difference over
    ``resamples`` draws of the same item indices for both runs."""
    if len(items_a) != len(items_b):
        raise MimlensError(f"paired items need the same items: {len(items_a)} and {len(items_b)}")
    diffs = _resampled(items_a, statistic, resamples, seed) - _resampled(items_b, statistic, resamples, seed)
    return {"diff": float(statistic(list(items_a)) - statistic(list(items_b))),
            "se": float(np.std(diffs, ddof=1)), "n": len(items_a)}


def bootstrap_se(items: Sequence[Any], statistic: Callable[[list], float], resamples: int = RESAMPLES,
                 seed: int = 0) -> float:
    """Bootstrap SE of ``statistic(items)``: the sd (n - 1) over ``resamples`` draws with replacement."""
    return float(np.std(_resampled(items, statistic, resamples, seed), ddof=1))


def improves(difference: dict[str, float], higher_is_better: bool, z: float = Z) -> bool:
    """Whether a difference ``{"diff", "se"}`` (a - b) says a is better than b by more than ``z`` SEs."""
    diff = difference["diff"] if higher_is_better else -difference["diff"]
    return diff > z * difference["se"]


def judge(difference: dict[str, float], higher_is_better: bool, z: float = Z) -> str:
    """"better" when a difference a - b says a is better than b by more than ``z`` SEs, "worse" when b is
    better than a by as much, "within errors" otherwise: one level in both directions."""
    if improves(difference, higher_is_better, z):
        return "better"
    flipped = {**difference, "diff": -difference["diff"]}
    return "worse" if improves(flipped, higher_is_better, z) else "within errors"


def detectable(se: float, z: float = Z) -> float:
    """The smallest true difference a ``z``-SE test finds with 80 % probability: (z + POWER_Z) · se."""
    return (z + POWER_Z) * se


def split_items(items: dict[str, Any], half: str) -> dict[str, Any]:
    """The ``selection`` or ``judgement`` half of an ``items`` section (``ids``, ``values``, ...): the items at even
    or odd positions (:data:`SPLIT_RULE`), so that a choice made on one half is judged on the other."""
    if half not in ("selection", "judgement"):
        raise MimlensError(f"an items section splits into 'selection' and 'judgement' halves, not {half!r}")
    start = 0 if half == "selection" else 1
    return {**items, "ids": list(items["ids"])[start::2], "values": list(items["values"])[start::2]}


def beats(a: Sequence[float], b: Sequence[float], higher_is_better: bool) -> bool:
    """Whether per-item values ``a`` are better than ``b`` on the same items by more than ``Z`` paired SEs."""
    return improves(paired_difference(a, b), higher_is_better)


# ----------------------------------------------------------------------------------- per-item evidence of runs


def statistic(kind: str) -> Callable[[list], float]:
    """The metric as a function of per-item values: ``mean``, ``keypoint_ap`` or ``box_ap`` of per-image
    records."""
    if kind == "mean":
        return lambda values: float(np.mean(values))
    if kind == "keypoint_ap":
        from mimlens.tasks.pose import keypoint_ap, keypoint_ap_resampled

        def ap(records: list) -> float:
            return keypoint_ap(records)

        ap.resampled = keypoint_ap_resampled  # type: ignore[attr-defined]
        return ap
    if kind == "box_ap":
        from mimlens.tasks.detection_eval import box_ap, box_ap_resampled

        def bap(records: list) -> float:
            return box_ap(records)

        bap.resampled = box_ap_resampled  # type: ignore[attr-defined]
        return bap
    raise MimlensError(f"unknown per-item statistic {kind!r}")


def _present(values: Sequence[Any]) -> list:
    return [v for v in values if v is not None]


def summary(values: Sequence[Any], kind: str = "mean") -> dict[str, float]:
    """``{"value", "se", "n"}`` of per-item ``values`` (None, an item without a value, left out): the mean with
    sd / sqrt(n), or the statistic with its bootstrap SE."""
    values = _present(values)
    if kind == "mean":
        return {"value": float(np.mean(values)), "se": standard_error(values), "n": len(values)}
    return {"value": statistic(kind)(values), "se": bootstrap_se(values, statistic(kind)), "n": len(values)}


def compare(a: Sequence[Any], b: Sequence[Any], kind: str = "mean") -> dict[str, float]:
    """Paired ``{"diff", "se", "n"}`` of a - b over the items both have a value for: :func:`paired_difference`
    for a mean, :func:`paired_bootstrap` otherwise."""
    if len(a) != len(b):
        raise MimlensError(f"paired values need the same items: {len(a)} and {len(b)} values")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    left, right = [x for x, _ in pairs], [y for _, y in pairs]
    if kind == "mean":
        return paired_difference(left, right)
    return paired_bootstrap(left, right, statistic(kind))


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """:func:`compare` of two ``metrics.json`` ``items`` sections (``ids``, ``statistic``, ``values``), which
    must hold the same items in the same order."""
    if a["ids"] != b["ids"] or a["statistic"] != b["statistic"]:
        raise MimlensError("the two runs were not evaluated on the same items with the same statistic")
    return compare(a["values"], b["values"], a["statistic"])


def trained_check(values: Sequence[Any], baselines: dict[str, Sequence[Any]], baseline_values: dict[str, float],
                  higher_is_better: bool, kind: str = "mean") -> dict[str, Any]:
    """Whether per-item ``values`` beat the best baseline (by its metric value, ``baseline_values``) by more than
    ``Z`` paired SEs: ``{"trained", "baseline", "diff", "se", "n", "rule"}``."""
    best = (max if higher_is_better else min)(baseline_values, key=baseline_values.get)
    difference = compare(values, baselines[best], kind)
    how = "paired SE of per-item differences" if kind == "mean" else f"paired bootstrap SE ({RESAMPLES} resamples)"
    return {"trained": improves(difference, higher_is_better), "baseline": best, **difference,
            "rule": f"trained when better than the best trivial baseline by more than {Z:g} SE ({how})"}
