"""Stamps from galaxy images: centring, cropping or padding with noise, resampling, PSF kernels.

Plain array functions behind ``skymorph ingest`` (and ``skymorph similar --image``), usable in
a notebook without a run directory:

* :func:`make_stamp` centres one image on its galaxy and crops or pads it (``framing="crop"``),
  or cuts a central fraction of the frame and resamples it (``framing="resample"``), to a
  square float32 stamp; padding and NaN pixels are filled with Gaussian noise at the image's
  own background level and sigma (:func:`skymorph.core.sky.ring_background`), never zeros;
* :func:`prepare_psf` turns a PSF image into an odd, centred kernel that sums to 1,
  resampled by the same pixel-scale change as a resampled stamp;
* :func:`field_window` cuts the neighbourhood of one position out of a large field
  (:class:`astropy.nddata.Cutout2D`), marking what lies outside the field;
* :func:`stamp_rng` and :func:`resolve_framing`: the per-galaxy seeded noise and the
  framing of ``framing="auto"``, so that a stamp made again is the same stamp.

Unusable inputs raise :class:`skymorph.errors.Reject` with the reason as its message.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

# imported with the module, not on first use: ingest's fork-started workers see a blanked
# ``__main__`` (core.parallel), and astropy.nddata cannot be imported there
from astropy.nddata import NoOverlapError, extract_array, overlap_slices
from scipy import ndimage

from ..errors import Reject, SkymorphError
from .sky import ring_background

__all__ = ["make_stamp", "prepare_psf", "field_window", "stamp_rng", "resolve_framing",
           "peak_near_centre", "resample_stamp", "StampError", "FLOAT32_LIMIT"]

FLOAT32_LIMIT = float(np.finfo(np.float32).max) / 1e3
"""Largest pixel value a stamp accepts (headroom for the noise fill and the resampling)."""


class StampError(SkymorphError, ValueError):
    """A setting of the stamp making is not one of its allowed values."""


def stamp_rng(gid: str, *, seed: int = 0) -> np.random.Generator:
    """The noise generator of one galaxy: the same ``seed`` and id give the same padding.

    Parameters
    ----------
    gid : str
        The galaxy's id.
    seed : int
        The run's seed (``ingest.seed``).

    Returns
    -------
    numpy.random.Generator
        Seeded from a BLAKE2b digest of ``"seed:gid"``, so it does not depend on the
        order in which galaxies are read, nor on the process that reads them.

    Examples
    --------
    >>> from skymorph.core.stamps import stamp_rng
    >>> a, b = stamp_rng("g1").standard_normal(3), stamp_rng("g1").standard_normal(3)
    >>> bool((a == b).all()), bool((a == stamp_rng("g2").standard_normal(3)).all())
    (True, False)
    """
    digest = hashlib.blake2b(f"{seed}:{gid}".encode(errors="surrogateescape"), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def resolve_framing(framing: str, *, raster: bool) -> str:
    """The framing of one image: ``"crop"`` or ``"resample"``; ``"auto"`` resamples
    display images (PNG/JPEG, whose framing already follows the galaxy) and crops the rest.

    Parameters
    ----------
    framing : {"auto", "crop", "resample"}
    raster : bool
        The image is a PNG/JPEG.

    Returns
    -------
    str

    Raises
    ------
    StampError
        ``framing`` is none of the three.

    Examples
    --------
    >>> from skymorph.core.stamps import resolve_framing
    >>> resolve_framing("auto", raster=True), resolve_framing("auto", raster=False)
    ('resample', 'crop')
    """
    if framing in ("crop", "resample"):
        return framing
    if framing != "auto":
        raise StampError(f"framing must be crop, resample or auto, not {framing!r}")
    return "resample" if raster else "crop"


def peak_near_centre(image: np.ndarray) -> tuple[int, int]:
    """(y, x) of the brightest pixel of the Gaussian-smoothed (sigma 1.5 pixels) image within
    ``max(2, min(H, W) // 8)`` pixels of its centre: where :func:`make_stamp` centres a stamp.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.stamps import peak_near_centre
    >>> image = np.zeros((64, 64)); image[30, 35] = 1.0
    >>> peak_near_centre(image)
    (30, 35)
    """
    h, w = image.shape
    radius = max(2, min(h, w) // 8)
    cy, cx = h // 2, w // 2
    y0, x0 = max(0, cy - radius), max(0, cx - radius)
    window = image[y0 : cy + radius + 1, x0 : cx + radius + 1]
    smooth = ndimage.gaussian_filter(window, 1.5, mode="nearest")
    py, px = np.unravel_index(np.argmax(smooth), smooth.shape)
    return int(y0 + py), int(x0 + px)


def _slices(shape: tuple[int, ...], cy: int, cx: int, side: int
            ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The part of the ``side`` square centred on (cy, cx) that lies inside the image, in the
    image's and in the square's pixels (corner ``c - side // 2``, as :func:`extract_array`)."""
    try:
        return overlap_slices(shape, (side, side), (cy, cx), mode="partial")
    except NoOverlapError:
        raise Reject(f"centre y={cy}, x={cx} lies outside the {shape[0]}x{shape[1]} image") from None


def _cut(image: np.ndarray, cy: int, cx: int, side: int, background: float, sigma: float,
         rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """The ``side`` square centred on (cy, cx), padded with noise where it leaves the image."""
    # extract_array pads with a constant; the noise padding needs where the image lies in the
    # square, and the noise is drawn only for a square that needs it (the same draws as before)
    large, small = _slices(image.shape, cy, cx, side)
    inside = image[large]
    if inside.shape == (side, side):
        return inside.copy(), False
    out = rng.standard_normal((side, side), dtype=np.float32)
    out *= sigma
    out += background
    out[small] = inside
    return out, True


def resample_stamp(image: np.ndarray, size: int) -> np.ndarray:
    """A square image resampled to ``size`` x ``size`` float32 pixels with Pillow: Lanczos
    when enlarging, a box average when shrinking (the resampling of ``framing="resample"``).

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.stamps import resample_stamp
    >>> resample_stamp(np.ones((40, 40)), 20).shape
    (20, 20)
    """
    from PIL import Image

    side = image.shape[0]
    return np.asarray(
        Image.fromarray(image.astype(np.float32), mode="F").resize(
            (size, size), Image.Resampling.LANCZOS if side < size else Image.Resampling.BOX
        )
    )


def _resample_rms(rms: np.ndarray, size: int) -> np.ndarray:
    """The error map of a resampled stamp: variances resampled like the pixels and,
    when ``side`` > ``size`` pixels are averaged (BOX), divided by the number averaged
    (independent noise assumed; the resampled noise is correlated either way).
    Output pixels touched by an unmeasured input pixel stay ``inf``."""
    side = rms.shape[0]
    unknown = ~np.isfinite(rms)
    variance = np.where(unknown, 0.0, rms) ** 2
    out = resample_stamp(variance, size).astype(np.float64)
    if side > size:
        out /= (side / size) ** 2
    out = np.sqrt(np.clip(out, 0, None))
    out[resample_stamp(unknown.astype(np.float32), size) > 1e-3] = np.inf
    return out


def make_stamp(image: np.ndarray, *, stamp_size: int = 100, framing: str = "crop",
               rng: np.random.Generator | None = None, min_size: int = 8, recentre: bool = True,
               frame_fraction: float = 0.5, max_nonfinite_fraction: float = 0.5,
               centre: tuple[float, float] | None = None, rms: np.ndarray | None = None,
               valid: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
    """Centre, crop or pad (or resample) one image to a square float32 stamp.

    Parameters
    ----------
    image : ndarray
        2-D image; NaN/inf pixels are allowed and get filled with noise.
    stamp_size : int
        Side of the stamp in pixels.
    framing : {"crop", "resample"}
        Cut at native scale, or cut ``frame_fraction`` of the frame and resample it
        (:func:`resolve_framing` picks one for ``"auto"``).
    rng : numpy.random.Generator, optional
        Source of the padding / filling noise; by default ``numpy.random.default_rng(0)``
        (ingest uses :func:`stamp_rng`).
    min_size : int
        Images smaller than this on either axis are rejected.
    recentre : bool
        Centre on the smoothed peak near the image centre (:func:`peak_near_centre`)
        rather than on the central pixel; ignored when ``centre`` is given.
    frame_fraction : float
        Central fraction of the frame kept before resampling (``framing="resample"``).
    max_nonfinite_fraction : float
        Largest share of NaN/inf pixels among the image pixels that land in the stamp.
    centre : (y, x), optional
        Galaxy position in pixels; found from the image when not given.
    rms : ndarray, optional
        1-sigma error map of ``image`` (same shape); cut exactly like the stamp.
    valid : ndarray of bool, optional
        Pixels that belong to the survey image (``False``: outside a field's edge);
        they count as padding, not as NaN pixels of the galaxy.

    Returns
    -------
    stamp : ndarray
        ``stamp_size`` x ``stamp_size`` float32.
    info : dict
        ``y``, ``x`` (centre used), ``orig_height``, ``orig_width``, ``padded``,
        ``framing``, ``frame_side``, ``background``, ``noise_sigma``, ``snr_pixel``,
        ``nan_filled``, ``nonfinite_fraction``.
    rms_stamp : ndarray or None
        The error map cut like the stamp (float32), ``inf`` where the stamp holds no
        measurement (padding, filled NaN pixels); ``None`` without ``rms``.

    Raises
    ------
    skymorph.errors.Reject
        All-NaN, constant or too small images, pixel values beyond float32, or a stamp
        whose share of NaN/inf pixels exceeds ``max_nonfinite_fraction``.

    See Also
    --------
    field_window : the neighbourhood of a position in a large field, for ``centre`` and ``valid``.
    prepare_psf : the PSF kernel of a stamp (``zoom = stamp_size / info["frame_side"]``).
    skymorph.core.sky.ring_background : the background level and sigma of the padding noise.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.stamps import make_stamp
    >>> rng = np.random.default_rng(1)
    >>> yy, xx = np.mgrid[:40, :50]
    >>> image = np.exp(-((yy - 20) ** 2 + (xx - 27) ** 2) / 20.0) + 0.01 * rng.standard_normal((40, 50))
    >>> stamp, info, _ = make_stamp(image, stamp_size=64)
    >>> stamp.shape, stamp.dtype, info["padded"], (info["y"], info["x"])
    ((64, 64), dtype('float32'), True, (20, 27))
    """
    rng = np.random.default_rng(0) if rng is None else rng
    size = stamp_size
    h, w = image.shape
    if h < min_size or w < min_size:
        raise Reject(f"image is {h}x{w} pixels, smaller than min_size={min_size}")
    finite = np.isfinite(image)
    n_bad = int(image.size - np.count_nonzero(finite))
    if n_bad == image.size:
        raise Reject("image is entirely NaN/inf")
    values = image[finite]
    if values.min() == values.max():
        raise Reject(f"image is constant (every pixel = {values.min():g})")
    largest = float(np.abs(values).max())
    if largest > FLOAT32_LIMIT:
        raise Reject(f"pixel values reach {largest:.3g}, beyond what a float32 stamp holds "
                     f"({FLOAT32_LIMIT:.3g}); they would become inf: rescale the image first")
    background, sigma = ring_background(image)
    if n_bad:
        image = image.copy()
        image[~finite] = background + sigma * rng.standard_normal(n_bad)
    if centre is None:
        cy, cx = peak_near_centre(image) if recentre else (h // 2, w // 2)
    else:
        cy, cx = int(round(centre[0])), int(round(centre[1]))
    side = size
    if framing == "resample":
        side = max(min_size, int(round(frame_fraction * min(h, w))))
    # The share of NaN/inf among the survey pixels that land in the stamp: filling
    # most of a stamp with noise would hand the later stages a made-up galaxy.
    large, _ = _slices((h, w), cy, cx, side)
    bad_in = ~finite[large]
    outside = None
    if valid is not None:
        outside = ~valid[large]
        bad_in = bad_in & ~outside
        n_real = int(outside.size - np.count_nonzero(outside))
    else:
        n_real = bad_in.size
    fraction = np.count_nonzero(bad_in) / n_real if n_real else 1.0
    if fraction > max_nonfinite_fraction:
        raise Reject(f"{fraction:.0%} of the stamp's pixels are NaN/inf, more than "
                     f"ingest.max_nonfinite_fraction = {max_nonfinite_fraction:g}")
    stamp, padded = _cut(image, cy, cx, side, background, sigma, rng)
    padded = padded or bool(outside is not None and outside.any())
    rms_stamp = None
    if rms is not None:
        rms = np.array(rms, dtype=np.float64)
        rms[~finite] = np.inf
        if valid is not None:
            rms[~valid] = np.inf
        rms_stamp = extract_array(rms, (side, side), (cy, cx), mode="partial", fill_value=np.inf)
    if framing == "resample" and side != size:
        stamp = resample_stamp(stamp, size)
        if rms_stamp is not None:
            rms_stamp = _resample_rms(rms_stamp, size)
        background, sigma = ring_background(stamp)
    stamp = stamp.astype(np.float32, copy=False)
    signal = (stamp - background) / sigma if sigma > 0 else np.zeros_like(stamp)
    footprint = signal > 2.0
    info = {
        "y": cy, "x": cx, "orig_height": h, "orig_width": w, "padded": padded,
        "framing": framing, "frame_side": side, "background": background,
        "noise_sigma": sigma,
        "snr_pixel": float(signal[footprint].mean()) if footprint.any() else 0.0,
        "nan_filled": n_bad, "nonfinite_fraction": float(fraction),
    }
    return stamp, info, None if rms_stamp is None else rms_stamp.astype(np.float32)


def prepare_psf(psf: np.ndarray, *, size: int = 41, zoom: float = 1.0) -> tuple[np.ndarray, float]:
    """A PSF image as a ``size`` x ``size`` kernel: peak on the central pixel, cropped
    or zero-padded, normalised to sum 1.

    Parameters
    ----------
    psf : ndarray
        2-D PSF image at the galaxy image's pixel scale.
    size : int
        Odd side of the result.
    zoom : float
        Pixel-scale change of the stamp (``stamp_size / frame side`` of a resampled
        stamp); the PSF is resampled by the same factor, each new pixel averaging
        bilinear samples over its footprint.

    Returns
    -------
    kernel : ndarray
        float32, sums to 1.
    flux_fraction : float
        Share of the PSF's flux inside the ``size`` square (before normalising).

    Raises
    ------
    skymorph.errors.Reject
        Not 2-D, non-finite pixels, or no positive flux.

    See Also
    --------
    make_stamp : its ``info["frame_side"]`` gives the zoom of a resampled stamp.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.stamps import prepare_psf
    >>> yy, xx = np.mgrid[:31, :31]
    >>> psf = np.exp(-((yy - 14) ** 2 + (xx - 16) ** 2) / 8.0)
    >>> kernel, inside = prepare_psf(psf, size=11)
    >>> kernel.shape, int(np.argmax(kernel)) == 5 * 11 + 5, round(float(kernel.sum()), 5), round(inside, 3)
    ((11, 11), True, 1.0, 0.989)
    """
    psf = np.squeeze(np.asarray(psf, dtype=np.float64))
    if psf.ndim != 2:
        raise Reject(f"PSF is {psf.ndim}-dimensional")
    if not np.isfinite(psf).all():
        raise Reject("PSF has NaN/inf pixels")
    total = psf.sum()
    if not total > 0:
        raise Reject("PSF has no positive flux")
    py, px = np.unravel_index(np.argmax(psf), psf.shape)
    if zoom == 1.0:
        kernel = extract_array(psf, (size, size), (int(py), int(px)), mode="partial", fill_value=0.0)
        inside = kernel.sum()
    else:
        # photutils.psf_matching.resize_psf is not used: it zooms the whole image with a cubic
        # spline (and forces its own odd shape), while this kernel stays centred on the peak and
        # integrates each new pixel's footprint like the stamp's BOX/LANCZOS resampling; the
        # kernels differ, so stored PSFs would change.  Each new pixel averages n x n bilinear
        # samples across its footprint of 1/zoom old pixels.
        n = max(1, int(np.ceil(1 / zoom)))
        sub = (np.arange(n) + 0.5) / n - 0.5
        offsets = ((np.arange(size) - size // 2)[:, None] + sub[None, :]).ravel() / zoom
        yy, xx = np.meshgrid(py + offsets, px + offsets, indexing="ij")
        samples = ndimage.map_coordinates(psf, [yy, xx], order=1, mode="constant", cval=0.0)
        kernel = samples.reshape(size, n, size, n).mean(axis=(1, 3))
        inside = kernel.sum() / zoom**2
    if not inside > 0:
        raise Reject("PSF has no positive flux near its peak")
    return (kernel / kernel.sum()).astype(np.float32), float(min(1.0, inside / total))


def field_window(image: np.ndarray, *, centre: tuple[float, float], size: int,
                 rms: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, tuple[float, float]]:
    """The ``2 * size`` square around a position of a large field, for :func:`make_stamp`.

    The window is twice the stamp size so that the background is measured on sky rather
    than on the galaxy; parts outside the field are NaN, marked ``False`` in ``valid``,
    and become noise padding in the stamp.

    Parameters
    ----------
    image : ndarray
        The field.
    centre : (y, x)
        Position in the field's pixels.
    size : int
        The stamp size.
    rms : ndarray, optional
        The field's 1-sigma error map, cut the same way (``inf`` outside the field).

    Returns
    -------
    window : ndarray
        float, ``2 * size`` square (a :class:`astropy.nddata.Cutout2D` in partial mode).
    rms_window : ndarray or None
    valid : ndarray of bool
        The window pixels that lie inside the field.
    centre : (y, x)
        The position in the window's pixels.

    Raises
    ------
    skymorph.errors.Reject
        The position lies outside the field.

    See Also
    --------
    make_stamp : takes the window, its ``centre``, ``rms`` and ``valid``.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.stamps import field_window
    >>> window, _, valid, centre = field_window(np.ones((100, 100)), centre=(5.0, 50.0), size=16)
    >>> window.shape, int(valid.sum()), centre
    ((32, 32), 672, (16.0, 16.0))
    """
    from astropy.nddata import Cutout2D  # loaded with extract_array above

    try:
        cut = Cutout2D(image, (centre[1], centre[0]), (2 * size, 2 * size), mode="partial",
                       fill_value=np.nan, copy=True)
    except NoOverlapError:
        raise Reject(f"position x={centre[1]:.1f}, y={centre[0]:.1f} is outside the image") from None
    (ys, ye), (xs, xe) = [(s.start, s.stop) for s in cut.slices_cutout]
    valid = np.zeros(cut.data.shape, dtype=bool)
    valid[ys:ye, xs:xe] = True
    rms_cut = None
    if rms is not None:
        rms_cut = np.full(cut.data.shape, np.inf)
        rms_cut[ys:ye, xs:xe] = rms[cut.slices_original]
    # the position in the padded window (to_cutout_position counts from the overlap's corner,
    # which is not the window's corner where the window leaves the field's low x or y edge)
    x, y = cut.input_position_cutout
    return cut.data, rms_cut, valid, (float(y), float(x))
