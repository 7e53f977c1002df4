"""Issue #19 item 4: experts teach single galaxies (``inspect auto --refine``), measured.

Starts from one finished default run per labelled development set (``skymorph run IMAGES --out
DIR``: Lite2 x 4 rotations features, UMAP-300, k = 20); seed 42 is that run, seeds 1 and 2 re-run
reduce and cluster (``reduce.seed`` = ``cluster.seed``) in copies.  For every set and seed, two arms:

``names``
    the clusters are named by ``inspect auto`` (majority label of the montage members, merged with
    min_agree 1), then ``auto_refine`` (the simulated expert of ``inspect auto --refine``) types
    single galaxies in pages of ``inspect.refine_page`` (20) by least margin;
``random``
    no cluster names (``extend.cluster_labels = false``): ``inspect.refine_start`` (20) galaxies
    drawn at random (``inspect.seed`` = the seed), then pages by least margin.

After 0 (names only), 100, 200, 300 and 500 typed galaxies, ``skymorph extend`` types every galaxy
(names arm: twice, with ``extend.kept_types`` = ``cluster``, the kept galaxies keep their cluster's
name, and ``classifier``, the classifier trained on names and taught galaxies types them too) and
the balanced accuracy (mean recall over the true classes; UNC counts as wrong) of
``morph_type_final`` is scored on the galaxies no single-galaxy label touched (``untouched``) and
on the whole catalog (``all``; taught galaxies carry the expert's type).  The expert effort is the
number of single galaxies looked at (typed or skipped: the simulated expert skips a galaxy whose
label is excluded, e.g. dont_know, merger, artifact, uncertain) and, for the names arm, the
montages named.  One JSON line per checkpoint in ``--out/results.jsonl``.  ``extend.cv_folds`` is 2
here: the folds only calibrate the probabilities (one temperature) and report cross-validated
figures; the types, and so every figure here, do not depend on them.  Checkpoints other than
``--stage-at`` (300) are scored from the same classifier fitted once (``fast_types``: the extension's
logistic regression on the same labels and weights, hence the same types) without the stage's OOD
fallback; the rows say which (``extend_stage``).

    python benchmarks/eval_refine.py --out /tmp/refine_eval --seeds 42 1 2 \\
        --run gz1_sdss_natural=/work/runs/gz1_sdss_natural --run ceers_f200w=/work/runs/ceers_f200w \\
        --run gz1_sdss=/work/runs/gz1_sdss
    python benchmarks/eval_refine.py --summary /tmp/refine_eval/results.jsonl   # the table
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GZ1 = {"id_col": "objid", "label_col": "gz1_name", "types": ["ELLIPTICAL", "SPIRAL", "EDGE_ON", "UNC"],
       "map": {"spiral_cw": "SPIRAL", "spiral_acw": "SPIRAL"}, "exclude": ["dont_know", "merger"]}
SETS = {
    "gz1_sdss": {**GZ1, "truth": DATA / "gz1_sdss" / "labels.csv"},
    "gz1_sdss_natural": {**GZ1, "truth": DATA / "gz1_sdss_natural" / "labels.csv"},
    "ceers_f200w": {"truth": DATA / "ceers_f200w" / "labels.csv", "id_col": "id", "label_col": "label",
                    "types": ["SMOOTH", "DISK", "DISTURBED", "UNC"], "map": {},
                    "exclude": ["artifact", "uncertain"]},
}
CHECKPOINTS = (0, 100, 200, 300, 500)
KEEP = ("stamps.zarr", "sources.parquet", "config.toml", "skymorph.json", "rejects.csv", "features.zarr")


def _copy(src: Path, dst: Path, full: bool) -> None:
    """A copy of a finished run: all of it (``full``), or the ingest and encode outputs only."""
    if dst.exists():
        shutil.rmtree(dst)
    if full:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock", "galaxy_votes.csv", "votes.csv"))
        return
    dst.mkdir(parents=True)
    for name in KEEP:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name)
        elif (src / name).exists():
            shutil.copy2(src / name, dst / name)
    (dst / "stages").mkdir()
    for name in ("ingest.json", "encode.json"):
        if (src / "stages" / name).exists():
            shutil.copy2(src / "stages" / name, dst / "stages" / name)


def seeded_run(base: Path, out: Path, seed: int) -> Path:
    """``base`` itself for seed 42 (copied), else a copy whose reduce and cluster ran with ``seed``."""
    from skymorph import RunDir, load_config
    from skymorph.stages.cluster import cluster
    from skymorph.stages.reduce import reduce

    target = out / f"{base.name}_s{seed}"
    if (target / "stages" / "cluster.json").exists():
        return target
    _copy(base, target, full=seed == 42)
    if seed != 42:
        config = load_config(target / "config.toml").update({"reduce": {"seed": seed},
                                                              "cluster": {"seed": seed}})
        run = RunDir(target)
        reduce(run, config, progress=False)
        cluster(run, config, progress=False)
    return target


def _balanced(truth: np.ndarray, pred: np.ndarray, sel: np.ndarray) -> tuple[float | None, int]:
    sel = sel & (truth != "")
    t, p = truth[sel], pred[sel]
    classes = sorted(set(t.tolist()))
    if not classes:
        return None, 0
    return float(np.mean([(p[t == c] == c).mean() for c in classes])), int(sel.sum())


def fast_types(run, config, x: np.ndarray) -> dict:
    """``morph_type_final`` and ``type_source`` as ``extend`` gives them, without its cross-validation
    and OOD step: the same classifier (:func:`skymorph.core.refine.uncertainty`: the extension's
    logistic regression on the same standardised features, the same labels and weights) gives the
    same most probable type; only the OOD fallback (UNC for a galaxy far from every training one,
    ~1% of them) is left out.  Per ``kept_types``."""
    from skymorph.core.refine import uncertainty
    from skymorph.inspection.refine import training_labels

    cat = run.catalog()
    labels = training_labels(run, config, cat)
    cfg = config.extend
    classes, proba = uncertainty(x, labels["learn"], labels["y"], weight=labels["weight"], model=cfg.model,
                                 c=cfg.c, class_weight=cfg.class_weight, max_iter=cfg.max_iter, seed=cfg.seed)
    predicted = np.array(classes, dtype=object)[proba.argmax(axis=1)]
    taught = labels["taught"] != ""
    cluster = labels["cluster"] != ""
    mtype = cat["morph_type"].fillna("").astype(str).to_numpy() if "morph_type" in cat else labels["cluster"]
    out = {}
    for kept in ("cluster", "classifier"):
        typed = cluster if kept == "cluster" else np.zeros(len(cat), bool)
        final = np.where(taught, labels["taught"], np.where(typed, mtype, predicted)).astype(str)
        source = np.where(taught, "taught", np.where(typed, "experts", "extended"))
        out[kept] = (np.char.upper(final.astype(str)), source)
    return out


def score(final: np.ndarray, source: np.ndarray, truth: np.ndarray) -> dict:
    untouched = source != "taught"
    out = {}
    for name, sel in (("untouched", untouched), ("all", np.ones(len(final), bool)),
                      ("experts", source == "experts"), ("extended", source == "extended")):
        out[f"balacc_{name}"], out[f"n_{name}"] = _balanced(truth, final, sel)
    return out


def run_arm(run_dir: Path, spec: dict, seed: int, arm: str, checkpoints: tuple[int, ...],
            weight: float | None, fh, stage_at: tuple[int, ...] = (300,)) -> None:
    from skymorph import RunDir, load_config
    from skymorph.inspection import consensus_labels
    from skymorph.inspection.auto import auto_votes, truth_types
    from skymorph.inspection.refine import GalaxyVoteStore, auto_refine
    from skymorph.stages.extend import extend
    from skymorph.stages.inspect import merge

    run = RunDir(run_dir)
    (run_dir / "inspection" / "votes.csv").unlink(missing_ok=True)
    GalaxyVoteStore.of(run).path.unlink(missing_ok=True)
    update = {"inspect": {"types": spec["types"], "seed": seed},
              "extend": {"cluster_labels": arm == "names", "cv_folds": 2}}
    if weight is not None:
        update["extend"]["taught_weight"] = weight
    config = load_config(run_dir / "config.toml").update(update)
    truth = truth_types(run.catalog(), spec["truth"], spec["id_col"], spec["label_col"], spec["types"],
                        label_map=spec["map"], exclude=spec["exclude"])
    montages = shown = 0
    if arm == "names":
        auto_votes(run, spec["truth"], spec["id_col"], spec["label_col"], config, label_map=spec["map"],
                   exclude=spec["exclude"])
        merge(run, config=config, min_agree=1)
        sizes = np.bincount(consensus_labels(run.catalog()) + 1)[1:]
        sizes = sizes[sizes > 0]
        montages = int(sizes.size)
        shown = int(np.minimum(sizes, config.inspect.per_cluster).sum())
    x = np.asarray(run.open_array(config.extend.input)[:], dtype=np.float32)
    labelled = looked = 0
    seconds_refine = 0.0
    for target in checkpoints:
        if target == 0 and arm != "names":
            continue
        if target > labelled:
            t0 = time.perf_counter()
            result = auto_refine(run, spec["truth"], spec["id_col"], spec["label_col"], config,
                                 n_labels=target - labelled, label_map=spec["map"], exclude=spec["exclude"])
            seconds_refine += time.perf_counter() - t0
            labelled += result["n_labelled"]
            looked += result["n_looked_at"]
        t0 = time.perf_counter()
        fast = fast_types(run, config, x)
        for kept in (("cluster", "classifier") if arm == "names" else ("classifier",)):
            stage = target in stage_at
            if stage:  # the real extend stage (its OOD fallback included)
                t0 = time.perf_counter()
                extend(run, config.update({"extend": {"kept_types": kept}}), progress=False)
                cat = run.catalog()
                final = cat["morph_type_final"].fillna("").astype(str).str.upper().to_numpy()
                source = cat["type_source"].astype(str).to_numpy()
            else:
                final, source = fast[kept]
            row = {"set": spec["name"], "seed": seed, "arm": arm, "kept_types": kept, "labels": labelled,
                   "looked_at": looked, "montages": montages, "montage_galaxies": shown,
                   "taught_weight": config.extend.taught_weight, "extend_stage": stage,
                   **score(final, source, truth), "seconds_refine": round(seconds_refine, 1),
                   "seconds_extend": round(time.perf_counter() - t0, 1)}
            print(json.dumps(row), flush=True)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
        if target > labelled:  # every galaxy has been looked at
            break


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    def key_of(r: dict) -> tuple:
        start = "cluster names" if r["arm"] == "names" else "random"
        return (r["set"], start, r.get("kept_types", "cluster"), r["taught_weight"], r["labels"])

    keys = sorted({key_of(r) for r in rows})

    def ms(values: list) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    print("| set | start | kept galaxies typed by | taught weight | labels | looked at | untouched balacc "
          "| all balacc | n untouched | seeds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in keys:
        sel = [r for r in rows if key_of(r) == key]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]:g} | {key[4]} | "
              f"{np.mean([r['looked_at'] for r in sel]):.0f} | {ms([r['balacc_untouched'] for r in sel])} | "
              f"{ms([r['balacc_all'] for r in sel])} | {np.mean([r['n_untouched'] for r in sel]):.0f} | "
              f"{len(sel)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for the run copies and results.jsonl")
    parser.add_argument("--run", action="append", default=[], metavar="SET=DIR",
                        help="a finished default run of a development set (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["names", "random"], choices=["names", "random"])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=list(CHECKPOINTS))
    parser.add_argument("--stage-at", type=int, nargs="*", default=[300],
                        help="checkpoints scored through the real extend stage (the rest: the same "
                        "classifier without its OOD fallback)")
    parser.add_argument("--taught-weight", type=float, default=None,
                        help="extend.taught_weight (default: the setting's default)")
    parser.add_argument("--summary", type=Path, help="print the table of a results.jsonl and stop")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.jsonl", "a") as fh:
        for item in args.run:
            name, _, path = item.partition("=")
            spec = {**SETS[name], "name": name}
            for seed in args.seeds:
                run_dir = seeded_run(Path(path), args.out, seed)
                for arm in args.arms:
                    run_arm(run_dir, spec, seed, arm, tuple(args.checkpoints), args.taught_weight, fh,
                            tuple(args.stage_at))
    summary(args.out / "results.jsonl")


if __name__ == "__main__":
    main()
