"""The ``skymorph inspect`` sub-command (:mod:`skymorph.cli`): its parser and the handlers of
the actions that are not single stages (serve, refine, auto)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ._cli_args import COMMANDS, _common, _settings, _settings_group, _stage_parser
from .config import Config, ConfigError

INSPECT_DESCRIPTION = """\
Visual classification of the consensus clusters (the paper's expert step):
  montage  draw a grid of random members per cluster + an HTML gallery
  serve    web application where experts name each cluster with one of inspect.types
  merge    votes -> one type per cluster -> morph_type in the catalog
  auto     name each cluster by the majority of labels you already have (an automatic voter)
  refine   experts type single galaxies, those the extension classifier is least sure of

Examples:
  skymorph inspect montage myrun
  skymorph inspect serve myrun --port 8765   # then open the printed http://127.0.0.1:8765/?token=...
  skymorph inspect merge myrun --min-agree 2
  skymorph inspect merge myrun --votes alice.csv --votes bob.csv --votes carol.csv
  skymorph inspect refine myrun              # then open the printed http://127.0.0.1:8765/refine?token=..."""


def _inspect_parser(sub: Any) -> None:
    parser = sub.add_parser("inspect", help=COMMANDS["inspect"], description=INSPECT_DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    _stage_parser(actions, "montage")
    serve = actions.add_parser("serve", help="browser application for the experts' votes",
                               description="Serve the voting application; every vote goes to "
                               "RUN_DIR/inspection/votes.csv at once. Draws the montages first if needed.")
    serve.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    _settings_group(serve, "settings of this command", _settings(("inspect.host", "inspect.port")))
    serve.add_argument("--open", dest="open_browser", action="store_true",
                       help="open the page in the default web browser")
    _common(serve, force=False)
    serve.set_defaults(handler=_serve)
    _stage_parser(actions, "merge")
    _auto_parser(actions)
    _refine_parser(actions)


def _refine_parser(actions: Any) -> None:
    p = actions.add_parser(
        "refine", help="experts type single galaxies, least sure first (active learning)",
        description="Serve the voting application on its 'teach single galaxies' page: after the "
        "clusters are named, the extension classifier shows the galaxies it is least sure of (least "
        "margin), inspect.refine_page at a time; each expert gives each one a type or 'skip'. Labels "
        "go to RUN_DIR/inspection/galaxy_votes.csv at once; `skymorph extend` learns from them "
        "(weight extend.taught_weight) and gives those galaxies type_source = taught.\n\nExample:\n"
        "  skymorph inspect refine myrun --page 20   # then open the printed address\n"
        "  skymorph extend myrun",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory with named clusters and features")
    _settings_group(p, "settings of this command",
                    _settings(("inspect.host", "inspect.port", "inspect.refine_page")))
    p.add_argument("--open", dest="open_browser", action="store_true",
                   help="open the page in the default web browser")
    _common(p, force=False)
    p.set_defaults(handler=_refine)


def _refine(args: argparse.Namespace, config: Config) -> int:
    from .stages.inspect import serve

    serve(args.run_dir, config, open_browser=args.open_browser, page="refine")
    return 0


def _auto_parser(actions: Any) -> None:
    p = actions.add_parser(
        "auto", help="name each cluster by the majority of known labels (an automatic voter)",
        description="Name every consensus cluster by the majority label of its montage members, as an "
        "automatic voter (expert 'auto:<file>') in RUN_DIR/inspection/votes.csv: for labelled subsets "
        "and benchmarks without people.\n\nExample:\n"
        "  skymorph inspect auto myrun --truth labels.csv --id-col objid --label-col gz1_name \\\n"
        "      --set 'inspect.types=[\"ELLIPTICAL\",\"SPIRAL\",\"EDGE_ON\",\"UNC\"]' \\\n"
        "      --map spiral_cw=SPIRAL --map spiral_acw=SPIRAL --exclude dont_know --exclude merger --merge",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory with a catalog")
    _truth_arguments(p, "label", "labels")
    p.add_argument("--expert", default=None, metavar="NAME",
                   help="voter name (must start with 'auto:'; default auto:<truth file name>)")
    p.add_argument("--merge", action="store_true",
                   help="merge the votes at once; with no human voter, with min_agree 1")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="then type N single galaxies as a simulated expert (`inspect refine`): pages of "
                   "inspect.refine_page galaxies by least margin; galaxies without a usable label are "
                   "skipped. Names the clusters only where they are used (extend.cluster_labels)")
    _settings_group(p, "settings of this command",
                    _settings(("inspect.per_cluster", "inspect.seed", "inspect.refine_page")))
    _common(p, force=False)
    p.set_defaults(handler=_auto)


def _truth_arguments(parser: argparse.ArgumentParser, what: str, plural: str) -> None:
    parser.add_argument("--truth", required=True, metavar="FILE",
                        help=f"table of known {plural} (CSV, TSV, Parquet or FITS)")
    parser.add_argument("--id-col", required=True, metavar="COL",
                        help="truth column matched (as text) to the catalog's id")
    parser.add_argument("--label-col", required=True, metavar="COL", help=f"truth column of the {what}")
    parser.add_argument("--map", action="append", metavar="OLD=NEW", default=None,
                        help=f"rename a {what} first, e.g. spiral_cw=spiral (repeatable)")
    parser.add_argument("--exclude", action="append", metavar="LABEL", default=None,
                        help=f"treat a {what} as unknown, e.g. dont_know (repeatable)")


def _pairs(items: Sequence[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise ConfigError(f"--map expects OLD=NEW, got {item!r}")
        out[old] = new
    return out


def _auto(args: argparse.Namespace, config: Config) -> int:
    from ._text import text_table
    from .inspection.auto import auto_votes, human_voters
    from .inspection.merge import format_counts
    from .io.rundir import RunDir
    from .stages.inspect import merge

    if args.refine < 0:
        raise ConfigError(f"--refine takes the number of galaxies to type (>= 0), got {args.refine}")
    run = RunDir(args.run_dir)
    if args.refine and not config.extend.cluster_labels:
        return _auto_refine(args, config, run)
    result = auto_votes(args.run_dir, args.truth, args.id_col, args.label_col, config,
                        label_map=_pairs(args.map), exclude=args.exclude or (), expert=args.expert)
    voted = result[result["type"] != ""]
    print(f"{len(voted)} of {len(result)} consensus clusters named automatically "
          f"(majority label of the sampled members) in {run.path / 'inspection' / 'votes.csv'}:")
    print(text_table(["cluster", "vote", "majority", "labels"],
                     [[row.cluster, row.type or "(no labelled member: no vote)",
                       f"{row.n_majority}/{row.n_labelled} labelled", f"[{row.labels}]"]
                      for row in result.itertuples()], indent="  "))
    min_agree = config.inspect.min_agree if human_voters(run) else 1
    if args.merge:
        merged = merge(run, config=config, min_agree=min_agree)
        from .io.csvfile import read_csv

        counts = read_csv(run.path / "inspection" / "type_counts.csv")
        print(f"merged with min_agree {min_agree} ({len(merged)} clusters):")
        print(format_counts(counts))
    else:
        print(f"next: skymorph inspect merge {run.path} --min-agree {min_agree}"
              + ("" if human_voters(run) else "   (one automatic voter: agreement of 1 is all there can be)"))
    if args.refine:
        if not args.merge:
            print("the clusters are not merged yet (--merge): the single galaxies are picked without "
                  "the cluster names")
        return _auto_refine(args, config, run)
    return 0


def _auto_refine(args: argparse.Namespace, config: Config, run: Any) -> int:
    from .inspection.refine import auto_refine

    result = auto_refine(run, args.truth, args.id_col, args.label_col, config, n_labels=args.refine,
                         label_map=_pairs(args.map), exclude=args.exclude or (), expert=args.expert)
    start = "the named clusters" if config.extend.cluster_labels else "random galaxies"
    print(f"{result['n_labelled']} single galaxies typed by {result['expert']} (starting from {start}), "
          f"{result['n_looked_at']} looked at ({result['n_looked_at'] - result['n_labelled']} skipped: no "
          f"usable label) in {len(result['pages'])} pages of up to {result['page_size']}; "
          f"{result['n_taught']} galaxies taught in all, in {run.path / 'inspection' / 'galaxy_votes.csv'}\n"
          f"next: skymorph extend {run.path}   (taught galaxies get type_source = taught)")
    return 0


def _serve(args: argparse.Namespace, config: Config) -> int:
    from .stages.inspect import serve

    serve(args.run_dir, config, open_browser=args.open_browser)
    return 0
