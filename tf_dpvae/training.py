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
from tf_dpvae import checkpoint_files, checkpoints, locks
from tf_dpvae import data as data_lib
from tf_dpvae.config import CONFIG_FILENAME, ModelConfig, load_history, steering_fields
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
    jit_compile: bool = False         # XLA-compile the train and validation steps


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
    """A reused --model_dir must hold a model with the same configuration.

    Settings that define the model (architecture, prior, regularizer and its weights,
    seed...) must be those saved in config.json; those that only steer training
    (:func:`tf_dpvae.config.steering_fields`: the learning rates) may change. Returns
    ``{field: [saved, now]}`` of the steering settings that changed. A directory with
    checkpoints but no config.json is refused: the model they hold is unknown.
    """
    try:
        saved = ModelConfig.load(model_dir)
    except FileNotFoundError:
        if checkpoint_files.on_disk(model_dir):
            raise checkpoints.CheckpointError(
                f"--model_dir={model_dir} has checkpoints but no {CONFIG_FILENAME}, so "
                "which model they hold is unknown; put its config.json back (an export "
                f"keeps a copy in <version>/assets.extra/{CONFIG_FILENAME}) or train "
                "into a new --model_dir") from None
        return {}
    old, new = dataclasses.asdict(saved), dataclasses.asdict(config)
    steering = set(steering_fields())
    diffs = [f"--{k}: saved {old[k]!r}, now {new[k]!r}" for k in old
             if old[k] != new[k] and k not in steering]
    if diffs:
        raise ValueError(f"--model_dir={model_dir} holds a model trained with other "
                         f"settings ({'; '.join(diffs)}); use a new --model_dir to train "
                         "this one")
    return {k: [old[k], new[k]] for k in sorted(steering) if old[k] != new[k]}


def prepare_model_dir(model_dir):
    """Create ``model_dir`` if needed; ValueError naming it if it cannot hold a model."""
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ValueError(f"--model_dir={model_dir}: exists and is not a directory")
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--model_dir={model_dir}: cannot create it "
                         f"({error.strerror or error})") from None
    if not os.access(model_dir, os.W_OK | os.X_OK):
        raise ValueError(f"--model_dir={model_dir}: not writable")


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


def apply_learning_rates(model):
    """The learning rates of ``model.config`` into its optimizers (a restore brings
    back those saved with the checkpoint)."""
    model.optimizer.learning_rate = model.config.learning_rate
    model.objective.apply_learning_rates()


def restore_model(model_dir, strategy=None):
    """Rebuild the model saved in ``model_dir`` (config.json + its newest readable
    checkpoint, :func:`tf_dpvae.checkpoints.restore_newest_valid`); the checkpoint's
    prefix is ``model.restored_from``."""
    config = ModelConfig.load(model_dir)
    model = build_model(config, strategy)
    latest = checkpoints.restore_newest_valid(make_checkpoint(model), model, model_dir)
    if latest is None:
        raise FileNotFoundError(f"--model_dir={model_dir}: no checkpoint found")
    model.restored_from = latest
    return model


def train(model_config, train_config):
    """Train (or resume) a model; returns a dict summary of the run.

    Raises ``cbs.TrainingDivergedError`` on a NaN/Inf loss, keeping the last good
    checkpoint.
    """
    tc = train_config
    strategy = make_strategy(tc.strategy)
    chief = is_chief(strategy)
    if not chief:
        return _train(model_config, tc, strategy, chief)
    prepare_model_dir(tc.model_dir)
    with locks.exclusive(tc.model_dir):
        for path in checkpoint_files.remove_leftovers(tc.model_dir):
            logging.warning("removed %s (left by an interrupted write)", path)
        return _train(model_config, tc, strategy, chief)


def _train(model_config, tc, strategy, chief):
    """:func:`train` once the chief holds the model directory's lock."""
    dataset = data_lib.load(model_config.dataset, data_dir=tc.data_dir,
                            source=tc.data_source, seed=model_config.seed,
                            **model_config.dataset_options())
    if model_config.batch_size > dataset.num_train:
        raise ValueError(f"--batch_size={model_config.batch_size} is larger than the "
                         f"{dataset.num_train} training examples of {dataset.name}")
    config = dataclasses.replace(model_config, num_train=dataset.num_train,
                                 input_shape=tuple(dataset.element_shape))
    changed = check_resume_compatible(tc.model_dir, config)

    model = build_model(config, strategy)
    checkpoint = make_checkpoint(model)
    if chief:
        checkpoint_dir = tc.model_dir
        restored = checkpoints.restore_newest_valid(checkpoint, model, tc.model_dir,
                                                    move_unreadable=True)
        corrupt = os.path.join(tc.model_dir, checkpoint_files.CORRUPT_DIRNAME)
        if restored is None and os.path.isdir(corrupt) and os.listdir(corrupt):
            raise checkpoints.CheckpointError(
                f"--model_dir={tc.model_dir}: it has no readable checkpoint left (the "
                f"unreadable ones are in {corrupt}); to train this model from step 0, "
                f"delete {corrupt}, or use a new --model_dir")
    else:
        checkpoint_dir = _worker_checkpoint_dir(tc.model_dir,
                                                strategy.cluster_resolver.task_id)
        restored = checkpoints.restore_newest_valid(checkpoint, model, checkpoint_dir)
    apply_learning_rates(model)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir,
                                         max_to_keep=tc.max_checkpoints)
    if restored:
        logging.info("resumed from %s", restored)
    start_step = cbs.global_step(model)
    if chief:
        entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "from_step": start_step,
                 "to_step": tc.train_steps, **config.steering()}
        if changed:
            entry["changed"] = changed
        config.save(tc.model_dir, history=load_history(tc.model_dir) + [entry])
    if tc.strategy != "multi_worker":
        # Set before fit() makes its train function (compile would reset the optimizer).
        model.steps_per_execution = steps_per_execution(tc, start_step)
    if tc.jit_compile and tc.strategy == "multi_worker":
        raise ValueError("--jit_compile: not with --strategy=multi_worker, whose custom "
                         "training loop runs as a plain graph")
    model.jit_compile = tc.jit_compile
    if tc.jit_compile and not model.jit_compile:
        raise ValueError("--jit_compile: Keras cannot compile this model with XLA here "
                         "(a layer without XLA support, or op determinism enabled)")
    if chief:
        print(f"tf_dpvae: {config.regularizer} / {config.prior} prior on {dataset.name} "
              f"({dataset.num_train} training examples, {dataset.source}); "
              f"steps {start_step} -> {tc.train_steps}; model_dir {tc.model_dir}", flush=True)
        if model.jit_compile:
            print("tf_dpvae: training and validation steps compiled with XLA "
                  "(--jit_compile)", flush=True)
        for name, (old, new) in changed.items():
            print(f"tf_dpvae: --{name} changed from {old} to {new} at step {start_step} "
                  f"(recorded in {CONFIG_FILENAME})", flush=True)

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
        k = getattr(model, "steps_per_execution", 1) or 1
        message = (f"training diverged at step {guard.bad_step} ({guard.bad_logs}; the "
                   f"loss is checked every {k} steps); training stopped. ")
        if chief:
            message += _set_aside_unverified(tc.model_dir, guard.bad_step, k)
        raise cbs.TrainingDivergedError(message)
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


def _set_aside_unverified(model_dir, bad_step, k):
    """After a non-finite loss seen at ``bad_step`` (losses checked every ``k`` steps):
    move into ``diverged/`` the checkpoints whose weights' own loss was not seen
    finite, and say what is kept (the end of the NaN message).

    The loss of step s is computed on the weights of checkpoint s − 1, and the check
    at ``bad_step`` covers steps ``bad_step − k + 1 .. bad_step``: a checkpoint c is
    verified only if c + 1 ≤ bad_step − k. The others may be exactly the weights that
    diverged (an Adam step at a huge learning rate gives finite weights whose loss is
    infinite), and resuming from them would diverge again whatever the learning rate.
    """
    present = checkpoint_files.on_disk(model_dir)
    unverified = [p for p in present if checkpoint_files.step_of(p) + 1 > bad_step - k]
    for prefix in unverified:
        where = checkpoint_files.quarantine(prefix, checkpoint_files.DIVERGED_DIRNAME)
    kept = [p for p in present if p not in unverified]
    checkpoint_files.write_state(model_dir, kept)
    moved = (f" ({', '.join(os.path.basename(p) for p in unverified)}, not verified, "
             f"moved to {where})" if unverified else "")
    if kept:
        return (f"The last checkpoint whose loss was seen finite is kept: {kept[0]}"
                f"{moved}; rerun with the same --model_dir and a lower --learning_rate "
                "to continue from it, or check the data.")
    return (f"No checkpoint before the divergence was verified{moved}; rerun with the "
            "same --model_dir and a lower --learning_rate to start again from step 0, "
            "or check the data.")


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
    readable = [p for p in checkpoint_files.on_disk(model_dir)
                if checkpoints.unreadable(p) is None]
    latest = readable[0] if readable else None
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
