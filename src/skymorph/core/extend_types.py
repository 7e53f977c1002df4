"""From the extension classifier's answer to every galaxy's final type, and what it adds up to.

:func:`skymorph.core.extend.extend_labels` gives every galaxy a predicted type; the experts'
types come first.  The functions here work on plain arrays and tables (no run directory,
no settings object); the ``extend`` stage (:mod:`skymorph.stages.extend`) reads the run and
writes what they return.

:func:`final_types`
    ``morph_type_final`` and ``type_source`` of every galaxy: the experts' type of a named
    cluster (``experts``), an expert's type of the galaxy itself (``taught``), else the
    classifier's (``extended``), and what an extended galaxy out of the training
    distribution gets (``ood``).
:func:`type_columns`
    The catalog columns the extension writes (``p_<TYPE>``, ``morph_type_ml``, ...).
:func:`type_summary`
    The counts recorded in ``extend.json`` and ``stages/extend.json``.
:func:`physical_comparison`
    Median n, G, M20 and C per final type, expert-typed vs extended galaxies.

The catalog columns of :func:`type_columns` (one row per galaxy):

``p_<TYPE>``
    Probability of each of ``inspect.types`` (0 for a type the classifier did not learn).
``morph_type_ml`` / ``ml_probability``
    The classifier's type and its probability (for every galaxy, the training ones too).
    ``ml_probability`` is not a ``p_*`` column: the ``p_<TYPE>`` columns alone sum to 1.
``ml_confident``
    ``ml_probability >= extend.confidence_threshold`` and not out of distribution.
``ml_ood``
    The galaxy is farther from every training galaxy than ``extend.ood_quantile`` of the
    training galaxies are from their neighbours (a blank stamp, a star, an artefact).
``ml_ood_distance``
    That distance: the mean distance to the nearest training galaxies (``inf`` without a
    finite input).
``ml_nonfinite``
    The galaxy's input (features or embedding) holds NaN/inf (e.g. a lost chunk): it gets
    no type (``morph_type_ml`` empty, ``p_<TYPE>`` NaN), is flagged ``ml_ood``, never
    trains the classifier, and its ``morph_type_final`` is ``OOD`` (the last of
    ``inspect.types``, UNC, with ``ood_final = "fallback"``) with ``type_source = "ood"``
    unless the experts typed it; extend.json counts them.
``morph_type_final`` / ``type_source``
    The experts' type (``experts``) where the vote kept the galaxy and the experts typed
    its cluster; else the classifier's (``extended``).  An extended galaxy out of the
    training distribution has ``type_source = ood`` and, by ``extend.ood_final``, the
    value ``OOD`` (default: no expert saw it, so not the experts' UNC), the last of
    ``inspect.types`` (``fallback``) or its predicted type (``predicted``); its
    probabilities are extrapolation, so ``ml_confident`` is false.
    A galaxy an expert typed on its own (``skymorph inspect refine``,
    ``inspection/galaxy_votes.csv``) carries that type (``taught``); the classifier learns
    from those galaxies too, each weighing ``extend.taught_weight`` cluster-typed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .extend import ExtendResult, agreement_name

__all__ = ["OOD", "PHYSICAL", "FinalTypes", "final_types", "type_columns", "type_summary",
           "physical_comparison"]

OOD = "OOD"
"""``morph_type_final`` of an extended galaxy outside the training distribution (``ood_final =
"ood"``): no expert saw it, so it is not the experts' unclassified type."""

PHYSICAL = {"sersic_n": "n", "gini": "G", "m20": "M20", "concentration": "C"}
"""Measurement column -> its short name in :func:`physical_comparison`'s ``median_*`` columns."""


@dataclass
class FinalTypes:
    """Output of :func:`final_types`; every array has one entry per galaxy."""

    final: np.ndarray
    """``morph_type_final`` (object array of str)."""
    source: np.ndarray
    """``type_source``: ``experts``, ``taught``, ``extended`` or ``ood``."""
    typed: np.ndarray
    """The galaxy's cluster carries the experts' type (bool)."""
    taught: np.ndarray
    """An expert's type of the galaxy itself, ``""`` where none."""
    extended: np.ndarray
    """Typed by the classifier: neither cluster-typed nor taught (bool)."""
    ood: np.ndarray
    """Extended and out of the training distribution, or without a finite input (bool)."""


def final_types(result: ExtendResult, *, typed: np.ndarray, mtype: np.ndarray, taught: np.ndarray,
                ood_final: str, fallback: str) -> FinalTypes:
    """The final type and its source of every galaxy.

    Parameters
    ----------
    result : ExtendResult
        The classifier's answer (:func:`skymorph.core.extend.extend_labels`).
    typed : ndarray of bool, shape (N,)
        Galaxies whose named cluster gives them the experts' type.
    mtype : ndarray of str, shape (N,)
        The experts' type of each galaxy's cluster (read where ``typed``).
    taught : ndarray of str, shape (N,)
        An expert's type of the galaxy itself (``inspect refine``), ``""`` where none; it
        wins over every other type.
    ood_final : {"ood", "fallback", "predicted"}
        What an extended galaxy out of distribution gets: :data:`OOD`, ``fallback`` or its
        predicted type.
    fallback : str
        The unclassified type (the last of ``inspect.types``).

    Returns
    -------
    FinalTypes

    See Also
    --------
    type_columns : the catalog columns made from the result.

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.extend import ExtendResult
    >>> from skymorph.core.extend_types import final_types
    >>> r = ExtendResult(classes=["A", "B"], proba=np.eye(2)[[0, 1, 1]], predicted=np.array(["A", "B", "B"]),
    ...                  p_predicted=np.ones(3), confident=np.ones(3, bool), ood=np.array([0, 0, 1], bool),
    ...                  ood_distance=np.zeros(3), ood_threshold=1.0, cv={}, temperature=1.0,
    ...                  nonfinite=np.zeros(3, bool))
    >>> f = final_types(r, typed=np.array([1, 0, 0], bool), mtype=np.array(["B", "", ""]),
    ...                 taught=np.array(["", "", ""]), ood_final="ood", fallback="UNC")
    >>> f.final.tolist(), f.source.tolist()
    (['B', 'B', 'OOD'], ['experts', 'extended', 'ood'])
    """
    nonfinite = result.nonfinite
    final = np.where(typed, mtype, result.predicted.astype(str)).astype(object)
    ood = ~typed & (result.ood | nonfinite) & (taught == "")
    if ood_final == "ood":
        final[ood] = OOD
    elif ood_final == "fallback":
        final[ood] = fallback
    # no input, no type, whatever ood_final says: OOD (the last type with ood_final = fallback)
    final[~typed & nonfinite] = fallback if ood_final == "fallback" else OOD
    source = np.where(typed, "experts", np.where(ood, "ood", "extended")).astype(object)
    final[taught != ""] = taught[taught != ""]  # an expert's type of the galaxy itself comes first
    source[taught != ""] = "taught"
    return FinalTypes(final=final, source=source, typed=typed, taught=taught,
                      extended=~typed & (taught == ""), ood=ood)


def type_columns(result: ExtendResult, types_: FinalTypes, *, types: list[str]) -> dict[str, np.ndarray]:
    """The catalog columns of the extension, one value per galaxy.

    Parameters
    ----------
    result : ExtendResult
        The classifier's answer.
    types_ : FinalTypes
        :func:`final_types` of the same galaxies.
    types : list of str
        ``inspect.types``: one ``p_<TYPE>`` column each (0 for a type the classifier did not
        learn, NaN for a galaxy without a finite input).

    Returns
    -------
    dict
        Column name -> array: ``p_<TYPE>``, ``morph_type_ml``, ``ml_probability``,
        ``ml_confident``, ``ml_ood``, ``ml_ood_distance``, ``ml_nonfinite``,
        ``morph_type_final``, ``type_source``.

    See Also
    --------
    final_types

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.extend import ExtendResult
    >>> from skymorph.core.extend_types import final_types, type_columns
    >>> r = ExtendResult(classes=["A"], proba=np.ones((2, 1)), predicted=np.array(["A", "A"]),
    ...                  p_predicted=np.ones(2), confident=np.ones(2, bool), ood=np.zeros(2, bool),
    ...                  ood_distance=np.zeros(2), ood_threshold=1.0, cv={}, temperature=1.0,
    ...                  nonfinite=np.zeros(2, bool))
    >>> no = np.zeros(2, bool)
    >>> f = final_types(r, typed=no, mtype=np.array(["", ""]), taught=np.array(["", ""]),
    ...                 ood_final="ood", fallback="UNC")
    >>> type_columns(r, f, types=["A", "B"])["p_B"].tolist()
    [0.0, 0.0]
    """
    n = len(result.predicted)
    nonfinite = result.nonfinite
    columns: dict[str, Any] = {}
    for t in types:
        columns[f"p_{t}"] = np.where(nonfinite, np.nan,
                                     result.proba[:, result.classes.index(t)].astype(np.float64)
                                     if t in result.classes else np.zeros(n))
    return {
        **columns,
        "morph_type_ml": result.predicted.astype(str).astype(object),
        "ml_probability": result.p_predicted,
        # a probability far outside the training distribution is extrapolation, never confident
        "ml_confident": (result.confident & ~result.ood).astype(bool),
        "ml_ood": result.ood.astype(bool),
        "ml_ood_distance": result.ood_distance,
        "ml_nonfinite": nonfinite.astype(bool),
        "morph_type_final": types_.final,
        "type_source": types_.source,
    }


def type_summary(result: ExtendResult, types_: FinalTypes, *, learn: np.ndarray, types: list[str],
                 ood_final: str, cv_folds: int) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """What the extension did, in counts, and the cross-validated agreement.

    Parameters
    ----------
    result : ExtendResult
        The classifier's answer.
    types_ : FinalTypes
        :func:`final_types` of the same galaxies.
    learn : ndarray of bool, shape (N,)
        The galaxies the classifier learnt from.
    types : list of str
        ``inspect.types``.
    ood_final : str
        ``extend.ood_final`` (with ``"ood"`` the counts have an :data:`OOD` row).
    cv_folds : int
        ``extend.cv_folds`` (names what the cross-validated score measures).

    Returns
    -------
    summary : dict
        ``n_galaxies``, ``n_experts``, ``n_train``, ``n_taught``, ``n_extended``,
        ``n_extended_confident``, ``n_extended_ood``, ``n_nonfinite``, ``cv_accuracy``,
        ``cv_balanced_accuracy``, ``ece``, ``cv_measures``.
    counts : dict
        Type -> galaxies of that final type per source (``experts``, ``extended``, ``ood``,
        ``taught``).

    See Also
    --------
    final_types

    Examples
    --------
    >>> import numpy as np
    >>> from skymorph.core.extend import ExtendResult
    >>> from skymorph.core.extend_types import final_types, type_summary
    >>> r = ExtendResult(classes=["A"], proba=np.ones((2, 1)), predicted=np.array(["A", "A"]),
    ...                  p_predicted=np.ones(2), confident=np.ones(2, bool), ood=np.zeros(2, bool),
    ...                  ood_distance=np.zeros(2), ood_threshold=1.0, nonfinite=np.zeros(2, bool),
    ...                  cv={"accuracy": 1.0, "balanced_accuracy": 1.0, "ece": 0.0}, temperature=1.0)
    >>> f = final_types(r, typed=np.array([1, 0], bool), mtype=np.array(["A", ""]),
    ...                 taught=np.array(["", ""]), ood_final="fallback", fallback="UNC")
    >>> summary, counts = type_summary(r, f, learn=f.typed, types=["A", "UNC"], ood_final="fallback",
    ...                                cv_folds=5)
    >>> summary["n_extended"], counts["A"]
    (1, {'experts': 1, 'extended': 1, 'ood': 0, 'taught': 0})
    """
    final, typed, taught = types_.final, types_.typed, types_.taught
    extended, ood = types_.extended, types_.ood
    cv = result.cv
    summary = {
        "n_galaxies": len(final), "n_experts": int(typed.sum()), "n_train": int(learn.sum()),
        "n_taught": int((taught != "").sum()),
        "n_extended": int(extended.sum()),
        "n_extended_confident": int((extended & result.confident & ~result.ood).sum()),
        "n_extended_ood": int(ood.sum()),
        "n_nonfinite": int(result.nonfinite.sum()),
        # agreement with the expert-named clusters, not morphology accuracy (evaluate measures that)
        "cv_accuracy": cv["accuracy"], "cv_balanced_accuracy": cv["balanced_accuracy"], "ece": cv["ece"],
        "cv_measures": agreement_name(cv_folds),
    }
    counts = {t: {"experts": int(((final == t) & typed).sum()),
                  "extended": int(((final == t) & extended & ~ood).sum()),
                  "ood": int(((final == t) & ood).sum()),
                  "taught": int((taught == t).sum())}
              for t in [*types, *([OOD] if ood_final == "ood" else [])]}
    return summary, counts


def physical_comparison(catalog: pd.DataFrame, measurements: pd.DataFrame,
                        types: list[str]) -> pd.DataFrame | None:
    """Median n, G, M20 and C per final type, expert-typed vs extended galaxies.

    A classifier that extends the types well gives the extended galaxies of a type
    the same physical parameters as that type's expert-typed galaxies.

    Parameters
    ----------
    catalog : DataFrame
        ``id``, ``morph_type_final`` and ``type_source`` of every galaxy.
    measurements : DataFrame
        ``id`` and any of :data:`PHYSICAL`'s columns (``measurements.parquet``); a value
        counts where its family's flag says it is valid.
    types : list of str
        The final types, in the order of the rows.

    Returns
    -------
    DataFrame or None
        One row per type and source (``experts``, ``extended``, ``ood``): ``type``,
        ``source``, ``n`` and ``median_<n|G|M20|C>``; ``None`` where the measurements hold
        none of those columns.

    See Also
    --------
    skymorph.core.quality.valid_values

    Examples
    --------
    >>> import pandas as pd
    >>> from skymorph.core.extend_types import physical_comparison
    >>> cat = pd.DataFrame({"id": ["1", "2"], "morph_type_final": ["A", "A"],
    ...                     "type_source": ["experts", "extended"]})
    >>> table = physical_comparison(cat, pd.DataFrame({"id": ["1", "2"], "gini": [0.4, 0.6]}), ["A"])
    >>> table["median_G"].tolist()
    [0.4, 0.6, nan]
    """
    cols = [c for c in PHYSICAL if c in measurements.columns]
    if not cols or "id" not in measurements.columns:
        return None
    from .quality import valid_values

    meas = valid_values(measurements)[["id", *cols]].copy()  # each value where its family is valid
    meas["id"] = meas["id"].astype(str)
    table = catalog[["id", "morph_type_final", "type_source"]].copy()
    table["id"] = table["id"].astype(str)
    table = table.merge(meas, on="id", how="left")
    rows = []
    for t in types:
        for source in ("experts", "extended", "ood"):
            sel = table[(table["morph_type_final"] == t) & (table["type_source"] == source)]
            row: dict[str, Any] = {"type": t, "source": source, "n": len(sel)}
            for c in cols:
                values = pd.to_numeric(sel[c], errors="coerce").dropna()
                row[f"median_{PHYSICAL[c]}"] = float(values.median()) if len(values) else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)
