"""``skymorph inspect {montage,serve,merge}``: the command line of the inspection step.

Only argument parsing and printing; the work is in :mod:`.montage`, :mod:`.server` and :mod:`.merge`.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from ..config import Config
from ..io.rundir import RunDir
from .merge import format_counts, merge
from .montage import InspectError, load_manifest, montage
from .server import serve


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    # cli.py adds these to `skymorph inspect`, where they must precede the action; repeating
    # them on each action lets them follow RUN_DIR too (SUPPRESS: only given flags override)
    s = argparse.SUPPRESS
    group = parser.add_argument_group("settings")
    group.add_argument("--config", metavar="FILE", default=s, help="TOML file of settings")
    group.add_argument("--preset", choices=["default", "paper"], default=s,
                       help="starting settings (default: default)")
    group.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=s,
                       help="override any setting, e.g. --set inspect.seed=1 (repeatable)")
    group.add_argument("-v", "--verbose", action="store_true", default=s, help="log more detail")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``skymorph inspect {montage,serve,merge}``."""
    s = argparse.SUPPRESS
    parser.description = (
        "Visual classification of the consensus clusters (the paper's expert step):\n"
        "  montage  draw a grid of random members per cluster + an HTML gallery\n"
        "  serve    web application where experts name each cluster with one of inspect.types\n"
        "  merge    votes -> one type per cluster -> morph_type in the catalog\n\n"
        "Examples:\n"
        "  skymorph inspect montage myrun\n"
        "  skymorph inspect serve myrun --port 8765      # then open the printed http://127.0.0.1:8765/?token=...\n"
        "  skymorph inspect merge myrun --min-agree 2\n"
        "  skymorph inspect merge myrun --votes alice.csv --votes bob.csv --votes carol.csv"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("montage", help="montage PNG per consensus cluster and an HTML gallery",
                           description="Draw RUN_DIR/inspection/montages/cluster_NNN.png and index.html.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    p.add_argument("--per-cluster", dest="inspect.per_cluster", type=int, default=s, metavar="N",
                   help="random members shown per cluster (default 100)")
    p.add_argument("--seed", dest="inspect.seed", type=int, default=s, metavar="N",
                   help="seed of the member draw (default 0)")
    p.add_argument("--grid-cols", dest="inspect.grid_cols", type=int, default=s, metavar="N",
                   help="thumbnails per montage row (default 10)")
    p.add_argument("--thumb-px", dest="inspect.thumb_px", type=int, default=s, metavar="PX",
                   help="thumbnail side in pixels (default 100)")
    p.add_argument("--array", dest="inspect.array", choices=["stamps", "denoised"], default=s,
                   help="images to show (default stamps)")
    _settings_flags(p)

    p = actions.add_parser("serve", help="browser application for the experts' votes",
                           description="Serve the voting application; every vote goes to "
                                       "RUN_DIR/inspection/votes.csv at once. Draws the montages "
                                       "first if needed.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    p.add_argument("--host", dest="inspect.host", default=s, metavar="HOST",
                   help="address to listen on (default 127.0.0.1: this machine only; "
                        "0.0.0.0 lets colleagues on the network vote)")
    p.add_argument("--port", dest="inspect.port", type=int, default=s, metavar="PORT",
                   help="port to listen on (default 8765; 0 picks a free one)")
    p.add_argument("--open", dest="open_browser", action="store_true",
                   help="open the page in the default web browser")
    _settings_flags(p)

    p = actions.add_parser("merge", help="votes -> morphology type per cluster -> catalog",
                           description="A cluster takes a type where at least --min-agree experts "
                                       "agree, else the last of inspect.types (UNC) with a type_flag; "
                                       "writes morph_type to the "
                                       "catalog and the galaxies per type (Table 2) to "
                                       "RUN_DIR/inspection/type_counts.{csv,json}.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    p.add_argument("--votes", metavar="FILE", action="append", default=None,
                   help="vote file(s) with expert, cluster, type columns (repeatable; "
                        "default RUN_DIR/inspection/votes.csv)")
    p.add_argument("--min-agree", dest="inspect.min_agree", type=int, default=s, metavar="N",
                   help="experts who must agree on a type (default 2)")
    _settings_flags(p)


def main(args: argparse.Namespace, config: Config) -> int:
    """Run ``skymorph inspect ACTION``."""
    try:
        if args.action == "montage":
            run = montage(args.run_dir, config)
            manifest = load_manifest(run)
            out = run.path / "inspection"
            print(f"{len(manifest['clusters'])} montages ({manifest['n_consensus']} consensus galaxies) in "
                  f"{out / 'montages'}; gallery: {out / 'index.html'}")
        elif args.action == "serve":
            serve(args.run_dir, config, open_browser=args.open_browser)
        elif args.action == "merge":
            result = merge(args.run_dir, args.votes, config)
            run = RunDir(args.run_dir)
            counts = pd.read_csv(run.path / "inspection" / "type_counts.csv")
            flagged = result[result["type_flag"] != "agreed"]
            print(f"{len(result)} clusters typed from {int(result['n_experts'].sum())} votes "
                  f"(min_agree {config.inspect.min_agree}); {len(flagged)} without agreement -> "
                  f"{config.inspect.types[-1]}: {', '.join(map(str, flagged['cluster'])) or 'none'}")
            print(format_counts(counts))
            print(f"morph_type written to {run.path / 'catalog.parquet'}; counts in "
                  f"{run.path / 'inspection' / 'type_counts.csv'}")
    except InspectError as exc:
        print(f"skymorph inspect {args.action}: error: {exc}", file=sys.stderr)
        return 1
    return 0
