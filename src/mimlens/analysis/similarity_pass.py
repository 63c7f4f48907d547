"""The measures of :mod:`mimlens.analysis.similarity` between every pair of blocks of one model (block x block),
or between every block of one model (rows) and every block of another (columns), over a stream of images.

Sample: one pooled feature vector per image and block (:func:`mimlens.analysis.features.block_samples`, unit
``pooled``): by default the mean of the patch tokens, because Swin has no CLS token and a masked-image-modeling
loss never trains the CLS token, so the mean token is the representation every model in a comparison has;
``pooled="cls"`` takes the CLS token (as platonic-rep does for vision models). Prefix tokens follow the
prefix policy (``keep`` adds them to the mean).

Streaming and memory:

- Moment measures (``svcca``, ``pwcca``, ``procrustes``): :class:`MomentSums`, float64 sums of n, Σx and ZᵀZ of
  the blocks' features stacked side by side (Z = [X_1 … X_L]), all-reduced like every accumulator; memory flat in
  the number of images: (Σd)² x 8 bytes within a model — 42 MB for 12 blocks of width 192, 680 MB for 12 of
  768 (ViT-B), 1.2 GB for Swin-B's 24 blocks — and Σd_a x Σd_b x 8 bytes plus each block's d² x 8 across two.
- Full-data measures (``mutual_knn``, ``cknna``, ``rsa``): :class:`PooledRows` keeps every image's pooled features,
  n·d·4 bytes per block (float32), and the measures then hold, per block, the n(n-1)/2 ranks of its RDM (n²·4
  bytes) plus n x n float64 kernels (n²·8 bytes) while a pair is computed. More images than ``max_images``
  (default 2048: 2048·768·4 = 6.3 MB of features and 17 MB of ranks per ViT-B block) are refused with one line.

Under torchrun each rank forwards batches ``rank, rank + world_size, …``; the sums are all-reduced, and each rank
writes its rows into zero matrices at the rows' places in the stream, all-reduced too, so every rank holds every
image's features in order and returns the same result as one process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mimlens import distributed
from mimlens.accumulate import SumAccumulator
from mimlens.analysis.capture import eval_mode
from mimlens.analysis.choices import (
    FULL_DATA_MEASURES,
    PREFIX_POLICIES,
    SIMILARITY_DEFAULTS,
    SIMILARITY_MEASURES,
    check_choice,
    check_similarity,
)
from mimlens.analysis.cka import LEVEL, half_size
from mimlens.analysis.features import BlockFeatures, image_batches
from mimlens.analysis.inputs import model_device, model_name, model_transform
from mimlens.analysis.similarity import (
    VARIANCE_KEPT,
    FullData,
    Spectrum,
    centred_scatter,
    cknna,
    mutual_knn,
    procrustes,
    pwcca,
    rsa,
    svcca,
)
from mimlens.analysis.similarity_calibration import calibrate
from mimlens.errors import MimlensError

__all__ = ["MomentSums", "PooledRows", "SimilarityResult", "similarity_matrix"]

FULL_DATA = {"mutual_knn": mutual_knn, "cknna": cknna, "rsa": rsa}
UNCALIBRATED_MOMENTS = (
    "svcca, pwcca, procrustes: no interval or null; they stream the d x d sums of all images, and each half-sample "
    "or permutation of side b would need its own copy of the sums ({size} per replicate here)")
MOMENTS = {"svcca": svcca, "pwcca": pwcca, "procrustes": procrustes}


def _offsets(widths: Sequence[int]) -> list[slice]:
    ends = torch.tensor(list(widths)).cumsum(0).tolist()
    return [slice(end - width, end) for end, width in zip(ends, widths, strict=True)]


class MomentSums(SumAccumulator):
    """Float64 sums of the moment measures: ``images`` (n), ``sum_a`` (Σ of each block's features, stacked),
    ``cross`` (Z_aᵀZ_b of the stacked features) and across models each block's own ``self_a.<i>`` and
    ``self_b.<j>`` (X_iᵀX_i); within one model Z_aᵀZ_a holds them. The sums live on ``device``."""

    def __init__(self, widths_a: Sequence[int], widths_b: Sequence[int] | None = None, device: Any = "cpu"):
        self.within = widths_b is None
        self.widths_a, self.widths_b = list(widths_a), list(widths_a if widths_b is None else widths_b)
        da, db = sum(self.widths_a), sum(self.widths_b)
        shapes: dict[str, tuple[int, ...]] = {"images": (), "sum_a": (da,), "cross": (da, db)}
        if not self.within:
            shapes.update({"sum_b": (db,), **{f"self_a.{i}": (w, w) for i, w in enumerate(self.widths_a)},
                           **{f"self_b.{j}": (w, w) for j, w in enumerate(self.widths_b)}})
        super().__init__(**shapes)
        self.sums = {name: value.to(device) for name, value in self.sums.items()}

    def update(self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor] | None = None) -> MomentSums:
        """Add one batch: each block's (n, d) features of model a (and of model b across models)."""
        if self.within != (b is None):
            raise MimlensError("update(a) within one model, update(a, b) across two models")
        device = self.sums["cross"].device
        za = torch.cat([x.to(device, torch.float64) for x in a], dim=1)
        zb = za if b is None else torch.cat([y.to(device, torch.float64) for y in b], dim=1)
        self.sums["images"] += za.shape[0]
        self.sums["sum_a"] += za.sum(0)
        self.sums["cross"] += za.T @ zb
        if b is not None:
            self.sums["sum_b"] += zb.sum(0)
            for side, blocks in (("a", a), ("b", b)):
                for i, x in enumerate(blocks):
                    x = x.to(device, torch.float64)
                    self.sums[f"self_{side}.{i}"] += x.T @ x
        return self

    def compute(self) -> tuple[list[Spectrum], list[Spectrum], list[list[torch.Tensor]]]:
        """Each block's :class:`Spectrum` (a, b) and the centred cross scatter of every pair [i][j]."""
        n = int(self.sums["images"])
        if n < 2:
            raise MimlensError(f"{n} image(s): the moment measures need at least 2")
        s = self.sums
        cuts_a, cuts_b = _offsets(self.widths_a), _offsets(self.widths_b)
        sum_b = s["sum_a"] if self.within else s["sum_b"]

        def own(side: str, i: int, cut: slice, total: torch.Tensor) -> Spectrum:
            block = s["cross"][cut, cut] if self.within else s[f"self_{side}.{i}"]
            return Spectrum.of(centred_scatter(n, total[cut], total[cut], block))

        spectra_a = [own("a", i, cut, s["sum_a"]) for i, cut in enumerate(cuts_a)]
        spectra_b = spectra_a if self.within else [own("b", j, cut, sum_b) for j, cut in enumerate(cuts_b)]
        cross = [[centred_scatter(n, s["sum_a"][ca], sum_b[cb], s["cross"][ca, cb]) for cb in cuts_b]
                 for ca in cuts_a]
        return spectra_a, spectra_b, cross


class PooledRows:
    """Every image's pooled features per block, kept at their places in the stream (float32, on the CPU)."""

    def __init__(self, blocks: int):
        self.parts: list[list[tuple[int, torch.Tensor]]] = [[] for _ in range(blocks)]

    def add(self, offset: int, rows: Sequence[torch.Tensor]) -> None:
        for parts, x in zip(self.parts, rows, strict=True):
            parts.append((offset, x.detach().to("cpu", torch.float32)))

    def gather(self, total: int, widths: Sequence[int]) -> list[torch.Tensor]:
        """Each block's (total, d) features in stream order, from every rank (one all-reduce of zero-filled
        matrices that each rank fills at its own rows)."""
        full = [torch.zeros(total, width) for width in widths]
        for matrix, parts in zip(full, self.parts, strict=True):
            for offset, x in parts:
                matrix[offset : offset + len(x)] = x
        return distributed.all_reduce_sum_many_(full)


@dataclass
class SimilarityResult:
    """One block x block matrix per measure: rows are ``layers_a``, columns ``layers_b`` (``model_b`` None within
    one model). ``svcca_dims_*``: the directions SVCCA kept per block; NaN cells are explained in ``notes``.

    Calibration of the full-data measures (:mod:`mimlens.analysis.similarity_calibration`; empty when off), per
    measure: ``interval`` the percentile 95 % interval (low, high matrices) of ``replicates`` half-sample
    replicates, ``null_mean`` and ``p_value`` over ``permutations`` permutations of side b's images, both drawn
    from ``seed``."""

    layers_a: list[str]
    layers_b: list[str]
    matrices: dict[str, torch.Tensor]
    num_images: int
    k: int
    pooled: str = "mean"
    prefix_policy: str = "renorm"
    model_a: str = ""
    model_b: str | None = None
    svcca_dims_a: list[int] = field(default_factory=list)
    svcca_dims_b: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    replicates: int = 0
    permutations: int = 0
    interval: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    null_mean: dict[str, torch.Tensor] = field(default_factory=dict)
    p_value: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def within(self) -> bool:
        return self.model_b is None

    @property
    def estimator(self) -> str:
        token = "CLS token" if self.pooled == "cls" else "mean patch token"
        text = (f"{token} per image; k = {self.k} neighbours; SVCCA keeps {VARIANCE_KEPT:.0%} of the variance; "
                "Procrustes angular (radians)")
        if self.interval:
            text += f"; {LEVEL:.0%} interval: {self.replicates} replicates on random halves of the images"
        if self.p_value:
            text += f"; null: {self.permutations} permutations of side b's images"
        return text

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN cells become null)."""
        return {"estimator": self.estimator, "pooled": self.pooled, "prefix_policy": self.prefix_policy,
                "num_images": self.num_images, "k": self.k, "variance_kept": VARIANCE_KEPT,
                "model_a": self.model_a, "model_b": self.model_b,
                "layers_a": list(self.layers_a), "layers_b": list(self.layers_b),
                "measures": {name: _json_matrix(matrix) for name, matrix in self.matrices.items()},
                "svcca_dims_a": list(self.svcca_dims_a), "svcca_dims_b": list(self.svcca_dims_b),
                "notes": list(self.notes), "seed": self.seed, "replicates": self.replicates,
                "permutations": self.permutations,
                "interval": {name: {"low": _json_matrix(low), "high": _json_matrix(high)}
                             for name, (low, high) in self.interval.items()},
                "null_mean": {name: _json_matrix(m) for name, m in self.null_mean.items()},
                "p_value": {name: _json_matrix(m) for name, m in self.p_value.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimilarityResult:
        missing = {"layers_a", "layers_b", "measures", "num_images", "k"} - set(data)
        if missing:
            raise MimlensError(f"similarity JSON is missing the keys {sorted(missing)}")
        matrices = {name: _tensor(rows) for name, rows in data["measures"].items()}
        return cls(list(data["layers_a"]), list(data["layers_b"]), matrices, int(data["num_images"]),
                   int(data["k"]), data.get("pooled", "mean"), data.get("prefix_policy", "renorm"),
                   data.get("model_a", ""), data.get("model_b"), list(data.get("svcca_dims_a", [])),
                   list(data.get("svcca_dims_b", [])), list(data.get("notes", [])), int(data.get("seed", 0)),
                   int(data.get("replicates", 0)), int(data.get("permutations", 0)),
                   {name: (_tensor(v["low"]), _tensor(v["high"])) for name, v in data.get("interval", {}).items()},
                   {name: _tensor(v) for name, v in data.get("null_mean", {}).items()},
                   {name: _tensor(v) for name, v in data.get("p_value", {}).items()})


def _json_matrix(matrix: torch.Tensor) -> list[list[float | None]]:
    return [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()]


def _tensor(rows: list[list[float | None]]) -> torch.Tensor:
    return torch.tensor([[math.nan if v is None else v for v in row] for row in rows], dtype=torch.float64)


def similarity_matrix(
    model_a: nn.Module,
    images: torch.Tensor | Iterable,
    model_b: nn.Module | None = None,
    *,
    measures: Sequence[str] = SIMILARITY_MEASURES,
    pooled: str = "mean",
    prefix_policy: str = "renorm",
    k: int = 10,
    max_images: int = SIMILARITY_DEFAULTS["max_images"],
    replicates: int = SIMILARITY_DEFAULTS["replicates"],
    permutations: int = SIMILARITY_DEFAULTS["permutations"],
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = False,
    transform_a: Any = None,
    transform_b: Any = None,
) -> SimilarityResult:
    """The ``measures`` between every pair of blocks of one model, or of two models (rows a, columns b).

    Images follow the input contract of :mod:`mimlens.analysis.inputs` (raw RGB in [0, 1], an (N, 3, H, W)
    tensor or an iterable of batches, the same images in the same order on every rank); each model sees them
    through its own preprocessing (``transform_a``/``transform_b``, else
    :func:`~mimlens.analysis.inputs.model_transform`). ``k``: the neighbours of mutual k-NN and CKNNA.
    ``max_images``: the cap of the full-data measures (see the module docstring for the memory).
    ``replicates`` half-samples of the images give mutual k-NN, CKNNA and RSA a percentile 95 % interval per cell,
    ``permutations`` of model b's images (of the same model's, within one) their null mean and p-value, drawn
    from ``seed`` alone, so two results on the same images in the same order are paired (0 turns each off;
    :mod:`mimlens.analysis.similarity_calibration`).
    """
    settings = {"measures": list(measures), "pooled": pooled, "k": k, "max_images": max_images,
                "replicates": replicates, "permutations": permutations}
    check_similarity(settings, images=len(images) if torch.is_tensor(images) else None)
    check_choice("prefix_policy", prefix_policy, PREFIX_POLICIES)
    models = [model_a] if model_b is None else [model_a, model_b]
    transforms = [t if t is not None else model_transform(m)
                  for t, m in zip([transform_a, transform_b][: len(models)], models, strict=True)]
    devices = [model_device(m, device) for m in models]
    full = [m for m in measures if m in FULL_DATA_MEASURES]
    with ExitStack() as stack:
        probes = [stack.enter_context(BlockFeatures(m, unit="pooled", prefix_policy=prefix_policy, pooled=pooled))
                  for m in models]
        stack.enter_context(eval_mode(*models))
        sums, rows, total = _stream(images, batch_size, models, probes, transforms, devices, settings,
                                    progress and distributed.is_main())
    sums.all_reduce_()
    result = SimilarityResult(probes[0].layers, probes[-1].layers, {}, total, k, pooled, prefix_policy,
                              model_name(model_a), None if model_b is None else model_name(model_b),
                              seed=seed, replicates=replicates if full else 0,
                              permutations=permutations if full else 0)
    if any(m in MOMENTS for m in measures):
        _moment_matrices(result, sums, [m for m in measures if m in MOMENTS])
        if replicates or permutations:
            size = sum(value.numel() for value in sums.sums.values()) * 8
            result.notes.append(UNCALIBRATED_MOMENTS.format(size=f"{size / 1e6:.3g} MB"))
    if full:
        gathered = [rows[0].gather(total, sums.widths_a)]
        if model_b is not None:
            gathered.append(rows[1].gather(total, sums.widths_b))
        _full_matrices(result, gathered, full, k, devices[0])
    result.matrices = {m: result.matrices[m] for m in measures}
    return result


def _stream(images, batch_size, models, probes, transforms, devices, settings, progress):
    """Forward this rank's share of the batches; return the sums, each model's kept rows and the image count
    (refused as soon as the count passes the cap of the full-data measures)."""
    from tqdm.auto import tqdm

    rank, world = distributed.rank(), distributed.world_size()
    full = any(m in FULL_DATA_MEASURES for m in settings["measures"])
    sums, rows, total = None, [], 0
    for index, raw in enumerate(tqdm(image_batches(images, max(4, batch_size)), desc="similarity", unit="batch",
                                     disable=not progress)):
        offset, total = total, total + len(raw)
        check_similarity(settings, images=total)
        mine = index % world == rank
        if not mine and sums is not None:
            continue
        # a rank without the first batch forwards one of its images to learn the blocks' widths
        features = [_forward(m, probe, t, d, raw if mine else raw[:1])
                    for m, probe, t, d in zip(models, probes, transforms, devices, strict=True)]
        if sums is None:
            widths = [[x.shape[1] for x in blocks] for blocks in features]
            store = devices[0] if devices[0].type != "mps" else torch.device("cpu")
            sums = MomentSums(widths[0], widths[1] if len(models) > 1 else None, device=store)
            rows = [PooledRows(len(w)) for w in widths]
        if mine:
            sums.update(*features)
            if full:
                for keeper, blocks in zip(rows, features, strict=True):
                    keeper.add(offset, blocks)
    if sums is None:
        raise MimlensError("no images arrived: the similarity measures need at least one batch")
    return sums, rows, total


def _forward(model, probe, transform, device, raw) -> list[torch.Tensor]:
    probe.pop()
    with torch.inference_mode():
        model(transform(raw.to(device)))
    captured = probe.pop()
    missing = [name for name in probe.layers if name not in captured]
    if missing:
        raise MimlensError(f"blocks {missing} produced no output (their hooks did not fire)")
    return [captured[name] for name in probe.layers]


def _moment_matrices(result: SimilarityResult, sums: MomentSums, names: list[str]) -> None:
    spectra_a, spectra_b, cross = sums.compute()
    result.svcca_dims_a = [s.svcca_dims() for s in spectra_a]
    result.svcca_dims_b = [s.svcca_dims() for s in spectra_b]
    for name in names:
        result.matrices[name] = torch.tensor([[MOMENTS[name](sa, sb, cross[i][j]) for j, sb in enumerate(spectra_b)]
                                              for i, sa in enumerate(spectra_a)], dtype=torch.float64)
    n = result.num_images
    for name, dims in (("svcca", result.svcca_dims_a + result.svcca_dims_b),
                       ("pwcca", [s.rank for s in spectra_a + spectra_b])):
        if name in names and 2 * max(dims) >= n - 1:
            result.notes.append(f"{name}: blocks keep up to {max(dims)} directions of {n} images, so two blocks can "
                                f"span all {n - 1} centred directions and canonical correlations of 1 arise by "
                                "construction: use many more images than directions")
    for name in names:
        if result.matrices[name].isnan().any():
            result.notes.append(f"{name}: NaN where a block's features have no variance")


def _full_matrices(result: SimilarityResult, gathered: list[list[torch.Tensor]], names: list[str], k: int,
                   device: torch.device) -> None:
    if device.type == "mps":
        device = torch.device("cpu")
    rows = [[x.to(device) for x in side] for side in gathered]
    data_a = [FullData.of(x, k) for x in rows[0]]
    data_b = data_a if len(rows) == 1 else [FullData.of(y, k) for y in rows[1]]
    for name in names:
        result.matrices[name] = torch.tensor([[FULL_DATA[name](a, b) for b in data_b] for a in data_a],
                                             dtype=torch.float64)
        if result.matrices[name].isnan().any():
            result.notes.append(f"{name}: NaN where a block's features are constant (no neighbours or RDM)")
    half = half_size(result.num_images)
    if result.replicates and k >= half - 1:
        result.notes.append(f"no interval: k = {k} neighbours need halves of more than {k + 1} images, and "
                            f"{result.num_images} images give halves of {half}")
        result.replicates = 0
    found = calibrate(rows[0], None if len(rows) == 1 else rows[1], data_a, data_b,
                      {name: result.matrices[name] for name in names}, k, result.replicates, result.permutations,
                      result.seed)
    shifted = [name for name in names if name in ("mutual_knn", "cknna")]
    if result.replicates and shifted:
        result.notes.append(f"{', '.join(shifted)}: the interval is of the measure on halves of {half} images with "
                            f"the same k, which runs higher than on {result.num_images} (chance {k}/{half - 1} "
                            f"against {k}/{result.num_images - 1}): compare it with other analyses of the same "
                            "images, not with the value")
    for name, parts in found.items():
        if "low" in parts:
            result.interval[name] = (parts["low"], parts["high"])
        if "p_value" in parts:
            result.null_mean[name], result.p_value[name] = parts["null_mean"], parts["p_value"]
