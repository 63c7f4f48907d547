"""The analyses of a model's images: what each measures, how its result round-trips through JSON, and how the
report shows it. ``analyze``, ``analyze --every-checkpoint``, ``compare`` and the report iterate this table, so an
analysis registered here is available everywhere (``tests/analysis/test_analysis_plugin.py`` defines one).

An analysis is an accumulator over batches of raw images (:class:`mimlens.accumulate.Accumulator`: update,
all-reduce, compute) wrapped in ``measure(ctx) -> result``; a result has ``to_json()``, and ``load(doc)`` rebuilds
it. One that can compare two models has ``between(ctx, model_b, label_b) -> result``: ``compare`` runs it on every pair
of models (``<name>_across.json``, ``{"pairs": [...]}``) and runs ``measure`` on each model otherwise
(``<name>/<label>.json``); ``analyze`` writes ``<name>.json``.

This module imports only the standard library (:mod:`mimlens.registry`), so a command line can list the analyses
cheaply. Functions are named ``"module:function"`` (imported when used) or given as callables (a plug-in's own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimlens.registry import Registry, resolve


@dataclass
class MeasureContext:
    """What an analysis measures: the ``model`` (eval mode, its own preprocessing inside), the raw images
    (``dataset``: dicts with ``image``, float RGB in [0, 1]), the ``analysis`` config section, the torch
    ``device``, whether to show ``progress``, and the ``label`` figures and JSON name the model by."""

    model: Any
    dataset: Any
    settings: dict[str, Any]
    device: Any
    progress: bool
    label: str

    def batches(self, rank: int = 0, world: int = 1):
        """Raw image batches (``settings["batch_size"]``): every ``world``-th image from ``rank``, in order."""
        from torch.utils.data import DataLoader, Subset

        indices = range(rank, len(self.dataset), world)
        for batch in DataLoader(Subset(self.dataset, indices), batch_size=self.settings["batch_size"], shuffle=False):
            yield batch["image"]

    def shard(self):
        """This torchrun process's share of the images (all of them in one process)."""
        from mimlens import distributed

        return self.batches(distributed.rank(), distributed.world_size())


@dataclass(frozen=True)
class Analysis:
    """One analysis.

    ``measure(ctx) -> result`` (every process gets the same result; ``result.to_json()`` is its JSON);
    ``load(doc) -> result`` rebuilds it; ``between(ctx, model_b, label_b) -> result`` compares two models (None: it
    describes one model). ``document(result, meta) -> dict`` is what ``analyze`` writes (default: the result's
    JSON; ``meta`` holds the model, weights, loading record and data). ``figures(docs, labels, fig_dir, title)``
    draws the per-model documents (one in ``analyze``, one per model in ``compare``) and ``pair_figures(docs,
    fig_dir)`` the pairs. ``section(run, assets, docs, labels)`` and ``pair_section(run, assets, docs)`` return
    the report's :class:`mimlens.report.blocks.Section`; ``summary(doc) -> str`` is what the console prints;
    ``tables(doc, out)`` writes other files of one model's run directory (attention's ``attention.csv``).
    ``block_series(doc) -> {quantity: [value per block]}``: the per-block scalars of one model's document, entry
    i for block i in forward order (the report sets them beside the per-block probe scores, whose ``block`` is
    that index). ``over_training(docs, steps, run, out) -> dict``: the summary of the documents of every
    training step (``analyze --every-checkpoint``), which writes ``over_training_files``. ``files``: what it
    writes next to ``<name>.json`` in ``analyze``. Both are removed when a rerun leaves them out.
    """

    name: str
    help: str
    measure: str | Callable
    load: str | Callable
    section: str | Callable
    between: str | Callable | None = None
    document: str | Callable | None = None
    figures: str | Callable | None = None
    pair_figures: str | Callable | None = None
    pair_section: str | Callable | None = None
    summary: str | Callable | None = None
    tables: str | Callable | None = None
    over_training: str | Callable | None = None
    block_series: str | Callable | None = None
    files: tuple[str, ...] = ()
    over_training_files: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    def function(self, what: str) -> Callable | None:
        """The named hook (``"measure"``, ``"section"``, ...) as a callable, None where the entry has none."""
        return resolve(getattr(self, what))

    @property
    def json_name(self) -> str:
        return f"{self.name}.json"

    def outputs(self) -> tuple[str, ...]:
        """Everything ``analyze`` writes for this analysis, relative to the run directory."""
        return (self.json_name, *self.files)

    def read(self, path: Path) -> Any:
        """The result stored in the JSON file ``path``."""
        from mimlens.io import read_json

        return self.function("load")(read_json(path))


ANALYSES: Registry = Registry("analysis", (
    Analysis(
        "attention", "attention distance, entropy and head diversity (KL between heads) per layer and head",
        measure="mimlens.analysis.passes:attention_measure", load="mimlens.analysis.attention:AttentionStats.from_json",
        document="mimlens.analysis.passes:attention_document", figures="mimlens.analysis.passes:attention_figures",
        section="mimlens.report.analysis_sections:attention_section",
        summary="mimlens.analysis.passes:attention_summary", tables="mimlens.analysis.passes:attention_tables",
        over_training="mimlens.analysis.over_training:attention_over_training",
        block_series="mimlens.analysis.passes:attention_block_series",
        files=("attention.csv", "figures/attention_distance.png", "figures/attention_entropy.png",
               "figures/head_kl.png"),
        over_training_files=("attention_over_training.json", "figures/attention_over_training.png"),
    ),
    Analysis(
        "cka", "CKA between every pair of layers (minibatch, unbiased HSIC); between models in compare",
        measure="mimlens.analysis.passes:cka_measure", between="mimlens.analysis.passes:cka_between",
        load="mimlens.analysis.cka:CKAResult.from_json", figures="mimlens.analysis.passes:cka_figures",
        pair_figures="mimlens.analysis.passes:cka_pair_figures",
        section="mimlens.report.analysis_sections:cka_section",
        pair_section="mimlens.report.analysis_sections:cka_pair_section",
        summary="mimlens.analysis.passes:cka_summary", block_series="mimlens.analysis.passes:cka_block_series",
        files=("figures/cka_within.png",),
    ),
    Analysis(
        "diagnostics", "attention NMI per head, high-frequency share of features and high-norm tokens per block",
        measure="mimlens.analysis.passes:diagnostics_measure",
        load="mimlens.analysis.diagnostics:Diagnostics.from_json",
        document="mimlens.analysis.passes:diagnostics_document", figures="mimlens.analysis.passes:diagnostics_figures",
        section="mimlens.report.analysis_sections:diagnostics_section",
        summary="mimlens.analysis.passes:diagnostics_summary",
        block_series="mimlens.analysis.passes:diagnostics_block_series",
        files=("figures/diagnostics_nmi.png", "figures/diagnostics_high_frequency.png",
               "figures/diagnostics_high_norm.png"),
    ),
))


def analysis(name: str) -> Analysis:
    return ANALYSES.entry(name)


def register(entry: Analysis) -> Analysis:
    """Add ``entry`` to :data:`ANALYSES` (a plug-in calls this before the command line is built)."""
    return ANALYSES.register(entry)


def selected(names: Any, key: str = "analysis.names") -> list[Analysis]:
    """The analyses a config's list of names asks for, in the order given; one line naming ``key`` and the
    known analyses when the list is empty or names an unknown one."""
    from mimlens.errors import MimlensError

    if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str) for n in names):
        raise MimlensError(f"{key}={names!r}: expected a non-empty list of analyses from {', '.join(ANALYSES)}")
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise MimlensError(f"{key}: unknown analysis {unknown[0]!r}: expected names from {', '.join(ANALYSES)}")
    return [ANALYSES[n] for n in dict.fromkeys(names)]
