"""The validation report's sections and page from plain tables and results.

The validate stage reads the run (:mod:`skymorph.io.validation_files`) and hands the
assembled table (:class:`~skymorph.core.validation_table.PartTable`), its settings and,
for the parts that show pixels, a function that reads array rows to these functions.
Each part's numbers and notes come from :mod:`skymorph.core.validation_parts`, its
figures from :mod:`skymorph.report.figures`; the page is :func:`skymorph.report.render`'s.
No run directory here: the stage writes what this returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..core import validation_parts as P
from ..core.validation import NO_CONSENSUS, nonlinear_mask, type_counts
from ..core.validation_table import PartTable, ValidateError
from . import Section
from .figures import (
    completeness_figure,
    gini_m20_figure,
    kept_rejected_figure,
    maps_figure,
    raincloud_figure,
    reliability_figure,
    stamps_figure,
    type_colours,
)

if TYPE_CHECKING:
    from ..config import InspectConfig

__all__ = ["build_sections", "types_section", "extended_section", "stamps_section", "per_type_section",
           "etg_ltg_section", "completeness_section", "kept_rejected_section", "maps_section",
           "sections_record", "page"]

Data = TypeVar("Data", bound=PartTable)


def build_sections(parts: Sequence[tuple[str, str, Callable[[Data, Section], None]]], data: Data, *,
                   progress: bool, log: logging.Logger) -> list[Section]:
    """Every part's section, in the order of ``parts`` (key, title, function filling the section).

    A part that fails becomes a section with one note saying why, so that it loses none of
    the others; a :class:`ValidateError` (the user's input is wrong) stops the report.
    ``log`` is the caller's, so that the messages name the stage.
    """
    sections = []
    for key, title, func in parts:
        if progress:
            log.info("validate: %s", title)
        section = Section(key=key, title=title)
        try:
            func(data, section)
        except ValidateError:
            raise
        except Exception as exc:  # noqa: BLE001 - one failing part must not lose the others
            log.warning("validate: part %s failed: %s", key, exc)
            section = Section(key=key, title=title, notes=[f"failed: {type(exc).__name__}: {exc}"])
        sections.append(section)
    return sections


def types_section(section: Section, data: PartTable) -> None:
    """The sample: galaxies per type, kept, without consensus; the unclassified type named."""
    section.result = {**type_counts(data.table, data.types), "unclassified": data.types[-1]}


def extended_section(section: Section, report: dict[str, Any] | None, *,
                     evaluation: Callable[[], tuple[dict[str, Any] | None, str]], run_path: str) -> None:
    """The extension beyond the consensus: counts, its cross-validation and reliability diagram.

    ``report`` is extend's report (None: extend has not run); ``evaluation`` gives the
    evaluation's record and extend's current fingerprint (see
    :func:`~skymorph.core.validation_parts.evaluation_part`).
    """
    if report is None:
        section.notes.append(f"skipped: `skymorph extend {run_path}` has not run (only the consensus "
                             "galaxies have a type)")
        return
    section.result = P.extended_part(report)
    found, current = evaluation()
    section.result["evaluation"], notes = P.evaluation_part(found, extend_fingerprint=current,
                                                            run_path=run_path)
    section.notes.extend(notes)
    section.figures.append(reliability_figure(report["cv"]))


def stamps_section(section: Section, data: PartTable, *, read: Callable[[np.ndarray], np.ndarray],
                   per_type: int, rng: np.random.Generator, inspect: InspectConfig) -> None:
    """Example stamps of each type, drawn with ``rng``, as the experts saw them in the montages.

    ``read`` gives the stamps (float32) at array rows; ``inspect`` holds the display stretch.
    """
    from ..inspection import display

    rows = data.rows()
    nonlinear, _, _ = nonlinear_mask(data.table)
    picks = P.stamp_picks(data.table["morph_type"].to_numpy(), rows, types=[*data.types, NO_CONSENSUS],
                          per_type=per_type, rng=rng)
    images: dict[str, list[tuple[str, np.ndarray]]] = {}
    for t, pick in picks.items():
        # asinh for linear inputs, linear for display-scaled (JPEG/PNG) ones, by inspect.stretch
        images[t] = [(str(data.table["id"].iloc[i]), display(img, inspect, display_scaled=bool(nonlinear[i])))
                     for i, img in zip(pick, read(rows[pick]), strict=True)]
    shown = {t: len(v) for t, v in images.items()}
    section.result = {"per_type": per_type, "array": "stamps", "types": shown}
    section.figures.append(stamps_figure(images, P.type_labels(data.types), per_type))


def per_type_section(section: Section, data: PartTable, *, exclude_unc: bool, min_mass: float | None,
                     g2_min_sn: float, g2_noise_tolerance: float | None, rng: np.random.Generator) -> None:
    """Per-type medians and the raincloud plots (Figs. 8-11); ``rng`` jitters the points."""
    if "gini" not in data.table.columns:
        section.notes.append("skipped: no measurements")
        return
    sample = data.sample(section.notes, exclude_unc=exclude_unc, min_mass=min_mass)
    result, notes, figures = P.per_type_part(sample, data.raw_rows(sample), types=data.types,
                                             r_e_unit=data.cols["r_e_unit"], g2_min_sn=g2_min_sn,
                                             g2_noise_tolerance=g2_noise_tolerance)
    section.notes.extend(notes)
    section.result = result
    for key, title, columns, note in figures:  # in this order: each figure draws its jitter from rng
        section.figures.append(raincloud_figure(key, title, sample, list(result["n"]), columns,
                                                type_colours(data.types), rng, note))


def etg_ltg_section(section: Section, data: PartTable, *, exclude_unc: bool, min_mass: float | None,
                    etg_types: Sequence[str], sersic_split: float, line: tuple[float, float],
                    merger: tuple[float, float], confidence: float) -> None:
    """ETG/LTG tests on Sersic n and the Gini-M20 plane (Fig. 12); the LTGs are the other expert types."""
    if "gini" not in data.table.columns:
        section.notes.append("skipped: no measurements")
        return
    ltg_types = [t for t in data.types[:-1] if t not in etg_types]  # the last type is the unclassified one
    sample = data.sample(section.notes, exclude_unc=exclude_unc, min_mass=min_mass)
    section.result, notes = P.etg_ltg_part(sample, data.raw_rows(sample), etg_types=etg_types,
                                           ltg_types=ltg_types, sersic_split=sersic_split, line=line,
                                           merger=merger, confidence=confidence)
    section.notes.extend(notes)
    etg = sample[sample["morph_type"].isin(etg_types)]
    ltg = sample[sample["morph_type"].isin(ltg_types)]
    names = f"ETG ({'+'.join(etg_types)})", f"LTG ({'+'.join(ltg_types)})"
    section.figures.append(gini_m20_figure(etg, ltg, *names, line, merger, sersic_split))


def completeness_section(section: Section, data: PartTable, *, n_bins: int, confidence: float) -> None:
    """Completeness of the kept (consensus) sample along each parameter (Fig. 13)."""
    kept = data.kept()
    if kept is None:
        section.notes.append("skipped: the catalog has no consensus column")
        return
    result, notes = P.completeness_part(data.table, data.raw_rows(data.table), kept, data.cols,
                                        n_bins=n_bins, confidence=confidence)
    section.notes.extend(notes)
    if result is not None:
        section.result = result
        section.figures.append(completeness_figure(result["curves"], result["labels"], confidence))


def kept_rejected_section(section: Section, data: PartTable) -> None:
    """Kept versus rejected galaxies, parameter by parameter (Fig. 14)."""
    kept = data.kept()
    if kept is None:
        section.notes.append("skipped: the catalog has no consensus column")
        return
    if kept.all() or not kept.any():
        section.notes.append("skipped: every galaxy is kept (or none is): nothing to compare")
        return
    raw = data.raw_rows(data.table)
    section.result, notes, columns = P.kept_rejected_part(data.table, raw, kept, data.cols)
    section.notes.extend(notes)
    section.figures.append(kept_rejected_figure(data.table, kept, columns, section.result["tests"]))


def maps_section(section: Section, data: PartTable, *,
                 read: Callable[[np.ndarray], tuple[np.ndarray | None, np.ndarray | None]],
                 source: str | None, max_points: int, seed: int, rng: np.random.Generator) -> None:
    """UMAP and t-SNE maps of the galaxies coloured by type (Figs. 5f, 7).

    ``read`` gives ``embedding_2d`` and the ``source`` array (either may be None) at array
    rows; at most ``max_points`` galaxies, drawn with ``rng``, are mapped.
    """
    rows = data.rows()
    order, more = P.map_order(rows, max_points=max_points, rng=rng)
    section.notes.extend(more)
    umap, features = read(rows[order])
    maps, more = P.two_d_maps(features, source=source, seed=seed, umap=umap)
    section.notes.extend(more)
    types = data.table["morph_type"].to_numpy()[order]
    section.result = {"n_points": int(len(types)), "maps": list(maps)}
    section.figures.append(maps_figure(maps, types, [*data.types, NO_CONSENSUS], type_colours(data.types),
                                       P.type_labels(data.types)))


def sections_record(sections: Sequence[Section]) -> dict[str, dict[str, Any]]:
    """Each section's result, notes and figure titles, by key (the ``parts`` of ``validation.json``)."""
    return {s.key: {"result": s.result, "notes": s.notes, "figures": [f.title for f in s.figures]}
            for s in sections}


def page(*, run_path: str, settings: list[dict[str, str]], config_toml: str,
         stages: dict[str, dict[str, Any]], warnings: list[str], notes: list[str], sections: list[Section],
         labels: dict[str, str], confidence: float) -> str:
    """The report page (:func:`~skymorph.report.render`), stamped with skymorph's version and the time."""
    from .._version import __version__
    from . import render

    return render({
        "run_path": run_path, "version": __version__,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": settings, "config_toml": config_toml, "stages": stages, "warnings": warnings,
        "notes": notes, "sections": sections, "labels": labels, "confidence": confidence,
    })
