"""Closed-form ridge regression from streamed sums, with features standardised and λ chosen on held-out rows.

Conventions:
- a row is one sample (an image's pooled feature, or one patch token), x ∈ R^d, target y ∈ R^k;
- :class:`RidgeSums` holds n, Σx, Σxxᵀ, Σy, Σxyᵀ and Σy² in float64, so memory is flat in the number of
  rows, batches merge by addition and ``all_reduce_()`` sums them over ``torchrun`` processes;
- features are standardised with the mean and (population) standard deviation of all training rows; a
  constant feature keeps standard deviation 1;
- the bias is unpenalised (targets and standardised features are centred on the fitted rows), and λ is per
  row: W = (ZᵀZ/n + λI)⁻¹ ZᵀY/n with Z, Y centred, i.e. the textbook (ZᵀZ + nλI)⁻¹ ZᵀY, so one λ means
  the same shrinkage on the held-out subset and on all training rows;
- λ grid: 10⁻³ … 10³ (13 values, half decades) × the mean eigenvalue of ZᵀZ/n of the fitted rows; the value
  with the least held-out squared error (summed over outputs) is refitted on all training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mimlens.accumulate import SumAccumulator
from mimlens.errors import MimlensError

LAMBDA_FACTORS = tuple(10.0 ** (k / 2) for k in range(-6, 7))


class RidgeSums(SumAccumulator):
    """Streaming sums of (x, y) rows: ``n``, ``x`` (d), ``xx`` (d, d), ``y`` (k), ``xy`` (d, k), ``yy`` (k)."""

    def __init__(self, dim: int, outputs: int) -> None:
        super().__init__(n=(), x=(dim,), xx=(dim, dim), y=(outputs,), xy=(dim, outputs), yy=(outputs,))

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows ``x`` (n, d) with targets ``y`` (n, k); products are taken in float64 on x's device."""
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise MimlensError(f"ridge rows: features {tuple(x.shape)} and targets {tuple(y.shape)} must be (n, d) "
                               "and (n, k) with the same n")
        x, y = x.detach().double(), y.detach().to(x.device, torch.float64)
        self.add("n", x.shape[0])
        self.add("x", x.sum(0))
        self.add("xx", x.T @ x)
        self.add("y", y.sum(0))
        self.add("xy", x.T @ y)
        self.add("yy", (y * y).sum(0))

    def __add__(self, other: RidgeSums) -> RidgeSums:
        total = RidgeSums(*self.sums["xy"].shape)
        return total.merge(self).merge(other)


@dataclass
class Standardiser:
    """z = (x − mean) / std, per feature."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, sums: RidgeSums) -> Standardiser:
        n = float(sums.sums["n"])
        if n < 1:
            raise MimlensError("ridge: no training row to standardise the features with")
        mean = sums.sums["x"] / n
        var = (torch.diagonal(sums.sums["xx"]) / n - mean**2).clamp(min=0)
        std = var.sqrt()
        return cls(mean, torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std)))


@dataclass
class RidgeFit:
    """A fitted map in raw feature coordinates: prediction = x @ weight + bias; ``lam`` per row (see above)."""

    weight: torch.Tensor
    bias: torch.Tensor
    lam: float

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() @ self.weight.to(x.device) + self.bias.to(x.device)


def _centred(sums: RidgeSums, scale: Standardiser) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ZᵀZ/n, ZᵀY/n) of the standardised features centred on these rows, and the rows' mean z and y."""
    s, n = sums.sums, float(sums.sums["n"])
    if n < 1:
        raise MimlensError("ridge: no row to fit")
    mu_x, mu_y = s["x"] / n, s["y"] / n
    cov_xx = s["xx"] / n - torch.outer(mu_x, mu_x)
    cov_xy = s["xy"] / n - torch.outer(mu_x, mu_y)
    inv = 1.0 / scale.std
    return cov_xx * torch.outer(inv, inv), cov_xy * inv[:, None], (mu_x - scale.mean) * inv, mu_y


def _solve(gram: torch.Tensor, cross: torch.Tensor, z_mean: torch.Tensor, y_mean: torch.Tensor,
           scale: Standardiser, lam: float) -> RidgeFit:
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    w = torch.linalg.solve(gram + lam * eye, cross)
    weight = w / scale.std[:, None]
    return RidgeFit(weight, y_mean - z_mean @ w - scale.mean @ weight, lam)


def fit_ridge(sums: RidgeSums, scale: Standardiser, lam: float) -> RidgeFit:
    """Ridge fit of the rows summed in ``sums`` with per-row penalty ``lam`` on standardised features."""
    return _solve(*_centred(sums, scale), scale, lam)


def squared_error(sums: RidgeSums, fit: RidgeFit) -> torch.Tensor:
    """Σ over the summed rows of (y − x·W − b)², per output (k,), computed from the sums alone."""
    s, w, b = sums.sums, fit.weight, fit.bias
    return (s["yy"] - 2 * (w * s["xy"]).sum(0) - 2 * b * s["y"] + (w * (s["xx"] @ w)).sum(0)
            + 2 * b * (s["x"] @ w) + float(s["n"]) * b**2)


def mean_eigenvalue(sums: RidgeSums, scale: Standardiser) -> float:
    """Mean eigenvalue of ZᵀZ/n (trace / d) of the standardised, centred features of these rows."""
    gram = _centred(sums, scale)[0]
    return float(torch.diagonal(gram).mean())


def select_ridge(fit_rows: RidgeSums, held_rows: RidgeSums,
                 factors: tuple[float, ...] = LAMBDA_FACTORS) -> tuple[RidgeFit, dict[str, object]]:
    """Choose λ = factor × :func:`mean_eigenvalue` of ``fit_rows`` by the squared error on ``held_rows``,
    then refit on both with that λ. Features are standardised with both together (all training rows).

    Returns the refitted map and ``{"lambda", "lambda_factor", "held_out_mse"}`` (mean over held-out rows and
    outputs, per λ of the grid).
    """
    if float(held_rows.sums["n"]) < 1:
        raise MimlensError("ridge: the held-out part of the training rows is empty; give more training images")
    total = fit_rows + held_rows
    scale = Standardiser.of(total)
    centred = _centred(fit_rows, scale)
    unit = max(mean_eigenvalue(fit_rows, scale), 1e-12)
    count = float(held_rows.sums["n"]) * held_rows.sums["y"].numel()
    errors = [float(squared_error(held_rows, _solve(*centred, scale, f * unit)).sum()) / count for f in factors]
    best = min(range(len(factors)), key=lambda i: errors[i])
    fit = fit_ridge(total, scale, factors[best] * unit)
    return fit, {"lambda": fit.lam, "lambda_factor": factors[best], "held_out_mse": errors}
