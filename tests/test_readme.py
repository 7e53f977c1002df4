"""Every command example of the README is run here, on small real data (issue 20, item 6).

The README's ``bash`` blocks are split into commands (``\\`` continuations joined, comments and
``&&`` split off) and its ``python`` blocks kept whole.  :data:`CASES` says how each one runs
here: as written, in a working directory holding ``cutouts/`` (40 real SDSS JPEG cutouts of the
gz1_sdss set), ``labels.csv`` (their Galaxy Zoo classes) and a catalog; or with the few extra
arguments this machine needs (no network for ConvNeXt-XL weights, a free port, a LocalCluster in
place of a cluster of nodes, fewer training steps).  A README example missing from
:data:`CASES` fails :func:`test_every_readme_example_is_covered`, so a new one cannot go untested.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import GZ1, ROOT
from skymorph.cli import main
from skymorph.io.rundir import RunDir

README = ROOT / "README.md"


def readme_examples(text: str | None = None) -> list[tuple[str, str]]:
    """``(language, command)`` of every example: each command of a bash block, each python block."""
    text = README.read_text() if text is None else text
    out: list[tuple[str, str]] = []
    for lang, body in re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S):
        if lang == "python":
            out.append((lang, body.strip()))
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            background = words[-1] == "&"
            words = words[:-1] if background else words
            parts: list[list[str]] = [[]]
            for word in words:
                if word == "&&":
                    parts.append([])
                else:
                    parts[-1].append(word)
            for part in parts:
                out.append((lang, shlex.join(part) + (" &" if background else "")))
    return out


# How each example runs here: "as is"; extra arguments appended; or the name of a runner below.
CASES: dict[str, str | list[str]] = {
    # set-up: `make demo` / `make test` build a fresh .venv (CI does that: .ci/run); here their
    # recipes are checked with a dry run, and the demo's command is run by test_pipeline.py
    "make demo": "make_dry_run",
    "make test": "make_dry_run",
    # Using it
    "skymorph run cutouts/ --out myrun": "as is",
    # the paper's chain: CAE, APCT and ConvNeXt; ConvNeXt-XL's weights need the network and its
    # 350 M parameters an idle machine, so the same timm code path runs a random-init ConvNeXt-atto,
    # and the CAE trains for fewer steps
    "skymorph run cutouts/ --out myrun --preset paper": [
        "--set", "encode.random_init=true", "--set", "encode.encoder=convnext_atto",
        "--set", "denoise.min_steps=60", "--set", "denoise.epochs=2"],
    "skymorph inspect serve myrun": "serve_and_vote",
    "skymorph inspect merge myrun": "as is",
    # the test's cutouts are SDSS JPEGs (display-scaled): measure refuses them without this flag
    "skymorph measure myrun": ["--allow-nonlinear"],
    "skymorph validate myrun": "as is",
    # sample selection on catalog columns
    "skymorph ingest cutouts/ --out myrun --catalog COSMOS2020_FARMER.fits --id-col ID "
    "--select 'lp_type == 0' --select 'FLAG_COMBINED == 0' --select '0.2 < lp_zBEST < 1.2' "
    "--select 'I < 25'": "as is",
    # the adapted encoder (fewer training steps than the default 300 here)
    "skymorph encode myrun --encoder adapted": ["--set", "encode.train_steps=20"],
    "skymorph encode other --encoder adapted --weights myrun/adapted/checkpoint.pt": "as is",
    # labels you already have
    "skymorph inspect auto myrun --truth labels.csv --id-col objid --label-col gz1_name --set "
    "'inspect.types=[\"ELLIPTICAL\",\"SPIRAL\",\"EDGE_ON\",\"UNC\"]' --map spiral_cw=SPIRAL --map "
    "spiral_acw=SPIRAL --exclude dont_know --exclude merger --merge": "as is",
    "skymorph extend myrun": "as is",
    "skymorph evaluate myrun --truth labels.csv --id-col objid --label-col gz1_name --map spiral_cw=spiral "
    "--map spiral_acw=spiral --exclude dont_know --exclude merger": "as is",
    "skymorph measure myrun --allow-nonlinear": "as is",
    "skymorph validate myrun --etg-type ELLIPTICAL": "as is",
    # a Dask cluster: a LocalCluster of one worker process stands in for the nodes
    "dask scheduler &": "dask_cluster",
    "dask worker tcp://head:8786 --nworkers 16 --nthreads 1": "dask_cluster",
    "skymorph run /lustre/cutouts --out /lustre/runs/big --scheduler tcp://head:8786 --set "
    "reduce.fit_sample=100000 --set cluster.fit_sample=100000": "on_dask",
    "skymorph measure /lustre/runs/big --scheduler tcp://head:8786": "on_dask",
}
# Examples run by the test file of their own feature, on that file's run (listed so that the list
# is explicit: any further new example fails the coverage test).
PENDING = {
    # tests/test_hybrid_stage.py::test_the_readme_commands
    "skymorph reduce myrun --descriptors 1 --method none",
    "skymorph reduce myrun --descriptors 1 --projection nuisance --method none",
    # tests/test_special.py::test_readme_commands_of_the_unusual_galaxies
    "skymorph similar myrun 587722982825001149 --n 20",
    "skymorph similar myrun --image new_cutout.jpeg",
    "skymorph anomaly myrun --top 50",
    "skymorph subdivide myrun --cluster 3 --k 4",
    "skymorph subdivide myrun --type UNC",
    # tests/test_refine.py: the teach page's command, `inspect auto --refine` (with fewer labels on
    # its small run) and the benchmark with its summary (one seed, on that small run)
    "skymorph inspect refine myrun",
    "skymorph inspect auto myrun --truth labels.csv --id-col objid --label-col gz1_name --set "
    "'inspect.types=[\"ELLIPTICAL\",\"SPIRAL\",\"EDGE_ON\",\"UNC\"]' --map spiral_cw=SPIRAL --map "
    "spiral_acw=SPIRAL --exclude dont_know --exclude merger --merge --refine 300",
    "python benchmarks/eval_refine.py --out /tmp/refine_eval --seeds 42 1 2 --run "
    "gz1_sdss_natural=/work/runs/gz1_sdss_natural --run ceers_f200w=/work/runs/ceers_f200w --run "
    "gz1_sdss=/work/runs/gz1_sdss",
    "python benchmarks/eval_refine.py --summary /tmp/refine_eval/results.jsonl",
}
PYTHON_CASES = 1
"""The README's python blocks, run whole by :func:`test_python_example`."""


def test_every_readme_example_is_covered():
    examples = readme_examples()
    bash = [c for lang, c in examples if lang == "bash"]
    missing = [c for c in bash if c not in CASES and c not in PENDING]
    assert not missing, f"README examples no test runs (add them to CASES): {missing}"
    gone = [c for c in (*CASES, *PENDING) if c not in bash]
    assert not gone, f"CASES lists commands the README no longer has: {gone}"
    assert sum(lang == "python" for lang, _ in examples) == PYTHON_CASES


def test_readme_splitting_of_commands():
    text = "```bash\nskymorph a x \\\n    --b 'y z'   # note\nskymorph c && skymorph d\nfoo &\n```\n"
    assert readme_examples(text) == [("bash", "skymorph a x --b 'y z'"), ("bash", "skymorph c"),
                                     ("bash", "skymorph d"), ("bash", "foo &")]


# --- small real data -------------------------------------------------------------------------------


def _gz1_sample() -> pd.DataFrame:
    labels = pd.read_csv(GZ1 / "labels.csv", dtype={"objid": str})
    take = {"elliptical": 14, "spiral_cw": 7, "spiral_acw": 7, "edge_on": 10, "dont_know": 1, "merger": 1}
    return pd.concat([labels[labels["gz1_name"] == name].sort_values("objid").head(n)
                      for name, n in take.items()], ignore_index=True)


def _workdir(path: Path) -> Path:
    """A working directory as a README reader has it: cutouts/, labels.csv and a catalog."""
    sample = _gz1_sample()
    (path / "cutouts").mkdir(parents=True)
    for objid in sample["objid"]:
        (path / "cutouts" / f"{objid}.jpeg").symlink_to(GZ1 / "images" / f"{objid}.jpeg")
    sample.to_csv(path / "labels.csv", index=False)
    # a catalog with the COSMOS2020 columns the README's selection names, one row per cutout
    from astropy.table import Table

    n = len(sample)
    rng = np.random.default_rng(0)
    Table({"ID": sample["objid"].to_numpy().astype(str), "lp_type": (np.arange(n) % 10 == 0).astype(int),
           "FLAG_COMBINED": (np.arange(n) % 7 == 3).astype(int), "lp_zBEST": rng.uniform(0.05, 1.5, n),
           "I": rng.uniform(20, 26, n)}).write(path / "COSMOS2020_FARMER.fits")
    return path


def _run(command: str, cwd: Path, extra: list[str] | None = None) -> None:
    words = shlex.split(command)
    assert words[0] == "skymorph", command
    import os

    here = os.getcwd()
    os.chdir(cwd)
    try:
        code = main([*words[1:], *(extra or []), "-q"])
    finally:
        os.chdir(here)
    assert code == 0, f"`{command}` exited {code}"


def _case(command: str, cwd: Path) -> None:
    how = CASES[command]
    assert how == "as is" or isinstance(how, list), (command, how)
    _run(command, cwd, how if isinstance(how, list) else None)


def _commands(block_start: str) -> list[str]:
    """The README's commands from the one starting with ``block_start`` to the end of its block."""
    text = README.read_text()
    for lang, body in re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S):
        commands = [c for _, c in readme_examples(f"```{lang}\n{body}```")]
        if commands and commands[0].startswith(block_start):
            return commands
    raise AssertionError(f"no README block starts with {block_start!r}")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """The README's first command in a fresh working directory: `skymorph run cutouts/ --out myrun`."""
    work = _workdir(tmp_path_factory.mktemp("readme") / "base")
    _case("skymorph run cutouts/ --out myrun", work)
    return work


def _copy(base: Path, dest: Path, *names: str) -> Path:
    work = _workdir(dest)
    for name in names:
        shutil.copytree(base / "myrun", work / name, symlinks=True)
    return work


# --- the examples ------------------------------------------------------------------------------------


def test_make_targets_run_the_readme_commands():
    for target, wanted in (("demo", "skymorph run --demo --out demo_run"), ("test", "bin/pytest")):
        result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert wanted in result.stdout
    assert CASES["make demo"] == CASES["make test"] == "make_dry_run"


@pytest.mark.slow
def test_using_it(base_run, tmp_path):
    commands = _commands("skymorph run cutouts/ --out myrun")
    assert commands[0] == "skymorph run cutouts/ --out myrun"  # done by base_run
    work = _copy(base_run, tmp_path / "w", "myrun")
    for command in commands[1:]:
        if CASES[command] == "serve_and_vote":
            _serve_and_vote(command, work)
        else:
            _case(command, work)
    run = RunDir(work / "myrun")
    catalog = run.catalog()
    assert run.config().encode.encoder == "convnext_atto" and run.config().polar.enabled
    assert run.config().denoise.enabled and run.stage_info("denoise") is not None
    assert set(catalog.loc[catalog["consensus"], "morph_type"]) <= {"SPH", "LTD"}
    assert (work / "myrun" / "report" / "report.html").is_file()


def _serve_and_vote(command: str, work: Path) -> None:
    """`skymorph inspect serve myrun`: an expert names every cluster through the page's API,
    then Ctrl-C stops the server."""
    words = [*shlex.split(command)[1:], "--port", "0"]  # a free port: other tests serve too
    # SIGINT ignored, as for a background job of a script (CI runners start tests that way):
    # the server must still stop on Ctrl-C
    process = subprocess.Popen([sys.executable, "-m", "skymorph.cli", *words], cwd=work, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        url = None
        deadline = time.monotonic() + 300
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            match = re.search(r"(http://\S+/)\?token=(\S+)", line)
            if match:
                url, token = match.groups()
        assert url, process.stderr.read()
        headers = {"X-Skymorph-Token": token}
        request = urllib.request.Request(url + "api/state", headers=headers)
        with urllib.request.urlopen(request, timeout=30) as r:
            clusters = [c["cluster"] for c in json.loads(r.read())["clusters"]]
        # two experts agree (merge's min_agree is 2 by default)
        for expert in ("Ann", "Bob"):
            for i, cluster in enumerate(clusters):
                body = json.dumps({"expert": expert, "cluster": cluster,
                                   "type": "SPH" if i % 2 else "LTD"}).encode()
                request = urllib.request.Request(url + "api/vote", data=body, headers={
                    **headers, "Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as r:
                    assert json.loads(r.read())["ok"]
        process.send_signal(signal.SIGINT)
        # generous: on a loaded CI machine the interrupt waits for the request in flight
        out, err = process.communicate(timeout=300)
        assert "every vote cast is in" in out, err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        for stream in (process.stdout, process.stderr):
            stream.close()


@pytest.mark.slow
def test_sample_selection(tmp_path):
    (command,) = _commands("skymorph ingest cutouts/ --out myrun --catalog")
    work = _workdir(tmp_path / "w")
    _case(command, work)
    from astropy.table import Table

    cat = Table.read(work / "COSMOS2020_FARMER.fits").to_pandas()
    keep = ((cat["lp_type"] == 0) & (cat["FLAG_COMBINED"] == 0) & (cat["lp_zBEST"] > 0.2)
            & (cat["lp_zBEST"] < 1.2) & (cat["I"] < 25))
    ids = RunDir(work / "myrun").sources()["id"].astype(str)
    assert sorted(ids) == sorted(cat.loc[keep, "ID"].astype(str)) and 0 < keep.sum() < len(cat)


@pytest.mark.slow
def test_python_example(base_run, tmp_path, capsys):
    (code,) = [c for lang, c in readme_examples() if lang == "python"]
    work = _copy(base_run, tmp_path / "w", "myrun")
    import os

    here = os.getcwd()
    os.chdir(work)
    try:
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    finally:
        os.chdir(here)
    assert "run directory myrun" in capsys.readouterr().out
    assert RunDir(work / "myrun").config().cluster.k == 20  # the last call set it back to 20


@pytest.mark.slow
def test_adapted_encoder_examples(base_run, tmp_path):
    commands = _commands("skymorph encode myrun --encoder adapted")
    work = _copy(base_run, tmp_path / "w", "myrun", "other")
    for command in commands:
        _case(command, work)
    assert RunDir(work / "other").stage_info("encode")["dim"] == 128
    assert not (work / "other" / "adapted").exists()  # the checkpoint was reused, not retrained


@pytest.mark.slow
def test_labels_you_already_have(base_run, tmp_path, capsys):
    commands = _commands("skymorph inspect auto myrun")
    work = _copy(base_run, tmp_path / "w", "myrun")
    for command in commands:
        _case(command, work)
    catalog = RunDir(work / "myrun").catalog()
    assert set(catalog["morph_type_final"]) <= {"ELLIPTICAL", "SPIRAL", "EDGE_ON", "UNC", "OOD"}
    assert (work / "myrun" / "evaluation" / "evaluation.json").is_file()
    assert (work / "myrun" / "report" / "report.html").is_file()


@pytest.mark.slow
def test_dask_cluster_examples(tmp_path):
    distributed = pytest.importorskip("distributed")
    commands = _commands("dask scheduler &")
    assert [CASES[c] for c in commands] == ["dask_cluster", "dask_cluster", "on_dask", "on_dask"]
    work = _workdir(tmp_path / "w")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        for command in commands[2:]:
            # absolute paths, as on a shared filesystem: the workers do not share the test's cwd
            text = (command.replace("tcp://head:8786", cluster.scheduler_address)
                    .replace("/lustre/cutouts", str(work / "cutouts"))
                    .replace("/lustre/runs/big", str(work / "big")))
            # the test's cutouts are SDSS JPEGs (display-scaled): measure needs the flag for them
            _run(text, work, ["--allow-nonlinear"] if " measure " in f" {text} " else None)
    run = RunDir(work / "big")
    assert run.stage_info("measure") is not None and len(run.catalog()) == len(_gz1_sample())
    assert run.config().compute.scheduler == "local"  # the address applied to those commands only
