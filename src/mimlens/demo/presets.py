"""The demo's recipes: ``quick`` (a smoke run, minutes), ``default`` (one hour on a 2-core CPU), ``gpu``, and the
masking study ``masking`` (F2, one hour on a 2-core CPU) with its smoke run ``masking-quick``.

Every preset pre-trains SimMIM, supervised and MoCo v3 from one initialisation (same architecture, same
seed) on the synthetic scenes with the recipe that trains on CPU at tiny scale (1–2 shapes, dimmer
backgrounds, batch 32, lr 5e-4, frozen 2-D sin-cos position embedding). ``budget`` is the expected wall-clock
minutes of each stage kind on the machine the preset is meant for; the demo prints it and scales the
remaining-time estimate by how fast the finished stages actually ran. A masking study (``mask_settings``)
pre-trains SimMIM once per masking setting instead (:mod:`mimlens.demo.masking`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mimlens.errors import MimlensError

TASKS = ("cls", "depth", "pose", "track")  # cls: fine-grained (shape x texture, 32 classes)
MODELS = ("random_init", "simmim", "supervised", "moco")
OBJECTIVES = ("simmim", "supervised", "moco")
DIFFICULTY = {"num_objects": [1, 2], "background_strength": 0.5}


@dataclass(frozen=True)
class MaskSetting:
    """One SimMIM masking setting: blocks of ``mask_patch`` pixels, a fraction ``ratio`` of them masked."""

    mask_patch: int
    ratio: float

    @property
    def name(self) -> str:
        return f"p{self.mask_patch}_r{self.ratio:g}"


@dataclass(frozen=True)
class Preset:
    """One demo recipe. Steps are optimizer updates of ``batch_size`` images."""

    name: str
    arch: str
    arch_kwargs: dict[str, Any]
    pretrain_steps: dict[str, int]
    pretrain_images: int  # synthetic:N, regenerated on the fly
    warmup_steps: int
    mask_patch: int
    moco_dims: tuple[int, int]  # (output dim, MLP width)
    finetune_steps: int
    finetune_images: int  # training scenes (sequences for track)
    eval_images: int
    eval_sequences: int
    sequence_length: int
    analysis_images: int
    analysis_batch: int
    bar_images: int  # validation images for the training bars
    mask_samples: int  # masks per AvgDist setting
    sweep_drop: tuple[int, ...]  # last blocks dropped for F4 (supervised on depth and pose)
    claims: bool  # False: a smoke run whose findings are all not judged
    threads: int | None = None  # torch CPU threads per stage (None: leave as set)
    parallel: int = 1  # stages run at once, each in a worker process (> 1 needs workers == 0)
    workers: int = 0  # data-loading processes per training run (scene generation is ~1,500 images/s per core)
    probe_images: tuple[int, int] = (1024, 256)  # frozen probes: (training, evaluation) synthetic images
    objectives: tuple[str, ...] = OBJECTIVES  # the pre-trainings this preset runs
    budget: dict[str, float] = field(default_factory=dict)  # stage kind -> expected minutes
    mask_settings: tuple[MaskSetting, ...] = ()  # a masking study: one SimMIM pre-training per setting
    tasks: tuple[str, ...] = TASKS  # the fine-tuning tasks
    probe_tasks: tuple[str, ...] = TASKS  # the frozen probes' tasks
    joins: str | None = None  # a masking study's default folder: OUT/masking of this preset's demo
    batch_size: int = 32
    base_lr: float = 4e-3  # per 256 images: 5e-4 at batch 32
    seed: int = 0

    @property
    def models(self) -> tuple[str, ...]:
        """The random initialisation and the pre-trained models, in :data:`MODELS` order."""
        return tuple(m for m in MODELS if m == "random_init" or m in self.objectives)


def stage_kinds(preset: Preset) -> list[tuple[str, str]]:
    """(stage kind, model) for every stage, in the order the demo runs them (a masking study's models are its
    settings)."""
    if preset.mask_settings:
        names = [s.name for s in preset.mask_settings]
        kinds = [("masks", "")] + [("pretrain_simmim", n) for n in names] + [("bars", "")]
        kinds += [(kind, n) for kind in ("analyze", "probe") for n in names]
        return kinds + [(f"finetune_{t}", n) for t in preset.tasks for n in names] + [("findings", "")]
    kinds = [("init", "random_init")] + [(f"pretrain_{o}", o) for o in preset.objectives] + [("bars", "")]
    kinds += [("analyze", m) for m in preset.models] + [("compare", ""), ("masks", "")]
    kinds += [("probe", m) for m in preset.models]
    kinds += [(f"finetune_{t}", m) for t in preset.tasks for m in preset.models]
    return kinds + [("findings", "")]


def sweeps(preset: Preset, task: str, model: str) -> bool:
    """Whether this fine-tuning is a drop-last sweep (F4: the supervised model on the geometric tasks)."""
    return model == "supervised" and task in ("depth", "pose") and len(preset.sweep_drop) > 1


def expected_minutes(preset: Preset, kind: str, model: str) -> float:
    """Budgeted minutes of one stage: a sweep costs one fine-tuning per K."""
    minutes = preset.budget.get(kind, 0.0)
    if kind.startswith("finetune_") and sweeps(preset, kind.removeprefix("finetune_"), model):
        minutes *= len(preset.sweep_drop)
    return minutes


# Measured per stage with the quick preset and with timing probes of the default preset (docs/demo.md).
QUICK = Preset(
    name="quick", arch="vit-micro-32", arch_kwargs={"pos_embed": "sincos"},
    pretrain_steps={"simmim": 20, "supervised": 20, "moco": 10}, pretrain_images=256, warmup_steps=2,
    mask_patch=8, moco_dims=(32, 64), finetune_steps=4, finetune_images=64, eval_images=16, eval_sequences=2,
    sequence_length=6, analysis_images=16, analysis_batch=16, bar_images=32, mask_samples=10, sweep_drop=(0, 1),
    claims=False, batch_size=16, threads=1,  # at this size a second thread costs more in sync than it gains
    probe_images=(64, 32),
    budget={"init": 0.02, "pretrain_simmim": 0.1, "pretrain_supervised": 0.1, "pretrain_moco": 0.1, "bars": 0.02,
            "analyze": 0.05, "compare": 0.05, "masks": 0.05, "finetune_cls": 0.04, "finetune_depth": 0.04,
            "finetune_pose": 0.06, "finetune_track": 0.05, "findings": 0.05, "probe": 0.1},
)

DEFAULT = Preset(
    name="default", arch="vit-tiny-64", arch_kwargs={"pos_embed": "sincos"},
    # SimMIM: 51k images (locality appeared between 22k and 45k); supervised: 800 steps past where its loss
    # starts falling (validation top-1 0.30 after 2,000 steps against the bar's 0.25). MoCo v3 is left to the gpu
    # preset: 500 steps (17 of the 60 minutes) left it untrained (uniform attention in every block), and a bar of
    # its own needs several times that (docs/demo.md)
    objectives=("simmim", "supervised"),
    pretrain_steps={"simmim": 1600, "supervised": 1800}, pretrain_images=8192, warmup_steps=200,
    # 16 px mask blocks = 2 x 2 tokens, the paper's ViT masking (32 px blocks over 16 px patches); with 8 px
    # (one token) the nearest-visible-pixel fill stays ahead of SimMIM within this budget (docs/demo.md)
    # fine-tuning: 180 steps; 200 was where a random-init depth fine-tuning first beat the mean depth map, with the
    # three-deconvolution decoder (docs/demo.md)
    mask_patch=16, moco_dims=(128, 1024), finetune_steps=180, finetune_images=2048, eval_images=512,
    eval_sequences=64, sequence_length=12, analysis_images=256, analysis_batch=64, bar_images=256, mask_samples=100,
    # F4 compares one block dropped (K = 1) with the full model; the frozen probes show every block
    sweep_drop=(0, 1), claims=True, probe_images=(768, 256),
    # two stages at a time with one torch thread each: on 2 cores a 1-thread SimMIM step runs at about 47
    # images/s beside another stage, against 72 images/s for one stage on both threads (docs/demo.md)
    threads=1, parallel=2,
    # minutes per stage on 2 idle cores of the build machine (pre-training at about 33 images/s per stage), from
    # the clean-clone `make demo` in docs/demo.md
    budget={"init": 0.05, "pretrain_simmim": 26.0, "pretrain_supervised": 28.0, "bars": 0.15, "analyze": 0.15,
            "compare": 0.3, "masks": 0.1, "finetune_cls": 2.8, "finetune_depth": 3.6, "finetune_pose": 3.6,
            "finetune_track": 3.9, "findings": 0.5, "probe": 1.8},
)


GPU = Preset(
    name="gpu", arch="timm:vit_small_patch16_224",
    arch_kwargs={"img_size": 64, "patch_size": 8, "pos_embed": "sincos"},  # ViT-S (12 blocks, 384 wide) at 64 px
    pretrain_steps={"simmim": 20000, "supervised": 20000, "moco": 10000}, pretrain_images=65536,
    warmup_steps=1000, mask_patch=16, moco_dims=(256, 2048), finetune_steps=2000, finetune_images=8192,
    eval_images=512, eval_sequences=32, sequence_length=16, analysis_images=1024, analysis_batch=128,
    bar_images=1024, mask_samples=200, sweep_drop=(0, 1, 2, 3, 4), claims=True, batch_size=128, workers=8,
    probe_images=(4096, 1024),
    budget={"init": 0.1, "pretrain_simmim": 30.0, "pretrain_supervised": 25.0, "pretrain_moco": 35.0, "bars": 0.5,
            "analyze": 0.5, "compare": 1.0, "masks": 0.3, "finetune_cls": 2.0, "finetune_depth": 2.5,
            "finetune_pose": 3.0, "finetune_track": 3.0, "findings": 0.5, "probe": 1.0},
)

# The masking study (F2). With 8 px tokens a mask block is at least one token, so AvgDist at 64 px spans 2.3 px
# (one token masked in ten) to 19 px: the four settings lie below the moderate band (2.9-5.7 px, the paper's
# 10-20 px at 224 px scaled to 64 px), in it, above it (the default preset's masking) and far above it.
MASKING = Preset(
    name="masking", arch="vit-tiny-64", arch_kwargs={"pos_embed": "sincos"}, objectives=("simmim",),
    mask_settings=(MaskSetting(8, 0.2), MaskSetting(8, 0.6), MaskSetting(16, 0.6), MaskSetting(32, 0.6)),
    # four pre-trainings of 1,000 steps (32k images) fit the hour beside their fine-tunings: 1,600 as in the
    # default preset would take 26 minutes each
    pretrain_steps={"simmim": 1000}, pretrain_images=8192, warmup_steps=125, mask_patch=16, moco_dims=(128, 1024),
    finetune_steps=DEFAULT.finetune_steps, finetune_images=2048, eval_images=512, eval_sequences=64,
    sequence_length=12, analysis_images=256, analysis_batch=64, bar_images=256, mask_samples=100, sweep_drop=(0,),
    claims=True, threads=1, parallel=2, probe_images=DEFAULT.probe_images, tasks=("depth", "pose"),
    probe_tasks=("depth", "pose", "track"), joins="default",
    budget={"masks": 0.1, "pretrain_simmim": 16.5, "bars": 0.1, "analyze": 0.1, "probe": 1.4,
            "finetune_depth": 3.6, "finetune_pose": 3.6, "findings": 0.3},
)

MASKING_QUICK = Preset(
    name="masking-quick", arch="vit-micro-32", arch_kwargs={"pos_embed": "sincos"}, objectives=("simmim",),
    mask_settings=(MaskSetting(8, 0.2), MaskSetting(8, 0.6), MaskSetting(16, 0.6)),
    pretrain_steps={"simmim": 10}, pretrain_images=128, warmup_steps=2, mask_patch=8, moco_dims=(32, 64),
    finetune_steps=3, finetune_images=32, eval_images=16, eval_sequences=2, sequence_length=6, analysis_images=16,
    analysis_batch=16, bar_images=16, mask_samples=10, sweep_drop=(0,), claims=False, batch_size=16, threads=1,
    probe_images=(32, 16), tasks=("depth", "pose"), probe_tasks=("depth", "pose", "track"), joins="quick",
    budget={"masks": 0.05, "pretrain_simmim": 0.05, "bars": 0.02, "analyze": 0.03, "probe": 0.05,
            "finetune_depth": 0.04, "finetune_pose": 0.05, "findings": 0.05},
)

PRESETS = {p.name: p for p in (QUICK, DEFAULT, GPU, MASKING, MASKING_QUICK)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise MimlensError(f"demo preset {name!r} is unknown: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]
