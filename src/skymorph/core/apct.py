"""Polar: the adaptive polar coordinate transform (APCT, Fang et al. 2023).

For each stamp:

1. **Pole.**  ``pole="brightest"`` (the paper): the brightest pixel.  Several
   equal maxima: the one nearest the stamp centre, then the first in row-major
   order.  ``"centre"``: the stamp centre ((S-1)/2, (S-1)/2), where ingest puts
   the galaxy.  ``"peak-near-centre"``: the brightest pixel of the
   Gaussian-smoothed stamp within ``pole_radius`` x S of the centre, so that a
   foreground star, a bright neighbour or a hot pixel elsewhere cannot take the
   pole.
2. **Polar axis.**  From the pole towards the faintest pixel (ties: the one
   nearest the centre, then row-major order).  When the faintest pixel is the
   pole itself (a constant stamp) the axis points along +x.
3. **Rays.**  ``n_rays`` rays (default ``floor(2 pi / angle_step)`` = 125 for
   0.05 rad), the k-th at angle ``axis + k * angle_step`` counter-clockwise as
   displayed with the origin at the lower left (row index = y upwards, the FITS
   convention): ``x = x0 + r cos(t)``, ``y = y0 + r sin(t)``.  Each ray is
   sampled at ``n_radii`` radii ``r_j = (j + 1/2) * max_radius / n_radii``
   (default 50 samples 1 px apart out to half the stamp width) by bilinear
   interpolation.  Samples outside the stamp take the stamp's background (the
   median of its border frame), never pixels from the opposite edge; near the
   edge bilinear weights blend towards that background.
4. **Stacking and mirror.**  Ray k becomes row k; with ``mirror`` the image is
   ``[flipped profile | profile]``: ``2 * n_radii`` columns whose centre two
   columns are the samples nearest the pole (no constant or zero column).

A rotation of the stamp rotates the pole and the faintest pixel with it, so
right-angle rotations leave the output unchanged up to a cyclic shift of rows;
other angles change it by interpolation only (see ``tests/test_polar.py``).

Edge cases are defined, never errors: a brightest pixel on the border gives
rays that leave the stamp at once (background samples); a constant stamp gives
a constant image of that value; non-finite pixels are replaced by the
background before anything else.

The transform is vectorised over a batch with :func:`torch.nn.functional.grid_sample`
(no Python loop per pixel or per ray); :func:`apct` works on NumPy arrays (no run
directory, no settings object), :func:`apct_torch` on a torch batch; the ``polar``
stage (:mod:`skymorph.stages.polar`) applies it to a run directory chunk by chunk.
Every default is the default of the ``[polar]`` settings (the paper's values).
"""


from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["POLES", "apct", "apct_torch", "polar_geometry", "output_shape", "check_params"]

POLES = ("brightest", "centre", "peak-near-centre")


def check_params(*, angle_step: float = 0.05, n_rays: int | None = None, n_radii: int | None = None,
                 max_radius: float | None = None, pole: str = "brightest") -> None:
    """Refuse APCT parameters that have no meaning.

    Raises
    ------
    ValueError
        An unknown ``pole``, ``angle_step`` outside (0, pi], a ray count, sample count or
        radius that is not positive.

    See Also
    --------
    apct

    Examples
    --------
    >>> from skymorph.core.apct import check_params
    >>> check_params(pole="dimmest")
    Traceback (most recent call last):
    ...
    ValueError: polar.pole must be one of brightest, centre, peak-near-centre; got 'dimmest'
    """
    if pole not in POLES:
        raise ValueError(f"polar.pole must be one of {', '.join(POLES)}; got {pole!r}")
    if not (0 < angle_step <= math.pi):
        raise ValueError(f"polar.angle_step must be in (0, pi] radians, got {angle_step}")
    for name, value in (("n_rays", n_rays), ("n_radii", n_radii)):
        if value is not None and int(value) < 1:
            raise ValueError(f"polar.{name} must be a positive integer or unset, got {value}")
    if max_radius is not None and not max_radius > 0:
        raise ValueError(f"polar.max_radius must be positive or unset, got {max_radius}")


def output_shape(stamp_size: int, *, angle_step: float = 0.05, n_rays: int | None = None,
                 n_radii: int | None = None, mirror: bool = True) -> tuple[int, int]:
    """``(rows, cols)`` of the APCT image of a ``stamp_size`` square stamp.

    Parameters
    ----------
    stamp_size : int
        Width of the square stamp in pixels.
    angle_step, n_rays, n_radii, mirror : see :func:`apct`.

    Returns
    -------
    tuple of int
        ``rows = n_rays`` (``floor(2 pi / angle_step)`` when None), ``cols = n_radii``
        (half the stamp width when None), doubled with ``mirror``.

    See Also
    --------
    apct

    Examples
    --------
    >>> from skymorph.core.apct import output_shape
    >>> output_shape(100), output_shape(100, mirror=False, n_radii=80, angle_step=0.1)
    ((125, 100), (62, 80))
    """
    rows = int(n_rays) if n_rays else int(math.floor(2 * math.pi / angle_step + 1e-9))
    radii = int(n_radii) if n_radii else max(1, stamp_size // 2)
    return rows, radii * (2 if mirror else 1)


def _background(x: Any, finite: bool = True) -> Any:
    """Median of each stamp's border frame (torch, (B,S,S) -> (B,))."""
    import torch

    s = x.shape[-1]
    b = max(1, min(max(2, s // 20), s // 2))
    frame = torch.cat([x[:, :b].flatten(1), x[:, -b:].flatten(1),
                       x[:, b:-b, :b].flatten(1), x[:, b:-b, -b:].flatten(1)], dim=1)
    if finite:
        return frame.median(dim=1).values
    return frame.nanmedian(dim=1).values.nan_to_num(0.0)


def _extreme_nearest_centre(x: Any, d2: Any, largest: bool) -> Any:
    """Flat index of each stamp's max (or min); ties go to the pixel nearest the
    centre, then to the first in row-major order (argmin returns the first)."""
    import torch

    flat = x.flatten(1)
    idx = flat.argmax(1) if largest else flat.argmin(1)
    value = flat.gather(1, idx[:, None])
    # Ties are rare on real data: resolve them only for the stamps that have them.
    tied = ((flat == value).sum(1) > 1).nonzero().flatten()
    if len(tied):
        sub = flat[tied]
        score = torch.where(sub == value[tied], d2.flatten()[None, :], float("inf"))
        idx = idx.clone()
        idx[tied] = score.argmin(1)
    return idx


def _gaussian_blur(x: Any, sigma: float) -> Any:
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return x
    half = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    h = x[:, None]
    h = F.conv2d(F.pad(h, (half, half, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    h = F.conv2d(F.pad(h, (0, 0, half, half), mode="replicate"), k.view(1, 1, -1, 1))
    return h[:, 0]


def polar_geometry(x: Any, *, pole: str = "brightest", pole_radius: float = 0.15,
                   pole_smooth: float = 1.0) -> tuple[Any, Any]:
    """Pole and polar axis of each stamp of a batch.

    Parameters
    ----------
    x : torch.Tensor, shape (B, S, S), float32
        Stamps whose non-finite pixels are already replaced.
    pole, pole_radius, pole_smooth : see :func:`apct`.

    Returns
    -------
    pole : torch.Tensor, shape (B, 2)
        (row, column) of each pole.
    angle : torch.Tensor, shape (B,)
        Polar axis angle in radians (towards the faintest pixel).

    See Also
    --------
    apct : returns the same with ``return_geometry=True`` on NumPy arrays.

    Examples
    --------
    >>> import torch
    >>> from skymorph.core.apct import polar_geometry
    >>> x = torch.zeros((1, 5, 5))
    >>> x[0, 1, 3], x[0, 4, 3] = 2.0, -1.0
    >>> pole, angle = polar_geometry(x)
    >>> pole.tolist(), round(float(angle[0]), 4)
    ([[1.0, 3.0]], 1.5708)
    """
    import torch

    b, s, _ = x.shape
    c = (s - 1) / 2.0
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32, device=x.device),
                            torch.arange(s, dtype=torch.float32, device=x.device), indexing="ij")
    d2 = (yy - c) ** 2 + (xx - c) ** 2
    if pole == "brightest":
        idx = _extreme_nearest_centre(x, d2, largest=True)
        where = torch.stack([(idx // s).float(), (idx % s).float()], dim=1)
    elif pole == "centre":
        where = torch.full((b, 2), c, dtype=torch.float32, device=x.device)
    else:
        smooth = _gaussian_blur(x, float(pole_smooth))
        radius = max(0.5, float(pole_radius) * s)
        outside = d2 > radius ** 2
        smooth = smooth.masked_fill(outside[None], float("-inf"))
        idx = _extreme_nearest_centre(smooth, d2, largest=True)
        where = torch.stack([(idx // s).float(), (idx % s).float()], dim=1)
    idx = _extreme_nearest_centre(x, d2, largest=False)
    faint = torch.stack([(idx // s).float(), (idx % s).float()], dim=1)
    dy, dx = (faint - where).unbind(1)
    same = (dy.abs() < 1e-6) & (dx.abs() < 1e-6)
    angle = torch.where(same, torch.zeros_like(dy), torch.atan2(dy, dx))
    return where, angle


def apct_torch(x: Any, *, angle_step: float = 0.05, n_rays: int | None = None, n_radii: int | None = None,
               max_radius: float | None = None, mirror: bool = True, pole: str = "brightest",
               pole_radius: float = 0.15, pole_smooth: float = 1.0, geometry: bool = False,
               owned: bool = False) -> Any:
    """APCT of a torch batch (the work of :func:`apct`, with no checks or conversions).

    Parameters
    ----------
    x : torch.Tensor, shape (B, S, S), float32
        Square stamps.
    angle_step, n_rays, n_radii, max_radius, mirror, pole, pole_radius, pole_smooth :
        See :func:`apct`.
    geometry : bool
        Also return the pole ``(B, 2)`` and the axis angle ``(B,)``.
    owned : bool
        The caller gives ``x`` away: the background is subtracted in place instead of
        on a copy.

    Returns
    -------
    torch.Tensor, shape (B, rows, cols)
        With ``geometry``: ``(images, pole, angle)``.

    See Also
    --------
    apct : the same on NumPy arrays.

    Examples
    --------
    >>> import torch
    >>> from skymorph.core.apct import apct_torch
    >>> apct_torch(torch.ones((2, 10, 10))).shape
    torch.Size([2, 125, 10])
    """
    import torch
    import torch.nn.functional as F

    b, s, s2 = x.shape
    if s != s2:
        raise ValueError(f"APCT needs square stamps, got {s} x {s2}")
    if bool(torch.isfinite(x).all()):
        bg = _background(x)
    else:
        bg = _background(torch.where(torch.isfinite(x), x, float("nan")), finite=False)
        x = torch.where(torch.isfinite(x), x, bg[:, None, None])
        owned = True
    where, axis = polar_geometry(x, pole=pole, pole_radius=pole_radius, pole_smooth=pole_smooth)
    rows, cols = output_shape(s, angle_step=angle_step, n_rays=n_rays, n_radii=n_radii, mirror=mirror)
    n_r = cols // 2 if mirror else cols
    r_max = float(max_radius) if max_radius else s / 2.0
    radii = (torch.arange(n_r, dtype=torch.float32, device=x.device) + 0.5) * (r_max / n_r)
    steps = torch.arange(rows, dtype=torch.float32, device=x.device) * float(angle_step)
    theta = axis[:, None] + steps[None, :]                                    # (B, rows)
    # Normalised grid coordinates straight away (align_corners=True maps -1/+1
    # to the centres of the first/last pixels): one fused op per axis.
    scale = 2.0 / max(s - 1, 1)
    grid = torch.empty((b, rows, n_r, 2), dtype=torch.float32, device=x.device)
    for i, (trig, centre) in enumerate(((torch.cos, where[:, 1]), (torch.sin, where[:, 0]))):
        grid[..., i] = torch.addcmul((centre * scale - 1.0)[:, None, None],
                                     (trig(theta) * scale)[:, :, None], radii[None, None, :])
    # Samples outside the stamp must be the background: sample (x - bg) with
    # zero padding and add bg back.
    x = x.sub_(bg[:, None, None]) if owned else x - bg[:, None, None]
    profile = F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)[:, 0]
    if mirror:
        out = torch.empty((b, rows, 2 * n_r), dtype=torch.float32, device=x.device)
        out[..., n_r:] = profile.add_(bg[:, None, None])
        out[..., :n_r] = profile.flip(-1)
    else:
        out = profile.add_(bg[:, None, None])
    if geometry:
        return out, where, axis
    return out


def apct(stamps: np.ndarray, *, angle_step: float = 0.05, n_rays: int | None = None,
         n_radii: int | None = None, max_radius: float | None = None, mirror: bool = True,
         pole: str = "brightest", pole_radius: float = 0.15, pole_smooth: float = 1.0,
         return_geometry: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive polar coordinate transform of a batch of stamps.

    Parameters
    ----------
    stamps : ndarray, shape (B, S, S) or (S, S)
        Square images (any float dtype).
    angle_step : float
        Angle between rays in radians, in (0, pi].
    n_rays : int, optional
        Rays (output rows); None fits as many steps as a turn holds.
    n_radii : int, optional
        Samples per ray; None uses half the stamp width (1 px apart).
    max_radius : float, optional
        Length of each ray in pixels; None is half the stamp width.
    mirror : bool
        Output ``[flipped profile | profile]`` (2 x ``n_radii`` columns).
    pole : {"brightest", "centre", "peak-near-centre"}
        Where the rays start (see the module docstring).
    pole_radius : float
        Search radius of ``peak-near-centre``, as a fraction of the stamp width.
    pole_smooth : float
        Gaussian sigma (pixels) of the smoothing used by ``peak-near-centre``.
    return_geometry : bool
        Also return the pole ``(B, 2)`` as (row, column) and the polar axis
        angle ``(B,)`` in radians.

    Returns
    -------
    ndarray, shape (B, rows, cols) float32
        ``rows = n_rays`` (125), ``cols = 2 * n_radii`` (S with the defaults);
        a 2-D input gives a 2-D output.

    Raises
    ------
    ValueError
        Parameters without meaning (:func:`check_params`), stamps that are not square
        or not a (B, S, S) batch.

    See Also
    --------
    apct_torch : the same on a torch batch.
    output_shape : the output's shape without computing it.

    Notes
    -----
    See the module docstring for the pole, axis, sampling and edge-case rules.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.apct import apct
    >>> y, x = np.mgrid[:100, :100]
    >>> galaxy = np.exp(-((x - 50) ** 2 + (y - 48) ** 2) / 50.0)
    >>> image, pole, angle = apct(galaxy, return_geometry=True)
    >>> image.shape, pole.tolist()
    ((125, 100), [[48.0, 50.0]])
    """
    import torch

    check_params(angle_step=angle_step, n_rays=n_rays, n_radii=n_radii, max_radius=max_radius, pole=pole)
    arr = np.asarray(stamps, dtype=np.float32)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"apct expects stamps of shape (B, S, S), got {np.shape(stamps)}")
    if arr.shape[0] == 0:
        rows, cols = output_shape(arr.shape[-1], angle_step=angle_step, n_rays=n_rays, n_radii=n_radii,
                                  mirror=mirror)
        empty = np.zeros((0, rows, cols), np.float32)
        return (empty, np.zeros((0, 2)), np.zeros(0)) if return_geometry else empty
    with torch.inference_mode():
        out, where, axis = apct_torch(torch.from_numpy(np.ascontiguousarray(arr)), angle_step=angle_step,
                                      n_rays=n_rays, n_radii=n_radii, max_radius=max_radius, mirror=mirror,
                                      pole=pole, pole_radius=pole_radius, pole_smooth=pole_smooth,
                                      geometry=True, owned=arr is not stamps and arr.base is None)
    out = out.numpy()
    if single:
        out = out[0]
    if return_geometry:
        return out, where.numpy(), axis.numpy()
    return out
