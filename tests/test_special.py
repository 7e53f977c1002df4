"""Unusual galaxies: 'more like this' (similar), the anomaly ranking, subclasses and their special types."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import skymorph
from skymorph import Config, RunDir
from skymorph.cli import main as cli_main
from skymorph.core.anomaly import METHODS, anomaly_scores
from skymorph.core.search import IVFIndex, build_ivf, class_lift, exact_neighbors
from skymorph.core.subclasses import own_embedding, subcluster_names
from skymorph.inspection.special import SubclassVoteStore, clean_label, subclass_votes_path
from skymorph.inspection.votes import VoteStore
from skymorph.stages.similar import SimilarError
from skymorph.stages.subdivide import SubdivideError
from test_extend import blobs, profile_features
from test_inspection import Server, cluster_catalog
from test_report import report_run  # noqa: F401 - a fixture

GZ1_N = 90


@pytest.fixture(scope="module")
def gz1_run(tmp_path_factory, shared_data):
    images = sorted((shared_data / "gz1_sdss" / "images").glob("*.jpeg"))[:GZ1_N]
    run = skymorph.ingest(images, tmp_path_factory.mktemp("gz1s") / "run",
                          Config().update({"ingest": {"workers": 1}}), progress=False)
    cluster_catalog(run, k=4)
    x = profile_features(np.asarray(run.open_array("stamps")))
    run.create_array("features", x.shape, chunk=64)[:] = x
    # stand-in features of the real stamps, recorded as the encode stage's output
    run.mark_done("encode", run.fingerprint("encode", Config(), ["encode"], upstream=["ingest"]))
    return run


@pytest.fixture
def run(gz1_run, tmp_path) -> RunDir:
    shutil.copytree(gz1_run.path, tmp_path / "run")
    return RunDir(tmp_path / "run")


def _size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _ids(run: RunDir) -> list[str]:
    return run.catalog()["id"].astype(str).tolist()


# --- core: search ----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_neighbors_match_a_full_sort(metric):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    x[7] = np.nan  # a galaxy without features is never an answer
    q = np.array([0, 3, 250])
    rows, dist = exact_neighbors(x, x[q], n=10, metric=metric, exclude=q, block=128)
    ok = np.isfinite(x).all(axis=1)
    for i, r in enumerate(q):
        if metric == "cosine":
            xn = x / np.linalg.norm(x, axis=1, keepdims=True)
            d = 1 - xn @ xn[r]
        else:
            d = np.linalg.norm(x - x[r], axis=1)
        d[~ok] = np.inf
        d[r] = np.inf
        expected = np.argsort(d, kind="stable")[:10]
        assert rows[i].tolist() == expected.tolist()
        np.testing.assert_allclose(dist[i], d[expected], rtol=1e-4, atol=1e-5)
        assert r not in rows[i] and 7 not in rows[i]


def test_ivf_index_finds_the_exact_neighbours_and_survives_a_round_trip(tmp_path):
    x, _ = blobs(n=3000, d=32, classes=6, seed=1)
    index = build_ivf(x, metric="cosine", seed=0)
    assert index.n_lists == round(np.sqrt(3000))
    q = np.arange(0, 3000, 37)
    exact, _ = exact_neighbors(x, x[q], n=20, metric="cosine", exclude=q)
    approx, dist = index.search(x[q], n=20, probe=12, exclude=q)
    recall = np.mean([np.isin(a, e).mean() for a, e in zip(approx, exact, strict=True)])
    assert recall > 0.95
    assert (np.diff(dist, axis=1) >= -1e-6).all() and not (approx == q[:, None]).any()
    index.save(tmp_path / "index")
    loaded = IVFIndex.load(tmp_path / "index")
    assert isinstance(loaded.data, np.memmap)
    again, _ = loaded.search(x[q], n=20, probe=12, exclude=q)
    assert np.array_equal(again, approx)
    # all lists scanned: the index is exact
    full, _ = index.search(x[q], n=20, probe=index.n_lists, exclude=q)
    assert np.array_equal(full, exact)


def test_class_lift_is_high_for_separated_classes_and_one_for_random_labels():
    x, y = blobs(n=600, d=16, classes=3, seed=2, sep=3.0)
    table = class_lift(x, y, ks=(10, 50), metric="euclidean")
    assert set(table["class"]) == {"T0", "T1", "T2"}
    assert (table["lift@10"] > 2.5).all() and (table["precision@10"] > 0.9).all()
    shuffled = np.random.default_rng(0).permutation(y)
    random_lift = class_lift(x, shuffled, ks=(10,), metric="euclidean")["lift@10"]
    assert np.allclose(random_lift, 1.0, atol=0.15)


# --- core: anomaly and subclasses ------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_anomaly_scores_put_injected_oddities_first(method):
    x, _ = blobs(n=800, d=24, classes=3, seed=3)
    odd = np.array([5, 400, 777])
    x[odd] = np.random.default_rng(9).normal(0, 1, (3, 24)) * 12  # far from every blob
    x[10] = np.nan
    score = anomaly_scores(x, method=method, n_neighbors=10, dims=8, reference=500, seed=1,
                           scaling="standardise")
    assert np.isnan(score[10]) and np.isfinite(np.delete(score, 10)).all()
    top = np.argsort(-np.nan_to_num(score, nan=-np.inf))[:3]
    assert set(top.tolist()) == set(odd.tolist())
    again = anomaly_scores(x, method=method, n_neighbors=10, dims=8, reference=500, seed=1,
                           scaling="standardise")
    np.testing.assert_allclose(score, again, rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("scaling", ["l2", "standardise"])
def test_project_keeps_the_leading_principal_axes_of_the_sample(scaling):
    from skymorph.core.anomaly import project

    rng = np.random.default_rng(5)
    x = (rng.normal(size=(600, 40)) * np.linspace(5, 0.1, 40)).astype(np.float32)
    z = project(x, dims=6, sample=400, seed=1, scaling=scaling, block=128)
    # the reference: a full SVD of the same scaled sample, applied to all rows at once
    xs = x / np.linalg.norm(x, axis=1, keepdims=True) if scaling == "l2" else x
    fit = xs[np.sort(np.random.default_rng(1).choice(600, 400, replace=False))]
    mean = fit.mean(axis=0)
    scale = fit.std(axis=0) if scaling == "standardise" else 1.0
    zf = (fit - mean) / scale
    _, _, vt = np.linalg.svd(zf - zf.mean(axis=0), full_matrices=False)
    ref = ((xs - mean) / scale) @ vt[:6].T
    # the same axes up to sign: the pairwise distances agree
    d = np.linalg.norm(z[:50, None] - z[None, :50], axis=-1)
    d_ref = np.linalg.norm(ref[:50, None] - ref[None, :50], axis=-1)
    np.testing.assert_allclose(d, d_ref, rtol=1e-3, atol=1e-4)


def test_own_embedding_and_subcluster_names():
    x, _ = blobs(n=60, d=20, classes=2, seed=4, sep=3.0)
    emb = own_embedding(x, dims=0)
    assert emb.shape == (60, 20)
    names = subcluster_names("7", np.array([0, 1, 2]), np.array([True, False, True]))
    assert names.tolist() == ["7.0", "", "7.2"]


# --- the similar stage ------------------------------------------------------------------------------


def test_similar_returns_a_table_and_a_montage_with_the_query_first(run):
    ids = _ids(run)
    table = skymorph.similar(run, ids[3], n=8)
    assert table["rank"].tolist() == list(range(9))
    assert table["id"].iloc[0] == ids[3] and table["distance"].iloc[0] == 0
    assert ids[3] not in table["id"].iloc[1:].tolist()
    assert (np.diff(table["distance"].to_numpy()) >= 0).all()
    assert {"cluster", "morph_type"} <= set(table.columns)
    x = np.asarray(run.open_array("features"))
    rows, _ = exact_neighbors(x, x[[3]], n=8, metric="cosine", exclude=np.array([3]))
    assert table["id"].iloc[1:].tolist() == [ids[r] for r in rows[0]]
    png = run.path / "similar" / f"{ids[3]}.png"
    width, height = _size(png)
    assert width > 100 and height > 100
    info = run.stage_info("similar")
    assert info["route"] == "exact" and info["queries"] == [ids[3]]
    # the same query again is reused; another n recomputes
    skymorph.similar(run, ids[3], n=8)
    assert run.stage_info("similar")["finished"] == info["finished"]
    assert len(skymorph.similar(run, [ids[3], ids[4]], n=5)) == 12


def test_similar_above_the_threshold_builds_and_reuses_the_stored_index(run):
    ids = _ids(run)
    exact = skymorph.similar(run, ids[0], n=10)
    indexed = skymorph.similar(run, ids[0], n=10, exact_below=10, probe=100)
    assert run.stage_info("similar")["route"] == "index"
    assert (run.path / "similar" / "index" / "data.npy").exists()
    assert indexed["id"].tolist() == exact["id"].tolist()
    built = (run.path / "similar" / "index" / "data.npy").stat().st_mtime_ns
    skymorph.similar(run, ids[1], n=10, exact_below=10, probe=100)
    assert (run.path / "similar" / "index" / "data.npy").stat().st_mtime_ns == built


def _cli_error(capsys, argv: list[str]) -> str:
    assert cli_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    return err


def test_similar_bad_input_is_one_sentence(run, capsys, tmp_path):
    path = str(run.path)
    assert "no galaxy with id 'nope'" in _cli_error(capsys, ["similar", path, "nope"])
    run.add_rejects([{"id": "broken_1", "origin": "broken_1.jpeg", "stage": "ingest",
                      "reason": "unreadable: truncated file"}])
    err = _cli_error(capsys, ["similar", path, "broken_1"])
    assert "was rejected by ingest (unreadable: truncated file)" in err and "--image" in err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert "cannot be used" in _cli_error(capsys, ["similar", path, "--image", str(bad)])
    assert "does not exist" in _cli_error(capsys, ["similar", path, "--image", str(tmp_path / "none.png")])
    assert "name the galaxies" in _cli_error(capsys, ["similar", path])
    with pytest.raises(SimilarError, match="no galaxy with id"):
        skymorph.similar(run, "nope")


@pytest.fixture(scope="module")
def encoded_run(tmp_path_factory, shared_data):
    """24 GZ1 stamps through the real encoder (Lite0, one rotation), clustered from their pixels."""
    images = sorted((shared_data / "gz1_sdss" / "images").glob("*.jpeg"))[:24]
    config = Config().update({"ingest": {"workers": 1}, "encode": {"encoder": "efficientnet_lite0",
                                                                   "rotations": 1}})
    run = skymorph.ingest(images, tmp_path_factory.mktemp("enc") / "run", config, progress=False)
    skymorph.encode(run, progress=False)
    cluster_catalog(run, k=3)
    return run, images


@pytest.mark.slow
def test_similar_image_is_encoded_like_the_run_itself(encoded_run, capsys):
    run, images = encoded_run
    table = skymorph.similar(run, image=images[5], n=3)
    assert table["query"].iloc[0] == images[5].name
    assert table["rank"].iloc[0] == 1  # a new image has no rank-0 row of its own
    assert table["id"].iloc[0] == images[5].stem and table["distance"].iloc[0] < 1e-4
    assert cli_main(["similar", str(run.path), "--image", str(images[7]), "--n", "2"]) == 0
    assert images[7].stem in capsys.readouterr().out


@pytest.mark.slow
def test_readme_commands_of_the_unusual_galaxies(encoded_run, tmp_path, capsys):
    import re
    import shlex

    from conftest import ROOT

    source, images = encoded_run
    shutil.copytree(source.path, tmp_path / "myrun")
    run = RunDir(tmp_path / "myrun")
    catalog = run.catalog()
    run.update_catalog(pd.DataFrame({"id": catalog["id"], "morph_type": np.where(
        np.arange(len(catalog)) % 2, "UNC", "SPH")}))
    text = (ROOT / "README.md").read_text()
    block = text[text.index("### Unusual galaxies"):]
    block = block[block.index("```bash") + 7:block.index("```", block.index("```bash") + 7)]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert [c.split()[1] for c in commands] == ["similar", "similar", "anomaly", "subdivide", "subdivide"]
    parent = _biggest_cluster(run)
    for command in commands:
        command = (command.replace("myrun", str(run.path)).replace("587722982825001149", images[0].stem)
                   .replace("new_cutout.jpeg", str(images[1])))
        command = re.sub(r"--cluster 3 --k 4", f"--cluster {parent} --k 3", command)
        assert cli_main(shlex.split(command)[1:]) == 0, command
    out = capsys.readouterr().out
    assert "nearest to" in out and "most unusual" in out and "subclasses" in out
    assert set(run.catalog()["subcluster"].fillna("").str.split(".").str[0]) <= {"", str(parent), "UNC"}


# --- the anomaly stage ------------------------------------------------------------------------------


def test_anomaly_writes_the_score_and_a_montage_of_the_top(run, capsys):
    assert cli_main(["anomaly", str(run.path), "--top", "12", "--method", "knn"]) == 0
    assert "most unusual" in capsys.readouterr().out
    catalog = run.catalog()
    expected = anomaly_scores(np.asarray(run.open_array("features")), method="knn",
                              n_neighbors=Config().anomaly.n_neighbors, dims=Config().anomaly.dims,
                              scaling=Config().anomaly.scaling)
    np.testing.assert_allclose(catalog["anomaly_score"], expected, rtol=1e-5)
    top = pd.read_csv(run.path / "anomaly" / "top.csv", dtype={"id": str})
    assert len(top) == 12 and (np.diff(top["anomaly_score"]) <= 0).all()
    assert top["id"].iloc[0] == catalog["id"].astype(str).iloc[int(np.argmax(expected))]
    assert _size(run.path / "anomaly" / "top.png")[0] > 100
    # a new clustering rewrites the catalog; the score comes back with the next anomaly call
    cluster_catalog(run, k=3)
    assert "anomaly_score" not in run.catalog().columns
    skymorph.anomaly(run, method="knn", top=12)
    np.testing.assert_allclose(run.catalog()["anomaly_score"], expected, rtol=1e-5)


# --- subdivide and special types ----------------------------------------------------------------


def _biggest_cluster(run: RunDir) -> int:
    c = run.catalog()["cluster"]
    return int(c[c >= 0].value_counts().idxmax())


def test_subdivide_a_cluster_writes_subcluster_and_montages(run, capsys):
    parent = _biggest_cluster(run)
    assert cli_main(["subdivide", str(run.path), "--cluster", str(parent), "--k", "3",
                     "--set", "subdivide.dims=0"]) == 0
    assert "subclasses" in capsys.readouterr().out
    catalog = run.catalog()
    members = catalog["cluster"] == parent
    sub = catalog["subcluster"].fillna("").astype(str)
    assert (sub[~members] == "").all()
    named = sub[members & (sub != "")]
    assert len(named) >= 3 and named.str.startswith(f"{parent}.").all()
    assert set(named) <= {f"{parent}.{i}" for i in range(3)}
    manifest = json.loads((run.path / "subdivide" / f"group_{parent}" / "montages.json").read_text())
    assert {e["subcluster"] for e in manifest["subclusters"]} == set(named)
    for e in manifest["subclusters"]:
        assert (run.path / "subdivide" / e["png"]).exists()
    # a type as the group: the earlier cluster's subclasses stay on the other galaxies
    mtype = np.where(catalog["cluster"] == parent, "X", "Y")
    run.update_catalog(pd.DataFrame({"id": catalog["id"], "morph_type": mtype}))
    other = np.flatnonzero(mtype == "Y")
    skymorph.subdivide(run, type="Y", k=2, dims=0)
    sub2 = run.catalog()["subcluster"].fillna("").astype(str)
    assert sub2[members].equals(sub[members])
    assert sub2.iloc[other][sub2.iloc[other] != ""].str.startswith("Y.").all()


def test_subdivide_bad_input_is_one_sentence(run, capsys):
    path = str(run.path)
    assert "cluster 99 does not exist" in _cli_error(capsys, ["subdivide", path, "--cluster", "99"])
    assert "--cluster C" in _cli_error(capsys, ["subdivide", path])
    assert "no galaxy" in _cli_error(capsys, ["subdivide", path, "--type", "ETD"])
    parent = _biggest_cluster(run)
    assert "lower --k" in _cli_error(capsys, ["subdivide", path, "--cluster", str(parent), "--k", "500"])
    with pytest.raises(SubdivideError):
        skymorph.subdivide(run, 99)


def test_subclass_names_merge_into_special_type(run):
    parent = _biggest_cluster(run)
    skymorph.subdivide(run, parent, k=3, dims=0)
    catalog = run.catalog()
    from skymorph.inspection import clustering_fingerprint

    clustering = clustering_fingerprint(catalog)
    subs = sorted(s for s in catalog["subcluster"].fillna("").unique() if s)
    store = SubclassVoteStore(subclass_votes_path(run), clustering)
    store.cast("ann", subs[0], clean_label("TIDAL", ["tidal", "lens"]))
    store.cast("bob", subs[0], clean_label(" tidal ", ["tidal", "lens"]))
    store.cast("ann", subs[1], clean_label("two nuclei", ["tidal"]))
    assert store.votes_of("ANN") == {subs[0]: "tidal", subs[1]: "two nuclei"}
    VoteStore(run.path / "inspection" / "votes.csv", clustering).cast("ann", parent, "SPH")
    skymorph.merge(run, min_agree=2)
    special = run.catalog()["special_type"].fillna("")
    sub = run.catalog()["subcluster"].fillna("")
    assert (special[sub == subs[0]] == "tidal").all() and (sub == subs[0]).any()
    assert (special[sub != subs[0]] == "").all()  # one expert is not an agreement at min_agree 2
    table = pd.read_csv(run.path / "inspection" / "subclass_types.csv", dtype={"subcluster": str})
    assert table.set_index("subcluster").loc[subs[0], "n_agree"] == 2


def test_server_answers_more_like_this_and_subclass_names(run):
    skymorph.montage(run, per_cluster=10)
    parent = _biggest_cluster(run)
    skymorph.subdivide(run, parent, k=3, dims=0)
    with Server(run) as server:
        state = server.get("/api/state")[1]
        cell = state["clusters"][0]["cells"][0]
        status, body = server.get(f"/api/similar?stamp={cell['stamp']}&n=5")
        assert status == 200 and body["id"] == cell["id"] and len(body["neighbours"]) == 5
        assert cell["id"] not in [n["id"] for n in body["neighbours"]]
        for n in body["neighbours"]:  # every neighbour can be shown, in a montage or not
            assert server.get(f"/galaxy/{n['stamp']}.png")[0] == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            server.get("/api/similar?stamp=abc")
        err.value.close()
        assert err.value.code == 400
        groups = server.get("/api/subclasses?expert=ann")[1]
        assert groups["special_types"] == Config().inspect.special_types
        sub = groups["groups"][0]["subclusters"][0]
        assert server.get(sub["png"])[0] == 200

        def post(payload):
            request = urllib.request.Request(server.url + "api/subclass-vote",
                                             data=json.dumps(payload).encode(),
                                             headers={"Content-Type": "application/json",
                                                      "X-Skymorph-Token": server.token})
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                with exc:
                    return exc.code, json.loads(exc.read())

        status, body = post({"expert": "ann", "subcluster": sub["subcluster"], "label": "Lens"})
        assert status == 200 and body["votes"] == {sub["subcluster"]: "lens"}
        assert post({"expert": "ann", "subcluster": "99.1", "label": "lens"})[0] == 400
        assert post({"expert": "ann", "subcluster": sub["subcluster"], "label": ""})[0] == 400


# --- in the browser -----------------------------------------------------------------------------------


@pytest.mark.browser
def test_browser_more_like_this_and_naming_a_subclass(run, browser):
    from test_browser import login

    skymorph.montage(run, per_cluster=10)
    parent = _biggest_cluster(run)
    skymorph.subdivide(run, parent, k=3, dims=0)
    with Server(run) as server:
        n_clusters = len(server.get("/api/state")[1]["clusters"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        try:
            page = context.new_page()
            login(page, server.server.token_url, "Ann", n_clusters)
            # a click on a thumbnail, then "more like this": the neighbours of that galaxy
            page.click("#cells .cell >> nth=0")
            page.wait_for_function("!document.getElementById('zoom').hidden")
            clicked = page.text_content("#zoom-id").removeprefix("galaxy ")
            assert page.locator("#similar-panel").is_hidden()
            page.click("#more-like-this")
            page.wait_for_function("document.querySelectorAll('#similar-grid .neighbour').length === 12")
            shown = page.eval_on_selector_all("#similar-grid .neighbour", "els => els.map(e => e.dataset.id)")
            expected = skymorph.similar(run, clicked, n=12)
            assert shown == expected["id"].iloc[1:].tolist()
            page.wait_for_function("[...document.querySelectorAll('#similar-grid img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            # a neighbour opens in the zoomed view, and the panel starts afresh
            page.click("#similar-grid .neighbour >> nth=0")
            page.wait_for_function(f"document.getElementById('zoom-id').textContent === 'galaxy {shown[0]}'")
            assert page.locator("#similar-panel").is_hidden()
            page.keyboard.press("Escape")
            # the subclasses of `skymorph subdivide`: name one with a special type, one with free text
            page.click("#show-subclasses")
            page.wait_for_function("document.querySelectorAll('#subclass-list .subclass').length > 0")
            first = page.get_attribute("#subclass-list .subclass >> nth=0", "data-subcluster")
            page.click(f".subclass[data-subcluster='{first}'] .special:text('ring')")
            page.wait_for_function(f"document.getElementById('subclass-status').textContent === "
                                   f"'Saved: subclass {first} = ring'")
            second = page.get_attribute("#subclass-list .subclass >> nth=1", "data-subcluster")
            page.fill(f".subclass[data-subcluster='{second}'] input", "  dust lane ")
            page.click(f".subclass[data-subcluster='{second}'] button:text('save')")
            page.wait_for_function(f"document.getElementById('subclass-status').textContent === "
                                   f"'Saved: subclass {second} = dust lane'")
            selected = page.locator(f".subclass[data-subcluster='{first}'] .special.selected")
            assert selected.text_content() == "ring"
        finally:
            context.close()
    from skymorph.inspection import clustering_fingerprint

    store = SubclassVoteStore(subclass_votes_path(run), clustering_fingerprint(run.catalog()))
    assert store.votes_of("ann") == {first: "ring", second: "dust lane"}


# --- the report ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_has_a_section_on_special_objects(report_run, tmp_path):  # noqa: F811 - imported fixture
    from skymorph.stages.validate import validate

    shutil.copytree(report_run.path, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    catalog = run.catalog()
    n = len(catalog)
    sub = np.where(catalog["cluster"] == 0, np.where(np.arange(n) % 2, "0.1", "0.0"), "")
    special = np.where(sub == "0.1", "tidal", "")
    score = np.linspace(0, 1, n)
    run.update_catalog(pd.DataFrame({"id": catalog["id"], "subcluster": sub, "special_type": special,
                                     "anomaly_score": score}))
    validate(run, force=True, progress=False)
    part = json.loads((run.path / "report" / "validation.json").read_text())["parts"]["special"]["result"]
    assert {r["subcluster"]: r["special_type"] for r in part["subclasses"]} == {"0.0": "", "0.1": "tidal"}
    assert part["special_counts"] == {"tidal": int((special == "tidal").sum())}
    assert part["anomaly"]["top"][0]["id"] == str(catalog["id"].iloc[-1])
    html = (run.path / "report" / "report.html").read_text()
    assert 'id="special-types"' in html and "tidal (" in html and 'id="anomalies"' in html


@pytest.mark.parametrize("only", ["anomaly_score", "subcluster"])
def test_report_with_only_anomaly_or_only_subclasses(report_run, tmp_path, only):  # noqa: F811
    """``anomaly`` without ``subdivide`` (and the reverse) used to crash the page's template."""
    from skymorph.stages.validate import validate

    shutil.copytree(report_run.path, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    catalog = run.catalog()
    n = len(catalog)
    column = np.linspace(0, 1, n) if only == "anomaly_score" else np.where(np.arange(n) % 2, "0.1", "0.0")
    run.update_catalog(pd.DataFrame({"id": catalog["id"], only: column}))
    validate(run, force=True, progress=False)
    html = (run.path / "report" / "report.html").read_text()
    assert ('id="anomalies"' in html) == (only == "anomaly_score")
    assert ('id="special-types"' in html) == (only == "subcluster")
