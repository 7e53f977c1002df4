"""Settings sections of the stages after clustering: inspect, measure, extend, validate,
compute (execution), similar, anomaly, subdivide."""

from __future__ import annotations

from dataclasses import dataclass

from ._fields import Section, setting


@dataclass
class InspectConfig(Section):
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
class MeasureConfig(Section):
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
class ExtendConfig(Section):
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
class ValidateConfig(Section):
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
class ComputeConfig(Section):
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
class SimilarConfig(Section):
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
class AnomalyConfig(Section):
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
class SubdivideConfig(Section):
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
