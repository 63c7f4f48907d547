"""Calibration of the full-data similarity measures (mutual k-NN, CKNNA, RSA): a percentile interval over random
halves of the images and a permutation null, as CKA's (:mod:`mimlens.analysis.cka`).

- Interval: ``replicates`` half-samples of the n images (:func:`mimlens.analysis.cka.half_size`, drawn without
  replacement; a delete-half jackknife, Wu 1990), each measured from scratch on its half — the neighbours are
  searched again among the half's images and the RDM ranked again — and the 2.5 % and 97.5 % quantiles of the
  replicates (:func:`~mimlens.analysis.cka.percentile_interval`). Not a with-replacement bootstrap: an image drawn
  twice is its own nearest neighbour and its own zero distance. The halves keep k, so mutual k-NN and CKNNA run
  higher on them (chance k/(m - 1) among m images): their intervals compare paired analyses.
- Null: side b's images permuted (b'_i = b_π(i)), ``permutations`` times, against side a unchanged; null mean and
  p = (1 + #{null >= observed}) / (P + 1). A permutation is exact structure, so no search is repeated: b''s
  neighbours are π⁻¹(N_b(π(i))) with the same similarities, its RDM is the RDM with rows and columns permuted,
  and CKNNA's self term does not change.
- Seeding: the halves and permutations come from :func:`mimlens.analysis.cka.batch_draws` with (``seed``, 0) for
  the one batch of all n images, so two analyses of the same images in the same order with the same ``seed``
  draw the same halves and permutations (paired), whatever the models.

:func:`full_data_matrices` evaluates a measure for every block pair at once from each block's neighbour lists:
every term the measures need lies at side a's neighbour positions, gathered from side b's n x n mask and kernel,
so memory is two n x n float64 matrices of one b block plus La·n·k values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mimlens.analysis.cka import batch_draws, percentile_interval
from mimlens.analysis.similarity import FullData

__all__ = ["calibrate", "full_data_matrices", "half_replicates", "p_values", "permutation_null", "permuted"]


def permuted(data: FullData, perm: torch.Tensor) -> FullData:
    """``data`` of the images in the order ``perm`` (row i is image perm[i]): neighbours renamed, RDM ranks
    permuted, no new search."""
    n = data.n
    inverse = torch.empty_like(perm).scatter_(0, perm, torch.arange(n, device=perm.device))
    upper = torch.triu_indices(n, n, 1, device=perm.device)
    rows, cols = perm[upper[0]], perm[upper[1]]
    low, high = torch.minimum(rows, cols), torch.maximum(rows, cols)
    # the place of pair (low, high) in the row-major upper triangle
    place = low * n - low * (low + 1) // 2 + high - low - 1
    return FullData(inverse[data.knn[perm]], data.knn_sim[perm], data.rdm_ranks[place], data.cknna_self)


def _dense(data: FullData) -> tuple[torch.Tensor, torch.Tensor]:
    """The n x n neighbour mask (float64) and masked kernel of one block."""
    zeros = torch.zeros(data.n, data.n, dtype=torch.float64, device=data.knn.device)
    return zeros.scatter(1, data.knn, 1.0), zeros.scatter(1, data.knn, data.knn_sim)


def full_data_matrices(data_a: Sequence[FullData], data_b: Sequence[FullData],
                       names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Each of ``names`` (``mutual_knn``, ``cknna``, ``rsa``) between every block of a (rows) and of b (columns):
    the values of :func:`~mimlens.analysis.similarity.mutual_knn`, :func:`~mimlens.analysis.similarity.cknna` and
    :func:`~mimlens.analysis.similarity.rsa`, with CKNNA's HSIC terms read at a's neighbour positions."""
    n, k = data_a[0].knn.shape
    knn = torch.stack([d.knn for d in data_a])  # (La, n, k)
    sim = torch.stack([d.knn_sim for d in data_a])
    # M_a[j, i] at each neighbour j of i: whether i is among j's neighbours too
    back = torch.stack([_dense(d)[0][d.knn, torch.arange(n, device=d.knn.device)[:, None]] for d in data_a])
    row = torch.arange(n, device=knn.device)[None, :, None]
    self_a = torch.tensor([d.cknna_self for d in data_a], dtype=torch.float64, device=knn.device)
    out = {name: torch.empty(len(data_a), len(data_b), dtype=torch.float64, device=knn.device) for name in names}
    for j, b in enumerate(data_b):
        mask_b, kernel_b = _dense(b)
        shared = mask_b[row, knn]  # M_b[i, j'] at a's neighbours j' of i: (La, n, k)
        if "mutual_knn" in out:
            out["mutual_knn"][:, j] = shared.sum((1, 2)) / (n * k)
        if "cknna" in out:
            kept = sim * shared  # (K_a ∘ M_b)[i, j'] at a's neighbours
            cross = (kept * back * kernel_b.T[row, knn]).sum((1, 2))  # Σ_ij k_ij l_ji, l = K_b ∘ M_a
            kernel_at = kernel_b[row, knn]  # (K_b ∘ M_a)[i, j'] at a's neighbours
            columns = torch.zeros(len(data_a), n, dtype=torch.float64, device=knn.device).scatter_add_(
                1, knn.flatten(1), kept.flatten(1))
            hsic = (cross + kept.sum((1, 2)) * kernel_at.sum((1, 2)) / ((n - 1) * (n - 2))
                    - 2 * (columns * kernel_at.sum(2)).sum(1) / (n - 2)) / (n * (n - 3))
            denominator = self_a * b.cknna_self
            out["cknna"][:, j] = torch.where(denominator > 0, hsic / denominator.clamp(min=0).sqrt(), math.nan)
        if "rsa" in out:
            out["rsa"][:, j] = torch.stack([d.rdm_ranks for d in data_a]) @ b.rdm_ranks
    return out


def half_replicates(rows_a: Sequence[torch.Tensor], rows_b: Sequence[torch.Tensor] | None, names: Sequence[str],
                    k: int, halves: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each measure on every half-sample (R, La, Lb): ``halves`` (R, m) indexes the rows of both sides; the
    neighbours and RDMs are recomputed on each half. ``rows_b`` None within one model."""
    draws: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for half in halves:
        half_a = [FullData.of(x[half.to(x.device)], k) for x in rows_a]
        half_b = half_a if rows_b is None else [FullData.of(y[half.to(y.device)], k) for y in rows_b]
        for name, matrix in full_data_matrices(half_a, half_b, names).items():
            draws[name].append(matrix.cpu())
    return {name: torch.stack(values) for name, values in draws.items()}


def permutation_null(data_a: Sequence[FullData], data_b: Sequence[FullData], names: Sequence[str],
                     perms: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each measure with side b's images in the order of every row of ``perms`` (P, n): (P, La, Lb)."""
    null: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for perm in perms:
        shuffled = [permuted(d, perm.to(d.knn.device)) for d in data_b]
        for name, matrix in full_data_matrices(data_a, shuffled, names).items():
            null[name].append(matrix.cpu())
    return {name: torch.stack(values) for name, values in null.items()}


def p_values(null: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """(1 + #{null >= observed}) / (P + 1) per cell, NaN where the observed cell is."""
    p = (1 + (null >= observed).sum(0)).to(torch.float64) / (len(null) + 1)
    return torch.where(observed.isnan(), math.nan, p)


def calibrate(rows_a: Sequence[torch.Tensor], rows_b: Sequence[torch.Tensor] | None, data_a: Sequence[FullData],
              data_b: Sequence[FullData], observed: dict[str, torch.Tensor], k: int, replicates: int,
              permutations: int, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Per measure of ``observed``: ``low`` and ``high`` (the interval over ``replicates`` half-samples of the
    rows, when ``replicates``), ``null_mean`` and ``p_value`` (over ``permutations`` of side b, when
    ``permutations``), drawn by :func:`~mimlens.analysis.cka.batch_draws` (``seed``, 0). ``rows_b`` None within
    one model (both sides are ``rows_a``, halved alike)."""
    names = list(observed)
    halves, perms = batch_draws(seed, 0, rows_a[0].shape[0], replicates, permutations)
    found: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
    if replicates:
        for name, values in half_replicates(rows_a, rows_b, names, k, halves).items():
            found[name]["low"], found[name]["high"] = percentile_interval(values)
    if permutations:
        for name, values in permutation_null(data_a, data_b, names, perms).items():
            found[name]["null_mean"] = values.nanmean(0)
            found[name]["p_value"] = p_values(values, observed[name].cpu())
    return found
