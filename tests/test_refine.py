"""Experts teach single galaxies (active learning): query selection, the label store, extend with
taught galaxies, ``inspect auto --refine`` and the teach page's API."""

from __future__ import annotations

import csv
import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

from skymorph import RunDir
from skymorph.cli import main as cli_main
from skymorph.core.extend import ExtendError, extend_labels, fit_model
from skymorph.core.refine import combine_labels, margins, random_start, select_queries, uncertainty
from skymorph.inspection import InspectError, consensus_labels
from skymorph.inspection.auto import auto_votes, truth_types
from skymorph.inspection.refine import (
    SKIP,
    GalaxyVoteStore,
    auto_refine,
    looked_at,
    refine_page,
    taught_types,
)
from skymorph.stages.extend import ExtendStageError, extend
from skymorph.stages.inspect import merge
from test_extend import GZ1_EXCLUDE, GZ1_MAP, TYPES, _config, blobs, gz1_run  # noqa: F401 - a fixture
from test_inspection import Server

# --- query selection on arrays ------------------------------------------------------------------


def test_margins_and_least_margin_selection():
    proba = np.array([[0.5, 0.3, 0.2],    # margin 0.2
                      [0.5, 0.375, 0.125],  # 0.125
                      [0.9, 0.05, 0.05],  # 0.85
                      [0.34, 0.33, 0.33],  # 0.01
                      [0.4375, 0.3125, 0.25],  # 0.125 (tie with row 1: row order)
                      [np.nan, 0.5, 0.5]])
    m = margins(proba)
    np.testing.assert_allclose(m[:5], [0.2, 0.125, 0.85, 0.01, 0.125], atol=1e-12)
    assert np.isnan(m[5])
    assert select_queries(proba, n=3).tolist() == [3, 1, 4]
    assert select_queries(proba, n=10).tolist() == [3, 1, 4, 0, 2]  # the NaN row is never picked
    free = np.array([True, True, True, False, True, True])
    assert select_queries(proba, n=2, candidates=free).tolist() == [1, 4]
    assert select_queries(proba, n=0).size == 0
    assert margins(np.ones((3, 1))).tolist() == [1, 1, 1]
    with pytest.raises(ExtendError, match="boolean mask"):
        select_queries(proba, n=2, candidates=np.ones(3, bool))


def test_random_start_is_seeded_and_respects_candidates():
    a = random_start(100, n=10, seed=3)
    assert a.tolist() == random_start(100, n=10, seed=3).tolist() and len(set(a.tolist())) == 10
    assert a.tolist() != random_start(100, n=10, seed=4).tolist()
    free = np.zeros(100, bool)
    free[[5, 7, 9]] = True
    assert random_start(100, n=10, seed=0, candidates=free).tolist() == [5, 7, 9]


def test_combine_labels_taught_replace_and_outweigh_cluster_types():
    cluster = np.array(["A", "A", "", "B", ""], dtype=object)
    taught = np.array(["", "B", "A", "", ""], dtype=object)
    learn, y, w = combine_labels(cluster, taught, taught_weight=4.0)
    assert learn.tolist() == [True, True, True, True, False]
    assert y.tolist() == ["A", "B", "A", "B", ""]
    assert w.tolist() == [1.0, 4.0, 4.0, 1.0, 0.0]
    learn, y, w = combine_labels(cluster, taught, taught_weight=4.0, use_clusters=False)
    assert learn.tolist() == [False, True, True, False, False] and w.tolist() == [0, 4, 4, 0, 0]
    with pytest.raises(ExtendError, match="> 0"):
        combine_labels(cluster, taught, taught_weight=0)


def test_sample_weight_zero_equals_leaving_rows_out():
    x, y = blobs(n=200, d=8, seed=1)
    w = np.ones(200)
    w[::3] = 0
    a = fit_model(x, y, sample_weight=w)
    b = fit_model(x[w > 0], y[w > 0])
    np.testing.assert_allclose(a.coef_, b.coef_, atol=2e-3)
    # extend_labels passes the weights through: a weight on the training rows changes the model
    train = np.ones(200, bool)
    plain = extend_labels(x, train, y, cv_folds=2)
    weighted = extend_labels(x, train, y, cv_folds=2, sample_weight=np.where(y == "T0", 20.0, 1.0))
    assert (weighted.predicted == "T0").sum() > (plain.predicted == "T0").sum()


def _balanced(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in np.unique(y_true)]))


def test_least_margin_labels_teach_more_than_random_labels():
    # a linear boundary with a 20% minority beyond it: labels near the boundary pin it down,
    # random labels are mostly spent on easy galaxies far from it
    def trial(seed: int, active: bool) -> float:
        rng = np.random.default_rng(seed)
        n = 3000
        x = rng.uniform(-1, 1, (n, 5))
        y = np.where(x[:, 0] + 0.5 * x[:, 1] > 0.8, "B", "A").astype(object)
        labelled = np.zeros(n, bool)
        for t in "AB":  # a start that holds both types (as named clusters do)
            labelled[np.flatnonzero(y == t)[:4]] = True
        while labelled.sum() < 68:
            if active:
                _, proba = uncertainty(x, labelled, y, c=1.0)
                pick = select_queries(proba, n=10, candidates=~labelled)
            else:
                pick = random_start(n, n=10, seed=seed + int(labelled.sum()), candidates=~labelled)
            labelled[pick] = True
        classes, proba = uncertainty(x, labelled, y, c=1.0)
        pred = np.array(classes, dtype=object)[proba.argmax(axis=1)]
        return _balanced(y[~labelled], pred[~labelled])

    active = [trial(s, True) for s in range(3)]
    passive = [trial(s, False) for s in range(3)]
    assert np.mean(active) > np.mean(passive) + 0.02 and min(active) > 0.95, (active, passive)


# --- the store, extend, inspect auto --refine on a small real run -----------------------------------


@pytest.fixture
def run(gz1_run, tmp_path) -> RunDir:  # noqa: F811 - the imported fixture, under another name
    shutil.copytree(gz1_run.path, tmp_path / "run")
    return RunDir(tmp_path / "run")


def test_galaxy_vote_store_replaces_and_taught_type_is_the_majority(run):
    store = GalaxyVoteStore.of(run)
    ids = run.catalog()["id"].astype(str).tolist()
    store.cast("Ann", {ids[0]: "SPIRAL", ids[1]: SKIP})
    store.cast("Bob", {ids[0]: "ELLIPTICAL"})
    store.cast("Carol", {ids[0]: "SPIRAL", ids[2]: "=HYPERLINK()"})
    store.cast("ann", {ids[1]: "EDGE_ON"})  # the same expert (case ignored) replaces the skip
    rows = store.rows()
    assert len(rows) == 5 and {r["expert"] for r in rows} == {"Ann", "Bob", "Carol", "ann"}
    assert "'=HYPERLINK()" in store.path.read_text()  # spreadsheet-safe on disk, read back as cast
    taught = taught_types(run, types=TYPES)
    assert taught[0] == "SPIRAL" and taught[1] == "EDGE_ON" and taught[2] == ""  # not a type: ignored
    assert looked_at(run).tolist()[:4] == [True, True, True, False]
    assert looked_at(run, expert="BOB").tolist()[:2] == [True, False]


@pytest.mark.slow
def test_auto_refine_teaches_and_extend_gives_taught_types(run, shared_data):
    labels_csv = shared_data / "gz1_sdss" / "labels.csv"
    config = _config(refine_page=5)
    auto_votes(run, labels_csv, "objid", "gz1_name", config, label_map=GZ1_MAP, exclude=GZ1_EXCLUDE)
    merge(run, config=config, min_agree=1)
    extend(run, config)
    before = run.catalog()
    # the first page: the galaxies the classifier is least sure of
    page = refine_page(run, config)
    assert len(page) == 5 and (page["reason"] == "margin").all()
    assert np.all(np.diff(page["margin"].to_numpy()) >= 0)
    result = auto_refine(run, labels_csv, "objid", "gz1_name", config, n_labels=12, label_map=GZ1_MAP,
                         exclude=GZ1_EXCLUDE)
    assert result["n_labelled"] == 12 and result["n_looked_at"] >= 12
    assert result["expert"] == "auto:labels.csv"
    assert sum(p["labelled"] for p in result["pages"]) == 12
    assert all(p["looked_at"] <= 5 for p in result["pages"])
    rows = GalaxyVoteStore.of(run).rows()
    oracle = dict(zip(before["id"].astype(str), truth_types(before, labels_csv, "objid", "gz1_name", TYPES,
                                                            label_map=GZ1_MAP, exclude=GZ1_EXCLUDE),
                      strict=True))
    assert len(rows) == result["n_looked_at"]
    assert all(r["type"] == (oracle[r["id"]] or SKIP) for r in rows)  # the simulated expert answers truly
    assert rows[0]["id"] == page["id"].iloc[0]  # the first page was the least-sure one
    # calling again continues: nobody is shown a galaxy twice
    again = auto_refine(run, labels_csv, "objid", "gz1_name", config, n_labels=3, label_map=GZ1_MAP,
                        exclude=GZ1_EXCLUDE)
    rows = GalaxyVoteStore.of(run).rows()
    assert again["n_labelled"] == 3 and len({r["id"] for r in rows}) == len(rows)

    extend(run, config)  # the taught labels changed: recomputed
    cat = run.catalog()
    taught = {r["id"]: r["type"] for r in rows if r["type"] != SKIP}
    assert len(taught) == 15
    is_taught = cat["id"].astype(str).isin(taught.keys()).to_numpy()
    assert (cat.loc[is_taught, "type_source"] == "taught").all()
    assert (cat.loc[is_taught, "morph_type_final"] == cat.loc[is_taught, "id"].astype(str).map(taught)).all()
    kept = consensus_labels(cat) >= 0
    assert (cat.loc[kept & ~is_taught, "type_source"] == "experts").all()
    assert cat.loc[~kept & ~is_taught, "type_source"].isin(["extended", "ood"]).all()
    assert (cat["morph_type"] == before["morph_type"]).all()  # the cluster names are untouched
    report = json.loads((run.path / "extend" / "extend.json").read_text())
    assert report["n_taught"] == 15 and report["n_extended"] == int((~kept & ~is_taught).sum())
    assert report["n_extended_ood"] == int((cat["type_source"] == "ood").sum())
    # the classifier, taught by the experts, may type the kept galaxies too
    extend(run, config.update({"extend": {"kept_types": "classifier"}}))
    cat = run.catalog()
    assert (cat.loc[is_taught, "type_source"] == "taught").all()
    assert cat.loc[~is_taught, "type_source"].isin(["extended", "ood"]).all()
    fine = ~is_taught & ~cat["ml_ood"].to_numpy(bool)
    assert (cat.loc[fine, "morph_type_final"] == cat.loc[fine, "morph_type_ml"]).all()
    assert (cat["morph_type"] == before["morph_type"]).all()


def test_refine_without_cluster_names_starts_at_random(run, shared_data):
    labels_csv = shared_data / "gz1_sdss" / "labels.csv"
    config = _config(refine_page=6, refine_start=8).update({"extend": {"cluster_labels": False}})
    with pytest.raises(ExtendStageError, match="inspect"):
        extend(run, config)  # neither names nor taught galaxies yet
    first = refine_page(run, config)
    assert (first["reason"] == "random").all() and len(first) == 6
    result = auto_refine(run, labels_csv, "objid", "gz1_name", config, n_labels=20, label_map=GZ1_MAP,
                         exclude=GZ1_EXCLUDE)
    assert result["pages"][0]["reason"] == "random" and result["pages"][-1]["reason"] == "margin"
    extend(run, config)
    cat = run.catalog()
    assert (cat["type_source"] == "taught").sum() == 20
    assert set(cat["type_source"]) <= {"taught", "extended", "ood"} and "extended" in set(cat["type_source"])


def test_inspect_auto_refine_command(run, shared_data, capsys):
    labels = str(shared_data / "gz1_sdss" / "labels.csv")
    args = ["--truth", labels, "--id-col", "objid", "--label-col", "gz1_name",
            "--set", 'inspect.types=["ELLIPTICAL","SPIRAL","EDGE_ON","UNC"]',
            "--set", "inspect.per_cluster=10",
            "--map", "spiral_cw=SPIRAL", "--map", "spiral_acw=SPIRAL", "--exclude", "dont_know",
            "--exclude", "merger"]
    assert cli_main(["inspect", "auto", str(run.path), *args, "--merge", "--refine", "10",
                     "--page", "4"]) == 0
    out = capsys.readouterr().out
    assert "10 single galaxies typed by auto:labels.csv (starting from the named clusters)" in out
    with open(run.path / "inspection" / "galaxy_votes.csv", newline="") as fh:
        assert sum(r["type"] != SKIP for r in csv.DictReader(fh)) == 10
    assert cli_main(["extend", str(run.path), "--set", "extend.cv_folds=3"]) == 0
    assert "10 carry a type an expert gave the galaxy itself (taught)" in capsys.readouterr().out
    assert (run.catalog()["type_source"] == "taught").sum() == 10
    assert cli_main(["inspect", "auto", str(run.path), *args, "--refine", "-1"]) == 1
    assert "--refine" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        cli_main(["inspect", "refine", "--help"])
    assert done.value.code == 0 and "least margin" in capsys.readouterr().out


# --- the teach page's API ---------------------------------------------------------------------------


def _post(server: Server, path: str, payload) -> tuple[int, dict]:
    request = urllib.request.Request(server.url + path.lstrip("/"), data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json",
                                              "X-Skymorph-Token": server.token})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_teach_api_pages_labels_and_images(run, shared_data):
    config = _config(refine_page=4)
    auto_votes(run, shared_data / "gz1_sdss" / "labels.csv", "objid", "gz1_name", config,
               label_map=GZ1_MAP, exclude=GZ1_EXCLUDE)
    merge(run, config=config, min_agree=1)
    with Server(run, config) as s:
        status, page = s.get("/api/refine/page?expert=Ann")
        assert status == 200 and page["reason"] == "margin" and len(page["items"]) == 4
        assert [t["code"] for t in page["types"]] == TYPES
        margins_ = [i["margin"] for i in page["items"]]
        assert margins_ == sorted(margins_)
        first = page["items"][0]
        status, png = s.get(first["png"])
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
        answer = {"expert": "Ann", "row": first["row"], "type": "spiral"}
        assert _post(s, "/api/refine/label", answer)[0] == 200
        assert _post(s, "/api/refine/label", {"expert": "Ann", "row": page["items"][1]["row"],
                                              "type": "Skip"})[0] == 200
        for bad in ({"expert": "Ann", "row": first["row"], "type": "SPH"},
                    {"expert": "Ann", "row": 10 ** 6, "type": "SPIRAL"},
                    {"expert": "Ann", "row": "3", "type": "SPIRAL"},
                    {"expert": "", "row": 0, "type": "SPIRAL"}, [1, 2]):
            status, body = _post(s, "/api/refine/label", bad)
            assert status == 400 and body["error"], bad
        status, page2 = s.get("/api/refine/page?expert=Ann")
        assert page2["n_taught_by_you"] == 1 and page2["n_looked_at_by_you"] == 2
        assert not {first["row"], page["items"][1]["row"]} & {i["row"] for i in page2["items"]}
        with pytest.raises(urllib.error.HTTPError) as err:
            s.get("/refine/galaxy/999999.png")
        assert err.value.code == 404
        err.value.close()
        # no token: refused
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(s.url + "api/refine/page?expert=Ann", timeout=10)
        assert err.value.code == 403
        err.value.close()
    rows = GalaxyVoteStore.of(run).rows()
    assert {(r["expert"], r["type"]) for r in rows} == {("Ann", "SPIRAL"), ("Ann", SKIP)}


def test_refine_page_needs_features(run):
    config = _config().update({"extend": {"input": "embedding"}})  # this run has no UMAP embedding
    with pytest.raises(InspectError, match="skymorph reduce"):
        refine_page(run, config)


@pytest.mark.slow
def test_inspect_refine_command_serves_the_teach_page(run, shared_data):
    """`skymorph inspect refine RUN` (the README's command) prints the teach page's address."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    config = _config()
    auto_votes(run, shared_data / "gz1_sdss" / "labels.csv", "objid", "gz1_name", config,
               label_map=GZ1_MAP, exclude=GZ1_EXCLUDE)
    merge(run, config=config, min_agree=1)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "skymorph.cli", "inspect", "refine", str(run.path),
                             "--port", "0", "--page", "3", "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = None
        for line in proc.stdout:
            if "/refine?token=" in line:
                url = line.strip()
                break
        assert url is not None, "no address printed"
        base, _, token = url.partition("refine?token=")
        with urllib.request.urlopen(url, timeout=120) as r:
            assert r.status == 200 and b"teach single galaxies" in r.read()
        request = urllib.request.Request(base + "api/refine/page?expert=Eve",
                                         headers={"X-Skymorph-Token": token})
        with urllib.request.urlopen(request, timeout=600) as r:  # the first page imports and fits
            assert len(json.loads(r.read())["items"]) == 3
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


@pytest.mark.slow
def test_eval_refine_benchmark_runs_and_summarises(run, tmp_path):
    """The README's benchmark command, on a small run: one seed, 0 and 6 single-galaxy labels."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"}
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "eval_refine.py"), "--out", str(out),
                           "--seeds", "42", "--checkpoints", "0", "6", "--run", f"gz1_sdss={run.path}"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["arm"], r["kept_types"], r["labels"]) for r in rows} == {
        ("names", "cluster", 0), ("names", "classifier", 0), ("names", "cluster", 6),
        ("names", "classifier", 6), ("random", "classifier", 6)}
    for r in rows:
        assert r["looked_at"] >= r["labels"] and 0 <= r["balacc_all"] <= 1
        assert r["n_untouched"] == r["n_all"] - r["labels"]
    summary = subprocess.run([sys.executable, str(root / "benchmarks" / "eval_refine.py"), "--summary",
                              str(out / "results.jsonl")], capture_output=True, text=True, env=env,
                             timeout=120)
    assert "| gz1_sdss | cluster names | classifier | 5 | 6 |" in summary.stdout
