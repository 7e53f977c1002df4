"""Montages, the voting server and merging votes, on real COSMOS stamps clustered for the test."""

from __future__ import annotations

import csv
import json
import shutil
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skymorph import Config, RunDir, make_server
from skymorph.core.scores import ScoreError
from skymorph.inspection import (
    InspectError,
    VoteStore,
    clustering_fingerprint,
    consensus_labels,
    load_manifest,
    sample_members,
    stretch,
)
from skymorph.stages.inspect import merge, montage


def cluster_catalog(run: RunDir, k: int = 4, seed: int = 0) -> pd.DataFrame:
    """Write a catalog from a real clustering of the run's stamps (PCA of stretched pixels),
    with the cluster stage's columns: K-means, BIRCH and ward mapped to K-means labels by
    plurality, consensus where all three agree."""
    from sklearn.cluster import AgglomerativeClustering, Birch, KMeans
    from sklearn.decomposition import PCA

    stamps = np.asarray(run.open_array("stamps"))
    x = np.stack([stretch(s) for s in stamps]).reshape(len(stamps), -1)
    z = PCA(10, random_state=seed).fit_transform(x)
    km = KMeans(k, n_init=10, random_state=seed).fit_predict(z)

    def to_kmeans(labels: np.ndarray) -> np.ndarray:
        out = np.empty_like(labels)
        for c in np.unique(labels):
            values, counts = np.unique(km[labels == c], return_counts=True)
            out[labels == c] = values[counts.argmax()]
        return out

    birch = to_kmeans(Birch(n_clusters=k).fit_predict(z))
    ward = to_kmeans(AgglomerativeClustering(k).fit_predict(z))
    agree = (km == birch) & (km == ward)
    sources = run.sources()
    catalog = pd.DataFrame({
        "id": sources["id"], "index": sources["index"], "cluster_kmeans": km, "cluster_birch": birch,
        "cluster_agglomerative": ward, "cluster": np.where(agree, km, -1), "consensus": agree,
        "morph_type": "",
    })
    run.write_catalog(catalog)
    return catalog


@pytest.fixture
def clustered_run(cosmos_run, tmp_path) -> RunDir:
    shutil.copytree(cosmos_run.path, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    cluster_catalog(run)
    return run


# --- sampling and stretch -----------------------------------------------------------------


def test_sample_members_is_seeded_and_per_cluster():
    labels = np.array([0] * 30 + [1] * 5 + [-1] * 10 + [2] * 12)
    a = sample_members(labels, 10, seed=3)
    assert a.keys() == {0, 1, 2}
    assert [len(a[c]) for c in (0, 1, 2)] == [10, 5, 10]
    for c, rows in a.items():
        assert (labels[rows] == c).all() and len(set(rows.tolist())) == len(rows)
    b = sample_members(labels, 10, seed=3)
    assert all(np.array_equal(a[c], b[c]) for c in a)
    assert not np.array_equal(sample_members(labels, 10, seed=4)[0], a[0])
    # a change in another cluster does not move this cluster's draw
    other = labels.copy()
    other[30:35] = -1
    assert np.array_equal(sample_members(other, 10, seed=3)[0], a[0])
    # a core function: its own error (a SkymorphError, so the CLI prints one sentence)
    with pytest.raises(ScoreError, match="per_cluster"):
        sample_members(labels, 0, seed=0)


def test_stretch_maps_background_to_black_and_peak_to_white():
    rng = np.random.default_rng(0)
    image = rng.normal(5.0, 1.0, (64, 64))
    yy, xx = np.mgrid[:64, :64]
    image += 400 * np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / 20)
    out = stretch(image, 99.5, 0.05, 2.0)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert out[32, 32] == 1.0
    assert np.median(out[:10, :10]) < 0.05
    profile = out[32, 32:]
    assert (np.diff(profile[:8]) <= 0).all()
    image[0, 0] = np.nan
    assert stretch(image)[0, 0] == 0.0
    assert not stretch(np.full((8, 8), 3.0)).any()
    assert not stretch(np.full((8, 8), np.nan)).any()


# --- montages -------------------------------------------------------------------------------


def test_montage_draws_each_consensus_cluster(clustered_run):
    config = Config().update({"inspect": {"per_cluster": 12, "grid_cols": 5}})
    cfg = config.inspect
    montage(clustered_run, config, progress=False)
    catalog = clustered_run.catalog()
    labels = consensus_labels(catalog)
    manifest = load_manifest(clustered_run)
    clusters = sorted(set(labels[labels >= 0].tolist()))
    assert [c["cluster"] for c in manifest["clusters"]] == clusters
    assert manifest["clustering"] == clustering_fingerprint(catalog)
    stamps = np.asarray(clustered_run.open_array("stamps"))
    expected = sample_members(labels, 12, 0)
    for entry in manifest["clusters"]:
        c = entry["cluster"]
        assert entry["size"] == int((labels == c).sum())
        assert entry["rows"] == expected[c].tolist()
        assert entry["ids"] == catalog["id"].iloc[entry["rows"]].astype(str).tolist()
        png = clustered_run.path / "inspection" / entry["png"]
        image = np.asarray(Image.open(png))
        geom = entry["geometry"]
        assert image.shape == (geom["height"], geom["width"])
        assert geom["cols"] == min(5, entry["n_shown"]) and entry["n_shown"] == min(12, entry["size"])
        # each cell shows exactly its galaxy's stretched stamp (thumbnails are 100 px = stamp size)
        for i, stamp in enumerate(entry["stamp_index"]):
            row, col = divmod(i, geom["cols"])
            x0 = geom["gap"] + col * (geom["cell"] + geom["gap"])
            y0 = geom["header"] + geom["gap"] + row * (geom["cell"] + geom["gap"])
            cell = image[y0:y0 + geom["cell"], x0:x0 + geom["cell"]]
            want = np.round(stretch(stamps[stamp], cfg.stretch_percentile, cfg.asinh_softening,
                                    cfg.stretch_noise_sigmas) * 255).astype(np.uint8)
            assert np.array_equal(cell, want)
    gallery = (clustered_run.path / "inspection" / "index.html").read_text()
    assert all(f"montages/cluster_{c:03d}.png" in gallery for c in clusters)


def test_montage_is_reused_and_redrawn_when_settings_change(clustered_run):
    config = Config().update({"inspect": {"per_cluster": 100}})
    montage(clustered_run, config, progress=False)
    first = load_manifest(clustered_run)
    png = clustered_run.path / "inspection" / first["clusters"][0]["png"]
    stamp = png.stat().st_mtime_ns
    montage(clustered_run, config, progress=False)
    assert png.stat().st_mtime_ns == stamp
    montage(clustered_run, config.update({"inspect": {"per_cluster": 4}}), progress=False)
    assert all(c["n_shown"] <= 4 for c in load_manifest(clustered_run)["clusters"])


def test_montage_without_consensus_is_a_clear_error(clustered_run):
    catalog = clustered_run.catalog()
    catalog["cluster"] = -1
    catalog["consensus"] = False
    clustered_run.write_catalog(catalog)
    with pytest.raises(InspectError, match="no galaxy .* consensus cluster"):
        montage(clustered_run, progress=False)


def test_montage_cli(clustered_run, capsys):
    from skymorph import cli

    assert cli.main(["inspect", "montage", str(clustered_run.path), "--per-cluster", "9"]) == 0
    assert "montages" in capsys.readouterr().out
    assert all(c["n_shown"] <= 9 for c in load_manifest(clustered_run)["clusters"])
    # settings may follow RUN_DIR as well as precede the action
    assert cli.main(["inspect", "montage", str(clustered_run.path), "--set", "inspect.per_cluster=3"]) == 0
    assert max(c["n_shown"] for c in load_manifest(clustered_run)["clusters"]) == 3
    with pytest.raises(SystemExit):
        cli.main(["inspect", "montage", "--help"])
    helptext = capsys.readouterr().out
    assert "--per-cluster" in helptext and "default: 100" in helptext


# --- the voting server ----------------------------------------------------------------------------


class Server:
    """A running voting server on a free port (stopped on exit)."""

    def __init__(self, run: RunDir, config: Config | None = None) -> None:
        self.server = make_server(run, config, port=0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = self.server.url

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    @property
    def token(self) -> str:
        return self.server.token

    def get(self, path: str):
        request = urllib.request.Request(self.url + path.lstrip("/"),
                                         headers={"X-Skymorph-Token": self.token})
        with urllib.request.urlopen(request, timeout=10) as r:
            body = r.read()
            return r.status, (json.loads(body) if r.headers["Content-Type"].startswith("application/json")
                              else body)

    def vote(self, expert: str, cluster, type_: str):
        data = json.dumps({"expert": expert, "cluster": cluster, "type": type_}).encode()
        request = urllib.request.Request(self.url + "api/vote", data=data,
                                         headers={"Content-Type": "application/json",
                                                  "X-Skymorph-Token": self.token})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def read_votes_file(run: RunDir) -> list[dict[str, str]]:
    with open(run.path / "inspection" / "votes.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_server_records_replaces_and_reloads_votes(clustered_run):
    with Server(clustered_run) as s:
        status, state = s.get("/api/state?expert=Ann")
        clusters = [c["cluster"] for c in state["clusters"]]
        assert status == 200 and state["votes"] == {} and len(clusters) >= 2
        assert [t["code"] for t in state["types"]] == ["SPH", "ETD", "LTD", "IRR", "UNC"]
        status, page = s.get("/")
        assert status == 200 and b"app.js" in page
        status, body = s.vote("Ann", clusters[0], "SPH")
        assert status == 200 and body["votes"] == {str(clusters[0]): "SPH"}
        assert [(r["expert"], r["cluster"], r["type"]) for r in read_votes_file(clustered_run)] == [
            ("Ann", str(clusters[0]), "SPH")]
        s.vote(" ann ", clusters[0], "ltd")  # same expert (case and blanks ignored), new mind
        s.vote("Ann", clusters[1], "IRR")
        rows = read_votes_file(clustered_run)
        assert sorted((r["cluster"], r["type"]) for r in rows) == sorted(
            [(str(clusters[0]), "LTD"), (str(clusters[1]), "IRR")])
        # bad votes are refused with a reason and leave the file alone
        assert s.vote("Ann", clusters[0], "BLOB")[0] == 400
        assert s.vote("Ann", 999, "SPH")[0] == 400
        assert s.vote("  ", clusters[0], "SPH")[0] == 400
        assert len(read_votes_file(clustered_run)) == 2
        # single galaxies on demand, as PNG at the stamp's size
        stamp = state["clusters"][0]["cells"][0]["stamp"]
        status, png = s.get(f"/galaxy/{stamp}.png")
        assert status == 200 and Image.open(__import__("io").BytesIO(png)).size == (100, 100)
        with pytest.raises(urllib.error.HTTPError):
            s.get("/galaxy/100000.png")
        status, png = s.get(f"/montage/{clusters[0]}.png")
        assert status == 200 and png[:4] == b"\x89PNG"
    # a new server on the same run shows the earlier votes
    with Server(clustered_run) as s:
        _, state = s.get("/api/state?expert=ANN")
        assert state["votes"] == {str(clusters[0]): "LTD", str(clusters[1]): "IRR"}


def test_concurrent_votes_do_not_corrupt_the_file(clustered_run):
    experts = [f"expert{i}" for i in range(6)]
    types = ["SPH", "ETD", "LTD", "IRR", "UNC"]
    with Server(clustered_run) as s:
        clusters = [c["cluster"] for c in s.get("/api/state")[1]["clusters"]]
        jobs = [(e, c, types[(i + j) % 5]) for i, e in enumerate(experts) for j, c in enumerate(clusters)]
        jobs = jobs * 3  # every vote cast three times, racing with the others
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda job: s.vote(*job), jobs))
    assert all(status == 200 for status, _ in results)
    rows = read_votes_file(clustered_run)
    assert len(rows) == len(experts) * len(clusters)
    assert {(r["expert"], int(r["cluster"]), r["type"]) for r in rows} == set(jobs)


def test_two_stores_on_one_file_do_not_lose_votes(tmp_path):
    # two servers (or processes) on one run: the file lock serialises them
    path = tmp_path / "votes.csv"
    a, b = VoteStore(path, "x"), VoteStore(path, "x")

    def cast(args):
        store, expert, cluster = args
        store.cast(expert, cluster, "SPH")

    jobs = [(a if i % 2 else b, f"e{i % 4}", i // 4) for i in range(80)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(cast, jobs))
    rows = pd.read_csv(path, dtype=str)
    assert len(rows) == 80 and not rows.duplicated(["expert", "cluster"]).any()
    assert not list(tmp_path.glob(".*.tmp"))


# --- merging --------------------------------------------------------------------------------------------


def write_votes(path: Path, rows: list[tuple], clustering: str = "") -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["expert", "cluster", "type", "time", "clustering"])
        for i, (expert, cluster, type_) in enumerate(rows):
            w.writerow([expert, cluster, type_, f"2025-01-01T00:00:{i:02d}", clustering])
    return path


def test_merge_types_clusters_by_majority(clustered_run, tmp_path):
    catalog = clustered_run.catalog()
    labels = consensus_labels(catalog)
    c = sorted(set(labels[labels >= 0].tolist()))
    assert len(c) >= 3, "the test clustering should give at least three consensus clusters"
    votes = write_votes(tmp_path / "v.csv", [
        ("A", c[0], "SPH"), ("B", c[0], "SPH"), ("C", c[0], "ETD"),   # 2 of 3 agree
        ("A", c[1], "SPH"), ("B", c[1], "ETD"), ("C", c[1], "LTD"),   # no majority
    ], clustering_fingerprint(catalog))                                # c[2]: nobody voted
    result = merge(clustered_run, [votes])
    table = result.set_index("cluster")
    assert table.loc[c[0], ["morph_type", "type_flag", "n_agree", "n_experts"]].tolist() == [
        "SPH", "agreed", 2, 3]
    assert table.loc[c[1], ["morph_type", "type_flag"]].tolist() == ["UNC", "no_majority"]
    assert table.loc[c[2], ["morph_type", "type_flag"]].tolist() == ["UNC", "no_votes"]
    assert table.loc[c[0], "type_agreement"] == pytest.approx(2 / 3)
    typed = clustered_run.catalog()
    assert (typed["id"] == catalog["id"]).all()
    assert (typed.loc[labels == c[0], "morph_type"] == "SPH").all()
    assert (typed.loc[labels == c[1], "morph_type"] == "UNC").all()
    assert (typed.loc[labels < 0, "morph_type"] == "NOCONS").all()
    assert (typed.loc[labels < 0, "type_flag"] == "").all()
    counts = pd.read_csv(clustered_run.path / "inspection" / "type_counts.csv").set_index("type")
    assert counts.loc["SPH", "n_galaxies"] == (labels == c[0]).sum()
    assert counts.loc["total", "n_galaxies"] == (labels >= 0).sum()
    assert counts.loc[["SPH", "ETD", "LTD", "IRR", "UNC"], "n_galaxies"].sum() == (labels >= 0).sum()
    saved = json.loads((clustered_run.path / "inspection" / "type_counts.json").read_text())
    assert saved["n_votes"] == 6 and saved["n_experts"] == 3
    # the FITS catalog carries the type too
    from astropy.table import Table

    fits = Table.read(clustered_run.path / "catalog.fits")
    # (astropy reads empty FITS strings back as masked)
    assert list(np.ma.filled(fits["morph_type"], "")) == typed["morph_type"].tolist()
    # one vote fewer needed: c[1] becomes a three-way tie
    table = merge(clustered_run, [votes], min_agree=1).set_index("cluster")
    assert table.loc[c[1], ["morph_type", "type_flag"]].tolist() == ["UNC", "tie"]


def test_merge_across_files_keeps_each_experts_latest_vote(clustered_run, tmp_path):
    catalog = clustered_run.catalog()
    labels = consensus_labels(catalog)
    c0 = int(labels[labels >= 0].min())
    first = write_votes(tmp_path / "a.csv", [("A", c0, "IRR"), ("B", c0, "IRR")])
    later = tmp_path / "b.csv"
    later.write_text(f"expert,cluster,type,time\nA,{c0},LTD,2026-01-01T00:00:00\nC,{c0},ltd,\n")
    table = merge(clustered_run, [first, later]).set_index("cluster")
    assert table.loc[c0, "votes"] == "IRR:1;LTD:2" and table.loc[c0, "morph_type"] == "LTD"


def test_merge_leaves_out_votes_on_another_clustering(clustered_run, tmp_path, caplog):
    labels = consensus_labels(clustered_run.catalog())
    c0 = int(labels[labels >= 0].min())
    c1 = int(sorted(set(labels[labels >= 0].tolist()))[1])
    old = write_votes(tmp_path / "v.csv", [("A", c0, "SPH"), ("B", c0, "SPH")], clustering="old")
    current = write_votes(tmp_path / "w.csv", [("A", c1, "LTD"), ("B", c1, "LTD")],
                          clustering=clustering_fingerprint(clustered_run.catalog()))
    table = merge(clustered_run, [old, current]).set_index("cluster")
    assert table.loc[c0, "morph_type"] == "UNC" and table.loc[c0, "type_flag"] == "no_votes"
    assert table.loc[c1, "morph_type"] == "LTD"
    assert "different clustering" in caplog.text
    # with no vote for this clustering at all, merge invents no types: it fails and says what to do
    before = clustered_run.catalog()["morph_type"].tolist()
    with pytest.raises(InspectError, match="no types were written.*inspect serve"):
        merge(clustered_run, [old])
    assert clustered_run.catalog()["morph_type"].tolist() == before


def test_merge_errors_are_clear(clustered_run, tmp_path):
    with pytest.raises(InspectError, match="no votes yet"):
        merge(clustered_run)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,cluster,type\nA,0,SPH\n")
    with pytest.raises(InspectError, match="lacks column.*expert.*it has: name, cluster, type"):
        merge(clustered_run, [bad])
    bad.write_text("expert,cluster,type\nA,0,SPIRAL\n")
    with pytest.raises(InspectError, match="unknown type.*SPIRAL"):
        merge(clustered_run, [bad])
    bad.write_text("expert,cluster,type\nA,0,SPH\nA,x,SPH\n")
    with pytest.raises(InspectError, match="line 3"):
        merge(clustered_run, [bad])


def test_merge_cli_prints_table_2(clustered_run, capsys):
    from skymorph import cli

    catalog = clustered_run.catalog()
    labels = consensus_labels(catalog)
    store = VoteStore(clustered_run.path / "inspection" / "votes.csv", clustering_fingerprint(catalog))
    for c in sorted(set(labels[labels >= 0].tolist())):
        for expert in ("A", "B"):
            store.cast(expert, c, "ETD")
    assert cli.main(["inspect", "merge", str(clustered_run.path), "--min-agree", "2"]) == 0
    out = capsys.readouterr().out
    assert "ETD" in out and "total" in out
    assert (clustered_run.catalog().loc[labels >= 0, "morph_type"] == "ETD").all()
    assert cli.main(["inspect", "merge", str(clustered_run.path), "--votes", "/nonexistent.csv"]) == 1
    assert "does not exist" in capsys.readouterr().err
