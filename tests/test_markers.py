"""The developers' fast lane: the README's command leaves out the slow and the browser tests."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

FAST_LANE = '-m "not slow and not browser"'


def test_the_readme_fast_lane_deselects_slow_and_browser_tests():
    readme = (ROOT / "README.md").read_text()
    assert f".venv/bin/pytest {FAST_LANE}" in readme
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow and not browser",
         "tests/test_browser.py", "tests/test_executor.py", "tests/test_report.py"],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    collected = result.stdout
    assert "test_browser.py" not in collected  # every test of the file drives Chromium
    assert "test_report_in_chromium" not in collected
    assert "test_measure_from_an_unguarded_script_runs_the_script_once" not in collected
    assert "test_executor.py::" in collected and "test_report.py::" in collected
    assert int(re.search(r"(\d+) deselected", collected).group(1)) >= 4
