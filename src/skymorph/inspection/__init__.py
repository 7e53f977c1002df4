"""Inspect: montages of each cluster, expert voting in the browser, and merging the votes.

The paper's experts look at 100 galaxies drawn at random from each consensus
cluster and name the cluster with one of ``inspect.types`` (by default SPH
spheroid, ETD early-type disk, LTD late-type disk, IRR irregular, UNC
unclassified); a cluster takes a type where at least two of the three experts
agree.  The package holds the three steps of that work:

:mod:`.montage`
    For each consensus cluster, ``per_cluster`` members drawn at random (seeded,
    see :func:`sample_members`) as a grid PNG labelled with the cluster id and
    size, plus an HTML gallery, in ``RUN_DIR/inspection/``; the display stretch.
:mod:`.server` (with the vote store of :mod:`.votes`)
    A local web application in which each expert enters a name, goes through
    the montages (a click on a thumbnail shows that galaxy larger) and picks a
    type per cluster.  Every vote is written to ``RUN_DIR/inspection/votes.csv``
    the moment it is cast.
:mod:`.merge`
    Votes -> one type per cluster -> ``morph_type`` in the catalog, and the
    number of galaxies per type (the paper's Table 2).

The montage and merge stages that run these through the executor, with their
public functions :func:`skymorph.montage` and :func:`skymorph.merge`, are in
:mod:`skymorph.stages.inspect`, as are :func:`skymorph.make_server` and
:func:`skymorph.serve`, which draw missing or stale montages before the server starts;
the command line is in :mod:`skymorph.cli`.
"""

from __future__ import annotations

from .merge import format_counts, merge_votes, read_votes, type_counts
from .montage import (
    InspectError,
    clustering_fingerprint,
    consensus_labels,
    display,
    draw_montages,
    linear,
    load_manifest,
    sample_members,
    stretch,
)
from .server import TYPE_NAMES, InspectionServer, make_server, serve
from .votes import VOTE_COLUMNS, VoteStore

__all__ = [
    "draw_montages", "make_server", "serve", "merge_votes", "sample_members", "consensus_labels",
    "clustering_fingerprint", "stretch", "linear", "display", "read_votes", "type_counts",
    "format_counts", "load_manifest", "VoteStore", "InspectionServer", "InspectError", "TYPE_NAMES",
    "VOTE_COLUMNS",
]
