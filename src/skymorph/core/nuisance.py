"""Remove what is not morphology: nuisance augmentations and the projection that ignores them.

A galaxy's features change when its image is noisier, more blurred, slightly zoomed or
shifted, or stretched in brightness, although its type does not.  Learnt from the run's own
stamps, without labels:

* :func:`augment` makes a few seeded nuisance copies of each stamp (added noise at the
  stamp's own noise level, a PSF-like Gaussian blur, a zoom of up to +-10 %, a sub-pixel
  shift and a brightness stretch);
* :func:`nuisance_projection` takes the features of the originals and of their copies and
  solves the generalised eigenproblem ``S_b v = lambda S_w v`` (between-galaxy scatter over
  within-galaxy, i.e. nuisance, scatter; ``scipy.linalg.eigh``), keeping the directions
  with the largest ratio: along them galaxies differ much more than copies of one galaxy;
* :func:`pca_whitening` is the comparison without nuisance copies (PCA, each component
  scaled to unit variance).

Both projections are a :class:`Projection` (a mean and a matrix) applied with
:meth:`Projection.apply`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, ndimage

__all__ = ["Projection", "augment", "nuisance_projection", "pca_whitening", "top_components"]


@dataclass
class Projection:
    """A linear map ``(x - mean) @ matrix`` of feature vectors."""

    mean: np.ndarray
    """(D,) subtracted first."""
    matrix: np.ndarray
    """(D, q) projection."""
    ratio: np.ndarray | None = None
    """(q,) between- over within-galaxy variance of each kept direction (nuisance projection)."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Project ``(N, D)`` features to ``(N, q)`` float32."""
        return ((np.asarray(x, dtype=np.float64) - self.mean) @ self.matrix).astype(np.float32)


def _noise_sigma(stamps: np.ndarray) -> np.ndarray:
    """MAD noise of each stamp's 4-pixel frame (what sky a copy's added noise matches)."""
    n, h, w = stamps.shape
    b = max(1, min(4, min(h, w) // 4))
    edge = np.ones((h, w), dtype=bool)
    edge[b:h - b, b:w - b] = False
    pix = np.nan_to_num(stamps[:, edge])
    sigma = 1.4826 * np.median(np.abs(pix - np.median(pix, axis=1, keepdims=True)), axis=1)
    spread = np.nan_to_num(stamps).reshape(n, -1).std(axis=1)
    return np.where(sigma > 0, sigma, 0.01 * spread)


def augment(stamps: np.ndarray, *, copies: int = 2, seed: int = 0, noise: float = 1.0,
            blur: float = 1.0, zoom: float = 0.1, shift: float = 0.5, stretch: float = 0.2) -> np.ndarray:
    """Seeded nuisance copies of every stamp.

    Each copy draws, per stamp: a zoom factor in ``1 +- zoom`` and a shift of up to
    ``shift`` pixels on each axis (one bilinear resampling about the stamp centre), a
    Gaussian blur of sigma up to ``blur`` pixels (PSF-like), a brightness stretch
    ``sign(I) |I / s|^g * s`` with ``g`` in ``1 +- stretch`` (``s``: the stamp's 99th
    percentile, so a linear rescaling, which the encoder's per-image scaling removes
    anyway, is not all it does), and Gaussian noise of up to ``noise`` times the
    stamp's own sky noise.

    Parameters
    ----------
    stamps : ndarray, shape (N, H, W)
    copies : int
        Copies per stamp.
    seed : int
        Seed of every draw.
    noise, blur, zoom, shift, stretch : float
        Largest amount of each nuisance (0 switches it off).

    Returns
    -------
    ndarray, shape (copies, N, H, W), float32
        A stamp's NaN pixels are zeros in its copies; the copies of a stamp without any
        finite pixel are all NaN, as the stamp.

    Raises
    ------
    ValueError
        For a stamp array that is not 3-D or ``copies < 1``.
    """
    stamps = np.asarray(stamps, dtype=np.float32)
    if stamps.ndim != 3:
        raise ValueError(f"augment needs (N, H, W) stamps, got shape {stamps.shape}")
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    n, h, w = stamps.shape
    rng = np.random.default_rng([seed, 19])
    sigma = _noise_sigma(stamps)
    empty = ~np.isfinite(stamps).any(axis=(1, 2))
    clean = np.nan_to_num(stamps)
    out = np.empty((copies, n, h, w), dtype=np.float32)
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    for c in range(copies):
        factors = 1 + rng.uniform(-zoom, zoom, n)
        shifts = rng.uniform(-shift, shift, (n, 2))
        blurs = rng.uniform(0, blur, n)
        gammas = 1 + rng.uniform(-stretch, stretch, n)
        noises = rng.uniform(0, noise, n)
        for i in range(n):
            im = clean[i].astype(np.float64)
            if zoom or shift:
                # output pixel p samples input centre + (p - centre) / factor - shift
                scale = 1 / factors[i]
                offset = centre - scale * centre - shifts[i]
                im = ndimage.affine_transform(im, np.array([scale, scale]), offset=offset, order=1,
                                              mode="nearest")
            if blurs[i] > 0.05:
                im = ndimage.gaussian_filter(im, blurs[i])
            if stretch:
                s = max(float(np.percentile(np.abs(im), 99)), 1e-30)
                im = np.sign(im) * np.abs(im / s) ** gammas[i] * s
            if noise:
                im = im + rng.normal(0, noises[i] * sigma[i], im.shape)
            out[c, i] = im
    out[:, empty] = np.nan
    return out


def top_components(x: np.ndarray, q: int) -> np.ndarray:
    """The first ``q`` principal axes (D, q) of centred rows ``x`` (N, D), signs fixed.

    A seeded randomised SVD (Halko et al. 2011; scikit-learn) when ``q`` is well below the
    matrix's smaller side, else the exact SVD: at 10^5 x 1280 the exact one costs minutes.
    """
    from sklearn.utils.extmath import randomized_svd, svd_flip

    q = int(min(q, *x.shape))
    if 3 * q < min(x.shape):
        u, _, vt = randomized_svd(x, q, n_iter=7, random_state=0)
    else:
        u, _, vt = np.linalg.svd(x, full_matrices=False)
        u, vt = u[:, :q], vt[:q]
    _, vt = svd_flip(u, vt)
    return vt.T


def _scatter(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    return x.T @ x / max(1, x.shape[0] - 1)


def nuisance_projection(features: np.ndarray, copies: np.ndarray, rows: np.ndarray, *, dims: int = 32,
                        pre_dims: int = 128, ridge: float = 1e-3) -> Projection:
    """The projection with the largest between-galaxy over within-galaxy variance.

    Parameters
    ----------
    features : ndarray, shape (N, D)
        Features of every galaxy (their scatter is the between-galaxy scatter ``S_b``).
    copies : ndarray, shape (C, M, D)
        Features of ``C`` nuisance copies of the ``M`` galaxies ``rows``.
    rows : ndarray of int, shape (M,)
        Which galaxies were copied.
    dims : int
        Directions kept (the largest generalised eigenvalues).
    pre_dims : int
        The eigenproblem is solved in the first ``pre_dims`` principal components of
        ``features`` (``S_w`` from a few hundred copies is singular in 1280 dimensions).
    ridge : float
        ``S_w`` is regularised by ``ridge`` times its mean eigenvalue on the diagonal.

    Returns
    -------
    Projection
        ``(x - mean) @ matrix``: ``S_w``-whitened (unit within-galaxy variance along every
        kept direction), ``ratio`` the between/within variance of each.

    Raises
    ------
    ValueError
        If the shapes do not match or there are fewer than 2 copied galaxies.
    """
    x = np.asarray(features, dtype=np.float64)
    cp = np.asarray(copies, dtype=np.float64)
    rows = np.asarray(rows)
    if cp.ndim != 3 or cp.shape[1] != rows.size or cp.shape[2] != x.shape[1]:
        raise ValueError(f"copies must be (C, {rows.size}, {x.shape[1]}), got {cp.shape}")
    if rows.size < 2:
        raise ValueError("the nuisance projection needs copies of at least 2 galaxies")
    mean = x.mean(axis=0)
    xc = x - mean
    p = int(min(pre_dims, x.shape[0] - 1, x.shape[1]))
    basis = top_components(xc, p)  # (D, p)
    z = xc @ basis
    group = np.concatenate([x[rows][None], cp], axis=0) - mean  # (C + 1, M, D)
    zg = group @ basis
    within = zg - zg.mean(axis=0, keepdims=True)
    s_w = np.einsum("cmi,cmj->ij", within, within) / max(1, within.shape[1] * (within.shape[0] - 1))
    s_b = _scatter(z)
    s_w += ridge * np.trace(s_w) / p * np.eye(p)
    vals, vecs = linalg.eigh(s_b, s_w)
    order = np.argsort(vals)[::-1][: int(min(dims, p))]
    return Projection(mean=mean, matrix=basis @ vecs[:, order], ratio=vals[order])


def pca_whitening(features: np.ndarray, *, dims: int = 32) -> Projection:
    """PCA to ``dims`` components, each scaled to unit variance (the comparison projection)."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    basis = top_components(x - mean, dims)
    std = ((x - mean) @ basis).std(axis=0, ddof=1)
    return Projection(mean=mean, matrix=basis / np.maximum(std, 1e-12))
