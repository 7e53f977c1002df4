"""Nuisance copies and the between/within projection (skymorph.core.nuisance), and the hybrid
features (skymorph.core.hybrid)."""

from __future__ import annotations

import numpy as np
import pytest

from skymorph.core.hybrid import HybridFeatures, combine_features
from skymorph.core.nuisance import augment, nuisance_projection, pca_whitening


def _galaxies(n: int = 6, size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] - size / 2
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        q = 0.3 + 0.1 * i
        out.append(np.exp(-np.sqrt(xx ** 2 + (yy / q) ** 2) / 4) + rng.normal(0, 0.01, (size, size)))
    return np.stack(out).astype(np.float32)


def test_augment_is_seeded_and_changes_only_a_little():
    stamps = _galaxies()
    stamps[2] = np.nan
    a = augment(stamps, copies=3, seed=5)
    b = augment(stamps, copies=3, seed=5)
    assert a.shape == (3, *stamps.shape) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.isnan(a[:, 2]).all()
    good = [0, 1, 3, 4, 5]
    assert np.isfinite(a[:, good]).all()
    for c in range(3):
        for i in good:
            r = np.corrcoef(a[c, i].ravel(), stamps[i].ravel())[0, 1]
            assert 0.9 < r < 0.99999  # a nuisance, not a new galaxy, and not a no-op
    assert not np.array_equal(augment(stamps, copies=1, seed=6)[0], a[0])


def test_augment_refuses_bad_input():
    with pytest.raises(ValueError, match="N, H, W"):
        augment(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="copies"):
        augment(np.zeros((2, 8, 8)), copies=0)


def test_the_projection_keeps_what_differs_between_galaxies_and_drops_the_nuisance():
    rng = np.random.default_rng(0)
    n, d = 400, 20
    signal = rng.normal(0, 1, (n, 2))  # galaxies differ along two directions...
    mix = np.linalg.qr(rng.normal(size=(d, d)))[0]
    clean = np.hstack([signal, np.zeros((n, d - 2))])
    nuisance_scale = np.r_[0.05, 0.05, np.full(d - 2, 3.0)]  # ...and copies along the others, more
    features = (clean + rng.normal(0, 1, (n, d)) * nuisance_scale) @ mix
    rows = np.arange(0, n, 2)
    copies = np.stack([(clean[rows] + rng.normal(0, 1, (rows.size, d)) * nuisance_scale) @ mix
                       for _ in range(2)])
    proj = nuisance_projection(features, copies, rows, dims=2, pre_dims=d)
    z = proj.apply(features)
    assert z.shape == (n, 2) and z.dtype == np.float32
    # the kept directions span the signal: a linear fit recovers it almost exactly
    coef, *_ = np.linalg.lstsq(np.c_[z, np.ones(n)], signal, rcond=None)
    resid = signal - np.c_[z, np.ones(n)] @ coef
    assert resid.var() / signal.var() < 0.02
    assert proj.ratio[0] >= proj.ratio[1] > 10
    # PCA whitening, blind to the nuisance, keeps its large directions instead
    w = pca_whitening(features, dims=2).apply(features)
    coef, *_ = np.linalg.lstsq(np.c_[w, np.ones(n)], signal, rcond=None)
    assert (signal - np.c_[w, np.ones(n)] @ coef).var() / signal.var() > 0.5
    np.testing.assert_allclose(w.std(axis=0, ddof=1), 1.0, rtol=1e-4)


def test_the_projection_refuses_mismatched_copies():
    x = np.zeros((10, 4))
    with pytest.raises(ValueError, match="copies must be"):
        nuisance_projection(x, np.zeros((2, 3, 5)), np.arange(3))
    with pytest.raises(ValueError, match="at least 2"):
        nuisance_projection(x, np.zeros((2, 1, 4)), np.arange(1))


def test_hybrid_blocks_have_unit_variance_and_the_weight_sets_their_share():
    rng = np.random.default_rng(3)
    deep = rng.normal(0, 5, (200, 50)) @ rng.normal(size=(50, 50))
    desc = rng.normal(0, 1, (200, 9)) * np.arange(1, 10)
    desc[7] = np.nan  # a stamp without a measurable galaxy
    x = combine_features(deep, desc, deep_dims=8, descriptor_weight=0.5)
    assert x.shape == (200, 17) and np.isfinite(x).all()
    assert x[:, :8].var(axis=0).sum() == pytest.approx(1.0, rel=1e-4)
    assert x[:, 8:].var(axis=0).sum() == pytest.approx(0.25, rel=1e-3)
    assert np.allclose(x[7, 8:], 0, atol=1e-6)  # imputed at the median
    model = HybridFeatures.fit(deep, desc, deep_dims=8, descriptor_weight=0.5)
    np.testing.assert_allclose(model.apply(deep[:5], desc[:5]), x[:5], rtol=1e-5, atol=1e-6)
    assert combine_features(deep, None, deep_dims=0).shape == (200, 50)
    with pytest.raises(ValueError, match="descriptor_weight"):
        combine_features(deep, desc, descriptor_weight=-1)


def test_the_readme_evaluation_table_is_the_summary_of_the_measured_rows():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "eval_hybrid.py"
    out = subprocess.run([sys.executable, str(script), "--summary",
                          str(root / "benchmarks" / "eval_hybrid_default.jsonl")],
                         capture_output=True, text=True, check=True).stdout
    readme = (root / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- hybrid-table -->\n")[1].split("<!-- /hybrid-table -->")[0]
    assert table == out
    for name in ("gz1_sdss", "gz1_sdss_natural", "ceers_f200w"):  # every set, the default first
        assert f"| {name} | efficientnet_lite2 x4 | deep/none/umap300/vote/20 | 30 |" in out
    # the earlier (Lite0, 15 neighbours) rows still print, with the new columns left empty
    older = subprocess.run([sys.executable, str(script), "--summary",
                            str(root / "benchmarks" / "eval_hybrid_results.jsonl")],
                           capture_output=True, text=True, check=True).stdout
    assert "| ceers_f200w | efficientnet_lite0 x1 | deep/none/umap300/vote/20 | 15 |" in older
