"""Centred kernel alignment (CKA) between layer representations (Kornblith et al. 2019; Nguyen, Raghu & Kornblith 2021).

Conventions:

- Samples are rows: a representation is an (n, d) matrix. All arithmetic is float64 and features are
  column-centred first (every form below is invariant to that), so float32 features with a few huge channels
  give the same answer as float64 ones.
- HSIC₀ (biased): <HKH, HLH> / (n-1)², H = I - 11ᵀ/n. HSIC₁ (unbiased, Song et al. 2012):
  <Ũ(K), Ũ(L)> / (n(n-3)) with Ũ the U-centred Gram (zero diagonal); it needs n >= 4.
- CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)). The debiased form can fall slightly below 0 or above 1.
- RBF kernel: exp(-|xi - xj|² / (2σ²)), σ² = threshold² x the median of all n² squared distances (the zero
  diagonal included, as in Kornblith et al.'s code); the median makes it a full-data estimator.
- Names keep the contracts of Kornblith et al.'s reference notebook: ``gram_linear(x)``, ``gram_rbf(x,
  threshold=1.0)``, ``center_gram(gram, unbiased=False)`` and ``cka(gram_x, gram_y, debiased=False)`` take and
  return what theirs do. :func:`feature_cka` is the one-call form on two feature matrices (its RBF ``threshold``
  defaults to 0.5, the value of the reference notebook's examples).
- Minibatch CKA (:class:`MinibatchCKA`): the three HSIC₁ terms are summed over batches and divided once at the
  end; never a mean of per-batch ratios.
- Calibration (gram form): replicates on random halves of every batch (a stratified delete-half jackknife)
  give a percentile 95 % interval per cell, and a permutation null (samples shuffled between the two sides
  within each batch) gives the null mean and a p-value per cell; both are sums like the estimator's, so they
  stream and all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mimlens import distributed
from mimlens.accumulate import SumAccumulator
from mimlens.analysis.capture import eval_mode
from mimlens.analysis.choices import POOLED, PREFIX_POLICIES, UNITS, check_choice
from mimlens.analysis.features import MIN_BATCH, BlockFeatures, image_batches
from mimlens.analysis.inputs import model_device, model_name, model_transform
from mimlens.errors import MimlensError

__all__ = [
    "KERNELS",
    "gram_linear",
    "gram_rbf",
    "center_gram",
    "u_center_gram",
    "hsic0",
    "hsic1",
    "linear_hsic_features",
    "cka",
    "feature_cka",
    "MinibatchCKA",
    "CKAResult",
    "cka_matrix",
    "percentile_interval",
    "mean_off_diagonal",
]

KERNELS = ("linear", "rbf")
FORMS = ("gram", "features")
LEVEL = 0.95  # the coverage of the calibration's intervals (percentile method)
UNCALIBRATED = "not calibrated (no interval or null): the token unit's samples are tokens, not images"


def _samples(x: Any, name: str = "x") -> torch.Tensor:
    """An (n, d) float64 tensor on its own device (CPU for numpy input, and for MPS, which has no float64)."""
    x = torch.as_tensor(x)
    if x.dim() != 2:
        raise MimlensError(f"{name} of shape {tuple(x.shape)}: expected an (n, d) matrix, samples as rows")
    if x.device.type == "mps":
        x = x.cpu()
    return x.to(torch.float64)


def _centred(x: Any, name: str = "x") -> torch.Tensor:
    x = _samples(x, name)
    return x - x.mean(0, keepdim=True)


def _is_constant(x: torch.Tensor) -> bool:
    """Every sample equal (checked exactly, before centring leaves rounding residue)."""
    return bool((x == x[:1]).all())


def gram_linear(x: Any) -> torch.Tensor:
    """Linear kernel Gram matrix x xᵀ (n, n), float64."""
    x = _samples(x)
    return x @ x.T


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(0, keepdim=True)
    norms = (x * x).sum(1)
    return (norms[:, None] + norms[None, :] - 2 * (x @ x.T)).clamp_(min=0)


def _median(values: torch.Tensor) -> torch.Tensor:
    """The median of all entries, averaging the two middle ones for an even count (as numpy does)."""
    flat = values.flatten()
    m = flat.numel()
    return (torch.kthvalue(flat, (m + 1) // 2).values + torch.kthvalue(flat, m // 2 + 1).values) / 2


def gram_rbf(x: Any, threshold: float = 1.0) -> torch.Tensor:
    """RBF Gram matrix exp(-d²/(2σ²)) with σ² = threshold² x median of all n² squared distances, float64."""
    sq = _squared_distances(_samples(x))
    median = _median(sq)
    if not median > 0:
        raise MimlensError("RBF kernel: the median squared distance between samples is 0: no usable bandwidth")
    return torch.exp(-sq / (2 * threshold**2 * median))


def center_gram(gram: Any, unbiased: bool = False) -> torch.Tensor:
    """H K H, H = I - 11ᵀ/n (the double centring of the biased HSIC₀), or with ``unbiased`` the U-centring of
    :func:`u_center_gram`, as Kornblith et al.'s ``center_gram``. Leading batch dimensions allowed."""
    if unbiased:
        return u_center_gram(gram)
    g = torch.as_tensor(gram).to(torch.float64)
    return g - g.mean(-1, keepdim=True) - g.mean(-2, keepdim=True) + g.mean((-2, -1), keepdim=True)


def u_center_gram(gram: torch.Tensor) -> torch.Tensor:
    """U-centring (zero diagonal; row, column and total sums over n-2 and (n-1)(n-2)) for the unbiased HSIC₁.

    <Ũ(K), Ũ(L)> / (n(n-3)) is Song et al.'s (2012) unbiased HSIC. Leading batch dimensions allowed; n >= 4.
    """
    g = torch.as_tensor(gram).to(torch.float64).clone()
    n = g.shape[-1]
    if n < MIN_BATCH:
        raise MimlensError(f"unbiased HSIC with n={n} samples: expected n >= {MIN_BATCH}")
    g.diagonal(dim1=-2, dim2=-1).zero_()
    rows = g.sum(-1, keepdim=True) / (n - 2)
    cols = g.sum(-2, keepdim=True) / (n - 2)
    total = g.sum((-2, -1), keepdim=True) / ((n - 1) * (n - 2))
    u = g - rows - cols + total
    u.diagonal(dim1=-2, dim2=-1).zero_()
    return u


def hsic0(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Biased HSIC₀ = <HKH, HLH> / (n-1)² of two Gram matrices."""
    n = k.shape[-1]
    return (center_gram(k) * center_gram(l)).sum((-2, -1)) / (n - 1) ** 2


def hsic1(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC₁ (Song et al. 2012) = <Ũ(K), Ũ(L)> / (n(n-3)) of two Gram matrices, n >= 4."""
    n = k.shape[-1]
    return (u_center_gram(k) * u_center_gram(l)).sum((-2, -1)) / (n * (n - 3))


def _hsic1_from_parts(cross: torch.Tensor, kl: torch.Tensor, sum_k: torch.Tensor, sum_l: torch.Tensor, n: int):
    """Linear-kernel HSIC₁ from centred features: cross = |XᵀY|², k_i = |x_i|², kl = kᵀl, sums of k and l.

    With centred X, K1 = 0, so Song's terms are tr(K̃L̃) = cross - kᵀl, 1ᵀK̃1 = -Σk and 1ᵀK̃L̃1 = kᵀl.
    """
    return (cross - kl * (1 + 2 / (n - 2)) + sum_k * sum_l / ((n - 1) * (n - 2))) / (n * (n - 3))


def linear_hsic_features(x: Any, y: Any, debiased: bool = False) -> torch.Tensor:
    """Linear-kernel HSIC in feature space, O(n d1 d2) instead of O(n² d): for many samples (the ``token`` unit).

    Equal to ``hsic0(gram_linear(x), gram_linear(y))`` (or ``hsic1`` when ``debiased``) without any n x n matrix.
    """
    x, y = _centred(x, "x"), _centred(y, "y")
    n = _same_n(x, y, need=MIN_BATCH if debiased else 2)
    cross = (x.T @ y).square().sum()
    if not debiased:
        return cross / (n - 1) ** 2
    k, l = x.square().sum(1), y.square().sum(1)
    return _hsic1_from_parts(cross, k @ l, k.sum(), l.sum(), n)


def _same_n(x: torch.Tensor, y: torch.Tensor, need: int) -> int:
    if x.shape[0] != y.shape[0]:
        raise MimlensError(f"x has {x.shape[0]} samples and y has {y.shape[0]}: expected the same samples, as rows")
    if x.shape[0] < need:
        raise MimlensError(f"{x.shape[0]} samples: expected at least {need}")
    return x.shape[0]


def _gram(gram: Any, name: str) -> torch.Tensor:
    """A square, symmetric float64 Gram matrix, or an error that says what to pass instead."""
    g = torch.as_tensor(gram).to(torch.float64)
    if g.dim() != 2 or g.shape[0] != g.shape[1] or not torch.allclose(g, g.T):
        raise MimlensError(f"{name} of shape {tuple(g.shape)} is not a symmetric n x n Gram matrix: pass "
                           f"gram_linear(x) or gram_rbf(x), or call feature_cka(x, y) on (n, d) features")
    return g


def cka(gram_x: Any, gram_y: Any, debiased: bool = False) -> float:
    """CKA of two Gram matrices of the same n samples, as Kornblith et al.'s ``cka(gram_x, gram_y, debiased)``:
    <C(K), C(L)> / (|C(K)| |C(L)|) with C the centring of :func:`center_gram` (U-centring when ``debiased``,
    n >= 4). For feature matrices use :func:`feature_cka`."""
    k, l = _gram(gram_x, "gram_x"), _gram(gram_y, "gram_y")
    if k.shape != l.shape:
        raise MimlensError(f"gram_x is {tuple(k.shape)} and gram_y {tuple(l.shape)}: expected the same samples")
    k, l = center_gram(k, unbiased=debiased), center_gram(l, unbiased=debiased)
    norms = torch.linalg.norm(k) * torch.linalg.norm(l)
    if not norms > 0:
        raise MimlensError("a centred Gram matrix is zero (every sample equal): CKA is undefined")
    return float((k * l).sum() / norms)


def feature_cka(x: Any, y: Any, kernel: str = "linear", debiased: bool = False, threshold: float = 0.5) -> float:
    """CKA between two representations of the same n samples (rows), e.g. two layers' features.

    Args:
        x: (n, d1) array or tensor.
        y: (n, d2) array or tensor, same samples in the same order.
        kernel: ``linear`` or ``rbf`` (bandwidth ``threshold`` x sqrt of the median squared distance).
        debiased: unbiased HSIC₁ (Song et al. 2012) instead of the biased HSIC₀; needs n >= 4.
        threshold: RBF bandwidth factor τ (σ² = τ² x median squared distance).

    Returns:
        CKA as a Python float. Raises :class:`MimlensError` when either representation has zero variance.
    """
    check_choice("kernel", kernel, KERNELS)
    x, y = _samples(x, "x"), _samples(y, "y")
    n = _same_n(x, y, need=MIN_BATCH if debiased else 2)
    for name, value in (("x", x), ("y", y)):
        if _is_constant(value):
            raise MimlensError(f"{name} has zero variance (every sample equal): CKA is undefined")
    x, y = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    if kernel == "linear" and n * (x.shape[1] + y.shape[1]) > x.shape[1] * y.shape[1]:
        xy, xx, yy = (linear_hsic_features(a, b, debiased) for a, b in ((x, y), (x, x), (y, y)))
    else:
        gram = gram_linear if kernel == "linear" else lambda z: gram_rbf(z, threshold)
        k, l = gram(x), gram(y)
        hsic = hsic1 if debiased else hsic0
        xy, xx, yy = hsic(k, l), hsic(k, k), hsic(l, l)
    for name, value in (("x", xx), ("y", yy)):
        if not value > 0:
            raise MimlensError(f"{name} has a degenerate Gram matrix (HSIC(K, K) = {float(value):.3g}): CKA undefined")
    return float(xy / (xx * yy).sqrt())


class MinibatchCKA(SumAccumulator):
    """Minibatch CKA of every layer pair (Nguyen, Raghu & Kornblith 2021): an accumulator of HSIC₁ sums.

    Each batch of n >= 4 samples adds, for every pair (i, j) of layers present in it, n x HSIC₁(K_i, L_j),
    n x HSIC₁(K_i, K_i) and n x HSIC₁(L_j, L_j) in float64; :meth:`compute` divides once. All pairs come from one
    matrix product of the stacked, flattened U-centred Grams (``form="gram"``), or for the ``token`` unit from
    the feature-space form (``form="features"``, linear kernel). Weights: each batch counts with its sample
    count n — equal batches give Nguyen et al.'s plain sum, and a ragged batch (n >= 4) keeps its own n. Each
    batch's HSIC₁ is unbiased for the same population HSIC, so any fixed weights keep every sum unbiased;
    weighting by n lets a batch count as much as its samples. Batches under 4 samples are skipped and counted.

    Per pair only batches in which both layers produced finite, non-constant output count (numerator and both
    denominators over the same batches). Everything else is explained by :meth:`notes`: a hook that never
    fired, constant (zero-variance) or non-finite output, skipped small batches. Cells with no usable batch
    are NaN, each with a note.

    Within one model pass ``layers_b=None`` and call ``update(a)``; across two models call ``update(a, b)``.

    Calibration (``form="gram"``; 0 turns each off). ``bootstrap=B`` replicates of a stratified half-sampling
    over samples, the delete-d jackknife with d = n/2 (Shao & Wu 1989; its histogram approximates the
    estimator's distribution without rescaling, Wu 1990): each replicate keeps a random half of every batch
    (:func:`half_size`, drawn without replacement), U-centres that batch's Grams restricted to the half again
    and adds its three HSIC₁ terms (weighted by the half's size, masked as above) to per-replicate sums;
    :meth:`replicates` divides once per replicate. Not the with-replacement bootstrap: a sample drawn twice
    would pair with itself in the U-statistic, and its self-similarity, far above any two samples', pulls
    every replicate up towards CKA 1 (on 4 batches of 64 dependent samples its 95 % interval covered the
    population CKA in 0 of 60 draws, the half-samples' in 58: ``benchmarks/bench_cka_calibration.py``).
    ``permutations=P``: a permutation null — side b's samples are permuted within each batch (Ũ(PLPᵀ) =
    PŨ(L)Pᵀ, so the U-centred Gram is permuted) and the cross terms recomputed; the self terms do not change
    (:meth:`null`). A batch's
    halves and permutations come from generators seeded by (``seed``, the batch's ``index``,
    :func:`batch_draws`), so analyses of the same images in the same batches draw the same ones: replicates are
    paired across layers and across models.
    """

    def __init__(
        self,
        layers_a: Sequence[str],
        layers_b: Sequence[str] | None = None,
        *,
        kernel: str = "linear",
        threshold: float = 0.5,
        form: str = "gram",
        bootstrap: int = 0,
        permutations: int = 0,
        seed: int = 0,
    ):
        check_choice("kernel", kernel, KERNELS)
        check_choice("form", form, FORMS)
        if form == "features" and kernel != "linear":
            raise MimlensError("form='features' (the token unit) exists for the linear kernel only")
        for key, value in (("bootstrap", bootstrap), ("permutations", permutations), ("seed", seed)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MimlensError(f"{key}={value!r}: expected a non-negative integer")
        if form == "features" and (bootstrap or permutations):
            raise MimlensError("bootstrap and permutations resample images: they need form='gram' (not the token "
                               "unit's 'features', whose samples are tokens)")
        self.bootstrap, self.permutations, self.seed = bootstrap, permutations, seed
        self.layers_a = list(layers_a)
        self.within = layers_b is None
        self.layers_b = list(self.layers_a if layers_b is None else layers_b)
        self.kernel, self.threshold, self.form = kernel, float(threshold), form
        na, nb = len(self.layers_a), len(self.layers_b)
        z = torch.zeros
        self.sums: dict[str, torch.Tensor] = {
            "cross": z(na, nb, dtype=torch.float64),
            "self_a": z(na, nb, dtype=torch.float64),
            "self_b": z(na, nb, dtype=torch.float64),
            "samples": z(na, nb, dtype=torch.float64),
            "batches": z((), dtype=torch.float64),
            "skipped_batches": z((), dtype=torch.float64),
            "skipped_samples": z((), dtype=torch.float64),
            **{f"{reason}_{side}": z(size, dtype=torch.float64)
               for reason in ("missing", "constant", "nonfinite") for side, size in (("a", na), ("b", nb))},
            **{name: z(bootstrap, na, nb, dtype=torch.float64) for name in ("boot_cross", "boot_self_a",
                                                                              "boot_self_b")},
            "null_cross": z(permutations, na, nb, dtype=torch.float64),
        }

    # -- per-layer preparation -------------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What :meth:`update` needs from one layer's (n, d) samples: its U-centred Gram (n, n), or for
        ``form="features"`` its centred features (n, d), in float64. Constant features give zeros (no variance).
        Calling this inside a forward hook keeps only this small result, not the block output.
        """
        constant = _is_constant(torch.as_tensor(x))  # exact in the input dtype, before the float64 copy
        x = _samples(x)
        x = x - x.mean(0, keepdim=True)
        if self.form == "features":
            return torch.zeros_like(x) if constant else x
        if constant:
            return torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
        if x.shape[0] < MIN_BATCH:
            return gram_linear(x)  # update() skips the batch; the shape still carries n
        if self.kernel == "linear":
            return u_center_gram(gram_linear(x))
        try:
            return u_center_gram(gram_rbf(x, self.threshold))
        except MimlensError:  # zero median distance: no usable bandwidth, treated like no variance
            return torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)

    # -- accumulation ----------------------------------------------------------------------------------------
    def update(
        self,
        a: Mapping[str, torch.Tensor | None],
        b: Mapping[str, torch.Tensor | None] | None = None,
        *,
        prepared: bool = False,
        index: int | None = None,
    ) -> MinibatchCKA:
        """Add one batch: ``a`` (and ``b`` across models) map layer names to (n, d) samples, or to the output of
        :meth:`prepare` with ``prepared=True``. A layer that is absent or None counts as not captured. ``index``:
        the batch's global index, which seeds its resamples and permutations (default: the batches seen so far).
        """
        if self.within != (b is None):
            raise MimlensError("update(a) within one model (layers_b=None), update(a, b) across two models")
        if index is None:
            index = int(self.sums["batches"] + self.sums["skipped_batches"])
        a = self._prepared(a, self.layers_a, prepared)
        b = a if self.within else self._prepared(b, self.layers_b, prepared)
        n = self._sample_count(a, b)
        if n is not None and n < MIN_BATCH:
            self.sums["skipped_batches"] += 1
            self.sums["skipped_samples"] += n
            return self
        self.sums["batches"] += 1
        present_a = self._present(a, self.layers_a, "a")
        present_b = present_a if self.within else self._present(b, self.layers_b, "b")
        if n is None:
            return self
        cross, self_a, self_b, grams = self._hsic1_terms(a, b, present_a, present_b, n)
        present_a = self._drop_constant(present_a, self_a, "a")
        present_b = present_a if self.within else self._drop_constant(present_b, self_b, "b")
        if self.within:
            self.sums["constant_b"].copy_(self.sums["constant_a"])
        mask = (present_a[:, None] & present_b[None, :]).to(torch.float64)
        self.sums["cross"] += n * mask * cross
        self.sums["self_a"] += n * mask * self_a[:, None]
        self.sums["self_b"] += n * mask * self_b[None, :]
        self.sums["samples"] += n * mask
        if grams is not None and (self.bootstrap or self.permutations):
            self._calibrate(*grams, mask, n, index)
        return self

    def _prepared(self, values, layers, prepared):
        unknown = set(values) - set(layers)
        if unknown:
            raise MimlensError(f"layers {sorted(unknown)} are not among the accumulator's layers {layers}")
        return {name: v if prepared or v is None else self.prepare(v) for name, v in values.items()}

    def _sample_count(self, a, b) -> int | None:
        counts = {name: v.shape[0] for side in (a, b) for name, v in side.items() if v is not None}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{name}: {n}" for name, n in counts.items())
            raise MimlensError(f"layers disagree on the number of samples in one batch ({detail}); the token unit "
                               "needs the same number of tokens in every block (use unit='image' or 'pooled')")
        return next(iter(counts.values()), None)

    def _present(self, values, layers, side) -> torch.Tensor:
        present = torch.zeros(len(layers), dtype=torch.bool)
        for i, name in enumerate(layers):
            v = values.get(name)
            if v is None:
                self.sums[f"missing_{side}"][i] += 1
            elif not bool(torch.isfinite(v).all()):
                self.sums[f"nonfinite_{side}"][i] += 1
            else:
                present[i] = True
        if self.within:
            for reason in ("missing", "nonfinite"):
                self.sums[f"{reason}_b"].copy_(self.sums[f"{reason}_a"])
        return present

    def _drop_constant(self, present, self_terms, side) -> torch.Tensor:
        constant = present & (self_terms == 0)
        self.sums[f"constant_{side}"] += constant.to(torch.float64)
        return present & ~constant

    def _hsic1_terms(self, a, b, present_a, present_b, n):
        """HSIC₁ of every present pair (zeros elsewhere): cross (La, Lb), self_a (La), self_b (Lb), on the CPU;
        for the gram form also the present layers' indices and stacked U-centred Grams (None for features)."""
        idx_a = present_a.nonzero().flatten().tolist()
        idx_b = present_b.nonzero().flatten().tolist()
        xs = [a[self.layers_a[i]] for i in idx_a]
        ys = xs if self.within else [b[self.layers_b[j]] for j in idx_b]
        cross = torch.zeros(len(self.layers_a), len(self.layers_b), dtype=torch.float64)
        self_a = torch.zeros(len(self.layers_a), dtype=torch.float64)
        self_b = torch.zeros(len(self.layers_b), dtype=torch.float64)
        grams = None
        if not xs or not ys:
            return cross, self_a, self_b, grams
        if self.form == "gram":
            ua = torch.stack(xs)
            ub = ua if self.within else torch.stack(ys)
            grams = (idx_a, idx_b, ua, ub)
            pairs = (ua.flatten(1) @ ub.flatten(1).T) / (n * (n - 3))
            sa, sb = ua.square().sum((1, 2)) / (n * (n - 3)), ub.square().sum((1, 2)) / (n * (n - 3))
        else:
            pairs = _feature_pairs(xs, ys, n)
            sa = pairs.diagonal() if self.within else _feature_pairs(xs, xs, n, diagonal=True)
            sb = sa if self.within else _feature_pairs(ys, ys, n, diagonal=True)
        cross[torch.tensor(idx_a)[:, None], torch.tensor(idx_b)[None, :]] = pairs.cpu()
        self_a[idx_a] = sa.cpu()
        self_b[idx_b] = sb.cpu()
        return cross, self_a, self_b, grams

    def _calibrate(self, idx_a, idx_b, ua, ub, mask, n, index):
        """Add one batch's half-sample replicates and permuted cross terms (see the class docstring), in chunks
        that keep memory bounded."""
        rows, cols = torch.tensor(idx_a)[:, None], torch.tensor(idx_b)[None, :]
        mask = mask[rows, cols]
        halves, perms = batch_draws(self.seed, index, n, self.bootstrap, self.permutations)
        m = halves.shape[1]
        step = max(1, CHUNK // (max(len(idx_a), len(idx_b)) * n * n))
        for start in range(0, self.bootstrap, step):
            chunk = halves[start:start + step].to(ua.device)
            at = slice(start, start + len(chunk))
            cross, sa, sb = _subsample_terms(ua, None if self.within else ub, chunk)
            self.sums["boot_cross"][at, rows, cols] += m * mask * cross.cpu()
            self.sums["boot_self_a"][at, rows, cols] += m * mask * sa.cpu()[:, :, None]
            self.sums["boot_self_b"][at, rows, cols] += m * mask * sb.cpu()[:, None, :]
        for start in range(0, self.permutations, step):
            chunk = perms[start:start + step].to(ub.device)
            permuted = ub[:, chunk[:, :, None], chunk[:, None, :]].transpose(0, 1).flatten(2)  # (c, Lb, n²)
            null = (ua.flatten(1) @ permuted.transpose(1, 2)) / (n * (n - 3))
            self.sums["null_cross"][start:start + len(chunk), rows, cols] += n * mask * null.cpu()

    # -- results ---------------------------------------------------------------------------------------------
    def compute(self) -> torch.Tensor:
        """CKA matrix (La, Lb), float64: summed cross terms over the root of the summed self terms.

        NaN where a pair had no usable batch or a layer had no variance; :meth:`notes` says which and why.
        """
        s = self.sums
        return _ratio(s["cross"], s["self_a"], s["self_b"], s["samples"])

    def replicates(self) -> torch.Tensor:
        """The CKA matrix of every half-sample replicate (B, La, Lb), NaN where :meth:`compute` is (or where a
        half had no variance)."""
        s = self.sums
        return _ratio(s["boot_cross"], s["boot_self_a"], s["boot_self_b"], s["samples"])

    def null(self) -> torch.Tensor:
        """The CKA matrix under every permutation (P, La, Lb): permuted cross sums over the observed self sums."""
        s = self.sums
        return _ratio(s["null_cross"], s["self_a"], s["self_b"], s["samples"])

    def p_values(self) -> torch.Tensor:
        """(1 + #{null >= observed}) / (P + 1) per cell (NaN where the cell is, or P = 0)."""
        observed = self.compute()
        if not self.permutations:
            return torch.full_like(observed, math.nan)
        p = (1 + (self.null() >= observed).sum(0)) / (self.permutations + 1)
        return torch.where(observed.isnan(), math.nan, p.to(torch.float64))

    def notes(self) -> list[str]:
        """One line per layer or pair that lost batches or has NaN cells, and per kind of skipped batch."""
        s = self.sums
        batches = int(s["batches"])
        notes: list[str] = []
        if s["skipped_batches"] > 0:
            notes.append(f"{int(s['skipped_batches'])} batch(es) with fewer than {MIN_BATCH} samples "
                         f"({int(s['skipped_samples'])} samples) skipped: the unbiased HSIC needs n >= {MIN_BATCH}")
        if batches == 0:
            notes.append(f"no batch of at least {MIN_BATCH} samples was seen: every cell is NaN")
            return notes
        explained_a = self._layer_notes(notes, "a", batches)
        explained_b = explained_a if self.within else self._layer_notes(notes, "b", batches)
        matrix = self.compute()
        for i, j in matrix.isnan().nonzero().tolist():
            if not (explained_a[i] or explained_b[j]):
                notes.append(f"pair ({self._label('a', i)}, {self._label('b', j)}): no batch in which both layers "
                             "produced usable output; the cell is NaN")
        return notes

    def _label(self, side: str, index: int) -> str:
        name = (self.layers_a if side == "a" else self.layers_b)[index]
        return f"layer '{name}'" if self.within else f"model {side} layer '{name}'"

    def _layer_notes(self, notes: list[str], side: str, batches: int) -> list[bool]:
        """Append the notes of one model's layers; return which layers have no usable batch at all."""
        missing, constant, nonfinite = (self.sums[f"{r}_{side}"] for r in ("missing", "constant", "nonfinite"))
        dead = []
        for i in range(len(missing)):
            lost = int(missing[i] + constant[i] + nonfinite[i])
            label = self._label(side, i)
            reasons = [f"{count} {what}" for count, what in ((int(missing[i]), "without output (hook did not fire)"),
                                                              (int(constant[i]), "with zero variance"),
                                                              (int(nonfinite[i]), "with non-finite values"))
                       if count]
            if int(missing[i]) == batches:
                notes.append(f"{label}: its hook never fired in {batches} batch(es), so its cells are NaN")
            elif lost == batches:
                notes.append(f"{label}: no usable batch ({', '.join(reasons)} of {batches}), so its cells are NaN")
            elif lost:
                notes.append(f"{label}: {', '.join(reasons)} of {batches} batch(es); its cells use the other "
                             f"{batches - lost}")
            dead.append(lost == batches)
        return dead

    # -- combining and saving --------------------------------------------------------------------------------
    def check_compatible(self, other: MinibatchCKA) -> None:
        """Same layers, kernel, threshold, form, bootstrap, permutations and seed, or a one-line error."""
        mine, theirs = self.setup(), other.setup()
        if mine != theirs:
            raise MimlensError(f"cannot combine CKA accumulators of different set-ups: {mine} vs {theirs}")

    def setup(self) -> dict[str, Any]:
        """The constructor's arguments: ``MinibatchCKA(**acc.setup())`` is an empty accumulator like ``acc``."""
        return {"layers_a": self.layers_a, "layers_b": None if self.within else self.layers_b,
                "kernel": self.kernel, "threshold": self.threshold, "form": self.form,
                "bootstrap": self.bootstrap, "permutations": self.permutations, "seed": self.seed}

    def state_dict(self) -> dict[str, Any]:
        return {**self.setup(), "sums": {k: v.clone() for k, v in self.sums.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> MinibatchCKA:
        other = MinibatchCKA(**{key: state[key] for key in self.setup() if key in state})
        self.check_compatible(other)
        missing = set(self.sums) - set(state["sums"])
        if missing:
            raise MimlensError(f"CKA state is missing the sums {sorted(missing)}")
        self.sums = {k: state["sums"][k].to(torch.float64).clone() for k in self.sums}
        return self


CHUNK = 2**21  # Gram entries per chunk of bootstrap replicates or permutations (16 MiB of float64)


def _ratio(cross: torch.Tensor, self_a: torch.Tensor, self_b: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Summed cross terms over the root of the summed self terms; NaN without samples or variance."""
    denominator = (self_a * self_b).sqrt()
    usable = (samples > 0) & (denominator > 0)
    return torch.where(usable, cross / torch.where(usable, denominator, 1.0), math.nan)


def half_size(n: int) -> int:
    """The size of a batch's half-samples: n // 2, at least the 4 samples HSIC₁ needs (a batch of 4 to 7 gives
    half-samples that vary little or not at all)."""
    return max(MIN_BATCH, n // 2)


def batch_draws(seed: int, index: int, n: int, halves: int, permutations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's half-samples (``halves``, :func:`half_size`), each drawn without replacement, and its
    permutations (``permutations``, n), from two CPU generators seeded by (seed, index) through numpy's
    SeedSequence: the draws of batch ``index`` are the same in every analysis with the same ``seed``."""
    import numpy as np

    states = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint64)
    half, perm = (torch.Generator().manual_seed(int(state)) for state in states)
    subsets = torch.rand(halves, n, generator=half, dtype=torch.float64).argsort(1)[:, :half_size(n)]
    perms = torch.rand(permutations, n, generator=perm, dtype=torch.float64).argsort(1)
    return subsets, perms


def _subsample_terms(ua: torch.Tensor, ub: torch.Tensor | None, subsets: torch.Tensor):
    """HSIC₁ on each subset of samples in ``subsets`` (c, m) from the U-centred Grams (La or Lb, n, n): cross
    (c, La, Lb), self_a (c, La), self_b (c, Lb); ``ub`` None within one model. Ũ(K) differs from K off its
    diagonal by row and column terms only, which U-centring removes: Ũ(Ũ(K)[S, S]) = Ũ(K[S, S])."""
    m = subsets.shape[1]

    def centred(u):
        return u_center_gram(u[:, subsets[:, :, None], subsets[:, None, :]].transpose(0, 1)).flatten(2)

    sa = centred(ua)
    sb = sa if ub is None else centred(ub)
    scale = m * (m - 3)
    return ((sa @ sb.transpose(1, 2)) / scale, sa.square().sum(2) / scale, sb.square().sum(2) / scale)


def percentile_interval(values: torch.Tensor, level: float = LEVEL) -> tuple[torch.Tensor, torch.Tensor]:
    """The percentile interval of replicates along the first dimension (NaN replicates left out): the (1 - level)/2
    and (1 + level)/2 quantiles, linearly interpolated as numpy's default."""
    values = torch.as_tensor(values, dtype=torch.float64)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.nanquantile(values, q, dim=0)
    return low, high


def _feature_pairs(xs: list[torch.Tensor], ys: list[torch.Tensor], n: int, diagonal: bool = False) -> torch.Tensor:
    """Linear HSIC₁ between centred feature matrices: all pairs (len(xs), len(ys)), or only (x_i, y_i)."""
    kx = torch.stack([x.square().sum(1) for x in xs])
    ky = torch.stack([y.square().sum(1) for y in ys])
    if diagonal:
        cross = torch.stack([(x.T @ y).square().sum() for x, y in zip(xs, ys, strict=True)])
        return _hsic1_from_parts(cross, (kx * ky).sum(1), kx.sum(1), ky.sum(1), n)
    stacked = torch.cat(ys, dim=1)
    sizes = [y.shape[1] for y in ys]
    cross = torch.stack([torch.stack([block.sum() for block in (x.T @ stacked).square().split(sizes, dim=1)])
                         for x in xs])
    return _hsic1_from_parts(cross, kx @ ky.T, kx.sum(1)[:, None], ky.sum(1)[None, :], n)


@dataclass
class CKAResult:
    """A CKA matrix with everything needed to read it: rows are ``layers_a``, columns ``layers_b``.

    ``spread`` is the standard deviation of each cell across reshuffled passes (None for one pass); NaN cells
    are explained in ``notes``. ``model_b`` is None within one model.

    Calibration (:class:`MinibatchCKA`; None or 0 when off): ``interval`` the percentile 95 % interval (low,
    high matrices) of ``bootstrap`` half-sample replicates over images; ``null_mean`` and ``p_value`` from
    ``permutations`` permutations; ``off_diagonal_replicates`` the mean CKA between different layers of each
    replicate (within one model), which pairs with another result's when both have the same ``images``
    (a checksum of the raw images in order), ``num_images``, ``batch_size``, ``seed`` and ``bootstrap``.
    """

    layers_a: list[str]
    layers_b: list[str]
    matrix: torch.Tensor
    estimator: str
    unit: str
    num_images: int
    notes: list[str] = field(default_factory=list)
    spread: torch.Tensor | None = None
    model_a: str = ""
    model_b: str | None = None
    pooled: str | None = None
    prefix_policy: str = "renorm"
    passes: int = 1
    batch_size: int | None = None
    seed: int | None = None
    images: float | None = None
    bootstrap: int = 0
    permutations: int = 0
    interval: tuple[torch.Tensor, torch.Tensor] | None = None
    null_mean: torch.Tensor | None = None
    p_value: torch.Tensor | None = None
    off_diagonal_replicates: list[float] | None = None

    @property
    def within(self) -> bool:
        return self.model_b is None

    @property
    def unit_label(self) -> str:
        """The sample unit in words, e.g. 'image (patch tokens flattened)'."""
        tokens = "all tokens" if self.prefix_policy == "keep" else "patch tokens"
        return {"image": f"image ({tokens} flattened)",
                "pooled": f"pooled ({'CLS token' if self.pooled == 'cls' else 'mean of ' + tokens})",
                "token": f"token (each of the {tokens} a sample)"}.get(self.unit, self.unit)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for ``cka.json`` (``mimlens.io.save_json``); NaN cells become null."""
        return {"estimator": self.estimator, "unit": self.unit, "pooled": self.pooled,
                "prefix_policy": self.prefix_policy, "num_images": self.num_images, "passes": self.passes,
                "model_a": self.model_a, "model_b": self.model_b,
                "layers_a": list(self.layers_a), "layers_b": list(self.layers_b),
                "matrix": _json_matrix(self.matrix),
                "spread": None if self.spread is None else _json_matrix(self.spread),
                "notes": list(self.notes), "batch_size": self.batch_size, "seed": self.seed, "images": self.images,
                "bootstrap": self.bootstrap, "permutations": self.permutations,
                "interval": None if self.interval is None else {"low": _json_matrix(self.interval[0]),
                                                                "high": _json_matrix(self.interval[1])},
                "null_mean": None if self.null_mean is None else _json_matrix(self.null_mean),
                "p_value": None if self.p_value is None else _json_matrix(self.p_value),
                "off_diagonal_replicates": None if self.off_diagonal_replicates is None else
                [None if math.isnan(v) else v for v in self.off_diagonal_replicates]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CKAResult:
        """Rebuild a result from :meth:`to_json` output (null cells back to NaN); a document written before
        calibration (without its keys) loads uncalibrated."""
        required = {"estimator", "unit", "num_images", "layers_a", "layers_b", "matrix"}
        missing = required - set(data)
        if missing:
            raise MimlensError(f"CKA JSON is missing the keys {sorted(missing)}")

        def tensor(rows):
            return torch.tensor([[math.nan if v is None else v for v in row] for row in rows], dtype=torch.float64)

        def optional(key):
            return None if data.get(key) is None else tensor(data[key])

        interval = data.get("interval")
        replicates = data.get("off_diagonal_replicates")

        return cls(layers_a=list(data["layers_a"]), layers_b=list(data["layers_b"]), matrix=tensor(data["matrix"]),
                   estimator=data["estimator"], unit=data["unit"], num_images=int(data["num_images"]),
                   notes=list(data.get("notes", [])),
                   spread=optional("spread"), model_a=data.get("model_a", ""), model_b=data.get("model_b"),
                   pooled=data.get("pooled"), prefix_policy=data.get("prefix_policy", "renorm"),
                   passes=int(data.get("passes", 1)), batch_size=data.get("batch_size"), seed=data.get("seed"),
                   images=data.get("images"), bootstrap=int(data.get("bootstrap", 0)),
                   permutations=int(data.get("permutations", 0)),
                   interval=None if interval is None else (tensor(interval["low"]), tensor(interval["high"])),
                   null_mean=optional("null_mean"), p_value=optional("p_value"),
                   off_diagonal_replicates=None if replicates is None else
                   [math.nan if v is None else float(v) for v in replicates])


def _json_matrix(matrix: torch.Tensor) -> list[list[float | None]]:
    return [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()]


def _estimator(kernel: str, unit: str, batch_size: int, threshold: float, passes: int, bootstrap: int,
               permutations: int) -> str:
    if kernel == "rbf":
        text = (f"RBF CKA (sigma^2 = {threshold}^2 x median squared distance), unbiased HSIC (Song et al. 2012), "
                "one batch of all images")
    elif unit == "token":
        text = (f"minibatch linear CKA in feature space, unbiased HSIC (Song et al. 2012), batch {batch_size} "
                "images (every token a sample)")
    else:
        text = f"minibatch linear CKA, unbiased HSIC (Song et al. 2012), batch {batch_size}"
    if passes > 1:
        text += f", {passes} reshuffled passes (spread = std over passes)"
    if bootstrap:
        text += f", {LEVEL:.0%} interval: {bootstrap} replicates on random halves of every batch"
    if permutations:
        text += f", null: {permutations} permutations of the images within batches"
    return text


def _check_arguments(unit: str, prefix_policy: str, kernel: str, pooled: str, passes: int, images: Any,
                     calibration: dict[str, int]) -> None:
    check_choice("unit", unit, UNITS)
    check_choice("prefix_policy", prefix_policy, PREFIX_POLICIES)
    check_choice("kernel", kernel, KERNELS)
    check_choice("pooled", pooled, POOLED)
    if unit == "token" and kernel != "linear":
        raise MimlensError("unit='token' needs kernel='linear' (the feature-space form); the RBF kernel is full-data")
    if passes < 1:
        raise MimlensError(f"passes={passes}: expected at least 1")
    if passes > 1 and not torch.is_tensor(images):
        raise MimlensError("passes > 1 reshuffles the images: pass them as one (N, 3, H, W) tensor")
    for key, value in calibration.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MimlensError(f"{key}={value!r}: expected a non-negative integer (0 turns it off)")


def _merged(per_pass: list[MinibatchCKA]) -> tuple[MinibatchCKA, torch.Tensor | None]:
    """All passes' sums in one accumulator, and the std of the per-pass matrices (None for one pass)."""
    total = MinibatchCKA(**per_pass[0].setup())
    for accumulator in per_pass:
        total.merge(accumulator)
    spread = torch.stack([a.compute() for a in per_pass]).std(0) if len(per_pass) > 1 else None
    return total, spread


def cka_matrix(
    model_a: nn.Module,
    images: torch.Tensor | Iterable,
    model_b: nn.Module | None = None,
    unit: str = "image",
    batch_size: int = 64,
    prefix_policy: str = "renorm",
    kernel: str = "linear",
    device: str | torch.device | None = None,
    progress: bool = False,
    passes: int = 1,
    transform_a: Any = None,
    transform_b: Any = None,
    *,
    pooled: str = "mean",
    threshold: float = 0.5,
    seed: int = 0,
    bootstrap: int = 200,
    permutations: int = 200,
) -> CKAResult:
    """CKA between every pair of blocks of one model (layer x layer), or of two models (rows a, columns b).

    Images: the input contract of :mod:`mimlens.analysis.inputs` (as for ``attention_stats``): raw RGB in [0, 1], an
    (N, 3, H, W) tensor or an iterable of batches, the same images in the same order on every rank. Each model sees
    them through its own preprocessing: ``transform_a``/``transform_b`` when given (called on each batch on the
    model's device; ``torch.nn.Identity()`` for images that are already preprocessed), else
    :func:`~mimlens.analysis.inputs.model_transform` — resize to the model's input size, normalise with its mean/std.

    Estimator: minibatch CKA with unbiased HSIC (:class:`MinibatchCKA`) over batches of ``batch_size`` images (a
    last batch under 4 joins the one before). ``kernel="rbf"`` is a full-data estimator: all images must fit in
    one batch. ``unit="token"`` uses the feature-space linear form. ``passes > 1`` (tensor input only) adds
    reshuffled passes: the matrix sums all passes, ``spread`` is the std of the per-pass matrices.

    Calibration (:class:`MinibatchCKA`, units ``image`` and ``pooled``; 0 turns each off): ``bootstrap``
    replicates on random halves of the images of each batch give every cell a percentile 95 % interval, and
    ``permutations`` shuffles of the images between the two sides give its null mean and p-value; batch ``i``
    (counted over all passes) draws from generators seeded by (``seed``, i), so two results on the same images
    and batches are paired. The ``token`` unit is not calibrated (its samples are tokens; a note says so). For
    vit-tiny-64 (6 blocks) on 256 images in batches of 64, one CPU process with 2 threads, B = P = 200 took
    12 % and 17 % longer than B = P = 0 in two runs, forward passes included (about 27 ms per batch;
    ``benchmarks/bench_cka_calibration.py``).

    Under torchrun each rank forwards batches ``rank, rank + world_size, ...``, the sums are all-reduced and every
    rank returns the same result (write files on rank 0). ``device`` moves the models there (default: where their
    parameters are). Models run in eval mode under ``torch.inference_mode``; their modes are restored afterwards.
    """
    calibration = {"bootstrap": bootstrap, "permutations": permutations}
    _check_arguments(unit, prefix_policy, kernel, pooled, passes, images, calibration)
    if unit == "token":
        calibration = {"bootstrap": 0, "permutations": 0}
    models = [model_a] if model_b is None else [model_a, model_b]
    transforms = [transform_a, transform_b][: len(models)]
    transforms = [t if t is not None else model_transform(m) for t, m in zip(transforms, models, strict=True)]
    devices = [model_device(m, device) for m in models]
    form = "features" if unit == "token" else "gram"
    per_pass, num_images, checksum = _passes(models, images, transforms, devices, passes, batch_size, seed,
                                             progress, dict(unit=unit, prefix_policy=prefix_policy, pooled=pooled),
                                             dict(kernel=kernel, threshold=threshold, form=form, seed=seed,
                                                  **calibration))
    total, spread = _merged(per_pass)
    notes = total.notes() + ([UNCALIBRATED] if unit == "token" and (bootstrap or permutations) else [])
    return CKAResult(layers_a=total.layers_a, layers_b=total.layers_b, matrix=total.compute(),
                     estimator=_estimator(kernel, unit, batch_size, threshold, passes, **calibration), unit=unit,
                     num_images=num_images, notes=notes, spread=spread, model_a=model_name(model_a),
                     model_b=None if model_b is None else model_name(model_b),
                     pooled=pooled if unit == "pooled" else None, prefix_policy=prefix_policy, passes=passes,
                     batch_size=batch_size, seed=seed, images=checksum, **_calibration(total))


def _calibration(total: MinibatchCKA) -> dict[str, Any]:
    """The calibration fields of :class:`CKAResult` from an accumulator's sums."""
    found: dict[str, Any] = {"bootstrap": total.bootstrap, "permutations": total.permutations}
    if total.bootstrap:
        replicates = total.replicates()
        found["interval"] = percentile_interval(replicates)
        if total.within:
            found["off_diagonal_replicates"] = mean_off_diagonal(replicates).tolist()
    if total.permutations:
        found["null_mean"] = total.null().nanmean(0)
        found["p_value"] = total.p_values()
    return found


def mean_off_diagonal(matrices: torch.Tensor) -> torch.Tensor:
    """The mean over the off-diagonal cells of square CKA matrices (..., L, L), NaN cells left out."""
    size = matrices.shape[-1]
    off = ~torch.eye(size, dtype=torch.bool)
    return matrices[..., off].nanmean(-1)


def _passes(models, images, transforms, devices, passes: int, batch_size: int, seed: int, progress: bool,
            features: dict[str, Any], estimator: dict[str, Any]) -> tuple[list[MinibatchCKA], int]:
    """One all-reduced :class:`MinibatchCKA` per pass over ``images`` (the first in order, the others reshuffled
    with ``seed + pass``), with block features captured by ``features`` (unit, prefix policy, pooling), the
    number of images and the first pass's checksum of the images (:func:`_run_pass`)."""
    preparer = MinibatchCKA(["_"], **estimator)
    rank, world = distributed.rank(), distributed.world_size()
    per_pass: list[MinibatchCKA] = []
    num_images = batches = 0
    checksums = []
    with ExitStack() as stack:
        probes = [stack.enter_context(BlockFeatures(m, **features, reduce=preparer.prepare)) for m in models]
        stack.enter_context(eval_mode(*models))
        for index in range(passes):
            accumulator = MinibatchCKA(probes[0].layers, probes[1].layers if len(models) > 1 else None, **estimator)
            order = images
            if index > 0:
                order = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + index))]
            num_images, count, checksum = _run_pass(accumulator, order, batch_size, models, probes, transforms,
                                                    devices, estimator["kernel"], rank, world,
                                                    progress and distributed.is_main(), batches)
            batches += count
            checksums.append(checksum)
            per_pass.append(accumulator.all_reduce_())
    return per_pass, num_images, checksums[0]


def _run_pass(accumulator, images, batch_size, models, probes, transforms, devices, kernel, rank, world,
              progress, first_batch) -> tuple[int, int, float]:
    """Forward this rank's share of the batches (global indices from ``first_batch`` on) and accumulate; return
    the number of images and batches in the pass and a checksum of its raw images in order, Σ_i (i + 1) x the
    mean of image i (the same on every rank, which sees every batch)."""
    from tqdm.auto import tqdm

    num_images, index, checksum = 0, -1, 0.0
    batches = tqdm(image_batches(images, batch_size), desc="CKA", unit="batch", disable=not progress)
    for index, raw in enumerate(batches):
        if kernel == "rbf" and index > 0:
            raise MimlensError(f"kernel='rbf' is a full-data estimator: all images must fit in one batch, but more "
                               f"than batch_size={batch_size} arrived; raise batch_size or use kernel='linear'")
        positions = torch.arange(num_images + 1, num_images + len(raw) + 1, dtype=torch.float64)
        checksum += float((raw.flatten(1).to(torch.float64).mean(1).cpu() * positions).sum())
        num_images += len(raw)
        if index % world != rank:
            continue
        captured = []
        for model, probe, transform, device in zip(models, probes, transforms, devices, strict=True):
            probe.pop()
            with torch.inference_mode():
                model(transform(raw.to(device)))
            captured.append(probe.pop())
        accumulator.update(*captured, prepared=True, index=first_batch + index)
    return num_images, index + 1, checksum
