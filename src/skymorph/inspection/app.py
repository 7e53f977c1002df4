"""The state behind the voting web application (:mod:`skymorph.inspection.server`):
the run, its montages, the vote and flag stores, and the answers the request handlers send."""

from __future__ import annotations

import functools
import io
import math
import threading
from typing import Any

import numpy as np

from ..config import Config
from ..io.rundir import RunDir
from .flags import MAX_COMMENT, FlagStore
from .montage import (
    InspectError,
    display,
    display_numbers,
    display_scaled_stamps,
    load_manifest,
    stamp_pixel_scales,
    to_png,
    uses_asinh,
)
from .votes import MAX_EXPERT_NAME, VoteStore, clean_expert

TYPE_NAMES = {
    "SPH": "spheroid",
    "ETD": "early-type disk",
    "LTD": "late-type disk",
    "IRR": "irregular",
    "UNC": "unclassified",
}
"""Descriptions shown beside the type codes; the codes themselves come from ``inspect.types``
(a code without a description here is shown alone)."""

SOFTENING_RANGE = (0.001, 10.0)
"""Range of the live stretch control (``softening`` of ``/galaxy/N.png``)."""


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _App:
    """What the request handlers share: the run, its montages and the vote store."""

    def __init__(self, run: RunDir, config: Config) -> None:
        self.run = run
        self.config = config
        self.manifest = load_manifest(run)
        self.types = list(config.inspect.types)
        self.codes = {t.casefold(): t for t in self.types}
        self.store = VoteStore(run.path / "inspection" / "votes.csv", self.manifest["clustering"])
        self.clusters = {c["cluster"]: c for c in self.manifest["clusters"]}
        self.images = run.open_array(self.manifest["array"])
        n_stamps, side = int(self.images.shape[0]), int(self.images.shape[-1])
        self.stamp_side = side
        self.display_scaled = display_scaled_stamps(run, n_stamps)
        self.pixel_scales = stamp_pixel_scales(run, n_stamps, side)
        self.ids_by_stamp = {s: i for c in self.manifest["clusters"]
                             for s, i in zip(c["stamp_index"], c["ids"], strict=True)}
        self._read_lock = threading.Lock()
        self._init_expert_view()

    @functools.cached_property
    def refine(self) -> Any:
        """The "teach single galaxies" pages (:class:`skymorph.inspection.refine.RefineApp`)."""
        from .refine import RefineApp

        return RefineApp(self.run, self.config)

    def _cell(self, stamp: int, galaxy_id: str) -> dict[str, Any]:
        scale = self.pixel_scales[stamp]
        return {"stamp": stamp, "id": galaxy_id, "side": self.stamp_side,
                "arcsec_per_px": None if np.isnan(scale) else float(scale),
                "stretch": "asinh" if uses_asinh(self.config.inspect, bool(self.display_scaled[stamp]))
                else "linear"}

    def state(self, expert: str | None) -> dict[str, Any]:
        clusters = [{
            "cluster": c["cluster"], "size": c["size"], "n_shown": c["n_shown"],
            "png": f"/montage/{c['cluster']}.png", "geometry": c["geometry"],
            "cells": [self._cell(s, i) for s, i in zip(c["stamp_index"], c["ids"], strict=True)],
        } for c in self.manifest["clusters"]]
        votes = self.store.votes_of(expert) if expert else {}
        return self._expert_view(expert, {
            "run": self.run.path.name,
            "types": [{"code": t, "name": TYPE_NAMES.get(t, "")} for t in self.types],
            "clusters": clusters,
            "votes": {str(k): v for k, v in votes.items() if k in self.clusters},
            "max_expert_name": MAX_EXPERT_NAME,
            "softening": {"default": self.config.inspect.asinh_softening,
                          "min": SOFTENING_RANGE[0], "max": SOFTENING_RANGE[1]},
        })

    def vote(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise InspectError("a vote is a JSON object {expert, cluster, type}")
        expert = clean_expert(payload.get("expert"))
        cluster = payload.get("cluster")
        if type(cluster) is not int:  # not bool, float or text
            raise InspectError(f"cluster must be an integer (got {_short(cluster)})")
        if cluster not in self.clusters:
            raise InspectError(f"there is no consensus cluster {_short(cluster)} in this run")
        type_ = payload.get("type")
        # the configured spelling of the code, matched regardless of case and surrounding blanks
        code = self.codes.get(type_.strip().casefold()) if isinstance(type_, str) else None
        if code is None:
            raise InspectError(f"type must be one of {', '.join(self.types)} (got {_short(type_)})")
        row = self.store.cast(expert, cluster, code)
        votes = self.store.votes_of(expert)
        return {"ok": True, "vote": row,
                "votes": {str(k): v for k, v in votes.items() if k in self.clusters}}

    # --- what the expert sees beyond the votes: cluster numbers, colour, flags on galaxies -------

    def _init_expert_view(self) -> None:
        self.flags = FlagStore(self.run.path / "inspection" / "flags.csv")
        self.numbers = display_numbers(self.clusters)
        self.colour = {s for c in self.manifest["clusters"]
                       for s, has in zip(c["stamp_index"], c.get("colour") or [], strict=False) if has}
        self._colour_png: dict[int, bytes] = {}

    def _expert_view(self, expert: str | None, state: dict[str, Any]) -> dict[str, Any]:
        """Adds to the page's state: each cluster's number as the expert sees it (1..n, no gap;
        ``cluster`` stays the catalog's id), which cells have a colour view, and the galaxies
        this expert flagged (``{id: comment}``)."""
        for c in state["clusters"]:
            c["number"] = self.numbers[c["cluster"]]
            for cell in c["cells"]:
                cell["colour"] = cell["stamp"] in self.colour
        state["flags"] = self.flags.flags_of(expert) if expert else {}
        state["max_comment"] = MAX_COMMENT
        return state

    def flag(self, payload: Any) -> dict[str, Any]:
        """Flag (or unflag) one galaxy for an expert, with a comment: ``{expert, stamp, comment,
        flagged}``; answers with the expert's flags."""
        if not isinstance(payload, dict):
            raise InspectError("a flag is a JSON object {expert, stamp, comment, flagged}")
        expert = clean_expert(payload.get("expert"))
        stamp = payload.get("stamp")
        if type(stamp) is not int or stamp not in self.ids_by_stamp:
            raise InspectError(f"stamp must be a galaxy shown in the montages (got {_short(stamp)})")
        flagged = payload.get("flagged", True)
        if not isinstance(flagged, bool):
            raise InspectError(f"flagged must be true or false (got {_short(flagged)})")
        row = self.flags.set_flag(expert, self.ids_by_stamp[stamp], stamp, payload.get("comment"), flagged)
        return {"ok": True, "flag": row, "flags": self.flags.flags_of(expert)}

    def colour_png(self, stamp: int) -> bytes:
        """The colour view of a galaxy whose input was a colour image (see :mod:`.colour`)."""
        if stamp not in self.colour:
            raise KeyError(stamp)
        if stamp not in self._colour_png:
            from PIL import Image

            from .colour import colour_stamps

            view = colour_stamps(self.run.sources(), [stamp], self.stamp_side).get(stamp)
            if view is None:
                raise KeyError(stamp)
            buf = io.BytesIO()
            Image.fromarray(view, mode="RGB").save(buf, format="PNG")
            self._colour_png[stamp] = buf.getvalue()
        return self._colour_png[stamp]

    def galaxy_png(self, stamp: int, softening: float | None = None) -> bytes:
        if stamp not in self.ids_by_stamp and stamp not in self._catalog_rows()[1]:  # "more like this"
            raise KeyError(stamp)
        with self._read_lock:
            image = np.asarray(self.images[stamp])
        return to_png(display(image, self.config.inspect, bool(self.display_scaled[stamp]), softening))

    # --- "more like this" and subclass names (skymorph similar / subdivide) -------------------------

    def _catalog_rows(self) -> tuple[Any, dict[int, int]]:
        if getattr(self, "_catalog", None) is None:
            catalog = self.run.catalog()
            index = catalog["index"].to_numpy(np.int64) if "index" in catalog else np.arange(len(catalog))
            self._catalog = catalog
            self._row_of_stamp = {int(s): r for r, s in enumerate(index)}
        return self._catalog, self._row_of_stamp

    def similar(self, stamp: int, n: int) -> dict[str, Any]:
        """The ``n`` galaxies nearest to the galaxy of ``stamp`` (stored index, else exact search)."""
        from ..core.search import IVFIndex, SearchError, exact_neighbors, index_key

        catalog, row_of = self._catalog_rows()
        if stamp not in row_of:
            raise InspectError(f"no galaxy with stamp {stamp} in the catalog")
        cfg = self.config.similar
        x = self.run.open_array(cfg.input)
        row = row_of[stamp]
        query = np.asarray(x[row], dtype=np.float32)[None]
        if not np.isfinite(query).all():
            raise InspectError("this galaxy has no features (its image was empty)")
        stage = "encode" if cfg.input == "features" else "reduce"
        key = index_key((self.run.stage_info(stage) or {}).get("fingerprint"), metric=cfg.metric,
                        seed=cfg.seed, space=cfg.input)
        folder = self.run.path / "similar" / "index"
        found = None
        if (folder / "index.json").exists():
            try:
                index = IVFIndex.load(folder)
                if index.info.get("key") == key:
                    found, dist = index.search(query, n=n, probe=cfg.probe, exclude=np.array([row]))
            except SearchError:
                found = None
        if found is None:
            with self._read_lock:
                if getattr(self, "_search_space", None) is None:
                    self._search_space = np.asarray(x[:], dtype=np.float32)
            found, dist = exact_neighbors(self._search_space, query, n=n, metric=cfg.metric,
                                          exclude=np.array([row]))
        index_col = catalog["index"].to_numpy(np.int64) if "index" in catalog else np.arange(len(catalog))
        ids = catalog["id"].astype(str).to_numpy()
        cells = []
        for r, d in zip(found[0], dist[0], strict=True):
            if r < 0:
                continue
            cell = self._cell(int(index_col[r]), str(ids[r]))
            cell["distance"] = float(d)
            for col in ("cluster", "morph_type"):
                if col in catalog.columns:
                    value = catalog[col].iloc[int(r)]
                    cell[col] = None if value is None or (isinstance(value, float) and math.isnan(value)) \
                        else (int(value) if col == "cluster" else str(value))
            cells.append(cell)
        return {"stamp": stamp, "id": str(ids[row]), "metric": cfg.metric, "neighbours": cells}

    def _subclass_store(self) -> Any:
        from .special import SubclassVoteStore, subclass_votes_path

        return SubclassVoteStore(subclass_votes_path(self.run), self.manifest["clustering"])

    def _subclass_manifests(self) -> list[dict[str, Any]]:
        from .special import subclass_manifests

        return subclass_manifests(self.run, self.manifest["clustering"])

    def subclasses(self, expert: str | None) -> dict[str, Any]:
        """The subdivided groups of the current clustering, their montages and the expert's names."""
        groups = [{
            "group": m["group"], "by": m.get("by", ""), "n_members": m.get("n_members"),
            "subclusters": [{"subcluster": e["subcluster"], "size": e["size"], "n_shown": e["n_shown"],
                             "png": f"/subclass/{m['folder']}/{e['png'].rsplit('/', 1)[-1]}"}
                            for e in m.get("subclusters", [])],
        } for m in self._subclass_manifests()]
        votes = self._subclass_store().votes_of(expert) if expert else {}
        return {"special_types": list(self.config.inspect.special_types), "groups": groups, "votes": votes}

    def subclass_vote(self, payload: Any) -> dict[str, Any]:
        from .special import clean_label

        if not isinstance(payload, dict):
            raise InspectError("a subclass name is a JSON object {expert, subcluster, label}")
        expert = clean_expert(payload.get("expert"))
        sub = payload.get("subcluster")
        known = {e["subcluster"] for m in self._subclass_manifests() for e in m.get("subclusters", [])}
        if not isinstance(sub, str) or sub not in known:
            raise InspectError(f"there is no subclass {_short(sub)} in this run (run `skymorph subdivide` "
                               "first)")
        label = clean_label(payload.get("label"), list(self.config.inspect.special_types))
        store = self._subclass_store()
        row = store.cast(expert, sub, label)
        return {"ok": True, "vote": row, "votes": store.votes_of(expert)}

    def subclass_png(self, folder: str, name: str) -> bytes:
        for m in self._subclass_manifests():
            if m["folder"] == folder and any(e["png"].rsplit("/", 1)[-1] == name for e in m["subclusters"]):
                return (self.run.path / "subdivide" / folder / name).read_bytes()
        raise KeyError(name)
