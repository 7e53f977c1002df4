"""The stage executor: the Python API behaves like the CLI, settings are checked before
they are recorded, the run directory is locked and checked, pools work from any script."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import skymorph
from conftest import COSMOS_STAMPS, ROOT
from skymorph.cli import main
from skymorph.config import Config, ConfigError
from skymorph.io.rundir import RunDir, RunDirError
from test_cluster import _features_run


@pytest.fixture
def reduced_run(cosmos_run, tmp_path):
    run = _features_run(cosmos_run, tmp_path)
    assert main(["reduce", str(run.path), "--dims", "5", "--n-epochs", "60", "--no-map"]) == 0
    return run


def test_api_after_cli_keeps_the_runs_settings(reduced_run):
    assert main(["cluster", str(reduced_run.path), "--k", "4"]) == 0
    before = (reduced_run.path / "catalog.parquet").stat().st_mtime_ns
    skymorph.cluster(reduced_run.path, progress=False)  # no config: the run's own, k = 4
    assert (reduced_run.path / "catalog.parquet").stat().st_mtime_ns == before
    assert reduced_run.config().cluster.k == 4
    skymorph.cluster(reduced_run, k=3)  # keyword override of the stage's own section
    assert reduced_run.catalog()["cluster_kmeans"].max() == 2
    assert reduced_run.config().cluster.k == 3
    # --force recomputes although nothing changed
    before = (reduced_run.path / "catalog.parquet").stat().st_mtime_ns
    assert main(["cluster", str(reduced_run.path), "--force"]) == 0
    assert (reduced_run.path / "catalog.parquet").stat().st_mtime_ns > before


def test_wrong_type_setting_is_a_sentence_and_nothing_is_recorded(reduced_run, capsys):
    before = (reduced_run.path / "config.toml").read_text()
    assert main(["cluster", str(reduced_run.path), "--set", 'cluster.k="ten"']) == 1
    err = capsys.readouterr().err
    assert "cluster.k = 'ten' is not allowed: expected an integer" in err and "Traceback" not in err
    assert main(["cluster", str(reduced_run.path), "--k", "1"]) == 1
    assert "in [2, inf]" in capsys.readouterr().err
    assert (reduced_run.path / "config.toml").read_text() == before
    with pytest.raises(ConfigError, match="cluster.k"):
        skymorph.cluster(reduced_run, k=2.5)
    # a damaged config.toml is named, not a traceback
    (reduced_run.path / "config.toml").write_text(before.replace("k = 20", 'k = "eight"'))
    assert main(["cluster", str(reduced_run.path)]) == 1
    assert "config.toml" in capsys.readouterr().err


def test_config_checks_types_and_ranges():
    config = Config()
    assert config.update({"validate": {"sersic_split": 3}}).validate.sersic_split == 3.0
    assert config.update({"reduce": {"dims": "auto"}}).reduce.dims == "auto"
    for bad in ({"reduce": {"dims": "many"}}, {"encode": {"rotations": 3}}, {"cluster": {"k": True}},
                {"denoise": {"channels": [16, "8"]}}, {"inspect": {"array": "polar"}}):
        with pytest.raises(ConfigError, match="is not allowed"):
            config.update(bad)


def test_help_comes_from_the_settings():
    result = subprocess.run([sys.executable, "-m", "skymorph.cli", "encode", "--help"],
                            capture_output=True, text=True, check=True)
    assert "(default: 4; --set encode.rotations=...)" in " ".join(result.stdout.split())
    assert "``" not in result.stdout


def test_stage_run_by_hand_is_switched_on_loudly(cosmos_run, tmp_path, caplog):
    path = tmp_path / "run"
    shutil.copytree(cosmos_run.path, path)
    assert not RunDir(path).config().polar.enabled
    with caplog.at_level("WARNING", logger="skymorph"):
        assert main(["polar", str(path)]) == 0
    assert "polar.enabled was false" in caplog.text
    config = RunDir(path).config()
    assert config.polar.enabled
    assert skymorph.stages.image_source(config, "encode") == ("polar", "polar")


def test_help_and_version_import_no_heavy_library():
    code = ("import sys; from skymorph.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('zarr', 'pandas', 'torch', 'sklearn', 'astropy', 'numpy')\n"
            "         if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in result.stdout


@pytest.mark.slow
def test_measure_from_an_unguarded_script_runs_the_script_once(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import threading, time
        import skymorph
        # a live thread makes the pool use forkserver, whose workers would re-import this file
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        print("SCRIPT BODY RUNS", flush=True)
        run = skymorph.ingest([{str(COSMOS_STAMPS)!r}], {str(tmp_path / 'run')!r}, progress=False)
        skymorph.measure(run, progress=False, workers=2, include_sersic=False)
        print("MEASURED", skymorph.stages.measure.read_measurements(run)["measure_ok"].sum())
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("SCRIPT BODY RUNS") == 1
    assert "MEASURED" in result.stdout


def test_forked_workers_keep_the_scripts_main_module(tmp_path):
    """A single-threaded script's pool forks; its workers must see the script's own ``__main__``
    (a blanked one made astropy's first import fail there and lost a galaxy per worker)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        from skymorph.core.parallel import start_pool
        pool = start_pool(2)
        print("START", pool._mp_context.get_start_method())
        print("MAIN", pool.submit(eval, "__import__('sys').modules['__main__'].__file__").result())
        pool.shutdown()
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "START fork" in result.stdout
    assert f"MAIN {script}" in result.stdout


def test_second_writer_fails_fast_naming_the_holder(reduced_run, capsys):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from skymorph.io.rundir import RunDir
        with RunDir({str(reduced_run.path)!r}).lock("skymorph encode"):
            print("LOCKED", flush=True)
            time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        start = time.perf_counter()
        assert main(["cluster", str(reduced_run.path), "--k", "4"]) == 1
        assert time.perf_counter() - start < 10
        err = capsys.readouterr().err
        assert f"busy (pid {holder.pid}, command 'skymorph encode')" in err
        assert "reduce" in reduced_run.summary()  # readers are not blocked
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert main(["cluster", str(reduced_run.path), "--k", "4"]) == 0


def test_lost_chunk_is_detected_not_read_as_data(cosmos_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(cosmos_run.path, path)
    run = RunDir(path)
    shutil.rmtree(path / "stamps.zarr" / "c" / "0")
    with pytest.raises(RunDirError, match="lost 1 of 1 chunks.*--force"):
        run.open_array("stamps")


def test_damaged_run_files_and_bad_out_are_sentences(cosmos_run, tmp_path, capsys):
    path = tmp_path / "run"
    shutil.copytree(cosmos_run.path, path)
    (path / "stages" / "ingest.json").write_text("{not json")
    assert main(["polar", str(path)]) == 1
    assert "ingest.json is damaged" in capsys.readouterr().err
    (path / "skymorph.json").write_text("garbage")
    with pytest.raises(RunDirError, match="skymorph.json is damaged"):
        RunDir(path)
    mine = tmp_path / "my_files"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["ingest", str(COSMOS_STAMPS), "--out", str(mine)]) == 1
    assert "non-empty directory that is not a skymorph run" in capsys.readouterr().err
    assert main(["ingest", str(COSMOS_STAMPS), "--out", str(mine / "notes.txt")]) == 1
    assert "is an existing file" in capsys.readouterr().err


def test_rundir_repr_and_summary(cosmos_run):
    assert repr(cosmos_run) == f"RunDir({str(cosmos_run.path)!r})"
    text = cosmos_run.summary()
    assert "ingest" in text and "stamps" in text and "100 x 100 x 100" in text


def test_unwritable_out_and_full_disk_are_sentences(tmp_path, capsys):
    assert main(["ingest", str(COSMOS_STAMPS), "--out", "/proc/skymorph_run"]) == 1
    assert "cannot create the run directory /proc/skymorph_run" in capsys.readouterr().err
    # a file-size limit makes writes fail as a full disk does (Python ignores SIGXFSZ)
    result = subprocess.run(["bash", "-c", f"ulimit -f 200; {sys.executable} -m skymorph.cli ingest "
                             f"{COSMOS_STAMPS} --out {tmp_path / 'run'} -q"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "error: File too large; check that the path exists, is writable and that the disk has room" \
        in result.stderr and "Traceback" not in result.stderr
