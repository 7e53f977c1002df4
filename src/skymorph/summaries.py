"""Typed stage summaries: what ``stages/NAME.json`` holds for the stages the reports read.

A stage's ``compute`` returns a plain dictionary that the executor records in
``RUN_DIR/stages/NAME.json``.  For the stages whose numbers the reports print (the
validation report's settings table and the command line's one-line reports), the keys
are declared here as frozen dataclasses:

- at write, :func:`check_written` refuses a summary that lacks a declared key (a bug in
  skymorph, shown with its traceback), and the record gets ``summary_schema``;
- at read, :func:`read_summary` gives the dataclass.  A record that carries
  ``summary_schema`` but lacks a key was damaged or edited: :class:`SummaryError` says
  which stage to run again.  A record written before typed summaries (no
  ``summary_schema``) gives ``None`` for a value it lacks, which the reports print as
  ``?``: never a silent 0.

Like :mod:`skymorph.config`, this module imports nothing of skymorph but its errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SkymorphError

__all__ = [
    "SUMMARY_SCHEMA",
    "SummaryError",
    "IngestSummary",
    "EncodeSummary",
    "ReduceSummary",
    "ClusterSummary",
    "MergeSummary",
    "MeasureSummary",
    "TYPED_SUMMARIES",
    "check_written",
    "read_summary",
    "shown",
]

SUMMARY_SCHEMA = 1
"""Written as ``summary_schema`` into the record of a stage with a typed summary."""


class SummaryError(SkymorphError, RuntimeError):
    """A stage record of this skymorph lacks a value it always writes (damaged or edited)."""


@dataclass(frozen=True)
class IngestSummary:
    """``stages/ingest.json``: ``None`` only in run directories from before typed summaries."""

    n_stamps: int | None
    n_rejected: int | None
    n_nonlinear: int | None
    n_rms: int | None
    n_psf: int | None


@dataclass(frozen=True)
class EncodeSummary:
    """``stages/encode.json``."""

    n_images: int | None
    dim: int | None
    encoder: str | None
    weights: str | None
    input: str | None
    device: str | None
    n_rejected: int | None


@dataclass(frozen=True)
class ReduceSummary:
    """``stages/reduce.json``: the dimension the reduction used (the scan's choice for ``auto``)."""

    dims: int | None


@dataclass(frozen=True)
class ClusterSummary:
    """``stages/cluster.json``."""

    n_galaxies: int | None
    n_kept: int | None
    kept_fraction: float | None


@dataclass(frozen=True)
class MergeSummary:
    """``stages/merge.json``."""

    n_clusters: int | None
    n_votes: int | None


@dataclass(frozen=True)
class MeasureSummary:
    """``stages/measure.json``."""

    n_galaxies: int | None
    n_measured: int | None
    n_failed: int | None
    n_sersic_ok: int | None
    n_sersic_bad: int | None
    n_g2_reliable: int | None
    psf: str | None
    n_psf: int | None
    weights: str | None
    n_weights: int | None


TYPED_SUMMARIES: dict[str, type] = {
    "ingest": IngestSummary,
    "encode": EncodeSummary,
    "reduce": ReduceSummary,
    "cluster": ClusterSummary,
    "merge": MergeSummary,
    "measure": MeasureSummary,
}
"""Stage name -> its summary's dataclass (the stages the reports read)."""


def _keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def check_written(stage: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary a stage is about to record, with ``summary_schema`` added when it is typed.

    Raises
    ------
    RuntimeError
        The stage's ``compute`` did not return a declared key (a bug in skymorph).
    """
    cls = TYPED_SUMMARIES.get(stage)
    if cls is None:
        return dict(summary)
    missing = [key for key in _keys(cls) if summary.get(key) is None]
    if missing:
        raise RuntimeError(f"stage {stage} returned a summary without {', '.join(missing)}, which "
                           f"skymorph.summaries.{cls.__name__} declares")
    return {**summary, "summary_schema": SUMMARY_SCHEMA}


def read_summary(stage: str, info: Mapping[str, Any]) -> Any:
    """The typed summary of ``stage`` from its record (``RunDir.stage_info``).

    Parameters
    ----------
    stage : str
        A stage of :data:`TYPED_SUMMARIES`.
    info : mapping
        The record of ``stages/STAGE.json``.

    Returns
    -------
    dataclass
        Values a record from before typed summaries lacks are ``None``.

    Raises
    ------
    SummaryError
        The record carries ``summary_schema`` but lacks a declared value.

    Examples
    --------
    >>> from skymorph.summaries import read_summary
    >>> read_summary("cluster", {"n_galaxies": 100, "n_kept": 60, "kept_fraction": 0.6,
    ...                          "summary_schema": 1}).n_kept
    60
    >>> read_summary("cluster", {"n_galaxies": 100}).n_kept is None  # an older run directory
    True
    """
    cls = TYPED_SUMMARIES[stage]
    keys = _keys(cls)
    if info.get("summary_schema") is not None:
        missing = [key for key in keys if info.get(key) is None]
        if missing:
            raise SummaryError(f"stages/{stage}.json lacks {', '.join(missing)}, which this skymorph "
                               f"always records: the record was damaged or edited; run `skymorph {stage}"
                               f" RUN_DIR --force` again")
    return cls(**{key: info.get(key) for key in keys})


def shown(value: Any, fmt: str = "") -> str:
    """``value`` for a report: ``?`` where an older run directory did not record it."""
    return "?" if value is None else format(value, fmt)
