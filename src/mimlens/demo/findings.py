"""Verdicts on the paper's findings F1–F6, computed from the demo's JSON documents.

Pure functions: each takes the parsed JSON of the runs it needs (``attention.json``, ``cka.json``,
``avgdist.json``, ``metrics.json``, ``drop_sweep.json``, ``bars.json``) and returns one findings row
``{"id", "statement", "verdict", "numbers", "rule", "table"}`` — the form ``mimlens report`` renders.
``numbers`` holds every value the verdict used; ``table`` lays them out for reading, one row per quantity
and one column per model or task: ``{"columns": [...], "rows": [[label, key of numbers or null, ...]]}``.
A verdict is "reproduced" or "not reproduced" only when the preset claims findings and the training bars
the finding depends on passed; otherwise it is "inconclusive" and ``numbers["reason"]`` says why. The
margins below are part of the rules and are printed with them. Transfer comparisons (F4, F6) of two runs
evaluated on the same items use the paired standard error of their per-item values (``items`` of
``metrics.json`` or ``drop_sweep.json``; a paired bootstrap for AP, :mod:`mimlens.tasks.uncertainty`): better
means better by more than 2 SE; the fixed margins serve runs without per-item values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

LOCAL_MARGIN = 0.10  # F1: a layer is local when its mean distance is >= 10 % below the random-init model's
KL_VANISH = 0.5  # F3: head KL "vanishes" when the last 3 layers' mean is below half the earlier layers' mean
CKA_MARGIN = 0.05  # F5: SimMIM's mean off-diagonal CKA must exceed supervised's by this much
DROP_TOLERANCE = {"rmse": 0.05, "ap": 0.02}  # F4: relative (rmse) / absolute (ap) slack for "not worse"
WIN_MARGIN = {"rmse": 0.02, "ap": 0.01, "suc": 0.01, "top1": 0.01}  # F6: relative (rmse) / absolute margins
RELATIVE = {"rmse"}  # metrics whose margin is relative to the supervised value
QUICK_REASON = "quick preset: models not trained enough"
UNTRAINED_REASON = "no fine-tuning beats its trivial baseline by 2 SE"
TRAINED_RULE = "trained = better than its best trivial baseline by more than 2 paired SE"
GEOMETRIC = ("depth", "pose", "track")  # the probe findings' tasks

STATEMENTS = {
    "F1": "MIM brings locality to every layer; supervised models attend locally in low layers, globally in high ones",
    "F2": "Masking with a moderate AvgDist (about 10-20 px at 224 px) fine-tunes best and attends most locally",
    "F3": "MIM keeps heads diverse in all layers; supervised head diversity almost vanishes in the last 3 layers",
    "F4": "Dropping the last layers of a supervised model does not hurt geometric tasks (depth, pose)",
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


def _row(fid: str, verdict: str, numbers: dict[str, Any], rule: str, columns: Sequence[str],
         rows: Sequence[Sequence[str | None]]) -> dict[str, Any]:
    """A findings row; ``rows`` are ``[label, key, ...]`` over ``columns``, keys missing from ``numbers`` dropped."""
    layout = [[label, *(k if k in numbers else None for k in keys)] for label, *keys in rows
              if any(k in numbers for k in keys)]
    return {"id": fid, "statement": STATEMENTS[fid], "verdict": verdict, "numbers": numbers, "rule": rule,
            "table": {"columns": list(columns), "rows": layout}}


def _gate(claims: bool, bars: Mapping[str, Any], needed: Sequence[str]) -> str | None:
    """Why no verdict may be claimed, or None: the preset claims nothing, or a needed training bar failed."""
    if not claims:
        return QUICK_REASON
    failed = [name for name in needed if not bars.get(name, {}).get("passed")]
    if failed:
        return "training bar not passed: " + ", ".join(failed)
    return None


def _decide(reason: str | None, holds: bool, numbers: dict[str, Any]) -> str:
    if reason is not None:
        numbers["reason"] = reason
        return "inconclusive"
    return "reproduced" if holds else "not reproduced"


def f1_locality(simmim: Mapping, supervised: Mapping, random_init: Mapping, bars: Mapping, claims: bool) -> dict:
    """F1 from the three models' ``attention.json``. Reproduced when SimMIM is local (mean distance >=
    LOCAL_MARGIN below the random-init model's) in more than half of the layers **and** supervised's upper half
    of layers is closer to the random-init (uniform) distances than SimMIM's (mean relative gap)."""
    sim, sup, ref = (layer_means(d, "distance_px") for d in (simmim, supervised, random_init))
    local = sum(s <= (1 - LOCAL_MARGIN) * r for s, r in zip(sim, ref, strict=True))
    upper = range(len(ref) // 2, len(ref))
    sim_gap = _mean([(ref[i] - sim[i]) / ref[i] for i in upper])
    sup_gap = _mean([(ref[i] - sup[i]) / ref[i] for i in upper])
    numbers = {"layers": len(ref), "SimMIM local layers": local,
               "SimMIM mean distance px": _mean(sim), "supervised mean distance px": _mean(sup),
               "random-init mean distance px": _mean(ref),
               "SimMIM upper-half gap to uniform": sim_gap, "supervised upper-half gap to uniform": sup_gap}
    holds = local > len(ref) / 2 and sup_gap < sim_gap
    rule = (f"reproduced if SimMIM's mean distance is >= {LOCAL_MARGIN:.0%} below the random-init model's in more "
            "than half of the layers and supervised's upper-half layers are closer to uniform (smaller mean relative "
            "gap) than SimMIM's; needs both training bars")
    verdict = _decide(_gate(claims, bars, ("simmim", "supervised")), holds, numbers)
    return _row("F1", verdict, numbers, rule, ("SimMIM", "supervised", "random init"), [
        ["mean attention distance (px)", "SimMIM mean distance px", "supervised mean distance px",
         "random-init mean distance px"],
        ["upper-half gap to uniform", "SimMIM upper-half gap to uniform", "supervised upper-half gap to uniform",
         None],
        ["local layers", "SimMIM local layers", None, None],
        ["layers", "layers"]])


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
    return _row("F2", "inconclusive", numbers, rule, (), [
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


def f2_masking(avgdist: Mapping[str, Any], settings: Sequence[tuple[str, int, float]],
               finetunes: Mapping[str, Mapping[str, Mapping]], attention: Mapping[str, Mapping],
               probes: Mapping[str, Mapping], bars: Mapping[str, Mapping], claims: bool) -> dict:
    """F2 from a masking study: ``settings`` (name, mask patch, ratio), each setting's AvgDist (``avgdist.json``,
    which also gives the moderate band), fine-tunings (``finetunes[task][name]``: ``metrics.json``), attention
    (``attention.json``), frozen probes (``probe.json``) and SimMIM bar (``bars[name]``).

    Per fine-tuning task, the best setting is compared with the others by paired SE of per-item differences
    (paired bootstrap for AP). The task *holds* when the best setting lies in the moderate band and beats both
    extremes (the lowest and the highest AvgDist) by more than 2 SE; it *fails* when the best lies outside the
    band and beats every setting in the band by more than 2 SE; otherwise it is *within errors*. A task whose
    best fine-tuning is not trained (better than its trivial baseline by 2 SE) is not judged. The verdict is the
    majority over judged tasks (:func:`_majority`). Attention distance, bars and probes are reported, not judged.
    """
    band = avgdist["moderate_band_px"]
    dist = {name: avg_dist_of(avgdist, patch, ratio) for name, patch, ratio in settings}
    order = sorted(dist, key=dist.get)
    moderate = [n for n in order if band[0] <= dist[n] <= band[1]]
    extremes = {order[0], order[-1]}
    numbers: dict[str, Any] = {"moderate band low px": band[0], "moderate band high px": band[1],
                               "image px": avgdist["img_size"]}
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
    outcomes: dict[str, str] = {}
    untrained = []
    for task, runs in finetunes.items():
        metric, higher, _ = _primary(runs[order[0]])
        values = {n: _primary(runs[n])[2] for n in order}
        for n in order:
            numbers[f"{task} {metric} {n}"] = values[n]
            if runs[n]["primary"].get("se") is not None:
                numbers[f"{task} {metric} {n} SE"] = runs[n]["primary"]["se"]
            if runs[n].get("trained") is not None:
                numbers[f"{task} {n} trained"] = bool(runs[n]["trained"])
        best = max(order, key=lambda n: values[n] if higher else -values[n])
        numbers[f"{task} best setting"] = best
        against = {n: paired(runs[best].get("items"), runs[n].get("items")) for n in order if n != best}
        for n, difference in against.items():
            _put(numbers, f"{task} best - {n}", difference)
        if runs[best].get("trained") is False:
            untrained.append(task)
            continue
        wins = {n for n, d in against.items() if d is not None and better(d, higher)}  # settings best beats
        if best in moderate and best not in extremes:
            outcomes[task] = "holds" if extremes <= wins else "within errors"
        else:
            outcomes[task] = "fails" if moderate and set(moderate) - {best} <= wins else "within errors"
        numbers[f"{task} outcome"] = outcomes[task]
    reason = None if claims else QUICK_REASON
    if reason is None and not moderate:
        reason = "no masking setting lies in the moderate band"
    elif reason is None and finetunes and len(untrained) == len(finetunes):
        reason = f"{UNTRAINED_REASON}: the best setting on {', '.join(untrained)}"
    rule = ("per fine-tuning task: the best setting against each other one by 2 paired SE of per-item differences "
            "(paired bootstrap, 1000 resamples, for AP); a task holds when the best setting lies in the moderate "
            "band and beats both extremes (lowest and highest AvgDist), fails when the best lies outside the band "
            "and beats every setting in it, and is within errors otherwise; reproduced when more than half of the "
            "judged tasks hold, inconclusive when the tasks within errors could make a majority, not reproduced "
            f"otherwise; a task is judged only when its best fine-tuning is trained ({TRAINED_RULE})")
    verdict = _majority(outcomes, numbers, reason) if reason is None else _decide(reason, False, numbers)
    rows: list[list[str | None]] = [["AvgDist (px)", *(f"{n} AvgDist px" for n in order)],
                                    ["in the moderate band", *(f"{n} in band" for n in order)]]
    for label in ("masked L1", "nearest fill L1", "mean fill L1", "mean attention px"):
        rows.append([label.replace(" px", " (px)"), *(f"{n} {label}" for n in order)])
    for task, runs in finetunes.items():
        metric = _primary(runs[order[0]])[0]
        rows += [[f"{task} {metric}", *(f"{task} {metric} {n}" for n in order)],
                 [f"{task} {metric} SE", *(f"{task} {metric} {n} SE" for n in order)],
                 [f"{task} trained", *(f"{task} {n} trained" for n in order)],
                 [f"{task} best - this (paired)", *(f"{task} best - {n}" for n in order)],
                 [f"{task} best - this SE", *(f"{task} best - {n} SE" for n in order)],
                 [f"{task} best setting", f"{task} best setting"], [f"{task} outcome", f"{task} outcome"]]
    for task in sorted({t for doc in probes.values() for t in doc.get("tasks", {})}):
        rows += [[f"frozen probe {task}, best block", *(f"probe {task} {n}" for n in order)],
                 [f"frozen probe {task}: which block", *(f"probe {task} {n} block" for n in order)]]
    rows += [["moderate band from (px)", "moderate band low px"], ["moderate band to (px)", "moderate band high px"],
             ["tasks judged", "tasks"], ["tasks holding", "tasks holding"], ["within errors", "tasks within errors"]]
    return _row("F2", verdict, numbers, rule, order, rows)


def f2_from_study(study: Mapping[str, Any], folder: str) -> dict:
    """The demo's F2 row taken from the masking study in ``OUT/<folder>`` (the F2 row of its ``findings.json``),
    naming the study's report."""
    row = {k: v for k, v in study.items() if k != "figures"}
    row["numbers"] = {**row["numbers"], "masking study": f"{folder}/report.html"}
    row["table"] = {**row["table"], "rows": [*row["table"]["rows"], ["masking study", "masking study"]]}
    return row


def f3_head_diversity(simmim: Mapping, supervised: Mapping, bars: Mapping, claims: bool) -> dict:
    """F3 from head KL: for each model, the mean layer KL of the last 3 layers over that of the earlier ones.
    Reproduced when supervised's ratio is below KL_VANISH, SimMIM's is not, and SimMIM's last-3 KL exceeds
    supervised's."""
    sim, sup = layer_head_kl(simmim), layer_head_kl(supervised)
    rule = (f"ratio = mean head KL of the last 3 layers / of the earlier layers; reproduced if supervised's ratio "
            f"< {KL_VANISH:g} <= SimMIM's and SimMIM's last-3 KL > supervised's; needs both training bars")
    numbers: dict[str, Any] = {"layers": len(sim)}
    layout = [["head KL, last 3 layers", "SimMIM KL last 3", "supervised KL last 3"],
              ["head KL, earlier layers", "SimMIM KL earlier", "supervised KL earlier"],
              ["ratio last 3 / earlier", "SimMIM ratio", "supervised ratio"], ["layers", "layers"]]
    reason = _gate(claims, bars, ("simmim", "supervised"))
    if len(sim) < 4:
        numbers["reason"] = reason or "needs at least 4 layers (the last 3 and an earlier one)"
        return _row("F3", "inconclusive", numbers, rule, ("SimMIM", "supervised"), layout)
    sim_last, sim_early, sup_last, sup_early = _mean(sim[-3:]), _mean(sim[:-3]), _mean(sup[-3:]), _mean(sup[:-3])
    sim_ratio = sim_last / sim_early if sim_early > 0 else math.nan
    sup_ratio = sup_last / sup_early if sup_early > 0 else math.nan
    numbers.update({"SimMIM KL last 3": sim_last, "SimMIM KL earlier": sim_early, "SimMIM ratio": sim_ratio,
                    "supervised KL last 3": sup_last, "supervised KL earlier": sup_early,
                    "supervised ratio": sup_ratio})
    holds = sup_ratio < KL_VANISH <= sim_ratio and sim_last > sup_last
    return _row("F3", _decide(reason, holds, numbers), numbers, rule, ("SimMIM", "supervised"), layout)


def beats(name: str, higher: bool, value: float, baseline: float, num_images: int | None = None) -> bool:
    """Whether ``value`` of metric ``name`` is better than ``baseline`` by more than WIN_MARGIN — for top-1
    evaluated on ``num_images`` images each, by more than the larger of WIN_MARGIN and two standard errors of
    the difference of the two accuracies (independent binomial proportions)."""
    margin = WIN_MARGIN.get(name, 0.0) * (abs(baseline) if name in RELATIVE else 1.0)
    if name == "top1" and num_images:
        margin = max(margin, 2.0 * math.sqrt((value * (1 - value) + baseline * (1 - baseline)) / num_images))
    return (value - baseline > margin) if higher else (baseline - value > margin)


def evaluation_images(doc: Mapping[str, Any]) -> int | None:
    """The number of evaluation images of a classification ``metrics.json`` (None when it does not say)."""
    return (doc.get("variant") or {}).get("num_images")


def paired(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Paired ``{"diff", "se", "n"}`` of runs' ``items`` sections a - b, or None when either has none."""
    if not a or not b:
        return None
    from mimlens.tasks.uncertainty import compare_runs

    return compare_runs(a, b)


def better(difference: Mapping[str, float], higher: bool) -> bool:
    """Whether a paired difference a - b says a is better by more than 2 SE."""
    from mimlens.tasks.uncertainty import improves

    return improves(dict(difference), higher)


def _put(numbers: dict[str, Any], key: str, difference: Mapping[str, float] | None) -> None:
    """``numbers[key]`` = the paired difference and ``numbers[key + " SE"]`` its SE (nothing when None)."""
    if difference is not None:
        numbers[key], numbers[f"{key} SE"] = difference["diff"], difference["se"]


def _primary(doc: Mapping[str, Any]) -> tuple[str, bool, float]:
    primary = doc["primary"]
    return primary["name"], bool(primary["higher_is_better"]), float(primary["value"])


def f4_drop_last(sweeps: Mapping[str, Mapping[str, Any]], random_init: Mapping[str, Mapping], bars: Mapping,
                 claims: bool) -> dict:
    """F4 from the supervised model's ``drop_sweep.json`` per task: the metric at K = 1 (one block dropped) is
    not worse than at K = 0 by more than 2 paired SE (DROP_TOLERANCE without per-item values), for every judged
    task. A task is judged only where the full model (K = 0) beats the random-init model's fine-tuning
    (``random_init``: ``metrics.json`` per task) by more than 2 paired SE (the WIN_MARGIN without per-item
    values) — what the pre-training did not help with cannot show what dropping its blocks costs, as F6 counts
    only tasks where pre-training made a difference — and where its K = 0 row is not ``trained: false`` (no
    better than its best trivial baseline by 2 SE; rows without the field count as trained). When no task is
    judged the verdict is inconclusive."""
    numbers: dict[str, Any] = {}
    holds = bool(sweeps)
    unlearned, untrained = [], []
    for task, sweep in sweeps.items():
        metric, higher = sweep["metric"], sweep["higher_is_better"]
        values = {int(r["drop_last"]): float(r[metric]) for r in sweep["rows"]}
        for k in sorted(values):
            numbers[f"{task} {metric} K={k}"] = values[k]
        numbers[f"{task} {metric} random init"] = baseline = _primary(random_init[task])[2]
        trained = next((r.get("trained") for r in sweep["rows"] if int(r["drop_last"]) == 0), None)
        if trained is not None:
            numbers[f"{task} K=0 trained"] = bool(trained)
        if 0 not in values or 1 not in values:
            if trained is False:
                untrained.append(task)
            holds = holds and trained is False
            continue
        items = sweep.get("items") or {}
        learned = paired(items.get("0"), random_init[task].get("items"))
        dropped = paired(items.get("1"), items.get("0"))
        _put(numbers, f"{task} K=0 - random init", learned)
        _put(numbers, f"{task} K=1 - K=0", dropped)
        if trained is False:  # not judged
            untrained.append(task)
            continue
        if not (better(learned, higher) if learned is not None else beats(metric, higher, values[0], baseline)):
            unlearned.append(task)  # not judged
            continue
        if dropped is not None:
            worse, slack = (-dropped["diff"] if higher else dropped["diff"]), 2.0 * dropped["se"]
        else:
            slack = DROP_TOLERANCE.get(metric, 0.0) * (abs(values[0]) if metric in RELATIVE else 1.0)
            worse = values[0] - values[1] if higher else values[1] - values[0]
        holds = holds and worse <= slack
    tolerances = ", ".join(f"{m} {t:g}{' relative' if m in RELATIVE else ''}" for m, t in DROP_TOLERANCE.items())
    rule = ("reproduced if for every judged task the metric with the last block dropped (K=1) is not worse than "
            "the full model (K=0) by more than 2 paired SE of the per-item differences (paired bootstrap for AP; "
            f"without per-item values by more than {tolerances}); needs the supervised bar; a task is judged only "
            "when the full model beats the random-init model's fine-tuning by more than 2 paired SE and its "
            f"fine-tuning is trained ({TRAINED_RULE})")
    numbers["tasks judged"] = len(sweeps) - len(untrained) - len(unlearned)
    reason = _gate(claims, bars, ("supervised",))
    if reason is None and sweeps and len(untrained) == len(sweeps):
        reason = f"{UNTRAINED_REASON}: supervised K=0 on {', '.join(untrained)}"
    elif reason is None and sweeps and len(untrained) + len(unlearned) == len(sweeps):
        reason = ("no task judged: the supervised fine-tuning does not beat the random-init one on "
                  f"{', '.join(unlearned)}" + (f"; not trained on {', '.join(untrained)}" if untrained else ""))
    columns = [f"{task} {sweep['metric']}" for task, sweep in sweeps.items()]
    ks = sorted({int(r["drop_last"]) for sweep in sweeps.values() for r in sweep["rows"]})
    dropped = {0: "full model", 1: "last block dropped"}
    layout = [[dropped.get(k, f"last {k} blocks dropped"), *(f"{c} K={k}" for c in columns)] for k in ks]
    layout.append(["random-init fine-tuning", *(f"{c} random init" for c in columns)])
    for label, key in (("K=1 - K=0 (paired)", "K=1 - K=0"), ("K=0 - random init (paired)", "K=0 - random init")):
        layout.append([label, *(f"{t} {key}" for t in sweeps)])
        layout.append([f"{label} SE", *(f"{t} {key} SE" for t in sweeps)])
    layout.append(["full model trained", *(f"{t} K=0 trained" for t in sweeps)])
    layout.append(["tasks judged", "tasks judged"])
    return _row("F4", _decide(reason, holds, numbers), numbers, rule, columns, layout)


def f5_cka(simmim: Mapping, supervised: Mapping, bars: Mapping, claims: bool) -> dict:
    """F5 from within-model ``cka.json``: SimMIM's mean off-diagonal CKA exceeds supervised's by CKA_MARGIN."""
    sim, sup = mean_off_diagonal(simmim), mean_off_diagonal(supervised)
    numbers = {"SimMIM mean CKA between layers": sim, "supervised mean CKA between layers": sup,
               "estimator": simmim.get("estimator")}
    rule = f"reproduced if SimMIM's mean off-diagonal CKA - supervised's >= {CKA_MARGIN:g}; needs both training bars"
    verdict = _decide(_gate(claims, bars, ("simmim", "supervised")), sim - sup >= CKA_MARGIN, numbers)
    return _row("F5", verdict, numbers, rule, ("SimMIM", "supervised"), [
        ["mean CKA between layers", "SimMIM mean CKA between layers", "supervised mean CKA between layers"],
        ["estimator", "estimator"]])


def f6_transfer(simmim: Mapping[str, Mapping], supervised: Mapping[str, Mapping],
                random_init: Mapping[str, Mapping], bars: Mapping, claims: bool) -> dict:
    """F6 from ``metrics.json`` per task (SimMIM's, supervised's and the random-init model's fine-tunings, all
    evaluated on the same items): a task counts when SimMIM or supervised beats the random-init model by more
    than 2 paired SE of the per-item differences (pre-training made a difference); SimMIM wins a counted task
    when better than supervised by more than 2 paired SE. Trained gate: where both runs' ``metrics.json`` say
    whether they are ``trained``, a task counts only when both are. Runs without per-item values fall back to the
    margins of :func:`beats` (top-1: binomial SE on SimMIM's evaluation-image count). Reproduced when SimMIM wins more
    than half of the counted tasks, not reproduced when fewer, inconclusive (mixed) at exactly half or when no
    task counts."""
    numbers: dict[str, Any] = {}
    wins = counted = 0
    gated, untrained = 0, []
    for task in simmim:
        name, higher, a = _primary(simmim[task])
        b, r = _primary(supervised[task])[2], _primary(random_init[task])[2]
        numbers[f"{task} {name} SimMIM"] = a
        numbers[f"{task} {name} supervised"] = b
        numbers[f"{task} {name} random init"] = r
        docs = {"SimMIM": simmim[task], "supervised": supervised[task], "random init": random_init[task]}
        pairs = {(x, y): paired(docs[x].get("items"), docs[y].get("items"))
                 for x, y in (("SimMIM", "random init"), ("supervised", "random init"), ("SimMIM", "supervised"))}
        if all(d is not None for d in pairs.values()):
            for (x, y), d in pairs.items():
                _put(numbers, f"{task} {x} - {y}", d)
            sim_r, sup_r, sim_sup = (better(d, higher) for d in pairs.values())
        else:
            n = evaluation_images(simmim[task]) if name == "top1" else None
            if n is not None:
                numbers[f"{task} evaluation images"] = n
            sim_r, sup_r, sim_sup = (beats(name, higher, x, y, n) for x, y in ((a, r), (b, r), (a, b)))
        flags = {label: docs[label].get("trained") for label in ("SimMIM", "supervised")}
        for label, flag in flags.items():
            if flag is not None:
                numbers[f"{task} {label} trained"] = bool(flag)
        if None not in flags.values():
            gated += 1
            if not all(flags.values()):
                untrained.append(f"{task} ({', '.join(k for k, v in flags.items() if not v)})")
                continue
        if sim_r or sup_r:
            counted += 1
            wins += sim_sup
    numbers["tasks counted"] = counted
    numbers["SimMIM wins"] = wins
    margins = ", ".join(f"{m} {t:g}{' relative' if m in RELATIVE else ''}" for m, t in WIN_MARGIN.items())
    rule = ("better = better by more than 2 paired SE of the per-item differences on the shared evaluation items "
            "(paired bootstrap, 1000 resamples, for AP); a task counts when SimMIM or supervised is better than the "
            "random-init fine-tuning; SimMIM wins a counted task when better than supervised; reproduced when it "
            "wins more than half of the counted tasks, not reproduced when fewer, inconclusive at exactly half; "
            f"needs both training bars (runs without per-item values: margins {margins}, for top-1 at least 2 "
            f"binomial SE); a task counts only when SimMIM's and supervised's fine-tunings are both trained "
            f"({TRAINED_RULE})")
    reason = _gate(claims, bars, ("simmim", "supervised"))
    if reason is None and gated and len(untrained) == len(simmim):
        reason = f"{UNTRAINED_REASON}: {'; '.join(untrained)}"
    elif reason is None and counted == 0:
        reason = "no task's fine-tuning beats the random-init model's: pre-training made no measurable difference"
    elif reason is None and 2 * wins == counted:
        reason = "mixed: SimMIM wins exactly half of the counted tasks"
    layout = []
    for task in simmim:
        name = _primary(simmim[task])[0]
        layout.append([f"{task} {name}", *(f"{task} {name} {m}" for m in ("SimMIM", "supervised", "random init"))])
        layout.append([f"{task} evaluation images", f"{task} evaluation images"])
        layout.append([f"{task} paired diff vs random init", f"{task} SimMIM - random init",
                       f"{task} supervised - random init"])
        layout.append([f"{task} its SE", f"{task} SimMIM - random init SE", f"{task} supervised - random init SE"])
        layout.append([f"{task} SimMIM - supervised (paired)", f"{task} SimMIM - supervised"])
        layout.append([f"{task} SimMIM - supervised SE", f"{task} SimMIM - supervised SE"])
        layout.append([f"{task} trained", f"{task} SimMIM trained", f"{task} supervised trained"])
    layout += [["tasks counted", "tasks counted"], ["SimMIM wins", "SimMIM wins"]]
    return _row("F6", _decide(reason, 2 * wins > counted, numbers), numbers, rule,
                ("SimMIM", "supervised", "random init"), layout)


# ---------------------------------------------------------------------------------------------- frozen probes


def probe_items(task: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``items`` section (``ids``, ``statistic``, ``values``) of one block's row of a ``probe.json`` task."""
    return {**task["items"], "values": row["values"]}


def best_row(task: Mapping[str, Any]) -> Mapping[str, Any]:
    """The row of a ``probe.json`` task with the best primary metric (the earliest block on ties)."""
    sign = 1.0 if task["higher_is_better"] else -1.0
    return max(task["rows"], key=lambda row: (sign * row[task["primary"]], -row["block"]))


def _probe_tasks(simmim: Mapping[str, Any], supervised: Mapping[str, Any]) -> list[str]:
    return [t for t in GEOMETRIC if t in simmim["tasks"] and t in supervised["tasks"]]


def _majority(outcomes: Mapping[str, str], numbers: dict[str, Any], reason: str | None) -> str:
    """Verdict from per-task outcomes "holds", "within errors", "fails": reproduced when more than half hold;
    inconclusive when the tasks within errors could make a majority; otherwise not reproduced."""
    held = sum(o == "holds" for o in outcomes.values())
    within = sum(o == "within errors" for o in outcomes.values())
    numbers.update({"tasks": len(outcomes), "tasks holding": held, "tasks within errors": within})
    if reason is None and not outcomes:
        reason = "no geometric task was probed in both models"
    elif reason is None and 2 * held <= len(outcomes) < 2 * (held + within):
        reason = "within errors: " + ", ".join(t for t, o in outcomes.items() if o == "within errors")
    return _decide(reason, 2 * held > len(outcomes), numbers)


def _probe_columns(tasks: Sequence[str], simmim: Mapping[str, Any]) -> list[str]:
    return [f"{t} {simmim['tasks'][t]['primary']}" for t in tasks]


PROBE_GATE = "needs both training bars; tasks: depth RMSE, pose AP, tracking SUC"
PAIRED = "paired SE of per-item differences on the shared evaluation items (paired bootstrap, 1000 resamples, for AP)"


def f4_probe(simmim: Mapping[str, Any], supervised: Mapping[str, Any], bars: Mapping, claims: bool) -> dict:
    """F4 from frozen probes (``probe.json`` of SimMIM and supervised, same items): per geometric task, the
    supervised model peaks before its last block when its best block's metric beats its last block's by more
    than 2 paired SE, and SimMIM does not fall when its last block is not worse than its best by more than 2
    paired SE. A task holds when both do; fails when SimMIM falls or supervised's best block is its last; is
    within errors otherwise. Verdict by :func:`_majority`."""
    tasks = _probe_tasks(simmim, supervised)
    numbers: dict[str, Any] = {}
    outcomes = {}
    for t in tasks:
        metric, higher = supervised["tasks"][t]["primary"], supervised["tasks"][t]["higher_is_better"]
        earlier, falls = {}, {}  # best block before the last; best better than last by > 2 SE
        for label, doc in (("supervised", supervised), ("SimMIM", simmim)):
            task = doc["tasks"][t]
            best, last = best_row(task), task["rows"][-1]
            numbers[f"{t} {label} best block"] = best["block"]
            numbers[f"{t} {label} best {metric}"] = best[metric]
            numbers[f"{t} {label} last {metric}"] = last[metric]
            drop = paired(probe_items(task, best), probe_items(task, last))
            _put(numbers, f"{t} {label} best - last", drop)
            earlier[label], falls[label] = best["block"] != last["block"], better(drop, higher)
        if falls["SimMIM"] or not earlier["supervised"]:
            outcomes[t] = "fails"
        else:
            outcomes[t] = "holds" if falls["supervised"] else "within errors"
        numbers[f"{t} outcome"] = outcomes[t]
    rule = ("per geometric task: supervised peaks before its last block when its best block beats its last by more "
            "than 2 SE; SimMIM does not fall when its last block is not worse than its best by more than 2 SE; the "
            "task holds when both, fails when SimMIM falls or supervised's best block is its last, else is within "
            f"errors; SE = {PAIRED}; reproduced when more than half of the tasks hold, inconclusive when the tasks "
            f"within errors could make a majority, not reproduced otherwise; {PROBE_GATE}")
    metrics = {t: supervised["tasks"][t]["primary"] for t in tasks}
    layout = []
    for label in ("supervised", "SimMIM"):
        layout += [[f"{label} best block", *(f"{t} {label} best block" for t in tasks)],
                   [f"{label} best", *(f"{t} {label} best {metrics[t]}" for t in tasks)],
                   [f"{label} last block", *(f"{t} {label} last {metrics[t]}" for t in tasks)],
                   [f"{label} best - last (paired)", *(f"{t} {label} best - last" for t in tasks)],
                   [f"{label} best - last SE", *(f"{t} {label} best - last SE" for t in tasks)]]
    layout += [["outcome", *(f"{t} outcome" for t in tasks)], ["tasks", "tasks"], ["tasks holding", "tasks holding"],
               ["tasks within errors", "tasks within errors"]]
    verdict = _majority(outcomes, numbers, _gate(claims, bars, ("simmim", "supervised")))
    return _row("F4-probe", verdict, numbers, rule, _probe_columns(tasks, simmim), layout)


def f6_probe(simmim: Mapping[str, Any], supervised: Mapping[str, Any], bars: Mapping, claims: bool) -> dict:
    """F6 from frozen probes (``probe.json`` of SimMIM and supervised, same items): per geometric task, SimMIM's
    best block against supervised's best block and SimMIM's last block against supervised's last, each by the
    paired SE. A task holds when SimMIM is better by more than 2 SE at both, fails when supervised is better by
    more than 2 SE at either, is within errors otherwise. Verdict by :func:`_majority`."""
    tasks = _probe_tasks(simmim, supervised)
    numbers: dict[str, Any] = {}
    outcomes = {}
    for t in tasks:
        sim, sup = simmim["tasks"][t], supervised["tasks"][t]
        metric, higher = sup["primary"], sup["higher_is_better"]
        wins = []
        for where, pick in (("best", best_row), ("last", lambda task: task["rows"][-1])):
            a, b = pick(sim), pick(sup)
            numbers[f"{t} SimMIM {where} {metric}"] = a[metric]
            numbers[f"{t} supervised {where} {metric}"] = b[metric]
            diff = paired(probe_items(sim, a), probe_items(sup, b))
            _put(numbers, f"{t} SimMIM - supervised at {where}", diff)
            wins.append((better(diff, higher), better({"diff": -diff["diff"], "se": diff["se"]}, higher)))
        if any(lost for _, lost in wins):
            outcomes[t] = "fails"
        else:
            outcomes[t] = "holds" if all(won for won, _ in wins) else "within errors"
        numbers[f"{t} outcome"] = outcomes[t]
    rule = ("per geometric task: SimMIM's best block against supervised's best block, and last against last; the "
            "task holds when SimMIM is better by more than 2 SE at both, fails when supervised is better by more "
            f"than 2 SE at either, else is within errors; SE = {PAIRED}; reproduced when more than half of the "
            "tasks hold, inconclusive when the tasks within errors could make a majority, not reproduced "
            f"otherwise; {PROBE_GATE}")
    layout = []
    for where in ("best", "last"):
        layout += [[f"SimMIM {where}", *(f"{t} SimMIM {where} {simmim['tasks'][t]['primary']}" for t in tasks)],
                   [f"supervised {where}", *(f"{t} supervised {where} {simmim['tasks'][t]['primary']}"
                                             for t in tasks)],
                   [f"SimMIM - supervised at {where} (paired)", *(f"{t} SimMIM - supervised at {where}"
                                                                   for t in tasks)],
                   [f"SimMIM - supervised at {where} SE", *(f"{t} SimMIM - supervised at {where} SE"
                                                            for t in tasks)]]
    layout += [["outcome", *(f"{t} outcome" for t in tasks)], ["tasks", "tasks"], ["tasks holding", "tasks holding"],
               ["tasks within errors", "tasks within errors"]]
    verdict = _majority(outcomes, numbers, _gate(claims, bars, ("simmim", "supervised")))
    return _row("F6-probe", verdict, numbers, rule, _probe_columns(tasks, simmim), layout)
