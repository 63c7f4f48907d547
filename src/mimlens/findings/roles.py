"""Findings by role: the rules of :mod:`.rules` on any models, each given a role (:data:`ROLES`).

A row compares the first model of each role it needs, in study order, and is repeated for every MIM model: the
first MIM model's row has the finding's id ("F1"), each further one the id and the model's name ("F1 (mae)"),
against the same models of the other roles. A row is *not judged* when the study has no model of a role it needs
(``numbers["reason"]``: "no supervised model in the study") or lacks a document it reads (the files named, as
:func:`.folder.document_path` lays them out). A model without an entry in ``bars`` has no training bar (external
weights): it counts as passing, and each row whose verdict needs its bar says so. Every row names the models it
compared: ``"compared": {role: model name}``. ``docs/findings.md`` ("Findings by role") states the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mimlens.findings.rules as rules
from mimlens.errors import MimlensError
from mimlens.findings.folder import FILES, PER_TASK, document_path

ROLES = ("mim", "supervised", "contrastive", "random", "other")
NO_BAR = "without a training bar"  # the numbers key naming the models that have none


@dataclass(frozen=True)
class Rule:
    """A finding judged from models by role: ``judge(*documents, bars, claims, bar_models=...)`` with one
    document per ``reads`` entry ``(role, kind of document)``; ``barred``: the roles whose training bars the
    verdict needs; ``tasks``: the fine-tuning tasks its per-task documents cover (None: every task of the study)."""

    judge: Callable[..., dict[str, Any]]
    reads: tuple[tuple[str, str], ...]
    barred: tuple[str, ...] = ("mim", "supervised")
    tasks: tuple[str, ...] | None = None


RULES = {
    "F1": Rule(rules.f1_locality, (("mim", "attention"), ("supervised", "attention"), ("random", "attention"))),
    "F3": Rule(rules.f3_head_diversity, (("mim", "attention"), ("supervised", "attention"))),
    "F4": Rule(rules.f4_drop_last, (("supervised", "sweeps"), ("random", "metrics")), ("supervised",),
               ("depth", "pose")),
    "F5": Rule(rules.f5_cka, (("mim", "cka"), ("supervised", "cka"))),
    "F6": Rule(rules.f6_transfer, (("mim", "metrics"), ("supervised", "metrics"), ("random", "metrics"))),
    "F4-probe": Rule(rules.f4_probe, (("mim", "probe"), ("supervised", "probe"))),
    "F6-probe": Rule(rules.f6_probe, (("mim", "probe"), ("supervised", "probe"))),
}
ORDER = ("F1", "F2", "F3", "F4", "F5", "F6", "F4-probe", "F6-probe")  # F2 compares masking settings, not roles
NO_MASKING_STUDY = ("no masking study: F2 compares pre-trainings of one model at several masking settings "
                    "(mimlens demo --preset masking)")


def models_by_role(roles: Mapping[str, str]) -> dict[str, list[str]]:
    """The models of each role in study order; an unknown role is an error naming the model."""
    by_role: dict[str, list[str]] = {role: [] for role in ROLES}
    for model, role in roles.items():
        if role not in by_role:
            raise MimlensError(f"model {model!r} has role {role!r}; expected one of {', '.join(ROLES)}")
        by_role[role].append(model)
    return by_role


def judge_study(roles: Mapping[str, str], documents: Mapping[str, Mapping[str, Any]], bars: Mapping[str, Any],
                claims: bool, tasks: Sequence[str], f2: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The findings rows of a study, in :data:`ORDER`, each with ``"compared"``.

    ``roles``: model name -> role, in study order; ``documents``: model name -> its documents (the form of
    :func:`.folder.model_documents`); ``bars``: model name -> ``{"passed": bool, ...}``; ``claims``: False for a
    smoke run (nothing judged); ``tasks``: the fine-tuning tasks, in order; ``f2``: the F2 row of a masking study
    (:func:`.rules.f2_avgdist`, :func:`.rules.f2_masking`), None: F2 not judged, no masking study."""
    by_role = models_by_role(roles)
    first = {role: models[0] for role, models in by_role.items() if models}
    rows = []
    for fid in ORDER:
        if fid == "F2":
            rows.append({**(f2 or not_judged("F2", NO_MASKING_STUDY, "judged by a masking study")), "compared": {}})
            continue
        rule = RULES[fid]
        mims = by_role["mim"] if any(role == "mim" for role, _ in rule.reads) else []
        for i, mim in enumerate(mims or [None]):
            label = fid if i == 0 else f"{fid} ({mim})"
            chosen = {**first, "mim": mim} if mim else first
            rows.append(judge_row(fid, label, chosen, documents, bars, claims, tasks))
    return rows


def judge_row(fid: str, label: str, chosen: Mapping[str, str], documents: Mapping[str, Mapping[str, Any]],
              bars: Mapping[str, Any], claims: bool, tasks: Sequence[str]) -> dict[str, Any]:
    """Finding ``fid`` on the models ``chosen`` (role -> model), as the row ``label``."""
    rule = RULES[fid]
    needed = list(dict.fromkeys(role for role, _ in rule.reads))
    compared = {role: chosen[role] for role in needed if role in chosen}
    reads = "reads " + ", ".join(f"the {role} model's {FILES[kind]}" for role, kind in rule.reads)
    absent = [role for role in needed if role not in chosen]
    if absent:
        reason = "; ".join(f"no {role} model in the study" for role in absent)
        return {**not_judged(label, reason, reads, fid), "compared": compared}
    row_tasks = [t for t in tasks if rule.tasks is None or t in rule.tasks]
    if not row_tasks and any(kind in PER_TASK for _, kind in rule.reads):
        what = " or ".join(rule.tasks) + " fine-tuning" if rule.tasks else "fine-tuning task"
        return {**not_judged(label, f"no {what} in the study", reads, fid), "compared": compared}
    found = [read(documents.get(chosen[role], {}), kind, chosen[role], row_tasks) for role, kind in rule.reads]
    missing = [path for _, paths in found for path in paths]
    if missing:
        return {**not_judged(label, "missing " + ", ".join(missing), reads, fid), "compared": compared}
    barred = [chosen[role] for role in rule.barred]
    external = [m for m in barred if m not in bars]
    row = rule.judge(*(doc for doc, _ in found), {**bars, **{m: {"passed": True} for m in external}}, claims,
                     bar_models=barred)
    if external:
        row["numbers"][NO_BAR] = ", ".join(external) + " (external weights: counted as passing)"
        row["table"]["rows"].append([NO_BAR, NO_BAR])
    return {**row, "id": label, "compared": compared}


def read(docs: Mapping[str, Any], kind: str, model: str, tasks: Sequence[str]) -> tuple[Any, list[str]]:
    """One model's document of ``kind`` (per task: ``{task: doc}`` over ``tasks``) and the paths of those missing."""
    if kind not in PER_TASK:
        return docs.get(kind), [] if kind in docs else [document_path(kind, model)]
    held = docs.get(kind, {})
    return {t: held[t] for t in tasks if t in held}, [document_path(kind, model, t) for t in tasks if t not in held]


def not_judged(label: str, reason: str, rule: str, fid: str | None = None) -> dict[str, Any]:
    """A row that could not be judged: its reason, what its rule would have read, no numbers."""
    return {"id": label, "statement": rules.STATEMENTS[fid or label], "verdict": "not judged",
            "numbers": {"reason": reason}, "rule": f"{rule}; docs/findings.md states the rule",
            "table": {"columns": [], "rows": []}}
