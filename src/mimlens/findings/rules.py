"""Verdicts on the paper's findings F1–F6, computed from a study's JSON documents (rules version
:data:`RULES_VERSION`; ``docs/findings.md`` states each rule and lists the versions).

Pure functions: each takes the parsed JSON of the runs it needs (``attention.json``, ``cka.json``,
``avgdist.json``, ``metrics.json``, ``drop_sweep.json``, ``probe.json``, ``bars.json``) and returns one findings
row ``{"id", "statement", "verdict", "numbers", "rule", "table"}`` — the form ``mimlens report`` renders.
``numbers`` holds every value the verdict used; ``table`` lays them out for reading, one row per quantity and one
column per model or task: ``{"columns": [...], "rows": [[label, key of numbers or null, ...]]}``. A verdict is
one of "reproduced", "not reproduced", "within errors" or "not judged" (``numbers["reason"]`` says why, and for
within errors which differences the tests could have detected). How comparisons become verdicts — paired SEs at
one level in both directions, choices made on a selection half of the items, how many tasks a row needs — is
:mod:`mimlens.findings.judging`. The attention rules (F1, F3) compare means without standard errors
(``attention.json`` holds no per-image values) by the fixed thresholds below; F5 judges the paired 95 % interval
of the two models' half-sample replicates in ``cka.json`` (version 2's fixed margin stays callable:
:func:`f5_cka_v2`).

``bars`` maps model names to their training bars (``{"passed": bool, ...}``); ``bar_models`` names the models
whose bars a verdict needs (the demo's "simmim" and "supervised" unless given: :mod:`.roles` passes the models of
a study). In ``numbers`` and tables "SimMIM" labels the MIM model a row compares, "supervised" the supervised one
and "random init" the randomly initialised one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mimlens.findings.judging import (
    JUDGED_RULE,
    NOT_JUDGED,
    QUICK_REASON,
    better,
    combine_parts,
    compare,
    decide,
    gate,
    majority,
    outcome,
    paired,
    pick,
    put,
    reading,
)
from mimlens.findings.judging import row as _row

RULES_VERSION = 3  # a change to any rule is a new version (docs/findings.md lists them with their reasons)
LOCAL_MARGIN = 0.10  # F1: a layer is local when its mean distance is >= 10 % below the random-init model's
KL_VANISH = 0.5  # F3: head KL "vanishes" when the last 3 layers' mean is below half the earlier layers' mean
CKA_MARGIN = 0.05  # F5 (version 2): SimMIM's mean off-diagonal CKA must exceed supervised's by this much
CKA_PAIRING = ("images", "num_images", "batch_size", "seed", "bootstrap")  # F5: what two paired cka.json share
CKA_Z = 1.96  # F5: the normal quantile of a two-sided 95 % interval, whose half-width is about CKA_Z SE
BOTH_BARS = ("simmim", "supervised")  # the demo's models whose training bars a rule needs unless told others
UNTRAINED_REASON = "no fine-tuning beats its trivial baseline by 2 SE"
TRAINED_RULE = "trained = better than its best trivial baseline by more than 2 paired SE"
GEOMETRIC = ("depth", "pose", "track")  # the probe findings' tasks
PAIRED = ("paired SE of per-item differences on the shared evaluation items (paired bootstrap, 1000 resamples, "
          "for AP); a difference counts beyond 2 SE in either direction; 'detectable' = 2.84 SE, the smallest "
          "difference found with 80 % probability")
SELECTION = ("a choice among several candidates is made on the selection half of the items (even positions) "
             "and judged on the other half (odd positions); a single candidate is judged on all items")
F2_SETTING = ("the paper's Figure 2 fine-tunes on ImageNet-1k classification; this study fine-tunes on the "
              "synthetic geometric tasks (depth, pose)")

STATEMENTS = {
    "F1": "MIM brings locality to every layer; supervised models attend locally in low layers, globally in high ones",
    "F2": "Masking with a moderate AvgDist (about 10-20 px at 224 px) fine-tunes best and attends most locally",
    "F3": "MIM keeps heads diverse in all layers; supervised head diversity almost vanishes in the last 3 layers",
    "F4": "Dropping the last layers of a supervised model helps geometric tasks (depth, pose)",
    "F5": "MIM representations are similar across layers (high CKA); supervised ones are not",
    "F6": "MIM beats supervised on geometric/motion tasks and fine-grained classification",
    "F4-probe": "Frozen probes: supervised geometric features peak before the last block; MIM's do not fall",
    "F6-probe": "Frozen probes: MIM's geometric features beat supervised's at the best and at the last block",
}


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def layer_means(attention: Mapping[str, Any], key: str) -> list[float]:
    """Per-layer mean over heads of ``key`` (``distance_px``, ``entropy``) of an ``attention.json``."""
    return [_mean(layer[key]) for layer in attention["layers"]]


def layer_head_kl(attention: Mapping[str, Any]) -> list[float]:
    """Per-layer mean KL between heads (ordered pairs h != g) of an ``attention.json``."""
    return [math.nan if layer["head_kl_mean"] is None else float(layer["head_kl_mean"])
            for layer in attention["layers"]]


def mean_off_diagonal(cka: Mapping[str, Any]) -> float:
    """Mean CKA between different layers of a within-model ``cka.json`` (null cells skipped)."""
    matrix = cka["matrix"]
    return _mean([matrix[i][j] for i in range(len(matrix)) for j in range(len(matrix)) if i != j])


def _primary(doc: Mapping[str, Any]) -> tuple[str, bool, float]:
    primary = doc["primary"]
    return primary["name"], bool(primary["higher_is_better"]), float(primary["value"])


# ---------------------------------------------------------------------------------------------- F1, F3, F5


def f1_locality(simmim: Mapping, supervised: Mapping, random_init: Mapping, bars: Mapping, claims: bool, *,
                bar_models: Sequence[str] = BOTH_BARS) -> dict:
    """F1 from the three models' ``attention.json``. Reproduced when SimMIM is local in every layer (mean
    distance >= LOCAL_MARGIN below the random-init model's) **and** supervised's distance grows from low to high
    layers (its upper half of layers' mean exceeds its lower half's by >= LOCAL_MARGIN of the random-init mean;
    the middle layer of an odd count is in neither half); not reproduced otherwise."""
    sim, sup, ref = (layer_means(d, "distance_px") for d in (simmim, supervised, random_init))
    n, half = len(ref), len(ref) // 2
    local = sum(s <= (1 - LOCAL_MARGIN) * r for s, r in zip(sim, ref, strict=True))
    low, high = _mean(sup[:half]), _mean(sup[n - half:])
    growth = (high - low) / _mean(ref) if half else math.nan
    numbers = {"layers": n, "SimMIM local layers": local,
               "SimMIM mean distance px": _mean(sim), "supervised mean distance px": _mean(sup),
               "random-init mean distance px": _mean(ref), "supervised lower-half distance px": low,
               "supervised upper-half distance px": high, "supervised growth / random-init distance": growth}
    rule = (f"reproduced if SimMIM's mean distance is >= {LOCAL_MARGIN:.0%} below the random-init model's in every "
            "layer and supervised's upper half of layers has a mean distance above its lower half's by >= "
            f"{LOCAL_MARGIN:.0%} of the random-init mean distance; not reproduced otherwise (means over images, no "
            "SE); needs both training bars and at least 2 layers")
    reason = gate(claims, bars, bar_models) or (None if half else "needs at least 2 layers")
    verdict = decide(reason, local == n and growth >= LOCAL_MARGIN, numbers)
    return _row("F1", STATEMENTS["F1"], verdict, numbers, rule, ("SimMIM", "supervised", "random init"), [
        ["mean attention distance (px)", "SimMIM mean distance px", "supervised mean distance px",
         "random-init mean distance px"],
        ["local layers (of all)", "SimMIM local layers", None, None],
        ["lower-half layers (px)", None, "supervised lower-half distance px", None],
        ["upper-half layers (px)", None, "supervised upper-half distance px", None],
        ["growth low → high / random-init distance", None, "supervised growth / random-init distance", None],
        ["layers", "layers"]])


def f3_head_diversity(simmim: Mapping, supervised: Mapping, bars: Mapping, claims: bool, *,
                      bar_models: Sequence[str] = BOTH_BARS) -> dict:
    """F3 from head KL: for each model, the mean layer KL of the last 3 layers over that of the earlier ones.
    Reproduced when supervised's ratio is below KL_VANISH, SimMIM's is not, and SimMIM's last-3 KL exceeds
    supervised's; not reproduced otherwise."""
    sim, sup = layer_head_kl(simmim), layer_head_kl(supervised)
    rule = (f"ratio = mean head KL of the last 3 layers / of the earlier layers; reproduced if supervised's ratio "
            f"< {KL_VANISH:g} <= SimMIM's and SimMIM's last-3 KL > supervised's, not reproduced otherwise (means "
            "over images, no SE); needs both training bars and at least 4 layers")
    numbers: dict[str, Any] = {"layers": len(sim)}
    layout = [["head KL, last 3 layers", "SimMIM KL last 3", "supervised KL last 3"],
              ["head KL, earlier layers", "SimMIM KL earlier", "supervised KL earlier"],
              ["ratio last 3 / earlier", "SimMIM ratio", "supervised ratio"], ["layers", "layers"]]
    reason = gate(claims, bars, bar_models)
    if len(sim) < 4:
        numbers["reason"] = reason or "needs at least 4 layers (the last 3 and an earlier one)"
        return _row("F3", STATEMENTS["F3"], "not judged", numbers, rule, ("SimMIM", "supervised"), layout)
    sim_last, sim_early, sup_last, sup_early = _mean(sim[-3:]), _mean(sim[:-3]), _mean(sup[-3:]), _mean(sup[:-3])
    sim_ratio = sim_last / sim_early if sim_early > 0 else math.nan
    sup_ratio = sup_last / sup_early if sup_early > 0 else math.nan
    numbers.update({"SimMIM KL last 3": sim_last, "SimMIM KL earlier": sim_early, "SimMIM ratio": sim_ratio,
                    "supervised KL last 3": sup_last, "supervised KL earlier": sup_early,
                    "supervised ratio": sup_ratio})
    holds = sup_ratio < KL_VANISH <= sim_ratio and sim_last > sup_last
    return _row("F3", STATEMENTS["F3"], decide(reason, holds, numbers), numbers, rule, ("SimMIM", "supervised"),
                layout)


def f5_cka_v2(simmim: Mapping, supervised: Mapping, bars: Mapping, claims: bool, *,
              bar_models: Sequence[str] = BOTH_BARS) -> dict:
    """F5 under rules version 2, from within-model ``cka.json``: SimMIM's mean off-diagonal CKA exceeds
    supervised's by CKA_MARGIN (no interval)."""
    sim, sup = mean_off_diagonal(simmim), mean_off_diagonal(supervised)
    numbers = {"SimMIM mean CKA between layers": sim, "supervised mean CKA between layers": sup,
               "estimator": simmim.get("estimator")}
    rule = (f"reproduced if SimMIM's mean off-diagonal CKA - supervised's >= {CKA_MARGIN:g}, not reproduced "
            "otherwise (no SE); needs both training bars")
    verdict = decide(gate(claims, bars, bar_models), sim - sup >= CKA_MARGIN, numbers)
    return _row("F5", STATEMENTS["F5"], verdict, numbers, rule, ("SimMIM", "supervised"), [
        ["mean CKA between layers", "SimMIM mean CKA between layers", "supervised mean CKA between layers"],
        ["estimator", "estimator"]])


def off_diagonal_null(cka: Mapping[str, Any]) -> float:
    """Mean over different layers of the permutation null's mean CKA of a within-model ``cka.json`` (NaN without
    a null)."""
    matrix = cka.get("null_mean")
    if matrix is None:
        return math.nan
    return _mean([matrix[i][j] for i in range(len(matrix)) for j in range(len(matrix)) if i != j])


def cka_unpaired(simmim: Mapping[str, Any], supervised: Mapping[str, Any]) -> str | None:
    """Why two within-model ``cka.json`` cannot give a paired difference, or None: one has no half-sample
    replicates, or they differ in any of :data:`CKA_PAIRING` (the images checksum, their number, the batch size,
    the seed of the draws or the number of replicates)."""
    for label, doc in (("SimMIM", simmim), ("supervised", supervised)):
        if not doc.get("off_diagonal_replicates"):
            return f"{label}'s cka.json has no half-sample replicates (written without calibration)"
    differ = [key for key in CKA_PAIRING if not _same(simmim.get(key), supervised.get(key))]
    if differ:
        return "the two cka.json are not paired: " + ", ".join(
            f"{key} {simmim.get(key)!r} vs {supervised.get(key)!r}" for key in differ)
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)
    return a == b


def _paired_replicates(a: Sequence[float | None], b: Sequence[float | None]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)
            if x is not None and y is not None and not math.isnan(x) and not math.isnan(y)]


def f5_cka(simmim: Mapping, supervised: Mapping, bars: Mapping, claims: bool, *,
           bar_models: Sequence[str] = BOTH_BARS) -> dict:
    """F5 from within-model ``cka.json`` (rules version 3): the paired difference of the mean off-diagonal CKA,
    SimMIM - supervised, with the percentile 95 % interval of its paired half-sample replicates (the same image
    halves in both models: :class:`mimlens.analysis.cka.MinibatchCKA`). Reproduced when the interval lies above
    0, not reproduced when below, within errors when it contains 0 (with the detectable difference (1.96 + 0.84)
    SE, SE = the interval's half-width / 1.96). Not judged when the documents are not paired
    (:func:`cka_unpaired`)."""
    from mimlens.analysis.cka import LEVEL, percentile_interval
    from mimlens.tasks.uncertainty import detectable

    sim, sup = mean_off_diagonal(simmim), mean_off_diagonal(supervised)
    numbers: dict[str, Any] = {
        "SimMIM mean CKA between layers": sim, "supervised mean CKA between layers": sup,
        "SimMIM - supervised": sim - sup, "SimMIM null mean CKA between layers": off_diagonal_null(simmim),
        "supervised null mean CKA between layers": off_diagonal_null(supervised),
        "estimator": simmim.get("estimator")}
    rule = (f"the paired difference SimMIM - supervised of the mean off-diagonal CKA; reproduced if its {LEVEL:.0%} "
            "percentile interval over paired half-sample replicates (the same random halves of every batch of "
            "images in both models) lies above 0, not reproduced if below 0, within errors if it contains 0; "
            "needs both training bars and two paired cka.json (the same images, number of images, batch size, "
            "seed and number of replicates)")
    layout = [["mean CKA between layers", "SimMIM mean CKA between layers", "supervised mean CKA between layers"],
              ["null mean (permuted images)", "SimMIM null mean CKA between layers",
               "supervised null mean CKA between layers"],
              ["SimMIM - supervised (paired)", "SimMIM - supervised"],
              [f"{LEVEL:.0%} interval, low", "SimMIM - supervised low"],
              [f"{LEVEL:.0%} interval, high", "SimMIM - supervised high"],
              ["paired replicates", "SimMIM - supervised replicates"],
              ["detectable difference", "SimMIM - supervised detectable"], ["estimator", "estimator"]]
    unpaired = cka_unpaired(simmim, supervised)
    reason = gate(claims, bars, bar_models) or unpaired
    differences = [] if unpaired else _paired_replicates(
        simmim["off_diagonal_replicates"], supervised["off_diagonal_replicates"])
    if differences:
        low, high = (float(v) for v in percentile_interval(differences))
        numbers.update({"SimMIM - supervised low": low, "SimMIM - supervised high": high,
                        "SimMIM - supervised replicates": len(differences),
                        "SimMIM - supervised detectable": detectable((high - low) / 2 / CKA_Z, CKA_Z)})
    elif reason is None:
        reason = "no paired replicate with a finite mean CKA in both models"
    if reason is not None:
        verdict = decide(reason, False, numbers)
    elif low > 0 or high < 0:
        verdict = "reproduced" if low > 0 else "not reproduced"
    else:
        numbers["reason"] = (f"within errors: the {LEVEL:.0%} interval of SimMIM - supervised, [{low:.3g}, "
                             f"{high:.3g}], contains 0 (detectable difference "
                             f"{numbers['SimMIM - supervised detectable']:.3g})")
        verdict = "within errors"
    return _row("F5", STATEMENTS["F5"], verdict, numbers, rule, ("SimMIM", "supervised"), layout)


# ---------------------------------------------------------------------------------------------- F2


def f2_avgdist(avgdist: Mapping[str, Any], mask_patch: int, mask_ratio: float, claims: bool) -> dict:
    """F2 needs one pre-training per masking setting; the demo pre-trains one, so it only reports AvgDist."""
    band = avgdist["moderate_band_px"]
    settings = avgdist["settings"]
    used = next((s for s in settings if s["mask_patch_size"] == mask_patch
                 and math.isclose(s["ratio"], mask_ratio)), None)
    in_band = sum(1 for s in settings if s["avg_dist_px"] is not None and band[0] <= s["avg_dist_px"] <= band[1])
    numbers = {"image px": avgdist["img_size"], "moderate band low px": band[0], "moderate band high px": band[1],
               "settings measured": len(settings), "settings in band": in_band,
               "pre-training AvgDist px": None if used is None else used["avg_dist_px"],
               "reason": QUICK_REASON if not claims else
               "needs one pre-training and fine-tuning per masking setting: run the masking study "
               "(mimlens demo --preset masking, which writes OUT/masking)"}
    rule = "AvgDist is measured for every setting; the verdict needs one pre-training per setting"
    return _row("F2", STATEMENTS["F2"], "not judged", numbers, rule, (), [
        ["image size (px)", "image px"], ["moderate band from (px)", "moderate band low px"],
        ["moderate band to (px)", "moderate band high px"], ["masking settings measured", "settings measured"],
        ["settings in the band", "settings in band"], ["AvgDist of the pre-training (px)", "pre-training AvgDist px"]])


def avg_dist_of(avgdist: Mapping[str, Any], mask_patch: int, ratio: float) -> float:
    """A setting's AvgDist (px) from ``avgdist.json``; an error naming the setting when it was not measured."""
    for s in avgdist["settings"]:
        if s["mask_patch_size"] == mask_patch and math.isclose(s["ratio"], ratio) and s["avg_dist_px"] is not None:
            return float(s["avg_dist_px"])
    from mimlens.errors import MimlensError

    raise MimlensError(f"avgdist.json has no AvgDist for mask patch {mask_patch}, ratio {ratio}")


def _f2_task(task: str, runs: Mapping[str, Mapping], order: Sequence[str], moderate: Sequence[str],
             numbers: dict[str, Any]) -> str:
    """One fine-tuning task of F2: the best setting in the band against the best outside it (each chosen on the
    selection half), paired on the judgement half; "holds" when the band's is better by 2 SE."""
    metric, higher, _ = _primary(runs[order[0]])
    for n in order:
        numbers[f"{task} {metric} {n}"] = _primary(runs[n])[2]
        if runs[n]["primary"].get("se") is not None:
            numbers[f"{task} {metric} {n} SE"] = runs[n]["primary"]["se"]
        if runs[n].get("trained") is not None:
            numbers[f"{task} {n} trained"] = bool(runs[n]["trained"])
    outside = [n for n in order if n not in moderate]
    if not moderate or not outside:
        return NOT_JUDGED + "needs settings both in and outside the moderate band"
    if any(not runs[n].get("items") for n in order):
        return NOT_JUDGED + "no per-item values"
    inside_best = pick({n: runs[n]["items"] for n in moderate}, higher)
    outside_best = pick({n: runs[n]["items"] for n in outside}, higher)
    numbers[f"{task} chosen in band"], numbers[f"{task} chosen outside band"] = inside_best, outside_best
    if runs[inside_best].get("trained") is False and runs[outside_best].get("trained") is False:
        return f"{NOT_JUDGED}{UNTRAINED_REASON}: {inside_best}, {outside_best}"
    chosen = len(moderate) > 1 or len(outside) > 1
    difference = compare(runs[inside_best]["items"], runs[outside_best]["items"], chosen)
    put(numbers, f"{task} band - outside", difference)
    result = outcome(difference, higher)
    if result == "within errors":
        numbers[f"{task} detectable"] = numbers[f"{task} band - outside detectable"]
    return result


def _f2_descriptive(order: Sequence[str], dist: Mapping[str, float], moderate: Sequence[str], bars: Mapping,
                    attention: Mapping, probes: Mapping, numbers: dict[str, Any]) -> None:
    """The numbers F2 reports but does not judge: bars, attention distance, frozen probes' best block."""
    for n in order:
        numbers[f"{n} AvgDist px"] = dist[n]
        numbers[f"{n} in band"] = n in moderate
        bar = bars.get(n) or {}
        for key, label in (("masked_l1", "masked L1"), ("nearest_fill_l1", "nearest fill L1"),
                           ("mean_fill_l1", "mean fill L1")):
            if key in bar:
                numbers[f"{n} {label}"] = bar[key]
        if n in attention:
            numbers[f"{n} mean attention px"] = _mean(layer_means(attention[n], "distance_px"))
        for task, spec in (probes.get(n) or {}).get("tasks", {}).items():
            best = best_row(spec)
            numbers[f"probe {task} {n}"] = best[spec["primary"]]
            numbers[f"probe {task} {n} block"] = best["block"]


def f2_masking(avgdist: Mapping[str, Any], settings: Sequence[tuple[str, int, float]],
               finetunes: Mapping[str, Mapping[str, Mapping]], attention: Mapping[str, Mapping],
               probes: Mapping[str, Mapping], bars: Mapping[str, Mapping], claims: bool) -> dict:
    """F2 from a masking study: ``settings`` (name, mask patch, ratio), each setting's AvgDist (``avgdist.json``,
    which also gives the moderate band), fine-tunings (``finetunes[task][name]``: ``metrics.json``), attention
    (``attention.json``), frozen probes (``probe.json``) and SimMIM bar (``bars[name]``).

    Per fine-tuning task (:func:`_f2_task`): the best setting in the moderate band against the best outside it,
    each chosen on the selection half of the items where there is a choice, by the paired SE on the judgement
    half: holds / fails / within errors. A task where neither compared fine-tuning is trained is not judged.
    Verdict by :func:`mimlens.findings.judging.majority`. Attention distance, bars and probes are reported, not
    judged.
    """
    band = avgdist["moderate_band_px"]
    dist = {name: avg_dist_of(avgdist, patch, ratio) for name, patch, ratio in settings}
    order = sorted(dist, key=dist.get)
    moderate = [n for n in order if band[0] <= dist[n] <= band[1]]
    numbers: dict[str, Any] = {"moderate band low px": band[0], "moderate band high px": band[1],
                               "image px": avgdist["img_size"], "paper's setting": F2_SETTING}
    _f2_descriptive(order, dist, moderate, bars, attention, probes, numbers)
    outcomes = {task: _f2_task(task, runs, order, moderate, numbers) for task, runs in finetunes.items()}
    for task, result in outcomes.items():
        numbers[f"{task} outcome"] = result
    rule = ("per fine-tuning task: the best setting in the moderate band against the best setting outside it, by "
            f"the {PAIRED}; {SELECTION}; the task holds when the band's is better, fails when the outside one is "
            f"better, is within errors otherwise; {JUDGED_RULE}; a task is not judged when neither compared "
            f"fine-tuning is trained ({TRAINED_RULE}); attention distance is reported, not judged; {F2_SETTING}")
    reason = None if claims else QUICK_REASON
    if reason is None and not moderate:
        reason = "no masking setting lies in the moderate band"
    verdict = majority(outcomes, numbers, reason)
    return _row("F2", STATEMENTS["F2"], verdict, numbers, rule, order, _f2_layout(order, finetunes, probes))


def _f2_layout(order: Sequence[str], finetunes: Mapping[str, Mapping[str, Mapping]],
               probes: Mapping[str, Mapping]) -> list[list[str | None]]:
    rows: list[list[str | None]] = [["AvgDist (px)", *(f"{n} AvgDist px" for n in order)],
                                    ["in the moderate band", *(f"{n} in band" for n in order)]]
    for label in ("masked L1", "nearest fill L1", "mean fill L1", "mean attention px"):
        rows.append([label.replace(" px", " (px)"), *(f"{n} {label}" for n in order)])
    for task, runs in finetunes.items():
        metric = _primary(runs[order[0]])[0]
        key = f"{task} band - outside"
        rows += [[f"{task} {metric}", *(f"{task} {metric} {n}" for n in order)],
                 [f"{task} {metric} SE", *(f"{task} {metric} {n} SE" for n in order)],
                 [f"{task} trained", *(f"{task} {n} trained" for n in order)],
                 [f"{task} best in band (selection half)", f"{task} chosen in band"],
                 [f"{task} best outside band (selection half)", f"{task} chosen outside band"],
                 [f"{task} band - outside (paired)", key], [f"{task} its SE", f"{key} SE"],
                 [f"{task} detectable difference", f"{key} detectable"], [f"{task} items judged", f"{key} items"],
                 [f"{task} outcome", f"{task} outcome"]]
    for task in sorted({t for doc in probes.values() for t in doc.get("tasks", {})}):
        rows += [[f"frozen probe {task}, best block", *(f"probe {task} {n}" for n in order)],
                 [f"frozen probe {task}: which block", *(f"probe {task} {n} block" for n in order)]]
    rows += [["moderate band from (px)", "moderate band low px"], ["moderate band to (px)", "moderate band high px"],
             ["paper's setting", "paper's setting"], ["tasks", "tasks"], ["tasks judged", "tasks judged"],
             ["tasks holding", "tasks holding"], ["tasks failing", "tasks failing"],
             ["within errors", "tasks within errors"]]
    return rows


def f2_from_study(study: Mapping[str, Any], folder: str) -> dict:
    """The demo's F2 row taken from the masking study in ``OUT/<folder>`` (the F2 row of its ``findings.json``),
    naming the study's report."""
    row = {k: v for k, v in study.items() if k != "figures"}
    row["numbers"] = {**row["numbers"], "masking study": f"{folder}/report.html"}
    row["table"] = {**row["table"], "rows": [*row["table"]["rows"], ["masking study", "masking study"]]}
    return row


# ---------------------------------------------------------------------------------------------- F4, F6: fine-tuning


def _f4_task(task: str, sweep: Mapping[str, Any], random_init: Mapping[str, Any], numbers: dict[str, Any]) -> str:
    """One task of F4: the best K >= 1 (chosen on the selection half where the sweep has several) against the
    full model K = 0: "holds" when dropping helps by 2 SE, "fails" when it hurts by 2 SE."""
    metric, higher = sweep["metric"], sweep["higher_is_better"]
    for r in sweep["rows"]:
        numbers[f"{task} {metric} K={int(r['drop_last'])}"] = float(r[metric])
    numbers[f"{task} {metric} random init"] = _primary(random_init)[2]
    trained = next((r.get("trained") for r in sweep["rows"] if int(r["drop_last"]) == 0), None)
    if trained is not None:
        numbers[f"{task} K=0 trained"] = bool(trained)
    if trained is False:
        return f"{NOT_JUDGED}{UNTRAINED_REASON} (supervised K=0)"
    items = sweep.get("items") or {}
    dropped = sorted(int(k) for k in items if int(k) > 0)
    if "0" not in items or not dropped or not random_init.get("items"):
        return NOT_JUDGED + "no per-item values of K=0, K>=1 and the random-init fine-tuning"
    learned = paired(items["0"], random_init["items"])
    put(numbers, f"{task} K=0 - random init", learned)
    if not better(learned, higher):
        return NOT_JUDGED + "the full model does not beat the random-init fine-tuning"
    on_all = {k: paired(items[str(k)], items["0"]) for k in dropped}
    for k, difference in on_all.items():
        put(numbers, f"{task} K={k} - K=0", difference)
        numbers[f"{task} K={k} - K=0 reading"] = {"better": "helps", "worse": "hurts"}.get(reading(difference, higher),
                                                                                     "within errors")
    chosen = pick({k: items[str(k)] for k in dropped}, higher)
    numbers[f"{task} chosen K"] = chosen
    difference = compare(items[str(chosen)], items["0"], True) if len(dropped) > 1 else on_all[chosen]
    put(numbers, f"{task} chosen K - K=0", difference)
    result = outcome(difference, higher)
    if result == "within errors":
        numbers[f"{task} detectable"] = numbers[f"{task} chosen K - K=0 detectable"]
    return result


def f4_drop_last(sweeps: Mapping[str, Mapping[str, Any]], random_init: Mapping[str, Mapping], bars: Mapping,
                 claims: bool, *, bar_models: Sequence[str] = ("supervised",)) -> dict:
    """F4 from the supervised model's ``drop_sweep.json`` per task and the random-init fine-tunings'
    ``metrics.json`` (:func:`_f4_task`). A task is judged only where its full model (K = 0) is trained and beats
    the random-init fine-tuning by more than 2 paired SE. Verdict by :func:`mimlens.findings.judging.majority`."""
    numbers: dict[str, Any] = {}
    outcomes = {task: _f4_task(task, sweep, random_init[task], numbers) for task, sweep in sweeps.items()}
    for task, result in outcomes.items():
        numbers[f"{task} outcome"] = result
    rule = ("per task (depth RMSE, pose AP): the K >= 1 that is best on the selection half of the items (every K "
            "of the sweep; with one K no choice) against the full model K = 0 on the judgement half, by the "
            f"{PAIRED}; the task holds when dropping helps, fails when it hurts, is within errors otherwise; each "
            f"K's difference on all items is shown, not judged; {JUDGED_RULE}; a task is judged only when the full "
            "model beats the random-init fine-tuning by more than 2 paired SE (what the pre-training did not help "
            f"with cannot show what dropping its blocks costs) and is trained ({TRAINED_RULE}); needs the "
            "supervised bar")
    reason = gate(claims, bars, bar_models)
    verdict = majority(outcomes, numbers, reason)
    return _row("F4", STATEMENTS["F4"], verdict, numbers, rule, *_f4_layout(sweeps))


def _f4_layout(sweeps: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str | None]]]:
    columns = [f"{task} {sweep['metric']}" for task, sweep in sweeps.items()]
    ks = sorted({int(r["drop_last"]) for sweep in sweeps.values() for r in sweep["rows"]})
    names = {0: "full model", 1: "last block dropped"}
    layout = [[names.get(k, f"last {k} blocks dropped"), *(f"{c} K={k}" for c in columns)] for k in ks]
    layout.append(["random-init fine-tuning", *(f"{c} random init" for c in columns)])
    for key in ["K=0 - random init", *(f"K={k} - K=0" for k in ks if k > 0)]:
        layout.append([f"{key} (paired, all items)", *(f"{t} {key}" for t in sweeps)])
        layout.append([f"{key} SE", *(f"{t} {key} SE" for t in sweeps)])
        layout.append([f"{key} reading", *(f"{t} {key} reading" for t in sweeps)])
    layout += [["chosen K (selection half)", *(f"{t} chosen K" for t in sweeps)],
               ["chosen K - K=0 (paired)", *(f"{t} chosen K - K=0" for t in sweeps)],
               ["chosen K - K=0 SE", *(f"{t} chosen K - K=0 SE" for t in sweeps)],
               ["detectable difference", *(f"{t} chosen K - K=0 detectable" for t in sweeps)],
               ["items judged", *(f"{t} chosen K - K=0 items" for t in sweeps)],
               ["full model trained", *(f"{t} K=0 trained" for t in sweeps)],
               ["outcome", *(f"{t} outcome" for t in sweeps)], ["tasks", "tasks"], ["tasks judged", "tasks judged"],
               ["tasks holding (dropping helps)", "tasks holding"], ["tasks failing (dropping hurts)", "tasks failing"],
               ["tasks within errors", "tasks within errors"]]
    return columns, layout


def _f6_task(task: str, docs: Mapping[str, Mapping[str, Any]], numbers: dict[str, Any]) -> str:
    """One task of F6 (``docs``: SimMIM's, supervised's and random init's ``metrics.json``): SimMIM against
    supervised by the paired SE, judged when both are trained and one of them beats random init by 2 SE."""
    name, higher, _ = _primary(docs["SimMIM"])
    for label, doc in docs.items():
        numbers[f"{task} {name} {label}"] = _primary(doc)[2]
    flags = {label: docs[label].get("trained") for label in ("SimMIM", "supervised")}
    for label, flag in flags.items():
        if flag is not None:
            numbers[f"{task} {label} trained"] = bool(flag)
    if False in flags.values():
        return f"{NOT_JUDGED}{UNTRAINED_REASON} ({', '.join(k for k, v in flags.items() if v is False)})"
    pairs = {(x, y): paired(docs[x].get("items"), docs[y].get("items"))
             for x, y in (("SimMIM", "random init"), ("supervised", "random init"), ("SimMIM", "supervised"))}
    if any(d is None for d in pairs.values()):
        return NOT_JUDGED + "no per-item values"
    for (x, y), difference in pairs.items():
        put(numbers, f"{task} {x} - {y}", difference)
    if not (better(pairs["SimMIM", "random init"], higher) or better(pairs["supervised", "random init"], higher)):
        return NOT_JUDGED + "neither pre-training beats the random-init fine-tuning"
    result = outcome(pairs["SimMIM", "supervised"], higher)
    if result == "within errors":
        numbers[f"{task} detectable"] = numbers[f"{task} SimMIM - supervised detectable"]
    return result


def f6_transfer(simmim: Mapping[str, Mapping], supervised: Mapping[str, Mapping],
                random_init: Mapping[str, Mapping], bars: Mapping, claims: bool, *,
                bar_models: Sequence[str] = BOTH_BARS) -> dict:
    """F6 from ``metrics.json`` per task (SimMIM's, supervised's and the random-init model's fine-tunings, all
    evaluated on the same items; :func:`_f6_task`): per judged task, SimMIM better than supervised by more than
    2 paired SE holds, worse by as much fails. Verdict by :func:`mimlens.findings.judging.majority`."""
    numbers: dict[str, Any] = {}
    outcomes = {task: _f6_task(task, {"SimMIM": simmim[task], "supervised": supervised[task],
                                      "random init": random_init[task]}, numbers) for task in simmim}
    for task, result in outcomes.items():
        numbers[f"{task} outcome"] = result
    rule = (f"per task: SimMIM's fine-tuning against supervised's by the {PAIRED}; the task holds when SimMIM is "
            "better, fails when supervised is better, is within errors otherwise; a task is judged only when "
            "SimMIM or supervised beats the random-init fine-tuning by more than 2 paired SE (pre-training made a "
            f"difference) and both fine-tunings are trained ({TRAINED_RULE}); {JUDGED_RULE}; needs both training "
            "bars")
    verdict = majority(outcomes, numbers, gate(claims, bars, bar_models))
    layout = []
    for task in simmim:
        name = _primary(simmim[task])[0]
        layout += [[f"{task} {name}", *(f"{task} {name} {m}" for m in ("SimMIM", "supervised", "random init"))],
                   [f"{task} paired diff vs random init", f"{task} SimMIM - random init",
                    f"{task} supervised - random init"],
                   [f"{task} its SE", f"{task} SimMIM - random init SE", f"{task} supervised - random init SE"],
                   [f"{task} SimMIM - supervised (paired)", f"{task} SimMIM - supervised"],
                   [f"{task} SimMIM - supervised SE", f"{task} SimMIM - supervised SE"],
                   [f"{task} detectable difference", f"{task} SimMIM - supervised detectable"],
                   [f"{task} trained", f"{task} SimMIM trained", f"{task} supervised trained"],
                   [f"{task} outcome", f"{task} outcome"]]
    layout += [["tasks", "tasks"], ["tasks judged", "tasks judged"], ["tasks holding (SimMIM better)", "tasks holding"],
               ["tasks failing (supervised better)", "tasks failing"], ["tasks within errors", "tasks within errors"]]
    return _row("F6", STATEMENTS["F6"], verdict, numbers, rule, ("SimMIM", "supervised", "random init"), layout)


# ---------------------------------------------------------------------------------------------- frozen probes


def probe_items(task: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``items`` section (``ids``, ``statistic``, ``values``) of one block's row of a ``probe.json`` task."""
    return {**task["items"], "values": row["values"]}


def best_row(task: Mapping[str, Any]) -> Mapping[str, Any]:
    """The row of a ``probe.json`` task with the best primary metric on all items (the earliest block on ties);
    descriptive only: the rules choose blocks with :func:`chosen_row`."""
    sign = 1.0 if task["higher_is_better"] else -1.0
    return max(task["rows"], key=lambda row: (sign * row[task["primary"]], -row["block"]))


def chosen_row(task: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """Of ``rows`` of a ``probe.json`` task, the one with the best primary metric on the selection half of the
    items (the earliest on ties; a single row is returned as is)."""
    index = pick({i: probe_items(task, r) for i, r in enumerate(rows)}, task["higher_is_better"])
    return rows[index]


def earlier_against_last(task: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict[str, float]]:
    """The block before the last chosen on the selection half, and its paired difference with the last block
    (chosen - last) on the judgement half (on all items when only one block precedes the last)."""
    earlier, last = task["rows"][:-1], task["rows"][-1]
    chosen = chosen_row(task, earlier)
    return chosen, compare(probe_items(task, chosen), probe_items(task, last), len(earlier) > 1)


def _probe_tasks(simmim: Mapping[str, Any], supervised: Mapping[str, Any]) -> list[str]:
    return [t for t in GEOMETRIC if t in simmim["tasks"] and t in supervised["tasks"]]


def _probe_outcomes(judge_task, simmim: Mapping[str, Any], supervised: Mapping[str, Any]
                    ) -> tuple[list[str], dict[str, Any], dict[str, str]]:
    """The geometric tasks probed in both models, the numbers ``judge_task(t, simmim, supervised, numbers)``
    writes, and each task's outcome (also in ``numbers[task + " outcome"]``)."""
    tasks = _probe_tasks(simmim, supervised)
    numbers: dict[str, Any] = {}
    outcomes = {t: judge_task(t, simmim, supervised, numbers) for t in tasks}
    for t, result in outcomes.items():
        numbers[f"{t} outcome"] = result
    return tasks, numbers, outcomes


def _comparison_rows(label: str, key: str, tasks: Sequence[str]) -> list[list[str]]:
    """Table rows of one paired comparison per task that :func:`put` wrote under ``task + " " + key``: the
    difference, its SE, the detectable difference and the items judged."""
    return [[f"{label} (paired)", *(f"{t} {key}" for t in tasks)], [f"{label} SE", *(f"{t} {key} SE" for t in tasks)],
            [f"{label} detectable difference", *(f"{t} {key} detectable" for t in tasks)],
            [f"{label} items judged", *(f"{t} {key} items" for t in tasks)]]


def _probe_columns(tasks: Sequence[str], simmim: Mapping[str, Any]) -> list[str]:
    return [f"{t} {simmim['tasks'][t]['primary']}" for t in tasks]


PROBE_GATE = "needs both training bars; tasks: depth RMSE, pose AP, tracking SUC"


def _f4_probe_task(t: str, simmim: Mapping[str, Any], supervised: Mapping[str, Any], numbers: dict[str, Any]) -> str:
    """One task of F4-probe: supervised's chosen earlier block against its last (holds when better), SimMIM's
    last against its chosen earlier block (holds when better, fails when worse: SimMIM falls)."""
    metric, higher = supervised["tasks"][t]["primary"], supervised["tasks"][t]["higher_is_better"]
    if min(len(doc["tasks"][t]["rows"]) for doc in (simmim, supervised)) < 2:
        return NOT_JUDGED + "needs at least 2 blocks"
    parts, keys = [], []
    for label, doc, sign in (("supervised", supervised, 1.0), ("SimMIM", simmim, -1.0)):
        task = doc["tasks"][t]
        chosen, difference = earlier_against_last(task)
        key = f"{t} {label} earlier - last"
        numbers[f"{t} {label} chosen block"] = chosen["block"]
        numbers[f"{t} {label} chosen {metric}"] = chosen[metric]
        numbers[f"{t} {label} last {metric}"] = task["rows"][-1][metric]
        put(numbers, key, difference)
        part = outcome({**difference, "diff": sign * difference["diff"]}, higher)
        numbers[f"{t} {label} part"] = part
        parts.append(part)
        keys.append(key)
    return combine_parts(parts, keys, numbers, t)


def f4_probe(simmim: Mapping[str, Any], supervised: Mapping[str, Any], bars: Mapping, claims: bool, *,
             bar_models: Sequence[str] = BOTH_BARS) -> dict:
    """F4 from frozen probes (``probe.json`` of SimMIM and supervised, same items; :func:`_f4_probe_task`): per
    geometric task, supervised peaks before its last block when its best earlier block (chosen on the selection
    half) beats the last by more than 2 paired SE on the judgement half (the last beating it by as much fails);
    SimMIM does not fall when its last block beats its best earlier block by as much (the earlier beating the
    last fails). A task holds when both parts hold, fails when either fails. Verdict by
    :func:`mimlens.findings.judging.majority`."""
    tasks, numbers, outcomes = _probe_outcomes(_f4_probe_task, simmim, supervised)
    rule = (f"per geometric task: {SELECTION}; supervised's part holds when its best block before the last is "
            "better than its last block, fails when the last is better; SimMIM's part holds when its last block is "
            "better than its best block before the last, fails when that earlier block is better (SimMIM falls); "
            f"each by the {PAIRED}; the task holds when both parts hold, fails when either fails, is within errors "
            f"otherwise; {JUDGED_RULE}; {PROBE_GATE}")
    metrics = {t: supervised["tasks"][t]["primary"] for t in tasks}
    layout = []
    for label in ("supervised", "SimMIM"):
        key = f"{label} earlier - last"
        layout += [[f"{label} chosen block (selection half)", *(f"{t} {label} chosen block" for t in tasks)],
                   [f"{label} chosen block, all items", *(f"{t} {label} chosen {metrics[t]}" for t in tasks)],
                   [f"{label} last block, all items", *(f"{t} {label} last {metrics[t]}" for t in tasks)],
                   *_comparison_rows(f"{label} chosen - last", key, tasks),
                   [f"{label} part", *(f"{t} {label} part" for t in tasks)]]
    layout += _probe_tail(tasks)
    verdict = majority(outcomes, numbers, gate(claims, bars, bar_models))
    return _row("F4-probe", STATEMENTS["F4-probe"], verdict, numbers, rule, _probe_columns(tasks, simmim), layout)


def _probe_tail(tasks: Sequence[str]) -> list[list[str | None]]:
    return [["outcome", *(f"{t} outcome" for t in tasks)], ["tasks", "tasks"], ["tasks judged", "tasks judged"],
            ["tasks holding", "tasks holding"], ["tasks failing", "tasks failing"],
            ["tasks within errors", "tasks within errors"]]


def _f6_probe_task(t: str, simmim: Mapping[str, Any], supervised: Mapping[str, Any], numbers: dict[str, Any]) -> str:
    """One task of F6-probe: SimMIM's against supervised's block at the best (each chosen on the selection half,
    compared on the judgement half) and at the last block (all items)."""
    sim, sup = simmim["tasks"][t], supervised["tasks"][t]
    metric, higher = sup["primary"], sup["higher_is_better"]
    parts, keys = [], []
    for where in ("best", "last"):
        a, b = (chosen_row(sim, sim["rows"]), chosen_row(sup, sup["rows"])) if where == "best" else \
            (sim["rows"][-1], sup["rows"][-1])
        numbers[f"{t} SimMIM {where} {metric}"], numbers[f"{t} supervised {where} {metric}"] = a[metric], b[metric]
        numbers[f"{t} SimMIM {where} block"], numbers[f"{t} supervised {where} block"] = a["block"], b["block"]
        chosen = where == "best" and min(len(sim["rows"]), len(sup["rows"])) > 1
        difference = compare(probe_items(sim, a), probe_items(sup, b), chosen)
        keys.append(f"{t} SimMIM - supervised at {where}")
        put(numbers, keys[-1], difference)
        parts.append(outcome(difference, higher))
    return combine_parts(parts, keys, numbers, t)


def f6_probe(simmim: Mapping[str, Any], supervised: Mapping[str, Any], bars: Mapping, claims: bool, *,
             bar_models: Sequence[str] = BOTH_BARS) -> dict:
    """F6 from frozen probes (``probe.json`` of SimMIM and supervised, same items; :func:`_f6_probe_task`): per
    geometric task, SimMIM's best block against supervised's best block (each chosen on the selection half,
    compared on the judgement half) and SimMIM's last block against supervised's last (all items), by the paired
    SE. A task holds when SimMIM is better at both, fails when supervised is better at either. Verdict by
    :func:`mimlens.findings.judging.majority`."""
    tasks, numbers, outcomes = _probe_outcomes(_f6_probe_task, simmim, supervised)
    rule = (f"per geometric task: SimMIM's best block against supervised's best block ({SELECTION}), and SimMIM's "
            f"last block against supervised's last block (all items), each by the {PAIRED}; the task holds when "
            "SimMIM is better at both, fails when supervised is better at either, is within errors otherwise; "
            f"{JUDGED_RULE}; {PROBE_GATE}")
    layout = []
    for where in ("best", "last"):
        key = f"SimMIM - supervised at {where}"
        picked = " (selection half)" if where == "best" else ""
        layout += [[f"SimMIM {where} block{picked}", *(f"{t} SimMIM {where} block" for t in tasks)],
                   [f"supervised {where} block{picked}", *(f"{t} supervised {where} block" for t in tasks)],
                   [f"SimMIM {where}, all items", *(f"{t} SimMIM {where} {simmim['tasks'][t]['primary']}"
                                                   for t in tasks)],
                   [f"supervised {where}, all items", *(f"{t} supervised {where} {simmim['tasks'][t]['primary']}"
                                                       for t in tasks)],
                   *_comparison_rows(key, key, tasks)]
    layout += _probe_tail(tasks)
    verdict = majority(outcomes, numbers, gate(claims, bars, bar_models))
    return _row("F6-probe", STATEMENTS["F6-probe"], verdict, numbers, rule, _probe_columns(tasks, simmim), layout)
