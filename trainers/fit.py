"""Train a regularized VAE with a standard or decoupled prior.

    python -m trainers.fit --flagfile=trainers/configs/moons/base.flags \
        --regularizer=beta_h --prior=decoupled --model_dir=runs/moons/beta_h_decoupled

``trainers/configs/<dataset>/base.flags`` holds a dataset's settings from the paper;
``--regularizer`` and ``--prior`` choose the model (every regularizer's weights default
to its Table 2 values at the dataset's paper batch size).

Reusing --model_dir resumes from its last checkpoint. Writes checkpoints, config.json,
TensorBoard events (train/, validation/) and samples.png into --model_dir.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from trainers import common  # noqa: E402

FLAGS = flags.FLAGS
common.define_model_flags()
common.define_train_flags()


def run():
    if FLAGS.logical_cpus:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus)
    from tf_dpvae import training
    model_config = common.model_config_from_flags()
    train_config = common.train_config_from_flags()
    return training.train(model_config, train_config)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from tf_dpvae.callbacks import TrainingDivergedError
    try:
        common.exit_on_user_error(run, prog="trainers.fit")
    except TrainingDivergedError as error:
        print(f"trainers.fit: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(3)


if __name__ == "__main__":
    app.run(main)
