"""Train the small CNN classifier whose penultimate layer gives FID / KID features.

    python -m trainers.fit_features --dataset=fashion_mnist
    python -m trainers.fit_features --dataset=mnist            # offline: 4,000 digits

Trains on the train split with labels (same split as tf_dpvae.data), keeps the weights
of the epoch with the best validation accuracy, evaluates them on the test split and
writes into --output_dir (default features/<dataset> under the repository root):

* classifier.keras: the Keras model (input: images in [0, 1]; output: class
  probabilities; layer "features": 128 ReLU units, the FID features);
* metadata.json: dataset, data source, split sizes, test / validation accuracy, feature
  layer, SHA-256 of classifier.keras, flags, date, training time, versions.

Load it with ``tf_dpvae.metrics.features.ClassifierFeatures``. Datasets: mnist,
fashion_mnist, svhn_cropped (celeb_a has no class labels, only binary attributes: use
Inception features for it).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from tf_dpvae import datasets  # noqa: E402
from trainers import data_flags  # noqa: E402

FLAGS = flags.FLAGS
PROGRESS = {"bar": 1, "epoch": 2, "none": 0}  # Keras `verbose` values

data_flags.define(dataset_default=None, names=[
    name for name, spec in datasets.REGISTRY.items() if spec.kind == datasets.IMAGES],
    dataset_help="Dataset whose classifier to train (image datasets; one without class "
                 "labels, such as celeb_a, is refused).")
flags.DEFINE_string("output_dir", None, "Where classifier.keras and metadata.json go "
                    "(default: features/<dataset> under the repository root, or under "
                    "$TF_DPVAE_FEATURES_DIR).")
flags.DEFINE_integer("epochs", None, "Training epochs (default: 10, or 30 for training "
                     "sets under 20,000 images).", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order, dropout and of the "
                     "offline-MNIST permutation (keep 0 to match tf_dpvae.data's split).")
flags.DEFINE_integer("max_train_examples", None, "Train on the first N training images "
                     "only (for quick tests).", lower_bound=1)
flags.DEFINE_enum("progress", "bar", list(PROGRESS), "Console progress: a live bar, one "
                  "line per epoch, or none.")
flags.mark_flag_as_required("dataset")

FEATURE_LAYER = "features"
FEATURE_UNITS = 128
SMALL_TRAIN_SET = 20_000
ARCHITECTURE = ("conv3x3(32)-maxpool-conv3x3(64)-conv3x3(64)-maxpool-"
                "conv3x3(128)-maxpool-dropout(0.25)-flatten-dense(128, relu, "
                "'features')-dropout(0.5)-dense(classes, softmax); ReLU convs, 'same' "
                "padding")


def build_classifier(input_shape, num_classes, seed):
    """Three conv blocks + a 128-unit ReLU feature layer + softmax (see ARCHITECTURE).

    28×28 inputs: 28 → 14 → 7 → 3 after the pools (32×32: 16 → 8 → 4); 278k
    weights for 28×28×1 (1.1 MB saved), 394k for 32×32×3.
    """
    import keras
    from keras import layers

    init = keras.initializers.GlorotUniform
    conv = dict(kernel_size=3, padding="same", activation="relu")
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, (filters, pool) in enumerate(
            ((32, True), (64, False), (64, True), (128, True))):
        x = layers.Conv2D(filters, kernel_initializer=init(seed + i), **conv)(x)
        if pool:
            x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.25, seed=seed)(x)
    x = layers.Flatten()(x)
    features = layers.Dense(FEATURE_UNITS, activation="relu", name=FEATURE_LAYER,
                            kernel_initializer=init(seed + 10))(x)
    x = layers.Dropout(0.5, seed=seed + 1)(features)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities",
                           kernel_initializer=init(seed + 11))(x)
    return keras.Model(inputs, outputs, name="feature_classifier")


def _pipeline(images, labels, batch_size, shuffle, seed):
    import tensorflow as tf

    # Images are already float32 in [0, 1] (tf_dpvae.data's scaling).
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def run():
    import datetime
    import json
    import tempfile
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from tf_dpvae.metrics import features as features_lib

    output_dir = FLAGS.output_dir or os.path.dirname(
        features_lib.default_classifier_path(FLAGS.dataset))

    start = time.time()
    data = features_lib.load_labelled(FLAGS.dataset, data_dir=FLAGS.data_dir,
                                      source=FLAGS.data_source, seed=FLAGS.seed)
    train_x, train_y = data.train
    if FLAGS.max_train_examples is not None:
        train_x = train_x[:FLAGS.max_train_examples]
        train_y = train_y[:FLAGS.max_train_examples]
    epochs = FLAGS.epochs or (30 if len(train_x) < SMALL_TRAIN_SET else 10)
    print(f"fit_features: {FLAGS.dataset} from {data.source}: {len(train_x)} train / "
          f"{len(data.validation[1])} validation / {len(data.test[1])} test images, "
          f"{epochs} epochs", flush=True)

    keras.utils.set_random_seed(FLAGS.seed)
    model = build_classifier(data.element_shape, data.num_classes, FLAGS.seed)
    model.compile(optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best = {"accuracy": -1.0, "epoch": 0, "weights": None}

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            accuracy = float((logs or {}).get("val_accuracy", -1.0))
            if accuracy > best["accuracy"]:
                best.update(accuracy=accuracy, epoch=epoch + 1,
                            weights=self.model.get_weights())

    history = model.fit(
        _pipeline(train_x, train_y, FLAGS.batch_size, True, FLAGS.seed),
        validation_data=_pipeline(*data.validation, 1000, False, 0),
        epochs=epochs, callbacks=[KeepBest()], shuffle=False,  # shuffled above
        verbose=PROGRESS[FLAGS.progress])
    model.set_weights(best["weights"])
    test_loss, test_accuracy = model.evaluate(
        _pipeline(*data.test, 1000, False, 0), verbose=0)
    train_seconds = time.time() - start
    print(f"fit_features: best validation accuracy {best['accuracy']:.4f} (epoch "
          f"{best['epoch']}/{epochs}); test accuracy {test_accuracy:.4f} on "
          f"{len(data.test[1])} images; {train_seconds:.0f} s", flush=True)

    os.makedirs(output_dir, exist_ok=True)
    model_path = os.path.join(output_dir, features_lib.CLASSIFIER_FILENAME)
    # Write next to the target, then rename: a reader never sees half a file.
    # An uncompiled view of the same layers: saved without the optimizer state.
    export = keras.Model(model.inputs, model.outputs, name=model.name)
    fd, tmp_path = tempfile.mkstemp(suffix=".keras", dir=output_dir)
    os.close(fd)
    try:
        export.save(tmp_path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, model_path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    metadata = {
        "dataset": FLAGS.dataset,
        "data_source": data.source,
        "data_source_flag": FLAGS.data_source,
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "input_shape": list(data.element_shape),
        "input_range": [0.0, 1.0],
        "num_train": int(len(train_x)),
        "num_train_available": int(len(data.train[1])),
        "num_validation": int(len(data.validation[1])),
        "num_test": int(len(data.test[1])),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "validation_accuracy": best["accuracy"],
        "best_epoch": best["epoch"],
        "epochs": epochs,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "feature_layer": FEATURE_LAYER,
        "feature_dim": FEATURE_UNITS,
        "architecture": ARCHITECTURE,
        "batch_size": FLAGS.batch_size,
        "learning_rate": FLAGS.learning_rate,
        "seed": FLAGS.seed,
        "max_train_examples": FLAGS.max_train_examples,
        "model_file": features_lib.CLASSIFIER_FILENAME,
        "model_sha256": features_lib.file_digest(model_path),
        "model_bytes": os.path.getsize(model_path),
        "train_seconds": round(train_seconds, 1),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__},
    }
    with open(os.path.join(output_dir, features_lib.METADATA_FILENAME), "w") as f:
        json.dump(metadata, f, indent=2)
        f.write("\n")
    print(f"fit_features: wrote {model_path} ({metadata['model_bytes'] / 1e6:.2f} MB, "
          f"sha256 {metadata['model_sha256'][:12]}) and {features_lib.METADATA_FILENAME}",
          flush=True)
    return metadata


def check_flags():
    """Flag errors that need no data (and no TensorFlow import)."""
    if datasets.get(FLAGS.dataset).num_classes is None:
        raise ValueError(f"--dataset={FLAGS.dataset}: it has no class labels, so no feature "
                         "classifier is trained for it; use Inception-v3 features for it.")
    data_flags.check_data_dir(FLAGS)
    if FLAGS.output_dir is not None and os.path.exists(FLAGS.output_dir) and (
            not os.path.isdir(FLAGS.output_dir)):
        raise ValueError(f"--output_dir={FLAGS.output_dir} exists and is not a directory")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        check_flags()
    except ValueError as error:
        print(f"trainers.fit_features: error: {error}", file=sys.stderr)
        sys.exit(2)
    from trainers import common
    common.exit_on_user_error(run, prog="trainers.fit_features")


if __name__ == "__main__":
    app.run(main)
