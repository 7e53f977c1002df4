"""The convolutional autoencoder (CAE) of the denoise stage: the PyTorch module,
its training loop and batched inference.

This module imports PyTorch at import time; :mod:`skymorph.stages.denoise` imports it
only inside the functions that need it, so ``import skymorph`` stays light.

Architecture (paper Table 1, channel counts configurable)::

    input 1 x S x S
    for each level c in channels:   conv k x k (c channels, 'same') -> max-pool 2x2/2 -> ReLU
    flatten -> fully connected -> latent (40)
    fully connected -> ReLU -> reshape to the last level's maps
    for each level in reverse:      unpool x2 -> deconvolution k x k -> ReLU (none on the output)

* Max-pool before ReLU gives exactly ReLU-then-pool (ReLU is monotonic) on a
  quarter of the pixels.
* The deconvolutions have stride 1, where a transposed convolution is a
  convolution with a flipped kernel; they are stored as ``Conv2d`` because
  PyTorch's CPU kernels for that are faster.  The function family is the same.
* Unpooling is ``nearest`` (each value copied to its 2x2 block) by default, or
  ``switches`` (values put back where the encoder's maxima were, Zeiler &
  Fergus / Masci et al. 2011).  Switches carry pixel positions of the noisy
  input past the bottleneck, so ``nearest`` denoises better.
* Channels-last memory layout and small inference batches keep the feature maps
  in cache; on a 2-core CPU this is worth 2-3x.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SkymorphError
from .sky import border_sky

__all__ = ["CAE", "CAEError", "train_cae", "fit_cae", "sample_rows", "check_stamp_size", "predict",
           "apply_cae", "resolve_device", "set_threads", "ARCH_KEYS"]

ARCH_KEYS = ("stamp_size", "channels", "kernel_size", "latent_dim", "unpool")


class CAEError(SkymorphError, ValueError):
    """The CAE cannot be built, trained or loaded (settings, device, checkpoint, stamp shape)."""



def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CAEError(f"denoise.device={name!r} is not a device PyTorch knows ({exc}); "
                         "use 'auto', 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CAEError("denoise.device='cuda' but PyTorch sees no CUDA GPU; use 'auto' or 'cpu'")
    return device


def set_threads() -> None:
    """Use every CPU core for intra-op parallelism (PyTorch may default to fewer)."""
    import os

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, n or 1))


class CAE(nn.Module):
    """Convolutional autoencoder of paper Table 1.

    Parameters
    ----------
    stamp_size : int
        Side of the (square) input; padded internally to a multiple of
        ``2 ** len(channels)`` and cropped back on output.
    channels : list of int
        Feature maps of each conv + pool level (paper: 16, 8).
    kernel_size : int
        Odd convolution kernel size (paper: 5).
    latent_dim : int
        Width of the fully connected bottleneck (paper: 40).
    unpool : str
        ``nearest`` or ``switches`` (see the module docstring).
    """

    def __init__(self, stamp_size: int, channels: list[int], kernel_size: int = 5,
                 latent_dim: int = 40, unpool: str = "nearest") -> None:
        super().__init__()
        if kernel_size % 2 != 1 or kernel_size < 1:
            raise CAEError(f"denoise.kernel_size must be odd and positive, got {kernel_size}")
        if not channels or any(int(c) < 1 for c in channels):
            raise CAEError(f"denoise.channels must be a non-empty list of positive ints, got {channels}")
        if unpool not in ("nearest", "switches"):
            raise CAEError(f"denoise.unpool must be 'nearest' or 'switches', got {unpool!r}")
        if latent_dim < 1:
            raise CAEError(f"denoise.latent_dim must be positive, got {latent_dim}")
        self.arch = {"stamp_size": int(stamp_size), "channels": [int(c) for c in channels],
                     "kernel_size": int(kernel_size), "latent_dim": int(latent_dim), "unpool": unpool}
        levels = len(channels)
        factor = 2 ** levels
        self.padded = math.ceil(stamp_size / factor) * factor
        self.bottom = self.padded // factor
        pad = kernel_size // 2
        widths = [1, *self.arch["channels"]]
        self.enc = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], kernel_size, padding=pad) for i in range(levels))
        flat = widths[-1] * self.bottom ** 2
        self.to_latent = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        self.dec = nn.ModuleList(
            nn.Conv2d(widths[i + 1], widths[i], kernel_size, padding=pad) for i in reversed(range(levels)))

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        extra = self.padded - x.shape[-1]
        if extra:
            # Zero is the background in the normalised units the model sees.
            x = F.pad(x, (0, extra, 0, extra))
        return x, extra

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Latent vectors (B, latent_dim) of normalised stamps (B, 1, S, S), and
        the pooling switches."""
        h, _ = self._pad(x)
        switches = []
        keep = self.arch["unpool"] == "switches"
        for conv in self.enc:
            if keep:
                h, idx = F.max_pool2d(conv(h), 2, return_indices=True)
                switches.append(idx)
            else:
                h = F.max_pool2d(conv(h), 2)
            h = F.relu(h)
        return self.to_latent(h.flatten(1)), switches

    def decode(self, z: torch.Tensor, switches: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Normalised stamps (B, 1, S, S) from latent vectors."""
        c = self.arch["channels"][-1]
        h = F.relu(self.from_latent(z)).view(-1, c, self.bottom, self.bottom)
        if self.arch["unpool"] == "nearest":
            h = h.contiguous(memory_format=torch.channels_last)
        for i, conv in enumerate(self.dec):
            if self.arch["unpool"] == "switches":
                if switches is None:
                    raise ValueError("unpool='switches' needs the encoder's switches")
                h = F.max_unpool2d(h, switches[-1 - i], 2)
            else:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = conv(h)
            if i < len(self.dec) - 1:
                h = F.relu(h)
        size = self.arch["stamp_size"]
        return h[..., :size, :size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, switches = self.encode(x)
        return self.decode(z, switches)


# --- normalisation --------------------------------------------------------------------


def normalise(stamps: np.ndarray, border: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-stamp affine normalisation, ``y = (x - offset) / scale``.

    ``offset`` is the median of the stamp's border frame (``border`` pixels wide,
    default ``max(2, S // 20)``): the local sky level.  ``scale`` is the peak of
    the 3 x 3 box-smoothed, offset-subtracted stamp (so a single hot pixel does
    not set it), floored at 3 x the border's robust noise sigma (1.4826 MAD) so
    that blank stamps are not blown up; a stamp with neither (constant) gets
    scale 1.  A galaxy therefore peaks near 1 on a sky near 0, whatever its
    flux.  Non-finite pixels are set to the offset.

    Returns
    -------
    normalised : ndarray (B, S, S) float32
    offset, scale : ndarray (B,) float64
        Invert with ``x = y * scale[:, None, None] + offset[:, None, None]``.
    """
    x = np.asarray(stamps, dtype=np.float32)
    if x.ndim != 3:
        raise CAEError(f"expected stamps of shape (N, S, S), got {x.shape}")
    offset, scale, x = normalisation(x)
    y = x - offset[:, None, None].astype(np.float32)
    y /= scale[:, None, None].astype(np.float32)
    return y, offset, scale


def normalisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``offset`` and ``scale`` of :func:`normalise`, and the stamps with any
    non-finite pixel replaced by its stamp's offset (the input itself when all
    are finite, so the common case costs no copy)."""
    offset, sigma = border_sky(x)
    if not np.isfinite(x).all():
        x = np.where(np.isfinite(x), x, offset[:, None, None].astype(np.float32))
    with torch.inference_mode():
        # Peak of the 3x3 box mean (valid region), multi-threaded in one pass.
        t = torch.from_numpy(np.ascontiguousarray(x))[:, None]
        box = F.avg_pool2d(t, 3, stride=1) if min(x.shape[1:]) >= 3 else t
        peak = box.amax(dim=(1, 2, 3)).double().numpy()
    scale = np.maximum(peak - offset, 3.0 * sigma)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return offset, scale, x


def denormalise(y: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Invert :func:`normalise`."""
    return (y * scale[:, None, None] + offset[:, None, None]).astype(np.float32)


# --- training and inference -----------------------------------------------------------


def _batches(n: int, size: int, rng: np.random.Generator | None = None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, size):
        yield order[start:start + size]


def _to_device(block: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).unsqueeze(1)
    return t.to(device).contiguous(memory_format=torch.channels_last)


def train_cae(train: np.ndarray, val: np.ndarray, arch: dict[str, Any], *, epochs: int,
              batch_size: int, learning_rate: float, patience: int, device: torch.device,
              seed: int, augment: bool = True, repeats: int = 1,
              progress: Callable[[int, float, float], None] | None = None,
              ) -> tuple[CAE, dict[str, Any]]:
    """Train a :class:`CAE` on normalised stamps with early stopping.

    Parameters
    ----------
    train, val : ndarray (N, S, S)
        Normalised stamps (float16 or float32); ``val`` may be empty, in which
        case the training loss drives early stopping.
    arch : dict
        Keyword arguments of :class:`CAE`.
    epochs, batch_size, learning_rate, patience, seed
        Adam on the mean squared error; training stops when the validation loss
        has not improved for ``patience`` epochs, and the best weights are kept.
    augment : bool
        Apply a random right-angle rotation / flip to each training batch.
    repeats : int
        Passes over ``train`` per epoch (so that tiny runs still take enough
        optimiser steps between two early-stopping checks).
    progress : callable, optional
        Called as ``progress(epoch, train_loss, val_loss)`` after each epoch.

    Returns
    -------
    model : CAE
        The best model (evaluation mode).
    history : dict
        ``train_loss``, ``val_loss`` per epoch, ``best_epoch``, ``stopped_early``,
        ``seconds`` and ``train_stamps_per_s`` (median over epochs).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = CAE(**arch).to(device).to(memory_format=torch.channels_last)
    # fused=True runs the whole Adam update in one kernel: on small models the
    # per-parameter op overhead is otherwise a large share of a step.
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate, fused=True)
    history: dict[str, Any] = {"train_loss": [], "val_loss": [], "epoch_seconds": []}
    best = math.inf
    best_state = copy.deepcopy(model.state_dict())
    best_epoch = 0
    waited = 0
    t_start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        total = 0.0
        for idx in (i for _ in range(max(1, repeats)) for i in _batches(len(train), batch_size, rng)):
            x = _to_device(train[np.sort(idx)], device)
            if augment:
                # A galaxy's orientation on the sky is arbitrary: the 8 right-angle
                # rotations/flips are free extra training data for small runs.
                k = int(rng.integers(8))
                x = torch.rot90(x, k % 4, dims=(2, 3))
                if k >= 4:
                    x = torch.flip(x, dims=(3,))
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x), x)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history["epoch_seconds"].append(time.perf_counter() - t0)
        train_loss = total / max(len(train) * max(1, repeats), 1)
        val_loss = evaluate(model, val, batch_size, device) if len(val) else train_loss
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        if progress is not None:
            progress(epoch, train_loss, val_loss)
        if val_loss < best * (1 - 1e-4):
            best, best_epoch, waited = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    secs = history["epoch_seconds"]
    history.update(best_epoch=best_epoch, best_val_loss=best, epochs_run=len(secs),
                   stopped_early=len(secs) < epochs, seconds=time.perf_counter() - t_start,
                   train_stamps_per_s=float(len(train) * max(1, repeats) / np.median(secs)) if secs else 0.0)
    return model, history


def sample_rows(total: int, *, n: int, rng: np.random.Generator) -> np.ndarray:
    """The sorted rows of a random training sample of ``n`` of ``total`` stamps (all of them
    when ``n >= total``, drawing nothing from ``rng``).

    Parameters
    ----------
    total : int
        Stamps of the run.
    n : int
        Stamps to train on (``denoise.train_sample``).
    rng : numpy.random.Generator
        Seeded by ``denoise.seed``; :func:`fit_cae` draws the split from it next.

    Returns
    -------
    ndarray of int
        Increasing row numbers (so that the sample is read chunk by chunk).

    See Also
    --------
    fit_cae : trains on the sample.

    Examples
    --------
    >>> import numpy as np
    >>> sample_rows(5, n=10, rng=np.random.default_rng(0))
    array([0, 1, 2, 3, 4])
    >>> len(sample_rows(100, n=10, rng=np.random.default_rng(0)))
    10
    """
    if n < total:
        return np.sort(rng.choice(total, size=n, replace=False))
    return np.arange(total)


def fit_cae(sample: np.ndarray, *, channels: list[int], kernel_size: int, latent_dim: int, unpool: str,
            epochs: int, batch_size: int, min_steps: int, learning_rate: float, augment: bool,
            validation_fraction: float, patience: int, seed: int, device: torch.device,
            rng: np.random.Generator,
            progress: Callable[[int, float, float], None] | None = None) -> tuple[CAE, dict[str, Any]]:
    """Split a normalised sample into training and held-out stamps and train a :class:`CAE` on it.

    ``validation_fraction`` of the sample (at least one stamp when the fraction is positive,
    never all of them) is held out for early stopping.  A small training part is passed over
    several times per epoch, so that every epoch takes at least ``min_steps / epochs``
    optimiser steps between two early-stopping checks.

    Parameters
    ----------
    sample : ndarray (N, S, S)
        Stamps normalised by :func:`normalise` (float16 or float32).
    channels, kernel_size, latent_dim, unpool
        The architecture (:class:`CAE`).
    epochs, batch_size, learning_rate, augment, patience, seed
        The training (:func:`train_cae`).
    min_steps : int
        Fewest optimiser steps of the whole training.
    validation_fraction : float
        Share of the sample held out.
    device : torch.device
        Where to train (:func:`resolve_device`).
    rng : numpy.random.Generator
        Draws the split (the generator that drew the sample, :func:`sample_rows`).
    progress : callable, optional
        Called as ``progress(epoch, train_loss, val_loss)`` after each epoch.

    Returns
    -------
    model : CAE
        The best model (evaluation mode).
    history : dict
        :func:`train_cae`'s history, plus ``n_train``, ``n_val``, ``repeats``,
        ``has_validation`` and ``device``.

    See Also
    --------
    sample_rows : the sample's rows.
    train_cae : the training loop.

    Examples
    --------
    >>> import numpy as np, torch
    >>> rng = np.random.default_rng(0)
    >>> sample, _, _ = normalise(rng.normal(size=(12, 32, 32)).astype(np.float32))
    >>> model, history = fit_cae(sample, channels=[4, 4], kernel_size=3, latent_dim=8,
    ...                          unpool="nearest", epochs=2, batch_size=4, min_steps=1,
    ...                          learning_rate=1e-3, augment=False, validation_fraction=0.25,
    ...                          patience=5, seed=0, device=torch.device("cpu"), rng=rng)
    >>> history["n_train"], history["n_val"], history["epochs_run"]
    (9, 3, 2)
    """
    order = rng.permutation(len(sample))
    n_val = int(round(validation_fraction * len(sample))) if len(sample) >= 2 else 0
    if validation_fraction > 0 and len(sample) >= 2:
        n_val = min(max(n_val, 1), len(sample) - 1)
    val, train = sample[np.sort(order[:n_val])], sample[np.sort(order[n_val:])]
    steps_per_pass = math.ceil(len(train) / batch_size)
    repeats = max(1, math.ceil(min_steps / (epochs * steps_per_pass)))
    arch = {"stamp_size": int(sample.shape[-1]), "channels": channels, "kernel_size": kernel_size,
            "latent_dim": latent_dim, "unpool": unpool}
    model, history = train_cae(
        train, val, arch, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        patience=patience, device=device, seed=seed, augment=augment, repeats=repeats, progress=progress)
    history.update(n_train=len(train), n_val=len(val), repeats=repeats, has_validation=len(val) > 0,
                   device=str(device))
    return model, history


def check_stamp_size(model: CAE, size: int, *, source: object) -> None:
    """Raise :class:`CAEError` when ``model`` was trained on stamps of another size than ``size``
    (a CAE reused from another run must fit this run's stamps).

    Parameters
    ----------
    model : CAE
        A loaded model (:func:`load_checkpoint`).
    size : int
        The run's stamp size in pixels.
    source : path or str
        Where the model came from, named in the message.

    Returns
    -------
    None

    See Also
    --------
    load_checkpoint : loads the model.

    Examples
    --------
    >>> check_stamp_size(CAE(stamp_size=32, channels=[4, 8]), 32, source="cae.pt")
    >>> check_stamp_size(CAE(stamp_size=32, channels=[4, 8]), 64, source="cae.pt")
    Traceback (most recent call last):
    ...
    skymorph.core.cae.CAEError: the CAE in cae.pt was trained on 32-pixel stamps; this run has 64-...
    """
    if model.arch["stamp_size"] != size:
        raise CAEError(f"the CAE in {source} was trained on {model.arch['stamp_size']}-pixel "
                       f"stamps; this run has {size}-pixel stamps (train a new one: drop "
                       "--cae-checkpoint)")


@torch.inference_mode()
def evaluate(model: CAE, stamps: np.ndarray, batch_size: int, device: torch.device) -> float:
    """Mean squared reconstruction error over normalised stamps."""
    model.eval()
    total = 0.0
    for idx in _batches(len(stamps), batch_size):
        x = _to_device(stamps[idx], device)
        total += float(F.mse_loss(model(x), x, reduction="sum"))
    return total / max(stamps.size, 1)


@torch.inference_mode()
def predict(model: CAE, normalised: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Reconstruct every normalised stamp (all of them, the last partial batch
    included), in normalised units."""
    model.eval()
    out = np.empty(normalised.shape, dtype=np.float32)
    for start in range(0, len(normalised), batch_size):
        x = _to_device(normalised[start:start + batch_size], device)
        out[start:start + batch_size] = model(x)[:, 0].float().cpu().numpy()
    return out


@torch.inference_mode()
def denoise_block(model: CAE, stamps: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Normalise, reconstruct and de-normalise every stamp, one small batch at
    a time (the arithmetic happens on cache-sized tensors, not on whole arrays)."""
    model.eval()
    offset, scale, x = normalisation(np.asarray(stamps, dtype=np.float32))
    off = torch.from_numpy(offset.astype(np.float32))[:, None, None, None]
    sc = torch.from_numpy(scale.astype(np.float32))[:, None, None, None]
    out = np.empty(x.shape, dtype=np.float32)
    src = torch.from_numpy(np.ascontiguousarray(x))
    for start in range(0, len(x), batch_size):
        end = start + batch_size
        o, s_ = off[start:end].to(device), sc[start:end].to(device)
        t = ((src[start:end, None].to(device) - o) / s_).contiguous(memory_format=torch.channels_last)
        out[start:end] = (model(t) * s_ + o)[:, 0].float().cpu().numpy()
    return out


def save_checkpoint(path, model: CAE, history: dict[str, Any], extra: dict[str, Any]) -> None:
    """Write the weights with the architecture needed to rebuild them."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": "skymorph-cae-1", "arch": dict(model.arch), "state_dict": state,
                "history": {k: v for k, v in history.items() if k in ("train_loss", "val_loss")},
                **extra}, path)


def load_checkpoint(path, device: torch.device) -> tuple[CAE, dict[str, Any]]:
    """Rebuild a :class:`CAE` from :func:`save_checkpoint`'s file."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"CAE checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises many types for a corrupt/foreign file
        raise CAEError(f"{path} is not a readable skymorph CAE checkpoint ({exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != "skymorph-cae-1" or "arch" not in blob:
        raise CAEError(f"{path} is not a skymorph CAE checkpoint (written by `skymorph denoise` "
                         "as RUN_DIR/cae/checkpoint.pt)")
    model = CAE(**blob["arch"])
    model.load_state_dict(blob["state_dict"])
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    return model, blob


def apply_cae(stamps: np.ndarray, model: CAE, *, batch_size: int = 32) -> np.ndarray:
    """Denoise a block of stamps with a trained CAE (the per-chunk map of ``skymorph denoise``).

    Parameters
    ----------
    stamps : ndarray (N, S, S)
        Stamps in their own units; S must be the model's stamp size.
    model : CAE
        A trained model (:func:`load_checkpoint`, or trained by ``skymorph denoise``).
    batch_size : int
        Stamps per forward pass.

    Returns
    -------
    ndarray (N, S, S) float32
        Denoised stamps in the input's units (normalisation inverted).

    Raises
    ------
    CAEError
        The stamps are not a stack of the model's stamp size.

    See Also
    --------
    denoise_block : the same on a given device, without the shape check.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skymorph.core.cae import CAE, apply_cae
    >>> _ = torch.manual_seed(0)
    >>> model = CAE(stamp_size=32, channels=[4, 8])
    >>> apply_cae(np.random.default_rng(0).normal(size=(3, 32, 32)).astype(np.float32), model).shape
    (3, 32, 32)
    """
    stamps = np.asarray(stamps)
    if stamps.ndim != 3 or stamps.shape[-1] != model.arch["stamp_size"]:
        raise CAEError(f"the CAE was trained on {model.arch['stamp_size']}-pixel stamps; "
                       f"got an array of shape {stamps.shape}")
    device = next(model.parameters()).device
    return denoise_block(model, stamps, batch_size, device)
