"""The supervised step (extend), automatic cluster naming (inspect auto) and the final-type evaluation."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import zarr

from skymorph import Config, RunDir
from skymorph.cli import main as cli_main
from skymorph.core.extend import extend_labels, reliability, split_scores, stratified_folds
from skymorph.inspection import InspectError, clustering_fingerprint, consensus_labels, sample_members
from skymorph.inspection.auto import auto_votes, is_automatic
from skymorph.io.tables import TableError
from skymorph.stages.evaluate import evaluate
from skymorph.stages.extend import ExtendStageError, extend
from skymorph.stages.inspect import merge
from test_inspection import cluster_catalog

GZ1_N = 90
TYPES = ["ELLIPTICAL", "SPIRAL", "EDGE_ON", "UNC"]
GZ1_MAP = {"spiral_cw": "SPIRAL", "spiral_acw": "SPIRAL"}
GZ1_EXCLUDE = ["dont_know", "merger"]


def profile_features(stamps: np.ndarray) -> np.ndarray:
    """A small stand-in for encoder features: the radial light profile of each stamp
    (background = median, scaled by the 99.9th percentile) in 12 annuli, and the spread."""
    s = stamps.shape[-1]
    yy, xx = np.mgrid[:s, :s] - (s - 1) / 2
    r = np.hypot(yy, xx)
    edges = np.linspace(0, s / 2, 13)
    rings = [(r >= a) & (r < b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    out = []
    for im in stamps:
        im = im - np.median(im)
        im = im / max(float(np.percentile(im, 99.9)), 1e-6)
        out.append([im[ring].mean() for ring in rings] + [im.std()])
    return np.array(out, dtype=np.float32)


def blobs(n: int = 600, d: int = 32, classes: int = 3, seed: int = 0, sep: float = 1.2):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, sep, (classes, d))
    label = rng.integers(0, classes, n)
    x = (centres[label] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return x, np.array([f"T{i}" for i in range(classes)], dtype=object)[label]


# --- the array-level classifier -----------------------------------------------------------------


def test_extend_labels_learns_calibrates_and_is_seeded():
    x, y = blobs()
    train = np.zeros(len(y), bool)
    train[:300] = True
    a = extend_labels(x, train, y, cv_folds=4, seed=1)
    assert a.classes == ["T0", "T1", "T2"]
    assert a.proba.shape == (600, 3)
    np.testing.assert_allclose(a.proba.sum(axis=1), 1, atol=1e-5)
    assert (a.predicted[300:] == y[300:]).mean() > 0.9
    assert a.cv["accuracy"] > 0.9 and a.cv["balanced_accuracy"] > 0.9
    assert np.asarray(a.cv["confusion_matrix"]).sum() == 300
    assert sum(b["n"] for b in a.cv["reliability"]) == 300
    assert 0 <= a.cv["ece"] < 0.1
    assert np.array_equal(a.confident, a.p_predicted >= 0.7)
    assert a.ood[:300].mean() <= 0.03  # about 1 - quantile of the training galaxies
    b = extend_labels(x, train, y, cv_folds=4, seed=1)
    assert np.array_equal(a.predicted, b.predicted)
    np.testing.assert_allclose(a.proba, b.proba, atol=1e-4)


def test_class_weight_balanced_helps_a_minority_type():
    # 90% of one type, and the minority overlaps it: balanced weights recover more of it
    rng = np.random.default_rng(3)
    n = 1000
    y = np.where(rng.random(n) < 0.9, "E", "S").astype(object)
    x = rng.normal(0, 1, (n, 8)).astype(np.float32)
    x[y == "S", 0] += 1.5
    train = np.arange(n) < 600
    recall = {}
    for weight in ("balanced", "none"):
        r = extend_labels(x, train, y, class_weight=weight, seed=0)
        test = ~train & (y == "S")
        recall[weight] = (r.predicted[test] == "S").mean()
    assert recall["balanced"] > recall["none"] + 0.2


def test_hgb_model_and_embedding_sized_input():
    x, y = blobs(n=150, d=6, seed=2, sep=2.5)
    train = np.arange(150) < 100
    r = extend_labels(x, train, y, model="hgb", cv_folds=2, ood_dims=0)
    assert (r.predicted[100:] == y[100:]).mean() > 0.8


def test_stratified_folds_and_reliability_by_hand():
    y = np.array(["a"] * 7 + ["b"] * 3)
    folds = stratified_folds(y, 3, seed=0)
    assert sorted(np.bincount(folds[y == "a"]).tolist()) == [2, 2, 3]
    assert sorted(np.bincount(folds[y == "b"], minlength=3).tolist()) == [1, 1, 1]
    proba = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    bins, ece = reliability(proba, np.array([0, 1, 0, 0]), n_bins=10)
    top = [b for b in bins if b["n"]]
    assert [b["n"] for b in top] == [2, 2]
    assert top[0]["accuracy"] == 0.5 and top[1]["accuracy"] == 0.5
    assert ece == pytest.approx(0.5 * abs(0.5 - 0.55) + 0.5 * abs(0.5 - 0.95))


def test_training_set_errors():
    x, y = blobs(n=50)
    with pytest.raises(ValueError, match="at least two"):
        extend_labels(x, np.ones(50, bool), np.full(50, "T0", dtype=object))
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="^4 training galaxies are fewer"):  # NaN rows never train
        extend_labels(bad[:5], np.ones(5, bool), np.array(["T0", "T1", "T0", "T1", "T0"], dtype=object))


def test_nonfinite_rows_get_no_type_and_never_train():
    x, y = blobs(n=120)
    x[9, 0] = np.nan  # a training galaxy
    x[70] = np.nan  # a lost feature chunk reads as NaN
    x[80, 3] = np.inf
    train = np.arange(120) < 60
    r = extend_labels(x, train, y, cv_folds=3)
    bad = [9, 70, 80]
    assert np.flatnonzero(r.nonfinite).tolist() == bad and r.info["n_nonfinite"] == 3
    assert r.info["n_train"] == 59
    assert r.predicted[bad].tolist() == ["", "", ""] and np.isnan(r.proba[bad]).all()
    assert np.isnan(r.p_predicted[bad]).all() and not r.confident[bad].any() and r.ood[bad].all()
    assert np.isfinite(r.proba[~r.nonfinite]).all()


def test_ood_flags_a_blank_and_a_star_only_stamp(gz1_run):
    stamps = np.asarray(gz1_run.open_array("stamps"))
    rng = np.random.default_rng(0)
    blank = rng.normal(10, 1, (1, *stamps.shape[1:])).astype(np.float32)
    yy, xx = np.mgrid[:stamps.shape[1], :stamps.shape[2]] - (stamps.shape[1] - 1) / 2
    star = (blank[0] + 500 * np.exp(-(xx ** 2 + yy ** 2) / (2 * 1.2 ** 2)))[None]
    x = profile_features(np.concatenate([stamps, blank, star]))
    n = len(stamps)
    train = np.arange(n + 2) < n
    y = np.array(["A", "B"] * (n // 2) + ["A"] * (n % 2) + ["A", "A"], dtype=object)
    r = extend_labels(x, train, y, cv_folds=3)
    assert r.ood[-2:].tolist() == [True, True]
    assert r.ood_distance[-1] > 1.2 * r.ood_threshold
    assert r.ood[:n].sum() <= 2


def test_ood_distances_need_two_training_galaxies():
    # core.ood raises core.extend's error through an import inside the function: a module-level
    # one would be circular, and nothing else reaches that line
    from skymorph.core.extend import ExtendError
    from skymorph.core.ood import ood_distances

    with pytest.raises(ExtendError, match="at least 2 training galaxies"):
        ood_distances(np.zeros((1, 3)), np.zeros((4, 3)), np.array([0]))


def test_split_scores_by_hand():
    truth = np.array(["elliptical", "elliptical", "spiral", "spiral", "", "spiral"], dtype=object)
    final = np.array(["ELLIPTICAL", "SPIRAL", "SPIRAL", "UNC", "SPIRAL", "SPIRAL"], dtype=object)
    source = np.array(["experts", "experts", "experts", "extended", "extended", "extended"])
    s = split_scores(truth, final, source)
    assert s["kept"]["n"] == 3 and s["kept"]["accuracy"] == pytest.approx(2 / 3)
    assert s["kept"]["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)
    assert s["extended"]["n"] == 2 and s["extended"]["balanced_accuracy"] == pytest.approx(0.5)
    assert s["all"]["n"] == 5 and s["all"]["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)


# --- a small real run: automatic naming, merge, extend, evaluate -------------------------------------


@pytest.fixture(scope="module")
def gz1_run(tmp_path_factory, shared_data):
    from skymorph import ingest

    images = sorted((shared_data / "gz1_sdss" / "images").glob("*.jpeg"))[:GZ1_N]
    run = ingest(images, tmp_path_factory.mktemp("gz1x") / "run",
                 Config().update({"ingest": {"workers": 1}}), progress=False)
    cluster_catalog(run, k=5)
    x = profile_features(np.asarray(run.open_array("stamps")))
    run.create_array("features", x.shape, chunk=64)[:] = x
    # stand-in features: record them as the encode stage's output, as the executor requires
    run.mark_done("encode", run.fingerprint("encode", Config(), ["encode"], upstream=["ingest"]))
    return run


@pytest.fixture
def run(gz1_run, tmp_path) -> RunDir:
    shutil.copytree(gz1_run.path, tmp_path / "run")
    return RunDir(tmp_path / "run")


def _config(**inspect) -> Config:
    return Config().update({"inspect": {"types": TYPES, "per_cluster": 10, "seed": 2, **inspect},
                            "extend": {"cv_folds": 3}})


def test_auto_votes_name_clusters_by_the_montage_majority(run, shared_data):
    labels_csv = shared_data / "gz1_sdss" / "labels.csv"
    config = _config()
    result = auto_votes(run, labels_csv, "objid", "gz1_name", config, label_map=GZ1_MAP, exclude=GZ1_EXCLUDE)
    catalog = run.catalog()
    truth = dict(pd.read_csv(labels_csv, dtype=str)[["objid", "gz1_name"]].itertuples(index=False))
    cons = consensus_labels(catalog)
    expected = {}
    for cluster, rows in sample_members(cons, 10, 2).items():
        names = [GZ1_MAP.get(truth[i], truth[i]).upper() for i in catalog["id"].iloc[rows]
                 if truth[i] not in GZ1_EXCLUDE]
        if names:
            counts = pd.Series(names).value_counts()
            expected[cluster] = sorted(counts[counts == counts.max()].index)[0]
    assert dict(zip(result["cluster"], result["type"], strict=True)) == {
        c: expected.get(c, "") for c in result["cluster"]}
    with open(run.path / "inspection" / "votes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["expert"] for r in rows} == {"auto:labels.csv"} and all(is_automatic(r["expert"]) for r in rows)
    assert {int(r["cluster"]): r["type"] for r in rows} == {c: t for c, t in expected.items()}
    assert {r["clustering"] for r in rows} == {clustering_fingerprint(catalog)}
    info = json.loads((run.path / "inspection" / "auto_votes.json").read_text())
    assert info["automatic"] and info["expert"] == "auto:labels.csv" and info["label_map"] == GZ1_MAP
    # merge: one voter needs min_agree 1; with the default 2 every cluster falls back to UNC
    merged = merge(run, config=config)
    assert set(merged["type_flag"]) <= {"no_majority", "no_votes"} and set(merged["morph_type"]) == {"UNC"}
    merged = merge(run, config=config, min_agree=1)
    assert dict(zip(merged["cluster"], merged["morph_type"], strict=True)) == {
        c: expected.get(c, "UNC") for c in merged["cluster"]}


def test_auto_votes_errors(run, shared_data):
    labels_csv = shared_data / "gz1_sdss" / "labels.csv"
    with pytest.raises(InspectError, match="spiral_acw.*spiral_cw"):
        auto_votes(run, labels_csv, "objid", "gz1_name", _config(), exclude=GZ1_EXCLUDE)
    with pytest.raises(InspectError, match="upper case"):
        auto_votes(run, labels_csv, "objid", "gz1_name",
                   Config().update({"inspect": {"types": ["elliptical", "spiral", "edge_on", "unc"]}}),
                   label_map={"spiral_cw": "spiral", "spiral_acw": "spiral"}, exclude=GZ1_EXCLUDE)
    with pytest.raises(TableError, match="no label column"):  # the table reader's error (io.tables)
        auto_votes(run, labels_csv, "objid", "nope", _config())
    with pytest.raises(InspectError, match="auto:"):
        auto_votes(run, labels_csv, "objid", "gz1_name", _config(), label_map=GZ1_MAP,
                   exclude=GZ1_EXCLUDE, expert="alice")
    assert not (run.path / "inspection" / "votes.csv").exists()


@pytest.mark.slow
def test_extend_stage_types_every_galaxy_and_evaluate_splits(run, shared_data):
    labels_csv = shared_data / "gz1_sdss" / "labels.csv"
    config = _config()
    with pytest.raises(ExtendStageError, match="inspect"):
        extend(run, config)
    auto_votes(run, labels_csv, "objid", "gz1_name", config, label_map=GZ1_MAP, exclude=GZ1_EXCLUDE)
    merge(run, config=config, min_agree=1)
    before = run.catalog()
    extend(run, config)
    cat = run.catalog()
    assert cat["morph_type"].tolist() == before["morph_type"].tolist()  # the experts' types untouched
    for t in TYPES:
        assert f"p_{t}" in cat
    p = cat[[f"p_{t}" for t in TYPES]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    kept = consensus_labels(cat) >= 0
    ext = ~kept
    ood = cat["ml_ood"].to_numpy(bool)
    assert (ext & ood).any()  # the blank / star-like stamps of this set (as test_ood_flags_...)
    # an OOD galaxy is its own kind: type_source ood, morph_type_final OOD (not the experts' UNC)
    assert (cat["type_source"] == np.where(kept, "experts", np.where(ood, "ood", "extended"))).all()
    assert (cat.loc[kept, "morph_type_final"] == cat.loc[kept, "morph_type"]).all()
    assert cat["morph_type_final"].isin([*TYPES, "OOD"]).all() and (cat["morph_type_final"] != "").all()
    assert (cat.loc[ext & ~ood, "morph_type_final"] == cat.loc[ext & ~ood, "morph_type_ml"]).all()
    assert (cat.loc[ext & ood, "morph_type_final"] == "OOD").all()
    assert cat["ml_confident"].dtype == bool and not cat.loc[ood, "ml_confident"].any()
    # p_* are the per-type probabilities only; the classifier's own probability has its own name
    assert "p_morph_type_ml" not in cat and "ml_probability" in cat
    assert all(c[2:] in TYPES for c in cat.columns if c.startswith("p_"))
    from skymorph.io.catalog import column_info

    generic = column_info("no_such_column")[1]
    for col in ("morph_type_ml", "ml_probability", "ml_confident", "ml_ood", "ml_ood_distance", "type_source",
                "p_EDGE_ON", "has_rms", "rms_source", "has_psf", "psf_source", "psf_flux_fraction", "note",
                "nonfinite_fraction"):
        assert column_info(col)[1] != generic, col
    assert "OOD" in column_info("morph_type_final")[1] and "ood" in column_info("type_source")[1]
    report = json.loads((run.path / "extend" / "extend.json").read_text())
    assert report["n_extended"] == int(ext.sum()) and 0 <= report["cv"]["ece"] <= 1
    assert report["settings"]["input"] == "features"
    assert (run.path / "extend" / "reliability.png").stat().st_size > 0
    assert RunDir(run.path).stage_info("extend")["n_galaxies"] == GZ1_N
    fits = __import__("astropy.table", fromlist=["Table"]).Table.read(run.path / "catalog.fits")
    assert "morph_type_final" in fits.colnames
    # unchanged inputs: reused
    stamp = (run.path / "stages" / "extend.json").stat().st_mtime_ns
    extend(run, config)
    assert (run.path / "stages" / "extend.json").stat().st_mtime_ns == stamp

    result = evaluate(run, labels_csv, "objid", "gz1_name", config,
                      label_map={"spiral_cw": "spiral", "spiral_acw": "spiral"}, exclude=GZ1_EXCLUDE)
    final = result["final_types"]
    assert final["kept"]["n"] + final["extended"]["n"] == final["all"]["n"] == result["n_labelled"]
    # the kept galaxies' final types are the simulated inspection's names
    assert final["kept"]["accuracy"] == pytest.approx(result["inspection"]["accuracy"])

    # the report carries the extension: counts, confusion matrix and reliability diagram
    from skymorph.stages.validate import validate

    report_config = config.update({"validate": {"etg_types": ["ELLIPTICAL"]}})  # types are GZ1's here
    numbers = validate(run, config=report_config, progress=False)
    assert numbers["parts"]["extended"]["result"]["n_extended"] == int(ext.sum())
    html = (run.path / "report" / "report.html").read_text()
    assert 'id="extended"' in html and 'id="figure-reliability"' in html
    # the CV figure is named for what it measures; evaluate's kept / extended / all figures are shown
    assert "agreement with the expert-named clusters (3-fold CV)" in html
    assert "cross-validated accuracy" not in html
    shown = numbers["parts"]["extended"]["result"]["evaluation"]["rows"]
    expected = {k: final[k]["accuracy"] for k in ("kept", "extended", "all")}
    assert {k: v["accuracy"] for k, v in shown.items()} == expected
    assert 'id="evaluation"' in html and f"{final['extended']['accuracy']:.3g}" in html
    assert "OOD" in html and "seen by no expert" in html


def test_extend_gives_no_type_to_galaxies_with_nonfinite_features(run, shared_data):
    labels_csv = shared_data / "gz1_sdss" / "labels.csv"
    config = _config()
    auto_votes(run, labels_csv, "objid", "gz1_name", config, label_map=GZ1_MAP, exclude=GZ1_EXCLUDE)
    merge(run, config=config, min_agree=1)
    kept = consensus_labels(run.catalog()) >= 0
    rejected = np.flatnonzero(~kept)[:2]
    features = zarr.open_array(store=str(run.array_path("features")), mode="r+")
    x = np.asarray(features[:])
    x[rejected[0]] = np.nan
    x[rejected[1], 3] = np.inf
    features[:] = x
    extend(run, config, force=True)
    cat = run.catalog()
    bad = cat.iloc[rejected]
    assert bad["ml_nonfinite"].all() and bad["ml_ood"].all() and not bad["ml_confident"].any()
    assert (bad["morph_type_ml"] == "").all() and bad[[f"p_{t}" for t in TYPES]].isna().all().all()
    assert (bad["morph_type_final"] == "OOD").all() and (bad["type_source"] == "ood").all()
    assert int(cat["ml_nonfinite"].sum()) == 2
    assert run.stage_info("extend")["n_nonfinite"] == 2
    assert json.loads((run.path / "extend" / "extend.json").read_text())["n_nonfinite"] == 2


def test_physical_comparison_when_measurements_exist(run, shared_data):
    config = _config()
    auto_votes(run, shared_data / "gz1_sdss" / "labels.csv", "objid", "gz1_name", config,
               label_map=GZ1_MAP, exclude=GZ1_EXCLUDE)
    merge(run, config=config, min_agree=1)
    cat = run.catalog()
    rng = np.random.default_rng(0)
    pd.DataFrame({"id": cat["id"], "sersic_n": rng.uniform(0.5, 6, len(cat)),
                  "gini": rng.uniform(0.3, 0.7, len(cat))}).to_parquet(run.path / "measurements.parquet")
    extend(run, config)
    table = pd.read_csv(run.path / "extend" / "physical.csv")
    assert {"type", "source", "n", "median_n", "median_G"} <= set(table.columns)
    final = run.catalog()
    row = table[(table["type"] == "ELLIPTICAL") & (table["source"] == "experts")].iloc[0]
    expert_elliptical = (final["morph_type_final"] == "ELLIPTICAL") & (final["type_source"] == "experts")
    assert row["n"] == expert_elliptical.sum()


def test_cli_inspect_auto_merge_extend_and_evaluate(run, shared_data, capsys):
    labels = str(shared_data / "gz1_sdss" / "labels.csv")
    types = '["ELLIPTICAL","SPIRAL","EDGE_ON","UNC"]'
    assert cli_main(["inspect", "auto", str(run.path), "--truth", labels, "--id-col", "objid",
                     "--label-col", "gz1_name", "--set", f"inspect.types={types}", "--per-cluster", "10",
                     "--map", "spiral_cw=SPIRAL", "--map", "spiral_acw=SPIRAL",
                     "--exclude", "dont_know", "--exclude", "merger", "--merge"]) == 0
    out = capsys.readouterr().out
    assert "named automatically" in out and "merged with min_agree 1" in out
    assert cli_main(["extend", str(run.path), "--set", "extend.cv_folds=3"]) == 0
    out = capsys.readouterr().out
    assert "typed by the classifier" in out and "agreement with the expert-named clusters (3-fold CV)" in out
    assert cli_main(["evaluate", str(run.path), "--truth", labels, "--id-col", "objid",
                     "--label-col", "gz1_name", "--map", "spiral_cw=spiral", "--map", "spiral_acw=spiral",
                     "--exclude", "dont_know", "--exclude", "merger"]) == 0
    assert "extended (rejected)" in capsys.readouterr().out
    assert cli_main(["inspect", "auto", str(run.path), "--truth", labels, "--id-col", "objid",
                     "--label-col", "gz1_name"]) == 1
    assert "name no type" in capsys.readouterr().err
