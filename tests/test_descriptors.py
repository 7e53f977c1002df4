"""Shape descriptors (skymorph.core.descriptors): known profiles, invariances and bad stamps."""

from __future__ import annotations

import numpy as np
import pytest

from skymorph.core.descriptors import (
    DESCRIPTOR_NAMES,
    descriptor_names,
    descriptors_at_levels,
    shape_descriptors,
)

COL = {name: i for i, name in enumerate(DESCRIPTOR_NAMES)}
YY, XX = np.mgrid[0:101, 0:101].astype(np.float64)


def sersic(n: float, re: float, q: float = 1.0, theta: float = 0.0, cx: float = 50,
           cy: float = 50) -> np.ndarray:
    x = (XX - cx) * np.cos(theta) + (YY - cy) * np.sin(theta)
    y = -(XX - cx) * np.sin(theta) + (YY - cy) * np.cos(theta)
    r = np.sqrt(x ** 2 + (y / q) ** 2)
    b = 2 * n - 1 / 3
    return np.exp(-b * ((r / re) ** (1 / n) - 1))


def noisy(*images: np.ndarray, sigma: float = 0.002) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack(images) + rng.normal(0, sigma, (len(images), *images[0].shape))


def test_profiles_separate_as_the_literature_says():
    d = shape_descriptors(noisy(sersic(4, 10), sersic(1, 10), sersic(1, 10, q=0.3, theta=0.6)),
                          peak_fraction=0.01)
    bulge, disc, edge = d
    assert bulge[COL["concentration"]] > disc[COL["concentration"]] + 0.5
    assert bulge[COL["gini"]] > disc[COL["gini"]]
    assert bulge[COL["m20"]] < disc[COL["m20"]]
    assert disc[COL["axis_ratio"]] == pytest.approx(1.0, abs=0.05)
    assert edge[COL["axis_ratio"]] == pytest.approx(0.3, abs=0.08)
    # an exponential disc's r50 is its effective radius
    assert disc[COL["r50"]] == pytest.approx(10, rel=0.15)
    assert disc[COL["r20"]] < disc[COL["r50"]] < disc[COL["r80"]]
    # symmetric profiles: asymmetry near 0 (the noise term is subtracted)
    assert abs(bulge[COL["asymmetry"]]) < 0.03 and abs(disc[COL["asymmetry"]]) < 0.03


def test_a_lopsided_galaxy_is_asymmetric():
    d = shape_descriptors(noisy(sersic(1, 10), sersic(1, 10) + 0.8 * sersic(1, 3, cx=58, cy=55)),
                          peak_fraction=0.01)
    assert d[1, COL["asymmetry"]] > d[0, COL["asymmetry"]] + 0.05


def test_right_angle_rotations_leave_the_descriptors_unchanged():
    image = sersic(1, 10, q=0.5, theta=0.3) + 0.5 * sersic(1, 3, cx=57, cy=52)
    stamps = noisy(image, np.rot90(image), sigma=0.0005)
    d = shape_descriptors(stamps)
    np.testing.assert_allclose(d[0], d[1], rtol=0.05, atol=0.02)


def test_colours_of_multi_band_stamps():
    image = sersic(1, 8)
    bands = np.stack([np.stack([image, 2 * image])])  # (1, 2, H, W): the second band twice as bright
    d = shape_descriptors(bands + 1e-4)
    assert descriptor_names(2) == [*DESCRIPTOR_NAMES, "colour_0_1"]
    assert d.shape == (1, len(DESCRIPTOR_NAMES) + 1)
    assert d[0, -1] == pytest.approx(-2.5 * np.log10(0.5), abs=0.02)


def test_empty_and_blank_stamps_give_nan_rows_and_spare_the_others():
    good = sersic(1, 8)
    stamps = noisy(good, good, good)
    stamps[1] = np.nan
    stamps[2] = 0.0
    d = shape_descriptors(stamps, chunk=2)
    assert np.isfinite(d[0]).all()
    assert np.isnan(d[1]).all() and np.isnan(d[2]).all()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="N, H, W"):
        shape_descriptors(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="too small"):
        shape_descriptors(np.zeros((2, 5, 5)))


def test_descriptors_at_two_isophotes():
    stamps = noisy(sersic(1, 8), sersic(4, 8))
    values, names = descriptors_at_levels(stamps, levels=(0.05, 0.2))
    assert values.shape == (2, 2 * len(DESCRIPTOR_NAMES))
    assert names[0] == "concentration_p5" and names[len(DESCRIPTOR_NAMES)] == "concentration_p20"
    np.testing.assert_allclose(values[:, :len(DESCRIPTOR_NAMES)],
                               shape_descriptors(stamps, peak_fraction=0.05))
    # the brighter isophote holds a smaller part of the galaxy
    assert values[0, names.index("r80_p20")] < values[0, names.index("r80_p5")]
    one, plain = descriptors_at_levels(stamps, levels=[0.2])
    assert plain == list(DESCRIPTOR_NAMES)
