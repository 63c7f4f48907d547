"""``mimlens compare RUN_OR_MODEL RUN_OR_MODEL ...``: several models side by side, and CKA between them.

The comparison itself is :func:`mimlens.analysis.compare.compare`; this command reads the flags and calls it.

Each item is an analysis run directory (its documents are reused, its model loaded again from its
``config.yaml``) or a MODEL spelling (random initialisations from ``seed``, default 0). By default attention is
measured per model and CKA between every pair (``--analyses`` picks others). Writes ``config.yaml``,
``compare.json``, ``attention/<label>.json``, ``cka_across.json`` (``{"pairs": [cka.json, ...]}``), the overlaid
attention figures, the CKA heat maps ``figures/cka_across[_<a>_vs_<b>].png`` and ``report.html``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mimlens.analysis.choices import SIMILARITY_DEFAULTS
from mimlens.analysis.run import CKA_CALIBRATION, DATA_DEFAULTS
from mimlens.commands.analyze import add_data_arguments, add_loading_arguments, data_flags

DEFAULTS: dict[str, Any] = {
    "items": [],
    "arch": [],
    "seed": 0,
    "pretrained": False,
    "encoder": "base",
    "data": DATA_DEFAULTS,
    "analysis": {"names": ["attention", "cka"], "batch_size": 64, "prefix_policy": "renorm", "cka_unit": "image",
                 "similarity": SIMILARITY_DEFAULTS, **CKA_CALIBRATION},
    "run": {"device": None, "out": None, "progress": True},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="+", metavar="RUN_OR_MODEL",
                        help="analysis run directories or MODEL spellings (as for mimlens analyze); two or more")
    parser.add_argument("--arch", action="append",
                        help="for checkpoint files: once for all of them, or once per item in order ('-' for none)")
    add_loading_arguments(parser)
    parser.add_argument("--seed", type=int, help="seed of the random initialisations analysed here (default 0)")
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mimlens.analysis.run import check_config
    from mimlens.config import resolve
    from mimlens.data.spec import parse_data_spec
    from mimlens.model_names import check_loading, check_model_spelling, model_slug
    from mimlens.rundir import check_out

    cfg = resolve(DEFAULTS, args.config, {"items": args.items, "arch": args.arch, "seed": args.seed,
                                          "pretrained": args.pretrained, "encoder": args.encoder,
                                          **data_flags(args)})
    # checked before torch is imported: a typo costs no start-up time
    parse_data_spec(cfg["data"]["source"])
    check_loading(cfg["pretrained"], cfg["encoder"])
    check_config(cfg)
    for item in cfg["items"]:
        check_model_spelling(item)
    out = Path(cfg["run"]["out"] or Path("runs") / ("compare_" + "_".join(model_slug(i) for i in cfg["items"])))
    cfg["run"]["out"] = str(out)
    check_out(out, "compare")
    from mimlens import distributed
    from mimlens.analysis.compare import compare
    from mimlens.commands.analyze import say

    try:
        meta = compare(cfg, out, log=say)
        if distributed.is_main():
            from mimlens.report.html import build_report

            labels = " vs ".join(m["label"] for m in meta["models"])
            build_report([out], out / "report.html", title=f"mimlens compare {labels}")
    finally:
        distributed.shutdown()
    return 0
