"""Attention and feature diagnostics per block and head, streamed over image batches in one forward pass each:

* attention NMI per head (:mod:`mimlens.analysis.nmi`; Park et al. 2023, attention collapse): NMI per image (per
  window for Swin) averaged over images (and windows), as the reference averages its per-image values over the
  batch; with the NMI of uniform attention over the same keys as the layer's reference (0 for a ViT; above 0 for a
  shifted Swin block, whose mask splits windows into regions);
* high-frequency share of the block's patch-token map (:mod:`mimlens.analysis.spectrum`; Park et al. 2023): mean
  over channels and images;
* high-norm patch tokens (:mod:`mimlens.analysis.token_norms`; Darcet et al. 2024): mean count per image, the mean
  count per image at each grid position, the norm distribution (mean, median, MAD, threshold, largest), and the mean
  norm of each prefix token (CLS, distillation, registers) apart.

Block outputs are the outputs of ``blocks.<i>`` (ViT family: (B, T, D), prefix tokens first, left out of the maps)
or ``layers.<i>.blocks.<j>`` (Swin: (B, H, W, C)). Every statistic is a float64 sum (or count) that
:class:`DiagnosticsAccumulator` adds per batch and divides once in ``compute()``: one batch of n images equals n
batches of one, and torchrun processes combine with one all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from mimlens import distributed
from mimlens.accumulate import Accumulator
from mimlens.analysis.attention import attention_capture
from mimlens.analysis.capture import AttentionCall, hooks_removed_on_exit
from mimlens.analysis.choices import PREFIX_POLICIES, check_choice
from mimlens.analysis.features import block_names
from mimlens.analysis.inputs import batches_of, model_transform
from mimlens.analysis.nmi import attention_nmi, nmi_cut
from mimlens.analysis.spectrum import DEFAULT_CUTOFF, check_cutoff, high_frequency_share
from mimlens.analysis.token_norms import BINS_PER_DECADE, MODIFIED_Z, NUM_BINS, bin_values, norm_bins, threshold
from mimlens.errors import MimlensError

__all__ = ["BlockInfo", "Diagnostics", "DiagnosticsAccumulator", "diagnostics"]

_NORM_KEYS = ("mean", "median", "mad", "threshold", "max")


@dataclass(frozen=True)
class BlockInfo:
    """One block: its module path, stage, heads, token grid (rows, columns), prefix tokens and Swin window/shift."""

    name: str
    stage: int
    num_heads: int
    grid: tuple[int, int]
    num_prefix: int = 0
    window: tuple[int, int] | None = None
    shift: tuple[int, int] | None = None

    @classmethod
    def from_dict(cls, data: dict) -> BlockInfo:
        def pair(value):
            return None if value is None else (int(value[0]), int(value[1]))

        return cls(str(data["name"]), int(data["stage"]), int(data["num_heads"]), pair(data["grid"]),
                   int(data.get("num_prefix", 0)), pair(data.get("window")), pair(data.get("shift")))


class DiagnosticsAccumulator(Accumulator):
    """Per-block float64 sums of the diagnostics. Feed it every block's attention (:meth:`update_attention`, the
    callback of ``attention_capture``) and then the block's output (:meth:`update_output`) in forward order."""

    def __init__(self, prefix_policy: str = "renorm", cutoff: float = DEFAULT_CUTOFF):
        check_choice("prefix_policy", prefix_policy, PREFIX_POLICIES)
        check_cutoff(cutoff)
        self.prefix_policy, self.cutoff = prefix_policy, cutoff
        self.image_size: tuple[int, int] | None = None
        self.images = torch.zeros((), dtype=torch.float64)
        self.blocks: dict[str, BlockInfo] = {}
        self.uniform_nmi: dict[str, float] = {}
        self.sums: dict[str, dict[str, torch.Tensor]] = {}
        self._cuts: dict = {}

    def update_attention(self, call: AttentionCall) -> None:
        """Add one block's attention NMI for one batch."""
        if self.image_size is None:
            self.image_size = call.image_size
        elif call.image_size != self.image_size:
            raise MimlensError(f"images of {call.image_size} px after images of {self.image_size} px: one "
                               "diagnostics pass needs one image size")
        info = BlockInfo(call.name, call.stage, call.probs.shape[1], call.grid, call.num_prefix, call.window,
                         call.shift)
        key = (call.name, None if call.window_mask is None else tuple(call.window_mask.shape), call.probs.device)
        if key not in self._cuts:
            self._cuts[key] = nmi_cut(call, self.prefix_policy)
        cut, renorm = self._cuts[key], self.prefix_policy == "renorm"
        if call.name not in self.blocks:
            self._add_block(info, call, cut, renorm)
        elif self.blocks[call.name] != info:
            raise MimlensError(f"attention of `{call.name}` ({info}) does not match the block seen before "
                               f"({self.blocks[call.name]})")
        values = attention_nmi(call.probs.detach(), cut, renorm)  # (B, W, H), NaN for windows left out
        sums = self.sums[call.name]
        sums["nmi"] += values.double().nansum((0, 1))
        sums["nmi_count"] += values.shape[0] * cut.num_counted

    def _add_block(self, info: BlockInfo, call: AttentionCall, cut, renorm: bool) -> None:
        n, device = call.probs.shape[-1], call.probs.device
        if call.window is None:
            uniform = torch.full((1, 1, n, n), 1 / n, device=device, dtype=torch.float64)
        else:
            allowed = torch.ones(cut.windows.numel(), n, n, dtype=torch.float64, device=device)
            if call.window_mask is not None:
                allowed = (call.window_mask == 0).to(allowed)
            uniform = (allowed / allowed.sum(-1, keepdim=True))[:, None]
        self.uniform_nmi[info.name] = attention_nmi(uniform, cut, renorm)[:, cut.windows].mean().item()
        positions = info.grid[0] * info.grid[1]
        zeros = {"nmi": (info.num_heads,), "nmi_count": (), "share": (), "share_count": (),
                 "norms": (NUM_BINS, positions), "norm_sum": (), "prefix_norm": (info.num_prefix,)}
        self.blocks[info.name] = info
        self.sums[info.name] = {k: torch.zeros(s, dtype=torch.float64, device=device) for k, s in zeros.items()}

    def update_output(self, name: str, output: torch.Tensor) -> None:
        """Add one block's output for one batch: (B, T, D) with the block's prefix tokens first, or (B, H, W, C)."""
        if name not in self.blocks:
            raise MimlensError(f"output of `{name}` before its attention: feed each block's attention first")
        info, sums = self.blocks[name], self.sums[name]
        x = output.detach()
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        if x.dim() == 3:
            sums["prefix_norm"] += x[:, : info.num_prefix].norm(dim=-1).sum(0, dtype=torch.float64)
            tokens = x[:, info.num_prefix :]
        else:
            tokens = x.flatten(1, 2)
        positions = info.grid[0] * info.grid[1]
        if tokens.shape[1] != positions:
            raise MimlensError(f"output of `{name}` has shape {tuple(output.shape)}; expected {positions} patch "
                               f"tokens of a {info.grid[0]}x{info.grid[1]} grid after {info.num_prefix} prefix tokens")
        maps = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *info.grid)
        share = high_frequency_share(maps, self.cutoff)  # NaN for channels of zero amplitude
        sums["share"] += share.double().nansum()
        sums["share_count"] += (~share.isnan()).sum()
        norms = tokens.norm(dim=-1)
        sums["norm_sum"] += norms.sum(dtype=torch.float64)
        index = norm_bins(norms) * positions + torch.arange(positions, device=norms.device)
        sums["norms"] += torch.bincount(index.flatten(), minlength=NUM_BINS * positions).view(NUM_BINS, positions)
        if name == next(iter(self.blocks)):
            self.images += tokens.shape[0]

    @property
    def num_images(self) -> int:
        return int(round(self.images.item()))

    def sum_tensors(self) -> list[torch.Tensor]:
        return [self.images, *(value for sums in self.sums.values() for value in sums.values())]

    def check_compatible(self, other: DiagnosticsAccumulator) -> None:
        if (other.prefix_policy, other.cutoff, other.image_size, other.blocks) != (
                self.prefix_policy, self.cutoff, self.image_size, self.blocks):
            raise MimlensError(f"cannot merge diagnostics of different passes: prefix policy {other.prefix_policy!r} "
                               f"vs {self.prefix_policy!r}, cutoff {other.cutoff} vs {self.cutoff}, image size "
                               f"{other.image_size} vs {self.image_size}, {len(other.blocks)} vs {len(self.blocks)} "
                               "blocks")

    def all_reduce_(self) -> DiagnosticsAccumulator:
        """Sum the accumulators of all ranks in place (one all-reduce; a no-op in one process)."""
        empty = distributed.all_reduce_sum_(torch.tensor([float(not self.blocks)],
                                                         device=distributed.collective_device()))
        if empty.item():
            raise MimlensError(f"{int(empty.item())} of {distributed.world_size()} ranks saw no images: give every "
                               "rank at least one image (fewer processes or more images)")
        return super().all_reduce_()

    def compute(self) -> Diagnostics:
        """Divide the sums once; apply the high-norm rule to the sketch of all images."""
        if not self.blocks or not self.num_images:
            raise MimlensError("no block output was captured: run at least one image through the model")
        images = self.images.item()
        out: dict[str, list] = {key: [] for key in ("nmi", "share", "high", "positions", "norm", "prefix")}
        for name, info in self.blocks.items():
            sums = {key: value.cpu() for key, value in self.sums[name].items()}
            out["nmi"].append(sums["nmi"] / sums["nmi_count"])
            out["share"].append((sums["share"] / sums["share_count"]).item())
            counts = sums["norms"]
            rule = threshold(counts.sum(1))
            high = bin_values() > rule["threshold"]
            out["high"].append(counts[high].sum().item() / images)
            out["positions"].append(counts[high].sum(0).view(*info.grid) / images)
            filled = bin_values()[counts.sum(1) > 0]
            out["norm"].append({"mean": (sums["norm_sum"] / counts.sum()).item(), **rule, "max": filled.max().item()})
            out["prefix"].append((sums["prefix_norm"] / images).tolist())
        return Diagnostics(list(self.blocks.values()), out["nmi"], [self.uniform_nmi[n] for n in self.blocks],
                           out["share"], out["high"], out["positions"], out["norm"], out["prefix"], self.num_images,
                           self.prefix_policy, self.cutoff, self.image_size)


@dataclass
class Diagnostics:
    """The diagnostics of one model over a set of images, one entry per block (in forward order).

    ``nmi``: per head; ``uniform_nmi``: uniform attention over the same keys; ``high_frequency_share``: mean over
    channels and images; ``high_norm_per_image``: high-norm patch tokens per image; ``high_norm_positions``: (h, w)
    high-norm tokens per image at each position (the fraction of images with one there); ``norms``: the patch-token
    norm distribution (``mean`` exact, the rest on rounded norms); ``prefix_norms``: mean norm of each prefix token.
    """

    blocks: list[BlockInfo]
    nmi: list[torch.Tensor]
    uniform_nmi: list[float]
    high_frequency_share: list[float]
    high_norm_per_image: list[float]
    high_norm_positions: list[torch.Tensor]
    norms: list[dict[str, float]]
    prefix_norms: list[list[float]]
    num_images: int
    prefix_policy: str
    cutoff: float
    image_size: tuple[int, int]
    model: str | None = None

    def block_series(self) -> dict[str, list[float]]:
        """Per-block scalars: mean NMI over heads, high-frequency share, high-norm tokens per image."""
        return {"nmi": [float(v.nanmean()) for v in self.nmi], "high_frequency_share": list(self.high_frequency_share),
                "high_norm_tokens": list(self.high_norm_per_image)}

    def to_json(self, model: str | None = None) -> dict[str, Any]:
        """The ``diagnostics.json`` document (docs/diagnostics.md)."""
        series = self.block_series()
        blocks = []
        for i, info in enumerate(self.blocks):
            blocks.append({
                **{key: list(v) if isinstance(v, tuple) else v for key, v in asdict(info).items()},
                "nmi": _floats(self.nmi[i].tolist()), "nmi_mean": _float(series["nmi"][i]),
                "uniform_nmi": _float(self.uniform_nmi[i]),
                "high_frequency_share": _float(self.high_frequency_share[i]),
                "high_norm_per_image": self.high_norm_per_image[i],
                "high_norm_positions": self.high_norm_positions[i].tolist(),
                "norm": {key: _float(self.norms[i][key]) for key in _NORM_KEYS},
                "prefix_norms": _floats(self.prefix_norms[i]),
            })
        return {
            "model": model if model is not None else self.model, "num_images": self.num_images,
            "image_size": list(self.image_size), "prefix_policy": self.prefix_policy,
            "high_frequency_cutoff": self.cutoff,
            "norm_rule": {"modified_z": MODIFIED_Z, "bins_per_decade": BINS_PER_DECADE},
            "blocks": blocks,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Diagnostics:
        """Rebuild from ``to_json()`` output (a run's ``diagnostics.json``)."""
        try:
            blocks = doc["blocks"]
            return cls(
                blocks=[BlockInfo.from_dict(b) for b in blocks],
                nmi=[torch.tensor([_nan(v) for v in b["nmi"]], dtype=torch.float64) for b in blocks],
                uniform_nmi=[_nan(b["uniform_nmi"]) for b in blocks],
                high_frequency_share=[_nan(b["high_frequency_share"]) for b in blocks],
                high_norm_per_image=[float(b["high_norm_per_image"]) for b in blocks],
                high_norm_positions=[torch.tensor(b["high_norm_positions"], dtype=torch.float64) for b in blocks],
                norms=[{key: _nan(b["norm"][key]) for key in _NORM_KEYS} for b in blocks],
                prefix_norms=[[_nan(v) for v in b["prefix_norms"]] for b in blocks],
                num_images=int(doc["num_images"]), prefix_policy=doc["prefix_policy"],
                cutoff=float(doc["high_frequency_cutoff"]), image_size=tuple(doc["image_size"]),
                model=doc.get("model"),
            )
        except (KeyError, TypeError, IndexError) as error:
            raise MimlensError(f"diagnostics JSON is missing or has a malformed field: {error!r}") from error


def _float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _floats(values: list[float]) -> list[float | None]:
    return [_float(v) for v in values]


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def diagnostics(
    model: nn.Module,
    images: torch.Tensor | Iterable,
    prefix_policy: str = "renorm",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = False,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    cutoff: float = DEFAULT_CUTOFF,
) -> Diagnostics:
    """The diagnostics of every block of a timm ViT-family or Swin model (the models, images, ``transform`` and
    devices of :func:`mimlens.analysis.attention.attention_stats`); ``cutoff``: the low band, a fraction of π.

    Under ``torchrun`` each rank passes its own shard of images; every rank returns the diagnostics of all images.
    """
    from tqdm import tqdm

    accumulator = DiagnosticsAccumulator(prefix_policy, cutoff)
    if device is not None:
        model.to(device)
    parameter = next(model.parameters())
    transform = transform if transform is not None else model_transform(model)
    batches, total = batches_of(images, batch_size)
    modules = dict(model.named_modules())

    def on_output(name, module, args, output):
        accumulator.update_output(name, output[0] if isinstance(output, tuple | list) else output)

    with attention_capture(model, accumulator.update_attention) as names, hooks_removed_on_exit() as handles:
        if names != block_names(model):
            raise MimlensError(f"attention layers {names} are not the blocks {block_names(model)} of "
                               f"{type(model).__name__}")
        handles += [modules[name].register_forward_hook(lambda m, a, o, n=name: on_output(n, m, a, o))
                    for name in names]
        forward = getattr(model, "forward_features", model)
        with torch.no_grad():
            for batch in tqdm(batches, total=total, disable=not progress or not distributed.is_main(),
                              desc="diagnostics"):
                forward(transform(batch.to(parameter.device)).to(dtype=parameter.dtype))
    result = accumulator.all_reduce_().compute()
    result.model = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
    return result
