"""Representation similarity measures besides CKA, between two representations of the same n images (rows).

Each follows a named reference; conventions shared by all: samples are rows, arithmetic is float64.

- ``mutual_knn`` — mutual k-NN alignment (Huh et al., ICML 2024, "The Platonic Representation Hypothesis",
  ``metrics.py`` of minyoungg/platonic-rep): rows L2-normalised, each image's k nearest neighbours by cosine
  similarity (itself excluded) in either representation; the mean over images of |N_a(i) ∩ N_b(i)| / k.
- ``cknna`` — CKNNA (same paper and file): with K = x̂x̂ᵀ, L = ŷŷᵀ on the L2-normalised rows and M the mask of
  pairs (i, j) where j is among i's k nearest neighbours in both, HSIC₁(M∘K, M∘L) / sqrt(HSIC₁(M_a∘K, M_a∘K)
  HSIC₁(M_b∘L, M_b∘L)) with the reference's unbiased HSIC (Song et al. 2012, its masked matrices are not
  symmetric, so cknna(a, b) need not equal cknna(b, a)). The reference adds 1e-6 to the denominator; this
  returns the exact ratio (NaN for a zero denominator).
- ``svcca`` — SVCCA (Raghu et al., NeurIPS 2017; Google's ``svcca`` ``cca_core.py``): each centred
  representation keeps its top principal directions explaining 99 % of its variance, then CCA between the two
  kept subspaces; the mean of all min(k_a, k_b) canonical correlations.
- ``pwcca`` — PWCCA (Morcos et al., NeurIPS 2018): CCA on the centred representations (directions of numerically
  zero variance, below d·ε of the largest, dropped); the mean of the canonical correlations ρ_i weighted by
  α_i = Σ_j |⟨h_i, x_j⟩|, h_i the unit-norm canonical variates of the side with fewer kept directions (``a`` on
  a tie) and x_j that side's neurons over the images. The variates include Σ_xx^(-1/2), as in the paper.
- ``procrustes`` — orthogonal Procrustes distance (Williams et al., NeurIPS 2021, "Generalized shape metrics";
  netrep's ``LinearMetric(alpha=1, score_method="angular")``), in its angular form, in radians: on centred
  representations scaled to unit Frobenius norm, θ = arccos ‖X̃ᵀỸ‖_* ∈ [0, π/2]; 0 for representations equal up
  to rotation, reflection, translation and scale. The smaller width is zero-padded, which changes nothing.
- ``rsa`` — RSA (Kriegeskorte et al. 2008): each representation's RDM is the correlation distance 1 - r between
  the feature vectors of every two images; the Spearman correlation (average ranks for ties) of the two RDMs'
  upper triangles.

What each needs: the moment measures (``svcca``, ``pwcca``, ``procrustes``) need only n, Σx, Σy, XᵀX, YᵀY and
XᵀY (:func:`centred_scatter`, :class:`Spectrum`), so they stream over batches; the full-data measures
(``mutual_knn``, ``cknna``, ``rsa``) need every row at once (:class:`FullData`: the k nearest neighbours and the
RDM's n(n-1)/2 ranks of one representation). :func:`pair_similarity` is the one-call form on two matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from mimlens.analysis.choices import SIMILARITY_MEASURES, check_choice
from mimlens.errors import MimlensError

__all__ = ["VARIANCE_KEPT", "FullData", "Spectrum", "centred_scatter", "cknna", "mutual_knn", "pair_similarity",
           "procrustes", "pwcca", "rsa", "svcca"]

VARIANCE_KEPT = 0.99  # SVCCA: the share of each representation's variance its kept directions explain


def _samples(x: Any, name: str = "x") -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2:
        raise MimlensError(f"{name} of shape {tuple(x.shape)}: expected an (n, d) matrix, samples as rows")
    return x.to(torch.float64)


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..m with ties sharing their average rank (as scipy's ``rankdata``)."""
    order = values.argsort()
    _, inverse, counts = torch.unique_consecutive(values[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = ((ends - counts + 1 + ends) / 2)[inverse]
    return ranks


def _hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """platonic-rep's ``hsic_unbiased`` of two n x n matrices (zero diagonals), with 1ᵀKL1 as (1ᵀK)(L1)."""
    n = k.shape[0]
    k, l = k.clone().fill_diagonal_(0), l.clone().fill_diagonal_(0)
    value = (k * l.T).sum() + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 * (k.sum(0) @ l.sum(1)) / (n - 2)
    return value / (n * (n - 3))


@dataclass
class FullData:
    """What the full-data measures need of one (n, d) representation: each row's ``k`` nearest neighbours by
    cosine similarity, itself excluded (``knn``, (n, k), and their similarities ``knn_sim``), the standardised
    ranks of its RDM's upper triangle (``rdm_ranks``, n(n-1)/2 values of zero mean and unit norm; NaN where an
    image's feature vector is constant) and CKNNA's self term. Memory: n·k·16 + n(n-1)/2·8 bytes."""

    knn: torch.Tensor
    knn_sim: torch.Tensor
    rdm_ranks: torch.Tensor
    cknna_self: float

    @classmethod
    def of(cls, x: Any, k: int) -> FullData:
        x = _samples(x)
        n = x.shape[0]
        if not 0 < k < n - 1 or n < 4:
            raise MimlensError(f"k={k} nearest neighbours of {n} images: expected 1 <= k < n - 1 and n >= 4")
        unit = torch.nn.functional.normalize(x, dim=1)
        gram = unit @ unit.T
        knn_sim, knn = gram.clone().fill_diagonal_(-math.inf).topk(k, dim=1)
        rows = x - x.mean(1, keepdim=True)
        rows = rows / rows.norm(dim=1, keepdim=True)
        upper = torch.triu_indices(n, n, 1, device=x.device)
        rdm = (1 - rows @ rows.T)[upper[0], upper[1]]
        if torch.isfinite(rdm).all():
            ranks = _ranks(rdm)
            ranks = ranks - ranks.mean()
            ranks = ranks / ranks.norm()
        else:
            ranks = torch.full_like(rdm, math.nan)
        masked = torch.zeros(n, n, dtype=torch.float64, device=x.device).scatter_(1, knn, knn_sim)
        return cls(knn, knn_sim, ranks, float(_hsic_unbiased(masked, masked)))

    @property
    def n(self) -> int:
        return self.knn.shape[0]

    def mask(self) -> torch.Tensor:
        return torch.zeros(self.n, self.n, dtype=torch.bool, device=self.knn.device).scatter_(1, self.knn, True)


def _same_images(a: FullData, b: FullData) -> None:
    if a.knn.shape != b.knn.shape:
        raise MimlensError(f"neighbours of shapes {tuple(a.knn.shape)} and {tuple(b.knn.shape)}: expected the "
                           "same images and the same k")


def mutual_knn(a: FullData, b: FullData) -> float:
    """Mutual k-NN alignment: the mean over images of the share of k nearest neighbours the two have in common."""
    _same_images(a, b)
    k = a.knn.shape[1]
    return float(((a.mask() & b.mask()).sum(1).to(torch.float64) / k).mean())


def cknna(a: FullData, b: FullData) -> float:
    """CKNNA: the unbiased HSIC of the kernels restricted to mutual neighbours, over the self terms."""
    _same_images(a, b)
    both = a.mask() & b.mask()
    zeros = torch.zeros(a.n, a.n, dtype=torch.float64, device=a.knn.device)
    k = zeros.scatter(1, a.knn, a.knn_sim) * both
    l = zeros.scatter(1, b.knn, b.knn_sim) * both
    denominator = a.cknna_self * b.cknna_self
    return float(_hsic_unbiased(k, l)) / math.sqrt(denominator) if denominator > 0 else math.nan


def rsa(a: FullData, b: FullData) -> float:
    """RSA: the Spearman correlation of the two RDMs' upper triangles (correlation distance)."""
    _same_images(a, b)
    return float(a.rdm_ranks @ b.rdm_ranks)


def centred_scatter(n: int, sum_x: torch.Tensor, sum_y: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """X_cᵀY_c = XᵀY - (Σx)(Σy)ᵀ / n: the centred scatter from raw sums (XᵀX with ``sum_y = sum_x``)."""
    return xy - torch.outer(sum_x, sum_y) / n


@dataclass
class Spectrum:
    """One representation's centred scatter C = X_cᵀX_c in eigen form (``values`` descending, ``vectors`` as
    columns): the whitening the CCA measures need and the trace Procrustes needs."""

    values: torch.Tensor
    vectors: torch.Tensor

    @classmethod
    def of(cls, scatter: torch.Tensor) -> Spectrum:
        values, vectors = torch.linalg.eigh(scatter.to(torch.float64))
        return cls(values.flip(0).clamp(min=0), vectors.flip(1))

    @property
    def trace(self) -> float:
        return float(self.values.sum())

    @property
    def rank(self) -> int:
        """Directions of variance above d·ε (float64) of the largest: the others are numerically zero."""
        top = self.values[0] if len(self.values) else 0
        return int((self.values > top * len(self.values) * torch.finfo(torch.float64).eps).sum()) if top > 0 else 0

    def svcca_dims(self, kept: float = VARIANCE_KEPT) -> int:
        """The fewest top directions whose variance reaches ``kept`` of the total (SVCCA's SVD step)."""
        if self.trace <= 0:
            return 0
        share = self.values.cumsum(0) / self.values.sum()
        return min(int((share < kept - 1e-12).sum()) + 1, self.rank)

    def whitener(self, dims: int) -> torch.Tensor:
        """W = V_k Λ_k^(-1/2) (d, k): X_c W has identity scatter on the top ``dims`` directions."""
        return self.vectors[:, :dims] / self.values[:dims].sqrt()


def _canonical(sa: Spectrum, sb: Spectrum, cross: torch.Tensor, dims_a: int, dims_b: int):
    """CCA between the top ``dims`` directions of each side: (U, ρ, Vᵀ) of W_aᵀ C_ab W_b."""
    if dims_a == 0 or dims_b == 0:
        return None
    return torch.linalg.svd(sa.whitener(dims_a).T @ cross.to(torch.float64) @ sb.whitener(dims_b),
                            full_matrices=False)


def svcca(sa: Spectrum, sb: Spectrum, cross: torch.Tensor, kept: float = VARIANCE_KEPT) -> float:
    """SVCCA: the mean canonical correlation between the directions keeping ``kept`` of each side's variance."""
    result = _canonical(sa, sb, cross, sa.svcca_dims(kept), sb.svcca_dims(kept))
    return math.nan if result is None else float(result[1].mean())


def pwcca(sa: Spectrum, sb: Spectrum, cross: torch.Tensor) -> float:
    """PWCCA: canonical correlations weighted by how much of the smaller side's neurons each variate carries."""
    dims_a, dims_b = sa.rank, sb.rank
    result = _canonical(sa, sb, cross, dims_a, dims_b)
    if result is None:
        return math.nan
    u, rho, vh = result
    m = len(rho)
    # ⟨h_i, x_j⟩ = (C a_i)_j with a_i = W u_i, so the projections are V_k Λ_k^(1/2) u_i
    side, turn = (sa, u[:, :m]) if dims_a <= dims_b else (sb, vh[:m].T)
    dims = turn.shape[0]
    alpha = (side.vectors[:, :dims] * side.values[:dims].sqrt() @ turn).abs().sum(0)
    return float((alpha * rho).sum() / alpha.sum())


def procrustes(sa: Spectrum, sb: Spectrum, cross: torch.Tensor) -> float:
    """Angular orthogonal Procrustes distance (radians): arccos of ‖C_ab‖_* / sqrt(tr C_aa tr C_bb)."""
    denominator = math.sqrt(sa.trace * sb.trace)
    if not denominator > 0:
        return math.nan
    cosine = float(torch.linalg.svdvals(cross.to(torch.float64)).sum()) / denominator
    return math.acos(min(1.0, max(-1.0, cosine)))


def pair_similarity(x: Any, y: Any, measure: str, k: int = 10) -> float:
    """One measure between two representations of the same n images: (n, d_x) and (n, d_y), rows as samples."""
    check_choice("measure", measure, SIMILARITY_MEASURES)
    x, y = _samples(x, "x"), _samples(y, "y")
    if x.shape[0] != y.shape[0]:
        raise MimlensError(f"x has {x.shape[0]} samples and y has {y.shape[0]}: expected the same samples, as rows")
    if measure in ("mutual_knn", "cknna", "rsa"):
        return {"mutual_knn": mutual_knn, "cknna": cknna, "rsa": rsa}[measure](FullData.of(x, k), FullData.of(y, k))
    n, sx, sy = x.shape[0], x.sum(0), y.sum(0)
    spectra = Spectrum.of(centred_scatter(n, sx, sx, x.T @ x)), Spectrum.of(centred_scatter(n, sy, sy, y.T @ y))
    return {"svcca": svcca, "pwcca": pwcca, "procrustes": procrustes}[measure](
        *spectra, centred_scatter(n, sx, sy, x.T @ y))
