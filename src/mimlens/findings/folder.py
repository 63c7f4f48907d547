"""A study folder's layout and its reader: the JSON documents of each model, by model name.

```
OUT/analysis/<model>/attention.json, cka.json   mimlens analyze
OUT/probe/<model>/probe.json                    mimlens probe
OUT/finetune/<task>_<model>/metrics.json        mimlens finetune; a drop sweep holds drop_sweep.json, and its
                                                full model's (K = 0) metrics.json in drop_0/
OUT/masks/avgdist.json                          mimlens masks --sweep (F2's AvgDist)
OUT/bars.json                                   training bars by model name (a model without one has none)
OUT/masking/findings.json                       a masking study joined to this one: its F2 row is this one's
```

A model's documents are ``{"attention": doc, "cka": doc, "probe": doc, "metrics": {task: doc},
"sweeps": {task: doc}}`` (``sweeps``: ``drop_sweep.json``). A document the folder lacks is left out — a study may
skip fine-tuning or probes — and :func:`document_path` names it for the rows that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError
from mimlens.io import read_json

MASKING_FOLDER = "masking"  # a masking study's folder inside the study (or demo) folder it joins
PER_TASK = ("metrics", "sweeps")  # the kinds of document held per fine-tuning task
FILES = {"attention": "attention.json", "cka": "cka.json", "probe": "probe.json", "metrics": "metrics.json",
         "sweeps": "drop_sweep.json"}


def document_path(kind: str, model: str, task: str | None = None) -> str:
    """Where one document of ``model`` lies inside the study folder (``task``: for the kinds in :data:`PER_TASK`)."""
    if kind in PER_TASK:
        return f"finetune/{task}_{model}/{FILES[kind]}"
    return f"{'probe' if kind == 'probe' else 'analysis'}/{model}/{FILES[kind]}"


@dataclass(frozen=True)
class StudyFolder:
    """What a study folder holds: each model's documents, the training bars (``{}`` without ``bars.json``) and
    the AvgDist of the masking settings (None without ``masks/avgdist.json``)."""

    documents: dict[str, dict[str, Any]]
    bars: dict[str, Any]
    avgdist: dict[str, Any] | None


def _read(path: Path) -> Any | None:
    """The JSON document at ``path``, None when there is none (an unreadable one is an error naming it)."""
    return read_json(path) if path.is_file() else None


def model_documents(out: Path, model: str, tasks: Sequence[str]) -> dict[str, Any]:
    """The documents of ``model`` under ``out`` (the layout above), those the folder lacks left out; a drop
    sweep's full model (``drop_0/metrics.json``) stands for the sweep's fine-tuning."""
    docs = {kind: _read(out / document_path(kind, model)) for kind in ("attention", "cka", "probe")}
    found: dict[str, Any] = {kind: doc for kind, doc in docs.items() if doc is not None}
    sweeps = {t: _read(out / document_path("sweeps", model, t)) for t in tasks}
    metrics = {}
    for t in tasks:
        path = out / document_path("metrics", model, t)
        metrics[t] = _read(path.parent / "drop_0" / path.name if sweeps[t] is not None else path)
    found["metrics"] = {t: doc for t, doc in metrics.items() if doc is not None}
    found["sweeps"] = {t: doc for t, doc in sweeps.items() if doc is not None}
    return found


def read_study(out: str | Path, models: Sequence[str], tasks: Sequence[str]) -> StudyFolder:
    """The documents of ``models`` (fine-tunings of ``tasks``) in the study folder ``out``; a folder that does
    not exist is an error naming it."""
    out = Path(out)
    if not out.is_dir():
        raise MimlensError(f"{out} is not a study folder: no such directory")
    bars = _read(out / "bars.json")
    documents = {m: model_documents(out, m, tasks) for m in models}
    return StudyFolder(documents, bars or {}, _read(out / "masks" / "avgdist.json"))


def joined_f2(out: Path, row: dict[str, Any] | None, claims: bool) -> dict[str, Any] | None:
    """F2 from the masking study in ``OUT/masking`` when it has finished under the current rules, else ``row``
    (F2 from the AvgDist sweep alone, or None); a study judged under other rules is named in ``row``'s reason,
    not quoted."""
    from mimlens.findings import rules

    doc = _read(out / MASKING_FOLDER / "findings.json")
    if doc is None:
        return row
    found = next((r for r in doc.get("findings", []) if r.get("id") == "F2"), None)
    version = doc.get("rules_version", 1)
    if found is not None and version == rules.RULES_VERSION:
        return rules.f2_from_study(found, MASKING_FOLDER)
    if found is not None and claims and row is not None:
        row["numbers"]["reason"] = (f"the masking study in {MASKING_FOLDER}/ was judged under rules version "
                                    f"{version}, these are version {rules.RULES_VERSION}: run it again "
                                    f"(mimlens demo --preset masking --out {out / MASKING_FOLDER})")
    return row
