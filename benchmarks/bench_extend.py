"""Speed of the supervised step: training on 5x10^4 galaxies, typing 10^5.

Synthetic features of the real dimension (1280, EfficientNet-Lite's): five types, each a
Gaussian around its own centre plus a shared 50-d low-rank structure and noise.  Training
is :meth:`skymorph.core.extend.ExtendModel.fit` (5-fold cross-validation, temperature
calibration, the final fit and the OOD reference); prediction is
:meth:`~skymorph.core.extend.ExtendModel.predict` (calibrated probabilities and the k-NN
OOD distance).  The bare baseline is scikit-learn's own StandardScaler +
LogisticRegression (same C, class weight and iteration cap) fitted once and
``predict_proba`` on the same rows, measured in the same run.  Medians of 3; peak memory
is the process's resident set above its level before the step (sampled every 20 ms).  CPU
seconds (user + system, all threads) are printed too: on a shared machine the wall time
grows with the other jobs' load, the CPU time much less, and CPU / 2 is what the wall time
would be with both cores free.

Targets (issue #13): training <= 120 s, prediction of 10^5 <= 30 s on a 2-core machine.

    python benchmarks/bench_extend.py [--train 50000] [--predict 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import warnings

import numpy as np

D = 1280


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        import os

        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory above the starting level while the block runs."""

    def __enter__(self) -> PeakRSS:
        self.start = _rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def synthetic(n: int, seed: int, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(12345)  # the same types and structure in every call
    centres = base.normal(0, 0.6, (classes, D)).astype(np.float32)
    mixing = base.normal(0, 1, (50, D)).astype(np.float32) / np.sqrt(50)
    weights = np.array([0.5, 0.2, 0.15, 0.1, 0.05])[:classes]
    label = rng.choice(classes, size=n, p=weights / weights.sum())
    x = centres[label]
    x += rng.standard_normal((n, 50), dtype=np.float32) @ mixing * 2
    x += rng.standard_normal((n, D), dtype=np.float32)
    return x, np.array([f"T{i}" for i in range(classes)], dtype=object)[label]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=50000)
    parser.add_argument("--predict", type=int, default=100000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from skymorph.config import ExtendConfig
    from skymorph.core.extend import ExtendModel

    cfg = ExtendConfig()
    x_train, y_train = synthetic(args.train, seed=1)
    x_new, y_new = synthetic(args.predict, seed=2)
    print(f"{args.train} training galaxies x {D} features, {args.predict} to type; "
          f"model {cfg.model}, C {cfg.c}, class_weight {cfg.class_weight}, {cfg.cv_folds}-fold CV, "
          f"calibration {cfg.calibration}, OOD {cfg.ood_neighbors}-NN in {cfg.ood_dims}+1 dims "
          f"against <= {cfg.ood_reference} training galaxies", flush=True)
    rows: dict[str, list[float]] = {k: [] for k in ("fit", "fit_mem", "predict", "predict_mem",
                                                     "bare_fit", "bare_predict", "fit_cpu", "predict_cpu",
                                                     "bare_fit_cpu", "bare_predict_cpu")}
    for rep in range(args.repeats):
        model = ExtendModel(model=cfg.model, c=cfg.c, class_weight=cfg.class_weight,
                            calibration=cfg.calibration, cv_folds=cfg.cv_folds,
                            confidence_threshold=cfg.confidence_threshold, ood_neighbors=cfg.ood_neighbors,
                            ood_quantile=cfg.ood_quantile, ood_dims=cfg.ood_dims,
                            ood_reference=cfg.ood_reference, max_iter=cfg.max_iter, seed=rep)
        with PeakRSS() as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            model.fit(x_train, y_train)
            rows["fit"].append(time.perf_counter() - t0)
            rows["fit_cpu"].append(time.process_time() - c0)
        rows["fit_mem"].append(mem.mib)
        with PeakRSS() as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            out = model.predict(x_new)
            rows["predict"].append(time.perf_counter() - t0)
            rows["predict_cpu"].append(time.process_time() - c0)
        rows["predict_mem"].append(mem.mib)
        acc = float((out["predicted"] == y_new).mean())

        t0, c0 = time.perf_counter(), time.process_time()
        scaler = StandardScaler().fit(x_train)
        weight = "balanced" if cfg.class_weight == "balanced" else None
        bare = LogisticRegression(C=cfg.c, class_weight=weight, max_iter=cfg.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            bare.fit(scaler.transform(x_train), y_train)
        rows["bare_fit"].append(time.perf_counter() - t0)
        rows["bare_fit_cpu"].append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        bare.predict_proba(scaler.transform(x_new))
        rows["bare_predict"].append(time.perf_counter() - t0)
        rows["bare_predict_cpu"].append(time.process_time() - c0)
        print(f"  repeat {rep + 1}: fit {rows['fit'][-1]:.1f} s (CV {model.seconds_cv:.1f}, final "
              f"{model.seconds_fit:.1f}, OOD reference {model.seconds_ood_fit:.1f}), predict "
              f"{rows['predict'][-1]:.1f} s; bare fit {rows['bare_fit'][-1]:.1f} s, bare predict "
              f"{rows['bare_predict'][-1]:.2f} s; CPU s: fit {rows['fit_cpu'][-1]:.0f}, predict "
              f"{rows['predict_cpu'][-1]:.0f}, bare fit {rows['bare_fit_cpu'][-1]:.0f}, bare predict "
              f"{rows['bare_predict_cpu'][-1]:.1f}; accuracy on the new galaxies {acc:.3f}, "
              f"OOD {out['ood'].mean():.1%}", flush=True)

    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\nmedians of {args.repeats}:")
    fit_ratio = med["fit_cpu"] / med["bare_fit_cpu"]
    predict_ratio = med["predict_cpu"] / med["bare_predict_cpu"]
    print(f"  training   {med['fit']:7.1f} s  ({args.train / med['fit']:8.0f} galaxies/s)  peak +"
          f"{med['fit_mem']:.0f} MiB  {med['fit'] / med['bare_fit']:.1f} x a bare scikit-learn fit "
          f"({med['bare_fit']:.1f} s); CPU {med['fit_cpu']:.0f} s ({fit_ratio:.1f} x)  "
          f"target <= 120 s: {'met' if med['fit'] <= 120 else 'MISSED'}")
    print(f"  prediction {med['predict']:7.1f} s  ({args.predict / med['predict']:8.0f} galaxies/s)  peak +"
          f"{med['predict_mem']:.0f} MiB  {med['predict'] / med['bare_predict']:.1f} x a bare predict_proba "
          f"({med['bare_predict']:.2f} s); CPU {med['predict_cpu']:.0f} s ({predict_ratio:.1f} x)  "
          f"target <= 30 s: {'met' if med['predict'] <= 30 else 'MISSED'}")

if __name__ == "__main__":
    main()
