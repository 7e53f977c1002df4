"""``reduce.method``: PCA or no reduction instead of UMAP before clustering (issue #14)."""

from __future__ import annotations

import numpy as np

from skymorph.core.reduction import reduce_features


def _features() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 40))
    return (centres[rng.integers(0, 3, 90)] + rng.normal(0, 1, (90, 40))).astype(np.float32)


def test_pca_gives_dims_standardised_components():
    x = _features()
    result = reduce_features(x, method="pca", dims=5, map_2d=False, progress=False)
    assert result.embedding.shape == (90, 5) and result.dims == 5 and result.embedding_2d is None
    var = result.embedding.var(0)
    assert np.all(np.diff(var) <= 1e-4)  # ordered components
    np.testing.assert_allclose(result.embedding.mean(0), 0, atol=1e-4)


def test_none_keeps_every_standardised_feature():
    x = _features()
    result = reduce_features(x, method="none", map_2d=False, progress=False)
    assert result.embedding.shape == (90, 40) and result.dims == 40
    np.testing.assert_allclose(result.embedding.std(0), 1, atol=1e-4)
    # the same order of galaxies: distances follow the input's
    d_in = np.linalg.norm(x[0] - x[1:], axis=1)
    d_out = np.linalg.norm(result.embedding[0] - result.embedding[1:], axis=1)
    assert np.corrcoef(d_in, d_out)[0, 1] > 0.9


def test_the_2d_map_is_still_a_umap_of_the_features():
    x = _features()
    result = reduce_features(x, method="pca", dims=5, map_2d=True, n_epochs=20, n_neighbors=10,
                             progress=False)
    assert result.embedding.shape == (90, 5) and result.embedding_2d.shape == (90, 2)
    assert np.isfinite(result.embedding_2d).all()
