"""Data sets bundled with skymorph."""

from __future__ import annotations

from pathlib import Path

__all__ = ["cosmos_demo"]


def cosmos_demo() -> Path:
    """Directory of the 100 real HST/ACS F814W COSMOS stamps bundled as the demo set.

    The stamps, their ``RealGalaxyCatalog`` table and its ``_fits`` companion come
    from LSSTDESC/BlendingToolKit (``data/cosmos/``, MIT licence); the pixels are
    public COSMOS HST data.  Ingest the directory as it is::

        skymorph ingest "$(python -c 'import skymorph.io.datasets as d; print(d.cosmos_demo())')" --out demo
    """
    return Path(__file__).parent.parent / "data" / "cosmos_f814w"
