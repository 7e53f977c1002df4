"""Re-clustering keeps what does not depend on the clustering and marks what does as stale
(issue 20 item 2); a merge without a valid vote writes no types and fails with a sentence."""

from __future__ import annotations

import pandas as pd
import pytest

from skymorph.cli import main
from skymorph.inspection import clustering_fingerprint, consensus_labels
from skymorph.io.rundir import RunDir
from test_cluster import _features_run


def _vote_on_current_clusters(run: RunDir) -> None:
    catalog = run.catalog()
    clusters = sorted(set(consensus_labels(catalog)[consensus_labels(catalog) >= 0].tolist()))
    fingerprint = clustering_fingerprint(catalog)
    rows = [{"expert": e, "cluster": c, "type": "SPH" if c % 2 else "LTD", "time": "2026-01-01T00:00:00Z",
             "clustering": fingerprint} for c in clusters for e in ("ann", "bob")]
    (run.path / "inspection").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(run.path / "inspection" / "votes.csv", index=False)


@pytest.mark.slow
def test_recluster_keeps_measurements_marks_types_stale_and_merge_refuses_old_votes(cosmos_run, tmp_path,
                                                                                   capsys, caplog):
    run = _features_run(cosmos_run, tmp_path)
    path = str(run.path)
    assert main(["reduce", path, "--dims", "5", "--n-epochs", "60", "--no-map"]) == 0
    assert main(["cluster", path, "--k", "4"]) == 0
    assert main(["measure", path, "--no-sersic", "--workers", "2"]) == 0
    _vote_on_current_clusters(run)
    assert main(["inspect", "merge", path]) == 0
    before = run.catalog()
    assert before["morph_type"].isin(["SPH", "LTD"]).any() and "gini" in before.columns
    assert run.stale("merge") == [] and run.stale("measure") == []
    capsys.readouterr()
    caplog.clear()

    assert main(["cluster", path, "--force", "--set", "cluster.k=3"]) == 0
    # the measurements depend only on the stamps: they survive the new clustering
    after = run.catalog()
    assert "gini" in after.columns and "nonparam_ok" in after.columns
    pd.testing.assert_series_equal(after.set_index("id")["gini"], before.set_index("id")["gini"],
                                   check_like=True)
    assert not after["morph_type"].isin(["SPH", "LTD"]).any()  # the old types are not kept as if current
    # the types are stale, the measurements are not; the command said so in one line
    assert run.stale("merge") == ["cluster"] and run.stale("measure") == []
    lines = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
    assert len(lines) == 1 and "merge" in lines[0] and "measure" not in lines[0].split("stale")[0]
    assert main(["info", path]) == 0
    info = capsys.readouterr().out
    merge_line = next(line for line in info.splitlines() if line.strip().startswith("merge"))
    measure_line = next(line for line in info.splitlines() if line.strip().startswith("measure"))
    assert "STALE" in merge_line and "cluster" in merge_line and "STALE" not in measure_line

    # every vote was cast on the old clustering: no types are invented, the exit status says so
    assert main(["inspect", "merge", path]) != 0
    err = capsys.readouterr().err
    assert "no types were written" in err and "inspect serve" in err
    assert not run.catalog()["morph_type"].isin(["SPH", "LTD", "UNC"]).any()
    assert run.stage_info("merge") is None  # not recorded as finished
