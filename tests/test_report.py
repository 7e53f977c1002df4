"""The validation report: agreement statistics, caveats and the page as Chromium shows it.

The run here is the bundled COSMOS stamps with a typed catalog and measurement
columns written directly (no statmorph run, so the test is quick), three experts'
votes plus an automatic voter, galaxies without consensus, and a few galaxies
marked as coming from JPEG/PNG images.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from skymorph import Config
from skymorph.config import ConfigError
from skymorph.core.stats import (
    agreement_words,
    bootstrap_interval,
    fleiss_kappa,
    krippendorff_alpha_nominal,
    rating_counts,
)
from skymorph.core.validation import (
    NO_CONSENSUS,
    expert_agreement,
    g2_reliability,
    gini_m20_region,
    nonlinear_mask,
    normalise_types,
    type_counts,
)
from skymorph.io.rundir import RunDir
from skymorph.report import Section, render
from skymorph.stages.validate import validate

# --- agreement statistics -------------------------------------------------------------------------


def test_fleiss_kappa_by_hand():
    # 3 clusters, 3 experts, 2 types: AAA, AAB, BBB.
    # P_i = 1, 1/3, 1 -> P_bar = 7/9; p_A = 5/9, p_B = 4/9 -> P_e = 41/81; kappa = (7/9 - 41/81) / (40/81)
    counts = np.array([[3, 0], [2, 1], [0, 3]])
    assert fleiss_kappa(counts) == pytest.approx(22 / 40)
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories, kappa = 0.210
    wiki = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                     [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(wiki) == pytest.approx(0.20993, abs=1e-5)
    assert fleiss_kappa(np.array([[3, 0], [0, 3]])) == 1.0  # perfect agreement
    assert np.isnan(fleiss_kappa(np.array([[3, 0], [3, 0]])))  # one category only: chance = 1
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa(np.array([[3, 0], [1, 1]]))


def test_krippendorff_alpha_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal example: 0.743
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
            [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units, values = zip(*[(u, v) for row in data for u, v in enumerate(row) if v is not None], strict=True)
    counts, unit_ids, levels = rating_counts(np.array(units), np.array(values))
    assert unit_ids == list(range(12)) and levels == [1, 2, 3, 4, 5]
    assert counts[11].sum() == 1  # unit 12 has one rating: not pairable, left out
    assert krippendorff_alpha_nominal(counts) == pytest.approx(0.743, abs=5e-4)


def test_bootstrap_interval_and_words():
    counts = np.array([[3, 0], [2, 1], [0, 3], [3, 0], [1, 2], [0, 3]] * 3)
    kappa = fleiss_kappa(counts)
    low, high = bootstrap_interval(fleiss_kappa, counts, 0.9, n_boot=400, seed=1)
    assert low < kappa < high and -1 <= low and high <= 1
    assert bootstrap_interval(fleiss_kappa, counts, 0.9, n_boot=400, seed=1) == (low, high)
    wide = bootstrap_interval(fleiss_kappa, counts, 0.99, n_boot=400, seed=1)
    assert wide[0] <= low and wide[1] >= high
    assert [agreement_words(k) for k in (-0.1, 0.1, 0.3, 0.5, 0.7, 0.9, float("nan"))] == [
        "poor (below chance)", "slight", "fair", "moderate", "substantial", "almost perfect", "undefined"]


def test_expert_agreement_leaves_out_automatic_votes():
    rows = []
    plan = {"Ann": "SSEELI", "Bob": "SSELLI", "Carol": "SEELL", "auto:gz.csv": "SSSSSS"}
    names = {"S": "SPH", "E": "ETD", "L": "LTD", "I": "IRR"}
    for expert, types in plan.items():
        rows += [{"expert": expert, "cluster": c, "type": names[t]} for c, t in enumerate(types)]
    votes = pd.DataFrame(rows)
    result = expert_agreement(votes, ["SPH", "ETD", "LTD", "IRR", "UNC"], 0.95, seed=0, n_boot=200)
    assert result["experts"] == ["Ann", "Bob", "Carol"] and result["automatic"] == ["auto:gz.csv"]
    assert result["n_automatic_votes"] == 6 and result["n_votes"] == 17
    # Carol left cluster 5 open: kappa on the 5 clusters all three rated, of the humans' votes only
    assert result["n_complete"] == 5
    human = votes[~votes["expert"].str.startswith("auto:") & (votes["cluster"] < 5)]
    counts, _, _ = rating_counts(human["cluster"].to_numpy(), human["type"].to_numpy())
    assert result["kappa"] == pytest.approx(fleiss_kappa(counts))
    assert result["kappa_low"] <= result["kappa"] <= result["kappa_high"]
    assert result["n_alpha"] == 6  # alpha also takes cluster 5 (two ratings)
    assert result["pairwise"]["Ann / Bob"]["k"] == 5 and result["pairwise"]["Ann / Carol"]["n"] == 5
    assert result["per_cluster"][5] == {"Ann": "IRR", "Bob": "IRR", "auto:gz.csv": "SPH"}
    one = expert_agreement(votes[votes["expert"] == "Ann"], ["SPH"], 0.95)
    assert one["kappa"] is None and one["kappa_words"] == "undefined"


# --- types and caveats ----------------------------------------------------------------------------


def test_no_consensus_is_not_unclassified():
    types = normalise_types(pd.Series(["sph", "", None, " UNC ", "ETD", NO_CONSENSUS]))
    assert types.tolist() == ["SPH", NO_CONSENSUS, NO_CONSENSUS, "UNC", "ETD", NO_CONSENSUS]
    counts = type_counts(pd.DataFrame({"morph_type": types, "consensus": [1, 0, 0, 1, 1, 0]}),
                         ["SPH", "ETD", "LTD", "IRR", "UNC"])
    assert counts["counts"] == {"SPH": 1, "ETD": 1, "LTD": 0, "IRR": 0, "UNC": 1}
    assert counts["n_no_consensus"] == 3 and counts["n_kept"] == 3 and counts["n_catalog"] == 6


def test_gini_m20_regions_of_lotz_2008():
    # merger line G = -0.14 M20 + 0.33, early/late line G = 0.14 M20 + 0.80 (they cross at M20 = -1.68)
    gini = np.array([0.65, 0.60, 0.40, 0.55, np.nan])
    m20 = np.array([-1.0, -2.5, -1.5, -2.0, -1.0])
    # 0.65 > 0.47: merger; 0.60 < 0.68 and > 0.45: E/S0/Sa; 0.40 < 0.59: Sb-Ir; 0.55 < 0.61, > 0.52: E/S0/Sa
    assert gini_m20_region(gini, m20).tolist() == ["merger", "E/S0/Sa", "Sb-Ir", "E/S0/Sa", ""]


def test_nonlinear_inputs_from_the_flag_or_the_suffix():
    table = pd.DataFrame({"origin": ["a.fits[3]", "b.JPG", "c.png", "d.npy", ""]})
    nonlinear, known, source = nonlinear_mask(table)
    assert source == "origin suffix" and nonlinear.tolist() == [False, True, True, False, False]
    assert known.tolist() == [True, True, True, True, False]
    flagged = table.assign(linear=[True, True, False, None, True])  # the column wins over the suffix
    nonlinear, known, source = nonlinear_mask(flagged)
    assert source == "linear column" and nonlinear.tolist() == [False, False, True, False, False]
    assert not known[3]


def test_g2_verdict():
    rng = np.random.default_rng(0)
    faint = pd.DataFrame({"g2": rng.uniform(1.85, 1.98, 50), "sn_per_pixel": 2.0})
    verdict = g2_reliability(faint, 0.0)
    assert not verdict["reliable"]
    assert "saturated" in verdict["reason"] and "paper's definition" in verdict["reason"]
    spread = pd.DataFrame({"g2": np.r_[rng.uniform(0.3, 0.8, 25), rng.uniform(1.5, 1.9, 25)]})
    assert g2_reliability(spread, 2.45)["reliable"]
    assert g2_reliability(pd.DataFrame({"gini": [0.5]}), 0.0) is None


def test_template_escapes_values_from_the_run():
    evil = "<script>alert(1)</script>"
    section = Section(key="agreement", title="Agreement", result={
        "experts": [evil, "Bob"], "automatic": [], "n_automatic_votes": 0, "n_votes": 4, "n_clusters": 2,
        "confidence": 0.9, "kappa": 0.5, "kappa_low": 0.1, "kappa_high": 0.8, "kappa_words": "moderate",
        "alpha": 0.5, "n_alpha": 2, "n_complete": 2, "pairwise": {}, "per_cluster": {0: {evil: "SPH"}}})
    page = render({"run_path": evil, "version": "x", "generated": "now", "settings": [], "config_toml": evil,
                   "stages": {}, "warnings": [evil], "notes": [evil], "sections": [section], "labels": {},
                   "confidence": 0.9})
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "90% bootstrap interval" in page


# --- the report in a browser ----------------------------------------------------------------------

TYPES = ["SPH", "ETD", "LTD", "IRR", "UNC"]
CLUSTER_TYPES = ["SPH", "ETD", "LTD", "IRR", "UNC", "SPH"]
VOTES = {  # cluster -> types named by Ann, Bob, Carol; the automatic voter always says SPH
    0: "SPH SPH SPH", 1: "ETD ETD LTD", 2: "LTD LTD LTD", 3: "IRR IRR ETD", 4: "UNC IRR UNC",
    5: "SPH ETD SPH"}


@pytest.fixture(scope="module")
def report_run(cosmos_run, tmp_path_factory):
    """COSMOS stamps with six consensus clusters, no-consensus galaxies, votes and measurements."""
    path = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(cosmos_run.path, path)
    run = RunDir(path)
    sources = run.sources()
    n = len(sources)
    rng = np.random.default_rng(0)
    cluster = np.arange(n) % 7 - 1  # -1: no consensus (every 7th galaxy)
    consensus = cluster >= 0
    mtype = np.array([CLUSTER_TYPES[c] if c >= 0 else "" for c in cluster], dtype=object)
    early = np.isin(mtype, ["SPH"])
    catalog = pd.DataFrame({
        "id": sources["id"], "cluster_kmeans": np.maximum(cluster, 0), "cluster_birch": 0,
        "cluster_agglomerative": 0, "cluster": cluster, "consensus": consensus, "morph_type": mtype,
        "gini": np.where(early, 0.58, 0.47) + rng.normal(0, 0.03, n),
        "m20": np.where(early, -2.1, -1.4) + rng.normal(0, 0.2, n),
        "concentration": rng.uniform(2, 4, n), "asymmetry": rng.normal(0.05, 0.05, n),
        "smoothness": rng.normal(0.02, 0.02, n), "multimode": rng.uniform(0, 1, n),
        "intensity": rng.uniform(0, 1, n), "deviation": rng.uniform(0, 0.5, n),
        "psi": rng.uniform(1, 8, n), "g2": rng.uniform(1.85, 1.98, n), "sn_per_pixel": 2.5,
        "sersic_n": np.where(early, 4.0, 1.0) * rng.lognormal(0, 0.2, n),
        "sersic_rhalf": rng.uniform(3, 12, n),
        "measure_ok": True,
        # the first five galaxies came from JPEG files (a 'linear' column, as ingest writes it)
        "linear": np.arange(n) >= 5,
    })
    run.write_catalog(catalog)
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    run.create_array("embedding_2d", xy.shape, 64)[:] = xy
    rows = [{"expert": e, "cluster": c, "type": t, "time": "2026-01-01T00:00:00Z", "clustering": ""}
            for c, named in VOTES.items()
            for e, t in zip(("Ann", "Bob", "Carol"), named.split(), strict=True)]
    rows += [{"expert": "auto:truth.csv", "cluster": c, "type": "SPH", "time": "2026-01-01T00:00:00Z",
              "clustering": ""} for c in VOTES]
    (path / "inspection").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(path / "inspection" / "votes.csv", index=False)
    validate(run, config=run.config().update({"validate": {"confidence": 0.9}}), progress=False)
    return run


def test_report_numbers(report_run):
    numbers = json.loads((report_run.path / "report" / "validation.json").read_text())
    parts = numbers["parts"]
    # kappa by hand: per-cluster counts over SPH, ETD, LTD, IRR, UNC
    counts = np.array([[3, 0, 0, 0, 0], [0, 2, 1, 0, 0], [0, 0, 3, 0, 0], [0, 1, 0, 2, 0], [0, 0, 0, 1, 2],
                       [2, 1, 0, 0, 0]])
    p_i = (counts * (counts - 1)).sum(axis=1) / 6
    p_j = counts.sum(axis=0) / 18
    kappa = (p_i.mean() - (p_j**2).sum()) / (1 - (p_j**2).sum())
    agreement = parts["agreement"]["result"]
    assert agreement["kappa"] == pytest.approx(kappa) and agreement["automatic"] == ["auto:truth.csv"]
    types = parts["types"]["result"]
    n = len(report_run.catalog())
    assert types["n_no_consensus"] == int(np.sum(np.arange(n) % 7 == 0))
    assert types["counts"]["UNC"] == int(np.sum(np.arange(n) % 7 == 5))
    assert numbers["warnings"] and "5 of 100 galaxies" in numbers["warnings"][0]
    # no g2_reliable column and S/N 2.5 < g2_min_sn: G2 is reliable for none, and the note says so
    g2 = parts["per_type"]["result"]["g2"]
    assert g2["n_reliable"] == 0 and g2["saturation"]["reliable"] is False
    html = (report_run.path / "report" / "report.html").read_text()
    assert "G2 is not reliable for any of the" in html and "G2 is reliable at this run" not in html
    etg = parts["etg_ltg"]["result"]
    assert etg["etg_types"] == ["SPH"] and etg["ltg_types"] == ["ETD", "LTD", "IRR"]
    assert etg["tests"]["P(n >= split | ETG)"]["confidence"] == 0.9
    assert "P(merger region | LTG)" in etg["tests"]


@pytest.mark.browser
def test_report_in_chromium(report_run, browser_page):
    numbers = json.loads((report_run.path / "report" / "validation.json").read_text())
    page = browser_page
    page.goto((report_run.path / "report" / "report.html").as_uri())
    page.wait_for_load_state("load")
    # every figure present and decoded, shown at least ~1200 CSS px wide where it spans the page
    figures = page.evaluate("""[...document.querySelectorAll('figure')].map(f => {
        const img = f.querySelector('img');
        return {id: f.id, title: f.querySelector('h3').textContent, complete: img.complete,
                natural: img.naturalWidth, shown: img.getBoundingClientRect().width};
    })""")
    ids = {f["id"] for f in figures}
    assert {"figure-stamps", "figure-fig8", "figure-fig9", "figure-fig10", "figure-fig11", "figure-fig12",
            "figure-fig13", "figure-fig14", "figure-maps"} <= ids, ids
    for f in figures:
        assert f["complete"] and f["natural"] > 0, f
        assert f["natural"] >= 2 * f["shown"] - 2, f  # 2x pixels for the width shown
    wide = [f for f in figures if f["id"] in ("figure-stamps", "figure-fig9", "figure-fig13", "figure-fig14")]
    assert all(f["shown"] >= 1200 for f in wide), wide
    # one title per figure: its caption, shown once on the page
    text = page.inner_text("body")
    for f in figures:
        assert text.count(f["title"]) == 1, f["title"]
    # the settings block: encoder, k and d, with where each comes from
    settings = page.inner_text("#settings table")
    assert "efficientnet_lite2" in settings and "k (clusters)" in settings
    assert "d (UMAP dimensions)" in settings
    assert "config.toml [cluster] k" in settings
    assert page.locator("#settings details pre").count() == 1
    # kappa: the value, its interval at the configured 90% and its meaning; automatic votes named
    kappa = numbers["parts"]["agreement"]["result"]["kappa"]
    assert page.inner_text("#kappa-value") == f"{kappa:.2f}"
    assert "90% bootstrap interval" in page.inner_text("#kappa")
    assert "auto:truth.csv" in page.inner_text("#automatic-voters")
    assert not re.search(r"95% (CI|Wilson|bootstrap)", text)  # the level printed is the setting's
    assert "90% CI" in page.inner_text("#etg-ltg")
    # the non-linear warning, prominent, before the settings
    warning = page.locator(".warning[role=alert]")
    assert warning.count() == 1 and warning.is_visible()
    assert "not physical" in warning.inner_text() and "5 of 100" in warning.inner_text()
    assert page.evaluate("document.querySelector('.warning').getBoundingClientRect().top "
                         "< document.querySelector('#settings').getBoundingClientRect().top")
    # no-consensus galaxies are named so, on their own row, and UNC keeps its own
    rows = {r[0]: r for r in page.evaluate(
        "[...document.querySelectorAll('#type-counts tr')].map(r => [...r.cells].map(c => c.textContent))")}
    n_nocons = numbers["parts"]["types"]["result"]["n_no_consensus"]
    assert rows["no consensus"][2] == str(n_nocons)
    assert rows["UNC"][2] == str(numbers["parts"]["types"]["result"]["counts"]["UNC"])
    assert not re.search(r"unclassified\W+\(?" + str(n_nocons), text)
    # the G2 caveat beside the G2 figure
    caveat = page.inner_text("#figure-fig10 .caveat")
    assert "not reliable" in caveat and "symmetric gradient pairs" in caveat


def test_g2_note_follows_the_per_galaxy_flag(report_run, tmp_path):
    """Issue 20 item 4: the note gives the share of galaxies whose own g2_reliable flag holds, per
    type, and the G2 medians use only those galaxies."""
    path = tmp_path / "run"
    shutil.copytree(report_run.path, path)
    run = RunDir(path)
    catalog = run.catalog()
    reliable = np.arange(len(catalog)) % 3 == 0
    run.write_catalog(catalog.assign(g2_reliable=reliable, g2=np.where(reliable, 0.3, 1.9)))
    summary = validate(run, config=run.config().update({"validate": {"stamps_per_type": 0}}), progress=False)
    result = summary["parts"]["per_type"]["result"]
    typed = catalog.assign(g2_reliable=reliable)[catalog["morph_type"].isin(["SPH", "ETD", "LTD", "IRR"])]
    for t, f in result["g2"]["by_type"].items():
        sel = typed["morph_type"] == t
        assert (f["k"], f["n"]) == (int(typed.loc[sel, "g2_reliable"].sum()), int(sel.sum()))
    assert all(m == pytest.approx(0.3) for m in result["medians"]["g2"].values())  # reliable ones only
    html = (path / "report" / "report.html").read_text()
    k, n = int(typed["g2_reliable"].sum()), len(typed)
    assert f"for {k} of {n} galaxies" in html and "use only these reliable galaxies" in html
    assert "G2 is reliable at this run" not in html


def test_report_cosmetics_without_human_voters_or_measurements(report_run, tmp_path):
    """Issue 20 item 12: only an automatic voter -> no '0 clusters ... ()' sentence; measure never
    ran -> no 'Sersic fits: on'."""
    path = tmp_path / "run"
    shutil.copytree(report_run.path, path)
    run = RunDir(path)
    votes = pd.read_csv(path / "inspection" / "votes.csv")
    votes[votes["expert"].str.startswith("auto:")].to_csv(path / "inspection" / "votes.csv", index=False)
    assert run.stage_info("measure") is None
    validate(run, config=run.config().update({"validate": {"stamps_per_type": 0}}), progress=False)
    html = (path / "report" / "report.html").read_text()
    agreement = html[html.index('<section id="agreement">'):]
    agreement = agreement[:agreement.index("</section>")]
    assert "0 clusters" not in agreement and "()" not in agreement
    assert "found 0" in agreement  # the headline still says why kappa is missing
    row = re.search(r"<td>Sersic fits</td><td><code>([^<]*)</code>", html)
    assert row and row.group(1) == "none: measure has not run"


def test_long_ids_under_the_example_stamps_do_not_overlap():
    """Issue 20 item 12: 18-digit SDSS ids under the report's thumbnails stay inside their panels."""
    import matplotlib.pyplot as plt

    from skymorph.report.figures import stamps_axes

    rng = np.random.default_rng(0)
    ids = [str(587722981736480000 + i) for i in range(16)]
    images = {"SPH": [(ids[i], rng.random((20, 20))) for i in range(8)],
              "LTD": [(ids[8 + i], rng.random((20, 20))) for i in range(8)]}
    fig = stamps_axes(images, {"SPH": "spheroid", "LTD": "late-type disk"}, 8)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for row in fig.axes[:8], fig.axes[8:]:
        boxes = sorted((ax.xaxis.label.get_window_extent(renderer) for ax in row), key=lambda b: b.x0)
        for left, right in zip(boxes, boxes[1:], strict=False):
            assert left.x1 < right.x0  # no label runs into its neighbour
        for ax in row:
            label = ax.xaxis.label.get_window_extent(renderer)
            panel = ax.get_window_extent(renderer)
            assert label.width <= panel.width * 1.05
    text = "".join(ax.get_xlabel().replace("\n", "") for ax in fig.axes)
    assert all(i in text for i in ids)  # every id is shown whole
    plt.close(fig)


def test_report_without_nonlinear_inputs_has_no_warning(report_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(report_run.path, path)
    run = RunDir(path)
    run.write_catalog(run.catalog().drop(columns=["linear"]))  # FITS stamps only: origin says so
    summary = validate(run, config=run.config().update({"validate": {"stamps_per_type": 0}}), progress=False)
    assert summary["warnings"] == []
    page = (path / "report" / "report.html").read_text()
    assert 'role="alert"' not in page and "figure-stamps" not in page


def test_etg_types_must_be_expert_types(report_run):
    before = (report_run.path / "report" / "validation.json").read_text()
    for bad, match in ((["ELL"], "not in inspect.types"), ([], "empty"),
                       (["SPH", "ETD", "LTD", "IRR"], "no late type")):
        with pytest.raises(ConfigError, match=match):
            validate(report_run, etg_types=bad, progress=False)
    assert (report_run.path / "report" / "validation.json").read_text() == before  # nothing written
    config = Config().update({"inspect": {"types": ["E", "S0", "SP", "UNC"]},
                              "validate": {"etg_types": ["E", "S0"]}})
    config.check("validate")  # a run with other types names its own early types


@pytest.fixture(scope="module")
def browser_page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield page
    page.close()


def test_kept_rejected_figure_with_a_group_outside_the_bins():
    """Fig. 14 with few valid values: a group whose values all lie outside the 1-99% bins, or a
    constant column, gave a divide-by-zero in the density and the whole part was dropped."""
    from skymorph.report.figures import kept_rejected_figure

    table = pd.DataFrame({"x": [1.0] * 5 + [100.0, np.nan, np.nan],
                          "y": np.r_[np.arange(6.0), [np.nan, 5.0]]})
    kept = np.array([0, 0, 0, 0, 0, 1, 1, 1], bool)
    figure = kept_rejected_figure(table, kept, [("x", "x"), ("y", "y")], {})
    assert figure is not None
