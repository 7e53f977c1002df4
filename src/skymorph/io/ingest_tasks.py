"""Reading the tasks of ``skymorph ingest`` into stamps, one batch per worker process.

:func:`run_batch` reads the images of each :class:`~skymorph.io.inputs.Task` (with their error
maps and PSFs, :class:`~skymorph.io.inputs.TaskReader`), finds the sources of a field without a
catalog (:func:`skymorph.core.detect.detect_sources_in`) and cuts each galaxy's stamp with
:mod:`skymorph.core.stamps`; an unusable galaxy or field becomes a reject, never an exception.
:func:`source_kinds` counts where the error maps and PSFs came from.  :func:`cutout_stamp` cuts
the stamp of one more image the way ingest cut the run's (``skymorph similar --image``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import IngestConfig
from ..core.detect import detect_sources_in
from ..core.stamps import field_window, make_stamp, prepare_psf, resolve_framing, stamp_rng
from .inputs import Item, Task, TaskReader, celestial_wcs
from .readers import RASTER_SUFFIXES, Reject, read_image
from .readers import stem_of as _stem
from .readers import suffix_of as _suffix
from .runfiles import printable

__all__ = ["run_batch", "source_kinds", "cutout_stamp"]


def run_batch(batch: list[Task], config: IngestConfig, *, options: dict[str, Any]) -> list[tuple]:
    """Read and stamp every galaxy of a batch of tasks (run in a worker process).

    Parameters
    ----------
    batch : list of Task
        Tasks from :func:`skymorph.io.ingest_plan.batches`.
    config : IngestConfig
        The ``[ingest]`` settings.
    options : dict
        The keyword arguments of :func:`skymorph.core.stamps.make_stamp` that the settings give
        (:func:`skymorph.stages.stamp_options`).

    Returns
    -------
    list of tuple
        One per galaxy, in order: ``("ok", id, stamp, row, rms, psf)`` (``row``: its
        ``sources.parquet`` fields; ``rms`` and ``psf`` ``None`` when it has none) or
        ``("reject", id, origin, reason)``.
    """
    return [result for task in batch for result in _process(task, config, options)]


def _process(task: Task, config: IngestConfig, options: dict[str, Any]) -> list[tuple]:
    """Worker: returns ``("ok", id, stamp, row, rms, psf)`` or ``("reject", id, origin, reason)``."""
    if task.kind == "detect":
        try:
            task = _detect(task, config)
        except Reject as exc:
            return [("reject", _stem(Path(task.path)), task.path, str(exc))]
        except MemoryError:
            return [("reject", _stem(Path(task.path)), task.path,
                     "ran out of memory detecting sources; lower ingest.max_pixels or --workers")]
        except Exception as exc:  # one bad field never stops the run
            return [("reject", _stem(Path(task.path)), task.path, f"unreadable field: {exc}")]
    results: list[tuple] = []
    reader = TaskReader(task, hdu=config.hdu, max_pixels=config.max_pixels,
                        error_map_kind=config.error_map_kind)
    try:
        for item in task.items:
            origin = f"{item.path}[{item.hdu}]" if item.hdu is not None else item.path
            try:
                results.append(_one(reader, item, config, options))
            except Reject as exc:
                results.append(("reject", item.id, origin, str(exc)))
            except MemoryError:
                results.append(("reject", item.id, origin, "ran out of memory reading it; lower "
                                "ingest.max_pixels or --workers"))
            except Exception as exc:  # one bad galaxy never stops the run, whatever it raises
                results.append(("reject", item.id, origin, f"unreadable: {type(exc).__name__}: {exc}"))
    finally:
        reader.close()
    return results


def _one(reader: TaskReader, item: Item, config: IngestConfig, options: dict[str, Any]) -> tuple:
    image = reader.read(item)
    data, rms, valid = image.data, image.rms, None
    centre = item.centre
    if centre is not None:
        data, rms, valid, centre = field_window(data, centre=centre, size=config.stamp_size, rms=rms)
    framing = resolve_framing(config.framing, raster=_suffix(Path(item.path)) in RASTER_SUFFIXES)
    stamp, info, rms_stamp = make_stamp(data, framing=framing, rng=stamp_rng(item.id, seed=config.seed),
                                        centre=centre, rms=rms, valid=valid, **options)
    if centre is not None:
        info["y"], info["x"] = item.centre
    psf, flux_fraction, note = None, np.nan, image.note
    if image.psf is not None:
        zoom = config.stamp_size / info["frame_side"] if framing == "resample" else 1.0
        try:
            psf, flux_fraction = prepare_psf(image.psf, size=config.psf_size, zoom=zoom)
        except Reject as exc:
            note = "; ".join(n for n in (note, f"PSF {image.psf_source} unusable: {exc}") if n)
    ra, dec = item.sky if item.sky is not None else (np.nan, np.nan)
    row = {"id": item.id, "origin": item.path, "hdu": image.hdu, "ra": ra, "dec": dec, **info,
           "linear": image.linear,
           "has_rms": rms_stamp is not None, "rms_source": image.rms_source if rms_stamp is not None else "",
           "has_psf": psf is not None, "psf_source": image.psf_source if psf is not None else "",
           "psf_flux_fraction": flux_fraction, "note": note, "zeropoint": image.zeropoint}
    row = {k: printable(v) if isinstance(v, str) else v for k, v in row.items()}
    return ("ok", row["id"], stamp, row, rms_stamp, psf)


def _detect(task: Task, config: IngestConfig) -> Task:
    """Find sources in a field with photutils and return one item per source."""
    image, hdu = read_image(task.path, config.hdu, config.max_pixels)
    labels, xs, ys = detect_sources_in(image, nsigma=config.detect_nsigma, npixels=config.detect_npixels,
                                       contrast=config.detect_contrast)
    wcs = celestial_wcs(task.path, hdu)
    items = []
    for label, x, y in zip(labels, xs, ys, strict=True):
        sky = None
        if wcs is not None:
            ra, dec = wcs.pixel_to_world_values(x, y)
            sky = (float(ra), float(dec))
        items.append(Item(f"{_stem(Path(task.path))}_{label}", task.path, hdu,
                           (float(y), float(x)), sky, error_map=task.error_map))
    return Task("field", task.path, items, task.error_map)


def source_kinds(sources: pd.Series) -> dict[str, int]:
    """Counts of where error maps / PSFs came from (``rms_source``, ``psf_source`` of
    ``sources.parquet``), by kind rather than by file."""

    def kind(source: str) -> str:
        if m := re.fullmatch(r"HDU \d+ (.*)", source):
            return f"HDU {m[1]}"
        if m := re.fullmatch(r"file .* \((\w+)\)", source):
            return f"companion file ({m[1]})"
        if m := re.fullmatch(r"(.*)\[-?\d+\]", source):
            return Path(m[1]).name
        return source

    return {str(k): int(v) for k, v in sources.map(kind).value_counts().items()}


def cutout_stamp(path: str, config: IngestConfig, options: dict[str, Any]) -> np.ndarray:
    """The stamp of the galaxy image ``path``, cut exactly as ingest cuts a run's stamps.

    ``options`` are :func:`skymorph.stages.stamp_options` of ``config``; the noise that pads
    the stamp is seeded by the file's stem, as ingest seeds it by the galaxy's id.

    Raises
    ------
    Reject, OSError, ValueError
        The file is missing, unreadable or no usable galaxy image.
    """
    image, _ = read_image(path, config.hdu, max_pixels=config.max_pixels)
    framing = resolve_framing(config.framing, raster=_suffix(Path(path)) in RASTER_SUFFIXES)
    stamp, _, _ = make_stamp(image, framing=framing, rng=stamp_rng(Path(path).stem, seed=config.seed),
                             **options)
    return stamp
