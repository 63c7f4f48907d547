"""``mimlens analyze MODEL``: attention distance, entropy and head KL (and CKA with ``--cka``, or any registered
analysis with ``--analyses``) of one model.

The analysis itself is :func:`mimlens.analysis.run.analyze` (images, passes, run directory), or with
``--every-checkpoint`` :func:`mimlens.analysis.over_training.analyze_over_training` (every snapshot of a training
run); this command reads the flags, calls it and prints a per-layer table next to the uniform-attention
reference (or the per-layer mean distance at each step). The flags shared with ``mimlens compare`` are here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mimlens.analysis.choices import PREFIX_POLICIES, UNITS
from mimlens.analysis.registry import ANALYSES
from mimlens.analysis.run import ANALYSIS_DEFAULTS, DATA_DEFAULTS, MODEL_DEFAULTS
from mimlens.model_names import ENCODERS

DEFAULTS: dict[str, Any] = {
    "model": MODEL_DEFAULTS,
    "data": DATA_DEFAULTS,
    "analysis": ANALYSIS_DEFAULTS,
    "run": {"device": None, "out": None, "progress": True},
}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags ``analyze`` and ``compare`` share."""
    parser.add_argument("--data", help="synthetic[:N] (default), photos[:N] or an image folder (ImageFolder or flat)")
    parser.add_argument("--num-images", type=int, help="images to analyse (default 64)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default 64)")
    parser.add_argument("--analyses", metavar="NAME[,NAME...]",
                        help="the analyses to run, from: " + ", ".join(ANALYSES) + " (analyze: attention; compare: "
                             "attention per model and CKA between every pair)")
    parser.add_argument("--prefix-policy", choices=PREFIX_POLICIES,
                        help="prefix tokens (CLS, ...) as keys: renorm (default), drop or keep")
    parser.add_argument("--cka-unit", choices=UNITS,
                        help="CKA sample: image (default, patch tokens flattened), pooled or token")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--out", metavar="DIR", help="run directory to write")
    parser.add_argument("--config", metavar="YAML", help="YAML with the same keys as config.yaml; flags override it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_loading_arguments(parser: argparse.ArgumentParser) -> None:
    """``--pretrained`` and ``--encoder``, shared with ``compare``."""
    parser.add_argument("--pretrained", action="store_true", default=None,
                        help="timm:NAME.TAG with timm's pretrained weights, from the Hugging Face cache (downloaded "
                             "unless HF_HUB_OFFLINE=1)")
    parser.add_argument("--encoder", choices=ENCODERS,
                        help="for a MoCo v3 checkpoint: the base (default) or the momentum encoder")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help="timm:NAME or a preset (random init; timm:NAME.TAG with --pretrained), a checkpoint "
                             "file (with --arch), a run directory (its latest checkpoint while it trains) or a run's "
                             "checkpoints/last.pt; optional with --config RUN/config.yaml")
    parser.add_argument("--arch", help="for a foreign checkpoint file: the preset or timm model it belongs to")
    add_loading_arguments(parser)
    parser.add_argument("--seed", type=int, help="seed of a random initialisation (default 0)")
    parser.add_argument("--cka", action="store_true", default=None, help="also compute CKA between layers")
    parser.add_argument("--every-checkpoint", action="store_true", default=None,
                        help="for a run directory: analyse every step_<N> snapshot and the final backbone, and plot "
                             "the statistics against training step")
    add_data_arguments(parser)


def data_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data.source": args.data,
        "data.num_images": args.num_images,
        "analysis.names": args.analyses.split(",") if args.analyses else None,
        "analysis.batch_size": args.batch_size,
        "analysis.prefix_policy": args.prefix_policy,
        "analysis.cka_unit": args.cka_unit,
        "run.device": args.device,
        "run.out": args.out,
        "run.progress": False if args.no_progress else None,
    }


def run(args: argparse.Namespace) -> int:
    from mimlens.analysis.run import check_config, check_model
    from mimlens.config import resolve
    from mimlens.data.spec import parse_data_spec
    from mimlens.model_names import check_model_spelling, model_slug
    from mimlens.rundir import check_out

    flags = {"model.spec": args.model, "model.arch": args.arch, "model.seed": args.seed,
             "model.pretrained": args.pretrained, "model.encoder": args.encoder, "analysis.cka": args.cka,
             "analysis.every_checkpoint": args.every_checkpoint, **data_flags(args)}
    cfg = resolve(DEFAULTS, args.config, flags)
    # checked before torch is imported: a typo costs no start-up time
    parse_data_spec(cfg["data"]["source"])
    check_model(cfg["model"])
    check_config(cfg)
    check_model_spelling(cfg["model"]["spec"], cfg["model"]["arch"])
    out = Path(cfg["run"]["out"] or Path("runs") / f"analyze_{model_slug(cfg['model']['spec'])}")
    cfg["run"]["out"] = str(out)
    check_out(out, "analyze")
    from mimlens import distributed
    from mimlens.analysis.over_training import analyze_over_training
    from mimlens.analysis.run import analyze, selected_analyses

    try:
        if cfg["analysis"]["every_checkpoint"]:
            summaries = analyze_over_training(cfg, out, log=say)
            if distributed.is_main():
                if "attention" in summaries:
                    say(steps_table(summaries["attention"]))
                names = ", ".join(f"{e.name}/step_<N>.json" for e in selected_analyses(cfg["analysis"]))
                say(f"run directory: {out}  ({names}, and each analysis's summary over training)")
            return 0
        meta, docs = analyze(cfg, out, log=say)
        if distributed.is_main():
            from mimlens.report.html import build_report

            build_report([out], out / "report.html", title=f"mimlens analyze {cfg['model']['spec']}")
            say_summaries(docs)
            if meta["weights"] == "random init":
                say("note: the weights are a random initialisation (no checkpoint was loaded); these numbers "
                    "describe an untrained model")
            names = ", ".join(f"{name}.json" for name in docs)
            say(f"run directory: {out}  (analysis.json, {names}, figures/, report.html)")
    finally:
        distributed.shutdown()
    return 0


def say_summaries(docs: dict[str, dict[str, Any]]) -> None:
    """Each analysis's console summary."""
    from mimlens.analysis.registry import analysis

    for name, doc in docs.items():
        summary = analysis(name).function("summary")
        if summary:
            say(summary(doc))


def steps_table(summary: dict[str, Any]) -> str:
    """Mean attention distance (px) of each layer (columns) at each training step (rows)."""
    from mimlens.report.summary import text_table

    rows = [[step, *distances] for step, distances in zip(summary["steps"], summary["distance_px"], strict=True)]
    return "mean attention distance (px) per layer:\n" + text_table(["step", *summary["layers"]], rows)


def say(text: str) -> None:
    print(text, flush=True)
