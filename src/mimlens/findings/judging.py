"""How the findings rules turn comparisons into verdicts (rules version 3; the rules are in :mod:`.rules`).

A comparison of two runs (or two blocks) evaluated on the same items is a paired difference a - b with its SE
(:func:`mimlens.tasks.uncertainty.compare_runs`: per-item SE for means, paired bootstrap for AP). Its outcome is
"holds", "fails" or "within errors" by the same ``Z`` SEs in both directions; a difference within errors is
printed with the smallest difference the test detects with 80 % probability. Where a rule chooses among several
candidates (blocks, K, settings) it chooses on the selection half of the items and compares on the judgement half
(:data:`mimlens.tasks.uncertainty.SPLIT_RULE`); a single candidate is no choice, and all items judge it.

A row's verdict is one of :data:`VERDICTS`. A row over several tasks needs more than half of them judged; then it
is reproduced when more than half of the judged tasks hold, not reproduced when more than half fail, and within
errors otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

VERDICTS = ("reproduced", "not reproduced", "within errors", "not judged")
NOT_JUDGED = "not judged: "  # an outcome "not judged: <reason>" of a task that was not judged
QUICK_REASON = "quick preset: models not trained enough"
JUDGED_RULE = ("a row needs more than half of its tasks judged; it is reproduced when more than half of the judged "
               "tasks hold, not reproduced when more than half fail, within errors otherwise")


def gate(claims: bool, bars: Mapping[str, Any], needed: Sequence[str]) -> str | None:
    """Why no verdict may be claimed, or None: the preset claims nothing, or a needed training bar failed."""
    if not claims:
        return QUICK_REASON
    failed = [name for name in needed if not bars.get(name, {}).get("passed")]
    if failed:
        return "training bar not passed: " + ", ".join(failed)
    return None


def decide(reason: str | None, holds: bool, numbers: dict[str, Any]) -> str:
    """The verdict of a threshold rule (no SE): not judged when ``reason``, else reproduced or not."""
    if reason is not None:
        numbers["reason"] = reason
        return "not judged"
    return "reproduced" if holds else "not reproduced"


def paired(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Paired ``{"diff", "se", "n"}`` of runs' ``items`` sections a - b, or None when either has none. One item
    has no standard error: its SE is NaN, so the comparison reads within errors."""
    if not a or not b:
        return None
    from mimlens.tasks.uncertainty import compare_runs

    found = compare_runs(dict(a), dict(b))
    return found if found["n"] > 1 else {**found, "se": math.nan}


def compare(a: Mapping[str, Any], b: Mapping[str, Any], chosen: bool) -> dict[str, float]:
    """Paired a - b on the judgement half of the items when a candidate was ``chosen`` (on the selection half),
    else on all items."""
    from mimlens.tasks.uncertainty import split_items

    if chosen:
        a, b = split_items(dict(a), "judgement"), split_items(dict(b), "judgement")
    return paired(a, b)


def pick(candidates: Mapping[Any, Mapping[str, Any]], higher: bool) -> Any:
    """The key of the candidate ``items`` section with the best metric on the selection half (the first on
    ties); a single candidate is returned as is."""
    keys = list(candidates)
    if len(keys) == 1:
        return keys[0]
    from mimlens.tasks.uncertainty import split_items, statistic

    def score(key: Any) -> float:
        half = split_items(dict(candidates[key]), "selection")
        value = statistic(half["statistic"])([v for v in half["values"] if v is not None])
        return value if higher else -value

    return max(keys, key=lambda k: (score(k), -keys.index(k)))


def reading(difference: Mapping[str, float], higher: bool) -> str:
    """"better", "worse" or "within errors" of a paired difference a - b at ``Z`` SEs."""
    from mimlens.tasks.uncertainty import judge

    return judge(dict(difference), higher)


def better(difference: Mapping[str, float], higher: bool) -> bool:
    """Whether a paired difference a - b says a is better than b by more than ``Z`` SEs."""
    return reading(difference, higher) == "better"


def put(numbers: dict[str, Any], key: str, difference: Mapping[str, float] | None) -> None:
    """``numbers[key]`` = the paired difference, ``key + " SE"`` its SE, ``key + " detectable"`` the smallest
    difference its test detects with 80 % probability and ``key + " items"`` the items compared."""
    if difference is not None:
        from mimlens.tasks.uncertainty import detectable

        numbers[key], numbers[f"{key} SE"] = difference["diff"], difference["se"]
        numbers[f"{key} detectable"], numbers[f"{key} items"] = detectable(difference["se"]), difference["n"]


def outcome(difference: Mapping[str, float], higher: bool) -> str:
    """"holds" when a is better than b by more than ``Z`` SEs, "fails" when worse by as much, else "within
    errors"."""
    return {"better": "holds", "worse": "fails"}.get(reading(difference, higher), "within errors")


def combine(parts: Sequence[str]) -> str:
    """A task's outcome from the outcomes of a claim's parts (all must hold): fails when any fails, holds when
    all hold, within errors otherwise."""
    if "fails" in parts:
        return "fails"
    return "holds" if all(p == "holds" for p in parts) else "within errors"


def combine_parts(parts: Sequence[str], keys: Sequence[str], numbers: dict[str, Any], task: str) -> str:
    """:func:`combine` of a task's parts, whose comparisons :func:`put` wrote under ``keys``; a task within errors
    leaves the largest detectable difference of its parts within errors in ``numbers[task + " detectable"]``."""
    result = combine(parts)
    if result == "within errors":
        numbers[f"{task} detectable"] = max(numbers[f"{k} detectable"] for p, k in zip(parts, keys, strict=True)
                                            if p == "within errors")
    return result


def majority(outcomes: Mapping[str, str], numbers: dict[str, Any], reason: str | None) -> str:
    """A row's verdict from its tasks' outcomes ("holds", "fails", "within errors" or "not judged: why") by
    :data:`JUDGED_RULE`. A task's rule leaves the detectable difference of a task within errors in
    ``numbers[task + " detectable"]`` (a copy of a number the table shows); it is moved into the reason."""
    detectable = {t: numbers.pop(f"{t} detectable", None) for t in outcomes}
    judged = {t: o for t, o in outcomes.items() if not o.startswith(NOT_JUDGED)}
    count = {o: sum(v == o for v in judged.values()) for o in ("holds", "fails", "within errors")}
    numbers.update({"tasks": len(outcomes), "tasks judged": len(judged), "tasks holding": count["holds"],
                    "tasks failing": count["fails"], "tasks within errors": count["within errors"]})
    if reason is None and 2 * len(judged) <= len(outcomes):
        skipped = "; ".join(f"{t}: {o[len(NOT_JUDGED):]}" for t, o in outcomes.items() if t not in judged)
        reason = (f"{len(judged)} of {len(outcomes)} tasks judged, more than half needed"
                  + (f" ({skipped})" if skipped else ""))
    if reason is not None:
        numbers["reason"] = reason
        return "not judged"
    if 2 * count["holds"] > len(judged):
        return "reproduced"
    if 2 * count["fails"] > len(judged):
        return "not reproduced"
    parts = [t + (f" {o}" if o != "within errors" else "")
             + ("" if detectable[t] is None else f" (detectable difference {detectable[t]:.3g})")
             for t, o in judged.items()]
    numbers["reason"] = "within errors: " + ", ".join(parts)
    return "within errors"


def row(fid: str, statement: str, verdict: str, numbers: dict[str, Any], rule: str, columns: Sequence[str],
        rows: Sequence[Sequence[str | None]]) -> dict[str, Any]:
    """A findings row; ``rows`` are ``[label, key, ...]`` over ``columns``, keys missing from ``numbers`` dropped."""
    layout = [[label, *(k if k in numbers else None for k in keys)] for label, *keys in rows
              if any(k in numbers for k in keys)]
    return {"id": fid, "statement": statement, "verdict": verdict, "numbers": numbers, "rule": rule,
            "table": {"columns": list(columns), "rows": layout}}
