"""Tests of the validation statistics and the validate stage on measured COSMOS stamps."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from skymorph import Config
from skymorph.core.stats import binned_fraction, cliffs_delta, cohens_d, ks_test, wilson_interval
from skymorph.io.rundir import RunDir
from skymorph.stages.validate import GZH_DEFAULT_COLUMNS, ValidateError, gzh_classes, validate

COSMOS_FITS = "cosmos_f814w/stamps_100/real_galaxy_catalog_26_extension_example_fits.fits"

# --- statistics -------------------------------------------------------------------------------


def test_cliffs_delta_hand_and_brute_force():
    assert cliffs_delta([1, 2, 3], [1, 2]) == pytest.approx(1 / 3)  # (3 greater - 1 smaller) / 6
    assert cliffs_delta([5, 6], [1, 2]) == 1.0
    assert cliffs_delta([1, 2], [5, 6]) == -1.0
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 20, 300).astype(float), rng.integers(3, 25, 200).astype(float)
    a[::17] = np.nan
    aa = a[np.isfinite(a)]
    brute = (np.sign(aa[:, None] - b[None, :])).mean()
    assert cliffs_delta(a, b) == pytest.approx(brute, abs=1e-12)
    assert np.isnan(cliffs_delta([], [1.0]))


def test_cohens_d_hand():
    assert cohens_d([1, 2, 3], [4, 5, 6]) == pytest.approx(-3.0)  # pooled SD 1
    # unequal sizes: pooled variance ((2*1) + (3*(5/3))) / 5 = 1.4
    a, b = [1, 2, 3], [2, 4, 4, 6]
    assert cohens_d(a, b) == pytest.approx((2 - 4) / np.sqrt((2 * 1.0 + 3 * np.var(b, ddof=1)) / 5))
    assert np.isnan(cohens_d([1.0], [1.0, 2.0]))


def test_wilson_interval_hand():
    z = sps.norm.ppf(0.975)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(z**2 / (10 + z**2))
    low, high = wilson_interval(5, 10)
    assert (low, high) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    lows, highs = wilson_interval(np.array([1, 9]), np.array([10, 10]))
    assert lows[0] == pytest.approx(1 - highs[1]) and highs[0] == pytest.approx(1 - lows[1])
    low, high = wilson_interval(0, 0)
    assert np.isnan(low) and np.isnan(high)


def test_ks_matches_scipy_and_binned_fraction():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 200), rng.normal(0.3, 1, 150)
    ref = sps.ks_2samp(a, b)
    a_nan = np.r_[a, np.nan]
    assert ks_test(a_nan, b) == pytest.approx((ref.statistic, ref.pvalue))
    values = np.arange(100.0)
    flags = values >= 50
    curve = binned_fraction(values, flags, n_bins=4)
    assert curve["n"].sum() == 100 and curve["k"].sum() == 50
    np.testing.assert_allclose(curve["fraction"], [0, 0, 1, 1])
    assert (curve["low"] <= curve["fraction"]).all() and (curve["fraction"] <= curve["high"]).all()


def test_gzh_mapping_thresholds():
    rows = [
        {"f_smooth": 0.8, "f_features": 0.1, "f_round": 0.6},                      # SPH
        {"f_smooth": 0.8, "f_features": 0.1, "f_round": 0.4},                      # not round: none
        {"f_features": 0.6, "f_clumpy_no": 0.5, "f_edgeon_no": 0.9, "f_spiral": 0.5},  # DISK
        {"f_features": 0.6, "f_clumpy_yes": 0.9, "f_clump_asym": 0.6},             # IRR (clumpy)
        {"f_odd_yes": 0.6, "f_irregular": 0.6},                                    # IRR (odd)
    ]
    table = pd.DataFrame([{GZH_DEFAULT_COLUMNS[k]: v for k, v in r.items()} for r in rows])
    table = table.reindex(columns=list(GZH_DEFAULT_COLUMNS.values())).fillna(0.0)
    assert gzh_classes(table).tolist() == ["SPH", "", "DISK", "IRR", "IRR"]
    renamed = table.rename(columns={GZH_DEFAULT_COLUMNS["f_smooth"]: "smooth"})
    with pytest.raises(ValidateError, match="f_smooth"):
        gzh_classes(renamed)
    assert gzh_classes(renamed, {"f_smooth": "smooth"}).tolist()[0] == "SPH"


# --- the stage --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def typed_run(cosmos_run, tmp_path_factory):
    """The 100 COSMOS stamps, measured, with types given by a rule on the measured Sersic n."""
    from skymorph.stages.measure import measure

    path = tmp_path_factory.mktemp("validate") / "run"
    shutil.copytree(cosmos_run.path, path)
    run = RunDir(path)
    measure(run, Config().update({"measure": {"workers": 2, "chunk_size": 25}}), progress=False)
    m = pd.read_parquet(path / "measurements.parquet")
    n = m["sersic_n"].to_numpy()
    # The faint COSMOS stamps have n < 2.5 almost everywhere: split at quartiles so each type exists.
    q = np.nanquantile(n, [0.25, 0.5, 0.75])
    types = np.select([n >= q[2], n >= q[1], n >= q[0], np.isfinite(n)], ["SPH", "ETD", "LTD", "IRR"], "")
    rng = np.random.default_rng(0)
    types[rng.random(len(types)) < 0.08] = "UNC"
    consensus = rng.random(len(types)) < 0.6
    # catalog written before measure has run would lack the measurement columns: validate joins them
    run.write_catalog(pd.DataFrame({
        "id": m["id"], "cluster_kmeans": 0, "cluster_birch": 0, "cluster_agglomerative": 0,
        "cluster": np.where(consensus, 0, -1), "consensus": consensus, "morph_type": types}))
    # 'features' from the real pixels (10x10 block means), for the UMAP / t-SNE maps
    stamps = np.asarray(run.open_array("stamps"))
    feats = stamps.reshape(len(stamps), 10, 10, 10, 10).mean(axis=(2, 4)).reshape(len(stamps), -1)
    arr = run.create_array("features", feats.shape, 64)
    arr[:] = feats.astype(np.float32)
    return run


def _gzh_table(ids: list[str]) -> pd.DataFrame:
    cols = list(GZH_DEFAULT_COLUMNS.values())
    table = pd.DataFrame(0.0, index=range(len(ids)), columns=cols)
    table.insert(0, "OBJNO", [int(i) for i in ids])
    # every third galaxy smooth and round (SPH), the others featured disks
    sph = np.arange(len(ids)) % 3 == 0
    table.loc[sph, [GZH_DEFAULT_COLUMNS[k] for k in ("f_smooth", "f_round")]] = 0.9
    for key, value in (("f_features", 0.8), ("f_clumpy_no", 0.7), ("f_edgeon_no", 0.9), ("f_spiral", 0.6)):
        table.loc[~sph, GZH_DEFAULT_COLUMNS[key]] = value
    return table


def test_validate_full_report(typed_run, shared_data):
    run = typed_run
    catalog = run.catalog()
    gzh = _gzh_table(catalog["id"].astype(str).tolist())
    summary = validate(run, physical=shared_data / COSMOS_FITS, id_col="IDENT", gzh=gzh,
                       config=Config(), progress=False)
    report = run.path / "report" / "report.html"
    numbers = json.loads((run.path / "report" / "validation.json").read_text())
    assert summary["report"] == str(report)
    text = report.read_text()
    for caption in ("Example stamps", "Fig. 8", "Fig. 9", "Fig. 10", "Fig. 11", "Fig. 12", "Fig. 13",
                    "Fig. 14", "Figs. 5f, 7: UMAP and t-SNE"):
        assert f'alt="{caption}' in text, caption
    assert text.count("data:image/png;base64,") == 9
    assert "src='http" not in text and "<script" not in text  # self-contained
    parts = numbers["parts"]
    assert numbers["columns"]["z"] == "ZPHOT" and numbers["columns"]["r_e_unit"] == "kpc"
    assert numbers["columns"]["mass"] is None  # no stellar mass in this catalog: noted, not an error
    assert any("stellar" in n for n in parts["completeness"]["notes"] + numbers["notes"])
    # medians and ETG/LTG fractions equal a direct computation on the measurements
    m = pd.read_parquet(run.path / "measurements.parquet")
    m = m.merge(catalog[["id", "morph_type", "consensus"]], on="id")
    typed = m[m["morph_type"].isin(["SPH", "ETD", "LTD", "IRR"])]
    ok = typed[typed["measure_ok"]]
    sph = ok[ok["morph_type"] == "SPH"]
    assert parts["per_type"]["result"]["medians"]["gini"]["SPH"] == pytest.approx(sph["gini"].median())
    assert parts["per_type"]["result"]["n"]["SPH"] == int((typed["morph_type"] == "SPH").sum())
    ltg = ok[ok["morph_type"] != "SPH"]
    etg_ltg = parts["etg_ltg"]["result"]
    ltg_n = ltg.loc[ltg["sersic_ok"], "sersic_n"]  # only valid Sersic fits
    assert etg_ltg["tests"]["P(n < split | LTG)"]["fraction"] == pytest.approx((ltg_n < 2.5).mean())
    above = sph["gini"] > 0.14 * sph["m20"] + 0.80
    assert etg_ltg["tests"]["P(above line | ETG)"]["k"] == int(above.sum())
    merger = ltg["gini"] > -0.14 * ltg["m20"] + 0.33
    assert etg_ltg["tests"]["P(merger region | LTG)"]["k"] == int(merger.sum())
    # the no-consensus galaxies (NOCONS, and untyped ones) are counted apart from UNC
    types = parts["types"]["result"]
    assert types["n_no_consensus"] == int(catalog["morph_type"].fillna("NOCONS").eq("NOCONS").sum())
    assert types["counts"]["UNC"] == int((catalog["morph_type"] == "UNC").sum())
    assert numbers["warnings"] == []  # FITS stamps: no non-linear warning
    assert parts["agreement"]["result"] is None and "no votes" in parts["agreement"]["notes"][0]
    # kept vs rejected: same numbers as scipy on the same columns
    kr = parts["kept_rejected"]["result"]["tests"]
    kept = m["consensus"].to_numpy()
    gini = m["gini"].where(m["nonparam_ok"]).to_numpy()  # valid values only
    ref = sps.ks_2samp(gini[kept & np.isfinite(gini)], gini[~kept & np.isfinite(gini)])
    assert kr["gini"]["ks_pvalue"] == pytest.approx(ref.pvalue)
    assert {"snr_pixel", "ZPHOT", "MAG", "sersic_n", "r_e", "gini", "m20"} <= set(kr)
    curve = parts["completeness"]["result"]["curves"]["snr_pixel"]
    assert sum(curve["n"]) == len(catalog)
    # maps computed from 'features' (no embedding_2d in this run)
    assert parts["maps"]["result"]["maps"] == ["UMAP", "t-SNE"]
    # GZH: SPH at every third row of the catalog (as _gzh_table); agreement = matches over compared
    g = parts["gzh"]["result"]
    to_gzh = {"SPH": "SPH", "ETD": "DISK", "LTD": "DISK", "IRR": "IRR"}
    ours = catalog.set_index("id")["morph_type"].map(to_gzh)
    theirs = pd.Series(np.where(np.arange(len(catalog)) % 3 == 0, "SPH", "DISK"), index=catalog["id"])
    both = ours.notna()
    assert g["n_compared"] == int(both.sum())
    assert g["agreement"]["k"] == int((ours[both] == theirs[both]).sum())


@pytest.mark.slow
def test_each_quantity_only_where_its_own_flag_says_valid(typed_run):
    """Issue 20 item 1: on the COSMOS stamps a dozen Sersic fits run away (flag_sersic = 2, n up to
    ~200); the catalog keeps their raw values with sersic_ok false, and the report's medians, Fig. 8,
    Fig. 12 and the Fig. 14 statistics leave them out and say how many and why."""
    run = typed_run
    validate(run, config=Config(), progress=False)
    m = pd.read_parquet(run.path / "measurements.parquet")
    bad_fit = m["flag_sersic"] >= 2
    assert bad_fit.sum() >= 8 and m.loc[bad_fit, "sersic_n"].max() > 20  # the run-away fits exist
    # raw values kept, per-family validity columns, measure_ok = statmorph flag 0/1
    assert (m["sersic_ok"] == ((m["flag_sersic"].between(0, 1)) & m["sersic_n"].notna())).all()
    assert (m["nonparam_ok"] == m["flag"].between(0, 1)).all()
    assert (m["measure_ok"] == m["nonparam_ok"]).all()
    assert (m["g2_reliable"] <= m["nonparam_ok"]).all()
    assert m.loc[bad_fit, "sersic_n"].notna().all()
    import pyarrow.parquet as pq

    schema = pq.read_schema(run.path / "measurements.parquet")
    for col in ("sersic_ok", "nonparam_ok", "measure_ok"):
        assert b"flag" in schema.field(col).metadata[b"description"]
    numbers = json.loads((run.path / "report" / "validation.json").read_text())
    parts = numbers["parts"]
    cat = run.catalog()[["id", "morph_type", "consensus"]].merge(m, on="id")
    typed = cat[cat["morph_type"].isin(["SPH", "ETD", "LTD", "IRR"])]
    for t, median in parts["per_type"]["result"]["medians"]["sersic_n"].items():
        good = typed[(typed["morph_type"] == t) & typed["sersic_ok"]]
        assert median == pytest.approx(good["sersic_n"].median())
    excluded = parts["per_type"]["result"]["excluded"]["sersic_n"]
    assert excluded["n_excluded"] == int((typed["sersic_n"].notna() & ~typed["sersic_ok"]).sum()) > 0
    kr = parts["kept_rejected"]["result"]
    n_compared = kr["tests"]["sersic_n"]["n_kept"] + kr["tests"]["sersic_n"]["n_rejected"]
    assert n_compared == int(m["sersic_ok"].sum())
    assert kr["excluded"]["sersic_n"]["n_excluded"] == int(bad_fit.sum())
    html = (run.path / "report" / "report.html").read_text()
    n_bad = int(bad_fit.sum())
    assert f"Sersic n, r_e (kpc): {n_bad} of {int(m['sersic_n'].notna().sum())} galaxies left out" in html
    assert f"{excluded['n_excluded']} of {excluded['n_raw']} galaxies left out (flag_sersic" in html
    # item 5: the background-corrected asymmetry can be negative: said in the report and the column
    assert (m["asymmetry"] < 0).any()
    assert 'id="asymmetry-caveat"' in html and "can be negative" in html
    assert b"can be negative" in schema.field("asymmetry").metadata[b"description"]


def test_validate_without_optional_inputs_skips_with_notes(typed_run, tmp_path, capsys):
    from skymorph.cli import main

    path = tmp_path / "run"
    shutil.copytree(typed_run.path, path, ignore=shutil.ignore_patterns("features.zarr"))
    run = RunDir(path)
    run.open_array  # noqa: B018 - the copy is a valid run
    xy = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    arr = run.create_array("embedding_2d", xy.shape, 64)
    arr[:] = xy
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "gzh" in out
    numbers = json.loads((path / "report" / "validation.json").read_text())
    parts = numbers["parts"]
    assert parts["gzh"]["result"] is None and parts["gzh"]["notes"]
    assert parts["maps"]["result"]["maps"] == ["UMAP"]  # t-SNE needs features/embedding
    assert any("t-SNE skipped" in n for n in parts["maps"]["notes"])
    assert parts["per_type"]["result"]["r_e_unit"] in ("kpc", "px")


def test_validate_errors(typed_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(typed_run.path, path, ignore=shutil.ignore_patterns("features.zarr"))
    run = RunDir(path)
    catalog = run.catalog()
    run.write_catalog(catalog.drop(columns=["morph_type"]))
    with pytest.raises(ValidateError, match="no morph_type column.*inspect"):
        validate(run, progress=False)
    run.write_catalog(catalog.assign(morph_type=""))
    with pytest.raises(ValidateError, match="morph_type is empty"):
        validate(run, progress=False)
    run.write_catalog(catalog)
    with pytest.raises(ValidateError, match="no id column"):
        validate(run, physical=pd.DataFrame({"x": [1]}), progress=False)
    (path / "catalog.parquet").unlink()
    with pytest.raises(ValidateError, match="no catalog"):
        validate(run, progress=False)


def test_validate_mass_cut_and_kpc(typed_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(typed_run.path, path, ignore=shutil.ignore_patterns("features.zarr"))
    run = RunDir(path)
    catalog = run.catalog()
    ids = catalog["id"].astype(str)
    # a user catalog with a log stellar mass and a redshift, matched on its own id column
    log_mass = np.linspace(8.0, 11.0, len(ids))
    phys = pd.DataFrame({"ID": ids.astype(int), "lp_mass_med": log_mass, "z": 0.5})
    summary = validate(run, physical=phys, id_col="ID", progress=False)
    assert summary["columns"]["mass"] == "log_mass" and summary["columns"]["z"] == "z"
    m = pd.read_parquet(path / "measurements.parquet").merge(catalog[["id", "morph_type"]], on="id")
    # every typed galaxy above the mass cut counts; each value is used where its own flag allows
    massive = m.assign(lm=log_mass)[lambda d: d["lm"] > 9.0]
    n_sph = int((massive["morph_type"] == "SPH").sum())
    assert summary["parts"]["per_type"]["result"]["n"]["SPH"] == n_sph
    # r_e in kpc at z = 0.5 with 0.03"/px: Planck18 gives ~6.2 kpc/arcsec
    from astropy.cosmology import Planck18

    scale = Planck18.kpc_proper_per_arcmin(0.5).value / 60 * 0.03
    sph = massive[(massive["morph_type"] == "SPH") & massive["sersic_ok"]]
    expected = float(np.median(sph["sersic_rhalf"] * scale))
    assert summary["parts"]["per_type"]["result"]["medians"]["r_e"]["SPH"] == pytest.approx(expected)
    assert "log_mass" in summary["parts"]["completeness"]["result"]["curves"]
    assert summary["parts"]["maps"]["result"] is None  # no arrays to map: skipped with a note
