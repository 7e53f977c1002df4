"""The issue-21 benchmarks run: end to end at a tiny N, and the GPU check on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "reduce.dims=5", "--set", "reduce.map_2d=false", "--set", "cluster.k=4",
        "--set", "encode.input_size=64", "--set", "encode.rotations=1", "--set", "measure.workers=1"]


@pytest.mark.slow
def test_end_to_end_benchmark_small_n(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_end_to_end as bench
    finally:
        sys.path.pop(0)
    out = tmp_path / "figures.json"
    assert bench.main(["--n", "40", "--json", str(out), *TINY]) == 0
    import json

    figures = json.loads(out.read_text())["40"]
    assert list(figures) == list(bench.STAGES)
    for stage in ("ingest", "encode", "reduce", "cluster", "name", "measure"):
        assert figures[stage]["seconds"] > 0 and "error" not in figures[stage], stage
        assert figures[stage]["peak_mib"] > 0
    # the cost fit and projection: linear data gives b = 1 and a projection 100x the measurement
    a, b = bench.fit([100, 1000], [2.0, 20.0])
    assert b == pytest.approx(1.0) and a * 1e5 == pytest.approx(2000.0)
    table = bench.report({40: figures, 80: figures}, "test")
    assert "projected 10^5" in table and "| measure |" in table


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_at_a_tiny_n(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=3000)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "no GPU: CPU at a tiny N" in result.stdout
    assert "ratio stage/plain" in result.stdout  # the encoder against a bare model(x) loop
    assert "| **total** |" in result.stdout  # the end-to-end table
