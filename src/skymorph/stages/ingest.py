"""Ingest: turn survey cutouts into a run directory of equal-sized stamps.

Inputs (files, directories or glob patterns):

* per-galaxy images: FITS (first image HDU, or ``hdu``), PNG/JPEG (colour is
  reduced to one band by luminance, 0.299 R + 0.587 G + 0.114 B), NPY;
* stamp collections in the GalSim / COSMOS ``RealGalaxyCatalog`` layout: a FITS
  table whose name contains ``catalog`` with ``IDENT``, ``GAL_FILENAME`` and
  ``GAL_HDU`` columns (a directory holding one is read as that collection; a
  companion ``<catalog>_fits.fits`` table is joined on row order);
* large images (``field=True``): stamps are cut with :class:`astropy.nddata.Cutout2D`
  at the catalog's RA/Dec (through the image WCS) or x/y, or, without a catalog,
  around sources detected with photutils.

Each stamp is centred on its galaxy and cropped or padded to ``stamp_size``.
Padding is Gaussian noise with the stamp's own background level and sigma
(sigma-clipped median and MAD of the stamp's border), never zeros, and is
flagged in the ``sources`` table; NaN pixels inside a usable stamp are filled
the same way and counted.  Unusable inputs are listed in ``rejects.csv`` and
never stop the run: every path given or found in a directory is either a stamp
or a row there (dangling links, link loops, FIFOs, directories that cannot be
listed, images larger than ``max_pixels``, complex or boolean arrays, stamps
mostly NaN/inf).

Besides ``stamps`` the run gets, in the same order:

* ``sources.parquet`` column ``linear``: ``True`` where pixels are proportional to
  flux (FITS, NPY, collections), ``False`` for PNG/JPEG (display-scaled, clipped);
* array ``rms`` (N x S x S float32): the 1-sigma error of every stamp pixel, cut
  and padded exactly like the stamp, from an error-map HDU of the same FITS file
  (EXTNAME WHT/WEIGHT/IVAR as inverse variance, RMS/ERR/SIGMA/NOISE, VAR/VARIANCE),
  from companion files (``error_maps``), or, for collections, the catalog's
  ``NOISE_VARIANCE``.  A stamp without any error map is NaN throughout; inside a
  map, pixels that carry no measurement (padding, NaN-filled pixels, zero weight)
  are ``inf``;
* array ``psf`` (N x P x P float32, P = ``psf_size``, odd): each stamp's PSF with
  its peak on the central pixel, cropped or zero-padded and normalised to sum 1,
  from a collection's ``PSF_FILENAME`` / ``PSF_HDU`` columns or a ``PSF`` HDU of
  the galaxy's own FITS file; NaN for stamps without one.

``rms`` and ``psf`` are written only when at least one stamp has one; the
``sources`` columns ``has_rms``, ``rms_source``, ``has_psf``, ``psf_source`` and
``psf_flux_fraction`` say which stamps have them and where they came from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import Config, IngestConfig
from ..core.parallel import map_ordered, start_pool
from ..core.stamps import make_stamp, prepare_psf
from ..io.ingest_plan import IngestError, batches, plan, read_table, select_rows
from ..io.ingest_tasks import run_batch, source_kinds
from ..io.inputs import InputError, InputFiles, Task, companion_files, expand_inputs
from ..io.readers import Reject, read_image
from ..io.rundir import OptionalArrayWriter, RunDir
from ..io.selection import SelectionError, parse_selection
from ..summaries import read_summary, shown
from . import Argument, Stage, StageContext, execute, stamp_options

__all__ = ["ingest", "IngestError", "Reject", "read_image", "make_stamp", "prepare_psf", "select_rows",
           "read_table"]

log = logging.getLogger(__name__)


def _run_batch(batch: list[Task], config: IngestConfig) -> list[tuple]:
    # here, not in io: the settings reach make_stamp through stamp_options, shared with
    # similar --image, and io does not import the stages
    return run_batch(batch, config, options=stamp_options(config))


def _extra(ctx: StageContext) -> str:
    inputs = ctx.options.get("inputs")
    if not inputs:
        raise IngestError("no inputs given; name image files, directories or glob patterns")
    cfg = ctx.config.ingest
    try:
        found = expand_inputs(inputs)
        found.companions = companion_files(found.files + (found.beside if cfg.field else []), cfg.error_maps)
    except InputError as exc:
        raise IngestError(str(exc)) from None
    ctx.state["found"] = found
    return found.fingerprint(cfg.catalog)


def _compute(ctx: StageContext) -> dict[str, Any]:
    run, cfg, progress = ctx.run, ctx.config.ingest, ctx.progress
    found: InputFiles = ctx.state["found"]
    tasks, meta, early_rejects, summary = plan(found, cfg)
    run.clear_rejects("ingest")
    run.add_rejects(early_rejects)
    n_items = sum(len(t.items) for t in tasks) + sum(t.kind == "detect" for t in tasks)
    workers = cfg.workers or os.cpu_count() or 1
    size = cfg.stamp_size
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    n_rejected = len(early_rejects)
    pool = start_pool(workers, [__name__]) if workers > 1 and n_items > 200 else None
    writer = run.writer("stamps", (size, size), cfg.chunk_size)
    rms = OptionalArrayWriter(run, "rms", (size, size), cfg.chunk_size)
    psf = OptionalArrayWriter(run, "psf", (cfg.psf_size, cfg.psf_size), cfg.chunk_size)
    batched = batches(tasks, 64)
    with pool or nullcontext(), tqdm(total=n_items, desc="ingest", unit="stamp",
                                     disable=not progress) as bar:
        for batch_results in map_ordered(_run_batch, batched, cfg, pool=pool, workers=workers):
            rejects = []
            for result in batch_results:
                if result[0] == "reject":
                    _, gid, origin, reason = result
                    rejects.append({"id": gid, "origin": origin, "stage": "ingest", "reason": reason})
                    continue
                _, gid, stamp, row, rms_stamp, kernel = result
                if gid in seen:
                    rejects.append({"id": gid, "origin": row["origin"], "stage": "ingest",
                                    "reason": "duplicate id (an earlier input has the same id)"})
                    continue
                seen.add(gid)
                writer.append(stamp)
                rms.append(rms_stamp)
                psf.append(kernel)
                rows.append(row)
            n_rejected += run.add_rejects(rejects)
            bar.update(len(batch_results))
    writer.close()
    rms.close()
    psf.close()
    if not rows and summary.get("not_selected") and n_rejected == 0:
        raise IngestError(f"the selection {' and '.join(map(repr, cfg.select))} keeps none of the "
                          f"{summary['not_selected']} galaxies; loosen --select")
    if not rows:
        raise IngestError(
            f"none of the inputs gave a usable stamp ({n_rejected} rejected); "
            f"see {run.rejects_path} for the reason of each"
        )
    sources = pd.DataFrame(rows)
    if meta is not None:
        meta = meta.rename(columns={c: f"cat_{c}" for c in meta.columns
                                    if c != "id" and c in sources.columns})
        sources = sources.merge(meta, on="id", how="left")
    sources.insert(1, "index", np.arange(len(sources)))
    sources.to_parquet(run.path / "sources.parquet", index=False)
    n_linear = int(sources["linear"].sum())
    summary.update(
        n_stamps=len(rows), n_rejected=n_rejected, stamp_size=size,
        n_linear=n_linear, n_nonlinear=len(rows) - n_linear,
        n_rms=rms.count, rms_sources=source_kinds(sources.loc[sources["has_rms"], "rms_source"]),
        n_psf=psf.count, psf_size=cfg.psf_size,
        psf_sources=source_kinds(sources.loc[sources["has_psf"], "psf_source"]),
        n_notes=int((sources["note"] != "").sum()),
    )
    if found.skipped:
        summary["skipped"] = dict(sorted(found.skipped.items()))
    log.info("ingest: %d stamps (%d linear, %d display-scaled PNG/JPEG; %d with an error map, %d "
             "with a PSF), %d rejected%s", len(rows), n_linear, len(rows) - n_linear, rms.count,
             psf.count, n_rejected,
             f", {summary['not_selected']} not selected" if summary.get("not_selected") else "")
    return summary


def _check(config: Config) -> None:
    for expression in config.ingest.select or ():
        try:
            parse_selection(expression)  # before config.toml records it
        except SelectionError as exc:
            raise IngestError(str(exc)) from None


def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    s = read_summary("ingest", info)
    text = (f"{shown(s.n_stamps)} stamps written to {run.path / 'stamps.zarr'}; "
            f"{shown(s.n_rejected)} inputs rejected (see {run.rejects_path})")
    if s.n_nonlinear:
        text += (f"; {s.n_nonlinear} from PNG/JPEG (display-scaled, linear=False in "
                 "sources.parquet: not for photometry)")
    if s.n_rms or s.n_psf:
        text += f"; {shown(s.n_rms)} with an error map (rms), {shown(s.n_psf)} with a PSF (psf)"
    return text


STAGE = Stage(
    name="ingest",
    summary="read cutouts (FITS, PNG/JPEG, NPY, collections, fields) into stamps",
    description=__doc__.split("\n\n")[0],
    compute=_compute,
    sections=("ingest",),
    outputs=("stamps.zarr", "sources.parquet"),
    extra=_extra,
    check=_check,
    creates_run=True,
    arguments=(Argument("inputs", "image files, directories (searched recursively) or glob patterns; "
                        "a GalSim RealGalaxyCatalog FITS table reads its whole collection",
                        nargs="+", metavar="INPUT"),),
    report=_report,
    chunked=True,
)


def ingest(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, config: Config | None = None, *,
           force: bool = False, progress: bool = True, **settings: Any) -> RunDir:
    """Read cutouts into the run directory ``out``.

    Parameters
    ----------
    inputs : sequence of str or Path
        Files, directories or glob patterns (see the module docstring).
    out : str or Path
        Run directory; created when it does not exist.
    config : Config, optional
        All settings; by default the run's own ``config.toml`` (the defaults for a new run).
    force : bool
        Re-read the inputs even when they and the settings are unchanged.
    progress : bool
        Show a progress bar.
    **settings
        Overrides of the ``[ingest]`` settings, e.g. ``stamp_size=64``.

    Returns
    -------
    RunDir
        The run directory, with ``stamps``, ``sources.parquet`` and ``rejects.csv``,
        and ``rms`` / ``psf`` when any stamp has an error map / a PSF.

    Raises
    ------
    IngestError
        If an input path does not exist, a directory holds no images, a catalog
        column is missing, or no input at all yields a usable stamp.
    """
    return execute("ingest", out, config, force=force, progress=progress,
                   options={"inputs": list(inputs)}, **settings)
