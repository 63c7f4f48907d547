"""Averaged attention distance, attention entropy and head diversity (KL between heads), streamed.

Definitions, for one head, one image and one query q over the keys k it attends to:

* distance  d_q = Σ_k Â_qk ‖p_q − p_k‖₂ in input pixels (token centres from ``geometry``);
* entropy   H_q = −Σ_k Â_qk ln Â_qk with 0·ln 0 = 0 (``torch.xlogy``'s convention), and H_q / ln(n_q)
  for the n_q keys the query may attend to under the policy (averaged over queries with n_q ≥ 2);
* head KL   KL_q(h‖g) = Σ_k Â^h_qk (ln Â^h_qk − ln max(Â^g_qk, 1e-8)), all pairs of a layer in one
  batched matmul of Â^h with the floored log of Â^g over the key axis.

Each value is averaged over queries and images. Queries are patch tokens only. Prefix keys (CLS,
distillation, registers) follow ``prefix_policy``: ``renorm`` (default) drops them and renormalises the
row over patch keys; ``drop`` drops them without renormalising; ``keep`` keeps them as keys at distance 0.
Under ``renorm`` a query that puts all of its mass on prefix keys has no patch distribution: it is
excluded from that head's means and counted in ``degenerate_queries``.

Swin windows: a query attends to the keys of its window that the shift mask allows; masked pairs are
structural zeros (never keys, not counted in n_q). Zero tokens that timm pads onto a map the window does
not divide are never queries; as keys they are treated like prefix keys under the same policy.

Everything is a sum of per-query terms accumulated in float64 by ``AttentionAccumulator`` and divided
once in ``compute()``, so one batch of n images equals n batches of one, and ranks of a ``torchrun`` job
combine with one all-reduce. Per-batch arithmetic runs in float32 (half-precision maps are upcast first).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from mimlens import distributed
from mimlens.accumulate import Accumulator
from mimlens.analysis.capture import AttentionCall, vit_attention_capture
from mimlens.analysis.choices import PREFIX_POLICIES, check_choice
from mimlens.analysis.geometry import pairwise_distance, window_layout
from mimlens.analysis.inputs import batches_of, model_transform
from mimlens.analysis.swin import swin_attention_capture
from mimlens.errors import MimlensError
from mimlens.io import save_json, save_text
from mimlens.models.family import find_family

__all__ = [
    "KL_FLOOR",
    "AttentionAccumulator",
    "AttentionStats",
    "LayerInfo",
    "attention_capture",
    "attention_stats",
]

KL_FLOOR = 1e-8
_SUMS = ("distance", "entropy", "entropy_norm", "queries", "norm_queries", "degenerate", "kl", "pairs")
_UNIFORM_KEYS = ("distance_px", "distance_frac", "entropy", "entropy_norm")


@dataclass(frozen=True)
class LayerInfo:
    """Where one attention layer's tokens sit.

    Attributes:
        name: module path of the block (``blocks.3``, ``layers.1.blocks.0``).
        stage: resolution stage (always 0 in a plain ViT).
        num_heads: attention heads.
        grid: token map (rows, columns).
        stride_px: token stride in input pixels (rows, columns).
        num_keys: keys per query row of the captured attention (ViT: prefix + patch tokens; Swin: window
            slots, of which padding and masked pairs may be excluded per query).
        num_prefix: prefix tokens in a ViT sequence.
        window: Swin window (rows, columns) after timm's clamping, else None.
        shift: Swin shift (rows, columns) after clamping, else None.
    """

    name: str
    stage: int
    num_heads: int
    grid: tuple[int, int]
    stride_px: tuple[int, int]
    num_keys: int
    num_prefix: int = 0
    window: tuple[int, int] | None = None
    shift: tuple[int, int] | None = None

    @classmethod
    def from_dict(cls, data: dict) -> LayerInfo:
        def pair(value):
            return None if value is None else (int(value[0]), int(value[1]))

        return cls(
            name=str(data["name"]),
            stage=int(data["stage"]),
            num_heads=int(data["num_heads"]),
            grid=pair(data["grid"]),
            stride_px=pair(data["stride_px"]),
            num_keys=int(data["num_keys"]),
            num_prefix=int(data.get("num_prefix", 0)),
            window=pair(data.get("window")),
            shift=pair(data.get("shift")),
        )


@dataclass(frozen=True)
class _Plan:
    """How one layer's attention is cut and weighted under a prefix policy (cached per geometry)."""

    query_start: int  # first patch-token row
    key_start: int  # first key column the policy keeps
    num_windows: int
    distance: torch.Tensor  # (W·Q·K,) float64 pixels, 0 for prefix/padding keys
    key_mask: torch.Tensor | None  # (W, 1, Q, K) float32: 1 for counted keys of real queries, None = all
    is_query: torch.Tensor | None  # (W, 1, Q) bool: real (non-padding) queries, None = all
    inv_log_keys: torch.Tensor  # (W, 1, Q) float64: 1 / ln(n_q), 0 where n_q <= 1
    num_queries: int  # real queries per image
    num_norm_queries: int  # real queries per image with n_q >= 2


def _inv_log(n: torch.Tensor) -> torch.Tensor:
    n = n.to(torch.float64)
    return torch.where(n > 1, 1 / n.clamp_min(2).log(), torch.zeros_like(n))


def _sequence_plan(call: AttentionCall, policy: str, device: torch.device) -> _Plan:
    p = call.num_prefix
    distance = pairwise_distance(call.grid, call.stride_px)
    if policy == "keep":
        distance = torch.cat([distance.new_zeros(distance.shape[0], p), distance], dim=1)
    num_keys = torch.full((1, 1, distance.shape[0]), distance.shape[1])
    return _Plan(
        query_start=p,
        key_start=0 if policy == "keep" else p,
        num_windows=1,
        distance=distance.to(device).reshape(-1),
        key_mask=None,
        is_query=None,
        inv_log_keys=_inv_log(num_keys).to(device),
        num_queries=distance.shape[0],
        num_norm_queries=distance.shape[0] if distance.shape[1] > 1 else 0,
    )


def _window_plan(call: AttentionCall, policy: str, device: torch.device) -> _Plan:
    layout = window_layout(call.grid, call.window, call.shift, call.stride_px)
    num_windows, n = layout.is_token.shape
    allowed = torch.ones(num_windows, n, n, dtype=torch.bool)
    if call.window_mask is not None:
        if tuple(call.window_mask.shape) != (num_windows, n, n):
            raise MimlensError(
                f"shift mask of `{call.name}` has shape {tuple(call.window_mask.shape)}; expected "
                f"({num_windows}, {n}, {n}) for a {call.grid[0]}x{call.grid[1]} map in {call.window} windows"
            )
        allowed = call.window_mask.detach().cpu() == 0
    counted = allowed if policy == "keep" else allowed & layout.is_token[:, None, :]
    rows = counted & layout.is_token[:, :, None]
    trivial = bool(rows.all())
    return _Plan(
        query_start=0,
        key_start=0,
        num_windows=num_windows,
        distance=layout.distance.to(device).reshape(-1),
        key_mask=None if trivial else rows.to(device, torch.float32)[:, None],
        is_query=None if trivial else layout.is_token.to(device)[:, None],
        inv_log_keys=_inv_log(counted.sum(-1)).to(device)[:, None],
        num_queries=int(layout.is_token.sum()),
        num_norm_queries=int((layout.is_token & (counted.sum(-1) > 1)).sum()),
    )


class _Workspace:
    """Scratch tensors reused across batches and layers of one shape, stored heads-before-windows.

    On CPU a fresh multi-megabyte tensor page-faults on first touch, which costs as much as the arithmetic
    done in it, so three buffers per shape are kept. Each is laid out (B, H, W, Q, K) and handed out as a
    (B, W, H, Q, K) view: the head-KL matmul and the distance product then contract over all windows of
    an image at once instead of one small product per window.
    """

    def __init__(self):
        self._buffers: dict = {}

    def get(self, like: torch.Tensor) -> list[torch.Tensor]:
        key = (tuple(like.shape), like.dtype, like.device)
        if key not in self._buffers:
            if len(self._buffers) >= 8:
                self._buffers.clear()
            b, w, h, q, k = like.shape
            self._buffers[key] = [
                torch.empty(b, h, w, q, k, dtype=like.dtype, device=like.device).transpose(1, 2) for _ in range(3)
            ]
        return self._buffers[key]


def _head_sums(
    probs: torch.Tensor, plan: _Plan, renorm: bool, workspace: _Workspace | None = None
) -> dict[str, torch.Tensor]:
    """Per-head float64 sums over the queries of one batch of (B·W, H, N, N) attention maps."""
    num_heads = probs.shape[1]
    p = probs.reshape(-1, plan.num_windows, *probs.shape[1:])[..., plan.query_start :, plan.key_start :]
    if p.dtype in (torch.float16, torch.bfloat16):
        p = p.float()
    own, log_p, scratch = (workspace or _Workspace()).get(p)
    if plan.key_mask is not None:
        p = torch.mul(p, plan.key_mask, out=own)
    batch, windows, _, q, k = p.shape
    degenerate = None
    if renorm:
        mass = p.sum(-1, keepdim=True)
        p = torch.div(p, mass.clamp_min(torch.finfo(p.dtype).tiny), out=own)
        degenerate = mass.squeeze(-1) == 0
        if plan.is_query is not None:
            degenerate &= plan.is_query
    elif p is not own and (windows > 1 or not p.is_contiguous()):
        p = own.copy_(p)

    def per_image(x: torch.Tensor) -> torch.Tensor:  # (B, W, H, Q, K) view of a (B, H, W, Q, K) tensor
        return x.transpose(1, 2).view(batch, num_heads, windows * q * k)

    # One logarithm serves entropy and KL. Clamping ln p at ln(smallest normal number) makes p·ln p exactly
    # xlogy(p, p) for p = 0 (ln 0 = −inf) and p >= tiny (and within tiny·88 per key between), never ln(p + eps).
    torch.log(p, out=log_p).clamp_min_(math.log(torch.finfo(p.dtype).tiny))
    neg_entropy = torch.mul(p, log_p, out=scratch).sum(-1)  # (B, W, H, Q); 0 for excluded queries
    log_floored = log_p.clamp_min_(math.log(KL_FLOOR))
    rows = per_image(p)
    cross = torch.bmm(rows, per_image(log_floored).transpose(1, 2)).sum(0, dtype=torch.float64)
    distance = (rows.view(batch * num_heads, -1) @ plan.distance.to(p.dtype)).view(batch, num_heads)
    sums = {
        "distance": distance.sum(0, dtype=torch.float64),
        "entropy": -neg_entropy.sum((0, 1, 3), dtype=torch.float64),
        "entropy_norm": -(neg_entropy * plan.inv_log_keys).sum((0, 1, 3), dtype=torch.float64),
    }
    if degenerate is None or not degenerate.any():
        # Every real query counts in every head: KL(h‖g) sums to Σ_q −H^h_q − Σ_q Σ_k Â^h ln Â^g.
        count = torch.full((num_heads,), float(batch * plan.num_queries), dtype=torch.float64, device=p.device)
        return {
            **sums,
            "queries": count,
            "norm_queries": torch.full_like(count, float(batch * plan.num_norm_queries)),
            "degenerate": torch.zeros_like(count),
            "kl": -sums["entropy"][:, None] - cross,
            "pairs": count[:, None].expand(num_heads, num_heads).clone(),
        }
    return {**sums, **_degenerate_sums(neg_entropy, degenerate, cross, plan)}


def _degenerate_sums(neg_entropy, degenerate, cross, plan: _Plan) -> dict[str, torch.Tensor]:
    """Counts and head KL when some queries of some heads put all their mass on prefix keys (``renorm``).

    Such a query is left out of that head's means and of every pair with that head: the pair (h, g)
    averages over the queries valid in both. Its row is all zeros, so its own entropy and distance terms
    are already 0; only the KL terms against it (where its floored log is ln 1e-8 on every key) are taken
    back out.
    """
    batch, windows, num_heads, q = neg_entropy.shape
    valid = ~degenerate if plan.is_query is None else plan.is_query & ~degenerate

    def per_head(x: torch.Tensor) -> torch.Tensor:  # (B, W, H, Q) -> (H, B·W·Q) float64
        return x.expand(batch, windows, num_heads, q).permute(2, 0, 1, 3).reshape(num_heads, -1).double()

    w, dgn = per_head(valid), per_head(degenerate)
    return {
        "queries": w.sum(1),
        "norm_queries": per_head(valid & (plan.inv_log_keys > 0)).sum(1),
        "degenerate": dgn.sum(1),
        "kl": per_head(neg_entropy) @ w.T - cross + math.log(KL_FLOOR) * (w @ dgn.T),
        "pairs": w @ w.T,
    }


def _uniform(plan: _Plan, call: AttentionCall, renorm: bool) -> dict[str, float]:
    """The statistics of uniform attention over every key the layer's queries can attend to."""
    n = call.probs.shape[-1]
    if plan.num_windows == 1 and call.window is None:
        probs = torch.full((1, 1, n, n), 1 / n, dtype=torch.float64, device=plan.distance.device)
    else:
        allowed = torch.ones(plan.num_windows, n, n, dtype=torch.float64, device=plan.distance.device)
        if call.window_mask is not None:
            allowed = (call.window_mask == 0).to(allowed)
        probs = (allowed / allowed.sum(-1, keepdim=True))[:, None]
    sums = _head_sums(probs, plan, renorm)
    queries = sums["queries"][0].item()
    distance = sums["distance"][0].item() / queries
    return {
        "distance_px": distance,
        "distance_frac": distance / _side(call.image_size),
        "entropy": sums["entropy"][0].item() / queries,
        "entropy_norm": sums["entropy_norm"][0].item() / sums["norm_queries"][0].item(),
    }


def _side(image_size: tuple[int, int]) -> float:
    """The image side distances are divided by: √(height·width), the side itself for square images."""
    return math.sqrt(image_size[0] * image_size[1])


class AttentionAccumulator(Accumulator):
    """Streaming sums of attention distance, entropy and head KL per layer and head (float64), and the number of
    images (a float64 sum too, so that merging and all-reducing add it with the rest).

    Feed it ``AttentionCall`` objects (the callback of ``attention_capture``); ``compute()`` divides once.
    Sums live on the device of the attention maps, so a GPU pass never waits on the host per batch.
    """

    def __init__(self, prefix_policy: str = "renorm"):
        check_choice("prefix_policy", prefix_policy, PREFIX_POLICIES)
        self.prefix_policy = prefix_policy
        self.image_size: tuple[int, int] | None = None
        self.images = torch.zeros((), dtype=torch.float64)
        self.dtype: str | None = None
        self.layers: list[LayerInfo] = []
        self.uniform: list[dict[str, float]] = []
        self.sums: list[dict[str, torch.Tensor]] = []
        self._plans: dict = {}
        self._workspace = _Workspace()

    def update(self, call: AttentionCall) -> None:
        """Add one layer's attention for one batch."""
        if self.image_size is None:
            self.image_size = call.image_size
        elif call.image_size != self.image_size:
            raise MimlensError(
                f"images of {call.image_size[0]}x{call.image_size[1]} px after images of "
                f"{self.image_size[0]}x{self.image_size[1]} px: one analysis needs one image size"
            )
        plan = self._plan(call)
        info = LayerInfo(
            name=call.name,
            stage=call.stage,
            num_heads=call.probs.shape[1],
            grid=call.grid,
            stride_px=call.stride_px,
            num_keys=call.probs.shape[-1],
            num_prefix=call.num_prefix,
            window=call.window,
            shift=call.shift,
        )
        if call.layer == len(self.layers):
            self.layers.append(info)
            self.uniform.append(_uniform(plan, call, self.prefix_policy == "renorm"))
            self.sums.append(None)
            self.dtype = self.dtype or str(call.probs.dtype).removeprefix("torch.")
        elif call.layer > len(self.layers) or self.layers[call.layer] != info:
            raise MimlensError(
                f"attention of layer {call.layer} (`{call.name}`) does not match the layers seen so far "
                f"({len(self.layers)} layers, {self.layers[call.layer] if call.layer < len(self.layers) else 'none'})"
            )
        sums = _head_sums(call.probs.detach(), plan, self.prefix_policy == "renorm", self._workspace)
        if self.sums[call.layer] is None:
            self.sums[call.layer] = sums
        else:
            for key, value in sums.items():
                self.sums[call.layer][key] += value
        if call.layer == 0:
            self.images += call.probs.shape[0] // plan.num_windows

    @property
    def num_images(self) -> int:
        return int(round(self.images.item()))

    def sum_tensors(self) -> list[torch.Tensor]:
        return [self.images, *(s[key] for s in self.sums for key in _SUMS)]

    def check_compatible(self, other: AttentionAccumulator) -> None:
        if (other.prefix_policy, other.image_size, other.layers) != (self.prefix_policy, self.image_size, self.layers):
            raise MimlensError(
                "cannot merge attention sums of different analyses: prefix policy "
                f"{other.prefix_policy!r} vs {self.prefix_policy!r}, image size {other.image_size} vs "
                f"{self.image_size}, {len(other.layers)} vs {len(self.layers)} layers"
            )

    def _plan(self, call: AttentionCall) -> _Plan:
        mask = call.window_mask
        key = (call.layer, call.grid, call.stride_px, call.num_prefix, call.window, call.shift,
               None if mask is None else tuple(mask.shape), call.probs.device)  # fmt: skip
        if key not in self._plans:
            build = _sequence_plan if call.window is None else _window_plan
            self._plans[key] = build(call, self.prefix_policy, call.probs.device)
        return self._plans[key]

    def merge(self, other: AttentionAccumulator) -> AttentionAccumulator:
        """Add another accumulator's sums (same policy, image size and layers) into this one; an empty one on
        either side takes the other's."""
        if not other.layers:
            return self
        if not self.layers:
            self.load_state_dict(other.state_dict())
            return self
        return super().merge(other)

    def state_dict(self) -> dict:
        """Plain-data state (CPU tensors) for ``torch.save`` and ``load_state_dict``."""
        return {
            "prefix_policy": self.prefix_policy,
            "image_size": self.image_size,
            "num_images": self.num_images,
            "dtype": self.dtype,
            "layers": [asdict(info) for info in self.layers],
            "uniform": [dict(u) for u in self.uniform],
            "sums": [{key: s[key].detach().cpu().clone() for key in _SUMS} for s in self.sums],
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"prefix_policy", "image_size", "num_images", "dtype", "layers", "uniform", "sums"} - set(state)
        if missing:
            raise MimlensError(f"attention accumulator state lacks keys {sorted(missing)}")
        check_choice("prefix_policy", state["prefix_policy"], PREFIX_POLICIES)
        self.prefix_policy = state["prefix_policy"]
        self.image_size = None if state["image_size"] is None else tuple(state["image_size"])
        self.images = torch.tensor(float(state["num_images"]), dtype=torch.float64)
        self.dtype = state["dtype"]
        self.layers = [LayerInfo.from_dict(d) for d in state["layers"]]
        self.uniform = [dict(u) for u in state["uniform"]]
        self.sums = [{key: s[key].to(torch.float64).clone() for key in _SUMS} for s in state["sums"]]
        self._plans = {}

    def all_reduce_(self) -> AttentionAccumulator:
        """Sum the accumulators of all ranks in place (one all-reduce; a no-op in one process)."""
        empty = distributed.all_reduce_sum_(torch.tensor([float(not self.layers)],
                                                         device=distributed.collective_device()))
        if empty.item():
            raise MimlensError(
                f"{int(empty.item())} of {distributed.world_size()} ranks saw no images: give every rank at least one "
                "image (fewer processes or more images)"
            )
        return super().all_reduce_()

    def compute(self) -> AttentionStats:
        """Divide the sums once: per-layer, per-head means over queries and images."""
        if not self.layers:
            raise MimlensError("no attention was captured: run at least one image through the model")
        side = _side(self.image_size)
        out: dict[str, list] = {key: [] for key in ("distance_px", "entropy", "entropy_norm", "head_kl")}
        kl_means = []
        for s in self.sums:
            s = {key: value.cpu() for key, value in s.items()}
            out["distance_px"].append(s["distance"] / s["queries"])
            out["entropy"].append(s["entropy"] / s["queries"])
            out["entropy_norm"].append(s["entropy_norm"] / s["norm_queries"])
            kl = (s["kl"] / s["pairs"]).fill_diagonal_(0.0)
            out["head_kl"].append(kl)
            off_diagonal = ~torch.eye(kl.shape[0], dtype=torch.bool)
            kl_means.append(kl[off_diagonal].mean().item() if kl.shape[0] > 1 else math.nan)
        return AttentionStats(
            layers=list(self.layers),
            distance_px=out["distance_px"],
            distance_frac=[d / side for d in out["distance_px"]],
            entropy=out["entropy"],
            entropy_norm=out["entropy_norm"],
            head_kl=out["head_kl"],
            head_kl_mean=kl_means,
            queries=[s["queries"].cpu() for s in self.sums],
            degenerate_queries=[s["degenerate"].cpu() for s in self.sums],
            uniform=[dict(u) for u in self.uniform],
            num_images=self.num_images,
            prefix_policy=self.prefix_policy,
            image_size=self.image_size,
            dtype=self.dtype,
        )


@dataclass
class AttentionStats:
    """Per-layer, per-head attention statistics of one model over a set of images.

    Lists are indexed by layer; each tensor holds one float64 value per head. ``distance_frac`` divides
    ``distance_px`` by √(height·width) of the analysed image (its side when square). Means over zero
    queries (a head whose every query was degenerate; ``head_kl_mean`` of a one-head layer) are NaN,
    written as null in JSON. ``uniform`` holds, per layer, the same statistics for uniform attention over
    every key the layer's queries can attend to: the value an untrained layer gives, which every figure
    should be read against (its head KL is 0).
    """

    layers: list[LayerInfo]
    distance_px: list[torch.Tensor]
    distance_frac: list[torch.Tensor]
    entropy: list[torch.Tensor]
    entropy_norm: list[torch.Tensor]
    head_kl: list[torch.Tensor]
    head_kl_mean: list[float]
    queries: list[torch.Tensor]
    degenerate_queries: list[torch.Tensor]
    uniform: list[dict[str, float]]
    num_images: int
    prefix_policy: str
    image_size: tuple[int, int]
    dtype: str | None = None
    model: str | None = None

    @property
    def layer_names(self) -> list[str]:
        return [info.name for info in self.layers]

    def uniform_reference(self) -> AttentionStats:
        """The same statistics for uniform attention on the same layers, grids and windows."""

        def filled(key):
            return [torch.full((info.num_heads,), u[key], dtype=torch.float64)
                    for info, u in zip(self.layers, self.uniform, strict=True)]  # fmt: skip

        return replace(
            self,
            distance_px=filled("distance_px"),
            distance_frac=filled("distance_frac"),
            entropy=filled("entropy"),
            entropy_norm=filled("entropy_norm"),
            head_kl=[torch.zeros(info.num_heads, info.num_heads, dtype=torch.float64) for info in self.layers],
            head_kl_mean=[0.0 if info.num_heads > 1 else math.nan for info in self.layers],
            degenerate_queries=[torch.zeros_like(q) for q in self.queries],
            model=f"uniform attention ({self.model})" if self.model else "uniform attention",
        )

    def to_json(self, model: str | None = None) -> dict:
        """The ``attention.json`` run-directory contract (docs/attention.md), plus per-layer uniform references and
        counts."""
        layers = []
        for i, info in enumerate(self.layers):
            layers.append(
                {
                    **{key: list(v) if isinstance(v, tuple) else v for key, v in asdict(info).items()},
                    "distance_px": _floats(self.distance_px[i]),
                    "distance_frac": _floats(self.distance_frac[i]),
                    "entropy": _floats(self.entropy[i]),
                    "entropy_norm": _floats(self.entropy_norm[i]),
                    "head_kl": [_floats(row) for row in self.head_kl[i]],
                    "head_kl_mean": _float(self.head_kl_mean[i]),
                    "queries": _floats(self.queries[i]),
                    "degenerate_queries": _floats(self.degenerate_queries[i]),
                    "uniform": {key: _float(self.uniform[i][key]) for key in _UNIFORM_KEYS},
                }
            )
        return {
            "model": model if model is not None else self.model,
            "num_images": self.num_images,
            "image_size": list(self.image_size),
            "prefix_policy": self.prefix_policy,
            "dtype": self.dtype,
            "kl_floor": KL_FLOOR,
            "distance_frac_of": "sqrt(image height * image width)",
            "layers": layers,
        }

    @classmethod
    def from_json(cls, data: dict) -> AttentionStats:
        """Rebuild from ``to_json()`` output (e.g. a run's ``attention.json``)."""
        try:
            layers = data["layers"]

            def per_layer(key):
                return [_tensor(layer[key]) for layer in layers]

            return cls(
                layers=[LayerInfo.from_dict(layer) for layer in layers],
                distance_px=per_layer("distance_px"),
                distance_frac=per_layer("distance_frac"),
                entropy=per_layer("entropy"),
                entropy_norm=per_layer("entropy_norm"),
                head_kl=per_layer("head_kl"),
                head_kl_mean=[math.nan if layer["head_kl_mean"] is None else layer["head_kl_mean"] for layer in layers],
                queries=per_layer("queries"),
                degenerate_queries=per_layer("degenerate_queries"),
                uniform=[{key: _nan(layer["uniform"][key]) for key in _UNIFORM_KEYS} for layer in layers],
                num_images=int(data["num_images"]),
                prefix_policy=data["prefix_policy"],
                image_size=tuple(data["image_size"]),
                dtype=data.get("dtype"),
                model=data.get("model"),
            )
        except (KeyError, TypeError, IndexError) as error:
            raise MimlensError(f"attention JSON is missing or has a malformed field: {error!r}") from error

    def to_csv_rows(self) -> list[tuple[str, int | str, str, float]]:
        """Tidy rows (layer, head, metric, value); layer-wide metrics have head ''.

        Per head: distance_px, distance_frac, entropy, entropy_norm, head_kl (mean KL from this head to
        each other head), queries, degenerate_queries. Per layer: head_kl_mean and uniform_* references.
        """
        rows = []
        for i, name in enumerate(self.layer_names):
            heads = self.layers[i].num_heads
            kl = self.head_kl[i]
            kl_out = kl.sum(1) / (heads - 1) if heads > 1 else torch.full((heads,), math.nan, dtype=torch.float64)
            for h in range(heads):
                for metric, values in (
                    ("distance_px", self.distance_px[i]),
                    ("distance_frac", self.distance_frac[i]),
                    ("entropy", self.entropy[i]),
                    ("entropy_norm", self.entropy_norm[i]),
                    ("head_kl", kl_out),
                    ("queries", self.queries[i]),
                    ("degenerate_queries", self.degenerate_queries[i]),
                ):
                    rows.append((name, h, metric, float(values[h])))
            rows.append((name, "", "head_kl_mean", float(self.head_kl_mean[i])))
            rows.extend((name, "", f"uniform_{key}", float(self.uniform[i][key])) for key in _UNIFORM_KEYS)
        return rows

    def save(self, run_dir: str | os.PathLike, model: str | None = None, extra: dict | None = None) -> dict[str, Path]:
        """Write ``attention.json`` (with the fields of ``extra`` added) and ``attention.csv`` into a run
        directory (atomically)."""
        run_dir = Path(run_dir)
        return {"json": save_json({**self.to_json(model), **(extra or {})}, run_dir / "attention.json"),
                "csv": self.save_csv(run_dir)}

    def save_csv(self, run_dir: str | os.PathLike) -> Path:
        """Write ``attention.csv`` (one row per layer, head and metric) into a run directory (atomically)."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(("layer", "head", "metric", "value"))
        writer.writerows(self.to_csv_rows())
        return save_text(text.getvalue(), Path(run_dir) / "attention.csv")


def _float(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _floats(t: torch.Tensor) -> list[float | None]:
    return [_float(x) for x in t.tolist()]


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _tensor(values: list) -> torch.Tensor:
    def convert(v):
        return [convert(x) for x in v] if isinstance(v, list) else _nan(v)

    return torch.tensor(convert(values), dtype=torch.float64)


def attention_capture(model: nn.Module, callback) -> AbstractContextManager[list[str]]:
    """The capture context for the model's family (Swin / SwinV2 windows, or the ViT family)."""
    capture = {"swin": swin_attention_capture}.get(getattr(find_family(model), "name", None), vit_attention_capture)
    return capture(model, callback)


def attention_stats(
    model: nn.Module,
    images: torch.Tensor | Iterable,
    prefix_policy: str = "renorm",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = False,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> AttentionStats:
    """Attention distance, entropy and head KL of every attention layer of a timm ViT-family or Swin model.

    Args:
        model: timm ``VisionTransformer`` (CLS, register or distillation tokens), ``Beit``,
            ``SwinTransformer`` or ``SwinTransformerV2``; analysed in eval mode, its modes, hooks and
            fused-attention flags restored afterwards.
        images: raw RGB in [0, 1] (the input contract of :mod:`mimlens.analysis.inputs`, as for ``cka_matrix``):
            an (N, 3, H, W) tensor, or an iterable of batches (tensors, tuples/lists starting with one, as a
            DataLoader yields (images, labels), or dicts with ``"image"``).
        prefix_policy: how prefix keys count: ``renorm`` | ``drop`` | ``keep`` (module docstring).
        batch_size: images per forward when ``images`` is a tensor.
        device: where to run; the model is moved there (and stays). Default: the model's device.
        progress: show a progress bar (on the main rank only).
        transform: called on each batch on the model's device; default the model's own preprocessing
            (:func:`~mimlens.analysis.inputs.model_transform`: resize to its input size, normalise with its mean
            and std). ``torch.nn.Identity()`` takes images that are already preprocessed, at any size.

    Under ``torchrun`` each rank passes its own shard of images; the sums are all-reduced, so every rank
    returns the statistics of all images.
    """
    from tqdm import tqdm

    accumulator = AttentionAccumulator(prefix_policy)
    if device is not None:
        model.to(device)
    parameter = next(model.parameters())
    transform = transform if transform is not None else model_transform(model)
    batches, total = batches_of(images, batch_size)
    forward = getattr(model, "forward_features", model)
    with attention_capture(model, accumulator.update), torch.no_grad():
        for batch in tqdm(batches, total=total, disable=not progress or not distributed.is_main(), desc="attention"):
            forward(transform(batch.to(parameter.device)).to(dtype=parameter.dtype))
    stats = accumulator.all_reduce_().compute()
    stats.model = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
    return stats
