"""Reading one galaxy image, its error map and its PSF, with every size checked first.

Nothing is decoded before its size is known: a FITS HDU's ``NAXISn`` and
``BITPIX``, a PNG/JPEG's dimensions (Pillow reads them without decoding) and an NPY
file's header (:mod:`numpy.lib.format`) are checked against ``max_pixels`` and
against the file's length, so a 6 kB file whose header claims 10^10 pixels is
refused with a reason instead of allocating 37 GiB.

Error maps are returned as 1-sigma per pixel (``rms``): a weight map (inverse
variance) becomes ``1 / sqrt(w)``, a variance map ``sqrt(v)``.  Pixels without
information (zero or negative weight, non-finite values) get ``inf``.

Also the run-wide PSF file of ``skymorph measure`` (:func:`load_psf`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..errors import Reject

__all__ = [
    "Reject", "GalaxyImage", "read_image", "read_galaxy", "read_error_map", "to_rms", "check_pixels",
    "fits_image", "error_hdu", "hdu_kind", "suffix_of", "stem_of", "FITS_SUFFIXES", "RASTER_SUFFIXES",
    "NPY_SUFFIXES", "IMAGE_SUFFIXES", "DEFAULT_MAX_PIXELS", "content_kind", "load_psf",
]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
NPY_SUFFIXES = (".npy",)
IMAGE_SUFFIXES = FITS_SUFFIXES + RASTER_SUFFIXES + NPY_SUFFIXES
_COMPRESSED = (".gz", ".fz")
DEFAULT_MAX_PIXELS = 100_000_000

ERROR_HDU_KINDS = {
    "WHT": "weight", "WEIGHT": "weight", "IVAR": "weight", "INVVAR": "weight", "IVM": "weight",
    "RMS": "rms", "ERR": "rms", "ERROR": "rms", "SIGMA": "rms", "NOISE": "rms",
    "VAR": "variance", "VARIANCE": "variance",
}
"""EXTNAMEs of error-map HDUs and what their pixels hold."""

_AUX_HDU_NAMES = set(ERROR_HDU_KINDS) | {"PSF", "MASK", "DQ", "CTX", "CON", "EXP", "SEG", "SEGMAP",
                                         "FLAG", "FLAGS"}
"""HDUs that are never the galaxy image when the image HDU is chosen automatically."""


@dataclass
class GalaxyImage:
    """One galaxy image as read, with what came with it."""

    data: np.ndarray
    """2-D float64 image."""
    hdu: int
    """FITS HDU read (-1 for PNG/JPEG/NPY)."""
    linear: bool
    """Pixels proportional to flux (FITS, NPY); ``False`` for display-scaled PNG/JPEG."""
    rms: np.ndarray | None = None
    """1-sigma error per pixel, same shape as ``data`` (``inf`` where unknown)."""
    rms_source: str = ""
    psf: np.ndarray | None = None
    """A PSF image found beside the galaxy (an HDU named PSF), not yet normalised."""
    psf_source: str = ""
    note: str = ""
    """Why an error map or PSF that was found could not be used."""
    zeropoint: float = float("nan")
    """Photometric zero point from the FITS header (MAGZERO, PHOTZP...; NaN when none)."""


def header_zeropoint(*headers: Any) -> float:
    """The first photometric zero point keyword (``MAGZERO``, ``PHOTZP``, ``MAGZPT``, ``ZEROPNT``)
    found in ``headers`` (image HDU first, then the primary); NaN when none is a number."""
    from ..core.photometry import ZEROPOINT_KEYWORDS

    for header in headers:
        for key in ZEROPOINT_KEYWORDS:
            try:
                value = float(header.get(key)) if header is not None and key in header else float("nan")
            except (TypeError, ValueError):
                continue
            if np.isfinite(value):
                return value
    return float("nan")


def suffix_of(path: Path) -> str:
    """The file's image suffix (``.fits.gz`` counts as one), else its last suffix, lower case."""
    name = path.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def stem_of(path: Path) -> str:
    """The file name without its image suffix (the galaxy's id for plain files)."""
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def check_pixels(shape: tuple[int, ...], max_pixels: float, what: str) -> None:
    """Refuse an image whose header promises more than ``max_pixels`` pixels.

    Raises
    ------
    Reject
        With the size the header claims and the setting that allows it.
    """
    n = math.prod(int(s) for s in shape)
    if n > max_pixels:
        dims = " x ".join(str(int(s)) for s in shape[::-1])
        raise Reject(f"{what} claims {dims} = {n:.3g} pixels, more than ingest.max_pixels = "
                     f"{max_pixels:.3g}; cut it smaller first, or raise max_pixels if it really is "
                     "one galaxy image")


def _hdu_shape(hdu: fits.hdu.base._BaseHDU) -> tuple[int, ...]:
    """Shape (numpy order) that an HDU's header promises, read without touching the data."""
    if hdu.is_image:
        return tuple(int(n) for n in hdu.shape)  # parsed with the header, no card lookups
    header = hdu.header
    naxis = int(header.get("NAXIS", 0))
    return tuple(int(header.get(f"NAXIS{i}", 0)) for i in range(naxis, 0, -1))


def _check_hdu(hdul: fits.HDUList, index: int, max_pixels: float, file_size: int | None) -> None:
    """Size checks of one HDU from its header: pixel count, and (uncompressed files)
    whether the whole file could hold the data the header announces."""
    hdu = hdul[index]
    shape = _hdu_shape(hdu)
    check_pixels(shape, max_pixels, f"HDU {index}'s header")
    n = math.prod(shape) if shape else 0
    # a header that promises more bytes than the file holds is a lie told before any
    # allocation; near misses are caught by astropy's truncation warning when read
    if file_size is None or isinstance(hdu, fits.CompImageHDU) or n * 8 <= file_size:
        return
    if n * abs(int(hdu.header.get("BITPIX", 8))) // 8 > file_size:
        raise Reject("truncated FITS file (data shorter than its header says)")


def hdu_kind(hdu: fits.hdu.base._BaseHDU) -> str | None:
    """``weight``, ``rms`` or ``variance`` for an HDU named like an error map, else ``None``."""
    return ERROR_HDU_KINDS.get(str(hdu.name).strip().upper())


def fits_image(hdul: fits.HDUList, hdu: int | None, max_pixels: float = DEFAULT_MAX_PIXELS,
               file_size: int | None = None) -> tuple[np.ndarray, int]:
    """The galaxy image of an open FITS file, its size checked before it is read.

    Parameters
    ----------
    hdul : HDUList
        The open file.
    hdu : int, optional
        HDU to read; by default the first 2-D image HDU that is not named as an
        error map, PSF or mask.
    max_pixels : float
        Largest image accepted.
    file_size : int, optional
        Length of an uncompressed file, to detect truncation from the header.

    Returns
    -------
    data : ndarray
        The 2-D image (the HDU's own dtype; squeezed).
    index : int
        The HDU read.

    Raises
    ------
    Reject
        No such HDU, no image, too large, truncated, not 2-D.
    """
    if hdu is not None:
        if hdu >= len(hdul):
            raise Reject(f"has no HDU {hdu} (it has {len(hdul)}); choose another --hdu")
        index = hdu
    else:
        single = len(hdul) == 1  # the usual case: no EXTNAME to look at
        index = next((i for i, h in enumerate(hdul) if h.is_image and len(h.shape) >= 2
                      and (single or str(h.name).strip().upper() not in _AUX_HDU_NAMES)), None)
        if index is None:
            raise Reject("no image HDU (only tables or empty HDUs); is it a catalog?")
    _check_hdu(hdul, index, max_pixels, file_size)
    data = hdul[index].data
    if data is None:
        raise Reject(f"HDU {index} holds no data")
    data = np.squeeze(np.asarray(data))
    if data.ndim != 2:
        raise Reject(f"HDU {index} is {data.ndim}-dimensional; give a 2-D image or choose --hdu")
    return data, index


def to_rms(values: np.ndarray, kind: str) -> np.ndarray:
    """1-sigma error per pixel from an ``rms``, ``variance`` or ``weight`` (inverse variance) map.

    Pixels that carry no information (zero or negative weight or variance, non-finite
    values, a zero rms) become ``inf``.
    """
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "rms":
            rms = values.copy()
        elif kind == "variance":
            rms = np.sqrt(values)
        elif kind == "weight":
            rms = 1.0 / np.sqrt(values)
        else:
            raise ValueError(f"error map kind must be rms, variance or weight, not {kind!r}")
    rms[~np.isfinite(rms) | (rms <= 0)] = np.inf
    return rms


def error_hdu(hdul: fits.HDUList, image_index: int, shape: tuple[int, ...], max_pixels: float
              ) -> tuple[np.ndarray | None, str, str]:
    """An error map stored beside the image in the same FITS file (EXTNAME WHT/WEIGHT/IVAR:
    inverse variance; RMS/ERR/SIGMA/NOISE: 1-sigma; VAR/VARIANCE: variance).

    Returns
    -------
    rms, source, note
        The 1-sigma map (``None`` when there is none or it cannot be used), where it
        came from, and why a map that exists could not be used.
    """
    for index, hdu in enumerate(hdul):
        kind = hdu_kind(hdu) if index != image_index else None
        if kind is None or not hdu.is_image:
            continue
        source = f"HDU {index} {str(hdu.name).strip()} ({kind})"
        try:
            _check_hdu(hdul, index, max_pixels, None)
            data = np.squeeze(np.asarray(hdu.data))
        except (Reject, OSError, ValueError, TypeError, MemoryError) as exc:
            return None, "", f"error map {source} unreadable: {exc}"
        if data.shape != shape:
            return None, "", f"error map {source} is {data.shape}, the image {shape}"
        return to_rms(data, kind), source, ""
    return None, "", ""


def _kind_from_name(path: Path) -> str | None:
    name = stem_of(path).lower()
    tokens = set(name.replace("-", "_").replace(".", "_").split("_"))
    for token, kind in (("wht", "weight"), ("weight", "weight"), ("ivar", "weight"), ("ivm", "weight"),
                        ("var", "variance"), ("variance", "variance"),
                        ("rms", "rms"), ("err", "rms"), ("error", "rms"), ("sigma", "rms"), ("noise", "rms")):
        if token in tokens:
            return kind
    return None


def read_error_map(path: str | Path, kind: str, shape: tuple[int, ...],
                   max_pixels: float = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Read a companion error-map file (FITS or NPY) as 1-sigma per pixel.

    Parameters
    ----------
    path : str or Path
        The companion file.
    kind : {"auto", "rms", "weight", "variance"}
        What its pixels hold; ``auto`` takes it from the HDU's EXTNAME, else from a
        token of the file name (``wht``/``weight``/``ivar``, ``var``, ``rms``/``err``/``sigma``).
    shape : tuple
        The image's shape, which the map must have.
    max_pixels : float
        Largest map accepted.

    Returns
    -------
    rms : ndarray
        1-sigma per pixel (``inf`` where unknown).
    source : str
        What was read, for the sources table.

    Raises
    ------
    Reject
        Unreadable, wrong shape, or of unknown kind.
    """
    path = Path(path)
    suffix = suffix_of(path)
    if suffix in FITS_SUFFIXES:
        with _open_fits(path, memmap=False) as (hdul, size):
            named = [i for i, h in enumerate(hdul) if h.is_image and hdu_kind(h)]
            if named:
                index = named[0]
                _check_hdu(hdul, index, max_pixels, size)
                data = np.squeeze(np.asarray(hdul[index].data))
                found = hdu_kind(hdul[index])
                kind = found if kind == "auto" else kind
            else:
                data, index = fits_image(hdul, None, max_pixels, size)
    elif suffix in NPY_SUFFIXES:
        data = _read_npy(path, max_pixels)
        index = -1
    else:
        raise Reject(f"error map {path.name} is not FITS or NPY")
    if kind == "auto":
        kind = _kind_from_name(path)
        if kind is None:
            raise Reject(f"cannot tell whether {path.name} holds rms, variance or weight; "
                         "set ingest.error_map_kind")
    if data.shape != tuple(shape):
        raise Reject(f"error map {path.name} is {data.shape}, the image {tuple(shape)}")
    where = f"{path}[{index}]" if index >= 0 else str(path)
    return to_rms(data, kind), f"file {where} ({kind})"


def load_psf(path: str | os.PathLike) -> np.ndarray:
    """The PSF image of a FITS file (first HDU holding an image), normalised to unit sum.

    Raises
    ------
    MeasureError
        If the file is missing or unreadable, holds no 2-D image, or its pixels
        are not finite or do not sum to a positive value.
    """
    from ..core.stampmeasure import MeasureError, _normalised_psf

    try:
        with fits.open(path) as hdul:
            image = next((h.data for h in hdul if h.data is not None and h.data.ndim == 2), None)
            image = None if image is None else np.array(image, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise MeasureError(f"measure.psf_file {path}: cannot read it as FITS ({exc})") from None
    if image is None:
        raise MeasureError(f"measure.psf_file {path}: no 2-D image HDU")
    return _normalised_psf(image, f"measure.psf_file {path}")


_MAGIC = ((b"SIMPLE  =", "FITS"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"),
          (b"\x93NUMPY", "NPY"), (b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"))
_SUFFIX_KIND = {**dict.fromkeys(FITS_SUFFIXES, "FITS"), ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG",
                ".npy": "NPY"}
_RIGHT_SUFFIX = {"FITS": ".fits", "PNG": ".png", "JPEG": ".jpeg", "NPY": ".npy", "gzip": ".fits.gz"}


def content_kind(path: Path) -> str | None:
    """What the file's first bytes say it is (FITS, PNG, JPEG, NPY, gzip, zip), else ``None``."""
    with path.open("rb") as fh:
        head = fh.read(16)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def _check_content(path: Path, suffix: str) -> None:
    """Refuse a file whose content is not what its name says (a FITS file named .png
    would otherwise be read as a display-scaled image); a gzip file named .fits is fine."""
    named = _SUFFIX_KIND.get(suffix)
    found = content_kind(path)
    if named is None or found is None or found == named:
        return
    if named == "FITS" and found == "gzip":  # compressed FITS under a plain name: astropy reads it
        return
    right = _RIGHT_SUFFIX.get(found, "")
    hint = f"rename it to {stem_of(path)}{right}" if right else "convert it to FITS, PNG, JPEG or NPY"
    raise Reject(f"the file holds {found} data but its name ends in {suffix}; {hint}")


def _zero_size(path: Path) -> str:
    """Why a file of length 0 cannot be read: empty, or a special file (e.g. under /proc)
    that reports no length."""
    try:
        with path.open("rb") as fh:
            has_data = bool(fh.read(1))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc}); it reports a length of 0, like a special file"
    if has_data:
        return ("a special file (it reports a length of 0 but has content, like a file under /proc), "
                "not an image file")
    return "empty (zero-byte) file"


def _is_gzip(path: Path) -> bool:
    try:
        return content_kind(path) == "gzip"
    except OSError:
        return False


@contextmanager
def _open_fits(path: Path, memmap: bool) -> Iterator[tuple[fits.HDUList, int | None]]:
    """``fits.open`` with the file length of uncompressed files (for truncation checks)."""
    compressed = path.name.lower().endswith(_COMPRESSED) or _is_gzip(path)
    size = None if compressed else path.stat().st_size
    with fits.open(path, memmap=memmap) as hdul:
        yield hdul, size


def read_galaxy(path: str | Path, hdu: int | None = None, *, max_pixels: float = DEFAULT_MAX_PIXELS,
                with_extras: bool = True) -> GalaxyImage:
    """Read one galaxy image file, its size checked before any pixel is decoded.

    Parameters
    ----------
    path : str or Path
        FITS, PNG, JPEG or NPY file.
    hdu : int, optional
        FITS HDU to read; the first image HDU (not named as an error map, PSF or
        mask) by default.
    max_pixels : float
        Largest image accepted (pixels, from the header).
    with_extras : bool
        Also read an error-map HDU (WHT, RMS, ...) and a PSF HDU of the same FITS file.

    Returns
    -------
    GalaxyImage

    Raises
    ------
    Reject
        Unreadable, truncated, too large, complex or boolean, or not a 2-D image.
    """
    path = Path(path)
    suffix = suffix_of(path)
    try:
        if path.stat().st_size == 0:
            raise Reject(_zero_size(path))
        _check_content(path, suffix)
        if suffix in FITS_SUFFIXES:
            return _read_fits(path, hdu, max_pixels, with_extras)
        if suffix in RASTER_SUFFIXES:
            return GalaxyImage(_read_raster(path, max_pixels), -1, linear=False)
        if suffix in NPY_SUFFIXES:
            data = _read_npy(path, max_pixels)
            if data.ndim == 3:
                data = _luminance(data[..., :3])
            return GalaxyImage(np.asarray(data, dtype=np.float64), -1, linear=True)
    except Reject:
        raise
    except MemoryError:
        raise Reject("ran out of memory reading it; lower ingest.max_pixels or --workers") from None
    except Exception as exc:  # any reader's failure on one file is that file's reject
        if suffix in FITS_SUFFIXES and "reshape" in str(exc):
            raise Reject("truncated FITS file (data shorter than its header says)") from None
        kind = {**dict.fromkeys(FITS_SUFFIXES, "FITS"), ".npy": "NPY"}.get(suffix, "image")
        detail = str(exc) if isinstance(exc, OSError | ValueError) else f"{type(exc).__name__}: {exc}"
        raise Reject(f"unreadable {kind} file: {detail}") from None
    raise Reject(f"unsupported file type {suffix!r}; use FITS, PNG, JPEG or NPY")


def read_image(path: str | Path, hdu: int | None = None,
               max_pixels: float = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, int]:
    """Read one galaxy image as a 2-D float64 array (colour reduced to luminance).

    Returns
    -------
    image : ndarray
        2-D float64 image.
    hdu : int
        The HDU read (-1 for non-FITS files).

    Raises
    ------
    Reject
        See :func:`read_galaxy`.
    """
    image = read_galaxy(path, hdu, max_pixels=max_pixels, with_extras=False)
    return image.data, image.hdu


def _read_fits(path: Path, hdu: int | None, max_pixels: float, with_extras: bool) -> GalaxyImage:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _open_fits(path, memmap=False) as (hdul, size):
            data, index = fits_image(hdul, hdu, max_pixels, size)
            image = GalaxyImage(np.array(data, dtype=np.float64), index, linear=True,
                                zeropoint=header_zeropoint(hdul[index].header, hdul[0].header))
            if with_extras and len(hdul) > 1:
                image.rms, image.rms_source, note = error_hdu(hdul, index, image.data.shape, max_pixels)
                psf_note = ""
                psfs = [i for i, h in enumerate(hdul) if i != index and h.is_image
                        and str(h.name).strip().upper() == "PSF"]
                if psfs:
                    try:
                        _check_hdu(hdul, psfs[0], max_pixels, size)
                        image.psf = np.squeeze(np.array(hdul[psfs[0]].data, dtype=np.float64))
                        image.psf_source = f"HDU {psfs[0]} PSF"
                    except (Reject, OSError, ValueError, TypeError) as exc:
                        psf_note = f"PSF HDU {psfs[0]} unreadable: {exc}"
                image.note = "; ".join(n for n in (note, psf_note) if n)
    for w in caught:
        if "truncat" in str(w.message).lower():
            raise Reject("truncated FITS file (data shorter than its header says)")
    return image


def _luminance(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _read_raster(path: Path, max_pixels: float) -> np.ndarray:
    from PIL import Image

    # Pillow's own decompression-bomb guard warns above ~89 Mpixel and refuses above
    # twice that; ingest.max_pixels is the one limit, checked from the header here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise Reject(f"Pillow refuses to open it: {exc}") from None
        with img:
            width, height = img.size
            check_pixels((height, width), max_pixels, f"{img.format} header")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L"):
                return np.asarray(img, dtype=np.float64)
            return _luminance(np.asarray(img.convert("RGB")))


def _read_npy(path: Path, max_pixels: float) -> np.ndarray:
    """An NPY image, its header (shape, dtype) checked before the data are read."""
    from numpy.lib import format as npy_format

    size = path.stat().st_size
    with path.open("rb") as fh:
        try:
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(fh)
            else:  # 3.0 only differs by UTF-8 field names of structured dtypes
                shape, _, dtype = npy_format._read_array_header(fh, version)
        except Exception as exc:  # a damaged header raises ValueError, SyntaxError, TokenError...
            raise Reject(f"unreadable NPY file: damaged header ({type(exc).__name__}: {exc})") from None
        offset = fh.tell()
    if dtype.kind == "c":
        raise Reject(f"NPY array is complex ({dtype}); ingest reads real images: save the real part "
                     "or the modulus, whichever is the image")
    if dtype.kind == "b":
        raise Reject("NPY array is boolean (a mask?), not an image")
    if dtype.kind not in "iuf":
        raise Reject(f"NPY array has non-numeric dtype {dtype}; expected a real image")
    spatial = tuple(n for n in shape if n != 1)
    if len(spatial) == 3 and spatial[-1] in (3, 4):
        spatial = spatial[:2]
    elif len(spatial) != 2:
        raise Reject(f"NPY array has shape {tuple(shape)}; expected a 2-D image")
    check_pixels(spatial, max_pixels, "NPY header")
    if offset + math.prod(shape) * dtype.itemsize > size:
        raise Reject("truncated NPY file (data shorter than its header says)")
    return np.squeeze(np.load(path, allow_pickle=False))
