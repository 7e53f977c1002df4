"""Similar: 'more like this' - the galaxies nearest to a query galaxy.

``skymorph similar RUN ID [ID ...] [--n 50]`` finds the ``n`` galaxies nearest to each
query in the run's encoder ``features`` (or its ``embedding``; ``similar.input``) under
``similar.metric`` (cosine by default).  Runs with fewer than ``similar.exact_below``
galaxies are searched exactly; larger ones through an inverted-file index stored in
``RUN_DIR/similar/index/`` (:mod:`skymorph.core.search`), built on the first query and reused
while the features and the index settings are unchanged.

``--image FILE`` encodes a new cutout with the run's own ingest framing and encoder (and its
denoise / polar steps when they are on) and searches for it.

Outputs: ``similar/result.csv`` (query, rank, id, distance and the catalog's columns; rank 0
is the query itself) and one montage per query, ``similar/<query>.png``, the query first.
"""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..inspection.montage import SHOWN_COLUMNS, draw_grid, galaxy_table
from ..io.arrays import galaxy_array, input_stage
from ..io.atomic import atomic_file
from ..io.queries import SimilarError, cutout_query, find_rows
from ..io.rundir import RunDir
from ..io.runfiles import file_digest, safe_file_name
from . import Argument, Stage, StageContext, apct_options, execute, stamp_options

__all__ = ["similar", "SimilarError", "galaxy_table", "find_rows", "draw_grid"]

log = logging.getLogger(__name__)

def _input_stage(config: Config) -> str:
    return input_stage(config.similar.input)


def _extra(ctx: StageContext) -> dict[str, Any]:
    ids = [str(i) for i in (ctx.options.get("ids") or [])]
    image = ctx.options.get("image")
    if not ids and not image:
        raise SimilarError("name the galaxies to search for (skymorph similar RUN ID ...) or give "
                           "--image FILE")
    if image and not Path(image).is_file():
        raise SimilarError(f"--image {image} does not exist or is not a file; give the path of a FITS, "
                           "PNG, JPEG or NPY cutout")
    return {"ids": ids, "image": file_digest(image) if image else None}


def _index(run: RunDir, config: Config, x: Any) -> Any:
    """The stored index of the run's search space, (re)built when its key changed."""
    from ..core.search import index_key
    from ..core.similar import build_index, stored_index

    info = run.stage_info(_input_stage(config)) or {}
    cfg = config.similar
    key = index_key(info.get("fingerprint"), metric=cfg.metric, seed=cfg.seed, space=cfg.input)
    folder = run.path / "similar" / "index"
    index = stored_index(folder, key=key)
    if index is None:
        log.info("similar: building the search index of %d galaxies (once; reused while the features "
                 "are unchanged)", x.shape[0])
        index = build_index(x, folder, key=key, metric=cfg.metric, seed=cfg.seed)
    return index


def _queries(ctx: StageContext, x: Any, table: pd.DataFrame) -> tuple[list[str], list[int], list, Any]:
    """(query names, their rows (-1: the new image), their vectors, the new image's stamp)."""
    run, config = ctx.run, ctx.config
    ids = [str(i) for i in (ctx.options.get("ids") or [])]
    rows = find_rows(run, table, ids)
    queries = [np.asarray(x[int(r)], dtype=np.float32) for r in rows]
    for gid, q in zip(ids, queries, strict=True):
        if not np.isfinite(q).all():
            raise SimilarError(f"galaxy {gid} has no features (its image was empty; see "
                               f"{run.rejects_path}); choose another id")
    names, exclude, extra_stamp = list(ids), list(rows), None
    image = ctx.options.get("image")
    if image:
        if config.similar.input != "features":
            raise SimilarError("--image searches the encoder features; use --input features")
        extra_stamp, feats = cutout_query(run, config, image, stamp_options=stamp_options(config.ingest),
                                          polar=apct_options(config.polar) if config.polar.enabled else None)
        queries.append(feats)
        names.append(Path(image).name)
        exclude.append(-1)
    return names, exclude, queries, extra_stamp


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core.search import exact_neighbors
    from ..core.similar import neighbour_table

    run, config = ctx.run, ctx.config
    cfg = config.similar
    table = galaxy_table(run)
    x = galaxy_array(run, cfg.input, len(table), error=SimilarError)
    n = int(x.shape[0])
    names, exclude, queries, extra_stamp = _queries(ctx, x, table)
    q, exclude_arr = np.stack(queries), np.asarray(exclude, dtype=np.int64)
    k = min(cfg.n, n - 1) if n > 1 else 1
    route = "exact" if n < cfg.exact_below else "index"
    if route == "exact":
        found, dist = exact_neighbors(np.asarray(x[:], dtype=np.float32), q, n=k, metric=cfg.metric,
                                      exclude=exclude_arr)
    else:
        found, dist = _index(run, config, x).search(q, n=k, probe=cfg.probe, exclude=exclude_arr)
    result = neighbour_table(found, dist, names=names, rows=exclude, table=table,
                             columns=[c for c in SHOWN_COLUMNS if c in table.columns])
    out = run.path / "similar"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    montages = []
    for i, name in enumerate(names):
        sel = result[result["query"] == name]
        png = out / f"{safe_file_name(name)}.png"
        draw_grid(run, config, sel["row"].to_numpy(), f"query {name} (first) + "
                  f"{int((sel['rank'] > 0).sum())} nearest ({cfg.metric})", png,
                  first=extra_stamp if exclude[i] < 0 else None)
        montages.append(png.name)
    with atomic_file(out / "result.csv") as tmp:
        result.drop(columns="row").to_csv(tmp, index=False)
    return {"queries": names, "n": k, "route": route, "metric": cfg.metric, "input": cfg.input,
            "montages": montages, "n_galaxies": n}


def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    result = pd.read_csv(run.path / "similar" / "result.csv", dtype={"id": str, "query": str})
    lines = []
    for name, sel in result.groupby("query", sort=False):
        lines.append(f"nearest to {name} ({info.get('metric')} distance in the {info.get('input')}, "
                     f"{info.get('route')} search):")
        cols = [c for c in ("rank", "id", "distance", "cluster", "morph_type") if c in sel.columns]
        lines.append(sel[sel["rank"] > 0][cols].head(10).to_string(index=False))
        if (sel["rank"] > 0).sum() > 10:
            lines.append(f"  ... {int((sel['rank'] > 0).sum()) - 10} more")
    lines.append(f"table {run.path / 'similar' / 'result.csv'}; montages (query first) in "
                 f"{run.path / 'similar'}: {', '.join(info.get('montages', []))}")
    return "\n".join(lines)


STAGE = Stage(
    name="similar",
    summary="'more like this': the galaxies nearest to a galaxy or a new image",
    description=__doc__.split("\n\n")[0] + (
        "\n\nExamples:\n"
        "  skymorph similar myrun 587722982 --n 20\n"
        "  skymorph similar myrun --image new_cutout.jpg"),
    compute=_compute,
    sections=("similar",),
    upstream=lambda config: (_input_stage(config),),
    outputs=("similar/result.csv",),
    extra=_extra,
    report=_report,
    arguments=(
        Argument("ids", "ids of the query galaxies (the catalog's 'id' column)", nargs="*", metavar="ID"),
        Argument("--image", "a new cutout (FITS, PNG, JPEG, NPY) to encode and search for", metavar="FILE"),
    ),
)


def similar(run_dir: str | PathLike | RunDir, ids: Any = (), n: int | None = None, *,
            image: str | PathLike | None = None, config: Config | None = None, force: bool = False,
            progress: bool = True, **settings: Any) -> pd.DataFrame:
    """The galaxies nearest to each query, as a table (and montages in ``RUN_DIR/similar``).

    Parameters
    ----------
    run_dir : str, Path or RunDir
        A run where ``encode`` (``similar.input = "features"``) or ``reduce`` has run.
    ids : str or sequence of str
        Ids of the query galaxies.
    n : int, optional
        Neighbours per query (``similar.n``).
    image : str or Path, optional
        A new cutout, encoded like the run's own stamps, to search for.
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    force : bool
        Search again even when the query and settings are unchanged.
    progress : bool
        Kept for the common stage signature.
    **settings
        Overrides of the ``[similar]`` settings, e.g. ``metric="euclidean"``.

    Returns
    -------
    DataFrame
        ``query``, ``rank`` (0: the query itself), ``id``, ``distance`` and catalog columns.

    Raises
    ------
    SimilarError
        Unknown or rejected id, unreadable image.
    """
    if isinstance(ids, str):
        ids = [ids]
    if n is not None:
        settings["n"] = n
    options = {"ids": [str(i) for i in ids], "image": str(image) if image is not None else None}
    run = execute("similar", run_dir, config, force=force, progress=progress, options=options, **settings)
    return pd.read_csv(run.path / "similar" / "result.csv", dtype={"id": str, "query": str})
