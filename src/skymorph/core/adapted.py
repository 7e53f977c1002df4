"""A small encoder adapted to the survey's own stamps (``encode.encoder = "adapted"``).

The pretrained ImageNet encoders see a galaxy stamp resampled to 224-260 px and
need four passes (one per right-angle rotation) to be rotation-invariant.  This
module trains, once per survey and without labels, a small CNN *student* that
works at (close to) the stamps' native scale:

* **Architecture** (``AdaptedNet``, ~80 k parameters at the default ``adapted_width = 16``):
  six 3 x 3 convolution + batch-norm + ReLU layers (strides 2, 1, 2, 1, 2, 1) and
  a 1 x 1 convolution to ``8 * width`` channels, global-average-pooled, on a
  single-band ``adapted_size`` x ``adapted_size`` input (default 64: the 100-px
  stamp shrunk with the same antialiased resize as every encoder).
* **Invariance by construction**: the encoder's feature is the mean of the
  pooled features over the 8 transforms of the dihedral group D4 (4 right-angle
  rotations x optional flip), computed as one batch of 8 B images.  A right-angle
  rotation or a flip of the input only permutes the 8 terms, so the features are
  invariant to it up to floating-point rounding (``adapted_d4 = False`` switches
  this off, for the ablation).
* **Training objectives** (``train_teacher``, ``train_ssl``):

  - *distillation*: a linear head maps the student's pooled feature to the
    teacher's (an offline EfficientNet-Lite, ``efficientnet_lite2`` by default,
    one pass on a randomly chosen D4 transform of each stamp, standardised per
    dimension); the D4-averaged student therefore learns the orbit average of
    the teacher's features, i.e. what ``rotations = 4`` buys with 4 passes;
  - *self-supervision* (VICReg, Bardes et al. 2022): two augmented views of each
    stamp must give the same expanded embedding, with a variance and a
    covariance term against collapse.

  Both are computed on augmented stamps (astronomy augmentations, all on the
  ``adapted_size`` grid in torch): a rotation by any angle and a random flip,
  a zoom of 0.9-1.1, a sub-pixel shift of up to 1 px, a Gaussian blur of
  sigma 0-1 px (a PSF change) and added Gaussian noise of up to the stamp's own
  noise sigma (measured robustly on its border pixels).

Everything here is plain arrays and modules; the encode stage decides where the
checkpoint lives (``RUN_DIR/adapted/checkpoint.pt``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import EncodeConfig
from .encoders import EncoderError

__all__ = ["AdaptedNet", "D4Features", "ADAPTED", "train_adapted", "train_or_reuse", "save_checkpoint",
           "load_checkpoint", "build_adapted", "TEACHERS", "d4_views"]

log = logging.getLogger(__name__)

ADAPTED = "adapted"
FORMAT = "skymorph-adapted-1"
TEACHERS = ("efficientnet_lite0", "efficientnet_lite2", "none")
ARCH_KEYS = ("size", "width", "d4")


class AdaptedNet(nn.Module):
    """The student CNN: ``B x 1 x S x S`` in [-1, 1] -> ``B x 8*width`` pooled features."""

    def __init__(self, size: int = 64, width: int = 16, d4: bool = True) -> None:
        super().__init__()
        self.arch = {"size": int(size), "width": int(width), "d4": bool(d4)}
        w = int(width)
        plan = [(1, w // 2, 2), (w // 2, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1),
                (2 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
        layers: list[nn.Module] = []
        for cin, cout, stride in plan:
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(4 * w, 8 * w, 1, bias=False), nn.BatchNorm2d(8 * w), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.num_features = 8 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((2, 3))


def d4_views(x: torch.Tensor) -> torch.Tensor:
    """The 8 dihedral transforms of a ``B x C x S x S`` batch, stacked as ``8B x C x S x S``
    (transform-major: rows ``g * B + i``)."""
    turns = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    return torch.cat(turns + [t.flip(3) for t in turns])


class D4Features(nn.Module):
    """Encoder-facing wrapper: takes the encoder's ``B x 3 x S x S`` batch (one band
    replicated), returns the D4-averaged pooled features of the student."""

    def __init__(self, net: AdaptedNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :1].contiguous()
        if not self.net.arch["d4"]:
            return self.net(x)
        b = x.shape[0]
        return self.net(d4_views(x)).view(8, b, -1).mean(0)


# --- augmentations --------------------------------------------------------------------------


def _noise_sigma(x: torch.Tensor) -> torch.Tensor:
    """Robust noise sigma of each ``B x 1 x S x S`` image from its 4-px border (1.4826 MAD)."""
    b = x.shape[0]
    border = torch.cat([x[:, 0, :4].reshape(b, -1), x[:, 0, -4:].reshape(b, -1),
                        x[:, 0, 4:-4, :4].reshape(b, -1), x[:, 0, 4:-4, -4:].reshape(b, -1)], 1)
    med = border.median(1, keepdim=True).values
    return 1.4826 * (border - med).abs().median(1).values


def augment(x: torch.Tensor, gen: torch.Generator, sigma: torch.Tensor) -> torch.Tensor:
    """One random astronomy view of each ``B x 1 x S x S`` image in [0, 1]; returns it
    normalised to [-1, 1] like the encoder's input.  ``sigma``: each image's noise sigma."""
    b, _, s, _ = x.shape
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen, device="cpu").to(dev)

    # PSF-like blur, sigma 0..1 px, separable, per image (grouped convolution)
    blur = u(0.0, 1.0)
    r = torch.arange(-2, 3, device=dev, dtype=x.dtype)
    k = torch.exp(-0.5 * (r[None] / blur.clamp_min(1e-3)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)
    xp = F.pad(x.transpose(0, 1), (2, 2, 2, 2), mode="replicate")  # 1 x B x S+4 x S+4
    xp = F.conv2d(xp, k[:, None, None, :], groups=b)
    x = F.conv2d(xp, k[:, None, :, None], groups=b).transpose(0, 1)
    # rotation by any angle, flip, zoom 0.9-1.1, shift up to 1 px: one bilinear resampling
    angle = u(0.0, 2 * math.pi)
    zoom = u(0.9, 1.1)
    flip = torch.where(torch.rand(b, generator=gen).to(dev) < 0.5, -1.0, 1.0)
    shift = (torch.rand(b, 2, generator=gen).to(dev) * 2 - 1) * (2.0 / s)  # 1 px in [-1, 1] units
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # extra noise of up to the stamp's own sigma (a fainter version of the same galaxy)
    x = x + torch.randn(x.shape, generator=gen).to(dev) * (u(0.0, 1.0) * sigma)[:, None, None, None]
    return x * 2.0 - 1.0


def _vicreg(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """VICReg loss (invariance 25, variance 25, covariance 1; Bardes et al. 2022)."""
    inv = F.mse_loss(z1, z2)
    loss = 25.0 * inv
    for z in (z1, z2):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + 1e-4)
        loss = loss + 25.0 * F.relu(1.0 - std).mean() / 2
        cov = (z.T @ z) / max(1, z.shape[0] - 1)
        off = cov - torch.diag(torch.diag(cov))
        loss = loss + off.pow(2).sum() / z.shape[1] / 2
    return loss


# --- training -------------------------------------------------------------------------------


def _take(images: Any, rows: np.ndarray) -> np.ndarray:
    """Rows (sorted) of a numpy or zarr array, as float32."""
    if hasattr(images, "oindex"):
        return np.asarray(images.oindex[rows], dtype=np.float32)
    return np.asarray(images[rows], dtype=np.float32)


def _prepared(images: Any, rows: np.ndarray, cfg: EncodeConfig, device: torch.device,
              batch: int = 256) -> torch.Tensor:
    """The training stamps as the encoder will see them: ``n x 1 x S x S`` in [0, 1]
    (per-image percentile scaling and the antialiased resize of :class:`Encoder`)."""
    from .encoders import Encoder

    size = int(cfg.adapted_size)
    scaler = Encoder(name="scale", model=nn.Identity(), dim=1, input_size=(size, size),
                     mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear", weights_source="-",
                     device=device, scaling=cfg.scaling,
                     percentiles=(float(cfg.percentiles[0]), float(cfg.percentiles[1])), aspect=cfg.aspect)
    out = torch.empty((rows.size, 1, size, size), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for start in range(0, rows.size, batch):
            block = _take(images, rows[start:start + batch])
            x, _ = scaler.prepare(torch.from_numpy(block))
            out[start:start + len(block)] = x[:, :1].float()
    return out


def _teacher_targets(images: Any, rows: np.ndarray, cfg: EncodeConfig, device: torch.device,
                     seed: int, progress: Callable[[int], object] | None) -> torch.Tensor:
    """Teacher features (one pass) of a seeded random D4 transform of each training stamp."""
    from .encoders import build_encoder

    teacher = build_encoder(replace(cfg, encoder=cfg.train_teacher, weights=None, random_init=False,
                                    rotations=1))
    rng = np.random.default_rng(seed + 7)
    out = np.empty((rows.size, teacher.dim), dtype=np.float32)
    batch = 32
    for start in range(0, rows.size, batch):
        idx = rows[start:start + batch]
        block = _take(images, idx)
        g = rng.integers(0, 8, idx.size)
        block = np.stack([np.rot90(im, gi % 4) if gi < 4 else np.rot90(im, gi % 4)[:, ::-1]
                          for im, gi in zip(block, g, strict=True)])
        feats, _ = teacher.features(np.ascontiguousarray(block))
        out[start:start + idx.size] = feats.cpu().numpy()
        if progress is not None:
            progress(idx.size)
    return torch.from_numpy(out)


def train_adapted(images: Any, cfg: EncodeConfig, device: torch.device | None = None,
                  progress: bool = False, targets: np.ndarray | None = None
                  ) -> tuple[AdaptedNet, dict[str, Any]]:
    """Train the adapted encoder on a seeded sample of ``images`` (``N x H x W``, any
    array that supports fancy row indexing, e.g. a zarr array).

    Parameters
    ----------
    images : array-like
        The survey's stamps.
    cfg : EncodeConfig
        ``adapted_size``, ``adapted_width``, ``adapted_d4`` and the ``train_*`` settings
        (plus ``scaling``/``percentiles``/``aspect`` of the preprocessing).
    device : torch.device, optional
        Default: the GPU when there is one.
    progress : bool
    targets : ndarray, optional
        ``N x D`` teacher features of every image (e.g. the default encoder's 4-rotation
        features of the same run) to distil instead of running ``train_teacher``.

    Returns
    -------
    model : AdaptedNet
        In eval mode, on ``device``.
    info : dict
        ``loss`` (mean loss per tenth of the steps), ``n_train``, ``teacher_seconds``,
        ``train_seconds``, ``steps``.
    """
    from tqdm.auto import tqdm

    from .encoders import resolve_device

    device = device or resolve_device(cfg.device)
    if cfg.train_teacher not in TEACHERS:
        raise EncoderError(f"encode.train_teacher must be one of {', '.join(TEACHERS)}, "
                         f"got {cfg.train_teacher!r}")
    if cfg.train_teacher == "none" and float(cfg.train_ssl) <= 0 and targets is None:
        raise EncoderError("the adapted encoder needs an objective: a train_teacher or train_ssl > 0")
    seed = int(cfg.train_seed)
    n = int(images.shape[0])
    rows = np.sort(np.random.default_rng(seed).permutation(n)[: min(n, int(cfg.train_sample))])
    t0 = time.perf_counter()
    x = _prepared(images, rows, cfg, device)
    sigma = _noise_sigma(x)
    teacher_seconds = 0.0
    given = targets is not None
    if given:
        targets = torch.as_tensor(np.asarray(targets, dtype=np.float32)[rows], device=device)
    elif cfg.train_teacher != "none":
        with tqdm(total=rows.size, desc="adapted: teacher", unit="img", disable=not progress) as bar:
            targets = _teacher_targets(images, rows, cfg, device, seed, bar.update).to(device)
        teacher_seconds = time.perf_counter() - t0
    if targets is not None:
        mu, sd = targets.mean(0), targets.std(0).clamp_min(1e-6)
        targets = (targets - mu) / sd

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = AdaptedNet(cfg.adapted_size, cfg.adapted_width, cfg.adapted_d4).to(device)
        dim = net.num_features
        head = nn.Linear(dim, targets.shape[1]).to(device) if targets is not None else None
        expander = (nn.Sequential(nn.Linear(dim, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 512))
                    .to(device) if float(cfg.train_ssl) > 0 else None)
    params = [p for m in (net, head, expander) if m is not None for p in m.parameters()]
    steps = int(cfg.train_steps)
    opt = torch.optim.AdamW(params, lr=float(cfg.train_lr), weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(cfg.train_lr), total_steps=steps,
                                                pct_start=0.1)
    gen = torch.Generator().manual_seed(seed + 1)
    bsz = min(int(cfg.train_batch), rows.size)
    losses: list[float] = []
    t1 = time.perf_counter()
    net.train()
    for _ in tqdm(range(steps), desc="adapted: train", unit="step", disable=not progress):
        idx = torch.randperm(rows.size, generator=gen)[:bsz].to(device)
        xb, sb = x[idx], sigma[idx]
        v1 = augment(xb, gen, sb)
        f1 = net(v1)
        loss = torch.zeros((), device=device)
        if head is not None:
            loss = loss + F.mse_loss(head(f1), targets[idx])
        if expander is not None:
            f2 = net(augment(xb, gen, sb))
            loss = loss + float(cfg.train_ssl) * _vicreg(expander(f1), expander(f2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    net.eval()
    tenth = max(1, steps // 10)
    curve = [float(np.mean(losses[i:i + tenth])) for i in range(0, steps, tenth)]
    info = {"loss": curve, "loss_steps": [round(v, 6) for v in losses],
            "convergence": convergence(losses), "n_train": int(rows.size),
            "teacher": "given" if given else cfg.train_teacher,
            "teacher_seconds": round(teacher_seconds, 2), "train_seconds": round(time.perf_counter() - t1, 2),
            "steps": steps, "device": str(device)}
    log.info("adapted: trained on %d stamps (%d steps, loss %.3f -> %.3f) in %.0f s + teacher %.0f s",
             rows.size, steps, curve[0], curve[-1], info["train_seconds"], teacher_seconds)
    return net, info


def convergence(losses: Sequence[float], *, tail: float = 0.3, tolerance: float = 0.02) -> dict[str, Any]:
    """Whether a training loss had levelled off by the end.

    The per-step losses are averaged over tenths of the run (they are noisy batch by
    batch); the change over the last ``tail`` of the steps is compared with the final
    loss.

    Parameters
    ----------
    losses : sequence of float
        The loss of every optimiser step, in order.
    tail : float
        Share of the steps, at the end, whose change is judged.
    tolerance : float
        Relative change over the tail below which the loss counts as level.

    Returns
    -------
    dict
        ``status`` (``"converged"``, ``"still falling"``, ``"rising"`` or ``"too short"``),
        ``tail_change`` (relative change of the loss over the tail; negative: falling),
        ``first`` and ``last`` (mean loss of the first and last tenth) and ``text``, one
        sentence for the stage summary.
    """
    values = np.asarray(list(losses), dtype=np.float64)
    if values.size < 10 or not np.isfinite(values).all():
        return {"status": "too short", "tail_change": float("nan"), "first": float("nan"),
                "last": float("nan"), "text": f"{values.size} steps with finite loss: too few to judge"}
    tenths = np.array([chunk.mean() for chunk in np.array_split(values, 10)])
    back = max(1, int(round(tail * 10)))
    before, last = tenths[-1 - back], tenths[-1]
    change = float((last - before) / max(abs(last), 1e-12))
    pct = f"{abs(change):.1%}"
    share = f"{back * 10}%"
    if change > tolerance:
        status, text = "rising", (f"the loss rose by {pct} over the last {share} of the steps: lower "
                                  "encode.train_lr")
    elif change < -tolerance:
        status, text = "still falling", (f"the loss still fell by {pct} over the last {share} of the steps: "
                                         "more encode.train_steps may help")
    else:
        status, text = "converged", f"converged: the loss changed by {pct} over the last {share} of the steps"
    return {"status": status, "tail_change": change, "first": float(tenths[0]), "last": float(last),
            "text": text}


def train_or_reuse(images: Any, cfg: EncodeConfig, *, checkpoint: str | Path, key: str,
                   progress: bool = False) -> dict[str, Any]:
    """Train the adapted encoder on ``images`` and save it to ``checkpoint``, unless the
    checkpoint there was saved under the same ``key`` (same settings and images, e.g. a
    resumed run): then it is reused, since training takes minutes.

    Parameters
    ----------
    images : array-like
        The survey's stamps, ``N x H x W`` (see :func:`train_adapted`).
    cfg : EncodeConfig
        The ``[encode]`` settings of :func:`train_adapted`.
    checkpoint : str or Path
        Where the checkpoint is read and written (:func:`save_checkpoint`).
    key : str
        What must match for a reuse (e.g. the encode stage's fingerprint).
    progress : bool
        Show a progress bar while training.

    Returns
    -------
    dict
        The training info of :func:`train_adapted` (the saved one when reused, then with
        ``reused: True``, and its ``convergence`` note made here when the checkpoint is
        older than the note) and ``checkpoint`` (its path as text).

    See Also
    --------
    train_adapted : the training itself.
    load_checkpoint : reads the file.

    Examples
    --------
    Training runs a teacher network, too slow for a doctest:

    >>> import numpy as np, pathlib, tempfile
    >>> from skymorph.config import EncodeConfig
    >>> images = np.random.default_rng(0).normal(size=(64, 64, 64)).astype(np.float32)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt"
    >>> cfg = EncodeConfig(encoder="adapted", train_steps=5)
    >>> first = train_or_reuse(images, cfg, checkpoint=path, key="k")  # doctest: +SKIP
    >>> train_or_reuse(images, cfg, checkpoint=path, key="k")["reused"]  # doctest: +SKIP
    True
    """
    checkpoint = Path(checkpoint)
    try:
        _, blob = load_checkpoint(checkpoint)
        if blob.get("key") == key:
            info = {**blob["info"], "checkpoint": str(checkpoint), "reused": True}
            if "convergence" not in info:  # a checkpoint from before the note
                info["convergence"] = convergence(info.get("loss_steps") or info.get("loss") or [])
            return info
    except (FileNotFoundError, ValueError):  # none yet, or unreadable: train a new one
        pass
    net, info = train_adapted(images, cfg, progress=progress)
    save_checkpoint(checkpoint, net, info, key)
    return {**info, "checkpoint": str(checkpoint)}


def save_checkpoint(path: str | Path, net: AdaptedNet, info: dict[str, Any], key: str = "") -> None:
    """Write the weights with their architecture (a plain dict: loads with ``weights_only``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, "arch": dict(net.arch), "state_dict": state, "info": info, "key": key}, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> tuple[AdaptedNet, dict[str, Any]]:
    """Rebuild an :class:`AdaptedNet` (eval mode, CPU) from :func:`save_checkpoint`'s file."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"adapted-encoder checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises many types for a corrupt/foreign file
        raise EncoderError(f"{path} is not a readable adapted-encoder checkpoint ({exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise EncoderError(f"{path} is not an adapted-encoder checkpoint (written by `skymorph encode "
                         "--encoder adapted` as RUN_DIR/adapted/checkpoint.pt)")
    net = AdaptedNet(**{k: blob["arch"][k] for k in ARCH_KEYS})
    net.load_state_dict(blob["state_dict"])
    return net.eval(), blob


def build_adapted(checkpoint: Path) -> tuple[nn.Module, dict, str]:
    """Encoder builder (see :mod:`skymorph.core.encoders`): the D4-averaged student of a checkpoint."""
    net, _ = load_checkpoint(checkpoint)
    size = net.arch["size"]
    data = {"input_size": (size, size), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear"}
    return D4Features(net), data, str(checkpoint)
