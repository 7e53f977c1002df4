"""The whole chain on the bundled COSMOS stamps: run -> votes over HTTP -> merge -> measure -> validate."""

from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import pytest

import skymorph
from skymorph.io.datasets import cosmos_demo


@pytest.fixture(scope="module")
def typed_run(tmp_path_factory):
    """A real run of every stage with small but real settings, clusters named by three experts."""
    # the paper's chain (CAE and APCT on), with small but real settings
    config = skymorph.Config().update({
        "denoise": {"enabled": True, "epochs": 3, "min_steps": 60},
        "polar": {"enabled": True},
        "encode": {"encoder": "efficientnet_lite0", "rotations": 1},
        "reduce": {"dims": 8, "n_epochs": 100},
        "cluster": {"k": 6},
        "measure": {"workers": 2},
    })
    out = tmp_path_factory.mktemp("pipeline") / "run"
    run = skymorph.run([cosmos_demo()], out, config, progress=False)

    server = skymorph.make_server(run.path, config, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        clusters = sorted(int(c) for c in set(run.catalog()["cluster"]) if c >= 0)
        votes = {"ana": "SPH", "ben": "SPH", "chen": "LTD"}
        for expert, kind in votes.items():
            for cluster in clusters:
                body = json.dumps({"expert": expert, "cluster": cluster, "type": kind}).encode()
                request = urllib.request.Request(f"{server.url}/api/vote", body,
                                                 {"Content-Type": "application/json",
                                                  "X-Skymorph-Token": server.token})
                with urllib.request.urlopen(request) as response:
                    assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()
    skymorph.merge(run.path, config=config)
    skymorph.measure(run.path, config, progress=False)
    return run, config


@pytest.mark.slow
def test_run_writes_the_catalog_contract(typed_run):
    run, _ = typed_run
    catalog = run.catalog()
    assert len(catalog) == 100
    for column in ("id", "cluster_kmeans", "cluster_birch", "cluster_agglomerative", "cluster",
                   "consensus", "morph_type"):
        assert column in catalog.columns
    agree = ((catalog["cluster_kmeans"] == catalog["cluster_birch"])
             & (catalog["cluster_kmeans"] == catalog["cluster_agglomerative"]))
    assert (catalog["consensus"] == agree).all()
    assert (catalog.loc[~catalog["consensus"], "cluster"] == -1).all()
    assert 0.2 < catalog["consensus"].mean() <= 1.0
    for array, shape in (("denoised", (100, 100, 100)), ("polar", (100, 125, 100)),
                         ("features", (100, 1280)), ("embedding", (100, 8))):
        assert run.open_array(array).shape == shape
    assert list((run.path / "inspection" / "montages").glob("*.png"))


@pytest.mark.slow
def test_votes_become_types_for_consensus_galaxies(typed_run):
    run, _ = typed_run
    catalog = run.catalog()
    assert (catalog.loc[catalog["consensus"], "morph_type"] == "SPH").all()
    assert (catalog.loc[~catalog["consensus"], "morph_type"] == "NOCONS").all()


@pytest.mark.slow
def test_measure_and_validate_on_the_typed_run(typed_run):
    run, config = typed_run
    catalog = run.catalog()
    assert {"gini", "m20", "sersic_n"} <= set(catalog.columns)
    assert np.isfinite(catalog["gini"]).mean() > 0.9
    result = skymorph.validate(run.path, config=config, progress=False)
    report = run.path / "report" / "report.html"
    assert report.exists() and report.stat().st_size > 50_000
    assert "data:image/png;base64," in report.read_text()
    numbers = json.loads((run.path / "report" / "validation.json").read_text())
    assert numbers and isinstance(result, dict)


@pytest.mark.slow
def test_rerun_with_unchanged_settings_recomputes_nothing(typed_run):
    run, config = typed_run
    before = {stage: run.stage_info(stage)["finished"]
              for stage in ("ingest", "denoise", "polar", "encode", "reduce", "cluster")}
    skymorph.run([cosmos_demo()], run.path, config, progress=False)
    after = {stage: run.stage_info(stage)["finished"] for stage in before}
    assert after == before
