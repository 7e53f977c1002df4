"""In headless Chromium (issue 20, item 13): an expert flags a single galaxy with a comment (kept in
flags.csv and, after merge, in the catalog); colour inputs are shown in colour; the cluster numbers
the expert sees have no gaps; the page loads with no 403 (favicon)."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from conftest import GZ1
from skymorph import Config, RunDir
from skymorph.stages.inspect import merge
from test_inspection import Server

pytestmark = pytest.mark.browser


@pytest.fixture
def colour_run(tmp_path) -> RunDir:
    """16 real SDSS gri JPEG cutouts, in consensus clusters 0 and 2 of a 3-cluster clustering:
    cluster 1 kept no galaxy, so the catalog's ids have a gap."""
    from skymorph import ingest

    files = sorted((GZ1 / "images").glob("*.jpeg"))[:16]
    run = ingest([str(f) for f in files], tmp_path / "run", Config(), progress=False)
    sources = run.sources()
    labels = np.where(np.arange(len(sources)) % 2 == 0, 0, 2)
    run.write_catalog(pd.DataFrame({
        "id": sources["id"], "index": sources["index"], "cluster_kmeans": labels, "cluster_birch": labels,
        "cluster_agglomerative": labels, "cluster": labels, "consensus": True, "morph_type": "",
    }))
    return run


PIXELS_JS = """(id) => {
  const img = document.getElementById(id);
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let spread = 0, n = 0;
  for (let i = 0; i < d.length; i += 4) { spread = Math.max(spread, Math.abs(d[i] - d[i + 2])); n += 1; }
  return [n, spread];
}"""


def test_expert_flags_a_galaxy_sees_colour_and_numbers_without_gaps(browser, colour_run):
    run = colour_run
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    answers: list[tuple[int, str]] = []
    page.on("response", lambda r: answers.append((r.status, r.url.split("?")[0])))
    with Server(run) as server:
        page.goto(server.server.token_url)
        page.fill("#expert-name", "Ann")
        page.click("#start")
        page.wait_for_function("document.querySelectorAll('#cluster-list li').length === 2")

        # cluster numbers: 0 and 1 as the expert sees them; the catalog's ids 0 and 2 stay in the votes
        labels = page.eval_on_selector_all("#cluster-list li span:first-child",
                                           "els => els.map(e => e.textContent)")
        assert labels == ["Cluster 0 (8)", "Cluster 1 (8)"]
        assert page.get_attribute("#cluster-list li[data-cluster='2']", "title") == "catalog cluster 2"
        page.click("#cluster-list li[data-cluster='2'] button")
        page.wait_for_function("document.getElementById('montage').dataset.cluster === '2'")
        assert page.text_content("#cluster-title").startswith("Cluster 1 \u00b7 8 galaxies")
        page.click("#types .type[data-type='SPH']")
        page.wait_for_function("document.getElementById('status').textContent === 'Saved: cluster 1 = SPH'")
        with open(run.path / "inspection" / "votes.csv", newline="") as fh:
            assert [(r["cluster"], r["type"]) for r in csv.DictReader(fh)] == [("2", "SPH")]

        # colour inputs in colour: the montage (the page moved on to cluster 0) and the zoomed galaxy
        page.wait_for_function("document.getElementById('montage').dataset.cluster === '0'")
        page.wait_for_function("document.getElementById('montage').complete && "
                               "document.getElementById('montage').naturalWidth > 0")
        n, spread = page.evaluate(PIXELS_JS, "montage")
        assert n > 0 and spread > 30
        cell = page.locator("#cells .cell").nth(3)
        stamp = int(cell.get_attribute("data-stamp"))
        cell.click()
        page.wait_for_selector("#zoom:not([hidden])")
        page.wait_for_function("document.getElementById('zoom-img').naturalWidth === 100")
        assert page.get_attribute("#zoom-img", "src").startswith(f"/colour/{stamp}.png?")
        assert page.evaluate(PIXELS_JS, "zoom-img")[1] > 30

        # flag this one galaxy with a comment
        galaxy = page.text_content("#zoom-id").removeprefix("galaxy ")
        assert not page.is_checked("#flag-check")
        page.fill("#flag-comment", "a star on the disk; =not a formula")
        assert page.is_checked("#flag-check")  # writing a comment flags it
        page.click("#flag-save")
        page.wait_for_function(f"document.getElementById('flag-status').textContent === "
                               f"'Flag saved: galaxy {galaxy}'")
        page.keyboard.press("Escape")
        assert page.get_attribute(f"#cells .cell[data-stamp='{stamp}']", "class") == "cell flagged"
        with open(run.path / "inspection" / "flags.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [(r["expert"], r["id"], r["stamp"]) for r in rows] == [("Ann", galaxy, str(stamp))]
        assert rows[0]["comment"] == "a star on the disk; =not a formula"

        # after a reload the flag and its comment are shown again
        page.goto(server.server.token_url)
        page.fill("#expert-name", "ann")
        page.click("#start")
        page.wait_for_function("document.querySelectorAll('#cluster-list li').length === 2")
        # it opens on cluster 0, the one Ann has not named yet, which holds the flagged galaxy
        page.wait_for_function("document.getElementById('montage').dataset.cluster === '0'")
        page.click(f"#cells .cell[data-stamp='{stamp}']")
        page.wait_for_selector("#zoom:not([hidden])")
        assert page.is_checked("#flag-check")
        assert page.input_value("#flag-comment") == "a star on the disk; =not a formula"

        # the browser's own request for an icon is answered, and nothing was refused
        favicon = page.request.get(server.url + "favicon.ico")
        assert favicon.status == 200 and favicon.headers["content-type"] == "image/svg+xml"
    assert not [a for a in answers if a[0] >= 400], answers
    assert any(url.endswith("/static/favicon.svg") and status == 200 for status, url in answers)
    context.close()

    # merge: the flag and its comment reach the catalog
    merge(run, min_agree=1)
    catalog = run.catalog().set_index("id")
    assert catalog.loc[galaxy, "expert_flag"] and catalog["expert_flag"].sum() == 1
    assert catalog.loc[galaxy, "expert_comment"] == "Ann: a star on the disk; =not a formula"
    assert (catalog.drop(index=galaxy)["expert_comment"] == "").all()


def test_flag_api_refuses_bad_input(colour_run):
    import json
    import urllib.error
    import urllib.request

    with Server(colour_run) as server:
        def post(payload):
            request = urllib.request.Request(server.url + "api/flag", data=json.dumps(payload).encode(),
                                             headers={"Content-Type": "application/json",
                                                      "X-Skymorph-Token": server.token})
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        stamp = server.get("/api/state")[1]["clusters"][0]["cells"][0]["stamp"]
        assert post({"expert": "Ann", "stamp": 99999, "comment": "x"})[0] == 400
        assert post({"expert": "Ann", "stamp": stamp, "comment": "x" * 2000})[0] == 400
        assert post({"expert": "", "stamp": stamp})[0] == 400
        status, body = post({"expert": "Ann", "stamp": stamp, "comment": "odd"})
        assert status == 200 and list(body["flags"].values()) == ["odd"]
        status, body = post({"expert": "Ann", "stamp": stamp, "flagged": False})
        assert status == 200 and body["flags"] == {}
