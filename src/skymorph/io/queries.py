"""The queries of ``skymorph similar``: the rows of galaxies named by id, and a new cutout
made into a stamp and features exactly as the run made its own (``similar --image``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import SkymorphError
from .rundir import RunDir

__all__ = ["SimilarError", "find_rows", "cutout_query"]


class SimilarError(SkymorphError, ValueError):
    """A query cannot be answered (unknown or rejected id, unreadable image, nothing to search)."""


def find_rows(run: RunDir, table: pd.DataFrame, ids: list[str]) -> np.ndarray:
    """Row of each id in ``table``; an unknown or rejected id is one sentence saying what to do.

    Raises
    ------
    SimilarError
    """
    known = pd.Series(np.arange(len(table)), index=table["id"].astype(str))
    known = known[~known.index.duplicated()]
    for gid in (str(g) for g in ids if str(g) not in known.index):  # the first unknown id explains
        rejects = run.rejects()
        hit = rejects[rejects["id"].astype(str) == gid] if "id" in rejects else rejects.iloc[:0]
        if len(hit):
            raise SimilarError(
                f"galaxy {gid} was rejected by {hit.iloc[0]['stage']} ({hit.iloc[0]['reason']}), so it has "
                f"no features; fix that file and re-run the pipeline, or search for it with --image FILE")
        examples = ", ".join(table["id"].astype(str).head(3))
        raise SimilarError(f"no galaxy with id {gid!r} in {run.path}; ids are the catalog's 'id' column "
                           f"(e.g. {examples})")
    return np.asarray([int(known[str(gid)]) for gid in ids], dtype=np.int64)


def cutout_query(run: RunDir, config: Config, path: str, *, stamp_options: dict[str, Any],
                 polar: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """Stamp and features of a new cutout, made exactly as the run made its own: ingest's
    framing (``stamp_options``, :func:`skymorph.stages.stamp_options`), the run's CAE when it
    denoises, the APCT when ``polar`` (:func:`skymorph.stages.apct_options`) is given, and
    its encoder.

    Returns
    -------
    stamp : ndarray (stamp_size x stamp_size)
    features : ndarray (D,)

    Raises
    ------
    SimilarError
        The file is unreadable or unusable as a galaxy image.
    """
    from ..core import encoders as _encoders
    from ..core.similar import cutout_features
    from .ingest_tasks import cutout_stamp
    from .readers import Reject

    try:
        stamp = cutout_stamp(path, config.ingest, stamp_options)
    except FileNotFoundError:
        raise SimilarError(f"--image {path} does not exist; give the path of a FITS, PNG, JPEG or NPY "
                           "cutout") from None
    except (Reject, OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
        raise SimilarError(f"--image {path} cannot be used ({exc}); give a readable FITS, PNG, JPEG or "
                           "NPY cutout of one galaxy") from None
    features = cutout_features(stamp, cae_model=_cae_model(run, config) if config.denoise.enabled else None,
                               polar=polar,
                               encoder=_encoders.build_encoder(config.encode))
    if features is None:
        raise SimilarError(f"--image {path} has no finite pixel after ingest; give another cutout")
    return stamp, features


def _cae_model(run: RunDir, config: Config) -> Any:
    """The run's denoising autoencoder (``denoise.checkpoint`` or the one denoise trained)."""
    from ..core import cae as _cae

    checkpoint = Path(config.denoise.checkpoint or run.path / "cae" / "checkpoint.pt")
    if not checkpoint.is_file():
        raise SimilarError(f"this run denoises its stamps but its CAE ({checkpoint}) is missing; re-run "
                           f"`skymorph denoise {run.path}` first")
    return _cae.load_checkpoint(checkpoint, _cae.resolve_device(config.denoise.device))[0]
