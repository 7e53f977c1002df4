"""How much fitting UMAP and the three clusterers on a sample changes the labels.

Past one machine's memory, reduce fits UMAP on ``reduce.fit_sample`` galaxies and
places every other one with ``UMAP.transform``; cluster fits K-means and BIRCH on
``cluster.fit_sample`` galaxies and ward on ``ward_sample`` and labels every galaxy
by ``predict`` / nearest centroid (chunk by chunk, on the Dask cluster when there is
one).  This compares, on the same features (the Gaussian-mixture-on-a-manifold
stand-in of ``bench_reduce_cluster.py``):

* full fit (UMAP and the three methods on every galaxy; exact ward) - the reference;
* the same full fit with another seed - how much the labels move anyway;
* UMAP fitted on the sample, clusterers on every galaxy;
* UMAP on every galaxy, clusterers fitted on the samples;
* both fitted on samples (the route past one machine).

and prints the adjusted Rand index of each one's K-means, BIRCH, ward and consensus
labels against the reference (and against the mixture's true components).

Examples::

    .venv/bin/python benchmarks/bench_sample_fit.py                         # N = 20000, samples N/5
    .venv/bin/python benchmarks/bench_sample_fit.py --n 100000 --sample 20000
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

C = importlib.import_module("skymorph.core.clustering")  # noqa: E402
R = importlib.import_module("skymorph.core.reduction")  # noqa: E402
SC = importlib.import_module("skymorph.stages.cluster")  # noqa: E402
SR = importlib.import_module("skymorph.stages.reduce")  # noqa: E402
from bench_reduce_cluster import make_features  # noqa: E402
from skymorph.config import ClusterConfig, ReduceConfig  # noqa: E402


def labels_full(x: np.ndarray, cfg: ClusterConfig) -> dict[str, np.ndarray]:
    result = C.consensus_clustering(x, **{**SC.core_options(cfg), "ward_method": "exact"})
    return {"kmeans": result.kmeans, "birch": result.birch_raw, "ward": result.agglomerative_raw,
            "consensus": result.cluster}


def labels_sampled(x: np.ndarray, cfg: ClusterConfig) -> dict[str, np.ndarray]:
    options = {**SC.core_options(cfg), "ward_method": "sample", "fit_sample": cfg.fit_sample}
    del options["ward_connectivity"]
    placer = C.fit_placer(lambda rows: x[rows], x.shape[0], **options)
    km, birch, ward = placer.labels(x, 0)
    _, _, agreed, _ = C.consensus(km, birch, ward)
    return {"kmeans": km, "birch": birch, "ward": ward, "consensus": agreed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="galaxies (default 20000)")
    parser.add_argument("--sample", type=int, default=None, help="fit sample of every step (default N/5)")
    parser.add_argument("--features", type=int, default=512, help="feature dimension (default 512)")
    parser.add_argument("--dims", type=int, default=50, help="UMAP dimension (default 50)")
    parser.add_argument("--k", type=int, default=20, help="clusters (default 20)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    from sklearn.metrics import adjusted_rand_score

    sample = args.sample or args.n // 5
    features, truth = make_features(args.n, args.features, args.seed)
    rcfg = ReduceConfig(dims=args.dims, map_2d=False, seed=args.seed)
    ccfg = ClusterConfig(k=args.k, seed=args.seed, fit_sample=sample, ward_sample=sample)

    timings = {}
    start = time.perf_counter()
    embedding = R.reduce_features(features, progress=False, **SR.core_options(rcfg)).embedding
    timings["UMAP full"] = time.perf_counter() - start
    start = time.perf_counter()
    other_seed = R.reduce_features(features, progress=False,
                                   **SR.core_options(replace(rcfg, seed=args.seed + 1))).embedding
    timings["UMAP full, other seed"] = time.perf_counter() - start
    start = time.perf_counter()
    sampled = R.reduce_features(features, progress=False,
                                **SR.core_options(replace(rcfg, fit_sample=sample))).embedding
    timings["UMAP sample + transform"] = time.perf_counter() - start

    reference = labels_full(embedding, ccfg)
    variants = {
        "full fit, other seed": labels_full(other_seed, replace(ccfg, seed=args.seed + 1)),
        "UMAP sample-fit, clusterers full": labels_full(sampled, ccfg),
        "UMAP full, clusterers sample-fit": labels_sampled(embedding, ccfg),
        "both sample-fit": labels_sampled(sampled, ccfg),
    }
    print(f"N = {args.n}, {args.features}-d features -> {args.dims}-d UMAP, k = {args.k}, "
          f"samples of {sample} galaxies (UMAP fit, K-means/BIRCH fit, ward)")
    for name, seconds in timings.items():
        print(f"  {name}: {seconds:.0f} s")
    print("\nARI against the full fit (K-means / BIRCH / ward / consensus label incl. -1):")
    print("| variant | K-means | BIRCH | ward | consensus |")
    print("| --- | --- | --- | --- | --- |")
    for name, labels in variants.items():
        cells = [f"{adjusted_rand_score(reference[m], labels[m]):.3f}" for m in
                 ("kmeans", "birch", "ward", "consensus")]
        print(f"| {name} | {' | '.join(cells)} |")
    print("\nARI of K-means against the mixture's true components:")
    print(f"  full fit {adjusted_rand_score(truth, reference['kmeans']):.3f}; "
          + "; ".join(f"{name} {adjusted_rand_score(truth, labels['kmeans']):.3f}"
                      for name, labels in variants.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
