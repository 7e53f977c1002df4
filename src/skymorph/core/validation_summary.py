"""The validation report's head and its numbers file: the run's settings, the caveats, JSON values.

The validate stage (:mod:`skymorph.stages.validate`) reads the stage records and the
catalog; these functions turn them into the settings rows and the warnings shown at
the top of the report, and make the report's numbers JSON-ready for
``validation.json``.  No run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..summaries import read_summary, shown
from . import validation as V

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["settings_rows", "nonlinear_warnings", "jsonable"]


def settings_rows(config: Config, records: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """The settings that decide what a run is, with what the stages actually used.

    Parameters
    ----------
    config : Config
        The run's settings.
    records : dict
        Stage name -> what the stage recorded (``stages/NAME.json``), for the stages that ran.

    Returns
    -------
    list of dict
        Rows of ``label``, ``value`` and ``source`` (the file or setting the value comes from).

    Raises
    ------
    SummaryError
        If a current stage record lacks a key.
    """
    enc, red, clu, ins, mea = (read_summary(s, records.get(s, {}))
                               for s in ("encode", "reduce", "cluster", "merge", "measure"))
    rows = []

    def add(label: str, value: Any, source: str) -> None:
        rows.append({"label": label, "value": str(value), "source": source})

    if "ingest" in records:
        ing = read_summary("ingest", records["ingest"])
        add("galaxies", f"{shown(ing.n_stamps)} stamps ({shown(ing.n_rejected)} rejected)",
            "stages/ingest.json")
    add("CAE denoising", "on" if config.denoise.enabled else "off", "config.toml [denoise] enabled")
    add("polar transform (APCT)", f"on, pole {config.polar.pole}" if config.polar.enabled else "off",
        "config.toml [polar]")
    used = enc.encoder
    add("encoder", used or config.encode.encoder,
        "stages/encode.json" if used else "config.toml [encode] encoder (encode has not run)")
    if "encode" in records:
        add("features", f"{shown(enc.dim)}-d from '{shown(enc.input)}'", "stages/encode.json")
    add("rotations averaged", config.encode.rotations, "config.toml [encode] rotations")
    dims = red.dims
    requested = config.reduce.dims
    add("d (UMAP dimensions)", f"{dims} (asked {requested})" if dims is not None and dims != requested
        else (dims if dims is not None else requested), "stages/reduce.json" if dims is not None
        else "config.toml [reduce] dims")
    add("k (clusters)", config.cluster.k, "config.toml [cluster] k")
    if "cluster" in records:
        kept = clu.kept_fraction
        add("kept by the consensus", f"{shown(clu.n_kept)} of {shown(clu.n_galaxies)}"
            + (f" ({kept:.0%})" if kept is not None else ""), "stages/cluster.json")
    add("experts needed to agree", config.inspect.min_agree, "config.toml [inspect] min_agree")
    if "merge" in records:
        add("votes merged", shown(ins.n_votes), "stages/merge.json")
    measured = "measure" in records
    if measured:
        add("Sersic fits", "on" if config.measure.include_sersic else "off",
            "config.toml [measure] include_sersic")
    else:
        add("Sersic fits", "none: measure has not run", "stages/measure.json (missing)")
    if measured:
        add("G2 noise tolerance", f"{config.measure.g2_noise_tolerance:g} sigma"
            + (" (the paper's definition)" if not config.measure.g2_noise_tolerance else ""),
            "config.toml [measure] g2_noise_tolerance")
        add("measured (valid non-parametric values)", f"{shown(mea.n_measured)} of "
            f"{shown(mea.n_galaxies)}", "stages/measure.json")
        if mea.n_sersic_ok is not None:
            add("valid Sersic fits", f"{mea.n_sersic_ok} of {shown(mea.n_galaxies)}", "stages/measure.json")
    add("ETG types", " + ".join(config.validate.etg_types), "config.toml [validate] etg_types")
    add("confidence level", f"{config.validate.confidence * 100:g}%", "config.toml [validate] confidence")
    return rows


def nonlinear_warnings(table: pd.DataFrame) -> list[str]:
    """The report's warning when galaxies come from non-linear (JPEG/PNG) images (else none)."""
    info = V.nonlinear_inputs(table)
    if not info["n_nonlinear"]:
        return []
    examples = ", ".join(Path(e).name for e in info["examples"])
    return [f"{info['n_nonlinear']} of {len(table)} galaxies come from non-linear (JPEG/PNG) images "
            f"(e.g. {examples}; from the {info['source']}). Their pixels are display-scaled (gamma, stretch, "
            "8 bits), not proportional to flux: Sersic n, r_e, Gini, M20, CAS, MID, Psi and G2 measured on "
            "them are not physical and cannot be compared with the paper's values or with FITS data. The "
            "types and maps are unaffected."]


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays as Python ones, tuples as lists, and NaN and inf as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
