"""Training orchestration: strategy, data, model, checkpoints, resume, summaries.

``train(model_config, train_config)`` is what ``python -m trainers.fit`` runs. Under the
default and mirrored strategies it drives ``model.fit``; under multi-worker it runs a
small custom loop (``strategy.run(model.train_step)``) because Keras 3's ``fit`` fails
with ``MultiWorkerMirroredStrategy`` (DESIGN §8). Both paths call the same
``train_step`` and the same callbacks.
"""

import dataclasses
import json
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_dpvae import callbacks as cbs
from tf_dpvae import checkpoints
from tf_dpvae import data as data_lib
from tf_dpvae.config import ModelConfig
from tf_dpvae.model import DpVAE
from tf_dpvae.optimizers import Adam

STRATEGIES = ("default", "mirrored", "multi_worker")
SAMPLES_FILENAME = "samples.png"


@dataclasses.dataclass
class TrainConfig:
    """How to train (not what): directories, step counts, logging and distribution."""

    model_dir: str
    train_steps: int
    checkpoint_every: int = 1000
    summary_every: int = 100
    sample_every: int = 1000
    steps_per_epoch: int = 500        # progress-bar and validation granularity
    validation_steps: int = 0         # 0: the whole validation split
    strategy: str = "default"
    data_dir: str | None = None
    data_source: str = "auto"
    max_checkpoints: int = 3
    verbose: int = 1
    steps_per_execution: int = 0      # 0: the largest divisor ≤ 100 of the periods


def make_strategy(name):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker reads the cluster from the TF_CONFIG "
                             "environment variable, which is not set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"--strategy={name!r}: expected one of {STRATEGIES}")


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def check_resume_compatible(model_dir, config):
    """A reused --model_dir must hold a model with the same configuration."""
    try:
        saved = ModelConfig.load(model_dir)
    except FileNotFoundError:
        return
    old, new = dataclasses.asdict(saved), dataclasses.asdict(config)
    diffs = [f"--{k}: saved {old[k]!r}, now {new[k]!r}" for k in old if old[k] != new[k]]
    if diffs:
        raise ValueError(f"--model_dir={model_dir} holds a model trained with other "
                         f"settings ({'; '.join(diffs)}); use a new --model_dir to train "
                         "this one")


def build_model(config, strategy=None, steps_per_execution=1):
    """A compiled DpVAE with every variable created (ready to restore or train).

    The initial weights are seeded by ``config.seed`` (``keras.utils.set_random_seed``),
    so two processes with the same config start from the same model. The optimizer is
    Adam with TF's fused update (:mod:`tf_dpvae.optimizers`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = DpVAE(config)
        model.compile(optimizer=Adam(config.learning_rate),
                      steps_per_execution=steps_per_execution)
        model.build_all()
    return model


MAX_STEPS_PER_EXECUTION = 100


def steps_per_execution(tc, start_step):
    """K, the training steps ``model.fit`` runs per call into the graph.

    Callbacks (NaN guard, checkpoints, summaries, stop-at-step) run once per K steps,
    at global steps that are multiples of K, so K must divide every period they act on
    (``summary_every``, ``sample_every``, ``checkpoint_every``, ``steps_per_epoch``),
    ``train_steps`` and the step a run resumes from; ``tc.steps_per_execution`` = 0
    picks the largest such K up to ``MAX_STEPS_PER_EXECUTION``. Between two callback
    calls nothing leaves the graph: no host synchronisation per step.
    """
    periods = (tc.summary_every, tc.sample_every, tc.checkpoint_every, tc.steps_per_epoch,
               tc.train_steps, start_step)
    common = math.gcd(*periods)
    if tc.steps_per_execution:
        if common % tc.steps_per_execution:
            raise ValueError(
                f"--steps_per_execution={tc.steps_per_execution}: must divide "
                "--summary_every, --sample_every, --checkpoint_every, --steps_per_epoch, "
                f"--train_steps and the step resumed from ({start_step}); their greatest "
                f"common divisor is {common}")
        return tc.steps_per_execution
    return max(k for k in range(1, min(common, MAX_STEPS_PER_EXECUTION) + 1)
               if common % k == 0)


def make_checkpoint(model):
    parts = {"model": model, "optimizer": model.optimizer, **model.objective.optimizers}
    return tf.train.Checkpoint(**parts)


def restore_model(model_dir, strategy=None):
    """Rebuild the model saved in ``model_dir`` (config.json + latest checkpoint)."""
    config = ModelConfig.load(model_dir)
    model = build_model(config, strategy)
    latest = tf.train.latest_checkpoint(model_dir)
    if latest is None:
        raise FileNotFoundError(f"--model_dir={model_dir}: no checkpoint found")
    checkpoints.restore(make_checkpoint(model), model, latest)
    return model


def train(model_config, train_config):
    """Train (or resume) a model; returns a dict summary of the run.

    Raises ``cbs.TrainingDivergedError`` on a NaN/Inf loss, keeping the last good
    checkpoint.
    """
    tc = train_config
    strategy = make_strategy(tc.strategy)
    chief = is_chief(strategy)
    dataset = data_lib.load(model_config.dataset, data_dir=tc.data_dir,
                            source=tc.data_source, seed=model_config.seed)
    if model_config.batch_size > dataset.num_train:
        raise ValueError(f"--batch_size={model_config.batch_size} is larger than the "
                         f"{dataset.num_train} training examples of {dataset.name}")
    config = dataclasses.replace(model_config, num_train=dataset.num_train,
                                 input_shape=tuple(dataset.element_shape))
    check_resume_compatible(tc.model_dir, config)
    os.makedirs(tc.model_dir, exist_ok=True)
    if chief:
        config.save(tc.model_dir)

    model = build_model(config, strategy)
    checkpoint = make_checkpoint(model)
    checkpoint_dir = tc.model_dir if chief else _worker_checkpoint_dir(
        tc.model_dir, strategy.cluster_resolver.task_id)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir,
                                         max_to_keep=tc.max_checkpoints)
    if manager.latest_checkpoint:
        checkpoints.restore(checkpoint, model, manager.latest_checkpoint)
        logging.info("resumed from %s", manager.latest_checkpoint)
    start_step = cbs.global_step(model)
    if tc.strategy != "multi_worker":
        # Set before fit() makes its train function (compile would reset the optimizer).
        model.steps_per_execution = steps_per_execution(tc, start_step)
    if chief:
        print(f"tf_dpvae: {config.regularizer} / {config.prior} prior on {dataset.name} "
              f"({dataset.num_train} training examples, {dataset.source}); "
              f"steps {start_step} -> {tc.train_steps}; model_dir {tc.model_dir}", flush=True)

    guard = cbs.NaNGuard()
    callback_list = [guard, cbs.StopAtStep(tc.train_steps),
                     cbs.PeriodicCheckpoint(manager, tc.checkpoint_every)]
    data_points = None
    if chief:
        if config.is_points:
            data_points = data_lib.as_numpy(dataset.train)
        callback_list.append(cbs.Summaries(tc.model_dir, tc.summary_every, tc.sample_every,
                                           data_points=data_points))
    train_batches = data_lib.batch(dataset.train, config.batch_size, shuffle=True,
                                   seed=config.seed, repeat=True, drop_remainder=True)
    if config.augment:
        # Before skip(): batch k draws the same augmentation after a resume.
        train_batches = data_lib.augment_batches(train_batches, config.seed)
    train_batches = train_batches.skip(start_step)
    started = time.time()
    if start_step < tc.train_steps:
        if tc.strategy == "multi_worker":
            _custom_loop(model, strategy, train_batches, callback_list, tc)
        else:
            whole = tc.validation_steps == 0
            validation = data_lib.batch(dataset.validation, config.batch_size,
                                        shuffle=False, seed=config.seed, repeat=not whole,
                                        drop_remainder=False)
            epochs_left = math.ceil((tc.train_steps - start_step) / tc.steps_per_epoch)
            initial_epoch = start_step // tc.steps_per_epoch
            model.fit(train_batches, epochs=initial_epoch + epochs_left,
                      initial_epoch=initial_epoch, steps_per_epoch=tc.steps_per_epoch,
                      validation_data=validation,
                      validation_steps=None if whole else tc.validation_steps,
                      callbacks=callback_list, shuffle=False,
                      verbose=tc.verbose if chief else 0)
    elapsed = time.time() - started
    step = cbs.global_step(model)
    if guard.bad_step is None and not cbs.weights_finite(model):
        guard.bad_step, guard.bad_logs = step, {"weights": "not finite"}
    if guard.bad_step is not None:
        last = manager.latest_checkpoint or "none"
        raise cbs.TrainingDivergedError(
            f"training diverged at step {guard.bad_step} ({guard.bad_logs}; the loss "
            f"is checked every {model.steps_per_execution} steps); "
            f"training stopped. The last good checkpoint is "
            f"kept: {last}. Lower --learning_rate or check the data.")
    if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{step}"):
        manager.save(checkpoint_number=step)
    if not chief:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return {"step": step}
    config.save(tc.model_dir)
    samples_path = os.path.join(tc.model_dir, SAMPLES_FILENAME)
    with open(samples_path, "wb") as f:
        f.write(cbs.samples_png(model, data_points, title=(
            f"{config.regularizer} / {config.prior} prior, step {step}")))
    summary = {"step": step, "seconds": round(elapsed, 1),
               "steps_per_second": round((step - start_step) / elapsed, 2) if elapsed else None,
               "samples": samples_path, "checkpoint": manager.latest_checkpoint}
    with open(os.path.join(tc.model_dir, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"tf_dpvae: done at step {step}; samples in {samples_path}", flush=True)
    return summary


def _worker_checkpoint_dir(model_dir, task_id):
    """A non-chief worker's own checkpoint directory, seeded with the chief's latest.

    Under MultiWorkerMirroredStrategy every worker saves; only the chief's checkpoints
    (in ``model_dir``) are kept, the others go here and the directory is removed at the
    end. A copy of the chief's latest checkpoint makes every worker resume from the
    same step and weights.
    """
    path = os.path.join(model_dir, f"worker_tmp_{task_id}")
    shutil.rmtree(path, ignore_errors=True)
    tf.io.gfile.makedirs(path)
    latest = tf.train.latest_checkpoint(model_dir)
    if latest:
        for name in tf.io.gfile.glob(latest + ".*"):
            tf.io.gfile.copy(name, os.path.join(path, os.path.basename(name)))
        prefix = os.path.basename(latest)
        with tf.io.gfile.GFile(os.path.join(path, "checkpoint"), "w") as f:
            f.write(f'model_checkpoint_path: "{prefix}"\n'
                    f'all_model_checkpoint_paths: "{prefix}"\n')
    return path


def _custom_loop(model, strategy, dataset, callback_list, tc):
    """``strategy.run(model.train_step)`` inside a tf.function, with Keras callbacks."""
    callbacks = keras.callbacks.CallbackList(callback_list, model=model)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function
    def step_fn(iterator):
        per_replica = strategy.run(model.train_step, args=(next(iterator),))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in per_replica.items()}

    model.stop_training = False
    callbacks.on_train_begin()
    progbar = keras.utils.Progbar(tc.train_steps, verbose=tc.verbose if is_chief(strategy)
                                  else 0)
    index = 0  # batch index within the epoch, as model.fit counts it
    while not model.stop_training and cbs.global_step(model) < tc.train_steps:
        if index == 0:
            model.reset_metrics()  # the trackers average over one epoch, as in fit
            callbacks.on_epoch_begin(cbs.global_step(model) // tc.steps_per_epoch)
        logs = {k: float(np.asarray(v)) for k, v in step_fn(iterator).items()}
        callbacks.on_train_batch_end(index, logs)
        progbar.update(cbs.global_step(model), list(logs.items()))
        index = 0 if cbs.global_step(model) % tc.steps_per_epoch == 0 else index + 1
    callbacks.on_train_end()
    dump = os.environ.get("TF_DPVAE_DUMP_WEIGHTS")
    if dump:  # test hook: this worker's own copy of the weights (model.weights order)
        np.savez(dump, *[np.asarray(v.numpy()) for v in model.weights])
