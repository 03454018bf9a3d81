"""tf_dpvae.dsprites: the procedural dSprites grid and its renderer.

The grid must be dSprites' factor grid exactly (order, sizes, row-major indexing); the images
must be binary, deterministic, inside the frame, and respond to every factor in the
documented direction (x → right in columns, y → down in rows, rotation counter-clockwise).
"""

import math

import numpy as np
import pytest

from tf_dpvae import dsprites

N_GRID = 737_280
QUARTER = math.pi / 2


def centre_of_mass(image):
    """(row, column) centre of mass of a 2-D image, in pixels."""
    rows, cols = np.nonzero(image)
    return rows.mean(), cols.mean()


@pytest.fixture(scope="module")
def grid():
    return dsprites.grid_indices()


def test_factor_values_match_dsprites():
    assert dsprites.FACTOR_NAMES == ("shape", "scale", "orientation", "position_x",
                                     "position_y")
    assert dsprites.FACTOR_SIZES == (3, 6, 40, 32, 32)
    for name, size in zip(dsprites.FACTOR_NAMES, dsprites.FACTOR_SIZES):
        assert len(dsprites.factor_values(name)) == size
    np.testing.assert_array_equal(dsprites.factor_values("scale"), np.linspace(0.5, 1, 6))
    np.testing.assert_array_equal(dsprites.factor_values("orientation"),
                                  np.linspace(0, 2 * np.pi, 40))
    np.testing.assert_array_equal(dsprites.factor_values("position_y"), np.linspace(0, 1, 32))
    with pytest.raises(KeyError):
        dsprites.factor_values("color")


def test_grid_is_the_full_cartesian_product(grid):
    assert grid.shape == (N_GRID, 5) == (int(np.prod(dsprites.FACTOR_SIZES)), 5)
    assert len(np.unique(dsprites.index_of(grid))) == N_GRID          # rows unique
    for column, size in enumerate(dsprites.FACTOR_SIZES):
        counts = np.bincount(grid[:, column], minlength=size)
        assert len(counts) == size and np.all(counts == N_GRID // size)
    # Row-major dSprites order: shape slowest, position_y fastest.
    np.testing.assert_array_equal(grid[0], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(grid[1], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(grid[32], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(grid[-1], [2, 5, 39, 31, 31])


def test_index_of_inverts_grid_indices(grid):
    rows = np.random.default_rng(0).choice(N_GRID, size=2000, replace=False)
    rows = np.concatenate([[0, N_GRID - 1], rows])
    np.testing.assert_array_equal(dsprites.index_of(grid[rows]), rows)
    assert dsprites.index_of(grid[-1]) == N_GRID - 1


def test_subsampled_grid_is_a_subgrid(grid):
    sub = dsprites.grid_indices(subsample={"orientation": 4, "position_x": 2,
                                           "position_y": 2})
    assert sub.shape == (3 * 6 * 10 * 16 * 16, 5)
    flat = dsprites.index_of(sub)
    assert len(np.unique(flat)) == len(sub)
    np.testing.assert_array_equal(grid[flat], sub)                    # a subset of the grid
    assert set(np.unique(sub[:, 2])) == set(range(0, 40, 4))
    assert set(np.unique(sub[:, 3])) == set(range(0, 32, 2))
    with pytest.raises(KeyError):
        dsprites.grid_indices(subsample={"colour": 2})


def test_sample_factors_is_uniform_on_the_subgrid():
    subsample = {"orientation": 4, "position_x": 2}
    a = dsprites.sample_factors(5000, np.random.default_rng(1), subsample=subsample)
    b = dsprites.sample_factors(5000, np.random.default_rng(1), subsample=subsample)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5000, 5)
    assert np.all(a[:, 2] % 4 == 0) and np.all(a[:, 3] % 2 == 0)
    assert np.all(a >= 0) and np.all(a < np.array(dsprites.FACTOR_SIZES))
    counts = np.bincount(a[:, 0], minlength=3)
    assert counts.min() > 5000 / 3 * 0.85                            # roughly uniform shapes


def test_images_are_binary_deterministic_and_match_render():
    indices = dsprites.sample_factors(300, np.random.default_rng(2))
    first = dsprites.render_batch(indices)
    second = dsprites.render_batch(indices)
    assert first.shape == (300, 64, 64, 1) and first.dtype == np.float32
    assert np.array_equal(first, second)
    assert set(np.unique(first)) <= {0.0, 1.0}
    assert np.all(first.sum(axis=(1, 2, 3)) > 0)
    values = {n: dsprites.factor_values(n) for n in dsprites.FACTOR_NAMES}
    for row in indices[:20]:                                            # render == render_batch
        args = [values[n][i] for n, i in zip(dsprites.FACTOR_NAMES, row)]
        image = dsprites.render(int(args[0]), *args[1:])
        np.testing.assert_array_equal(image, dsprites.render_batch(row[None])[0, :, :, 0])


@pytest.mark.parametrize("resolution", [64, 32])
def test_shapes_never_touch_the_border(resolution):
    orientations = np.linspace(0, 2 * np.pi, 17)
    for shape in range(3):
        for orientation in orientations:
            for x in (0.0, 1.0):
                for y in (0.0, 1.0):
                    image = dsprites.render(shape, 1.0, orientation, x, y, resolution)
                    assert image.sum() > 0
                    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
                    assert border.sum() == 0, (shape, orientation, x, y)


def test_each_factor_changes_the_image():
    for shape in range(3):
        base = dict(shape=shape, scale=0.8, orientation=0.3, x=0.4, y=0.6)
        image = dsprites.render(**base)
        turn = QUARTER / 2 if shape == 0 else QUARTER
        changes = [dict(shape=(shape + 1) % 3), dict(scale=1.0),
                   dict(orientation=base["orientation"] + turn), dict(x=0.7), dict(y=0.2)]
        for change in changes:
            assert not np.array_equal(image, dsprites.render(**{**base, **change})), change


def test_scale_grows_the_area_monotonically():
    for shape in range(3):
        areas = [dsprites.render(shape, s, 0.5, 0.5, 0.5).sum()
                 for s in dsprites.factor_values("scale")]
        assert np.all(np.diff(areas) > 0), (shape, areas)


def test_position_directions():
    """position_x moves the shape right (columns); position_y moves it down (rows)."""
    for shape in range(3):
        row0, col0 = centre_of_mass(dsprites.render(shape, 1.0, 0.0, 0.0, 0.5))
        row1, col1 = centre_of_mass(dsprites.render(shape, 1.0, 0.0, 1.0, 0.5))
        assert col1 - col0 == pytest.approx(32, abs=1.5) and abs(row1 - row0) < 0.5
        row0, col0 = centre_of_mass(dsprites.render(shape, 1.0, 0.0, 0.5, 0.0))
        row1, col1 = centre_of_mass(dsprites.render(shape, 1.0, 0.0, 0.5, 1.0))
        assert row1 - row0 == pytest.approx(32, abs=1.5) and abs(col1 - col0) < 0.5


def test_orientation_convention():
    """Heart tip down at 0 (mass above centre); a quarter turn counter-clockwise puts the
    lobes on the left; the ellipse is wider than tall at 0 and taller than wide at π/2."""
    centre = 31.5
    row, col = centre_of_mass(dsprites.render("heart", 1.0, 0.0, 0.5, 0.5))
    assert row < centre - 0.5 and abs(col - centre) < 0.1
    row, col = centre_of_mass(dsprites.render("heart", 1.0, QUARTER, 0.5, 0.5))
    assert col < centre - 0.5 and abs(row - centre) < 0.1
    for orientation, wide in ((0.0, True), (QUARTER, False)):
        rows, cols = np.nonzero(dsprites.render("ellipse", 1.0, orientation, 0.5, 0.5))
        width, height = np.ptp(cols) + 1, np.ptp(rows) + 1
        assert (width > 1.5 * height) if wide else (height > 1.5 * width)


def test_shape_areas_are_plausible():
    fractions = [dsprites.render(shape, 1.0, 0.0, 0.5, 0.5).mean() for shape in range(3)]
    square, ellipse, heart = fractions
    assert square > ellipse > heart
    assert all(0.05 < f < 0.12 for f in fractions), fractions
    # At scale 0.5 each area is about a quarter of its scale-1 area.
    for shape, full in enumerate(fractions):
        half = dsprites.render(shape, 0.5, 0.0, 0.5, 0.5).mean()
        assert half / full == pytest.approx(0.25, abs=0.05)


def test_lower_resolution_keeps_the_geometry():
    indices = dsprites.sample_factors(200, np.random.default_rng(3))
    fine = dsprites.render_batch(indices, resolution=64)[..., 0]
    coarse = dsprites.render_batch(indices, resolution=32)[..., 0]
    assert coarse.shape == (200, 32, 32)
    area64, area32 = fine.mean(axis=(1, 2)), coarse.mean(axis=(1, 2))
    np.testing.assert_allclose(area32, area64, rtol=0.25, atol=0.004)
    assert abs(area32.mean() / area64.mean() - 1) < 0.03
    for a, b in zip(fine[:50], coarse[:50]):                   # same centre, in image units
        np.testing.assert_allclose((np.array(centre_of_mass(a)) + 0.5) / 64,
                                   (np.array(centre_of_mass(b)) + 0.5) / 32, atol=0.02)
