"""Issue #21: faster encoder settings against the default, on the three labelled development sets.

For every set the default run's stamps are taken from a finished default run (``--run SET=DIR``,
e.g. the lead's ``/work/runs/<set>``; only ``stamps``, ``sources`` and the config are copied) or,
without one, ingested here with the default settings.  Each candidate (a set of ``[encode]``
settings, ``CANDIDATES``) then encodes the stamps through the encode stage (its images/s and CPU
seconds per image are recorded), and for every seed the features are reduced (UMAP-300), clustered
(k = 20) and scored by ``skymorph.stages.evaluate`` (consensus balanced accuracy of the simulated
inspection, kept fraction), one JSON line per result in ``--out/results.jsonl``.

``base`` is today's default (EfficientNet-Lite2, 260 px, 4 rotations); with ``runtime = auto`` it
runs in ONNX Runtime, whose features equal PyTorch's to cosine >= 0.99999 (tests/test_encode.py).

    python benchmarks/eval_encode_speed.py --out /tmp/i21/eval --seeds 0 1 2 \\
        --candidates base s160 s128
    python benchmarks/eval_encode_speed.py --summary /tmp/i21/eval/results.jsonl   # the table
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_adapted import DATA, SETS, _score  # noqa: E402

CANDIDATES = {
    "base": {},  # the default: Lite2, its own 260 px, 4 rotations
    "s224": {"input_size": 224},
    "s192": {"input_size": 192},
    "s160": {"input_size": 160},
    "s128": {"input_size": 128},
    "s128r2": {"input_size": 128, "rotations": 2},
    "s128r1": {"input_size": 128, "rotations": 1},
    "lite0s128": {"encoder": "efficientnet_lite0", "input_size": 128},
}
KEEP = ("stamps.zarr", "sources.parquet", "config.toml", "skymorph.json", "rejects.csv")


def _stamps_run(name: str, src: Path | None, dst: Path) -> Path:
    """A run directory holding the set's default stamps (copied, or ingested here once)."""
    import skymorph

    if dst.exists() and (dst / "stages" / "ingest.json").exists():
        return dst
    if src is None:
        skymorph.ingest([DATA / name / "images"], dst, skymorph.Config(), progress=False)
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    for item in KEEP:
        if (src / item).is_dir():
            shutil.copytree(src / item, dst / item, dirs_exist_ok=True)
        elif (src / item).exists():
            shutil.copy2(src / item, dst / item)
    (dst / "stages").mkdir(exist_ok=True)
    shutil.copy2(src / "stages" / "ingest.json", dst / "stages" / "ingest.json")
    return dst


def _copy_features(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("embedding*", "catalog*", "evaluation",
                                                              "montages", "clusters*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/i21/eval")
    parser.add_argument("--run", action="append", default=[], help="SET=DIR of a finished default run")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--candidates", nargs="+", default=["base", "s160", "s128"], choices=list(CANDIDATES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--summary", help="print the table of a results.jsonl and stop")
    args = parser.parse_args()
    if args.summary:
        summary(Path(args.summary))
        return

    import skymorph
    from skymorph.stages.encode import encode

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    given = dict(item.split("=", 1) for item in args.run)
    encoded: dict[tuple[str, str], tuple[Path, dict]] = {}
    # every encoding first (the slow part), then the seeds over all of them
    for name in args.sets:
        base = _stamps_run(name, Path(given[name]) if name in given else None, out / f"{name}_stamps")
        for cand in args.candidates:
            feat_dir = out / f"{name}_{cand}"
            info_path = feat_dir / "stages" / "encode.json"
            if not info_path.exists():
                _copy_features(base, feat_dir)
                cfg = skymorph.Config().update({"encode": {**CANDIDATES[cand], "threads": args.threads}})
                encode(feat_dir, cfg, force=True, progress=False)
            info = json.loads(info_path.read_text())
            encoded[name, cand] = feat_dir, info
            print(f"{name} {cand}: {info.get('images_per_s')} img/s, "
                  f"{info['encode_cpu_seconds'] / info['n_images']:.3f} CPU s/img ({info.get('runtime')})",
                  flush=True)
    for seed in args.seeds:
        for (name, cand), (feat_dir, info) in encoded.items():
            config = skymorph.Config().update({
                "encode": CANDIDATES[cand], "cluster": {"k": 20, "seed": seed},
                "reduce": {"seed": seed, "map_2d": False}})
            run_dir = out / f"{name}_{cand}_s{seed}"
            _copy_features(feat_dir, run_dir)
            row = {"set": name, "candidate": cand, "settings": CANDIDATES[cand], "seed": seed,
                   **_score(run_dir, config, SETS[name]), "images_per_s": info.get("images_per_s"),
                   "cpu_s_per_image": round(info["encode_cpu_seconds"] / info["n_images"], 4),
                   "runtime": info.get("runtime"), "time": time.strftime("%H:%M:%S")}
            with results.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            shutil.rmtree(run_dir)


def summary(path: Path) -> None:
    """Markdown table: per candidate and set, mean balanced accuracy +- half its range over the
    seeds, the mean kept fraction, the encoding CPU seconds per image and the seed count."""
    import pandas as pd

    rows = pd.read_json(path, lines=True)
    print("| candidate | set | balacc (mean ± half-range) | kept | CPU s / image | seeds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (cand, name), g in rows.groupby(["candidate", "set"], sort=False):
        print(f"| {cand} | {name} | {seed_cells(g)} | {g['cpu_s_per_image'].median():.3f} | "
              f"{g['seed'].nunique()} |")


def seed_cells(g) -> str:
    """``balacc mean ± half-range | mean kept`` of one group of seeds (a table's middle cells)."""
    half = (g["balacc"].max() - g["balacc"].min()) / 2
    return f"{g['balacc'].mean():.3f} ± {half:.3f} | {g['kept'].mean():.0%}"


if __name__ == "__main__":
    main()
