"""Issue #19: where does the 3-seed spread of the consensus come from, and does clustering
the concatenation of several UMAP embeddings narrow it?

For every labelled development set, the features of a finished default run (``--run SET=DIR``)
are reduced (UMAP-300) and clustered (k = 20) and scored by ``skymorph.stages.evaluate``:

``--mode split``
    the reduce seed and the cluster seed varied one at a time from (0, 0): rows
    ``(reduce_seed, cluster_seed)`` = (0, 0), (0, 1), (0, 2), (1, 0), (2, 0).
``--mode concat --members M``
    for each seed s, UMAP-300 with seeds s, s + 1000, ..., s + 1000 (M - 1), their embeddings
    concatenated (M x 300 columns) and clustered with seed s (an experiment, not a setting).

One JSON line per result in ``--out/results.jsonl``::

    python benchmarks/eval_seed_spread.py --mode split --run gz1_sdss=RUN1 ...
    python benchmarks/eval_seed_spread.py --mode concat --members 3 --run gz1_sdss=RUN1 ...
    python benchmarks/eval_seed_spread.py --mode concat --members 1 --set n_epochs=1000 ...
    python benchmarks/eval_seed_spread.py --summary /tmp/seed_spread/results.jsonl

``--set KEY=VALUE`` changes a ``[reduce]`` setting for every row (recorded as the row's
``variant``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_adapted import SETS  # noqa: E402
from eval_encode_speed import _copy_features, seed_cells  # noqa: E402

SPLIT = ((0, 0), (0, 1), (0, 2), (1, 0), (2, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/seed_spread")
    parser.add_argument("--run", action="append", default=[], help="SET=DIR of a finished default run")
    parser.add_argument("--mode", choices=("split", "concat"), default="split")
    parser.add_argument("--members", type=int, default=3, help="UMAP embeddings concatenated (concat)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (concat)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a [reduce] setting for every row, e.g. n_epochs=1000")
    parser.add_argument("--summary", help="print the table of a results.jsonl and stop")
    args = parser.parse_args()
    if args.summary:
        summary(Path(args.summary))
        return
    settings = {key: _value(value) for key, _, value in (item.partition("=") for item in args.set)}
    variant = " ".join(args.set) or "default"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for item in args.run:
        name, src = item.split("=", 1)
        cases = SPLIT if args.mode == "split" else [(s, s) for s in args.seeds]
        for reduce_seed, cluster_seed in cases:
            members = 1 if args.mode == "split" else args.members
            run_dir = out / f"{name}_r{reduce_seed}_c{cluster_seed}_m{members}"
            _copy_features(Path(src), run_dir)
            row = {"set": name, "mode": args.mode, "members": members, "variant": variant,
                   "reduce_seed": reduce_seed, "cluster_seed": cluster_seed,
                   **_score(Path(src), run_dir, SETS[name], reduce_seed, cluster_seed, members,
                            settings),
                   "time": time.strftime("%H:%M:%S")}
            with (out / "results.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            shutil.rmtree(run_dir)


def _value(text: str):
    """A setting's value: JSON (numbers, true/false, lists), else the text (e.g. ``metric=cosine``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _score(src: Path, run_dir: Path, spec: dict, reduce_seed: int, cluster_seed: int,
           members: int, settings: dict) -> dict:
    import numpy as np

    import skymorph
    from skymorph.stages.cluster import cluster
    from skymorph.stages.evaluate import evaluate
    from skymorph.stages.reduce import reduce

    t0 = time.perf_counter()
    embeddings = []
    for j in range(members):
        config = skymorph.RunDir(src).config().update({
            "cluster": {"k": 20, "seed": cluster_seed},
            "reduce": {**settings, "seed": reduce_seed + 1000 * j, "map_2d": False}})
        reduce(run_dir, config, progress=False, force=True)
        embeddings.append(np.asarray(skymorph.RunDir(run_dir).open_array("embedding")[:]))
    if members > 1:
        # the concatenation replaces the last member's embedding; cluster reads the array, and
        # the reduce record (the last member's seed) keeps the settings check satisfied
        x = np.concatenate(embeddings, axis=1).astype("float32")
        skymorph.RunDir(run_dir).create_array("embedding", x.shape, 8192)[:] = x
    cluster(run_dir, config, progress=False, force=True)
    result = evaluate(run_dir, spec["truth"], spec["id_col"], spec["label_col"], config,
                      label_map=spec["label_map"], exclude=spec["exclude"])
    return {"balacc": result["inspection"]["balanced_accuracy"], "kept": result["fraction_kept"],
            "kmeans_all": (result.get("kmeans_all") or {}).get("balanced_accuracy"),
            "seconds": round(time.perf_counter() - t0, 1)}


def summary(path: Path) -> None:
    """Markdown tables: the split rows one by one, and per set and number of concatenated
    embeddings the mean balanced accuracy +- half its range over the seeds."""
    import pandas as pd

    rows = pd.read_json(path, lines=True)
    rows["variant"] = rows.get("variant", pd.Series("default", index=rows.index)).fillna("default")
    split = rows[rows["mode"] == "split"]
    if len(split):
        print("| set | reduce seed | cluster seed | balacc | kept |")
        print("| --- | --- | --- | --- | --- |")
        for r in split.itertuples():
            print(f"| {r.set} | {r.reduce_seed} | {r.cluster_seed} | {r.balacc:.3f} | {r.kept:.0%} |")
    concat = rows[rows["mode"] == "concat"]
    if len(concat):
        print("\n| set | reduce settings | UMAP embeddings | balacc (mean ± half-range) | kept | seeds |")
        print("| --- | --- | --- | --- | --- | --- |")
        for (name, variant, members), g in concat.groupby(["set", "variant", "members"], sort=False):
            print(f"| {name} | {variant} | {members} | {seed_cells(g)} | {g['reduce_seed'].nunique()} |")


if __name__ == "__main__":
    main()
