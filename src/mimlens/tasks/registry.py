"""The downstream tasks: what each declares (family, primary metric, its config section and recipe, its title and
headline metrics), which function sets up its fine-tuning and which probes it frozen. ``finetune``, the sweep
over dropped blocks, ``probe``, the report and the command line are built from this table, so a task added here
is available everywhere.

This module imports only the standard library, so a command line can list the tasks cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mimlens.registry import Registry, resolve


@dataclass(frozen=True)
class Task:
    """One downstream task.

    ``section``: the defaults of the task's own config section (``cfg[name]``); ``recipe``: what the task
    changes in the shared fine-tuning defaults (:data:`mimlens.tasks.run.COMMON` and the engine's); a ``label``
    of None follows the data (synthetic: ``fine_label``, shape × texture; image folders: ``label``);
    ``setup``: ``"module:function"`` returning a :class:`mimlens.tasks.setups.TaskSetup`; ``probe``:
    ``"module:function"`` (or a callable) that probes every block frozen and returns the task's ``probe.json``
    section (:func:`mimlens.tasks.probes.layerwise.layerwise_probes`), None for a task without one; ``title`` and
    ``columns`` (its headline metrics) label it in tables and figures.
    """

    name: str
    help: str
    family: str  # semantic | geometric | motion | combined
    primary: str
    higher_is_better: bool
    setup: str
    section: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    probe: str | Callable | None = None
    title: str = ""
    columns: tuple[str, ...] = ()

    def setup_function(self) -> Callable:
        return resolve(self.setup)

    def probe_function(self) -> Callable:
        return resolve(self.probe)


_SETUPS = "mimlens.tasks.setups"
_PROBES = "mimlens.tasks.probes.layerwise"

TASKS: Registry = Registry("task", (
    Task("cls", "full fine-tuning for classification (top-1)", "semantic", "top1", True,
         f"{_SETUPS}:setup_classification", {"label": None, "label_smoothing": 0.1, "drop_path": 0.1},
         probe=f"{_PROBES}:cls_probe", title="classification", columns=("top1",)),
    Task("linear", "linear probe on the frozen backbone (top-1)", "semantic", "top1", True, f"{_SETUPS}:setup_linear",
         {"label": None, "block": None, "pool": "cls"},
         {"optim": {"base_lr": 0.08, "weight_decay": 0.0, "layer_decay": 1.0}},
         title="linear probe", columns=("top1",)),
    Task("depth", "monocular depth (RMSE, NYUv2/KITTI metrics)", "geometric", "rmse", False,
         f"{_SETUPS}:setup_depth",
         {"min_depth": 1e-3, "max_depth": 10.0, "crop": "none", "channels": 64, "num_deconv": 3},
         probe=f"{_PROBES}:depth_probe", title="depth", columns=("rmse", "abs_rel")),
    Task("pose", "top-down keypoints (COCO OKS AP)", "geometric", "ap", True, f"{_SETUPS}:setup_pose",
         # sigma in heatmap pixels: SimpleBaseline's / ViTPose's 2, half a token (heatmaps are 4x the feature grid)
         {"sigma": 2.0, "flip_test": True, "channels": 64, "oks_sigmas": None},
         probe=f"{_PROBES}:pose_probe", title="keypoints", columns=("ap", "ap50")),
    Task("track", "single-object tracking (LaSOT SUC)", "motion", "suc", True, f"{_SETUPS}:setup_tracking",
         {"template_size": None, "search_size": None, "template_factor": 2.0, "search_factor": 4.0,
          "head_channels": 64, "sequence_length": 16, "max_gap": 10},
         probe=f"{_PROBES}:track_probe", title="tracking", columns=("suc", "precision")),
    Task("det", "object detection with Faster R-CNN (COCO box AP)", "combined", "ap", True,
         f"{_SETUPS}:setup_detection",
         {"channels": 64,  # width of every pyramid level
          # ViT simple pyramid: strides patch/2 … 2·patch (+4·patch for the RPN). ViTDet's full set adds 4.0
          # (stride patch/4), which at 64 px with patch 8 is a stride-2 map that triples a CPU step's cost
          "scales": [2.0, 1.0, 0.5], "anchor_scale": 4.0, "aspect_ratios": [0.5, 1.0, 2.0], "proposals": 300,
          "rois_per_image": 64, "box_head_dim": 256, "score_thresh": 0.05, "detections_per_img": 100,
          "max_objects": 100, "flip": True},
         {"data": {"synthetic": {"num_objects": [1, 3]}}, "optim": {"base_lr": 0.02, "batch_size": 16},
          "train": {"steps": 300}}, title="detection", columns=("ap", "ap50")),
))


def task(name: str) -> Task:
    return TASKS.entry(name)


def register(entry: Task) -> Task:
    """Add ``entry`` to :data:`TASKS` (a plug-in calls this before the command line is built)."""
    return TASKS.register(entry)
