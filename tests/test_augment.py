"""Tests of data.augment_official_mnist / augment_batches (official dpVAE augmentation).

Each op is checked against an answer computed independently in numpy: the
torchvision brightness / contrast formulas, and a brute-force nearest-neighbour
inverse mapping of torchvision's F.affine (plus np.rot90 / np.roll for special
cases).
"""

import numpy as np
import pytest
import tensorflow as tf

from tf_dpvae import data


def _images(n, seed=0, size=28):
    """Asymmetric test images in [0, 1]: noise plus a bright off-centre bar."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n, size, size, 1)).astype(np.float32) ** 3
    x[:, 4:7, 15:24, 0] = 1.0
    return x


# --------------------------------------------------------------------------
# (a) brightness / contrast vs the torchvision formulas.
# --------------------------------------------------------------------------


def _np_brightness(x, b):
    # torchvision adjust_brightness: _blend(img, zeros, b) = clamp(b*img, 0, 1).
    return np.clip(b * x, 0.0, 1.0)


def _np_contrast(x, c):
    # torchvision adjust_contrast: _blend(img, mean of the grey image, c).
    mean = x.mean()
    return np.clip(c * x + (1.0 - c) * mean, 0.0, 1.0)


@pytest.mark.parametrize("brightness_first", [True, False])
def test_brightness_contrast_matches_torchvision_formula(brightness_first):
    x = _images(6, seed=1)
    b = np.array([0.5, 0.8, 1.0, 1.2, 1.5, 1.37], np.float32)
    c = np.array([1.5, 0.5, 1.0, 1.3, 0.7, 1.11], np.float32)
    got = data.adjust_brightness_contrast(x, b, c, brightness_first).numpy()
    for i in range(len(x)):
        if brightness_first:
            want = _np_contrast(_np_brightness(x[i].astype(np.float64), b[i]), c[i])
        else:
            want = _np_brightness(_np_contrast(x[i].astype(np.float64), c[i]), b[i])
        np.testing.assert_allclose(got[i], want, atol=2e-6, rtol=0)
    assert got.min() >= 0.0 and got.max() <= 1.0
    # Factors of 1 leave the image unchanged; the clipping is active in some cases.
    np.testing.assert_allclose(got[2], x[2], atol=1e-7)
    assert np.any(got == 1.0) and np.any(got == 0.0)


def test_brightness_contrast_order_differs_only_through_clipping():
    x = _images(2, seed=2)
    b = np.array([1.5, 1.5], np.float32)
    c = np.array([1.5, 1.5], np.float32)
    bc = data.adjust_brightness_contrast(x, b, c, [True, True]).numpy()
    cb = data.adjust_brightness_contrast(x, b, c, [False, False]).numpy()
    assert not np.allclose(bc, cb)
    mixed = data.adjust_brightness_contrast(x, b, c, [True, False]).numpy()
    np.testing.assert_array_equal(mixed[0], bc[0])
    np.testing.assert_array_equal(mixed[1], cb[1])


# --------------------------------------------------------------------------
# (b) affine warp vs a brute-force nearest-neighbour inverse mapping.
# --------------------------------------------------------------------------


def _np_affine(img, angle, tx, ty, scale):
    """Brute force torchvision F.affine (PIL path), nearest, fill 0, one [H, W] image.

    torchvision's forward map about the centre c (x right, y down; PIL centre
    (W/2, H/2) in pixel-edge coordinates = ((W-1)/2, (H-1)/2) in pixel-index
    ones) is  out = s * R(a) (in - c) + c + t,  R(a) = [[cos, -sin], [sin, cos]]
    ("clockwise direction" in its docstring). For each output pixel solve that
    for `in` and take the nearest input pixel as PIL does: floor of the
    pixel-edge coordinate, i.e. floor(in + 0.5). Returns (image, ambiguous),
    ambiguous marking pixels whose source lies within 1e-3 of a rounding tie.
    """
    h, w = img.shape
    rad = np.deg2rad(angle)
    forward = scale * np.array([[np.cos(rad), -np.sin(rad)],
                                [np.sin(rad), np.cos(rad)]])
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    out = np.zeros_like(img)
    ambiguous = np.zeros(img.shape, bool)
    for y in range(h):
        for x in range(w):
            src = np.linalg.solve(forward, np.array([x, y]) - centre - [tx, ty]) + centre
            frac = (src + 0.5) - np.floor(src + 0.5)
            ambiguous[y, x] = np.any(np.minimum(frac, 1 - frac) < 1e-3)
            ix, iy = np.floor(src + 0.5).astype(int)
            if 0 <= ix < w and 0 <= iy < h:
                out[y, x] = img[iy, ix]
    return out, ambiguous


def test_affine_matches_brute_force_inverse_mapping():
    rng = np.random.default_rng(3)
    x = _images(12, seed=3)
    angle = np.concatenate([[0.0, 5.0, -5.0, 30.0, -47.0, 90.0],
                            rng.uniform(-5, 5, 6)]).astype(np.float32)
    translate = np.concatenate([[[0, 0], [2, -3], [-3, 1], [0, 0], [1, 1], [-2, 2]],
                                rng.integers(-3, 4, (6, 2))]).astype(np.float32)
    scale = np.concatenate([[1.0, 0.9, 1.1, 1.0, 0.75, 1.2],
                            rng.uniform(0.9, 1.1, 6)]).astype(np.float32)
    got = data.affine_transform(x, angle, translate, scale).numpy()
    assert got.shape == x.shape and got.dtype == np.float32
    total_ambiguous = 0
    for i in range(len(x)):
        want, ambiguous = _np_affine(x[i, ..., 0].astype(np.float64), float(angle[i]),
                                     *translate[i], float(scale[i]))
        total_ambiguous += ambiguous.sum()
        np.testing.assert_array_equal(got[i, ..., 0][~ambiguous],
                                      want[~ambiguous].astype(np.float32),
                                      err_msg=f"image {i}")
    assert total_ambiguous < 0.01 * x[..., 0].size


def test_positive_angle_is_clockwise_like_torchvision_affine():
    # F.affine: "rotation angle in degrees ..., clockwise direction"; np.rot90
    # with k=1 turns counter-clockwise (axis 0 down, axis 1 right as displayed).
    x = _images(1, seed=4)
    zero = np.zeros((1, 2), np.float32)
    for angle, k in ((90.0, -1), (-90.0, 1), (180.0, 2)):
        got = data.affine_transform(x, [angle], zero, [1.0]).numpy()
        np.testing.assert_array_equal(got[0, ..., 0], np.rot90(x[0, ..., 0], k=k),
                                      err_msg=f"angle {angle}")
    # A pixel right of the centre moves below it for +90 (clockwise on screen).
    dot = np.zeros((1, 28, 28, 1), np.float32)
    dot[0, 13, 25, 0] = 1.0  # 11.5 px right of the centre (13.5, 13.5), 0.5 px up
    got = data.affine_transform(dot, [90.0], zero, [1.0]).numpy()
    assert np.argwhere(got[0, ..., 0]).tolist() == [[25, 14]]


def _np_shift(img, tx, ty):
    """np.roll by (ty rows, tx columns) with zero fill instead of wrapping."""
    out = np.roll(img, (ty, tx), axis=(0, 1))
    if ty > 0:
        out[:ty] = 0
    elif ty < 0:
        out[ty:] = 0
    if tx > 0:
        out[:, :tx] = 0
    elif tx < 0:
        out[:, tx:] = 0
    return out


@pytest.mark.parametrize("tx,ty", [(3, 0), (0, 3), (-2, 1), (1, -3), (-3, -3), (0, 0)])
def test_integer_translation_is_a_zero_filled_roll(tx, ty):
    # Positive translations move the content right (tx) / down (ty), as in torchvision.
    x = _images(1, seed=5)
    got = data.affine_transform(x, [0.0], [[tx, ty]], [1.0]).numpy()
    np.testing.assert_array_equal(got[0, ..., 0], _np_shift(x[0, ..., 0], tx, ty))


# --------------------------------------------------------------------------
# (c) the random augmentation: composition, determinism, frequencies, ranges.
# --------------------------------------------------------------------------


def test_augment_equals_numpy_composition_of_its_parameters():
    x = _images(32, seed=6)
    seed = tf.constant([7, 8], tf.int64)
    got = data.augment_official_mnist(x, seed).numpy()
    p = {k: v.numpy() for k, v in data.sample_official_mnist_params(32, seed).items()}
    ambiguous_total = 0
    for i in range(len(x)):
        img = x[i, ..., 0].astype(np.float64)
        if p["apply_jitter"][i]:
            b, c = p["brightness"][i], p["contrast"][i]
            img = (_np_contrast(_np_brightness(img, b), c) if p["brightness_first"][i]
                   else _np_brightness(_np_contrast(img, c), b))
        ambiguous = np.zeros(img.shape, bool)
        if p["apply_affine"][i]:
            img, ambiguous = _np_affine(img, float(p["angle"][i]), *p["translate"][i],
                                        float(p["scale"][i]))
        ambiguous_total += ambiguous.sum()
        np.testing.assert_allclose(got[i, ..., 0][~ambiguous], img[~ambiguous],
                                   atol=2e-6, rtol=0, err_msg=f"image {i}")
    assert ambiguous_total < 0.01 * x[..., 0].size
    # Both ops, each alone, and neither occur in this batch.
    combos = set(zip(p["apply_jitter"].tolist(), p["apply_affine"].tolist()))
    assert len(combos) == 4


def test_same_seed_same_output_different_seed_different():
    x = _images(16, seed=9)
    a = data.augment_official_mnist(x, tf.constant([1, 2])).numpy()
    b = data.augment_official_mnist(x, tf.constant([1, 2])).numpy()
    c = data.augment_official_mnist(x, tf.constant([1, 3])).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == x.shape and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_each_op_applied_with_probability_one_half():
    n = 20_000
    p = {k: v.numpy() for k, v in
         data.sample_official_mnist_params(n, tf.constant([11, 12])).items()}
    for key in ("apply_jitter", "apply_affine", "brightness_first"):
        assert abs(p[key].mean() - 0.5) < 0.02, key  # 5.7 standard errors
    # Independent of each other.
    assert abs((p["apply_jitter"] & p["apply_affine"]).mean() - 0.25) < 0.02
    # Ranges of torchvision's ColorJitter(0.5, 0.5) and RandomAffine(5, (0.1, 0.1), (0.9, 1.1)).
    for key, low, high in (("brightness", 0.5, 1.5), ("contrast", 0.5, 1.5),
                           ("angle", -5.0, 5.0), ("scale", 0.9, 1.1)):
        assert low <= p[key].min() and p[key].max() <= high, key
        assert p[key].min() < low + 0.01 and p[key].max() > high - 0.01, key
        assert abs(p[key].mean() - (low + high) / 2) < 0.02 * (high - low), key
    t = p["translate"]
    np.testing.assert_array_equal(t, np.round(t))
    # round(U[-2.8, 2.8]): every value in -3..3, P(0) = 1/5.6, P(+-3) = 0.3/5.6.
    assert sorted(np.unique(t).tolist()) == [-3, -2, -1, 0, 1, 2, 3]
    assert abs((t == 0).mean() - 1 / 5.6) < 0.015
    assert abs((t == 3).mean() - 0.3 / 5.6) < 0.01

    # The images themselves: unchanged when neither op is drawn (1/4), and
    # otherwise almost always changed (a nearest-neighbour warp with no
    # translation, a small angle and a scale near 1 can be the identity).
    x = np.tile(_images(1, seed=13), (4000, 1, 1, 1))
    seed = tf.constant([14, 15])
    out = data.augment_official_mnist(x, seed).numpy()
    flags = data.sample_official_mnist_params(4000, seed)
    untouched = ~(flags["apply_jitter"].numpy() | flags["apply_affine"].numpy())
    unchanged = np.all(out == x, axis=(1, 2, 3))
    assert np.all(unchanged[untouched])
    assert np.mean(unchanged & ~untouched) < 0.005
    assert abs(untouched.mean() - 0.25) < 0.03


def test_rejects_colour_images():
    with pytest.raises(ValueError, match="single-channel"):
        data.augment_official_mnist(np.zeros((2, 8, 8, 3), np.float32), [0, 0])


# --------------------------------------------------------------------------
# (d) augment_batches: per-batch seeds that survive .skip() on resume.
# --------------------------------------------------------------------------


def _train_split(with_labels):
    x = _images(40, seed=16)
    if with_labels:
        return tf.data.Dataset.from_tensor_slices((x, np.arange(40, dtype=np.int64)))
    return tf.data.Dataset.from_tensor_slices(x)


def _pipeline(with_labels, seed=3):
    batches = data.batch(_train_split(with_labels), 8, shuffle=True, seed=1,
                         repeat=True, drop_remainder=True)
    return data.augment_batches(batches, seed)


@pytest.mark.parametrize("with_labels", [False, True])
def test_augment_batches_resume_with_skip_is_exact(with_labels):
    full = list(_pipeline(with_labels).take(9).as_numpy_iterator())
    for start_step in (0, 1, 4, 7):
        resumed = list(_pipeline(with_labels).skip(start_step).take(2).as_numpy_iterator())
        for k, batch in enumerate(resumed):
            want = full[start_step + k]
            if with_labels:
                np.testing.assert_array_equal(batch[0], want[0])
                np.testing.assert_array_equal(batch[1], want[1])
            else:
                np.testing.assert_array_equal(batch, want)
    # Batches are augmented with different seeds: one pass is 5 batches, so
    # batch 5 holds the same examples as some earlier batch only by chance;
    # compare against the un-augmented images instead.
    plain = list(data.batch(_train_split(with_labels), 8, shuffle=True, seed=1,
                            repeat=True, drop_remainder=True).take(9).as_numpy_iterator())
    for k in range(9):
        got, clean = (full[k][0], plain[k][0]) if with_labels else (full[k], plain[k])
        assert got.shape == clean.shape
        assert not np.array_equal(got, clean)  # P(all 8 untouched) = 4**-8
        if with_labels:
            np.testing.assert_array_equal(full[k][1], plain[k][1])


def test_augment_batches_counts_batches_from_the_start():
    # Identical batches get different augmentations (the seed depends on k) ...
    x = _images(4, seed=17)
    repeated = tf.data.Dataset.from_tensors(x).repeat(3)
    out = list(data.augment_batches(repeated, 5).as_numpy_iterator())
    assert not np.array_equal(out[0], out[1]) and not np.array_equal(out[1], out[2])
    # ... so skipping *before* augment_batches restarts the count (the wrong order).
    wrong = next(data.augment_batches(repeated.skip(2), 5).as_numpy_iterator())
    assert not np.array_equal(wrong, out[2])
    right = next(data.augment_batches(repeated, 5).skip(2).as_numpy_iterator())
    np.testing.assert_array_equal(right, out[2])
    # Batch k uses augment_official_mnist with seed stateless_fold_in(base, k).
    base = tf.constant([5, data._AUGMENT_SEED_SALT], tf.int64)
    want = data.augment_official_mnist(
        x, tf.random.experimental.stateless_fold_in(base, tf.constant(1, tf.int64)))
    np.testing.assert_array_equal(out[1], want.numpy())
    # Another seed, another stream; a seed pair is accepted too.
    other = next(data.augment_batches(repeated, 6).as_numpy_iterator())
    assert not np.array_equal(other, out[0])
    pair = next(data.augment_batches(repeated, [5, data._AUGMENT_SEED_SALT])
                .as_numpy_iterator())
    np.testing.assert_array_equal(pair, out[0])


def test_augment_batches_dict_elements():
    x = _images(4, seed=18)
    ds = tf.data.Dataset.from_tensors({"image": x, "label": np.arange(4)})
    out = next(data.augment_batches(ds, 0).as_numpy_iterator())
    assert set(out) == {"image", "label"}
    np.testing.assert_array_equal(out["label"], np.arange(4))
    assert out["image"].shape == x.shape
