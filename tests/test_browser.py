"""End to end in headless Chromium: three experts name the clusters; the file and the page agree."""

from __future__ import annotations

import csv
import json

import pytest

from skymorph import RunDir
from test_extend import gz1_run  # noqa: F401 - a fixture
from test_inspection import Server, clustered_run  # noqa: F401 - a fixture

pytestmark = pytest.mark.browser

@pytest.fixture
def run(clustered_run) -> RunDir:  # noqa: F811 - the imported fixture, under this file's name
    return clustered_run


PIXELS_JS = """() => {
  const img = document.getElementById('zoom-img');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  const out = [];
  for (let i = 0; i < d.length; i += 4) out.push(d[i]);
  return out;
}"""


def file_votes(run: RunDir) -> dict[tuple[str, int], str]:
    with open(run.path / "inspection" / "votes.csv", newline="") as fh:
        return {(r["expert"], int(r["cluster"])): r["type"] for r in csv.DictReader(fh)}


def login(page, url: str, name: str, n_clusters: int) -> None:
    page.goto(url)  # the address with ?token=, as printed by `skymorph inspect serve`
    assert page.locator("#workspace").is_hidden() and page.locator("#login").is_visible()
    page.fill("#expert-name", name)
    page.click("#start")
    page.wait_for_function(f"document.querySelectorAll('#cluster-list li').length === {n_clusters}")
    assert page.locator("#login").is_hidden() and page.locator("#workspace").is_visible()
    assert page.text_content("#expert-label") == name


def vote(page, cluster: int, type_: str) -> None:
    page.click(f"#cluster-list li[data-cluster='{cluster}'] button")
    page.wait_for_function(f"document.getElementById('montage').dataset.cluster === '{cluster}'")
    page.click(f"#types .type[data-type='{type_}']")
    page.wait_for_function(
        f"document.getElementById('status').textContent === 'Saved: cluster {cluster} = {type_}'")


def page_votes(page) -> dict[int, str]:
    return {int(k): v for k, v in page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#cluster-list li')]"
        ".map(li => [li.dataset.cluster, li.querySelector('.badge').textContent]))").items()}


def test_three_experts_vote_and_the_file_and_page_agree(browser, run, tmp_path):
    with Server(run) as server:
        state = server.get("/api/state")[1]
        clusters = [c["cluster"] for c in state["clusters"]]
        n = len(clusters)
        assert n >= 2
        plans = {
            "Ann Expert": {c: "SPH" for c in clusters},
            "Bob": {c: ("ETD" if i % 2 else "SPH") for i, c in enumerate(clusters)},
            "Carol": {c: "IRR" for c in clusters[:-1]},  # leaves the last cluster open
        }
        pages = {}
        for name in plans:
            # bypass_csp: Playwright's wait_for_function evaluates strings, which the page's CSP forbids
            context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
            pages[name] = context.new_page()
            login(pages[name], server.server.token_url, name, n)
        # the experts take turns cluster by cluster, as they would when working side by side
        for c in clusters:
            for name, plan in plans.items():
                if c in plan:
                    vote(pages[name], c, plan[c])
        # Carol changes her mind on the first cluster with the keyboard (2 = ETD)
        carol = pages["Carol"]
        carol.click(f"#cluster-list li[data-cluster='{clusters[0]}'] button")
        carol.keyboard.press("2")
        carol.wait_for_function(
            f"document.getElementById('status').textContent === 'Saved: cluster {clusters[0]} = ETD'")
        plans["Carol"][clusters[0]] = "ETD"

        expected = {(name, c): t for name, plan in plans.items() for c, t in plan.items()}
        assert file_votes(run) == expected
        for name, plan in plans.items():
            page = pages[name]
            shown = page_votes(page)
            assert shown == {c: plan.get(c, "\u2013") for c in clusters}
            assert page.text_content("#progress-text") == f"{len(plan)} / {n} clusters voted"
            # the page says clearly when the expert has voted on every cluster
            done = page.locator("#all-done")
            if len(plan) == n:
                assert done.is_visible() and "voted on every cluster" in done.text_content()
                assert f"({n} of {n})" in done.text_content()
            else:
                assert done.is_hidden()
        # the type of the cluster on screen is highlighted
        ann = pages["Ann Expert"]
        ann.click(f"#cluster-list li[data-cluster='{clusters[1]}'] button")
        assert ann.eval_on_selector_all(".type.selected", "els => els.map(e => e.dataset.type)") == ["SPH"]

        # a click on a thumbnail shows that galaxy larger
        big = max(state["clusters"], key=lambda c: c["n_shown"])
        ann.click(f"#cluster-list li[data-cluster='{big['cluster']}'] button")
        cell = ann.locator("#cells .cell").nth(min(3, big["n_shown"] - 1))
        stamp = cell.get_attribute("data-stamp")
        cell.click()
        ann.wait_for_selector("#zoom:not([hidden])")
        ann.wait_for_function("document.getElementById('zoom-img').naturalWidth === 100")
        src = ann.get_attribute("#zoom-img", "src")
        assert src.startswith(f"/galaxy/{stamp}.png?") and f"token={server.token}" in src
        # the zoomed view names the galaxy and has a scale bar, in arcsec (COSMOS has PIXEL_SCALE 0.03")
        ids = {str(c["stamp"]): c["id"] for cl in state["clusters"] for c in cl["cells"]}
        assert ann.text_content("#zoom-id") == f"galaxy {ids[stamp]}"
        bar = ann.text_content("#scale-bar-label")
        px = float(ann.get_attribute("#scale-bar-line", "data-px"))
        arcsec = float(bar.split("\u2033")[0])
        assert arcsec == pytest.approx(px * 0.03) and f"({round(px)} px)" in bar
        bar_width = ann.eval_on_selector("#scale-bar-line", "e => e.getBoundingClientRect().width")
        img_width = ann.eval_on_selector("#zoom-img", "e => e.getBoundingClientRect().width")
        assert bar_width == pytest.approx(img_width * px / 100, rel=0.02)
        # the live stretch control redraws the galaxy with another asinh softening
        before = ann.evaluate(PIXELS_JS)
        ann.locator("#zoom-stretch").fill("5")
        ann.wait_for_function(f"document.querySelector('#zoom-img').getAttribute('src') != {json.dumps(src)}")
        ann.wait_for_function("document.getElementById('zoom-img').complete && "
                              "document.getElementById('zoom-img').naturalWidth === 100")
        assert "softening=" in ann.get_attribute("#zoom-img", "src")
        after = ann.evaluate(PIXELS_JS)
        assert sum(after) < sum(before)  # nearly linear: the faint outskirts darken
        ann.click("#zoom-stretch")  # a click on the control does not close the view
        assert ann.locator("#zoom").is_visible()
        ann.screenshot(path=str(tmp_path / "zoom.png"))
        ann.keyboard.press("Escape")
        assert ann.locator("#zoom").is_hidden()
        ann.wait_for_function("document.getElementById('montage').naturalWidth > 0")
        ann.screenshot(path=str(tmp_path / "app.png"), full_page=True)

    # after a restart the page shows each expert's earlier choices, read back from the file
    with Server(run) as server:
        page = browser.new_context(bypass_csp=True).new_page()
        login(page, server.server.token_url, "bob", n)  # names are matched case-insensitively
        assert page_votes(page) == {c: plans["Bob"][c] for c in clusters}
        login(page, server.server.token_url, "Carol", n)
        assert page_votes(page) == {c: plans["Carol"].get(c, "\u2013") for c in clusters}
        # Carol's page opens on the one cluster she has not named yet
        assert page.get_attribute("#montage", "data-cluster") == str(clusters[-1])
        assert page.locator("#all-done").is_hidden()
        vote(page, clusters[-1], "UNC")
        assert page.text_content("#progress-text") == f"{n} / {n} clusters voted"
        assert page.locator("#all-done").is_visible()
        assert page.text_content("#all-done").startswith("Done: Carol has voted on every cluster")
    assert file_votes(run)[("Carol", clusters[-1])] == "UNC"
    assert len(file_votes(run)) == len(expected) + 1


# --- cross-origin attacks from another page open in the same browser ----------------------------------


ATTACK_FETCH = """<!doctype html><title>loading</title><script>
const url = "{url}api/vote?token={token}";
const vote = (expert, type) => JSON.stringify({{expert, cluster: {cluster}, type}});
Promise.allSettled([
  fetch(url, {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
              body: vote("Mallory", "SPH")}}),
  fetch(url, {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "application/json"}},
              body: vote("Mallory", "IRR")}}),
  fetch(url, {{method: "POST", mode: "no-cors", body: new Blob([vote("Mallory", "LTD")],
              {{type: "application/json"}})}}),
]).then(() => {{ document.title = "sent"; }});
</script>"""

ATTACK_FORM = """<!doctype html><title>form</title>
<form id="f" method="POST" enctype="text/plain" action="{url}api/vote?token={token}">
<input name='{{"expert": "Mallory", "cluster": {cluster}, "type": "SPH", "pad": "' value='"}}'>
</form><script>document.getElementById("f").submit();</script>"""


class AttackerSite:
    """Another origin (another port) serving the given pages."""

    def __init__(self, root) -> None:
        import functools
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = __import__("threading").Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> AttackerSite:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_cross_origin_pages_cannot_vote(browser, run, tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="skymorph.inspection")
    site = tmp_path / "attacker"
    site.mkdir()
    with Server(run) as server:
        cluster = server.get("/api/state")[1]["clusters"][0]["cluster"]
        # the attacker even knows the token: the Origin check and the JSON-only rule stop it alone
        fill = {"url": server.url, "token": server.token, "cluster": cluster}
        (site / "fetch.html").write_text(ATTACK_FETCH.format(**fill))
        (site / "form.html").write_text(ATTACK_FORM.format(**fill))
        with AttackerSite(site) as attacker:
            assert attacker.url != server.url
            page = browser.new_context().new_page()
            page.goto(attacker.url + "fetch.html")
            page.wait_for_function("document.title === 'sent'")
            # the form navigates to the server's answer: a refusal
            page.goto(attacker.url + "form.html")
            page.wait_for_url(f"{server.url}api/vote*")
            answer = page.text_content("body")
            assert '"error"' in answer and "cross-origin" in answer
        refused = [r.getMessage() for r in caplog.records if "POST /api/vote" in r.getMessage()]
        assert len(refused) == 4 and all('" 403 ' in m for m in refused), refused
        assert all(server.token not in m for m in refused)  # the token is kept out of the log
    path = run.path / "inspection" / "votes.csv"
    assert not path.exists() or "Mallory" not in path.read_text()


# --- teach single galaxies (inspect refine) ------------------------------------------------------------


def test_an_expert_teaches_single_galaxies_page_by_page(browser, gz1_run, tmp_path, shared_data):  # noqa: F811
    import shutil

    from skymorph.inspection.auto import auto_votes
    from skymorph.inspection.refine import SKIP, GalaxyVoteStore
    from skymorph.stages.extend import extend
    from skymorph.stages.inspect import merge
    from test_extend import GZ1_EXCLUDE, GZ1_MAP, TYPES, _config

    shutil.copytree(gz1_run.path, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    config = _config(refine_page=4)
    auto_votes(run, shared_data / "gz1_sdss" / "labels.csv", "objid", "gz1_name", config,
               label_map=GZ1_MAP, exclude=GZ1_EXCLUDE)
    merge(run, config=config, min_agree=1)
    with Server(run, config) as server:
        page = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
        # from the clusters page, the link to the teach page keeps the session's token
        page.goto(server.server.token_url)
        page.click("#to-refine")
        page.wait_for_url(f"{server.url}refine")
        page.fill("#expert-name", "Dana")
        page.click("#start")
        page.wait_for_function("document.querySelectorAll('#cards .card').length === 4")
        assert page.locator("#login").is_hidden() and page.text_content("#expert-label") == "Dana"
        first_rows = page.eval_on_selector_all("#cards .card", "els => els.map(e => Number(e.dataset.row))")
        assert page.get_attribute("#cards", "data-reason") == "margin"
        # every galaxy of the page is drawn
        page.wait_for_function("[...document.querySelectorAll('#cards img')].every(i => i.naturalWidth > 0)")
        answers = ["SPIRAL", SKIP, "ELLIPTICAL", "EDGE_ON"]
        for row, code in zip(first_rows, answers, strict=True):
            page.click(f".card[data-row='{row}'] button[data-type='{code}']")
            page.wait_for_function(f"document.querySelector(\".card[data-row='{row}']\").dataset.answer "
                                   f"=== '{code}'")
        assert page.locator("#page-done").is_visible()
        counts = page.text_content("#teach-counts")
        assert counts.startswith("4 / 4 on this page \u00b7 3 galaxies typed by you")
        # a changed mind replaces the answer
        page.click(f".card[data-row='{first_rows[0]}'] button[data-type='ELLIPTICAL']")
        page.wait_for_function(
            "document.getElementById('refine-status').textContent.endsWith('= ELLIPTICAL')")
        page.screenshot(path=str(tmp_path / "teach.png"), full_page=True)
        # the next page holds none of the galaxies already looked at
        page.click("#next-page")
        page.wait_for_function(f"!document.querySelector(\".card[data-row='{first_rows[1]}']\")")
        page.wait_for_function("document.querySelectorAll('#cards .card').length === 4")
        second_rows = page.eval_on_selector_all("#cards .card", "els => els.map(e => Number(e.dataset.row))")
        assert not set(second_rows) & set(first_rows)
        counts = page.text_content("#teach-counts")
        assert counts.startswith("0 / 4 on this page \u00b7 3 galaxies typed by you, 4 looked")
    ids = run.catalog()["id"].astype(str).to_numpy()
    stored = {(r["expert"], r["id"]): r["type"] for r in GalaxyVoteStore.of(run).rows()}
    final = ["ELLIPTICAL", *answers[1:]]
    assert stored == {("Dana", ids[r]): t for r, t in zip(first_rows, final, strict=True)}
    extend(run, config)
    cat = run.catalog()
    taught = cat["type_source"] == "taught"
    assert sorted(cat.index[taught]) == sorted(r for r, t in zip(first_rows, final, strict=True) if t != SKIP)
    assert set(cat.loc[taught, "morph_type_final"]) <= set(TYPES)
