"""Measuring stamps: segmentation, statmorph, Psi and G2 of one stamp or a block of them
(what each worker of ``skymorph measure`` runs; the stage, :mod:`skymorph.stages.measure`,
reads the run and writes the table).

Each stamp:

1. the background level ingest measured is subtracted;
2. the stamp is segmented with photutils (smoothing, detection, deblending) and the
   segment at (or nearest to) the centre kept; other segments are masked;
3. statmorph runs: Gini, M20, C, A, S, M, I, D, single-Sersic n and r_e (and every other
   statmorph scalar), with statmorph's ``flag`` and ``flag_sersic``.  Per-pixel errors
   (statmorph's weight map), first that applies: the array named by ``weight_array``; a
   ``gain``; the run's ``rms`` array; the stamp's background sigma as a constant.  PSF of
   the Sersic fits: the ``psf_file`` setting, else the run's ``psf`` array (one per
   stamp), else none;
4. the multiplicity Psi (Law et al. 2007) and the gradient asymmetry G2 (Rosa et al.
   2018) are added, the latter with a noise tolerance and a ``g2_reliable`` flag below
   ``g2_min_sn``.

Every raw value is kept, with one validity flag per family (:mod:`skymorph.core.quality`):
``nonparam_ok`` (statmorph's flag 0/1, the same as ``measure_ok``), ``sersic_ok``
(flag_sersic 0/1) and ``g2_reliable``.  Also given: the Sersic parameters' errors from the
fit covariance and optional noise-resampled errors of the non-parametric values
(``resamples``); the stage adds r_e in arcsec where the pixel scale is known, magnitudes
where a zero point is known (``zeropoint``, else the header's MAGZERO / PHOTZP) and
``measure_linear`` (:func:`skymorph.core.measure_tasks.finish_rows`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import MeasureConfig
from ..errors import SkymorphError

__all__ = ["MeasureError", "SEGMAP_CODES", "measure_stamp", "measure_block"]


class MeasureError(SkymorphError, ValueError):
    """The run cannot be measured as asked (non-linear stamps, an unusable PSF...)."""



def _normalised_psf(image: np.ndarray, what: str) -> np.ndarray:
    if image.ndim != 2 or not np.isfinite(image).all() or not image.sum() > 0:
        raise MeasureError(f"{what}: the PSF must be a finite 2-D image with a positive sum")
    return image / image.sum()


SEGMAP_CODES = {"sky": 0, "galaxy": 1, "neighbour": 2, "bad": 3}
"""Values of the ``segmap`` array: the measured galaxy's segment, other sources (masked), and
pixels without a usable error (masked)."""


def measure_stamp(stamp: np.ndarray, noise_sigma: float | None = None, background: float = 0.0,
                  weightmap: np.ndarray | None = None, config: MeasureConfig | None = None,
                  psf: np.ndarray | None = None, *, return_segmap: bool = False) -> dict[str, Any]:
    """Measure one stamp: segmentation, statmorph, Psi and G2.

    Parameters
    ----------
    stamp : ndarray
        The 2-D stamp as stored (not background-subtracted).
    noise_sigma : float, optional
        Background standard deviation; used for detection, and as the constant
        error of every pixel when neither ``weightmap`` nor ``config.gain`` is given.
    background : float
        Background level, subtracted when ``config.subtract_background``.
    weightmap : ndarray, optional
        Per-pixel 1-sigma errors (statmorph's ``weightmap``); pixels where it is
        not finite or not positive (padding) are masked.  Used instead of
        ``config.gain``.
    config : MeasureConfig, optional
        Settings; defaults to ``MeasureConfig()``.
    psf : ndarray, optional
        PSF convolved with the Sersic models (normalised here).
    return_segmap : bool
        Add ``segmap``: the stamp's segmentation as measured (uint8, :data:`SEGMAP_CODES`;
        all zero when segmentation failed).

    Returns
    -------
    dict
        The row of :func:`skymorph.core.morphometry.morphology` (with the Sersic errors),
        plus the resampled errors of the non-parametric quantities when
        ``config.resamples``; never raises.
    """
    from . import morphometry as mm

    cfg = config or MeasureConfig()
    row = mm.empty_result(cfg.include_doublesersic)
    if return_segmap:
        row["segmap"] = np.zeros(np.shape(stamp), dtype=np.uint8)
    try:
        image = np.asarray(stamp, dtype=np.float64)
        if cfg.subtract_background and np.isfinite(background):
            image = image - background
        if not np.isfinite(image).all():
            raise ValueError("stamp has NaN or infinite pixels")
        bad = None
        if weightmap is not None:
            weightmap = np.asarray(weightmap, dtype=np.float64)
            if weightmap.shape != image.shape:
                raise ValueError(f"weight map {weightmap.shape} does not match the stamp {image.shape}")
            bad = ~(np.isfinite(weightmap) & (weightmap > 0))
            if bad.all():
                raise ValueError("weight map has no finite positive pixel")
            if bad.any():
                weightmap = np.where(bad, float(np.median(weightmap[~bad])), weightmap)
            else:
                bad = None
        if psf is not None:
            psf = _normalised_psf(np.asarray(psf, dtype=np.float64), "psf")
        sigma = noise_sigma
        if sigma is None or not np.isfinite(sigma) or sigma <= 0:
            if weightmap is not None:
                sigma = float(np.median(weightmap if bad is None else weightmap[~bad]))
            else:
                raise ValueError("no usable noise estimate (noise_sigma <= 0 or missing)")
        segmap, others = mm.make_segmap(image, sigma, cfg.detect_nsigma, cfg.detect_npixels,
                                        cfg.smooth_fwhm, cfg.deblend, cfg.deblend_contrast, mask=bad)
        if return_segmap:
            codes = np.where(segmap > 0, SEGMAP_CODES["galaxy"],
                             np.where(others, SEGMAP_CODES["neighbour"], SEGMAP_CODES["sky"]))
            if bad is not None:
                codes = np.where(bad, SEGMAP_CODES["bad"], codes)
            row["segmap"] = codes.astype(np.uint8)
        mask = others if bad is None else others | bad
        gain = None
        g2_noise: float | np.ndarray = float(sigma)
        if weightmap is None and cfg.gain is None:
            weightmap = np.full(image.shape, float(sigma))
        elif weightmap is None:
            gain = cfg.gain
        else:
            g2_noise = weightmap
        result = mm.morphology(image, segmap, 1, mask=mask if mask.any() else None,
                               weightmap=weightmap, gain=gain, include_sersic=cfg.include_sersic,
                               include_doublesersic=cfg.include_doublesersic, psf=psf,
                               g2_module_tolerance=cfg.g2_module_tolerance,
                               g2_phase_tolerance=cfg.g2_phase_tolerance,
                               g2_noise_tolerance=cfg.g2_noise_tolerance, noise_sigma=g2_noise)
        if cfg.resamples and result["measure_ok"]:
            import zlib

            from .uncertainty import resampled_errors

            # seeded per galaxy by its pixels, so the errors do not depend on the chunking
            seed = [int(cfg.seed), zlib.crc32(np.ascontiguousarray(image).tobytes())]
            result.update(resampled_errors(image, segmap, n=cfg.resamples, sigma=g2_noise, seed=seed,
                                           mask=mask if mask.any() else None, weightmap=weightmap, gain=gain))
        if return_segmap:
            result["segmap"] = row["segmap"]
        return result
    except Exception as exc:  # noqa: BLE001 - one galaxy never aborts the run
        row["measure_reason"] = f"{type(exc).__name__}: {exc}"[:500]
        return row


def _usable_psf(psf: np.ndarray | None) -> bool:
    # ingest writes NaN for a stamp of the psf array that has no PSF
    return psf is not None and bool(np.isfinite(psf).all()) and float(np.sum(psf)) > 0


def _usable_weights(weights: np.ndarray | None) -> bool:
    # ingest writes NaN throughout for a stamp without an error map (inf marks single
    # pixels without a measurement, which measure_stamp masks)
    return weights is not None and bool(np.isfinite(weights).any())


def measure_block(stamps: np.ndarray, noise_sigma: np.ndarray, background: np.ndarray,
                  config: MeasureConfig, weights: np.ndarray | None = None,
                  psf: np.ndarray | None = None, *, return_segmap: bool = False) -> list[dict[str, Any]]:
    """Measure a block of stamps (one Dask / worker task); one row per stamp.

    ``weights`` holds one error map per stamp; ``psf`` is one PSF for every stamp
    (2-D) or one per stamp (3-D).  A stamp whose error map is NaN throughout is
    measured with its constant ``noise_sigma`` (or ``config.gain``), and one whose
    PSF is not finite without a PSF: the ``rms`` and ``psf`` arrays of ingest hold
    NaN for stamps that have none.
    """
    rows = []
    for i in range(len(stamps)):
        w = None if weights is None else np.asarray(weights[i], dtype=np.float64)
        p = None if psf is None else (psf if np.ndim(psf) == 2 else psf[i])
        rows.append(measure_stamp(stamps[i], float(noise_sigma[i]), float(background[i]),
                                  w if _usable_weights(w) else None, config,
                                  p if _usable_psf(p) else None, return_segmap=return_segmap))
    return rows
