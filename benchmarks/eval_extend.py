"""Does extending the experts' types to the rejected galaxies keep the types' quality?

On the labelled development sets (``../shared/data/gz1_sdss``: elliptical / spiral /
edge-on; ``../shared/data/ceers_f200w``: smooth / disk / disturbed), each consensus
cluster is named by ``skymorph inspect auto`` (the majority label of its montage
members, one automatic voter merged with min_agree 1), then ``skymorph extend`` types
every galaxy, and ``skymorph evaluate`` scores ``morph_type_final`` against the labels
on the kept galaxies (the experts' = cluster names), on the extended (previously
rejected) galaxies and on all.  Every (input, model, class weight) variant of
``extend`` is scored on the same runs.  Each data set is encoded once (``skymorph run``);
the other seeds re-run only reduce and cluster (``reduce.seed`` = ``cluster.seed``) in
copies of the run directory.

    python benchmarks/eval_extend.py --out /tmp/extend_eval            # all of it
    python benchmarks/eval_extend.py --out /tmp/extend_eval --rotations 1   # cheaper encoding

Targets (issue #13): every galaxy typed; balanced accuracy on the extended galaxies within
0.05 of the kept galaxies'; whole-sample balanced accuracy >= kept-only minus 0.03.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS = {
    "gz1_sdss": {
        "images": DATA / "gz1_sdss" / "images", "labels": DATA / "gz1_sdss" / "labels.csv",
        "id_col": "objid", "label_col": "gz1_name",
        "types": ["ELLIPTICAL", "SPIRAL", "EDGE_ON", "UNC"],
        "map": {"spiral_cw": "SPIRAL", "spiral_acw": "SPIRAL"}, "exclude": ["dont_know", "merger"],
        "eval_map": {"spiral_cw": "spiral", "spiral_acw": "spiral"},
    },
    "ceers_f200w": {
        "images": DATA / "ceers_f200w" / "images", "labels": DATA / "ceers_f200w" / "labels.csv",
        "id_col": "id", "label_col": "label",
        "types": ["SMOOTH", "DISK", "DISTURBED", "UNC"],
        "map": {}, "exclude": ["artifact", "uncertain"], "eval_map": {},
    },
}
VARIANTS = {
    "features / logistic / balanced (default)": {},
    "features / logistic / unweighted": {"class_weight": "none"},
    "embedding / logistic / balanced": {"input": "embedding"},
    "embedding / logistic / balanced, OOD typed": {"input": "embedding", "ood_final": "predicted"},
    "features / logistic / balanced, OOD typed": {"ood_final": "predicted"},
    "features / hgb / balanced": {"model": "hgb"},
    "embedding / hgb / balanced": {"input": "embedding", "model": "hgb"},
}


def _encode_once(name: str, spec: dict, out: Path, rotations: int | None) -> Path:
    base = out / f"{name}_s42"
    if (base / "stages" / "cluster.json").exists():
        return base
    cmd = [sys.executable, "-m", "skymorph.cli", "run", str(spec["images"]), "--out", str(base)]
    if rotations:
        cmd += ["--set", f"encode.rotations={rotations}"]
    print("running", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return base


def _reseeded(base: Path, seed: int) -> Path:
    """A copy of ``base`` whose reduce and cluster ran with ``seed``."""
    from skymorph import RunDir, load_config
    from skymorph.stages.cluster import cluster
    from skymorph.stages.reduce import reduce

    if seed == 42:
        return base
    target = base.with_name(base.name.rsplit("_s", 1)[0] + f"_s{seed}")
    if not (target / "stages" / "cluster.json").exists():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(base, target)
        config = load_config(target / "config.toml").update(
            {"reduce": {"seed": seed}, "cluster": {"seed": seed}})
        run = RunDir(target)
        reduce(run, config, progress=False)
        cluster(run, config)
    return target


def evaluate_run(run_dir: Path, spec: dict, variants: dict) -> dict:
    from skymorph import RunDir, load_config
    from skymorph.inspection import merge
    from skymorph.inspection.auto import auto_votes
    from skymorph.stages.evaluate import evaluate
    from skymorph.stages.extend import extend

    run = RunDir(run_dir)
    config = load_config(run_dir / "config.toml").update({"inspect": {"types": spec["types"]}})
    votes = run_dir / "inspection" / "votes.csv"
    votes.unlink(missing_ok=True)
    auto_votes(run, spec["labels"], spec["id_col"], spec["label_col"], config,
               label_map=spec["map"], exclude=spec["exclude"])
    merge(run, config=config, min_agree=1)
    out = {"kept_fraction": float(run.catalog()["consensus"].mean())}
    for name, settings in variants.items():
        cfg = config.update({"extend": settings})
        start = time.perf_counter()
        extend(run, cfg, progress=False)
        seconds = time.perf_counter() - start
        result = evaluate(run, spec["labels"], spec["id_col"], spec["label_col"], cfg,
                          label_map=spec["eval_map"], exclude=spec["exclude"],
                          out=run_dir / "evaluation" / "extend_eval.json")
        cat = run.catalog()
        report = json.loads((run_dir / "extend" / "extend.json").read_text())
        f = result["final_types"]
        out[name] = {
            "coverage": float((cat["morph_type_final"].fillna("") != "").mean()),
            "kept": f["kept"]["balanced_accuracy"], "extended": f["extended"]["balanced_accuracy"],
            "all": f["all"]["balanced_accuracy"], "acc_extended": f["extended"]["accuracy"],
            "n_kept": f["kept"]["n"], "n_extended": f["extended"]["n"],
            "cv_acc": report["cv_accuracy"], "ece": report["ece"],
            "ood_extended": report["n_extended_ood"] / max(report["n_extended"], 1),
            "seconds": seconds,
        }
    return out


def foreign_check(out: Path, base: Path) -> dict:
    """Encode a blank (noise-only) and a star-only stamp with the run's encoder settings and
    ask the default classifier, trained on ``base``'s expert-typed galaxies, whether they
    are out of distribution."""
    from skymorph import RunDir, load_config
    from skymorph.core.extend import ExtendModel
    from skymorph.stages.encode import encode
    from skymorph.stages.ingest import ingest

    config = load_config(base / "config.toml")
    folder = out / f"foreign_{base.name}"
    if not (folder / "run" / "features.zarr").exists():
        (folder / "images").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        blank = rng.normal(10, 1, (100, 100)).astype(np.float32)
        yy, xx = np.mgrid[:100, :100] - 49.5
        star = blank + 500 * np.exp(-(xx ** 2 + yy ** 2) / (2 * 1.5 ** 2)).astype(np.float32)
        np.save(folder / "images" / "blank.npy", blank)
        np.save(folder / "images" / "star.npy", star)
        ingest([folder / "images"], folder / "run", config, progress=False)
        encode(folder / "run", config, progress=False)
    foreign = RunDir(folder / "run")
    x_foreign = np.asarray(foreign.open_array("features")[:])
    ids = foreign.sources()["id"].tolist()
    run = RunDir(base)
    cat = run.catalog()
    train = (cat["type_source"] == "experts").to_numpy()
    cfg = config.extend
    model = ExtendModel(ood_dims=cfg.ood_dims, ood_quantile=cfg.ood_quantile, ood_neighbors=cfg.ood_neighbors)
    model.fit(np.asarray(run.open_array("features")[:])[train], cat.loc[train, "morph_type"].to_numpy())
    pred = model.predict(x_foreign)
    return {i: {"ood": bool(o), "distance_over_threshold": float(d / model.ood.threshold),
                "predicted": str(p), "p": float(q)}
            for i, o, d, p, q in zip(ids, pred["ood"], pred["ood_distance"], pred["predicted"],
                                     pred["p_predicted"], strict=True)}


def _fmt(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f}±{a.std():.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="extend_eval", help="folder for the run directories")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[42, 1, 2],
                        help="reduce/cluster seeds (42 = the default, encoded run)")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS),
                        default=[v for v in VARIANTS if "hgb" not in v],
                        help="extend variants (default: the logistic ones; each hgb fit on 1280-d "
                             "features took minutes on the shared 2-core machine)")
    parser.add_argument("--rotations", type=int, default=None,
                        help="encode.rotations of the one encoding per data set (default: the default, 4)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = {v: VARIANTS[v] for v in args.variants}
    results: dict[str, dict[int, dict]] = {}
    for name in args.datasets:
        spec = DATASETS[name]
        base = _encode_once(name, spec, out, args.rotations)
        results[name] = {}
        for seed in args.seeds:
            run_dir = _reseeded(base, seed)
            results[name][seed] = evaluate_run(run_dir, spec, variants)
            print(f"{name} seed {seed}: done", flush=True)
    foreign = {name: foreign_check(out, out / f"{name}_s42") for name in args.datasets}
    (out / f"eval_extend_{'_'.join(args.datasets)}.json").write_text(
        json.dumps({"runs": results, "foreign": foreign}, indent=2))

    print("\nbalanced accuracy of morph_type_final against the labels, mean ± std over seeds "
          f"{args.seeds}")
    print("kept = experts' (auto-named clusters), extended = classifier on the rejected galaxies")
    head = (f"{'data set':<12} {'variant':<44} {'kept':>12} {'extended':>12} {'ext-kept':>9} "
            f"{'all':>12} {'all-kept':>9} {'cover':>6} {'CV acc':>7} {'ECE':>6} {'OOD':>5}")
    print(head)  # ext-kept, all-kept: differences of the means
    for name, by_seed in results.items():
        for v in variants:
            rows = [by_seed[s][v] for s in args.seeds]
            kept = [r["kept"] for r in rows]
            ext = [r["extended"] for r in rows]
            allv = [r["all"] for r in rows]
            print(f"{name:<12} {v:<44} {_fmt(kept):>12} {_fmt(ext):>12} "
                  f"{np.mean(np.subtract(ext, kept)):>+9.3f} {_fmt(allv):>12} "
                  f"{np.mean(np.subtract(allv, kept)):>+9.3f} "
                  f"{np.mean([r['coverage'] for r in rows]):>6.0%} "
                  f"{np.mean([r['cv_acc'] for r in rows]):>7.3f} {np.mean([r['ece'] for r in rows]):>6.3f} "
                  f"{np.mean([r['ood_extended'] for r in rows]):>5.1%}")
        kept_frac = [by_seed[s]["kept_fraction"] for s in args.seeds]
        print(f"{name:<12} kept by the vote: {_fmt(kept_frac)}")
    print("\nforeign stamps (encoded like the run), default classifier trained on seed 42's experts:")
    for name, checks in foreign.items():
        for i, c in checks.items():
            print(f"  {name:<12} {i:<6} ood {c['ood']!s:<5}  distance / threshold "
                  f"{c['distance_over_threshold']:.2f}  (would be typed {c['predicted']} at p {c['p']:.2f})")


if __name__ == "__main__":
    main()
