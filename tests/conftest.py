"""Shared fixtures: the real data in ../shared/data and small run directories made from it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
COSMOS_STAMPS = SHARED_DATA / "cosmos_f814w" / "stamps_100"
COSMOS_FIELDS = SHARED_DATA / "cosmos_f814w" / "fields"
GZ1 = SHARED_DATA / "gz1_sdss"
STATMORPH_REFERENCE = SHARED_DATA / "statmorph_reference"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"the shared data folder {SHARED_DATA} is missing; tests need it beside the repo")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cosmos_run(tmp_path_factory, shared_data):
    """A run directory with the 100 real COSMOS stamps ingested (shared, treat as read-only)."""
    from skymorph import Config, ingest

    out = tmp_path_factory.mktemp("cosmos") / "run"
    return ingest([COSMOS_STAMPS], out, Config(), progress=False)


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's ``/usr/bin/chromium``), one for the whole session: the
    fixture of every test marked ``browser`` (skipped where playwright is not installed)."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
