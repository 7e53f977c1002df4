"""The pipeline's chunk work on a Dask cluster gives the local run's bytes, survives a
killed worker and a killed client, and refuses a scheduler that does not answer.

A ``LocalCluster`` of two one-thread worker processes stands in for a cluster; the
workers see the run directories at the same paths, as on a shared filesystem.  To
keep the file fast on a 2-core machine, the cluster run of the whole pipeline is
also the run during which a worker is killed (once in encode, once in measure): it
must still write the local run's bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from skymorph import Config
from skymorph.core.compute import ComputeError
from skymorph.io.rundir import RunDir

distributed = pytest.importorskip("distributed")
pytest.importorskip("torch")

from conftest import COSMOS_STAMPS  # noqa: E402
from skymorph.stages.cluster import cluster  # noqa: E402
from skymorph.stages.denoise import denoise  # noqa: E402
from skymorph.stages.encode import encode  # noqa: E402
from skymorph.stages.ingest import ingest  # noqa: E402
from skymorph.stages.measure import measure  # noqa: E402
from skymorph.stages.polar import polar  # noqa: E402
from skymorph.stages.reduce import reduce  # noqa: E402

SMALL = {
    "ingest": {"chunk_size": 32},
    "denoise": {"enabled": True, "epochs": 1, "min_steps": 4, "train_sample": 100},
    "polar": {"enabled": True},
    "encode": {"encoder": "efficientnet_lite0", "rotations": 1, "threads": 1, "chunk_size": 16,
               "batch_size": 16},
    "reduce": {"dims": 5, "n_neighbors": 10, "n_epochs": 50, "fit_sample": 60, "chunk_size": 32},
    "cluster": {"k": 4, "fit_sample": 60, "ward_sample": 50, "birch_subclusters": 20},
    "measure": {"include_sersic": False, "chunk_size": 10, "workers": 2},
}
ARRAYS = ("stamps", "denoised", "polar", "features", "embedding", "embedding_2d")


def _config(scheduler: str = "local") -> Config:
    return Config().update({**SMALL, "compute": {"scheduler": scheduler, "connect_timeout": 30}})


def _pipeline(out: Path, config: Config, kill: dict | None = None) -> RunDir:
    """Every chunked stage; ``kill`` maps a stage to ``(client, progress)``: one worker
    is killed as soon as ``progress(run) >= 1`` during that stage."""
    run = ingest([COSMOS_STAMPS], out, config, progress=False)
    for stage in (denoise, polar, encode, reduce, cluster, measure):
        name = stage.__name__
        if kill and name in kill:
            client, progress = kill[name]
            killed = _kill_one_worker_when(client, lambda progress=progress: progress(run) >= 1)
            stage(run, config, progress=False)
            killed["thread"].join(timeout=10)
            kill[name] = killed
        else:
            stage(run, config, progress=False)
    return run


@pytest.fixture(scope="module")
def dask_cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as local:
        yield local


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, shared_data):
    return _pipeline(tmp_path_factory.mktemp("local") / "run", _config())


@pytest.fixture(scope="module")
def dask_run(tmp_path_factory, dask_cluster, shared_data):
    """The pipeline on the cluster, with a worker killed mid-encode and mid-measure."""
    with distributed.Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        pids = set(client.run(os.getpid).values())
        kills = {"encode": (client, _encode_progress), "measure": (client, _measure_progress)}
        run = _pipeline(tmp_path_factory.mktemp("dask") / "run", _config(dask_cluster.scheduler_address),
                        kill=kills)
        client.wait_for_workers(2, timeout=60)
        now = set(client.run(os.getpid).values())
    return run, pids, now, kills


def _same_array(a: RunDir, b: RunDir, name: str) -> None:
    np.testing.assert_array_equal(np.asarray(a.open_array(name)[:]), np.asarray(b.open_array(name)[:]))


@pytest.mark.slow
def test_cluster_run_with_killed_workers_writes_the_local_runs_arrays_and_tables(local_run, dask_run):
    run, pids, now, kills = dask_run
    for name in ARRAYS:
        _same_array(local_run, run, name)
    pd.testing.assert_frame_equal(local_run.sources(), run.sources())
    pd.testing.assert_frame_equal(local_run.catalog(), run.catalog())
    pd.testing.assert_frame_equal(pd.read_parquet(local_run.path / "measurements.parquet"),
                                  pd.read_parquet(run.path / "measurements.parquet"))
    # a worker was killed in each of the two stages, mid-stage, and Dask replaced it
    for stage in ("encode", "measure"):
        assert "pid" in kills[stage], f"no worker was killed during {stage}"
        assert kills[stage]["pid"] not in now
    assert len(now) == 2  # the killed workers were replaced (which ones were killed depends on timing)
    # the work did go to the cluster, and the sample-fitted steps were sample-fitted
    assert run.stage_info("encode")["device"].startswith("dask")
    assert run.stage_info("cluster")["fit_sample"] == 60
    assert run.stage_info("reduce")["seconds"]["place"] > 0
    # and nothing of the resume records is left behind
    assert not list((run.path / "stages").glob("*.part*"))


def _kill_one_worker_when(client, ready) -> dict:
    """Kill a worker process (SIGKILL) as soon as ``ready()``; returns what happened."""
    pids = client.run(os.getpid)
    happened: dict = {}

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if ready():
                address, pid = next(iter(pids.items()))
                os.kill(pid, signal.SIGKILL)
                happened.update(address=address, pid=pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    happened["thread"] = thread
    return happened


def _encode_progress(run: RunDir) -> int:
    try:
        # the chunk ledger: a header line, then one line per finished chunk
        return max(0, (run.path / "stages" / "encode.partial.jsonl").read_text().count("\n") - 1)
    except (FileNotFoundError, ValueError):
        return 0


def _measure_progress(run: RunDir) -> int:
    return len(list((run.path / "stages" / "measure.parts").glob("*/*.pkl")))


KILLED_CLIENT = """
import json, sys
from skymorph import Config
from skymorph.stages.measure import measure
config = Config().update({**json.loads(sys.argv[3]), "compute": {"scheduler": sys.argv[2]}})
measure(sys.argv[1], config, force=True, progress=False)
"""


@pytest.mark.slow
def test_client_killed_mid_run_resumes_from_finished_chunks(dask_cluster, dask_run, local_run, tmp_path):
    run = RunDir(shutil.copytree(dask_run[0].path, tmp_path / "run"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    command = [sys.executable, "-c", KILLED_CLIENT, str(run.path), dask_cluster.scheduler_address,
               json.dumps(SMALL)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _measure_progress(run) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the client was not killed midway: {stderr[-2000:]!r}"
    done = _measure_progress(run)
    assert 3 <= done < 10 and run.stage_info("measure") is None

    measure(run, _config(dask_cluster.scheduler_address), progress=False)
    assert run.stage_info("measure")["n_tasks_resumed"] >= done - 1
    pd.testing.assert_frame_equal(pd.read_parquet(local_run.path / "measurements.parquet"),
                                  pd.read_parquet(run.path / "measurements.parquet"))


def test_scheduler_that_does_not_answer_is_a_clear_error_within_seconds(cosmos_run, tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = RunDir(shutil.copytree(cosmos_run.path, tmp_path / "run"))
    before = (run.path / "config.toml").read_text()
    config = Config().update({"compute": {"scheduler": f"tcp://127.0.0.1:{port}", "connect_timeout": 2}})
    start = time.monotonic()
    with pytest.raises(ComputeError, match=f"no Dask scheduler answered at tcp://127.0.0.1:{port}"):
        polar(run, config, progress=False)
    assert time.monotonic() - start < 10
    assert (run.path / "config.toml").read_text() == before  # nothing was touched
    assert not run.has_array("polar")
    # the command line says the same, as an error line and exit status 1
    from skymorph.cli import main

    assert main(["polar", str(run.path), "--scheduler", f"tcp://127.0.0.1:{port}",
                 "--set", "compute.connect_timeout=2", "-q"]) == 1


def test_scheduler_setting_is_checked_and_offered_on_every_stage_command():
    from skymorph.cli import build_parser
    from skymorph.core.compute import check_scheduler

    with pytest.raises(ComputeError, match="neither local, threads, synchronous nor a Dask scheduler"):
        check_scheduler("slurm")
    for command in ("ingest", "polar", "encode", "reduce", "cluster", "measure"):
        assert "--scheduler" in build_parser(command)._subparsers._group_actions[0].choices[command] \
            .format_help()


def test_synchronous_and_threads_schedulers_match_local(local_run, tmp_path):
    config = _config("synchronous")
    run = ingest([COSMOS_STAMPS], tmp_path / "run", config, progress=False)
    polar(run, config.update({"denoise": {"enabled": False}}), progress=False)
    _same_array(local_run, run, "stamps")
    pd.testing.assert_frame_equal(local_run.sources(), run.sources())
    reference = RunDir(shutil.copytree(local_run.path, tmp_path / "reference"))
    polar(reference, config.update({"denoise": {"enabled": False}, "compute": {"scheduler": "local"}}),
          progress=False)
    _same_array(reference, run, "polar")
    # and on a Dask cluster of threads in this process
    polar(run, config.update({"denoise": {"enabled": False}, "compute": {"scheduler": "threads"}}),
          force=True, progress=False)
    _same_array(reference, run, "polar")


@pytest.mark.slow
def test_zarr_regions_are_whole_chunks(dask_run):
    # every chunk task writes whole chunks of its own region: no two tasks share a chunk file
    for name in ("polar", "features", "embedding"):
        array = zarr.open_array(store=str(dask_run[0].array_path(name)), mode="r")
        assert array.chunks[0] in (SMALL["ingest"]["chunk_size"], SMALL["encode"]["chunk_size"],
                                   SMALL["reduce"]["chunk_size"])


def test_polar_interrupted_resumes_from_its_chunk_ledger(local_run, tmp_path, monkeypatch, caplog):
    import logging

    import skymorph.stages.polar as polar_module

    run = RunDir(shutil.copytree(local_run.path, tmp_path / "run"))
    real = polar_module.polar_chunk
    calls = []

    def interrupted(i, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the client stops after two chunks
        calls.append(i)
        return real(i, *args)

    monkeypatch.setattr(polar_module, "polar_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        polar(run, _config(), force=True, progress=False)
    assert run.stage_info("polar") is None
    assert (run.path / "stages" / "polar.partial.jsonl").read_text().count("\n") == 3  # header + 2
    monkeypatch.setattr(polar_module, "polar_chunk", real)
    with caplog.at_level(logging.INFO, logger="skymorph.stages.polar"):
        polar(run, _config(), progress=False)
    assert "resuming, 2 of 4 chunks already done" in caplog.text
    assert run.stage_info("polar")["n_chunks_resumed"] == 2
    assert not (run.path / "stages" / "polar.partial.jsonl").exists()
    _same_array(local_run, run, "polar")


def test_chunk_ledger_ignores_a_torn_last_line_and_another_key(tmp_path):
    from skymorph.io.chunklog import ChunkLedger

    (tmp_path / "stages").mkdir()
    ledger = ChunkLedger(tmp_path, "polar", "key-1")
    ledger.start()
    ledger.record(0, 5)
    ledger.record(3)
    with ledger.path.open("a") as fh:
        fh.write('{"chunk": 4, "inf')  # killed while writing
    assert ChunkLedger(tmp_path, "polar", "key-1").resume() == {0: 5, 3: None}
    assert ChunkLedger(tmp_path, "polar", "key-2").resume() == {}
