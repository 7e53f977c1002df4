"""Planning a run's measurement and finishing its rows: which stamps are linear in flux,
which errors and PSF are used, the chunks of galaxies sent to the workers, the labels of
each measured row, and the columns added to the rows before they are written (validity
flags, sizes in arcsec, magnitudes) with the table's schema.  The stage,
:mod:`skymorph.stages.measure`, reads the run and writes the table; each stamp is measured
by :mod:`skymorph.core.stampmeasure`.  Tables and arrays in, no run directory: where a
choice depends on the run's arrays the caller passes ``has_array``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import MeasureConfig
from .stampmeasure import MeasureError, _usable_psf, _usable_weights, measure_block
from .uncertainty import RESAMPLED_QUANTITIES, SERSIC_ERROR_COLUMNS

__all__ = ["NONLINEAR_SUFFIXES", "linear_flags", "refuse_nonlinear", "weights_source", "psf_source",
           "MeasureTask", "plan_tasks", "measure_task", "EXTRA_COLUMNS", "row_schema", "pixel_scales",
           "zeropoints", "pop_segmaps", "finish_rows", "psf_digest", "check_inputs", "resampled_psf_note",
           "MeasureCounts"]

NONLINEAR_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Input files whose pixels are display-scaled (gamma, stretch, 8-bit), not flux."""


def linear_flags(sources: pd.DataFrame) -> np.ndarray:
    """Whether each stamp's pixels are linear in flux.

    The ``linear`` column of ``sources.parquet`` where ingest wrote one; for runs
    made before it (or rows where it is missing), derived from the input file:
    PNG and JPEG (:data:`NONLINEAR_SUFFIXES`) are not linear, everything else is.
    """
    n = len(sources)
    if "origin" in sources:
        by_suffix = ~sources["origin"].astype(str).str.lower().str.endswith(NONLINEAR_SUFFIXES).to_numpy()
    else:
        by_suffix = np.ones(n, dtype=bool)
    if "linear" not in sources:
        return by_suffix
    given = sources["linear"].astype(object)
    missing = given.isna().to_numpy()
    return np.where(missing, by_suffix, given.where(~given.isna(), True).astype(bool).to_numpy())


def refuse_nonlinear(linear: np.ndarray, sources: pd.DataFrame) -> None:
    """Refuse stamps that are not linear in flux, counted by input suffix.

    Parameters
    ----------
    linear : ndarray of bool
        :func:`linear_flags` of ``sources``.
    sources : DataFrame
        The run's sources table (its ``origin`` column names the input files).

    Raises
    ------
    MeasureError
        If any stamp is not linear; the message says how to measure anyway.
    """
    n_bad = int((~linear).sum())
    if not n_bad:
        return
    kinds = ""
    if "origin" in sources:
        suffixes = sources.loc[~linear, "origin"].astype(str).map(lambda f: Path(f).suffix.lower() or "?")
        kinds = " (" + ", ".join(f"{v} {k}" for k, v in suffixes.value_counts().items()) + ")"
    raise MeasureError(
        f"{n_bad} of {len(linear)} stamps are not linear in flux{kinds}: PNG/JPEG pixels are "
        "display-scaled (gamma, stretch, 8-bit clipping), so Sersic n, concentration, Gini, M20 "
        "and asymmetry measured on them are meaningless. Measure FITS/NPY images of the same "
        "galaxies, or pass --allow-nonlinear (measure.allow_nonlinear = true) to measure anyway: "
        "every value is then marked measure_linear = false.")


def weights_source(cfg: MeasureConfig, has_array: Callable[[str], bool]) -> tuple[str | None, str]:
    """Array of per-pixel errors to read (or None) and what ``measure_weights`` says.

    Parameters
    ----------
    cfg : MeasureConfig
        The settings: ``weight_array``, else ``gain``, else the ``rms`` array when
        ``rms_array`` and the run has one, else the stamps' ``noise_sigma``.
    has_array : callable
        Whether the run holds the named array (asked only when it decides).

    Returns
    -------
    name : str or None
        The run array to read, or None.
    label : str
        ``measure_weights`` of a stamp measured with these errors.
    """
    if cfg.weight_array:
        return cfg.weight_array, cfg.weight_array
    if cfg.gain is not None:
        return None, "gain"
    if cfg.rms_array and has_array("rms"):
        return "rms", "rms"
    return None, "noise_sigma"


def psf_source(cfg: MeasureConfig, has_array: Callable[[str], bool]) -> str:
    """Where the PSF of the Sersic fits comes from: ``file`` (``psf_file``), ``array`` (the
    run's ``psf`` array, when ``psf_array`` and the run has one) or ``none``."""
    if cfg.psf_file:
        return "file"
    if cfg.psf_array and has_array("psf"):
        return "array"
    return "none"


@dataclass
class MeasureTask:
    """One chunk of consecutive stamps, measured by one worker."""

    run_path: str
    start: int
    stop: int
    ids: list[str]
    noise: list[float]
    background: list[float]
    weights: str | None = None
    """Run-directory array of per-pixel errors (``weight_array`` or ``rms``), if used."""
    psf: np.ndarray | None = None
    """The run-wide PSF (``psf_file``), if given."""
    psf_array: bool = False
    """Read each stamp's PSF from the run's ``psf`` array."""
    psf_label: str = "none"
    """``measure_psf`` of a stamp that has a usable PSF (file / array)."""
    weights_label: str = "noise_sigma"
    """``measure_weights`` of a stamp measured with the chosen errors."""


def plan_tasks(run_path: str, sources: pd.DataFrame, chunk_size: int, *, weights: str | None = None,
               psf: np.ndarray | None = None, psf_array: bool = False, psf_label: str = "none",
               weights_label: str = "noise_sigma") -> list[MeasureTask]:
    """The chunks of ``chunk_size`` galaxies, in stamp order, that the workers measure.

    Parameters
    ----------
    run_path : str
        The run directory each worker reads its stamps from.
    sources : DataFrame
        The sources table, one row per stamp: ``id``, and ``noise_sigma`` and
        ``background`` where ingest measured them (else NaN and 0).
    chunk_size : int
        Galaxies per task.
    weights, psf, psf_array, psf_label, weights_label
        The :class:`MeasureTask` fields shared by every task.

    Returns
    -------
    list of MeasureTask
    """
    n = len(sources)
    ids = sources["id"].astype(str).tolist()
    noise = (sources["noise_sigma"].astype(float).to_numpy() if "noise_sigma" in sources
             else np.full(n, np.nan))
    background = (sources["background"].astype(float).to_numpy() if "background" in sources
                  else np.zeros(n))
    return [MeasureTask(run_path, s, min(s + chunk_size, n), ids[s: s + chunk_size],
                        noise[s: s + chunk_size].tolist(), background[s: s + chunk_size].tolist(),
                        weights=weights, psf=psf, psf_array=psf_array, psf_label=psf_label,
                        weights_label=weights_label)
            for s in range(0, n, chunk_size)]


def measure_task(task: MeasureTask, stamps: np.ndarray, config: MeasureConfig,
                 weights: np.ndarray | None = None, psf: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Measure a task's stamps; one row per stamp, with its segmentation.

    Parameters
    ----------
    task : MeasureTask
        The chunk: its ids, noise, background and labels.
    stamps : ndarray
        The chunk's stamps (``task.stop - task.start`` of them).
    config : MeasureConfig
        The settings.
    weights : ndarray, optional
        The chunk's per-pixel errors (from ``task.weights``).
    psf : ndarray, optional
        One PSF for every stamp (2-D) or one per stamp (3-D).

    Returns
    -------
    list of dict
        The rows of :func:`~skymorph.core.stampmeasure.measure_block` with ``segmap``,
        plus ``id``, ``index`` (the stamp's row in the run), ``measure_psf`` and
        ``measure_weights``: what the stamp was measured with.
    """
    rows = measure_block(stamps, np.asarray(task.noise), np.asarray(task.background), config, weights, psf,
                         return_segmap=True)
    fallback = "gain" if config.gain is not None else "noise_sigma"
    for i, (gid, row) in enumerate(zip(task.ids, rows, strict=True)):
        row["id"] = gid
        row["index"] = task.start + i
        p = None if psf is None else (psf if np.ndim(psf) == 2 else psf[i])
        row["measure_psf"] = task.psf_label if _usable_psf(p) else "none"
        row["measure_weights"] = (task.weights_label if weights is not None and _usable_weights(weights[i])
                                  else fallback if task.weights else task.weights_label)
    return rows


EXTRA_COLUMNS: dict[str, Any] = {
    **dict.fromkeys(SERSIC_ERROR_COLUMNS, float("nan")),
    **dict.fromkeys([f"{q}_err" for q in RESAMPLED_QUANTITIES], float("nan")),
    "zeropoint": float("nan"), "mag_petro": float("nan"), "mag_sersic": float("nan"),
    "nonparam_ok": False, "sersic_ok": False, "g2_reliable": False, "measure_linear": True, "measure_psf": "",
    "measure_weights": "",
    "stamp_pixel_scale": float("nan"), "sersic_rhalf_arcsec": float("nan"),
    "rhalf_circ_arcsec": float("nan"),
}
"""Columns the stage adds to each statmorph row (with their types by example)."""


def row_schema(include_doublesersic: bool):
    """The arrow schema of the measurements table: ``id``, ``index``, every statmorph
    column and :data:`EXTRA_COLUMNS`, each typed by its empty value."""
    import pyarrow as pa

    from . import morphometry as mm

    fields = [pa.field("id", pa.string()), pa.field("index", pa.int64())]
    for name, value in {**mm.empty_result(include_doublesersic), **EXTRA_COLUMNS}.items():
        if isinstance(value, bool):
            kind = pa.bool_()
        elif isinstance(value, int):
            kind = pa.int64()
        elif isinstance(value, str):
            kind = pa.string()
        else:
            kind = pa.float64()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def pixel_scales(sources: pd.DataFrame, cfg: MeasureConfig, stamp_size: int) -> np.ndarray:
    """Arcsec per stamp pixel: the input scale (setting, else ``PIXEL_SCALE``) times
    the frame / stamp ratio of resampled stamps; NaN where unknown."""
    n = len(sources)
    if cfg.pixel_scale is not None:
        scale = np.full(n, float(cfg.pixel_scale))
    elif "PIXEL_SCALE" in sources:
        scale = pd.to_numeric(sources["PIXEL_SCALE"], errors="coerce").to_numpy(float)
    else:
        return np.full(n, np.nan)
    if "framing" in sources and "frame_side" in sources:
        resampled = sources["framing"].astype(str).eq("resample").to_numpy()
        frame = pd.to_numeric(sources["frame_side"], errors="coerce").to_numpy(float)
        scale = np.where(resampled, scale * frame / stamp_size, scale)
    return scale


def zeropoints(sources: pd.DataFrame, cfg: MeasureConfig) -> np.ndarray:
    """Photometric zero point of each stamp: the setting, else ingest's ``zeropoint`` column
    (MAGZERO / PHOTZP of the input header); NaN where unknown (no magnitudes)."""
    if cfg.zeropoint is not None:
        return np.full(len(sources), float(cfg.zeropoint))
    if "zeropoint" in sources:
        return pd.to_numeric(sources["zeropoint"], errors="coerce").to_numpy(float)
    return np.full(len(sources), np.nan)


def pop_segmaps(rows: list[dict[str, Any]], shape: tuple[int, ...]) -> np.ndarray:
    """Take the ``segmap`` out of every row of :func:`measure_task`, stacked in row order
    (all zero, of ``shape``, where a row has none)."""
    blank = np.zeros(shape, np.uint8)
    return np.stack([seg if (seg := r.pop("segmap", None)) is not None else blank for r in rows])


def finish_rows(rows: list[dict[str, Any]], *, linear: np.ndarray, scale: np.ndarray,
                zeropoint: np.ndarray, g2_min_sn: float) -> None:
    """Add the stage's columns to measured rows, in place.

    Parameters
    ----------
    rows : list of dict
        Rows of :func:`measure_task` without their ``segmap`` (:func:`pop_segmaps`).
    linear, scale, zeropoint : ndarray
        Per stamp of the run (indexed by each row's ``index``): :func:`linear_flags`,
        :func:`pixel_scales` and :func:`zeropoints`.
    g2_min_sn : float
        S/N per pixel below which G2 is not reliable.

    Notes
    -----
    Adds ``measure_linear``, the validity flags of :func:`skymorph.core.quality.validity`,
    ``stamp_pixel_scale``, ``sersic_rhalf_arcsec``, ``rhalf_circ_arcsec``, ``zeropoint``,
    ``mag_petro`` and ``mag_sersic``.
    """
    from .photometry import magnitude, sersic_total_flux
    from .quality import validity

    flags = validity(pd.DataFrame(rows), g2_min_sn=g2_min_sn)
    for row, ok in zip(rows, flags.to_dict(orient="records"), strict=True):
        i = row["index"]
        row["measure_linear"] = bool(linear[i])
        row.update({k: bool(v) for k, v in ok.items()})
        row["stamp_pixel_scale"] = float(scale[i])
        row["sersic_rhalf_arcsec"] = float(row["sersic_rhalf"] * scale[i])
        row["rhalf_circ_arcsec"] = float(row["rhalf_circ"] * scale[i])
        row["zeropoint"] = float(zeropoint[i])
        row["mag_petro"] = float(magnitude(row["flux_circ"], zeropoint[i]))
        row["mag_sersic"] = float(magnitude(sersic_total_flux(
            row["sersic_amplitude"], row["sersic_rhalf"], row["sersic_n"], row["sersic_ellip"]),
            zeropoint[i]))


def psf_digest(psf: np.ndarray) -> str:
    """A short hash of a PSF image's values and shape: what the stage's fingerprint records of
    ``psf_file``, so that a changed file (not only a renamed one) recomputes.

    Examples
    --------
    >>> import numpy as np
    >>> len(psf_digest(np.ones((3, 3))))
    16
    >>> psf_digest(np.ones((3, 3))) == psf_digest(np.ones((9,)))
    False
    """
    return hashlib.sha256(psf.tobytes() + str(psf.shape).encode()).hexdigest()[:16]


def check_inputs(stamps: tuple[int, ...], *, weights: tuple[str, tuple[int, ...]] | None = None,
                 psfs: tuple[int, ...] | None = None) -> None:
    """Refuse error maps and PSFs that do not fit the stamps, before anything is measured.

    Parameters
    ----------
    stamps : tuple of int
        Shape of the stamps, (N, S, S).
    weights : (str, tuple of int), optional
        Name and shape of the per-pixel error array, which must be the stamps'.
    psfs : tuple of int, optional
        Shape of the run's PSF array: one PSF per stamp, (N, P, P).

    Raises
    ------
    MeasureError
        A shape that does not fit (the message gives both).

    Examples
    --------
    >>> check_inputs((10, 64, 64), weights=("rms", (10, 64, 64)), psfs=(10, 25, 25))
    >>> check_inputs((10, 64, 64), psfs=(1, 25, 25))
    Traceback (most recent call last):
    ...
    skymorph.core.stampmeasure.MeasureError: the run's psf array has shape (1, 25, 25); ...
    """
    if weights is not None and tuple(weights[1]) != tuple(stamps):
        raise MeasureError(f"weight array '{weights[0]}' has shape {weights[1]}; "
                           f"it must match the stamps {stamps}")
    if psfs is not None and (len(psfs) != 3 or psfs[0] != stamps[0]):
        raise MeasureError(f"the run's psf array has shape {psfs}; it must be N x P x P "
                           f"with N = {stamps[0]} (one PSF per stamp)")


def resampled_psf_note(sources: pd.DataFrame, psf_label: str) -> str | None:
    """A warning when a PSF is used on stamps that ingest resampled: the PSF is taken to be
    at the stamps' pixel scale, which a resampled stamp no longer has.  ``None`` otherwise.

    Examples
    --------
    >>> import pandas as pd
    >>> resampled_psf_note(pd.DataFrame({"framing": ["pad", "resample"]}), "file")
    "some stamps were resampled at ingest; the PSF (file) is taken to be at the stamps' pixel scale"
    >>> resampled_psf_note(pd.DataFrame({"framing": ["resample"]}), "none") is None
    True
    """
    if psf_label != "none" and "framing" in sources and sources["framing"].astype(str).eq("resample").any():
        return (f"some stamps were resampled at ingest; the PSF ({psf_label}) is taken to be at the "
                "stamps' pixel scale")
    return None


@dataclass
class MeasureCounts:
    """Running counts of finished rows (:func:`finish_rows`) for the stage's summary.

    Examples
    --------
    >>> counts = MeasureCounts(weights_label="gain")
    >>> counts.add([{"measure_ok": True, "measure_psf": "none", "measure_weights": "gain", "flag": 0,
    ...              "flag_sersic": 2, "sersic_ok": False, "g2_reliable": True}])
    >>> counts.n_measured, counts.n_sersic_bad, counts.n_weights
    (1, 1, 1)
    """

    weights_label: str
    """``measure_weights`` of the rows measured with the chosen errors."""
    n_measured: int = 0
    n_psf: int = 0
    n_weights: int = 0
    n_flag_bad: int = 0
    n_sersic_bad: int = 0
    n_sersic_ok: int = 0
    n_g2_reliable: int = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Count a block of finished rows."""
        self.n_measured += sum(r["measure_ok"] for r in rows)
        self.n_psf += sum(r["measure_psf"] != "none" for r in rows)
        self.n_weights += sum(r["measure_weights"] == self.weights_label for r in rows)
        self.n_flag_bad += sum(r["flag"] >= 2 for r in rows)
        self.n_sersic_bad += sum(r["flag_sersic"] >= 2 for r in rows)
        self.n_sersic_ok += sum(r["sersic_ok"] for r in rows)
        self.n_g2_reliable += sum(r["g2_reliable"] for r in rows)

    def summary(self, *, n: int, workers: int, n_nonlinear: int, psf: str) -> dict[str, Any]:
        """The stage summary of ``n`` galaxies (the keys of ``summaries.MeasureSummary``)."""
        return dict(n_galaxies=n, n_measured=self.n_measured, n_failed=n - self.n_measured,
                    n_flag_bad=self.n_flag_bad, n_sersic_bad=self.n_sersic_bad, n_sersic_ok=self.n_sersic_ok,
                    n_g2_reliable=self.n_g2_reliable, workers=workers, n_nonlinear=n_nonlinear, psf=psf,
                    n_psf=self.n_psf, weights=self.weights_label, n_weights=self.n_weights)
