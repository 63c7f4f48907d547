"""The similarity measures' reference formulas, re-implemented in numpy from their papers and reference code, with
none of mimlens's shortcuts: dense n x n masks and the O(n³) product in the unbiased HSIC (platonic-rep's
``metrics.py``), the SVD of the data matrix and a regularised pseudo-inverse CCA (Google's ``svcca``
``cca_core.py`` with its tutorial's epsilon), the canonical variates orthonormalised by QR (PWCCA), the aligned
matrices themselves (netrep's ``LinearMetric``) and scipy's ``pdist``/``spearmanr`` (RSA). Rows are samples.
Used by the tests and by ``benchmarks/similarity_conformance.py``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

CCA_EPSILON = 1e-10  # the tutorial's epsilon for SVCCA (Google's svcca, 001_Introduction)


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _knn(x, topk):
    sim = x @ x.T
    np.fill_diagonal(sim, -1e8)
    return np.argsort(-sim, axis=1, kind="stable")[:, :topk]


def _mask(knn, n):
    mask = np.zeros((n, n))
    mask[np.arange(n)[:, None], knn] = 1.0
    return mask


def mutual_knn(a, b, topk=10):
    a, b = _unit_rows(a), _unit_rows(b)
    n = len(a)
    return float(((_mask(_knn(a, topk), n) * _mask(_knn(b, topk), n)).sum(1) / topk).mean())


def hsic_unbiased(k, l):
    m = len(k)
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    value = np.sum(k * l.T) + np.sum(k) * np.sum(l) / ((m - 1) * (m - 2)) - 2 * np.sum(k @ l) / (m - 2)
    return value / (m * (m - 3))


def cknna(a, b, topk=10, eps=0.0):
    """platonic-rep's ``cknna`` (unbiased); the repository adds ``eps = 1e-6`` to the denominator."""
    a, b = _unit_rows(a), _unit_rows(b)
    n = len(a)

    def similarity(k, l):
        masks = []
        for g in (k, l):
            hat = g.copy()
            np.fill_diagonal(hat, -np.inf)
            masks.append(_mask(np.argsort(-hat, axis=1, kind="stable")[:, :topk], n))
        mask = masks[0] * masks[1]
        return hsic_unbiased(mask * k, mask * l)

    k, l = a @ a.T, b @ b.T
    return similarity(k, l) / (np.sqrt(similarity(k, k) * similarity(l, l)) + eps)


def _cca(acts1, acts2, epsilon):
    """cca_core's get_cca_similarity on (neurons, datapoints) activations: the canonical correlations, the
    rotations (u, vh) and the inverse square roots of the rescaled covariances."""
    numx = len(acts1)
    covariance = np.cov(acts1, acts2)
    sxx, sxy, syy = covariance[:numx, :numx], covariance[:numx, numx:], covariance[numx:, numx:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)

    def invsqrt(s):
        w, v = np.linalg.eigh(np.linalg.pinv(s + epsilon * np.eye(len(s))))
        return v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T

    ixx, iyy = invsqrt(sxx), invsqrt(syy)
    u, s, vh = np.linalg.svd(ixx @ sxy @ iyy)
    return np.abs(s), u, vh, ixx, iyy


def svcca(a, b, keep=0.99, epsilon=CCA_EPSILON):
    """Centre, keep the top singular directions explaining ``keep`` of the variance (s²), CCA, mean coefficient."""
    reduced = []
    for x in (a.T, b.T):
        centred = x - x.mean(axis=1, keepdims=True)
        _, s, vh = np.linalg.svd(centred, full_matrices=False)
        share = np.cumsum(s**2) / np.sum(s**2)
        dims = int(np.argmax(share >= keep - 1e-12)) + 1
        reduced.append(s[:dims, None] * vh[:dims])
    return float(np.mean(_cca(*reduced, epsilon)[0]))


def pwcca(a, b, epsilon=0.0):
    """Morcos et al. 2018: canonical variates h_i of the side with fewer neurons, α_i = Σ_j |⟨h_i, x_j⟩|."""
    acts1, acts2 = a.T, b.T
    rho, u, vh, ixx, iyy = _cca(acts1, acts2, epsilon)
    if len(acts1) <= len(acts2):
        acts, variates = acts1, u.T @ ixx @ (acts1 - acts1.mean(axis=1, keepdims=True))
    else:
        acts, variates = acts2, vh @ iyy @ (acts2 - acts2.mean(axis=1, keepdims=True))
    p, _ = np.linalg.qr(variates[: len(rho)].T)
    weights = np.sum(np.abs(p.T @ acts.T), axis=1)
    weights = weights / np.sum(weights)
    return float(np.sum(weights * rho))


def procrustes(a, b):
    """netrep ``LinearMetric(alpha=1, center_columns=True, score_method="angular")``: zero-pad, centre, rotate."""
    width = max(a.shape[1], b.shape[1])
    a = np.pad(a, ((0, 0), (0, width - a.shape[1])))
    b = np.pad(b, ((0, 0), (0, width - b.shape[1])))
    a, b = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    ta, tb = a @ u, b @ vt.T
    corr = np.dot(ta.ravel(), tb.ravel()) / (np.linalg.norm(ta) * np.linalg.norm(tb))
    return float(np.arccos(np.clip(corr, -1.0, 1.0)))


def rsa(a, b):
    """Correlation-distance RDMs (scipy's pdist), Spearman correlation of their condensed upper triangles."""
    return float(spearmanr(pdist(a, "correlation"), pdist(b, "correlation")).statistic)


REFERENCES = {"mutual_knn": mutual_knn, "cknna": cknna, "svcca": svcca, "pwcca": pwcca, "procrustes": procrustes,
              "rsa": rsa}


def shared_data(n=120, widths=(24, 40), seed=0):
    """Two related representations of the same n images: a shared low-rank signal, different mixing and noise."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 8))
    return [signal @ rng.normal(size=(8, d)) + 0.7 * rng.normal(size=(n, d)) for d in widths]
