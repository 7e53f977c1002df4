"""Subdivide: subclasses of one cluster or type, for the special objects inside it.

``skymorph subdivide RUN --cluster C [--k K]`` (or ``--type T``) embeds the members of
consensus cluster ``C`` (or of the galaxies typed ``T``: ``morph_type_final`` after
``extend``, else ``morph_type``) on their own (:func:`skymorph.core.subclasses.own_embedding`)
and clusters that embedding with the same three-clusterer vote as ``skymorph cluster``
(K-means, BIRCH and ward, ``subdivide.k`` each; a member is kept where all three agree).

Outputs: ``subcluster`` in the catalog (``"7.3"``: subclass 3 of cluster 7, ``"ETD.1"`` for a
type; ``""`` for galaxies in no subclass - outside the group, or where the three clusterers
disagree; subdividing another group keeps the earlier subclasses of the other galaxies),
``subdivide/<group>/subcluster_<s>.png`` (random members of each subclass) with
``montages.json``, and ``subdivide/subclusters.parquet``.  Experts name subclasses with
``inspect.special_types`` or free text in ``skymorph inspect serve``; ``inspect merge``
writes the agreed name to ``special_type``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import SkymorphError
from ..inspection import clustering_fingerprint, sample_members
from ..inspection.montage import draw_grid
from ..inspection.special import group_folder, subclass_manifests
from ..io.atomic import atomic_file, write_text_atomic
from ..io.rundir import RunDir, RunDirError
from . import Argument, Stage, StageContext, execute

__all__ = ["subdivide", "SubdivideError"]

log = logging.getLogger(__name__)


class SubdivideError(SkymorphError, ValueError):
    """The group cannot be subdivided (no such cluster or type, too few members)."""


def _type_column(catalog: pd.DataFrame) -> str | None:
    return next((c for c in ("morph_type_final", "morph_type") if c in catalog.columns), None)


def _members(catalog: pd.DataFrame, options: dict[str, Any], run: RunDir) -> tuple[str, np.ndarray]:
    from ..inspection import consensus_labels

    cluster, mtype = options.get("cluster"), options.get("type")
    if (cluster is None) == (mtype is None):
        raise SubdivideError("give one group to subdivide: --cluster C (a consensus cluster) or --type T")
    if cluster is not None:
        labels = consensus_labels(catalog)
        existing = sorted(set(labels[labels >= 0].tolist()))
        try:
            c = int(str(cluster))
        except ValueError:
            c = None
        if c is None or c not in existing:
            shown = ", ".join(map(str, existing[:30])) + (" ..." if len(existing) > 30 else "")
            raise SubdivideError(f"cluster {cluster} does not exist in {run.path}; choose one of its "
                                 "consensus "
                                 f"clusters ({shown or 'none'})")
        return str(c), labels == c
    column = _type_column(catalog)
    if column is None:
        raise SubdivideError(f"the catalog of {run.path} has no types yet; name the clusters first "
                             f"(`skymorph inspect merge {run.path}`) or subdivide with --cluster C")
    values = catalog[column].fillna("").astype(str)
    if not (values == str(mtype)).any():
        names = sorted(v for v in values.unique() if v)
        raise SubdivideError(f"no galaxy of {run.path} has type {mtype!r} in {column}; choose one of "
                             f"{', '.join(names)}")
    return str(mtype), (values == str(mtype)).to_numpy()


def _extra(ctx: StageContext) -> dict[str, Any]:
    catalog = ctx.run.catalog()
    parent, members = _members(catalog, ctx.options, ctx.run)
    ctx.state.update(catalog=catalog, parent=parent, members=members)
    digest = hashlib.sha256(catalog["id"].astype(str).to_numpy()[members].tobytes()).hexdigest()[:16]
    return {"group": parent, "by": "cluster" if ctx.options.get("cluster") is not None else "type",
            "members": digest}


def _compute(ctx: StageContext) -> dict[str, Any]:
    from ..core.clustering import ClusterError, consensus_clustering
    from ..core.subclasses import SubclassError, own_embedding, subcluster_names

    run, config = ctx.run, ctx.config
    cfg = config.subdivide
    catalog, parent, members = ctx.state["catalog"], ctx.state["parent"], ctx.state["members"]
    rows = np.flatnonzero(members)
    if len(rows) < max(cfg.k, 3):
        raise SubdivideError(f"group {parent} has {len(rows)} galaxies, too few for --k {cfg.k}; lower --k")
    try:
        features = run.open_array("features")
    except RunDirError:
        raise SubdivideError(f"{run.path} has no features; run `skymorph encode {run.path}` first") from None
    x = np.asarray(features.oindex[rows], dtype=np.float32)
    ids = catalog["id"].astype(str).to_numpy()
    try:
        emb = own_embedding(x, dims=cfg.dims, n_neighbors=cfg.n_neighbors, seed=cfg.seed)
        c = config.cluster  # the run's clusterer settings, with the subdivision's k and seed
        result = consensus_clustering(
            emb, k=cfg.k, kmeans_n_init=c.kmeans_n_init, birch_threshold=c.birch_threshold,
            birch_subclusters=c.birch_subclusters, birch_branching_factor=c.birch_branching_factor,
            ward_method=c.ward_method, ward_sample=c.ward_sample, ward_connectivity=c.ward_connectivity,
            seed=cfg.seed, ids=ids[rows].tolist())
    except (SubclassError, ClusterError) as exc:
        raise SubdivideError(f"group {parent}: {exc}") from None
    names = subcluster_names(parent, result.cluster, result.consensus)
    column = (catalog["subcluster"].fillna("").astype(str).to_numpy(dtype=object)
              if "subcluster" in catalog.columns else np.full(len(catalog), "", dtype=object))
    column[rows] = names
    table = pd.DataFrame({"id": catalog["id"], "subcluster": column})
    out = run.path / "subdivide"
    folder = out / group_folder(parent)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("subcluster_*.png"):
        old.unlink()
    samples = sample_members(np.where(result.consensus, result.cluster, -1), cfg.per_subcluster, cfg.seed)
    entries = []
    for sub, picked in samples.items():
        name = f"{parent}.{sub}"
        png = folder / f"subcluster_{sub:03d}.png"
        size = int(((result.cluster == sub) & result.consensus).sum())
        draw_grid(run, config, rows[picked], f"subclass {name}  |  {size} galaxies  |  {len(picked)} shown",
                  png)
        entries.append({"subcluster": name, "size": size, "n_shown": len(picked),
                        "png": f"{group_folder(parent)}/{png.name}", "ids": ids[rows[picked]].tolist()})
    manifest = {"group": parent, "by": "cluster" if ctx.options.get("cluster") is not None else "type",
                "n_members": len(rows), "n_kept": int(result.consensus.sum()), "k": cfg.k,
                "clustering": clustering_fingerprint(catalog), "subclusters": entries}
    write_text_atomic(folder / "montages.json", json.dumps(manifest, indent=1))
    with atomic_file(out / "subclusters.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    groups = _read_json(out / "groups.json").get("groups", [])
    groups = [g for g in groups if g != parent] + [parent]
    groups_file = {"groups": groups, "clustering": manifest["clustering"]}
    write_text_atomic(out / "groups.json", json.dumps(groups_file, indent=1))
    run.update_catalog(table)
    log.info("subdivide: group %s, %d members -> %d subclasses (%d members kept by the vote)", parent,
             len(rows), len(entries), manifest["n_kept"])
    return {"group": parent, "n_members": len(rows), "n_kept": manifest["n_kept"],
            "n_subclusters": len(entries), "sizes": {e["subcluster"]: e["size"] for e in entries}}


def _read_json(path: Any) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _finish(ctx: StageContext) -> None:
    """Put ``subcluster`` back when a later ``cluster`` rewrote the catalog with the same clustering."""
    run = ctx.run
    path = run.path / "subdivide" / "subclusters.parquet"
    if not path.exists():
        return
    catalog = run.catalog()
    if "subcluster" not in catalog.columns and subclass_manifests(run, clustering_fingerprint(catalog)):
        run.update_catalog(pd.read_parquet(path))


def _report(run: RunDir, info: dict[str, Any], options: dict[str, Any]) -> str:
    sizes = info.get("sizes", {})
    folder = run.path / "subdivide" / group_folder(str(info.get("group")))
    return "\n".join([
        f"group {info.get('group')}: {info.get('n_members')} galaxies -> {info.get('n_subclusters')} "
        "subclasses; "
        f"{info.get('n_kept')} kept where K-means, BIRCH and ward agree",
        *(f"  {name:<12}{n:>6} galaxies" for name, n in sizes.items()),
        f"subcluster written to {run.path / 'catalog.parquet'}; montages in {folder}",
        f"experts name them in `skymorph inspect serve {run.path}` (Subclasses), then "
        "`skymorph inspect merge "
        f"{run.path}` writes special_type"])


STAGE = Stage(
    name="subdivide",
    summary="subclasses of one cluster or type (the three-clusterer vote on their own embedding)",
    description=__doc__.split("\n\n")[0] + (
        "\n\nExamples:\n"
        "  skymorph subdivide myrun --cluster 7 --k 5\n"
        "  skymorph subdivide myrun --type ETD"),
    compute=_compute,
    sections=("subdivide", "cluster"),
    upstream=lambda config: ("encode",),
    outputs=("subdivide/subclusters.parquet", "subdivide/groups.json"),
    extra=_extra,
    finish=_finish,
    report=_report,
    arguments=(
        Argument("--cluster", "consensus cluster to subdivide", metavar="C"),
        Argument("--type", "morphology type to subdivide (morph_type_final, else morph_type)", metavar="T"),
    ),
)


def subdivide(run_dir: str | PathLike | RunDir, cluster: int | None = None, *, type: str | None = None,  # noqa: A002
              config: Config | None = None, force: bool = False, progress: bool = True,
              **settings: Any) -> RunDir:
    """Subclasses of one consensus cluster or one type: ``subcluster`` in the catalog and montages.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        A run with a catalog and ``features``.
    cluster : int, optional
        The consensus cluster to subdivide.
    type : str, optional
        Or the morphology type to subdivide.
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    force : bool
        Recompute even when the group and settings are unchanged.
    progress : bool
        Kept for the common stage signature.
    **settings
        Overrides of the ``[subdivide]`` settings, e.g. ``k=4``.

    Returns
    -------
    RunDir

    Raises
    ------
    SubdivideError
        No such cluster or type, or too few members for ``k``.
    """
    options = {"cluster": None if cluster is None else str(cluster), "type": type}
    return execute("subdivide", run_dir, config, force=force, progress=progress, options=options, **settings)
