"""Normalised mutual information between query and key position of attention maps: the attention-collapse measure
of Park et al., "What do self-supervised vision transformers learn?" (ICLR 2023; reference code
naver-ai/cl-vs-mim, ``self_attention_analysis.ipynb``, ``calculate_nmi``).

For one head of one image, the attention weights w[q, k] of the counted keys of every query define the joint
p(q, k) = w[q, k] / Σ w, with marginals p(q) = Σ_k p(q, k) and p(k) = Σ_q p(q, k). Then

    NMI = I(q; k) / √(H(q) · H(k)),   I(q; k) = Σ_q p(q) Σ_k p(k | q) ln(p(k | q) / p(k)),

the reference's normalisation (geometric mean of the two entropies). Rows that sum to 1 give p(q) = 1 / (number of
queries), the reference's uniform query distribution. NMI is 0 when every query attends alike (collapse) and 1 when
each query attends to its own key alone (a one-to-one map). Where H(q) · H(k) = 0, I is 0 too and NMI is taken as 0.
The reference adds 1e-8 to every weight before renormalising; here 0 · ln 0 = 0 is exact instead (the two differ by
under 1e-5 on maps of 196 keys, 7e-6 for the one-to-one map).

Queries are patch tokens; prefix keys (CLS, distillation, registers) follow the prefix policy of the attention
statistics (:mod:`mimlens.analysis.attention`): ``renorm`` (the reference's: drop the prefix rows and columns and
renormalise every row over the patch keys) — a row with no patch mass gets p(q) = 0; ``drop`` drops prefix keys
without renormalising, so p(q) is proportional to the query's patch mass; ``keep`` keeps them as keys.

Swin: one NMI per window (the queries and keys of one window), over the real tokens of the window; pairs the shift
mask forbids are structural zeros, padding slots are never queries and as keys follow the prefix policy. Windows of
fewer than 2 real tokens (H(q) = 0 by construction) are left out; the layer's value is the mean over the other
windows and the images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mimlens.analysis.capture import AttentionCall
from mimlens.analysis.geometry import window_layout
from mimlens.errors import MimlensError

__all__ = ["NmiCut", "attention_nmi", "nmi", "nmi_cut"]


def nmi(weights: torch.Tensor) -> torch.Tensor:
    """NMI between the query and key axes of nonnegative weights (..., Q, K), the joint being their share of the
    total; one value per leading index (float32 arithmetic for half-precision input, else the input's dtype)."""
    w = weights.float() if weights.dtype in (torch.float16, torch.bfloat16) else weights
    tiny = torch.finfo(w.dtype).tiny
    mass = w.sum(-1)
    total = mass.sum(-1, keepdim=True).clamp_min(tiny)
    p_q, p_k = mass / total, w.sum(-2) / total
    conditional = w / mass.unsqueeze(-1).clamp_min(tiny)
    divergence = torch.where(conditional > 0, conditional * (conditional / p_k.unsqueeze(-2)).log(), 0.0).sum(-1)
    mutual = (p_q * divergence).sum(-1)
    scale = (torch.special.entr(p_q).sum(-1) * torch.special.entr(p_k).sum(-1)).sqrt()
    return torch.where(scale > 0, mutual / scale.clamp_min(tiny), 0.0)


@dataclass(frozen=True)
class NmiCut:
    """Which part of one layer's attention enters the NMI under a prefix policy.

    ``query_start`` and ``key_start`` cut a ViT sequence (prefix tokens first); ``mask`` (W, 1, Q, K), for Swin,
    is 1 for the counted keys of real queries; ``windows`` (W,) marks the windows of at least 2 real tokens, of which
    there are ``num_counted``.
    """

    query_start: int
    key_start: int
    mask: torch.Tensor | None
    windows: torch.Tensor
    num_counted: int


def nmi_cut(call: AttentionCall, policy: str) -> NmiCut:
    """The cut of ``call``'s attention (a ViT sequence or Swin windows) under ``policy``, on its device."""
    device = call.probs.device
    if call.window is None:
        p = call.num_prefix
        queries = call.probs.shape[-2] - p
        return NmiCut(p, 0 if policy == "keep" else p, None, torch.tensor([queries >= 2], device=device),
                      int(queries >= 2))
    layout = window_layout(call.grid, call.window, call.shift, call.stride_px)
    num_windows, n = layout.is_token.shape
    allowed = torch.ones(num_windows, n, n, dtype=torch.bool)
    if call.window_mask is not None:
        if tuple(call.window_mask.shape) != (num_windows, n, n):
            raise MimlensError(f"shift mask of `{call.name}` has shape {tuple(call.window_mask.shape)}; expected "
                               f"({num_windows}, {n}, {n})")
        allowed = call.window_mask.detach().cpu() == 0
    counted = allowed if policy == "keep" else allowed & layout.is_token[:, None, :]
    mask = (counted & layout.is_token[:, :, None]).to(device, torch.float32)[:, None]
    windows = layout.is_token.sum(-1) >= 2
    return NmiCut(0, 0, mask, windows.to(device), int(windows.sum()))


def attention_nmi(probs: torch.Tensor, cut: NmiCut, renorm: bool) -> torch.Tensor:
    """NMI per image, window and head, (B, W, H), of a batch of (B·W, H, N, N) attention maps; windows that
    ``cut.windows`` leaves out are NaN."""
    num_windows = cut.windows.numel()
    p = probs.reshape(-1, num_windows, *probs.shape[1:])[..., cut.query_start :, cut.key_start :]
    if p.dtype in (torch.float16, torch.bfloat16):
        p = p.float()
    if cut.mask is not None:
        p = p * cut.mask
    if renorm:
        p = p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    values = nmi(p)
    return torch.where(cut.windows[:, None], values, torch.nan)
