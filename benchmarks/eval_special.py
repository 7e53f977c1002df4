"""Evaluation of 'more like this' (similar) and of the anomaly ranking on the labelled dev sets.

Reads the encoder ``features`` (and the UMAP ``embedding`` where it exists) of the lead's finished
default runs (``/work/runs/<set>``, opened read-only; nothing is written there) and the labels in
``../shared/data/<set>/labels.csv``, and prints:

1. Neighbours share the query's class: for every labelled galaxy, its 10 / 50 nearest labelled
   galaxies (itself left out, exact search); precision@k per class = the mean fraction of them in
   the query's class; lift = precision / base rate (the class's share of the other galaxies).
   Bar: mean lift over the main classes >= 1.3 on every set.  Deterministic (exact search).
2. Anomalies rank oddities high: ROC AUC of ``anomaly_score`` for Galaxy Zoo's merger +
   dont_know galaxies vs the rest (gz1 sets) and CEERS ``artifact`` vs the rest, per method
   (knn, lof, iforest) and input (features, embedding); seeds 0, 1, 2 (the PCA sample and the
   isolation forest; knn and lof are deterministic below 10^4 galaxies).

Usage::

    .venv/bin/python benchmarks/eval_special.py                      # every set whose run is READY
    .venv/bin/python benchmarks/eval_special.py --sets gz1_sdss --runs /work/runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from skymorph.config import Config  # noqa: E402
from skymorph.core.anomaly import METHODS, anomaly_scores  # noqa: E402
from skymorph.core.search import class_lift  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {
    "gz1_sdss": {"id_col": "objid", "label_col": "gz1_name",
                 "map": {"spiral_cw": "spiral", "spiral_acw": "spiral"},
                 "main": ["elliptical", "spiral", "edge_on"], "odd": ["merger", "dont_know"]},
    "gz1_sdss_natural": {"id_col": "objid", "label_col": "gz1_name",
                         "map": {"spiral_cw": "spiral", "spiral_acw": "spiral"},
                         "main": ["elliptical", "spiral", "edge_on"], "odd": ["merger", "dont_know"]},
    "ceers_f200w": {"id_col": "id", "label_col": "label", "map": {},
                    "main": ["smooth", "disk", "disturbed", "artifact"], "odd": ["artifact"]},
}


def load(run: Path, name: str, spec: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    import zarr

    sources = pd.read_parquet(run / "sources.parquet")
    labels = pd.read_csv(DATA / name / "labels.csv", dtype={spec["id_col"]: str})
    lookup = dict(zip(labels[spec["id_col"]].astype(str), labels[spec["label_col"]].astype(str), strict=True))
    y = np.array([spec["map"].get(lookup.get(str(i), ""), lookup.get(str(i), "")) for i in sources["id"]],
                 dtype=object)
    arrays = {}
    for array in ("features", "embedding"):
        if (run / f"{array}.zarr").exists():
            x = np.asarray(zarr.open_array(store=str(run / f"{array}.zarr"), mode="r")[:], dtype=np.float32)
            if len(x) == len(sources):
                arrays[array] = x
    return arrays, y


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(score)
    return float(roc_auc_score(positive[ok], score[ok]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="/work/runs")
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--json", default=None, help="append the figures to this JSON-lines file")
    args = parser.parse_args()
    records = []
    for name in args.sets:
        run = Path(args.runs) / name
        if not (Path(args.runs) / f"READY_{name}").exists() and not (run / "features.zarr").exists():
            print(f"## {name}: no finished run in {run}; skipped")
            continue
        spec = SETS[name]
        arrays, y = load(run, name, spec)
        labelled = y != ""
        print(f"## {name}: {len(y)} galaxies, {int(labelled.sum())} labelled; arrays: {', '.join(arrays)}")
        # 1. neighbours share the query's class
        print("\n| input / metric | class | n | base rate | precision@10 | lift@10 | precision@50 "
              "| lift@50 |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for array, metric in (("features", "cosine"), ("features", "euclidean"), ("embedding", "euclidean")):
            if array not in arrays:
                continue
            x = arrays[array][labelled]
            ok = np.isfinite(x).all(axis=1)
            table = class_lift(x[ok], y[labelled][ok], ks=(10, 50), metric=metric)
            for row in table.itertuples():
                print(f"| {array} / {metric} | {row._1} | {row.n} | {row.base_rate:.3f} | "
                      f"{row._4:.3f} | {row._5:.2f} | {row._6:.3f} | {row._7:.2f} |")
            main_rows = table[table["class"].isin(spec["main"])]
            mean10, mean50 = float(main_rows["lift@10"].mean()), float(main_rows["lift@50"].mean())
            print(f"| {array} / {metric} | **main classes, mean lift** | | | | **{mean10:.2f}** | | "
                  f"**{mean50:.2f}** |")
            records.append({"set": name, "what": "lift", "input": array, "metric": metric,
                            "lift@10": mean10, "lift@50": mean50,
                            "per_class": json.loads(table.to_json(orient="records"))})
        # 2. anomalies rank oddities high
        positive = np.isin(y, spec["odd"])
        print(f"\nanomaly ROC AUC of {' + '.join(spec['odd'])} ({int(positive.sum())} galaxies) vs the rest "
              f"(mean ± std over seeds {args.seeds}; seconds per scoring)")
        print("\n| input | method, scaling | ROC AUC | seconds |")
        print("| --- | --- | --- | --- |")
        defaults = Config().anomaly
        for array in ("features", "embedding"):
            if array not in arrays:
                continue
            for method, scaling in [(m, "l2") for m in METHODS] + [(m, "standardise") for m in METHODS]:
                aucs, secs = [], []
                # knn and lof are deterministic below `reference` galaxies: one seed is all
                seeds = args.seeds if method == "iforest" or len(arrays[array]) > defaults.reference \
                    else args.seeds[:1]
                for seed in seeds:
                    t0 = time.perf_counter()
                    score = anomaly_scores(arrays[array], method=method, seed=seed, scaling=scaling,
                                           n_neighbors=defaults.n_neighbors, dims=defaults.dims,
                                           reference=defaults.reference)
                    secs.append(time.perf_counter() - t0)
                    aucs.append(auc(score, positive))
                sd = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
                print(f"| {array} | {method}, {scaling} | {statistics.mean(aucs):.3f} ± {sd:.3f} "
                      f"({len(seeds)} seed{'s' if len(seeds) > 1 else ''}) | {statistics.median(secs):.1f} |")
                records.append({"set": name, "what": "anomaly_auc", "input": array, "method": method,
                                "scaling": scaling, "auc": aucs, "seeds": seeds})
        print()
    if args.json:
        with open(args.json, "a") as fh:
            for r in records:
                fh.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
