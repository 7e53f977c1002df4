"""Inspect: montages of each cluster, expert voting in the browser, and merging the votes.

The paper's experts look at 100 galaxies drawn at random from each consensus
cluster and name the cluster SPH (spherical), ETD (early-type disk), LTD
(late-type disk), IRR (irregular) or UNC (unclassified); a cluster takes a type
where at least two of the three experts agree.  This module provides the three
steps of that work:

``montage``
    For each consensus cluster, ``per_cluster`` members drawn at random (seeded,
    see :func:`sample_members`) as a grid PNG labelled with the cluster id and
    size, plus an HTML gallery, in ``RUN_DIR/inspection/``.
``serve``
    A local web application in which each expert enters a name, goes through
    the montages (a click on a thumbnail shows that galaxy larger) and picks a
    type per cluster.  Every vote is written to ``RUN_DIR/inspection/votes.csv``
    the moment it is cast.
``merge``
    Votes -> one type per cluster -> ``morph_type`` in the catalog, and the
    number of galaxies per type (the paper's Table 2).

Display stretch (montages and single galaxies alike), per stamp: the median
of the stamp is subtracted as the background, the ``stretch_percentile``-th
percentile ``s`` of the result is the white point, and pixels are shown as
``asinh(x / b) / asinh(s / b)`` clipped to [0, 1], where the softening
``b = max(asinh_softening * s, stretch_noise_sigmas * sigma)`` and ``sigma`` is
the stamp's noise (1.4826 x MAD).  The stretch is linear below ``b`` and
logarithmic above, lifting faint outskirts without turning the noise of faint
stamps into white speckle.  Scaling each stamp on its own lets a faint galaxy
be seen beside a bright one: the montage shows shapes, not relative fluxes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import html
import io
import json
import logging
import math
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

from ..config import Config, InspectConfig
from ..io.rundir import RunDir, RunDirError

__all__ = [
    "montage", "make_server", "serve", "merge", "sample_members", "consensus_labels",
    "clustering_fingerprint", "stretch", "read_votes", "type_counts", "VoteStore",
    "InspectionServer", "InspectError", "TYPE_NAMES", "VOTE_COLUMNS",
]

log = logging.getLogger(__name__)

TYPE_NAMES = {
    "SPH": "spherical",
    "ETD": "early-type disk",
    "LTD": "late-type disk",
    "IRR": "irregular",
    "UNC": "unclassified",
}
VOTE_COLUMNS = ["expert", "cluster", "type", "time", "clustering"]
"""Columns of ``votes.csv``; ``clustering`` is the fingerprint of the clustering the
montages showed, so votes cast on an older clustering are never applied to a new one."""

HEADER_PX = 36
GAP_PX = 2
MAX_EXPERT_NAME = 80


class InspectError(ValueError):
    """Inputs of the inspection step are unusable (no consensus clusters, bad vote file...)."""


# --- sampling and display ---------------------------------------------------------------


def consensus_labels(catalog: pd.DataFrame) -> np.ndarray:
    """The consensus cluster of every catalog row, -1 where the three clusterings disagree.

    Raises
    ------
    InspectError
        If the catalog lacks the ``cluster`` / ``consensus`` columns.
    """
    missing = [c for c in ("id", "cluster", "consensus") if c not in catalog.columns]
    if missing:
        raise InspectError(
            f"the catalog has no {', '.join(missing)} column(s) (it has: {', '.join(catalog.columns)}); "
            "run `skymorph cluster RUN_DIR` first"
        )
    labels = pd.to_numeric(catalog["cluster"], errors="coerce").fillna(-1).to_numpy(np.int64)
    keep = catalog["consensus"].fillna(False).to_numpy(bool)
    return np.where(keep & (labels >= 0), labels, -1)


def clustering_fingerprint(catalog: pd.DataFrame) -> str:
    """Short hash of the ids and consensus labels: changes whenever the clustering does."""
    labels = consensus_labels(catalog)
    digest = hashlib.sha256()
    digest.update("\n".join(catalog["id"].astype(str)).encode())
    digest.update(labels.astype("<i8").tobytes())
    return digest.hexdigest()[:12]


def sample_members(labels: np.ndarray, per_cluster: int, seed: int) -> dict[int, np.ndarray]:
    """Draw up to ``per_cluster`` members of each cluster at random.

    Each cluster's draw uses its own generator seeded by ``(seed, cluster)``, so
    it does not change when other clusters do.  The montages and the simulated
    inspection of :func:`skymorph.stages.evaluate.score_labels` both use this function,
    so they look at the same galaxies.

    Parameters
    ----------
    labels : ndarray of int
        Cluster of every galaxy; negative values (rejected galaxies) are skipped.
    per_cluster : int
        Members drawn per cluster (all of them when the cluster is smaller).
    seed : int
        Seed of the draw.

    Returns
    -------
    dict of int to ndarray
        Cluster id -> positions (into ``labels``) of the drawn members, in draw order.
    """
    labels = np.asarray(labels)
    if per_cluster < 1:
        raise InspectError(f"per_cluster must be at least 1 (got {per_cluster})")
    out: dict[int, np.ndarray] = {}
    for cluster in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == cluster)
        rng = np.random.default_rng([int(seed), int(cluster)])
        take = min(per_cluster, members.size)
        out[int(cluster)] = members[rng.choice(members.size, size=take, replace=False)]
    return out


def stretch(image: np.ndarray, percentile: float = 99.5, softening: float = 0.05,
            noise_sigmas: float = 2.0) -> np.ndarray:
    """Per-stamp asinh display stretch to [0, 1] (see the module docstring).

    Parameters
    ----------
    image : ndarray
        2-D image; NaNs are shown as the background.
    percentile : float
        Percentile ``s`` of the background-subtracted pixels that maps to 1.
    softening : float
        ``a``: the stretch is linear below ``max(a s, noise_sigmas sigma)``.
    noise_sigmas : float
        Lower bound of the linear range in units of the stamp's noise ``sigma``
        (1.4826 x the median absolute deviation), so that faint, noisy stamps
        do not turn their noise into white speckle.

    Returns
    -------
    ndarray
        float32 image in [0, 1].
    """
    data = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, np.float32)
    data = data - np.median(data[finite])
    sigma = 1.4826 * np.median(np.abs(data[finite]))
    scale = np.percentile(data[finite], percentile)
    if not scale > 0:
        scale = np.max(data[finite])
    if not scale > 0:
        return np.zeros(data.shape, np.float32)
    soft = max(softening * scale, noise_sigmas * sigma)
    out = np.arcsinh(data / soft) / np.arcsinh(scale / soft)
    return np.clip(np.where(finite, out, 0.0), 0.0, 1.0).astype(np.float32)


def _to_png(image01: np.ndarray, size: int | None = None) -> bytes:
    from PIL import Image

    img = Image.fromarray(np.round(image01 * 255).astype(np.uint8), mode="L")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _geometry(n_shown: int, cfg: InspectConfig) -> dict[str, int]:
    cols = max(1, min(cfg.grid_cols, n_shown))
    rows = max(1, math.ceil(n_shown / cols))
    cell = cfg.thumb_px
    return {
        "cols": cols, "rows": rows, "cell": cell, "gap": GAP_PX, "header": HEADER_PX,
        # at least four cells wide, so that the title of a small cluster is not cut
        "width": max(cols, min(cfg.grid_cols, 4)) * cell + (cols + 1) * GAP_PX,
        "height": HEADER_PX + rows * cell + (rows + 1) * GAP_PX,
    }


def _cell_origin(i: int, geom: dict[str, int]) -> tuple[int, int]:
    row, col = divmod(i, geom["cols"])
    step = geom["cell"] + geom["gap"]
    return geom["gap"] + col * step, geom["header"] + geom["gap"] + row * step


def _render_montage(images: np.ndarray, title: str, cfg: InspectConfig) -> tuple[Any, dict[str, int]]:
    from PIL import Image, ImageDraw, ImageFont

    geom = _geometry(len(images), cfg)
    canvas = Image.new("L", (geom["width"], geom["height"]), color=60)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, geom["width"], geom["header"]], fill=20)
    font = ImageFont.load_default(size=20)
    draw.text((8, 7), title, fill=235, font=font)
    for i, image in enumerate(images):
        shown = stretch(image, cfg.stretch_percentile, cfg.asinh_softening, cfg.stretch_noise_sigmas)
        thumb = Image.fromarray(np.round(shown * 255).astype(np.uint8), mode="L")
        if thumb.size != (geom["cell"], geom["cell"]):
            thumb = thumb.resize((geom["cell"], geom["cell"]), Image.Resampling.LANCZOS)
        canvas.paste(thumb, _cell_origin(i, geom))
    return canvas, geom


# --- montages -------------------------------------------------------------------------


def _inspection_dir(run: RunDir) -> Path:
    path = run.path / "inspection"
    path.mkdir(exist_ok=True)
    return path


def _stamp_index(catalog: pd.DataFrame) -> np.ndarray:
    if "index" in catalog.columns:
        return catalog["index"].to_numpy(np.int64)
    return np.arange(len(catalog))


def _manifest_path(run: RunDir) -> Path:
    return run.path / "inspection" / "montages.json"


def load_manifest(run_dir: str | os.PathLike | RunDir) -> dict[str, Any]:
    """The montage manifest (clusters, sampled members and grid geometry).

    Raises
    ------
    RunDirError
        If the montages have not been drawn.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    path = _manifest_path(run)
    if not path.exists():
        raise RunDirError(f"{run.path} has no montages yet; run `skymorph inspect montage {run.path}`")
    return json.loads(path.read_text())


def montage(run_dir: str | os.PathLike | RunDir, config: Config | None = None,
            progress: bool = True) -> RunDir:
    """Draw one montage per consensus cluster and an HTML gallery of them.

    Writes ``RUN_DIR/inspection/montages/cluster_NNN.png`` (a ``grid_cols``-wide
    grid of up to ``per_cluster`` members drawn by :func:`sample_members`, with
    the per-stamp asinh stretch of :func:`stretch`), ``montages.json`` (which
    galaxy is in which cell) and ``index.html`` (the gallery).  Nothing is redrawn
    when the clustering and the montage settings are unchanged.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory with a catalog (``skymorph cluster``).
    config : Config, optional
        Settings (the ``inspect`` section); defaults to ``Config()``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    RunDir

    Raises
    ------
    InspectError
        If no galaxy is in a consensus cluster.
    RunDirError
        If the run has no catalog or no image array.
    """
    from tqdm.auto import tqdm

    config = config or Config()
    cfg = config.inspect
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    catalog = run.catalog()
    labels = consensus_labels(catalog)
    clustering = clustering_fingerprint(catalog)
    settings = {k: getattr(cfg, k) for k in ("per_cluster", "seed", "grid_cols", "thumb_px", "array",
                                             "stretch_percentile", "asinh_softening",
                                             "stretch_noise_sigmas")}
    upstream = ["ingest"] + (["denoise"] if cfg.array == "denoised" else [])
    fp = run.fingerprint("montage", config, [], upstream=upstream,
                         extra={"clustering": clustering, **settings})
    out = _inspection_dir(run)
    if run.is_current("montage", fp) and _manifest_path(run).exists():
        manifest = load_manifest(run)
        if all((out / c["png"]).exists() for c in manifest["clusters"]):
            log.info("montage: clustering and settings unchanged, reusing %s", out)
            return run
    if not (labels >= 0).any():
        raise InspectError(
            f"no galaxy of {run.path} is in a consensus cluster (all {len(labels)} have cluster = -1); "
            "nothing to inspect"
        )
    if cfg.array not in ("stamps", "denoised"):
        raise InspectError(f"inspect.array must be 'stamps' or 'denoised' (got {cfg.array!r})")
    run.invalidate("montage")
    run.record_config(config)
    images = run.open_array(cfg.array)
    stamp_index = _stamp_index(catalog)
    if stamp_index.size and stamp_index.max() >= images.shape[0]:
        raise RunDirError(
            f"the catalog refers to stamp {stamp_index.max()} but {cfg.array} holds {images.shape[0]}; "
            "re-run `skymorph cluster` on this run directory"
        )
    samples = sample_members(labels, cfg.per_cluster, cfg.seed)
    sizes = Counter(labels[labels >= 0].tolist())
    mdir = out / "montages"
    mdir.mkdir(exist_ok=True)
    for old in mdir.glob("cluster_*.png"):
        old.unlink()
    ids = catalog["id"].astype(str).to_numpy()
    # one sorted read of every sampled stamp: random members of every cluster touch most
    # chunks, so reading cluster by cluster would decompress the whole array once per cluster
    wanted = np.unique(np.concatenate([stamp_index[rows] for rows in samples.values()]))
    pixels = np.asarray(images.oindex[wanted], dtype=np.float32)
    entries = []
    for cluster, rows in tqdm(samples.items(), desc="montage", unit="cluster", disable=not progress):
        stamps_idx = stamp_index[rows]
        block = pixels[np.searchsorted(wanted, stamps_idx)]
        title = f"cluster {cluster}  |  {sizes[cluster]} galaxies  |  {len(rows)} shown"
        canvas, geom = _render_montage(block, title, cfg)
        name = f"montages/cluster_{cluster:03d}.png"
        tmp = out / f".{cluster}.png.tmp"
        canvas.save(tmp, format="PNG")
        os.replace(tmp, out / name)
        entries.append({
            "cluster": cluster, "size": int(sizes[cluster]), "n_shown": len(rows), "png": name,
            "rows": rows.tolist(), "stamp_index": stamps_idx.tolist(), "ids": ids[rows].tolist(),
            "geometry": geom,
        })
    manifest = {"clustering": clustering, "array": cfg.array, "n_galaxies": len(catalog),
                "n_consensus": int((labels >= 0).sum()), **settings, "clusters": entries}
    tmp = out / ".montages.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, _manifest_path(run))
    (out / "index.html").write_text(_gallery_html(run, manifest))
    run.mark_done("montage", fp, n_clusters=len(entries), n_consensus=manifest["n_consensus"])
    return run


def _gallery_html(run: RunDir, manifest: dict[str, Any]) -> str:
    template = _template("gallery.html")
    items = []
    for c in manifest["clusters"]:
        items.append(
            f'<section id="cluster-{c["cluster"]}"><h2>Cluster {c["cluster"]} '
            f'<small>{c["size"]} galaxies, {c["n_shown"]} shown</small></h2>'
            f'<img src="{html.escape(c["png"])}" alt="montage of cluster {c["cluster"]}" '
            'loading="lazy"></section>'
        )
    toc = " ".join(f'<a href="#cluster-{c["cluster"]}">{c["cluster"]}</a>' for c in manifest["clusters"])
    return (template.replace("{{title}}", html.escape(run.path.name))
            .replace("{{summary}}", html.escape(
                f'{len(manifest["clusters"])} consensus clusters, {manifest["n_consensus"]} of '
                f'{manifest["n_galaxies"]} galaxies kept; up to {manifest["per_cluster"]} random members '
                f'per cluster (seed {manifest["seed"]}), per-stamp asinh stretch.'))
            .replace("{{toc}}", toc).replace("{{clusters}}", "\n".join(items)))


def _template(name: str) -> str:
    return resources.files("skymorph.inspection").joinpath("templates", name).read_text(encoding="utf-8")


# --- votes ------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _clean_expert(name: Any) -> str:
    if not isinstance(name, str):
        raise InspectError("the expert name must be text")
    name = " ".join(name.split())
    if not name:
        raise InspectError("enter your name before voting")
    if len(name) > MAX_EXPERT_NAME:
        raise InspectError(f"the expert name is longer than {MAX_EXPERT_NAME} characters")
    if any(ord(ch) < 32 for ch in name):
        raise InspectError("the expert name contains control characters")
    return name


class VoteStore:
    """The votes file, safe against concurrent writers and crashes.

    Every vote rewrites the whole file to a temporary file and renames it over
    ``votes.csv`` (``os.replace`` is atomic), under a thread lock and an
    exclusive ``fcntl`` lock on a side file, so two experts voting at once (in
    one server or in two) never interleave and a crash leaves either the old or
    the new file, never half of one.  The file is read back on every request, so
    a restarted server shows every vote cast before.

    An expert is identified by the name, case and surrounding blanks ignored.
    """

    def __init__(self, path: str | os.PathLike, clustering: str = "") -> None:
        self.path = Path(path)
        self.clustering = clustering
        self._lock = threading.Lock()
        self._lock_path = self.path.with_name(f".{self.path.name}.lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._lock_path, "a") as fh:
                try:
                    import fcntl
                except ImportError:  # pragma: no cover - not POSIX: the thread lock still holds
                    fcntl = None
                if fcntl is not None:
                    fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    if fcntl is not None:
                        fcntl.flock(fh, fcntl.LOCK_UN)

    def rows(self) -> list[dict[str, str]]:
        """Every row of the file (all experts, all clusterings)."""
        if not self.path.exists():
            return []
        with open(self.path, newline="", encoding="utf-8") as fh:
            return [{k: (row.get(k) or "") for k in VOTE_COLUMNS} for row in csv.DictReader(fh)]

    def _write(self, rows: list[dict[str, str]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=VOTE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def cast(self, expert: str, cluster: int, type_: str) -> dict[str, str]:
        """Record (or replace) ``expert``'s vote for ``cluster``; returns the stored row."""
        expert = _clean_expert(expert)
        row = {"expert": expert, "cluster": str(int(cluster)), "type": type_, "time": _now(),
               "clustering": self.clustering}
        key = (expert.casefold(), row["cluster"], self.clustering)
        with self._locked():
            rows = [r for r in self.rows()
                    if (r["expert"].casefold(), r["cluster"], r["clustering"]) != key]
            rows.append(row)
            rows.sort(key=lambda r: (r["clustering"], r["expert"].casefold(), int(r["cluster"] or -1)))
            self._write(rows)
        return row

    def votes_of(self, expert: str) -> dict[int, str]:
        """``{cluster: type}`` cast by ``expert`` on the current clustering."""
        key = _clean_expert(expert).casefold()
        return {int(r["cluster"]): r["type"] for r in self.rows()
                if r["expert"].casefold() == key and r["clustering"] in (self.clustering, "")}


# --- the web application ----------------------------------------------------------------


class _App:
    """What the request handlers share: the run, its montages and the vote store."""

    def __init__(self, run: RunDir, config: Config) -> None:
        self.run = run
        self.config = config
        self.manifest = load_manifest(run)
        self.types = list(config.inspect.types)
        self.store = VoteStore(run.path / "inspection" / "votes.csv", self.manifest["clustering"])
        self.clusters = {c["cluster"]: c for c in self.manifest["clusters"]}
        self.images = run.open_array(self.manifest["array"])
        self.ids_by_stamp = {s: i for c in self.manifest["clusters"]
                             for s, i in zip(c["stamp_index"], c["ids"], strict=True)}
        self._read_lock = threading.Lock()

    def state(self, expert: str | None) -> dict[str, Any]:
        clusters = [{
            "cluster": c["cluster"], "size": c["size"], "n_shown": c["n_shown"],
            "png": f"/montage/{c['cluster']}.png", "geometry": c["geometry"],
            "cells": [{"stamp": s, "id": i} for s, i in zip(c["stamp_index"], c["ids"], strict=True)],
        } for c in self.manifest["clusters"]]
        votes = self.store.votes_of(expert) if expert else {}
        return {
            "run": self.run.path.name,
            "types": [{"code": t, "name": TYPE_NAMES.get(t, t)} for t in self.types],
            "clusters": clusters,
            "votes": {str(k): v for k, v in votes.items() if k in self.clusters},
        }

    def vote(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise InspectError("a vote is a JSON object {expert, cluster, type}")
        expert = _clean_expert(payload.get("expert"))
        try:
            cluster = int(payload.get("cluster"))
        except (TypeError, ValueError):
            raise InspectError(f"cluster must be an integer (got {payload.get('cluster')!r})") from None
        if cluster not in self.clusters:
            raise InspectError(f"there is no consensus cluster {cluster} in this run")
        type_ = str(payload.get("type", "")).strip().upper()
        if type_ not in self.types:
            raise InspectError(f"type must be one of {', '.join(self.types)} (got {payload.get('type')!r})")
        row = self.store.cast(expert, cluster, type_)
        votes = self.store.votes_of(expert)
        return {"ok": True, "vote": row,
                "votes": {str(k): v for k, v in votes.items() if k in self.clusters}}

    def galaxy_png(self, stamp: int) -> bytes:
        if stamp not in self.ids_by_stamp:
            raise KeyError(stamp)
        cfg = self.config.inspect
        with self._read_lock:
            image = np.asarray(self.images[stamp])
        return _to_png(stretch(image, cfg.stretch_percentile, cfg.asinh_softening,
                               cfg.stretch_noise_sigmas))


_STATIC = {"/": ("app.html", "text/html; charset=utf-8"),
           "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/static/app.css": ("app.css", "text/css; charset=utf-8")}


class _Handler(BaseHTTPRequestHandler):
    server: InspectionServer
    server_version = "skymorph-inspect"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        # votes and state change at every click; images do not
        cache = "no-store" if ctype.startswith("application/json") else "max-age=60"
        self.send_header("Cache-Control", cache)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        app = self.server.app
        url = urlparse(self.path)
        try:
            if url.path in _STATIC:
                name, ctype = _STATIC[url.path]
                self._send(200, _template(name).encode(), ctype)
            elif url.path == "/api/state":
                expert = parse_qs(url.query).get("expert", [""])[0]
                self._json(200, app.state(expert or None))
            elif m := re.fullmatch(r"/montage/(\d+)\.png", url.path):
                entry = app.clusters.get(int(m.group(1)))
                if entry is None:
                    self._json(404, {"error": "no such cluster"})
                    return
                self._send(200, (app.run.path / "inspection" / entry["png"]).read_bytes(), "image/png")
            elif m := re.fullmatch(r"/galaxy/(\d+)\.png", url.path):
                try:
                    body = app.galaxy_png(int(m.group(1)))
                except KeyError:
                    self._json(404, {"error": "no such galaxy in the montages"})
                    return
                self._send(200, body, "image/png")
            else:
                self._json(404, {"error": f"not found: {url.path}"})
        except InspectError as exc:
            self._json(400, {"error": str(exc)})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if urlparse(self.path).path != "/api/vote":
            self._json(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= 10_000:
                raise InspectError("a vote must be a JSON body of at most 10 kB")
            try:
                payload = json.loads(self.rfile.read(length))
            except json.JSONDecodeError:
                raise InspectError("the vote is not valid JSON") from None
            self._json(200, self.server.app.vote(payload))
        except InspectError as exc:
            self._json(400, {"error": str(exc)})
        except OSError as exc:  # the disk refused the write: the expert must know it was not saved
            log.error("vote not saved: %s", exc)
            self._json(500, {"error": f"the vote could not be saved: {exc}"})


class InspectionServer(ThreadingHTTPServer):
    """The voting web application (a :class:`~http.server.ThreadingHTTPServer`).

    ``server_address`` holds the host and the port actually bound (useful with
    port 0); ``url`` is the address to open in a browser.
    """

    daemon_threads = True
    app: _App

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(run_dir: str | os.PathLike | RunDir, config: Config | None = None,
                host: str | None = None, port: int | None = None,
                progress: bool = False) -> InspectionServer:
    """Build (but do not start) the voting web application of a run.

    Draws the montages first when they are missing or stale.  Start it with
    ``server.serve_forever()`` (in a thread, for tests and notebooks) and stop
    it with ``server.shutdown(); server.server_close()``.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory with a catalog.
    config : Config, optional
        Settings (the ``inspect`` section).
    host, port : optional
        Override ``inspect.host`` / ``inspect.port``; port 0 picks a free port.
    progress : bool
        Progress bar while drawing montages.

    Returns
    -------
    InspectionServer
    """
    config = config or Config()
    run = montage(run_dir, config, progress=progress)
    server = InspectionServer((host or config.inspect.host,
                               config.inspect.port if port is None else port), _Handler)
    server.app = _App(run, config)
    return server


def serve(run_dir: str | os.PathLike | RunDir, config: Config | None = None,
          host: str | None = None, port: int | None = None, open_browser: bool = False) -> None:
    """Run the voting web application until interrupted (Ctrl-C).

    Parameters are those of :func:`make_server`; ``open_browser`` opens the page
    in the default browser.
    """
    server = make_server(run_dir, config, host, port, progress=True)
    print(f"skymorph inspect: voting on {len(server.app.clusters)} clusters at {server.url} "
          f"(votes go to {server.app.store.path}); press Ctrl-C to stop", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped; every vote cast is in", server.app.store.path)
    finally:
        server.server_close()


# --- merging votes into types -------------------------------------------------------------


def read_votes(paths: Sequence[str | os.PathLike], types: Sequence[str]) -> pd.DataFrame:
    """Read and check vote files (``expert``, ``cluster``, ``type`` [, ``time``, ``clustering``]).

    When one expert voted on one cluster more than once (across files), the
    latest vote (by ``time``, else the later row) is kept.

    Raises
    ------
    InspectError
        If a file is missing, lacks a column, or holds an unknown type or a
        non-integer cluster.
    """
    frames = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InspectError(f"vote file {path} does not exist")
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in ("expert", "cluster", "type") if c not in table.columns]
        if missing:
            raise InspectError(f"vote file {path} lacks column(s) {', '.join(missing)}; "
                               f"it has: {', '.join(table.columns)}")
        for col in ("time", "clustering"):
            if col not in table.columns:
                table[col] = ""
        table = table[VOTE_COLUMNS].copy()
        table["expert"] = table["expert"].map(lambda s: " ".join(s.split()))
        table["type"] = table["type"].str.strip().str.upper()
        bad = sorted(set(table["type"]) - set(types))
        if bad:
            raise InspectError(f"vote file {path} has unknown type(s) {', '.join(map(repr, bad))}; "
                               f"valid types: {', '.join(types)}")
        cluster = pd.to_numeric(table["cluster"], errors="coerce")
        if cluster.isna().any() or (cluster % 1 != 0).any():
            line = int(np.flatnonzero(cluster.isna() | (cluster % 1 != 0))[0]) + 2
            raise InspectError(f"vote file {path}, line {line}: cluster {table['cluster'].iloc[line - 2]!r} "
                               "is not an integer")
        table["cluster"] = cluster.astype(np.int64)
        table = table[table["expert"] != ""]
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=VOTE_COLUMNS)
    votes = pd.concat(frames, ignore_index=True)
    votes["_key"] = votes["expert"].str.casefold()
    votes["_order"] = np.arange(len(votes))
    votes = votes.sort_values(["time", "_order"]).drop_duplicates(["_key", "cluster"], keep="last")
    return votes.drop(columns=["_key", "_order"]).sort_values(["cluster", "expert"]).reset_index(drop=True)


def _decide(types: list[str], min_agree: int, fallback: str) -> tuple[str, str, int]:
    """Type, flag and agreeing count of one cluster from its experts' votes."""
    if not types:
        return fallback, "no_votes", 0
    counts = Counter(types).most_common()
    top, n_top = counts[0]
    if n_top < min_agree:
        return fallback, "no_majority", n_top
    if len(counts) > 1 and counts[1][1] == n_top:
        return fallback, "tie", n_top
    return top, "agreed", n_top


def type_counts(catalog: pd.DataFrame, types: Sequence[str]) -> pd.DataFrame:
    """Galaxies (and clusters) per morphology type among the consensus galaxies (paper Table 2)."""
    labels = consensus_labels(catalog)
    kept = catalog[labels >= 0]
    mtype = kept["morph_type"].fillna("").astype(str) if "morph_type" in kept else pd.Series("", kept.index)
    rows = []
    for t in types:
        sel = mtype == t
        rows.append({"type": t, "n_clusters": int(pd.unique(labels[labels >= 0][sel.to_numpy()]).size),
                     "n_galaxies": int(sel.sum())})
    table = pd.DataFrame(rows)
    total = max(len(kept), 1)
    table["fraction"] = table["n_galaxies"] / total
    table.loc[len(table)] = {"type": "total", "n_clusters": int(table["n_clusters"].sum()),
                             "n_galaxies": len(kept), "fraction": len(kept) / total}
    return table


def merge(run_dir: str | os.PathLike | RunDir, votes: Sequence[str | os.PathLike] | None = None,
          config: Config | None = None, min_agree: int | None = None) -> pd.DataFrame:
    """Turn the experts' votes into one type per cluster and write ``morph_type``.

    A cluster takes the type named by at least ``min_agree`` experts (and by more
    experts than any other type); otherwise it gets the last of ``inspect.types``
    (UNC) with ``type_flag`` saying why (``no_majority``, ``tie`` or
    ``no_votes``).  The catalog gains, for consensus galaxies, ``morph_type``,
    ``type_flag`` and ``type_agreement`` (fraction of the cluster's experts who
    named the chosen type); other galaxies get ``""`` / ``""`` / NaN.

    Votes cast on montages of a different clustering (the ``clustering`` column
    does not match the catalog) are left out, with a warning.

    Writes ``RUN_DIR/inspection/cluster_types.csv`` (one row per cluster) and
    ``type_counts.csv`` / ``type_counts.json`` (galaxies per type, the paper's
    Table 2).

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory with a catalog.
    votes : sequence of paths, optional
        Vote files; ``RUN_DIR/inspection/votes.csv`` by default.
    config : Config, optional
        Settings (``inspect.min_agree``, ``inspect.types``).
    min_agree : int, optional
        Overrides ``inspect.min_agree``.

    Returns
    -------
    DataFrame
        One row per consensus cluster: ``cluster``, ``n_galaxies``, ``morph_type``,
        ``type_flag``, ``n_experts``, ``n_agree``, ``type_agreement``, ``votes``.
    """
    config = config or Config()
    cfg = config.inspect
    min_agree = cfg.min_agree if min_agree is None else int(min_agree)
    if min_agree < 1:
        raise InspectError(f"min_agree must be at least 1 (got {min_agree})")
    types = list(cfg.types)
    fallback = types[-1]
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    catalog = run.catalog()
    labels = consensus_labels(catalog)
    clustering = clustering_fingerprint(catalog)
    if votes is None:
        default = run.path / "inspection" / "votes.csv"
        if not default.exists():
            raise InspectError(f"no votes yet ({default} does not exist); experts vote with "
                               f"`skymorph inspect serve {run.path}`, or pass --votes FILE")
        votes = [default]
    table = read_votes(votes, types)
    stale = (table["clustering"] != "") & (table["clustering"] != clustering)
    if stale.any():
        log.warning("%d vote(s) were cast on montages of a different clustering and are left out; "
                    "re-vote on the current montages", int(stale.sum()))
    table = table[~stale]
    clusters = sorted(set(labels[labels >= 0].tolist()))
    unknown = ~table["cluster"].isin(clusters)
    if unknown.any():
        log.warning("%d vote(s) name clusters that are not consensus clusters of this run (%s); left out",
                    int(unknown.sum()), ", ".join(map(str, sorted(set(table.loc[unknown, "cluster"])))))
    table = table[~unknown]
    sizes = Counter(labels[labels >= 0].tolist())
    rows = []
    for cluster in clusters:
        cast = table.loc[table["cluster"] == cluster, "type"].tolist()
        mtype, flag, n_agree = _decide(cast, min_agree, fallback)
        rows.append({
            "cluster": cluster, "n_galaxies": sizes[cluster], "morph_type": mtype, "type_flag": flag,
            "n_experts": len(cast), "n_agree": n_agree,
            "type_agreement": n_agree / len(cast) if cast else float("nan"),
            "votes": ";".join(f"{t}:{n}" for t, n in sorted(Counter(cast).items())),
        })
    result = pd.DataFrame(rows)
    by_cluster = result.set_index("cluster")
    kept = labels >= 0
    mtype = np.full(len(catalog), "", dtype=object)
    flag = np.full(len(catalog), "", dtype=object)
    agreement = np.full(len(catalog), np.nan)
    mtype[kept] = by_cluster.loc[labels[kept], "morph_type"].to_numpy()
    flag[kept] = by_cluster.loc[labels[kept], "type_flag"].to_numpy()
    agreement[kept] = by_cluster.loc[labels[kept], "type_agreement"].to_numpy()
    updated = run.update_catalog(pd.DataFrame({
        "id": catalog["id"], "morph_type": mtype, "type_flag": flag, "type_agreement": agreement,
    }))
    out = _inspection_dir(run)
    result.to_csv(out / "cluster_types.csv", index=False)
    counts = type_counts(updated, types)
    counts.to_csv(out / "type_counts.csv", index=False)
    (out / "type_counts.json").write_text(json.dumps({
        "min_agree": min_agree, "n_votes": len(table),
        "n_experts": int(table["expert"].str.casefold().nunique()),
        "clustering": clustering, "counts": counts.to_dict(orient="records"),
        "clusters": json.loads(result.to_json(orient="records")),
    }, indent=2))
    fp = run.fingerprint("inspect", config, [], upstream=[], extra={
        "clustering": clustering, "min_agree": min_agree,
        "votes": hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()[:16]})
    run.mark_done("inspect", fp, n_votes=len(table),
                  **{f"n_{r['type']}": int(r["n_galaxies"]) for r in counts.to_dict(orient="records")})
    return result


def format_counts(counts: pd.DataFrame) -> str:
    """The type counts as a small text table."""
    lines = [f"{'type':<8}{'clusters':>9}{'galaxies':>10}{'fraction':>10}"]
    for r in counts.to_dict(orient="records"):
        lines.append(f"{r['type']:<8}{r['n_clusters']:>9}{r['n_galaxies']:>10}{r['fraction']:>10.1%}")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    # cli.py adds these to `skymorph inspect`, where they must precede the action; repeating
    # them on each action lets them follow RUN_DIR too (SUPPRESS: only given flags override)
    s = argparse.SUPPRESS
    group = parser.add_argument_group("settings")
    group.add_argument("--config", metavar="FILE", default=s, help="TOML file of settings")
    group.add_argument("--preset", choices=["default", "paper"], default=s,
                       help="starting settings (default: default)")
    group.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=s,
                       help="override any setting, e.g. --set inspect.seed=1 (repeatable)")
    group.add_argument("-v", "--verbose", action="store_true", default=s, help="log more detail")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``skymorph inspect {montage,serve,merge}``."""
    s = argparse.SUPPRESS
    parser.description = (
        "Visual classification of the consensus clusters (the paper's expert step):\n"
        "  montage  draw a grid of random members per cluster + an HTML gallery\n"
        "  serve    web application where experts name each cluster SPH/ETD/LTD/IRR/UNC\n"
        "  merge    votes -> one type per cluster -> morph_type in the catalog\n\n"
        "Examples:\n"
        "  skymorph inspect montage myrun\n"
        "  skymorph inspect serve myrun --port 8765      # then open http://127.0.0.1:8765/\n"
        "  skymorph inspect merge myrun --min-agree 2\n"
        "  skymorph inspect merge myrun --votes alice.csv --votes bob.csv --votes carol.csv"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("montage", help="montage PNG per consensus cluster and an HTML gallery",
                           description="Draw RUN_DIR/inspection/montages/cluster_NNN.png and index.html.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    p.add_argument("--per-cluster", dest="inspect.per_cluster", type=int, default=s, metavar="N",
                   help="random members shown per cluster (default 100)")
    p.add_argument("--seed", dest="inspect.seed", type=int, default=s, metavar="N",
                   help="seed of the member draw (default 0)")
    p.add_argument("--grid-cols", dest="inspect.grid_cols", type=int, default=s, metavar="N",
                   help="thumbnails per montage row (default 10)")
    p.add_argument("--thumb-px", dest="inspect.thumb_px", type=int, default=s, metavar="PX",
                   help="thumbnail side in pixels (default 100)")
    p.add_argument("--array", dest="inspect.array", choices=["stamps", "denoised"], default=s,
                   help="images to show (default stamps)")
    _settings_flags(p)

    p = actions.add_parser("serve", help="browser application for the experts' votes",
                           description="Serve the voting application; every vote goes to "
                                       "RUN_DIR/inspection/votes.csv at once. Draws the montages "
                                       "first if needed.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    p.add_argument("--host", dest="inspect.host", default=s, metavar="HOST",
                   help="address to listen on (default 127.0.0.1: this machine only; "
                        "0.0.0.0 lets colleagues on the network vote)")
    p.add_argument("--port", dest="inspect.port", type=int, default=s, metavar="PORT",
                   help="port to listen on (default 8765; 0 picks a free one)")
    p.add_argument("--open", dest="open_browser", action="store_true",
                   help="open the page in the default web browser")
    _settings_flags(p)

    p = actions.add_parser("merge", help="votes -> morphology type per cluster -> catalog",
                           description="A cluster takes a type where at least --min-agree experts "
                                       "agree, else UNC with a type_flag; writes morph_type to the "
                                       "catalog and the galaxies per type (Table 2) to "
                                       "RUN_DIR/inspection/type_counts.{csv,json}.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    p.add_argument("--votes", metavar="FILE", action="append", default=None,
                   help="vote file(s) with expert, cluster, type columns (repeatable; "
                        "default RUN_DIR/inspection/votes.csv)")
    p.add_argument("--min-agree", dest="inspect.min_agree", type=int, default=s, metavar="N",
                   help="experts who must agree on a type (default 2)")
    _settings_flags(p)

    from .auto import add_auto_parser  # `skymorph inspect auto` (automatic voter, inspection/auto.py)
    add_auto_parser(actions, _settings_flags)


def main(args: argparse.Namespace, config: Config) -> int:
    """Run ``skymorph inspect ACTION``."""
    try:
        if args.action == "montage":
            run = montage(args.run_dir, config)
            manifest = load_manifest(run)
            out = run.path / "inspection"
            print(f"{len(manifest['clusters'])} montages ({manifest['n_consensus']} consensus galaxies) in "
                  f"{out / 'montages'}; gallery: {out / 'index.html'}")
        elif args.action == "serve":
            serve(args.run_dir, config, open_browser=args.open_browser)
        elif args.action == "merge":
            result = merge(args.run_dir, args.votes, config)
            run = RunDir(args.run_dir)
            counts = pd.read_csv(run.path / "inspection" / "type_counts.csv")
            flagged = result[result["type_flag"] != "agreed"]
            print(f"{len(result)} clusters typed from {int(result['n_experts'].sum())} votes "
                  f"(min_agree {config.inspect.min_agree}); {len(flagged)} without agreement -> "
                  f"{config.inspect.types[-1]}: {', '.join(map(str, flagged['cluster'])) or 'none'}")
            print(format_counts(counts))
            print(f"morph_type written to {run.path / 'catalog.parquet'}; counts in "
                  f"{run.path / 'inspection' / 'type_counts.csv'}")
        elif args.action == "auto":
            from .auto import main_auto
            return main_auto(args, config)
    except InspectError as exc:
        print(f"skymorph inspect {args.action}: error: {exc}", file=sys.stderr)
        return 1
    return 0
