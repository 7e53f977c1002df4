"""Hybrid clustering features: the encoder's features beside cheap shape descriptors.

The encoder's (ImageNet) features hold the class structure, but it is not what dominates
their variance; simple shape measures (:mod:`skymorph.core.descriptors`) carry information
the encoder lacks.  :class:`HybridFeatures` puts both in one vector with a measured
weighting:

* the deep block is standardised per column and projected on its first ``deep_dims``
  principal components (0 keeps every standardised column);
* the descriptor block is imputed (column median where a stamp had no measurable galaxy),
  robustly standardised (median and inter-quartile range, clipped at +-``clip``);
* each block is scaled to a total variance of one, the descriptor block then multiplied by
  ``descriptor_weight``, so the weight is the descriptors' share of the distances whatever
  the two blocks' widths.

The fitted transform applies unchanged to other rows (e.g. nuisance copies of the same
galaxies, :mod:`skymorph.core.nuisance`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["HybridFeatures", "combine_features", "prepare_features", "stamp_descriptors",
           "descriptor_attributes", "NuisanceCopies", "nuisance_copies"]

DESCRIPTORS_NOTE = ("cheap shape descriptors used as clustering features (skymorph.core.descriptors); "
                    "not physical measurements: `skymorph measure` gives those")
"""Why the ``descriptors`` array of a run is not a measurement (stored with it)."""


@dataclass
class HybridFeatures:
    """A fitted hybrid transform (see the module docstring); build it with :meth:`fit`."""

    deep_mean: np.ndarray
    deep_std: np.ndarray
    deep_basis: np.ndarray | None
    deep_scale: float
    desc_median: np.ndarray | None
    desc_iqr: np.ndarray | None
    desc_scale: float
    descriptor_weight: float
    clip: float

    @classmethod
    def fit(cls, deep: np.ndarray, descriptors: np.ndarray | None = None, *, deep_dims: int = 32,
            descriptor_weight: float = 1.0, clip: float = 5.0) -> HybridFeatures:
        """Fit the block transforms on ``(N, D)`` deep features and ``(N, P)`` descriptors.

        Parameters
        ----------
        deep : ndarray, shape (N, D)
            Encoder features (finite).
        descriptors : ndarray, shape (N, P), optional
            Shape descriptors (NaN rows allowed); ``None`` or ``descriptor_weight = 0``
            gives the deep block alone.
        deep_dims : int
            Principal components of the standardised deep block (0: all columns, no PCA).
        descriptor_weight : float
            Weight of the descriptor block relative to the deep block (both scaled to unit
            total variance first).
        clip : float
            Standardised descriptors are clipped at +-``clip`` (outlying measurements).

        Raises
        ------
        ValueError
            Shapes that do not match, a negative weight, or non-finite deep features.
        """
        x = np.asarray(deep, dtype=np.float64)
        if x.ndim != 2 or not np.isfinite(x).all():
            raise ValueError("the deep features must be a finite (galaxies x features) array")
        if descriptor_weight < 0:
            raise ValueError(f"descriptor_weight must be >= 0, got {descriptor_weight}")
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        z = (x - mean) / std
        basis = None
        if deep_dims and deep_dims < min(z.shape):
            from .nuisance import top_components

            basis = top_components(z, deep_dims)
            z = z @ basis
        deep_scale = float(np.sqrt(max(z.var(axis=0).sum(), 1e-24)))
        med = iqr = None
        desc_scale = 1.0
        if descriptors is not None and descriptor_weight > 0:
            d = np.asarray(descriptors, dtype=np.float64)
            if d.ndim != 2 or d.shape[0] != x.shape[0]:
                raise ValueError(f"descriptors must be ({x.shape[0]}, P), got {d.shape}")
            med = np.nanmedian(np.where(np.isfinite(d), d, np.nan), axis=0)
            med = np.nan_to_num(med)
            q75, q25 = np.nanpercentile(np.where(np.isfinite(d), d, np.nan), [75, 25], axis=0)
            iqr = np.nan_to_num(q75 - q25)
            iqr = np.where(iqr > 1e-12, iqr / 1.349, 1.0)
            s = np.clip((np.where(np.isfinite(d), d, med) - med) / iqr, -clip, clip)
            desc_scale = float(np.sqrt(max(s.var(axis=0).sum(), 1e-24)))
        return cls(mean, std, basis, deep_scale, med, iqr, desc_scale, float(descriptor_weight), clip)

    def apply(self, deep: np.ndarray, descriptors: np.ndarray | None = None) -> np.ndarray:
        """The hybrid vectors of ``(n, D)`` deep features (and their ``(n, P)`` descriptors)."""
        z = (np.asarray(deep, dtype=np.float64) - self.deep_mean) / self.deep_std
        if self.deep_basis is not None:
            z = z @ self.deep_basis
        blocks = [z / self.deep_scale]
        if self.desc_median is not None:
            if descriptors is None:
                raise ValueError("this hybrid transform was fitted with descriptors; pass them")
            d = np.asarray(descriptors, dtype=np.float64)
            s = np.clip((np.where(np.isfinite(d), d, self.desc_median) - self.desc_median) / self.desc_iqr,
                        -self.clip, self.clip)
            blocks.append(s * (self.descriptor_weight / self.desc_scale))
        return np.hstack(blocks).astype(np.float32)


def combine_features(deep: np.ndarray, descriptors: np.ndarray | None = None, *, deep_dims: int = 32,
                     descriptor_weight: float = 1.0) -> np.ndarray:
    """Fit :class:`HybridFeatures` on these rows and return their hybrid vectors.

    Parameters are those of :meth:`HybridFeatures.fit`.

    Returns
    -------
    ndarray, shape (N, deep_dims + P), float32
    """
    model = HybridFeatures.fit(deep, descriptors, deep_dims=deep_dims, descriptor_weight=descriptor_weight)
    return model.apply(deep, descriptors)


def prepare_features(deep: np.ndarray, descriptors: np.ndarray | None = None, *,
                     descriptor_weight: float = 0.0, deep_dims: int = 32, projection: str = "none",
                     projection_dims: int = 32, copies: np.ndarray | None = None,
                     copy_descriptors: np.ndarray | None = None,
                     rows: np.ndarray | None = None) -> np.ndarray:
    """The clustering features: hybrid blocks, then an optional projection.

    Parameters
    ----------
    deep : ndarray, shape (N, D)
        Encoder features.
    descriptors : ndarray, shape (N, P), optional
        Shape descriptors (used when ``descriptor_weight > 0``).
    descriptor_weight, deep_dims : float, int
        See :meth:`HybridFeatures.fit`.
    projection : str
        ``none``, ``whiten`` (:func:`skymorph.core.nuisance.pca_whitening`) or ``nuisance``
        (:func:`skymorph.core.nuisance.nuisance_projection`, which needs ``copies`` and ``rows``).
    projection_dims : int
        Directions the projection keeps.
    copies : ndarray, shape (C, M, D), optional
        Encoder features of ``C`` nuisance copies of the galaxies ``rows``.
    copy_descriptors : ndarray, shape (C, M, P), optional
        Their descriptors (needed when ``descriptor_weight > 0``).
    rows : ndarray of int, shape (M,), optional

    Returns
    -------
    ndarray, shape (N, q), float32

    Raises
    ------
    ValueError
        An unknown projection, or the nuisance projection without its copies.
    """
    from .nuisance import nuisance_projection, pca_whitening

    if projection not in ("none", "whiten", "nuisance"):
        raise ValueError(f"projection must be none, whiten or nuisance, got {projection!r}")
    use_desc = descriptors if descriptor_weight > 0 else None
    model = HybridFeatures.fit(deep, use_desc, deep_dims=deep_dims, descriptor_weight=descriptor_weight)
    x = model.apply(deep, use_desc)
    if projection == "whiten":
        return pca_whitening(x, dims=projection_dims).apply(x)
    if projection == "nuisance":
        if copies is None or rows is None or (use_desc is not None and copy_descriptors is None):
            raise ValueError("the nuisance projection needs the features (and descriptors) of the copies "
                             "and the rows they copy")
        xa = np.stack([model.apply(copies[c], None if use_desc is None else copy_descriptors[c])
                       for c in range(copies.shape[0])])
        return nuisance_projection(x, xa, rows, dims=projection_dims).apply(x)
    return x


def stamp_descriptors(stamps: Any, *, levels: Sequence[float], chunk_size: int,
                      rows: int | None = None) -> tuple[np.ndarray, list[str]]:
    """The shape descriptors of the first ``rows`` stamps, ``chunk_size`` stamps at a time.

    Only one chunk of stamps is in memory at once, so ``stamps`` may be a Zarr array of a
    run as well as an ndarray.

    Parameters
    ----------
    stamps : array-like, shape (N, H, W)
        Anything sliceable along axis 0 (ndarray, Zarr array).
    levels : sequence of float
        Isophote levels (:func:`skymorph.core.descriptors.descriptors_at_levels`).
    chunk_size : int
        Stamps read and described at a time.
    rows : int, optional
        How many stamps, from the first (all by default).

    Returns
    -------
    values : ndarray, shape (rows, len(levels) * P), float32
    names : list of str
        The column names.

    See Also
    --------
    skymorph.core.descriptors.descriptors_at_levels : the descriptors of one block.
    descriptor_attributes : what a run stores beside them.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:32, :32]
    >>> blob = np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / 20.0)
    >>> values, names = stamp_descriptors(np.stack([blob] * 5), levels=(0.2,), chunk_size=2)
    >>> values.shape[0], len(names) == values.shape[1]
    (5, True)
    """
    from .descriptors import descriptors_at_levels

    n = len(stamps) if rows is None else int(rows)
    parts, names = [], []
    for lo in range(0, n, chunk_size):
        block = np.asarray(stamps[lo:lo + chunk_size], dtype=np.float32)
        values, names = descriptors_at_levels(block, levels=levels)
        parts.append(values)
    return np.vstack(parts), names


def descriptor_attributes(names: Sequence[str]) -> dict[str, Any]:
    """The attributes stored with the descriptors: column names, units (radii in pixels,
    the rest without unit) and :data:`DESCRIPTORS_NOTE`.

    Examples
    --------
    >>> descriptor_attributes(["gini", "r50"])["units"]
    ['', 'pix']
    """
    units = ["pix" if name.split("_")[0] in ("r20", "r50", "r80") else "" for name in names]
    return {"columns": list(names), "units": units, "note": DESCRIPTORS_NOTE}


@dataclass
class NuisanceCopies:
    """What the nuisance projection of :func:`prepare_features` needs of the copies (its
    parameters of the same names)."""

    rows: np.ndarray
    """The galaxies copied, shape (M,)."""
    copies: np.ndarray
    """Encoder features of the copies, shape (C, M, D)."""
    copy_descriptors: np.ndarray | None
    """Their shape descriptors, shape (C, M, P), when asked for."""


def nuisance_copies(sample: np.ndarray, rows: np.ndarray, *, encode: Callable[[np.ndarray], np.ndarray],
                    copies: int = 2, seed: int = 42,
                    descriptor_levels: Sequence[float] | None = None) -> NuisanceCopies:
    """Encoder features (and descriptors) of seeded nuisance copies of a sample of stamps.

    Copies whose features are not finite (copies of empty stamps) drop their galaxy from
    every copy, since the projection needs each galaxy in every copy.

    Parameters
    ----------
    sample : ndarray, shape (M, H, W)
        The stamps of the galaxies ``rows``.
    rows : ndarray of int, shape (M,)
        Their rows in the run.
    encode : callable
        Stamps (M, H, W) -> features (M, D), e.g. an encoder's ``encode`` at its batch size.
    copies : int
        Copies per stamp (:func:`skymorph.core.nuisance.augment`).
    seed : int
        Seed of the copies.
    descriptor_levels : sequence of float, optional
        Also describe the copies at these isophote levels (when the descriptors are a block
        of the features).

    Returns
    -------
    NuisanceCopies

    See Also
    --------
    skymorph.core.nuisance.augment : the copies.
    prepare_features : uses them for ``projection = "nuisance"``.

    Examples
    --------
    >>> import numpy as np
    >>> stamps = np.random.default_rng(0).normal(size=(6, 16, 16)).astype(np.float32)
    >>> out = nuisance_copies(stamps, np.arange(6), encode=lambda x: x.mean(axis=(1, 2))[:, None],
    ...                       copies=2, seed=0)
    >>> out.copies.shape, out.copy_descriptors is None
    ((2, 6, 1), True)
    """
    from .descriptors import descriptors_at_levels
    from .nuisance import augment

    copied = augment(sample, copies=copies, seed=seed)
    features = np.stack([encode(c) for c in copied])
    if not np.isfinite(features).all():  # copies of empty stamps: drop those galaxies
        ok = np.isfinite(features).all(axis=(0, 2))
        rows, features, copied = rows[ok], features[:, ok], copied[:, ok]
    copy_desc = None
    if descriptor_levels is not None:
        copy_desc = np.stack([descriptors_at_levels(c, levels=descriptor_levels)[0] for c in copied])
    return NuisanceCopies(rows=rows, copies=features, copy_descriptors=copy_desc)
