"""Extend the experts' types to every galaxy: the USmorph framework's supervised step.

The consensus vote keeps 50-80% of the galaxies and the experts name only those.
The kept, expert-typed galaxies are a training set: a calibrated classifier trained
on their features gives every galaxy per-type probabilities and a type (Song et al.
2024; Dai et al. 2023).  This module works on plain arrays; the stage
(:mod:`skymorph.stages.extend`) reads and writes the run directory.

What :func:`extend_labels` does
-------------------------------

1. Standardise the input (mean and standard deviation of the training galaxies).
2. ``cv_folds``-fold stratified cross-validation on the training galaxies (scikit-learn's
   ``StratifiedKFold``, seeded):
   out-of-fold probabilities give the cross-validated accuracy, balanced accuracy,
   confusion matrix (rows: the experts' type, columns: predicted), the reliability
   diagram (10 equal-width bins of the top probability) and the expected calibration
   error (ECE, the count-weighted mean of |accuracy - confidence| over the bins).
3. Calibration (``calibration = "temperature"``): one temperature ``T`` divides the
   model's log-probabilities; it minimises the negative log-likelihood of the
   out-of-fold predictions (Guo et al. 2017).  It does not change the predicted type,
   only how far the probabilities are trusted.  The ECE is reported before and after.
4. The final model is fitted on every training galaxy and predicts every galaxy.
   ``confident`` is ``p >= confidence_threshold`` (default 0.7).
5. Out-of-distribution flag: the mean distance of a galaxy to its ``ood_neighbors``
   (5) nearest training galaxies in the standardised space, against the
   ``ood_quantile`` (0.99) quantile of the training galaxies' own leave-one-out
   distances: a galaxy farther from every training galaxy than 99% of the training
   galaxies are from their neighbours is flagged (a blank stamp, a lone star, an
   artefact).  In more than ``ood_dims`` (64) dimensions the distance is taken in the
   training galaxies' first ``ood_dims`` principal components plus one coordinate, the
   norm of the residual off that subspace, so an input that is foreign along the
   discarded directions is still far; and the neighbours are searched among at most
   ``ood_reference`` (10,000) training galaxies (a seeded sample), so typing 10^5
   galaxies costs seconds, not minutes.  Training galaxies are flagged on their leave-one-out distance, so
   about ``1 - ood_quantile`` of them are flagged by construction (:mod:`skymorph.core.ood`).

Measured choices (``benchmarks/eval_extend.py``; EfficientNet-Lite2 features averaged
over 4 rotations, UMAP 300-d, k = 20; clusters named by ``inspect auto``; balanced
accuracy of ``morph_type_final`` against the labels, mean of reduce/cluster seeds 42, 1
and 2; "kept" = the experts' (cluster) types, "extended" = the classifier's on the
galaxies the vote rejected)::

                                          gz1_sdss (3 classes)      ceers_f200w (3 classes)
    input / model / class weight          kept  extended  all       kept  extended  all
    features / logistic / balanced *      0.711  0.671   0.714      0.491  0.357   0.460
    features / logistic / unweighted      0.711  0.674   0.715      0.491  0.368   0.462
    embedding / logistic / balanced       0.711  0.350   0.614      0.491  0.274   0.439
    embedding, OOD galaxies typed too     0.711  0.626   0.707      0.491  0.340   0.456
    features, OOD galaxies typed too      0.711  0.673   0.715      0.491  0.371   0.463

* the default.  The encoder ``features`` beat the UMAP ``embedding`` (extended balanced
accuracy +0.32 on gz1_sdss, +0.08 on ceers_f200w): in the embedding the rejected galaxies
lie between the tight consensus clusters, so 54% (gz1) / 29% (ceers) of them are flagged
out of distribution (0.7% / 1.8% in the feature space), and even typed anyway they score
0.03-0.05 below the features.  Giving the flagged galaxies the fallback type (UNC, the
default ``ood_final``) rather than their predicted type costs 0.002 (gz1) / 0.014 (ceers)
of extended balanced accuracy: the price of not forcing a blank or a star into a type.
``class_weight``: balanced and unweighted within 0.01 on both sets (within the seed
spread, 0.01-0.07); balanced stays the default for natural-mix samples
(not measured here: gz1_sdss_natural was not encoded in this round).  The inverse penalty
``c`` (0.001 to 1) changed the extended balanced accuracy by at most 0.016.  The ``hgb``
model is available but was not measured: one fit on 1280-d features took over 4 minutes
on the shared 2-core machine.  A blank and a star-only stamp encoded like gz1_sdss lie at
3.2 and 18 times the OOD threshold (the star would have been typed SPIRAL at p = 0.95);
encoded like ceers_f200w, 3.5 and 4.7 times (both would have been DISTURBED at p >= 0.96).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SkymorphError
from .ood import _OODReference, ood_distances  # noqa: F401 - ood_distances: re-exported

__all__ = ["agreement_name",
    "ExtendError",
    "ExtendResult",
    "extend_labels",
    "ExtendModel",
    "fit_model",
    "stratified_folds",
    "reliability",
    "ood_distances",
    "split_scores",
]


def agreement_name(folds: int) -> str:
    """What the extension's cross-validated score measures, in words."""
    return f"agreement with the expert-named clusters ({folds}-fold CV)"


class ExtendError(SkymorphError, ValueError):
    """The training set cannot train a classifier (too few galaxies or types, bad input)."""


@dataclass
class ExtendResult:
    """Output of :func:`extend_labels`.

    Attributes
    ----------
    classes : list of str
        Types the classifier learnt (columns of ``proba``), sorted.
    proba : ndarray, shape (N, C)
        Calibrated per-type probabilities of every galaxy (training galaxies included:
        their out-of-fold probabilities are in ``cv["proba_oof"]``, these are the final
        model's).
    predicted : ndarray of str, shape (N,)
        Most probable type.
    p_predicted : ndarray, shape (N,)
        Its probability.
    confident : ndarray of bool
        ``p_predicted >= confidence_threshold``.
    ood : ndarray of bool
        Out of the training distribution (see the module docstring).
    ood_distance : ndarray, shape (N,)
        Mean distance to the ``ood_neighbors`` nearest training galaxies (leave-one-out
        for the training galaxies themselves).
    ood_threshold : float
        The ``ood_quantile`` quantile of the training galaxies' distances.
    cv : dict
        Cross-validation figures: ``accuracy``, ``balanced_accuracy``, ``labels``,
        ``confusion_matrix``, ``reliability`` (bins), ``ece``, ``ece_uncalibrated``,
        ``n_folds``, ``accuracy_confident``, ``fraction_confident``.
    temperature : float
        Calibration temperature (1 without calibration).
    info : dict
        Timings, sizes and settings.
    """

    classes: list[str]
    proba: np.ndarray
    predicted: np.ndarray
    p_predicted: np.ndarray
    confident: np.ndarray
    ood: np.ndarray
    ood_distance: np.ndarray
    ood_threshold: float
    cv: dict[str, Any]
    temperature: float
    info: dict[str, Any] = field(default_factory=dict)
    nonfinite: np.ndarray | None = None
    """Galaxies whose input holds NaN/inf: no type (``predicted`` ``""``, probabilities
    NaN), ``ood`` True, never trained on."""


# --- the model ------------------------------------------------------------------------------


class _Standardiser:
    """Mean / standard deviation of the training rows (constant columns scaled by 1)."""

    def __init__(self, x: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        self.mean = x64.mean(axis=0).astype(np.float32)
        sd = x64.std(axis=0)
        sd[~(sd > 1e-12)] = 1.0
        self.scale = (1.0 / sd).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.mean) * self.scale


def fit_model(x: np.ndarray, y: np.ndarray, *, model: str = "logistic", c: float = 0.1,
              class_weight: str = "balanced", max_iter: int = 300, seed: int = 0,
              sample_weight: np.ndarray | None = None) -> Any:
    """Fit the classifier on standardised rows ``x`` with types ``y``.

    ``model``: ``logistic`` (multinomial logistic regression, L2 penalty ``1 / c``,
    lbfgs) or ``hgb`` (scikit-learn's HistGradientBoostingClassifier, early stopping
    off, 100 iterations).  ``class_weight = "balanced"`` weights each type by the
    inverse of its frequency.  ``sample_weight`` (n, optional) weighs single rows on top of
    that (e.g. galaxies an expert typed one by one above cluster-derived types).  Returns
    the fitted scikit-learn estimator.
    """
    weight = "balanced" if class_weight == "balanced" else None
    if model == "logistic":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        est = LogisticRegression(C=c, class_weight=weight, max_iter=max_iter, tol=1e-4)
        with warnings.catch_warnings():
            # A cap on iterations is a speed setting: the fit is used as it stands.
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(x, y, sample_weight=sample_weight)
        return est
    if model == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        est = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, early_stopping=False,
                                             class_weight=weight, random_state=seed)
        return est.fit(x, y, sample_weight=sample_weight)
    raise ExtendError(f"extend.model must be 'logistic' or 'hgb', got {model!r}")


def _log_proba(est: Any, x: np.ndarray, classes: list[str], block: int = 20000) -> np.ndarray:
    """Log-probabilities of every class in ``classes`` (-inf for a class the model never saw)."""
    out = np.full((x.shape[0], len(classes)), -np.inf, dtype=np.float64)
    cols = [classes.index(str(c)) for c in est.classes_]
    for start in range(0, x.shape[0], block):
        part = x[start:start + block]
        if hasattr(est, "decision_function") and est.__class__.__name__ == "LogisticRegression":
            scores = est.decision_function(part)
            if scores.ndim == 1:  # two classes: one logit
                scores = np.stack([np.zeros_like(scores), scores], axis=1)
            scores = scores - scores.max(axis=1, keepdims=True)
            logp = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
        else:
            with np.errstate(divide="ignore"):
                logp = np.log(np.clip(est.predict_proba(part), 1e-300, None))
        out[start:start + block, cols] = logp
    return out


def _softmax(logp: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logp / temperature
    z = np.where(np.isfinite(z), z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fit_temperature(logp: np.ndarray, y_index: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of ``logp`` (out-of-fold)."""
    from scipy.optimize import minimize_scalar

    finite = np.where(np.isfinite(logp), logp, -1e4)

    def nll(log_t: float) -> float:
        p = _softmax(finite, float(np.exp(log_t)))
        return float(-np.log(np.clip(p[np.arange(len(y_index)), y_index], 1e-12, None)).mean())

    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                           options={"xatol": 1e-3})
    return float(np.exp(best.x))


# --- cross-validation and calibration figures ------------------------------------------------


def stratified_folds(y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold (0..n_folds-1) of every training galaxy, from scikit-learn's seeded
    ``StratifiedKFold``: every fold holds each type in proportion.  A type with fewer
    members than folds is simply absent from some folds (not a warning here: small
    expert types are expected).

    Raises
    ------
    ExtendError
        Every type has fewer members than ``n_folds`` (no stratified split exists).
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    if y.size and all(int((y == v).sum()) < n_folds for v in set(y.tolist())):
        raise ExtendError(f"every type has fewer training galaxies than the {n_folds} folds")
    folds = np.empty(y.size, dtype=np.int64)
    split = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=int(seed))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for f, (_, test) in enumerate(split.split(np.zeros((y.size, 1)), y)):
            folds[test] = f
    return folds


def reliability(proba: np.ndarray, y_index: np.ndarray, n_bins: int = 10) -> tuple[list[dict], float]:
    """Reliability-diagram bins of the top probability and the expected calibration error.

    Returns
    -------
    bins : list of dict
        Per equal-width bin of the top probability: ``lo``, ``hi``, ``n``,
        ``confidence`` (mean top probability) and ``accuracy`` (fraction whose top type
        is right); empty bins have ``None``.
    ece : float
        ``sum_b n_b / N * |accuracy_b - confidence_b|``.
    """
    top = proba.max(axis=1)
    right = proba.argmax(axis=1) == y_index
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = which == b
        n = int(sel.sum())
        conf = float(top[sel].mean()) if n else None
        acc = float(right[sel].mean()) if n else None
        if n:
            ece += n / max(top.size, 1) * abs(acc - conf)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                     "confidence": conf, "accuracy": acc})
    return bins, float(ece)


# --- the whole step -----------------------------------------------------------------------------


class ExtendModel:
    """The calibrated classifier and the OOD reference, fitted once, applied to any rows.

    :meth:`fit` runs the cross-validation, the calibration, the final fit and the OOD
    reference on the training galaxies; :meth:`predict` is a pure function of a block
    of rows, so every chunk of a large run (or every Dask task) can be typed
    independently.  Parameters are those of :func:`extend_labels`.
    """

    def __init__(self, *, model: str = "logistic", c: float = 0.1, class_weight: str = "balanced",
                 calibration: str = "temperature", cv_folds: int = 5, confidence_threshold: float = 0.7,
                 ood_neighbors: int = 5, ood_quantile: float = 0.99, ood_dims: int = 64,
                 ood_reference: int = 10000, max_iter: int = 300, seed: int = 0) -> None:
        if calibration not in ("temperature", "none"):
            raise ExtendError(f"extend.calibration must be 'temperature' or 'none', got {calibration!r}")
        if cv_folds < 2:
            raise ExtendError(f"extend.cv_folds must be at least 2, got {cv_folds}")
        self.settings = {"model": model, "c": c, "class_weight": class_weight, "calibration": calibration,
                         "cv_folds": cv_folds, "confidence_threshold": confidence_threshold,
                         "ood_neighbors": ood_neighbors, "ood_quantile": ood_quantile, "ood_dims": ood_dims,
                         "ood_reference": ood_reference, "max_iter": max_iter, "seed": seed}

    def fit(self, x: np.ndarray, y: Any, sample_weight: np.ndarray | None = None) -> ExtendModel:
        """Fit on the training rows ``x`` (n x D) with types ``y`` (n) and optional per-row
        weights ``sample_weight`` (n; the cross-validation's figures stay unweighted)."""
        st = self.settings
        x = np.asarray(x)
        y_train = np.asarray(y, dtype=object).astype(str)
        if x.ndim != 2 or y_train.shape != (x.shape[0],):
            raise ExtendError(f"training input must be n x D with n types; got {x.shape} and {y_train.shape}")
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if bad.size:
            raise ExtendError(f"{bad.size} training galaxies have NaN or infinite input values (rows "
                              f"{', '.join(map(str, bad[:10]))}); re-run the stage that wrote the input")
        classes = sorted(set(y_train.tolist()))
        if len(classes) < 2:
            raise ExtendError(f"the training set holds {len(classes)} type(s) ({', '.join(classes)}); "
                              "a classifier needs at least two typed clusters")
        n_train = y_train.size
        if n_train < st["cv_folds"]:
            raise ExtendError(f"{n_train} training galaxies are fewer than the {st['cv_folds']} folds")
        y_index = np.array([classes.index(v) for v in y_train])
        self.classes = classes
        self.scaler = _Standardiser(x)
        z_train = self.scaler(x)
        kwargs = {k: st[k] for k in ("model", "c", "class_weight", "max_iter", "seed")}
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w is not None and w.shape != (n_train,):
            raise ExtendError(f"sample_weight must hold one weight per training galaxy ({n_train}), "
                              f"got shape {w.shape}")

        t0 = time.perf_counter()
        folds = stratified_folds(y_train, st["cv_folds"], st["seed"])
        logp_oof = np.empty((n_train, len(classes)))
        for f in range(st["cv_folds"]):
            test = folds == f
            if test.any():
                est = fit_model(z_train[~test], y_train[~test], **kwargs,
                                sample_weight=None if w is None else w[~test])
                logp_oof[test] = _log_proba(est, z_train[test], classes)
        self.seconds_cv = time.perf_counter() - t0
        self.temperature = (_fit_temperature(logp_oof, y_index) if st["calibration"] == "temperature"
                            else 1.0)
        p_oof = _softmax(logp_oof, self.temperature)
        pred_oof = p_oof.argmax(axis=1)
        from sklearn.metrics import balanced_accuracy_score, confusion_matrix

        matrix = confusion_matrix(y_index, pred_oof, labels=np.arange(len(classes)))
        bins, ece = reliability(p_oof, y_index)
        _, ece_raw = reliability(_softmax(logp_oof), y_index)
        conf_oof = p_oof.max(axis=1) >= st["confidence_threshold"]
        self.cv = {
            "n_folds": int(st["cv_folds"]), "n_train": int(n_train),
            "accuracy": float((pred_oof == y_index).mean()),
            "balanced_accuracy": float(balanced_accuracy_score(y_index, pred_oof)),
            "labels": classes, "confusion_matrix": matrix.tolist(),
            "reliability": bins, "ece": ece, "ece_uncalibrated": ece_raw,
            "fraction_confident": float(conf_oof.mean()),
            "accuracy_confident": (float((pred_oof == y_index)[conf_oof].mean()) if conf_oof.any()
                                   else None),
            "proba_oof": p_oof,
        }
        t0 = time.perf_counter()
        self.estimator = fit_model(z_train, y_train, **kwargs, sample_weight=w)
        self.seconds_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.ood = _OODReference(z_train, k=st["ood_neighbors"], dims=st["ood_dims"],
                                 quantile=st["ood_quantile"], reference=st["ood_reference"], seed=st["seed"])
        self.seconds_ood_fit = time.perf_counter() - t0
        self.train_counts = {c_: int((y_train == c_).sum()) for c_ in classes}
        return self

    def predict(self, x: np.ndarray, block: int = 20000) -> dict[str, np.ndarray]:
        """Type the rows ``x``: ``proba`` (N x C, float32), ``predicted``, ``p_predicted``,
        ``confident``, ``ood`` and ``ood_distance``."""
        x = np.asarray(x)
        n = x.shape[0]
        if x.ndim != 2 or x.shape[1] != self.scaler.mean.size:
            raise ExtendError(f"rows to type must be N x {self.scaler.mean.size}, got {x.shape}")
        proba = np.empty((n, len(self.classes)), dtype=np.float32)
        distance = np.empty(n)
        for s in range(0, n, block):
            z = self.scaler(x[s:s + block])
            proba[s:s + block] = _softmax(_log_proba(self.estimator, z, self.classes), self.temperature)
            distance[s:s + block] = self.ood.distance(z)
        top = proba.argmax(axis=1)
        p_top = proba[np.arange(n), top].astype(np.float64)
        return {"proba": proba, "predicted": np.array(self.classes, dtype=object)[top],
                "p_predicted": p_top, "confident": p_top >= self.settings["confidence_threshold"],
                "ood": distance > self.ood.threshold, "ood_distance": distance}


def extend_labels(x: np.ndarray, train: np.ndarray, y: np.ndarray, *, model: str = "logistic",
                  c: float = 0.1, class_weight: str = "balanced", calibration: str = "temperature",
                  cv_folds: int = 5, confidence_threshold: float = 0.7, ood_neighbors: int = 5,
                  ood_quantile: float = 0.99, ood_dims: int = 64, ood_reference: int = 10000,
                  max_iter: int = 300, seed: int = 0, sample_weight: np.ndarray | None = None
                  ) -> ExtendResult:
    """Train on the expert-typed galaxies and type every galaxy.

    Parameters
    ----------
    x : ndarray, shape (N, D)
        Input of every galaxy (encoder features or UMAP embedding).
    train : ndarray of bool, shape (N,)
        The training galaxies (kept by the consensus vote and typed by the experts).
    y : sequence of str, shape (N,) or (n_train,)
        Their types: one per galaxy (only ``y[train]`` is read) or one per training galaxy.
    model, c, class_weight, max_iter
        See :func:`fit_model`.
    calibration : str
        ``temperature`` or ``none``.
    cv_folds : int
        Folds of the cross-validation (at least 2).
    confidence_threshold, ood_neighbors, ood_quantile, ood_dims, seed
        See the module docstring.
    ood_reference : int
        Most training galaxies (a seeded sample) the neighbour distances are taken to;
        0 uses all of them.
    sample_weight : ndarray, optional
        Weight of each training galaxy: shape (N,) (only ``sample_weight[train]`` is read)
        or (n_train,); e.g. galaxies an expert typed one by one weigh more than those
        typed through their cluster.  Unweighted by default.

    Returns
    -------
    ExtendResult

    Raises
    ------
    ExtendError
        Fewer than two types or fewer than ``cv_folds`` training galaxies (those with
        NaN/inf input left out), or shapes that do not match.
    """
    start = time.perf_counter()
    x = np.asarray(x)
    train = np.asarray(train, dtype=bool)
    if x.ndim != 2 or train.shape != (x.shape[0],):
        raise ExtendError(f"x must be N x D and train a boolean mask of N galaxies; got {x.shape} "
                          f"and {train.shape}")
    y = np.asarray(y, dtype=object)
    y_train = y[train] if y.shape[0] == x.shape[0] else y
    if y_train.shape[0] != int(train.sum()):
        raise ExtendError(f"{int(train.sum())} training galaxies but {y_train.shape[0]} types")
    # a galaxy whose input holds NaN/inf gets no type (and does not train): a lost
    # feature chunk reads as NaN, and a classifier would still give it a confident type
    nonfinite = ~np.isfinite(x).all(axis=1)
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64)
        w = w[train] if w.shape[0] == x.shape[0] else w
        if w.shape[0] != y_train.shape[0]:
            raise ExtendError(f"{y_train.shape[0]} training galaxies but {w.shape[0]} sample weights")
        w = w[~nonfinite[train]]
    y_train = y_train[~nonfinite[train]]
    train = train & ~nonfinite
    est = ExtendModel(model=model, c=c, class_weight=class_weight, calibration=calibration,
                      cv_folds=cv_folds, confidence_threshold=confidence_threshold,
                      ood_neighbors=ood_neighbors, ood_quantile=ood_quantile, ood_dims=ood_dims,
                      ood_reference=ood_reference, max_iter=max_iter, seed=seed)
    train_rows = np.flatnonzero(train)
    est.fit(x[train_rows], y_train, sample_weight=w)
    t0 = time.perf_counter()
    out = _predict_finite(est, x, nonfinite)
    seconds_predict = time.perf_counter() - t0
    distance = out["ood_distance"]
    distance[train_rows[est.ood.rows]] = est.ood.loo  # training galaxies: leave-one-out
    ood = (distance > est.ood.threshold) | nonfinite
    info = {
        "n_galaxies": int(x.shape[0]), "n_train": int(train_rows.size), "n_features": int(x.shape[1]),
        "n_nonfinite": int(nonfinite.sum()),
        "classes": est.classes, "train_counts": est.train_counts, "temperature": est.temperature,
        "ood_threshold": est.ood.threshold, "seconds_cv": est.seconds_cv, "seconds_fit": est.seconds_fit,
        "seconds_ood_fit": est.seconds_ood_fit, "seconds_predict": seconds_predict,
        "seconds_total": time.perf_counter() - start, "settings": dict(est.settings),
    }
    return ExtendResult(
        classes=est.classes, proba=out["proba"], predicted=out["predicted"], p_predicted=out["p_predicted"],
        confident=out["confident"], ood=ood, ood_distance=distance, ood_threshold=est.ood.threshold,
        cv=est.cv, temperature=est.temperature, info=info, nonfinite=nonfinite)


def _predict_finite(est: ExtendModel, x: np.ndarray, nonfinite: np.ndarray) -> dict[str, np.ndarray]:
    """:meth:`ExtendModel.predict` on the rows without NaN/inf; the others get no type:
    probabilities NaN, type ``""``, not confident, distance ``inf``."""
    if not nonfinite.any():
        return est.predict(x)
    rows = np.flatnonzero(~nonfinite)
    part = est.predict(x[rows])
    n = x.shape[0]
    out = {"proba": np.full((n, len(est.classes)), np.nan, dtype=np.float32),
           "predicted": np.full(n, "", dtype=object), "p_predicted": np.full(n, np.nan),
           "confident": np.zeros(n, dtype=bool), "ood_distance": np.full(n, np.inf)}
    for key, value in out.items():
        value[rows] = part[key]
    return out


# --- scoring final types against a truth ---------------------------------------------------------


def split_scores(truth: np.ndarray, final: np.ndarray, source: np.ndarray) -> dict[str, Any]:
    """Accuracy and balanced accuracy of final types against true classes, per source.

    Types and classes are compared case-insensitively (``inspect auto`` names types after
    the labels; ``inspect merge`` holds them in upper case).  Galaxies without a true
    class (``""``) are left out; a type that is no true class (e.g. UNC) counts as wrong.

    Parameters
    ----------
    truth : array of str
        True class of every galaxy (after the label map), ``""`` where unknown.
    final : array of str
        ``morph_type_final``.
    source : array of str
        ``type_source``: ``experts``, ``extended`` or ``ood`` (extended, out of distribution;
        counted with the extended galaxies).

    Returns
    -------
    dict
        ``kept`` (experts), ``extended`` and ``all``: each ``n``, ``accuracy``,
        ``balanced_accuracy`` (mean recall over the true classes present) and
        ``recall_by_class``.
    """
    truth = np.array([str(t).strip().casefold() for t in truth], dtype=object)
    final = np.array([str(t).strip().casefold() for t in final], dtype=object)
    source = np.asarray(source).astype(str)
    out = {}
    extended = (source == "extended") | (source == "ood")  # every galaxy the classifier typed
    for name, sel in (("kept", source == "experts"), ("extended", extended),
                      ("all", np.ones(truth.size, bool))):
        sel = sel & (truth != "")
        t, p = truth[sel], final[sel]
        classes = sorted(set(t.tolist()))
        recall = {c: float((p[t == c] == c).mean()) for c in classes}
        out[name] = {"n": int(sel.sum()),
                     "accuracy": float((t == p).mean()) if sel.any() else None,
                     "balanced_accuracy": float(np.mean(list(recall.values()))) if recall else None,
                     "recall_by_class": recall}
    return out
