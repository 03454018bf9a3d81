"""Feature extractors for FID / KID, and a labelled data loader for training classifiers.

A *feature extractor* is any object with

* ``name`` (str): identifies the features, to be reported with every score computed from
  them (DESIGN §5: never compare numbers from different extractors), e.g.
  ``"inception_v3_pool3"`` or ``"classifier:fashion_mnist@3f2a9c0d1e4b"``;
* ``feature_dim`` (int): F;
* ``__call__(images, batch_size=None, verbose=False) -> np.ndarray [N, F]`` (float32),
  where ``images`` is an array [N, H, W, C] (or [N, H, W] for grey images) of pixels in
  [0, 1], or an unbatched ``tf.data.Dataset`` of such images (or of ``(image, ...)``
  tuples). Pixels are clipped to [0, 1]. Features are computed in batches, with an
  optional progress bar.

Implementations:

* :class:`InceptionFeatures`: the 2048-d average-pool ("pool3") activations of Keras'
  ImageNet Inception-v3, read from a weights file on disk. Nothing is ever downloaded.
  Note that these Keras weights are *not* the TF1 graph used by the TTUR / pytorch-fid
  reference code, so the numbers are not comparable with FIDs published in papers.
* :class:`ClassifierFeatures`: the penultimate-layer (128-d) activations of a small CNN
  classifier trained on the dataset by ``python -m trainers.fit_features``.

:func:`make_extractor` picks one; :func:`default_classifier_path` says where
``trainers.fit_features`` saves classifiers by default.

:func:`load_labelled` stacks the labelled splits of
``tf_dpvae.data.load(..., with_labels=True)`` into memory for ``trainers.fit_features``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
import warnings

import numpy as np

from tf_dpvae import data as data_lib
from tf_dpvae import datasets

# --------------------------------------------------------------------------------------
# Locations.
# --------------------------------------------------------------------------------------

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Overrides the default features directory (<repo>/features) when set.
FEATURES_DIR_ENV = "TF_DPVAE_FEATURES_DIR"

CLASSIFIER_FILENAME = "classifier.keras"
METADATA_FILENAME = "metadata.json"

INCEPTION_WEIGHTS_FILENAME = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
# MD5 of the official file, as keras.applications.InceptionV3 checks it on download.
INCEPTION_WEIGHTS_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"
INCEPTION_SIZE = 299
INCEPTION_NAME = "inception_v3_pool3"
# Where Keras caches downloads when the home directory is not writable.
_FALLBACK_KERAS_DIRS = (os.path.join("/tmp", ".keras"),)

# Image datasets with class labels a classifier can be trained on (tf_dpvae/datasets.py;
# CelebA has only binary attributes, no classes).
CLASS_NAMES = {name: spec.class_names for name, spec in datasets.REGISTRY.items()
               if spec.kind == datasets.IMAGES and spec.class_names is not None}
LABELLED_DATASETS = tuple(CLASS_NAMES)
NUM_CLASSES = {name: len(names) for name, names in CLASS_NAMES.items()}

EXTRACTOR_KINDS = ("auto", "inception", "classifier")


def default_features_dir():
    """``$TF_DPVAE_FEATURES_DIR`` if set, else ``<repo root>/features``."""
    return os.environ.get(FEATURES_DIR_ENV) or os.path.join(REPO_ROOT, "features")


def default_classifier_path(dataset, features_dir=None):
    """``<features_dir>/<dataset>/classifier.keras``.

    ``features_dir`` defaults to :func:`default_features_dir` (``<repo>/features``, or
    ``$TF_DPVAE_FEATURES_DIR``). ``trainers.fit_features`` writes there by default.
    """
    return os.path.join(features_dir or default_features_dir(), dataset,
                        CLASSIFIER_FILENAME)


def keras_cache_dir():
    """Keras' cache directory (``$KERAS_HOME`` or ``~/.keras``)."""
    try:
        from keras.src.backend import config as keras_config
        return keras_config.keras_home()
    except (ImportError, AttributeError):  # pragma: no cover - other Keras versions
        return os.environ.get("KERAS_HOME",
                              os.path.join(os.path.expanduser("~"), ".keras"))


def default_inception_weights_path():
    """The no-top Inception-v3 weights in the Keras cache, or None if not there.

    Looks in ``<keras cache>/models/`` and ``/tmp/.keras/models/`` (where Keras caches
    when the home directory is not writable).
    """
    for base in (keras_cache_dir(), *_FALLBACK_KERAS_DIRS):
        path = os.path.join(base, "models", INCEPTION_WEIGHTS_FILENAME)
        if os.path.isfile(path):
            return path
    return None


def file_digest(path, algorithm="sha256"):
    """Hex digest of a file's bytes."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# The extractor interface.
# --------------------------------------------------------------------------------------


@typing.runtime_checkable
class FeatureExtractor(typing.Protocol):
    """What FID code needs from a feature extractor (see the module docstring)."""

    name: str
    feature_dim: int

    def __call__(self, images, batch_size=None, verbose=False) -> np.ndarray:
        ...


def _image_batches(images, batch_size):
    """Yields float32 numpy batches [B, H, W, C] from an array or an unbatched dataset.

    Also returns the total count (None if unknown) as the first value.
    """
    import tensorflow as tf

    if isinstance(images, tf.data.Dataset):
        cardinality = int(images.cardinality())
        total = cardinality if cardinality >= 0 else None
        # tf.data passes tuple elements as separate arguments.
        ds = images.map(lambda *parts: data_lib.example_image(parts[0]) if len(parts) == 1 else parts[0])
        ds = ds.batch(batch_size)

        def gen():
            for batch in ds.as_numpy_iterator():
                yield batch
        return total, gen()
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C] (or [N, H, W]); got shape "
                         f"{array.shape}.")

    def gen():
        for start in range(0, len(array), batch_size):
            yield array[start:start + batch_size]
    return len(array), gen()


class _BatchedExtractor:
    """Shared batching / progress / checking; subclasses set ``_fn`` and the shapes."""

    name: str
    feature_dim: int
    default_batch_size = 256
    # Expected (H, W, C) of the input images; None entries are not checked.
    expected_image_shape: tuple = (None, None, None)

    def _prepare(self, batch):
        """float32 batch in [0, 1] with the checks common to all extractors."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[..., None]
        if batch.ndim != 4:
            raise ValueError(f"{self.name}: images must be [N, H, W, C]; got a batch of "
                             f"shape {batch.shape}.")
        for actual, expected, what in zip(batch.shape[1:], self.expected_image_shape,
                                          ("height", "width", "channels")):
            if expected is not None and actual != expected:
                raise ValueError(
                    f"{self.name}: images of shape {batch.shape[1:]} do not match the "
                    f"extractor's input {tuple(self.expected_image_shape)} ({what}).")
        if not np.isfinite(batch).all():
            raise ValueError(f"{self.name}: images contain NaN or infinite values.")
        return np.clip(batch, 0.0, 1.0)

    def __call__(self, images, batch_size=None, verbose=False):
        """Features [N, F] (float32) of images [N, H, W, C] in [0, 1] (clipped)."""
        import keras

        batch_size = batch_size or self.default_batch_size
        total, batches = _image_batches(images, batch_size)
        progbar = keras.utils.Progbar(total, unit_name="image") if verbose else None
        outputs, done = [], 0
        for batch in batches:
            batch = self._prepare(batch)
            outputs.append(np.asarray(self._fn(batch), dtype=np.float32))
            done += len(batch)
            if progbar is not None:
                progbar.update(done)
        if not outputs:
            return np.zeros((0, self.feature_dim), np.float32)
        return np.concatenate(outputs, axis=0)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} F={self.feature_dim}>"


# --------------------------------------------------------------------------------------
# Inception-v3.
# --------------------------------------------------------------------------------------


class InceptionFeatures(_BatchedExtractor):
    """2048-d pool3 features of Keras' ImageNet Inception-v3, from weights on disk.

    Preprocessing of images x ∈ [0, 1]^{H×W×C}: bilinear resize to 299×299, grey (C = 1)
    repeated to 3 channels, then scaled as ``inception_v3.preprocess_input`` does,
    x ↦ 2x − 1 ∈ [−1, 1]. The network is ``keras.applications.InceptionV3(
    include_top=False, pooling="avg", weights=<path>, input_shape=(299, 299, 3))``.

    ``name`` is ``"inception_v3_pool3"`` for the official Keras weights file (checked by
    its MD5); other files get ``"inception_v3_pool3@<sha256[:12]>"`` and a warning.

    Args:
      weights_path: the ``..._notop.h5`` weights file. Default: the file in the Keras
        cache (``~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``).
      batch_size: default images per forward pass.

    Raises:
      FileNotFoundError: no weights file. This class never downloads anything.
    """

    default_batch_size = 50

    def __init__(self, weights_path=None, batch_size=None):
        path = weights_path or default_inception_weights_path()
        if path is None or not os.path.isfile(path):
            where = (f"{weights_path} does not exist" if weights_path else
                     f"no {INCEPTION_WEIGHTS_FILENAME} in the Keras cache "
                     f"({os.path.join(keras_cache_dir(), 'models')})")
            raise FileNotFoundError(
                f"Inception-v3 weights not found: {where}. Nothing is downloaded here; "
                f"copy the Keras ImageNet no-top weights file ({INCEPTION_WEIGHTS_FILENAME}, "
                "from keras.applications on a machine with network access) to that "
                "directory, or pass its path (--inception_weights=PATH; in "
                "trainers.evaluate: --feature_extractor=inception --features_path=PATH); "
                "or use the classifier "
                "features instead (trained by `python -m trainers.fit_features "
                "--dataset=...`).")
        self.weights_path = os.path.abspath(path)
        if file_digest(self.weights_path, "md5") == INCEPTION_WEIGHTS_MD5:
            self.name = INCEPTION_NAME
        else:
            self.name = f"{INCEPTION_NAME}@{file_digest(self.weights_path)[:12]}"
            warnings.warn(f"{self.weights_path} is not the official Keras Inception-v3 "
                          f"no-top weights file (MD5 differs); features are named "
                          f"{self.name}.", stacklevel=2)
        if batch_size:
            self.default_batch_size = batch_size

        import keras
        import tensorflow as tf

        self.model = keras.applications.InceptionV3(
            include_top=False, pooling="avg", weights=self.weights_path,
            input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
        self.feature_dim = int(self.model.output.shape[-1])
        model = self.model

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)])
        def fn(images):
            # Grey images were repeated to 3 channels in _prepare.
            images = tf.image.resize(images, (INCEPTION_SIZE, INCEPTION_SIZE),
                                     method="bilinear")
            return model(images * 2.0 - 1.0, training=False)

        self._fn = fn

    def _prepare(self, batch):
        batch = super()._prepare(batch)
        if batch.shape[-1] not in (1, 3):
            raise ValueError(f"{self.name}: images need 1 or 3 channels; got "
                             f"{batch.shape[-1]}.")
        if batch.shape[-1] == 1:
            batch = np.repeat(batch, 3, axis=-1)
        return batch


# --------------------------------------------------------------------------------------
# Classifier trained by trainers.fit_features.
# --------------------------------------------------------------------------------------


def _fit_command(dataset):
    return f"python -m trainers.fit_features --dataset={dataset or '<dataset>'}"


def read_classifier_metadata(path):
    """The ``metadata.json`` saved next to a classifier ``.keras`` file, as a dict."""
    meta_path = os.path.join(os.path.dirname(os.path.abspath(path)), METADATA_FILENAME)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(
            f"{meta_path} is missing: a classifier needs the metadata.json that "
            f"`{_fit_command(None)}` writes next to it.")
    with open(meta_path) as f:
        return json.load(f)


class ClassifierFeatures(_BatchedExtractor):
    """Penultimate-layer activations of a classifier saved by ``trainers.fit_features``.

    The classifier (``classifier.keras``) takes images in [0, 1] of the dataset's shape;
    its ``metadata.json`` names the dataset and the feature layer (a 128-unit ReLU dense
    layer). ``name`` is ``"classifier:<dataset>@<sha256 of the .keras file, 12 hex>"``,
    so features of different classifiers never share a name.

    Args:
      path: the ``.keras`` file; default :func:`default_classifier_path` of ``dataset``.
      dataset: dataset name (used for the default path and checked against the
        metadata).
      batch_size: default images per forward pass.

    Raises:
      FileNotFoundError: no classifier (or metadata) file; the message says how to
        train one.
    """

    default_batch_size = 500

    def __init__(self, path=None, dataset=None, batch_size=None, features_dir=None):
        if path is None:
            if dataset is None:
                raise ValueError("ClassifierFeatures needs a path or a dataset.")
            path = default_classifier_path(dataset, features_dir)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No feature classifier at {path}. Train one with `{_fit_command(dataset)}` "
                "(it writes features/<dataset>/classifier.keras and metadata.json; use "
                "--output_dir to put it elsewhere and pass that path here).")
        self.path = os.path.abspath(path)
        self.metadata = read_classifier_metadata(self.path)
        meta_dataset = self.metadata.get("dataset")
        if dataset is not None and meta_dataset != dataset:
            raise ValueError(f"{self.path} is a classifier for {meta_dataset!r}, not "
                             f"{dataset!r}.")
        self.dataset = meta_dataset
        self.sha256 = file_digest(self.path)
        recorded = self.metadata.get("model_sha256")
        if recorded and recorded != self.sha256:
            warnings.warn(f"{self.path} does not match the SHA-256 recorded in its "
                          "metadata.json; the metadata may describe another model.",
                          stacklevel=2)
        self.name = f"classifier:{self.dataset}@{self.sha256[:12]}"
        if batch_size:
            self.default_batch_size = batch_size

        import keras
        import tensorflow as tf

        classifier = keras.saving.load_model(self.path, compile=False)
        layer_name = self.metadata.get("feature_layer", "features")
        try:
            layer = classifier.get_layer(layer_name)
        except ValueError as err:
            raise ValueError(f"{self.path} has no layer {layer_name!r} (named as the "
                             "feature layer in its metadata.json).") from err
        self.classifier = classifier
        self.model = keras.Model(classifier.inputs, layer.output)
        self.feature_dim = int(layer.output.shape[-1])
        self.expected_image_shape = tuple(classifier.inputs[0].shape[1:])
        model = self.model

        @tf.function(input_signature=[
            tf.TensorSpec([None, *self.expected_image_shape], tf.float32)])
        def fn(images):
            return model(images, training=False)

        self._fn = fn

    @property
    def test_accuracy(self):
        return self.metadata.get("test_accuracy")


def make_extractor(kind, dataset, path=None, features_dir=None, batch_size=None):
    """Builds a feature extractor.

    Args:
      kind: ``"inception"`` (``path`` = weights file, default the Keras cache),
        ``"classifier"`` (``path`` = ``.keras`` file, default
        ``default_classifier_path(dataset, features_dir)``), or ``"auto"``: with a
        ``path``, the classifier if it ends in ``.keras``, else Inception-v3 with those
        weights; without, Inception-v3 if its weights are in the Keras cache, otherwise
        the default classifier (DESIGN §5).
      dataset: dataset name of the images.
      path: see ``kind``.
      features_dir: directory of the trained classifiers (default ``<repo>/features``).
      batch_size: default images per forward pass.

    Returns:
      An :class:`InceptionFeatures` or :class:`ClassifierFeatures`.
    """
    if kind not in EXTRACTOR_KINDS:
        raise ValueError(f"Unknown feature extractor {kind!r}; expected one of "
                         f"{EXTRACTOR_KINDS}.")
    if kind == "auto":
        if path is not None:
            kind = "classifier" if path.endswith(".keras") else "inception"
        elif default_inception_weights_path() is not None:
            kind = "inception"
        else:
            kind = "classifier"
    if kind == "inception":
        return InceptionFeatures(path, batch_size=batch_size)
    return ClassifierFeatures(path, dataset=dataset, batch_size=batch_size,
                              features_dir=features_dir)


# --------------------------------------------------------------------------------------
# Labelled data, in memory (for training the classifiers).
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelledDataset:
    """One dataset's three splits with labels, in memory.

    Each split is ``(images, labels)``: float32 images [N, H, W, C] in [0, 1] and int64
    labels [N], exactly as ``tf_dpvae.data.as_numpy`` stacks the splits of
    ``tf_dpvae.data.load(..., with_labels=True)`` (same images, same order).
    """

    name: str
    source: str
    num_classes: int
    class_names: tuple
    train: tuple
    validation: tuple
    test: tuple

    @property
    def element_shape(self):
        return tuple(self.train[0].shape[1:])

    def split(self, name):
        return {"train": self.train, "validation": self.validation,
                "test": self.test}[name]


def load_labelled(name, data_dir=None, source="auto", seed=0):
    """:func:`tf_dpvae.data.load` with ``with_labels=True``, stacked into memory.

    Same arguments, sources, splits and errors as :func:`tf_dpvae.data.load` (no
    download unless ``source="tfds"``); each split goes through
    :func:`tf_dpvae.data.as_numpy`.

    Raises:
      ValueError: ``name`` has no classes to train a classifier on (moons, celeb_a)
        or a bad ``source``.
      tf_dpvae.data.DatasetUnavailableError: the data is not on disk.
    """
    if name not in LABELLED_DATASETS:
        raise ValueError(
            f"{name!r} has no class labels to train a classifier on; labelled datasets "
            f"are {LABELLED_DATASETS}; use Inception features for it.")
    dataset = data_lib.load(name, data_dir=data_dir, source=source, seed=seed,
                            with_labels=True)
    train, validation, test = (data_lib.as_numpy(split) for split in
                               (dataset.train, dataset.validation, dataset.test))
    return LabelledDataset(name=name, source=dataset.source,
                           num_classes=dataset.num_classes, class_names=CLASS_NAMES[name],
                           train=train, validation=validation, test=test)
