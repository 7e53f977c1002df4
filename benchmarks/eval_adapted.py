"""Issue #14: the adapted encoder and the reduction options on the three labelled development sets.

Starts from one finished default run per set (``skymorph run IMAGES --out DIR``: ingest and the
default EfficientNet-Lite2 4-rotation features, k = 20), so that the expensive teacher features are
encoded once.  For every seed and set it then

* reduces and clusters the default features with each reduction option (``REDUCTIONS``),
* trains the adapted encoder on the set's own stamps (seeded; distilling the run's Lite2 x4
  features, or ``--teacher lite0`` for the in-stage Lite0 teacher), encodes with it through the
  encode stage (``--encoder adapted --weights CKPT``) and reduces/clusters/scores it the same way,

scoring each with ``skymorph.stages.evaluate`` (consensus balanced accuracy of the simulated
inspection and the kept fraction), one JSON line per result in ``--out/results.jsonl``.

    python benchmarks/eval_adapted.py --out /tmp/enc/eval --seeds 0 1 2 \\
        --run gz1_sdss=/tmp/enc/gz1_teacher --run gz1_sdss_natural=/tmp/enc/nat_teacher \\
        --run ceers_f200w=/tmp/enc/ceers_teacher
    python benchmarks/eval_adapted.py --summary /tmp/enc/eval/results.jsonl   # the table
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = {
    "gz1_sdss": dict(truth=DATA / "gz1_sdss" / "labels.csv", id_col="objid", label_col="gz1_name",
                     label_map={"spiral_cw": "spiral", "spiral_acw": "spiral"},
                     exclude=["dont_know", "merger"]),
    "ceers_f200w": dict(truth=DATA / "ceers_f200w" / "labels.csv", id_col="id", label_col="label",
                        label_map={}, exclude=["artifact", "uncertain"]),
}
SETS["gz1_sdss_natural"] = {**SETS["gz1_sdss"], "truth": DATA / "gz1_sdss_natural" / "labels.csv"}
REDUCTIONS = {
    "umap300": {},  # the default: UMAP to 300-d, n_neighbors 15, min_dist 0.1
    "umap10c": {"dims": 10, "n_neighbors": 50, "min_dist": 0.0, "metric": "cosine"},
    "pca50": {"method": "pca", "dims": 50},
    "none": {"method": "none"},
}
KEEP = ("stamps.zarr", "sources.parquet", "config.toml", "skymorph.json", "rejects.csv", "features.zarr")


def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
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


def _score(run_dir: Path, config, spec: dict) -> dict:
    from skymorph.stages.cluster import cluster
    from skymorph.stages.evaluate import evaluate
    from skymorph.stages.reduce import reduce

    t0 = time.perf_counter()
    reduce(run_dir, config, progress=False)
    cluster(run_dir, config, progress=False)
    result = evaluate(run_dir, spec["truth"], spec["id_col"], spec["label_col"], config,
                      label_map=spec["label_map"], exclude=spec["exclude"])
    return {"balacc": result["inspection"]["balanced_accuracy"], "kept": result["fraction_kept"],
            "nmi": result["clusters"]["nmi"], "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/enc/eval")
    parser.add_argument("--run", action="append", default=[], help="SET=DIR of a finished default run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--reductions", nargs="+", default=list(REDUCTIONS), choices=list(REDUCTIONS))
    parser.add_argument("--encoders", nargs="+", default=["lite2x4", "adapted"])
    parser.add_argument("--teacher", default="given", choices=("given", "lite0", "none"))
    parser.add_argument("--set", action="append", default=[], help="extra encode setting KEY=VALUE (adapted)")
    parser.add_argument("--tag", default="adapted")
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="SET=CKPT: encode that set with a trained checkpoint (e.g. of another run "
                             "of the same survey) instead of training")
    parser.add_argument("--summary", help="print the table of a results.jsonl and stop")
    args = parser.parse_args()
    if args.summary:
        summary(Path(args.summary))
        return

    import torch

    import skymorph
    from skymorph.core import adapted
    from skymorph.stages.encode import encode

    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        extra[key] = json.loads(value) if value[:1] in "0123456789-tf[" else value
    for seed in args.seeds:
        for item in args.run:
            name, _, src = item.partition("=")
            src, spec = Path(src), SETS[name]
            for enc in args.encoders:
                base = skymorph.Config().update({"cluster": {"k": 20, "seed": seed}})
                info: dict = {}
                if enc == "lite2x4":
                    feat_dir = src
                else:
                    ecfg = {"encoder": "adapted", "train_seed": seed, **extra}
                    if args.teacher == "lite0":
                        ecfg["train_teacher"] = "efficientnet_lite0"
                    elif args.teacher == "none":
                        ecfg["train_teacher"] = "none"
                    cfg = base.update({"encode": ecfg})
                    ckpt = out / f"{name}_{args.tag}_s{seed}.pt"
                    given = dict(c.split("=", 1) for c in args.checkpoint).get(name)
                    t0 = time.perf_counter()
                    if given:
                        ckpt = Path(given)
                        tinfo = adapted.load_checkpoint(ckpt)[1]["info"]
                    else:
                        stamps = skymorph.RunDir(src).open_array("stamps")
                        targets = (np.asarray(skymorph.RunDir(src).open_array("features")[:])
                                   if args.teacher == "given" else None)
                        net, tinfo = adapted.train_adapted(stamps, cfg.encode, targets=targets)
                        adapted.save_checkpoint(ckpt, net, tinfo)
                    feat_dir = out / f"{name}_{args.tag}_s{seed}"
                    _copy(src, feat_dir)
                    cfg = cfg.update({"encode": {"weights": str(ckpt)}})
                    encode(feat_dir, cfg, force=True, progress=False)
                    enc_info = json.loads((feat_dir / "stages" / "encode.json").read_text())
                    info = {"train_seconds": tinfo["train_seconds"],
                            "teacher_seconds": tinfo["teacher_seconds"],
                            "loss_first": tinfo["loss"][0], "loss_last": tinfo["loss"][-1],
                            "images_per_s": enc_info.get("images_per_s"), "n_train": tinfo["n_train"],
                            "steps": tinfo["steps"], "all_seconds": round(time.perf_counter() - t0, 1),
                            "checkpoint": str(ckpt)}
                    base = cfg
                for red in args.reductions:
                    config = base.update({"reduce": {**REDUCTIONS[red], "seed": seed, "map_2d": False}})
                    run_dir = out / f"{name}_{enc if enc == 'lite2x4' else args.tag}_{red}_s{seed}"
                    _copy(feat_dir, run_dir)
                    row = {"set": name, "encoder": enc if enc == "lite2x4" else args.tag, "reduce": red,
                           "seed": seed, **_score(run_dir, config, spec), **info}
                    with results.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
                    shutil.rmtree(run_dir)


def summary(path: Path) -> None:
    """Markdown table: per set, encoder and reduction, the mean balanced accuracy +- half its range
    over the seeds, the mean kept fraction and the number of seeds."""
    import pandas as pd

    rows = pd.read_json(path, lines=True)
    print("| set | encoder | reduce | balacc (mean ± half-range) | kept | seeds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (name, enc, red), g in rows.groupby(["set", "encoder", "reduce"], sort=False):
        half = (g["balacc"].max() - g["balacc"].min()) / 2
        print(f"| {name} | {enc} | {red} | {g['balacc'].mean():.3f} ± {half:.3f} | "
              f"{g['kept'].mean():.0%} | {g['seed'].nunique()} |")


if __name__ == "__main__":
    main()
