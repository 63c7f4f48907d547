"""``mimlens probe MODEL``: layer-wise frozen probes — for every block, how well classification, depth,
keypoints and tracking can be read off its features (ridge probes and training-free correlation tracking).

The probes are :func:`mimlens.tasks.probes.layerwise.layerwise_probes`; this command reads the flags, loads the
model, prints one table per task and writes a run directory: ``config.yaml``, ``probe.json`` (per task and
block: the metrics, their standard error and per-item values, the chosen λ, and the metric variant; per task the
trivial baselines) and ``figures/probe_by_layer.png``. ``probe.synthetic`` (config only) sets the synthetic
scenes' difficulty, keys over the fine-tuning default ``data.synthetic``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "model": {"spec": None, "arch": None},
    "probe": {"tasks": None, "data": "synthetic", "num_train": None, "num_eval": None, "blocks": None,
              "batch_size": 64, "seed": 0, "synthetic": None},
    "run": {"device": None, "out": None, "progress": True},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="run directory, checkpoint file (with --arch), preset or timm:NAME (random init)")
    parser.add_argument("--arch", help="for a checkpoint file: the preset or timm model it belongs to")
    parser.add_argument("--task", action="append", metavar="TASK",
                        help="a task with a frozen probe: cls, depth, pose, track (repeatable or comma-separated; "
                             "default every one)")
    parser.add_argument("--data", help="synthetic[:N] (default) or a folder in the fine-tuning layout")
    parser.add_argument("--num-train", type=int, help="synthetic training images (default N, else 1024)")
    parser.add_argument("--num-eval", type=int,
                        help="synthetic evaluation images (default 256; track: this // 16 sequences of 16 frames)")
    parser.add_argument("--blocks", help="comma-separated 0-based block indices to probe (default all)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default 64)")
    parser.add_argument("--seed", type=int, help="seed of the synthetic data and of a random init (default 0)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--out", metavar="DIR", help="run directory to write (default runs/probe_<model>)")
    parser.add_argument("--config", metavar="YAML", help="YAML with the same keys as config.yaml; flags override it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_list(flag: str, values: list[str] | str | None, cast=str) -> list | None:
    """Items of a repeatable, comma-separated flag (None when not given)."""
    from mimlens.errors import MimlensError

    if values is None:
        return None
    items = [v.strip() for text in ([values] if isinstance(values, str) else values) for v in text.split(",")]
    try:
        return [cast(v) for v in items if v]
    except ValueError:
        raise MimlensError(f"{flag} expects a comma-separated list, got {values!r}") from None


def run(args: argparse.Namespace) -> int:
    from mimlens.config import resolve
    from mimlens.data.spec import parse_data_spec
    from mimlens.model_names import check_model_spelling, model_slug
    from mimlens.rundir import check_out

    flags = {"model.spec": args.model, "model.arch": args.arch, "probe.tasks": parse_list("--task", args.task),
             "probe.data": args.data, "probe.num_train": args.num_train, "probe.num_eval": args.num_eval,
             "probe.blocks": parse_list("--blocks", args.blocks, int), "probe.batch_size": args.batch_size,
             "probe.seed": args.seed, "run.device": args.device, "run.out": args.out,
             "run.progress": False if args.no_progress else None}
    cfg = resolve(DEFAULTS, args.config, flags)
    settings = cfg["probe"]
    # checked before torch is imported: a typo costs no start-up time
    parse_data_spec(str(settings["data"]), generated=("synthetic",))
    check_model_spelling(cfg["model"]["spec"], cfg["model"]["arch"])
    out = Path(cfg["run"]["out"] or Path("runs") / f"probe_{model_slug(cfg['model']['spec'])}")
    cfg["run"]["out"] = str(out)
    check_out(out, "probe")
    from mimlens import distributed
    from mimlens.analysis.run import progress_enabled
    from mimlens.config import save_config
    from mimlens.io import save_json
    from mimlens.models.describe import describe_weights, load
    from mimlens.report.figures_probe import plot_probe_by_layer
    from mimlens.tasks.probes.layerwise import layerwise_probes, probe_task_names

    settings["tasks"] = list(settings["tasks"] or probe_task_names())
    device = distributed.init(cfg["run"]["device"])
    try:
        model, info = load(cfg["model"]["spec"], cfg["model"]["arch"], int(settings["seed"]))
        doc = layerwise_probes(model.to(device), settings["tasks"], data=str(settings["data"]),
                               num_train=settings["num_train"], num_eval=settings["num_eval"],
                               blocks=settings["blocks"], batch_size=int(settings["batch_size"]),
                               seed=int(settings["seed"]), difficulty=difficulty(settings["synthetic"]),
                               device=device, progress=progress_enabled(cfg))
        if distributed.is_main():
            doc = {"model": str(cfg["model"]["spec"]), "weights": describe_weights(info), **doc}
            save_config(cfg, out)
            save_json(doc, out / "probe.json")
            plot_probe_by_layer(doc, out / "figures" / "probe_by_layer.png")
            print(format_tables(doc))
            print(f"wrote {out / 'probe.json'} and {out / 'figures' / 'probe_by_layer.png'}")
    finally:
        distributed.shutdown()
    return 0


def difficulty(given: dict[str, Any] | None) -> dict[str, Any]:
    """The synthetic difficulty: ``given`` keys over the fine-tuning default."""
    from mimlens.errors import MimlensError
    from mimlens.tasks.run import COMMON

    if given is not None and not isinstance(given, dict):
        raise MimlensError(f"probe.synthetic must be a mapping of synthetic-scene settings, got {given!r}")
    return {**COMMON["data"]["synthetic"], **(given or {})}


def format_tables(doc: dict[str, Any]) -> str:
    """One table per task: block, name, the task's headline metrics and the chosen λ."""
    from mimlens.tasks.registry import TASKS

    lines = [f"layer-wise probes of {doc['model']} ({doc['weights']}), data {doc['data']}"]
    for name, task in doc["tasks"].items():
        columns = TASKS[name].columns
        count = task.get("num_train_images")
        images = f"{count} training, " if count is not None else ""
        lines += ["", f"{name}: {images}{task['num_eval_images']} evaluation images",
                  f"{'block':>5}  {'name':<22}" + "".join(f"{c:>10}" for c in columns) + f"{'SE':>9}{'lambda':>11}"]
        for row in task["rows"]:
            lam = "-" if row["lambda"] is None else f"{row['lambda']:.3g}"
            lines.append(f"{row['block']:>5}  {row['name']:<22}" + "".join(f"{row[c]:>10.4f}" for c in columns)
                         + f"{row['se']:>9.4f}{lam:>11}")
        for label, base in task["baselines"].items():
            lines.append(f"{'':>5}  {label:<22}" + "".join(f"{base[c]:>10.4f}" for c in columns)
                         + f"{base['se']:>9.4f}")
        if task.get("note"):
            lines.append(f"note: {task['note']}")
    return "\n".join(lines)
