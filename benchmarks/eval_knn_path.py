"""Issue #19: does the k-NN path of reduce (exact below ``reduce.exact_knn_below`` galaxies,
approximate above) or the seed explain the drop seen on larger sets?

For every labelled development set, the features of a finished default run (``--run SET=DIR``;
only the stamps, sources, config and features are copied) are reduced (UMAP-300), clustered
(k = 20) and scored by ``skymorph.stages.evaluate`` twice per seed: with the default k-NN path
(exact on these sets, which are below 4,096 galaxies) and with ``reduce.exact_knn_below = 0``
(the approximate graph that runs above 4,096).  One JSON line per result in ``--out/results.jsonl``.

    python benchmarks/eval_knn_path.py --out /tmp/knn --seeds 0 1 2 \\
        --run gz1_sdss=RUN1 --run gz1_sdss_natural=RUN2 --run ceers_f200w=RUN3
    python benchmarks/eval_knn_path.py --summary /tmp/knn/results.jsonl

The rows behind the README's table (128 px default runs, and 260 px runs made with
``--set encode.input_size=260``) are ``benchmarks/eval_knn_path_results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_adapted import SETS, _score  # noqa: E402
from eval_encode_speed import _copy_features, seed_cells  # noqa: E402

PATHS = {"exact": {}, "approximate": {"exact_knn_below": 0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/knn_path")
    parser.add_argument("--run", action="append", default=[], help="SET=DIR of a finished default run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--summary", help="print the table of a results.jsonl and stop")
    args = parser.parse_args()
    if args.summary:
        summary(Path(args.summary))
        return

    import skymorph

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for item in args.run:
        name, src = item.split("=", 1)
        for seed in args.seeds:
            for path, settings in PATHS.items():
                config = skymorph.RunDir(src).config().update({
                    "cluster": {"k": 20, "seed": seed},
                    "reduce": {"seed": seed, "map_2d": False, **settings}})
                run_dir = out / f"{name}_{path}_s{seed}"
                _copy_features(Path(src), run_dir)
                row = {"set": name, "knn": path, "seed": seed, "input_size": config.encode.input_size,
                       **_score(run_dir, config, SETS[name]),
                       "time": time.strftime("%H:%M:%S")}
                with (out / "results.jsonl").open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
                shutil.rmtree(run_dir)


def summary(path: Path) -> None:
    """Markdown table: per set, encoder input size and k-NN path, the mean balanced accuracy +-
    half its range over the seeds and the mean kept fraction."""
    import pandas as pd

    rows = pd.read_json(path, lines=True)
    print("| set | input px | k-NN path | balacc (mean ± half-range) | kept | seeds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (name, size, knn), g in rows.groupby(["set", "input_size", "knn"], sort=False):
        print(f"| {name} | {size} | {knn} | {seed_cells(g)} | {g['seed'].nunique()} |")


if __name__ == "__main__":
    main()
