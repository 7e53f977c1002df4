"""Start-up and per-task cost of today's process pool against Dask's LocalCluster and loky.

Issue 18, item 5, asks whether ``scheduler = "local"`` could run through the same code
as a Dask cluster (one execution path instead of :mod:`skymorph.core.parallel`'s pool
with its start-method choice and its ``__main__`` trick).  This measures, in one run on
one machine state, for 2 worker processes:

``pool-fork``
    today's :func:`skymorph.core.parallel.start_pool` from a single-threaded process
    (it forks).  The forked workers keep the ``__main__`` that ``start_pool`` blanked
    while they started, and astropy's first import in a worker then fails
    (``inspect.getfile`` of ``__main__``): the ``measure_ok`` column shows the galaxies
    lost to that (the measure stage itself has Zarr's threads running when it starts its
    pool, so it takes the forkserver path);
``pool-forkserver``
    the same after a thread was started (as Zarr's I/O thread or a notebook does): a
    forkserver that preloads measure's modules (statmorph, photutils) once;
``dask``
    ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` and
    a ``Client`` (dashboard off);
``loky``
    ``joblib.externals.loky.get_reusable_executor(2)``, defaults: with psutil installed its
    workers measure their memory after their first task and restart when it has grown by
    300 MB, which importing statmorph, photutils and astropy during the first chunk does,
    so every worker is replaced once (and imports them again);
``loky-preload``
    the same with an ``initializer`` that imports measure's modules first (what the
    forkserver's preload does), so the restart does not happen;
``serial``
    no workers: the same calls in this process (what ``--workers 1`` does), for scale.

For each, in a fresh Python process per repeat (the parent has imported
``skymorph.stages.measure``, as the stage has when it starts its pool):

* ``start``: seconds from nothing to both workers having answered a trivial task
  (``os.getpid`` after 20 ms, submitted in pairs until two different pids answered);
* ``per task``: milliseconds per tiny task over ``--tiny`` tasks (200) sent through
  :func:`skymorph.core.compute.ordered_map`, the bounded ordered map the stages use,
  with 4 tasks in flight (``2 * workers``, as :func:`~skymorph.core.parallel.map_ordered`);
* ``measure``: seconds to map the per-chunk work of ``skymorph measure``
  (``skymorph.stages.measure._run_task``, ``skymorph.io.measurements.measure_chunk``
  since issue 18 moved it: read the stamps, segmentation, statmorph with
  the Sersic fit and the run's PSFs, Psi, G2) over the 100 bundled COSMOS stamps in
  chunks of 32 (the default), again through ``ordered_map``; spawned workers import
  statmorph during their first chunk, so that cost is in this column;
* ``stop``: seconds to shut the workers down;
* ``total``: the sum, i.e. what the mechanism costs a measure stage on the demo;
* ``measure_ok``: galaxies measured (98 of 100 when nothing went wrong).

Medians of ``--repeats`` (5) runs, the mechanisms taken in turn within each repeat (the
order rotated from one repeat to the next), and each figure's ratio to ``pool-fork`` and
to ``pool-forkserver`` from the same run.

Then, unless ``--skip-guard``: each mechanism is started from a script that has no
``if __name__ == "__main__":`` guard, in a subprocess, and the table says whether the
script's body ran again in the workers, whether it failed, hung or worked.  Variants:
``pool-forkserver-raw`` (a plain ``ProcessPoolExecutor`` on a forkserver context,
i.e. today's pool without the ``__main__`` trick), ``dask-hidden`` (LocalCluster
started inside ``parallel._main_module_hidden()``) and ``dask-hidden-restart`` (the same,
then ``client.restart()``, as when a nanny replaces a dead worker).

Then, unless ``--skip-cli``: the whole ``skymorph measure RUN --workers W --force``
command (median of ``--cli-repeats``, 3) for ``--cli-workers`` (2 and 1), to put the
start-up cost in proportion.

The load average (``os.getloadavg``) is printed beside each part: on a shared machine
quote the medians and the ratios.

Examples::

    export PYTHONPATH=$PWD/src
    python benchmarks/bench_pool_startup.py                        # everything, 5 repeats
    python benchmarks/bench_pool_startup.py --repeats 3 --skip-cli
    python benchmarks/bench_pool_startup.py --mechanisms pool-fork,loky --skip-guard
    python benchmarks/bench_pool_startup.py --run demo_run         # an existing ingested run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
MECHANISMS = ("pool-fork", "pool-forkserver", "dask", "loky", "loky-preload", "serial")
GUARD_MECHANISMS = ("pool-fork", "pool-forkserver", "pool-forkserver-raw", "dask", "dask-hidden",
                    "dask-hidden-restart", "loky")
IN_FLIGHT = 4
WORKERS = 2


def _chunk_function() -> tuple[Any, str]:
    """Measure's per-chunk worker function and its module (it moved in issue 18)."""
    import importlib

    for module, name in (("skymorph.io.measurements", "measure_chunk"),
                         ("skymorph.stages.measure", "_run_task")):
        try:
            return getattr(importlib.import_module(module), name), module
        except (ImportError, AttributeError):
            continue
    raise SystemExit("no measure chunk function found (skymorph.io.measurements.measure_chunk)")


def _measure_preload() -> list[str]:
    """What measure preloads in the forkserver: the chunk function's module and statmorph's."""
    return [_chunk_function()[1], "skymorph.core.morphometry", "statmorph", "photutils.segmentation"]


# --- tasks (module level, so that every mechanism pickles them by reference) -----------------

def hello() -> int:
    """The trivial task: long enough (20 ms) that two submitted at once land on two workers."""
    time.sleep(0.02)
    return os.getpid()


def tiny(i: int) -> int:
    return i + 1


def preload_measure() -> None:
    """loky's initializer for ``loky-preload``: import what measure's chunks import."""
    import importlib

    for name in _measure_preload():
        importlib.import_module(name)


# --- one mechanism, in a fresh process --------------------------------------------------------

def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), str(HERE), env.get("PYTHONPATH", "")) if p)
    return env


def _load() -> float:
    return os.getloadavg()[0]


def _demo_tasks(run_path: str) -> tuple[list[Any], Any]:
    """The measure stage's tasks for ``run_path`` and its settings (as ``stages.measure._compute``)."""
    from skymorph import Config
    from skymorph.core.measure_tasks import plan_tasks, psf_source, weights_source
    from skymorph.io.rundir import RunDir

    cfg = Config().measure
    run = RunDir(run_path)
    weights_name, weights_used = weights_source(cfg, run.has_array)
    psf_used = psf_source(cfg, run.has_array)
    tasks = plan_tasks(str(run.path), run.sources(), cfg.chunk_size, weights=weights_name, psf=None,
                       psf_array=psf_used == "array", psf_label=psf_used, weights_label=weights_used)
    return tasks, cfg


def child(mechanism: str, run_path: str, n_tiny: int) -> dict[str, Any]:
    """Time one mechanism in this (fresh) process; the figures as a dict."""
    import bench_pool_startup as me  # this file by its module name: its tasks pickle by reference
    from skymorph.core import compute, parallel
    chunk_function, _ = _chunk_function()

    tasks, cfg = _demo_tasks(run_path)
    if mechanism == "pool-forkserver":
        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
    stop: Any
    t0 = time.perf_counter()
    if mechanism.startswith("pool"):
        pool = parallel.start_pool(WORKERS, _measure_preload())
        submit, stop = pool.submit, lambda: pool.shutdown(wait=True)
        how = pool._mp_context.get_start_method()
    elif mechanism == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)

        def submit(func, *args):
            return client.submit(func, *args, pure=False)

        def stop():
            client.close()
            cluster.close()
        import dask

        how = "nanny + " + str(dask.config.get("distributed.worker.multiprocessing-method"))
    elif mechanism.startswith("loky"):
        from joblib.externals.loky import get_reusable_executor

        initializer = me.preload_measure if mechanism == "loky-preload" else None
        executor = get_reusable_executor(max_workers=WORKERS, initializer=initializer)
        submit, stop = executor.submit, lambda: executor.shutdown(wait=True)
        how = "loky" + (" + initializer" if initializer else "")
    elif mechanism == "serial":
        submit, stop, how = None, (lambda: None), "this process"
    else:
        raise SystemExit(f"unknown mechanism {mechanism}")
    pids: set[int] = set()
    if submit is not None:
        for _ in range(50):
            pids |= {f.result() for f in [submit(me.hello), submit(me.hello)]}
            if len(pids) >= WORKERS:
                break
    t1 = time.perf_counter()
    out = list(compute.ordered_map(me.tiny, range(n_tiny), (), submit=submit, in_flight=IN_FLIGHT))
    assert out == [i + 1 for i in range(n_tiny)]
    t2 = time.perf_counter()
    chunks = list(compute.ordered_map(chunk_function, tasks, (cfg,), submit=submit,
                                      in_flight=IN_FLIGHT))
    t3 = time.perf_counter()
    stop()
    t4 = time.perf_counter()
    rows = [r for chunk in chunks for r in chunk]
    return {"mechanism": mechanism, "how": how, "workers_seen": len(pids),
            "start": t1 - t0, "per_task_ms": 1000 * (t2 - t1) / n_tiny, "measure": t3 - t2,
            "stop": t4 - t3, "total": t4 - t0, "rows": len(rows),
            "measure_ok": int(sum(bool(r.get("measure_ok")) for r in rows))}


def run_child(mechanism: str, run_path: str, n_tiny: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mechanism, "--run", run_path,
           "--tiny", str(n_tiny)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{mechanism} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the unguarded script ---------------------------------------------------------------------

_GUARD_START = {
    "pool-fork": """
        from skymorph.core.parallel import start_pool
        pool = start_pool(2)
        submit, stop = pool.submit, pool.shutdown
    """,
    "pool-forkserver": """
        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        from skymorph.core.parallel import start_pool
        pool = start_pool(2)
        submit, stop = pool.submit, pool.shutdown
    """,
    "pool-forkserver-raw": """
        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
        submit, stop = pool.submit, pool.shutdown
    """,
    "dask": """
        from distributed import Client, LocalCluster
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        submit = lambda f, *a: client.submit(f, *a, pure=False)
        stop = lambda: (client.close(), cluster.close())
    """,
    "dask-hidden": """
        from distributed import Client, LocalCluster
        from skymorph.core.parallel import _main_module_hidden
        with _main_module_hidden():
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        client = Client(cluster)
        submit = lambda f, *a: client.submit(f, *a, pure=False)
        stop = lambda: (client.close(), cluster.close())
    """,
    "dask-hidden-restart": """
        from distributed import Client, LocalCluster
        from skymorph.core.parallel import _main_module_hidden
        with _main_module_hidden():
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
        client = Client(cluster)
        client.restart(timeout=30)  # as the nannies do after a worker died
        submit = lambda f, *a: client.submit(f, *a, pure=False)
        stop = lambda: (client.close(), cluster.close())
    """,
    "loky": """
        from joblib.externals.loky import get_reusable_executor
        executor = get_reusable_executor(max_workers=2)
        submit, stop = executor.submit, lambda: executor.shutdown(wait=True)
    """,
}


def guard_script(mechanism: str) -> str:
    return textwrap.dedent("""
        import os, sys, threading, time
        print("SCRIPT BODY RUNS", os.getpid(), flush=True)
    """) + textwrap.dedent(_GUARD_START[mechanism]) + textwrap.dedent("""
        from bench_pool_startup import hello
        pids = set()
        for _ in range(50):
            pids |= {f.result() for f in [submit(hello), submit(hello)]}
            if len(pids) >= 2:
                break
        print("WORKERS ANSWERED", len(pids), flush=True)
        stop()
        print("DONE", flush=True)
    """)


def check_guard(mechanism: str, root: Path, timeout: float) -> dict[str, Any]:
    """Run ``mechanism`` from a script without a ``__main__`` guard; what happened."""
    script = root / f"unguarded_{mechanism.replace('-', '_')}.py"
    script.write_text(guard_script(mechanism))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_env(),
                              timeout=timeout, cwd=root)
        stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        rc = None
    seconds = time.perf_counter() - t0
    bodies = [line.split()[-1] for line in stdout.splitlines() if line.startswith("SCRIPT BODY RUNS")]
    lines = stderr.splitlines()
    errors = []
    for i, line in enumerate(lines):
        if "Error" in line and not line.startswith((" ", "\t", "Traceback")):
            text = line.strip()
            if text.endswith(":") and i + 1 < len(lines):
                text += " " + lines[i + 1].strip()
            errors.append(text)
    answered = next((line.split()[-1] for line in stdout.splitlines() if line.startswith("WORKERS ANSWERED")),
                    "0")
    if rc is None:
        verdict = f"HANGS (killed after {timeout:g} s)"
    elif rc == 0 and "DONE" in stdout:
        verdict = "works" if len(bodies) == 1 else f"works, but the body ran {len(bodies)} times"
    else:
        verdict = f"fails (rc {rc})"
    return {"mechanism": mechanism, "verdict": verdict, "body_runs": len(bodies),
            "distinct_pids": len(set(bodies)), "workers_answered": answered, "seconds": seconds,
            "error": errors[-1][:150] if errors else ""}


# --- the CLI -----------------------------------------------------------------------------------

def time_cli(run_path: str, workers: int, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([*_skymorph(), "measure", run_path, "--workers", str(workers), "--force", "-q"],
                       check=True, capture_output=True, env=_env())
        times.append(time.perf_counter() - t0)
    return times


def _skymorph() -> list[str]:
    """The ``skymorph`` command of this environment (else ``python -m skymorph.cli``)."""
    script = Path(sys.executable).parent / "skymorph"
    return [str(script)] if script.exists() else [sys.executable, "-m", "skymorph.cli"]


# --- output ------------------------------------------------------------------------------------

def _median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def print_table(by_mech: dict[str, list[dict[str, Any]]]) -> None:
    keys = [("start", "start s", 1.0), ("per_task_ms", "per task ms", 1.0), ("measure", "measure s", 1.0),
            ("stop", "stop s", 1.0), ("total", "total s", 1.0)]
    ref = {name: {k: _median(by_mech[name], k) for k, _, _ in keys}
           for name in ("pool-fork", "pool-forkserver") if name in by_mech}
    head = "| mechanism | how | " + " | ".join(label for _, label, _ in keys)
    head += " | start / fork | start / fsrv | measure / fork | total / fork | total / fsrv | measure_ok |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, results in by_mech.items():
        med = {k: _median(results, k) for k, _, _ in keys}
        cells = [f"{med[k]:.3f}" if k == "per_task_ms" else f"{med[k]:.2f}" for k, _, _ in keys]

        def ratio(k: str, base: str, med=med) -> str:
            if base not in ref or ref[base][k] <= 0:
                return "-"
            return f"{med[k] / ref[base][k]:.2f}"

        cells += [ratio("start", "pool-fork"), ratio("start", "pool-forkserver"),
                  ratio("measure", "pool-fork"), ratio("total", "pool-fork"),
                  ratio("total", "pool-forkserver"),
                  "/".join(sorted({str(r["measure_ok"]) for r in results}))]
        print(f"| {name} | {results[0]['how']} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each mechanism (median; default 5)")
    parser.add_argument("--mechanisms", default=",".join(MECHANISMS),
                        help=f"comma-separated, from {', '.join(MECHANISMS)}")
    parser.add_argument("--tiny", type=int, default=200, help="tiny tasks for the per-task overhead")
    parser.add_argument("--run", help="an ingested run directory (default: ingest the 100 demo stamps "
                                      "into a temporary one)")
    parser.add_argument("--skip-guard", action="store_true", help="skip the unguarded-script checks")
    parser.add_argument("--guard-timeout", type=float, default=90.0, help="seconds before a check is a hang")
    parser.add_argument("--skip-cli", action="store_true", help="skip timing `skymorph measure`")
    parser.add_argument("--cli-workers", default="2,1", help="--workers values for `skymorph measure`")
    parser.add_argument("--cli-repeats", type=int, default=3, help="runs of `skymorph measure` (median)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.run, args.tiny)))
        return 0

    root = Path(tempfile.mkdtemp(prefix="bench_pool_"))
    report: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        run_path = args.run
        if run_path is None:
            sys.path.insert(0, str(SRC))
            from skymorph import Config, ingest
            from skymorph.io.datasets import cosmos_demo

            run_path = str(ingest([cosmos_demo()], root / "demo", Config(), progress=False).path)
        mechanisms = [m.strip() for m in args.mechanisms.split(",") if m.strip()]
        import distributed
        import joblib

        print(f"# {os.cpu_count()} CPUs, Python {report['python']}, distributed {distributed.__version__}, "
              f"joblib {joblib.__version__}; run {run_path}; {args.repeats} repeats")
        by_mech: dict[str, list[dict[str, Any]]] = {m: [] for m in mechanisms} if args.repeats else {}
        load0 = _load()
        for repeat in range(args.repeats):
            shift = repeat % len(mechanisms)
            for mechanism in mechanisms[shift:] + mechanisms[:shift]:
                result = run_child(mechanism, run_path, args.tiny)
                result["load"] = _load()
                by_mech[mechanism].append(result)
                print(f"  repeat {repeat + 1} {mechanism:16s} start {result['start']:.2f} s, "
                      f"{result['per_task_ms']:.2f} ms/task, measure {result['measure']:.2f} s, "
                      f"stop {result['stop']:.2f} s ({result['workers_seen']} workers answered, "
                      f"{result['rows']} rows, {result['measure_ok']} measure_ok, "
                      f"load {result['load']:.2f})", flush=True)
        if by_mech:
            print(f"\n## Start-up, per-task overhead and the demo's measure work, {WORKERS} workers "
                  f"(median of {args.repeats}; load {load0:.2f} -> {_load():.2f})\n")
            print_table(by_mech)
        report["mechanisms"] = by_mech

        if not args.skip_guard:
            load0 = _load()
            checks = [check_guard(m, root, args.guard_timeout) for m in GUARD_MECHANISMS]
            print(f"\n## A script without `if __name__ == \"__main__\":` "
                  f"(load {load0:.2f} -> {_load():.2f})\n")
            print("| mechanism | verdict | body runs (pids) | workers answered | s | last error |")
            print("|---|---|---|---|---|---|")
            for c in checks:
                print(f"| {c['mechanism']} | {c['verdict']} | {c['body_runs']} ({c['distinct_pids']}) | "
                      f"{c['workers_answered']} | {c['seconds']:.1f} | {c['error']} |")
            report["guard"] = checks

        if not args.skip_cli:
            load0 = _load()
            cli = {int(w): time_cli(run_path, int(w), args.cli_repeats) for w in args.cli_workers.split(",")}
            print(f"\n## `skymorph measure RUN --workers W --force` (median of {args.cli_repeats}; "
                  f"load {load0:.2f} -> {_load():.2f})\n")
            print("| workers | wall s (median) | runs |")
            print("|---|---|---|")
            for w, times in cli.items():
                print(f"| {w} | {statistics.median(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |")
            report["cli"] = cli
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
