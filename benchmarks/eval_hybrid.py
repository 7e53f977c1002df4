"""Issue #19: hybrid features, the nuisance projection, reductions and clusterings on the three sets.

Starts from one finished default run per set (``skymorph run IMAGES --out DIR``: the stamps
and the default EfficientNet-Lite2 x 4 rotations features), so the expensive encoding runs
once.  Per set it computes (and caches under ``--out/cache``)

* the shape descriptors of every stamp (:func:`skymorph.core.descriptors.shape_descriptors`),
* the encoder features and descriptors of ``--copies`` nuisance copies of ``--sample`` seeded
  galaxies (:func:`skymorph.core.nuisance.augment`, encoded with the run's own encode settings),

then, for every seed and variant, builds the clustering features, reduces them, clusters
them and scores them with :func:`skymorph.stages.evaluate.score_labels` (the simulated
inspection of ``skymorph evaluate``): the kept fraction, the consensus balanced accuracy on
the kept galaxies, ``kmeans_all`` (the same inspection of the K-means clusters of every
galaxy) and the experts' cost (montages to name, galaxies shown).  One JSON line per result
in ``--out/results.jsonl``.

A variant is ``FEATURES/PROJECTION/REDUCTION/CLUSTERING/K[/approx]``:

* FEATURES ``deep`` (the encoder's features), ``hybW`` (deep PCA-32 + descriptors at weight W,
  :class:`skymorph.core.hybrid.HybridFeatures`), ``pca32`` (the deep PCA-32 block alone),
  ``desc`` (the descriptors alone);
* PROJECTION ``none``, ``whiten`` (PCA whitening to 32) or ``nuis`` (nuisance projection to 32);
* REDUCTION ``umap300`` (the default) or ``direct`` (no reduction);
* CLUSTERING ``vote`` (the default K-means/BIRCH/ward consensus), ``louvain`` (communities of
  the 15-NN graph, resolution searched for about K of them), ``gmm`` (Gaussian mixture, K
  components) or ``spectral`` (spectral clustering of the 15-NN graph); the last three keep
  every galaxy;
* ``approx``: the approximate (pynndescent) k-NN path (``reduce.exact_knn_below = 0``).

    python benchmarks/eval_hybrid.py --out /tmp/i19a/eval --seeds 0 1 2 \\
        --run gz1_sdss=/work/runs/gz1_sdss --run gz1_sdss_natural=/work/runs/gz1_sdss_natural \\
        --run ceers_f200w=/work/runs/ceers_f200w \\
        --variants deep/none/umap300/vote/20 hyb1/none/direct/vote/20
    python benchmarks/eval_hybrid.py --summary /tmp/i19a/eval/results.jsonl   # the table
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from eval_adapted import SETS  # the three labelled sets, as every eval_* script scores them

DEFAULT_VARIANTS = [
    "deep/none/umap300/vote/20",
    "deep/none/direct/vote/20",
    "pca32/none/direct/vote/20",
    "desc/none/direct/vote/20",
    "hyb1/none/direct/vote/20",
    "hyb1/none/umap300/vote/20",
]


def _cached(path: Path, make):
    if path.exists():
        return np.load(path)
    value = make()
    np.save(path, value)
    return value


class SetData:
    """One set's arrays: features, stamps' descriptors, truth, and the nuisance copies."""

    def __init__(self, name: str, run_dir: Path, cache: Path, sample: int, copies: int) -> None:
        import skymorph
        from skymorph.core.descriptors import descriptors_at_levels
        from skymorph.stages.evaluate import aligned_truth

        spec = SETS[name]
        run = skymorph.RunDir(run_dir)
        self.name, self.run = name, run
        self.config = run.config()
        self.features = np.asarray(run.open_array("features")[:], dtype=np.float32)
        stamps = run.open_array("stamps")
        self.truth = aligned_truth(run, spec["truth"], spec["id_col"], spec["label_col"],
                                   label_map=spec["label_map"], exclude=spec["exclude"])
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        levels = self.config.reduce.descriptor_levels
        self.levels = levels
        self.descriptors = _cached(
            cache / f"{name}_descriptors_{'_'.join(f'{v:g}' for v in levels)}.npy",
            lambda: descriptors_at_levels(np.asarray(stamps[:], dtype=np.float32), levels=levels)[0])
        self.seconds_descriptors = time.perf_counter() - t0
        n = self.features.shape[0]
        self.rows = np.sort(np.random.default_rng([0, 19]).choice(n, size=min(n, sample), replace=False))
        self.copies = copies
        tag = "_".join(f"{v:g}" for v in levels)
        self._aug_path = cache / f"{name}_aug_m{self.rows.size}_c{copies}_{tag}"
        self._stamps = stamps

    def augmented(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(C, M, D) features and (C, M, P) descriptors of the nuisance copies, and the
        seconds they took (0 when cached)."""
        feats, desc = Path(f"{self._aug_path}_features.npy"), Path(f"{self._aug_path}_descriptors.npy")
        if feats.exists() and desc.exists():
            return np.load(feats), np.load(desc), 0.0
        import torch

        from skymorph.core.descriptors import descriptors_at_levels
        from skymorph.core.encoders import build_encoder
        from skymorph.core.nuisance import augment

        torch.set_num_threads(2)
        t0 = time.perf_counter()
        stamps = np.asarray(self._stamps.get_orthogonal_selection((self.rows,)), dtype=np.float32)
        copies = augment(stamps, copies=self.copies, seed=0)
        encoder = build_encoder(self.config.encode)
        f = np.stack([encoder.encode(c, 32)[0] for c in copies])
        d = np.stack([descriptors_at_levels(c, levels=self.levels)[0] for c in copies])
        np.save(feats, f)
        np.save(desc, d)
        return f, d, time.perf_counter() - t0


_MEMO: dict = {}


def _features(data: SetData, feat: str, proj: str) -> tuple[np.ndarray, dict]:
    """The clustering features of a variant (they do not depend on the seed: computed once)."""
    key = (data.name, feat, proj)
    if key not in _MEMO:
        _MEMO[key] = _make_features(data, feat, proj)
    return _MEMO[key]


def _make_features(data: SetData, feat: str, proj: str) -> tuple[np.ndarray, dict]:
    from skymorph.core.hybrid import HybridFeatures
    from skymorph.core.nuisance import nuisance_projection, pca_whitening

    info: dict = {}
    desc = data.descriptors
    if feat == "deep":
        model = None
        x = data.features
    else:
        if feat == "pca32":
            model = HybridFeatures.fit(data.features, None, deep_dims=32)
        elif feat == "desc":
            model = HybridFeatures.fit(data.features, desc, deep_dims=1, descriptor_weight=1e6)
        elif feat.startswith("hyb"):
            model = HybridFeatures.fit(data.features, desc, deep_dims=32, descriptor_weight=float(feat[3:]))
        else:
            raise SystemExit(f"unknown features {feat!r}")
        x = model.apply(data.features, desc)
    if proj == "none":
        return x, info
    if proj == "whiten":
        return pca_whitening(x, dims=32).apply(x), info
    if proj == "nuis":
        af, ad, secs = data.augmented()
        info["seconds_copies"] = round(secs, 1)
        xa = af if model is None else np.stack([model.apply(f, d) for f, d in zip(af, ad, strict=True)])
        p = nuisance_projection(x, xa, data.rows, dims=32)
        info["ratio_top"] = float(p.ratio[0])
        info["ratio_last"] = float(p.ratio[-1])
        return p.apply(x), info
    raise SystemExit(f"unknown projection {proj!r}")


def _knn_labels(x: np.ndarray, method: str, k: int, seed: int) -> np.ndarray:
    """Louvain communities (about k of them) or spectral clusters of the 15-NN graph."""
    from sklearn.neighbors import kneighbors_graph

    graph = kneighbors_graph(x, n_neighbors=15, include_self=False)
    graph = graph.maximum(graph.T)
    if method == "spectral":
        from sklearn.cluster import SpectralClustering

        return SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed,
                                  assign_labels="cluster_qr").fit_predict(graph)
    import networkx as nx

    g = nx.from_scipy_sparse_array(graph)
    lo, hi, best = 0.05, 20.0, None
    for _ in range(14):  # bisection of the resolution (log scale) for about k communities
        res = float(np.sqrt(lo * hi))
        comms = nx.community.louvain_communities(g, resolution=res, seed=seed)
        if best is None or abs(len(comms) - k) < abs(len(best) - k):
            best = comms
        if len(comms) == k:
            break
        lo, hi = (res, hi) if len(comms) < k else (lo, res)
    labels = np.empty(x.shape[0], dtype=np.int64)
    for i, members in enumerate(best):
        labels[list(members)] = i
    return labels


def _extended(data: SetData, cons: np.ndarray, names: dict, cfg) -> dict:
    """What ``extend`` adds: the kept galaxies carry their cluster's simulated name, the
    rejected ones the type of the extension's classifier (:func:`skymorph.core.refine.uncertainty`:
    its logistic regression on the run's encoder features, fitted once on the kept galaxies;
    no OOD fallback).  Balanced accuracy on the rejected (``extended``) and on every galaxy."""
    from sklearn.metrics import balanced_accuracy_score

    from skymorph.core.refine import uncertainty

    named = np.array([names.get(str(c), "") if c >= 0 else "" for c in cons], dtype=object)
    learn = named != ""
    if learn.all() or np.unique(named[learn]).size < 2:
        return {"balacc_extended": None, "balacc_all": None}
    classes, proba = uncertainty(data.features, learn, named, model=cfg.model, c=cfg.c,
                                 class_weight=cfg.class_weight, max_iter=cfg.max_iter, seed=cfg.seed)
    final = np.where(learn, named, np.asarray(classes, dtype=object)[proba.argmax(axis=1)])
    truth = np.asarray(data.truth, dtype=object)
    labelled = np.array([isinstance(t, str) and t != "" for t in truth])
    out = {}
    for key, sel in (("extended", labelled & ~learn), ("all", labelled)):
        out[f"balacc_{key}"] = (float(balanced_accuracy_score(truth[sel].astype(str), final[sel].astype(str)))
                                if sel.any() else None)
    return out


def run_variant(data: SetData, variant: str, seed: int) -> dict:
    import skymorph
    from skymorph.core.clustering import consensus_clustering
    from skymorph.core.reduction import reduce_features
    from skymorph.stages.cluster import core_options as cluster_options
    from skymorph.stages.evaluate import score_labels
    from skymorph.stages.reduce import core_options as reduce_options

    parts = variant.split("/")
    feat, proj, red, clu, k = parts[:5]
    k = int(k)
    approx = len(parts) > 5 and parts[5] == "approx"
    t0 = time.perf_counter()
    x, info = _features(data, feat, proj)
    t_feat = time.perf_counter() - t0
    base = skymorph.Config()
    if red == "umap300":
        rcfg = replace(base.reduce, seed=seed, map_2d=False, exact_knn_below=0 if approx else 4096)
        y = reduce_features(x, progress=False, **reduce_options(rcfg)).embedding
    elif red == "direct":
        y = x if feat != "deep" else (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    else:
        raise SystemExit(f"unknown reduction {red!r}")
    t_red = time.perf_counter() - t0 - t_feat
    per_cluster, iseed = base.inspect.per_cluster, base.inspect.seed
    if clu == "vote":
        res = consensus_clustering(y, **cluster_options(replace(base.cluster, k=k, seed=seed)))
        km, cons = res.kmeans, res.cluster
    elif clu in ("louvain", "spectral"):
        km = cons = _knn_labels(np.asarray(y, dtype=np.float32), clu, k, seed)
    elif clu == "gmm":
        from sklearn.mixture import GaussianMixture

        km = cons = GaussianMixture(k, covariance_type="diag", random_state=seed, n_init=2,
                                    reg_covar=1e-4).fit_predict(y)
    else:
        raise SystemExit(f"unknown clustering {clu!r}")
    t_clu = time.perf_counter() - t0 - t_feat - t_red
    score = score_labels(data.truth, km, cons, per_cluster=per_cluster, seed=iseed)
    extended = _extended(data, cons, score["inspection"]["cluster_names"], base.extend)
    sizes = np.bincount(cons[cons >= 0])
    sizes = sizes[sizes > 0]
    enc = data.config.encode
    return {
        "set": data.name, "encoder": f"{enc.encoder} x{enc.rotations}", "variant": variant, "seed": seed,
        "n": int(x.shape[0]), "dims": int(y.shape[1]),
        "kept": score["fraction_kept"], "balacc": score["inspection"]["balanced_accuracy"],
        "kmeans_all": (score["kmeans_all"]["balanced_accuracy"] if "kmeans_all" in score
                       else score["inspection"]["balanced_accuracy"]),
        "recall": score["inspection"]["recall_by_class"], **extended,
        "n_neighbors": base.reduce.n_neighbors if red == "umap300" else None,
        "montages": int(sizes.size), "shown": int(np.minimum(sizes, per_cluster).sum()),
        "seconds": {"features": round(t_feat, 1), "reduce": round(t_red, 1), "cluster": round(t_clu, 1)},
        **info,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/i19a/eval")
    parser.add_argument("--run", action="append", default=[], help="SET=DIR of a finished default run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--sample", type=int, default=300, help="galaxies given nuisance copies")
    parser.add_argument("--copies", type=int, default=2, help="nuisance copies per galaxy")
    parser.add_argument("--summary", help="print the table of a results.jsonl and stop")
    args = parser.parse_args()
    if args.summary:
        summary(Path(args.summary))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    for item in args.run:
        name, _, src = item.partition("=")
        data = SetData(name, Path(src), out / "cache", args.sample, args.copies)
        print(f"{name}: {data.features.shape[0]} galaxies, descriptors "
              f"{data.seconds_descriptors:.1f} s", flush=True)
        for variant in args.variants:
            for seed in args.seeds:
                row = run_variant(data, variant, seed)
                with results.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps({k: v for k, v in row.items() if k != "recall"}), flush=True)


def summary(path: Path) -> None:
    """Markdown table: per set, variant and UMAP neighbours, mean +- half-range over the seeds of
    the kept fraction, the consensus balanced accuracy on the kept galaxies, the extension's on
    the rejected ones and on all, kmeans_all, and the experts' cost."""
    import pandas as pd

    rows = pd.read_json(path, lines=True)
    for col, fill in (("encoder", "?"), ("n_neighbors", None), ("balacc_extended", None),
                      ("balacc_all", None)):
        if col not in rows:
            rows[col] = fill
    # rows written before the neighbours were recorded used UMAP's 15
    umap = rows["variant"].str.contains("/umap")
    rows["umap_k"] = rows["n_neighbors"].where(rows["n_neighbors"].notna(), umap.map({True: 15, False: None}))
    rows["umap_k"] = rows["umap_k"].map(lambda v: "" if pd.isna(v) else f"{int(v)}")
    rows = rows.drop_duplicates(["set", "encoder", "variant", "umap_k", "seed"], keep="last")
    print("| set | encoder | variant | UMAP k-NN | kept | balacc on kept | extended (rejected) | all "
          "| kmeans_all | montages | galaxies shown | seeds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def pm(g: pd.DataFrame, col: str, fmt: str = ".3f") -> str:
        v = g[col].dropna()
        if v.empty:
            return "-"
        return f"{v.mean():{fmt}} ± {(v.max() - v.min()) / 2:{fmt}}"

    for (name, encoder, variant, k), g in rows.groupby(["set", "encoder", "variant", "umap_k"], sort=False):
        print(f"| {name} | {encoder} | {variant} | {k} | {pm(g, 'kept', '.2f')} | {pm(g, 'balacc')} | "
              f"{pm(g, 'balacc_extended')} | {pm(g, 'balacc_all')} | {pm(g, 'kmeans_all')} | "
              f"{g['montages'].mean():.0f} | {g['shown'].mean():.0f} | {g['seed'].nunique()} |")


if __name__ == "__main__":
    main()
