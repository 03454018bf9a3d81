"""Hyperparameter search with keras-tuner: each trial trains a model with tf_dpvae.

    python -m trainers.tune --flagfile=trainers/configs/moons/base.flags \
        --regularizer=beta_h --prior=decoupled --tuner=random --max_trials=20 --tune_dir=runs/tune/moons_beta_h_dp \
        [--objective=val_loss|skl] [--trial_steps=2000] \
        [--search_space=beta=1:8:log,flow_blocks=2:8]

The searched hyperparameters are declared in ``tf_dpvae/search_space.py`` (the chosen
regularizer's weights, the flow's size for the decoupled prior, the learning rate).
Each trial trains into ``--tune_dir/trials/<trial_id>`` (its own TensorBoard run) and
is scored by the validation negative ELBO (``val_loss``) or by the sKL between prior
and aggregate posterior (``skl``). The tuner's state lives in ``--tune_dir/search``;
rerunning the same command resumes without repeating completed trials. At the end
``--tune_dir/best.flags`` (for ``python -m trainers.fit --flagfile=...``) and
``--tune_dir/trials.md`` are written.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402

from absl import app, flags  # noqa: E402

from trainers import common  # noqa: E402

FLAGS = flags.FLAGS
common.define_model_flags()
common.define_train_flags(model_dir_required=False)  # trials have their own
flags.DEFINE_enum("tuner", "random", ["random", "bayesian", "hyperband"],
                  "Search algorithm (keras-tuner oracle).")
flags.DEFINE_integer("max_trials", 10, "Trials to run in total (resumed runs included).")
flags.DEFINE_string("tune_dir", None, "Directory of the search: tuner state, trial "
                    "model_dirs, best.flags and trials.md.")
flags.DEFINE_enum("objective", "val_loss", ["val_loss", "skl"],
                  "val_loss: validation negative ELBO; skl: symmetric KL between prior "
                  "and aggregate posterior. Both minimized.")
flags.DEFINE_integer("trial_steps", 1000, "Training steps per trial (Hyperband: at its "
                     "largest budget).")
flags.DEFINE_string("search_space", "", "Range overrides, e.g. beta=1:8:log,flow_blocks="
                    "2:8 (name=min:max[:log|linear]).")
flags.DEFINE_integer("skl_samples", 500, "Samples per side of the sKL objective.")
flags.DEFINE_integer("hyperband_max_epochs", 9, "Hyperband: the largest budget in units "
                     "of trial_steps / hyperband_max_epochs.")
flags.DEFINE_integer("objective_max_batches", 50, "Validation batches for val_loss.")

PROG = "trainers.tune"
SEARCH_FLAGS = ("tuner", "max_trials", "tune_dir", "objective", "trial_steps",
                "search_space", "skl_samples", "hyperband_max_epochs",
                "objective_max_batches")


def say(message):
    print(f"[tune] {message}", flush=True)


def check_settings():
    """Every check that can fail before training; returns (base config, params)."""
    from tf_dpvae import search_space
    if FLAGS.tune_dir is None:
        raise ValueError("--tune_dir is required")
    if os.path.exists(FLAGS.tune_dir) and not os.path.isdir(FLAGS.tune_dir):
        raise ValueError(f"--tune_dir={FLAGS.tune_dir}: exists and is not a directory")
    if FLAGS.max_trials < 1:
        raise ValueError(f"--max_trials={FLAGS.max_trials}: run at least 1 trial")
    if FLAGS.trial_steps < 1:
        raise ValueError(f"--trial_steps={FLAGS.trial_steps}: must be at least 1")
    if FLAGS.skl_samples < 1:
        raise ValueError(f"--skl_samples={FLAGS.skl_samples}: must be at least 1")
    if FLAGS.tuner == "hyperband" and FLAGS.hyperband_max_epochs < 2:
        raise ValueError("--hyperband_max_epochs must be at least 2")
    base = common.model_config_from_flags()
    common.train_config_from_flags()
    params = search_space.build_space(base.regularizer, base.prior, FLAGS.search_space)
    check_flag_bounds(params)
    # Every corner of the space must give a valid model (e.g. flow masks vs blocks).
    for p in params:
        for value in (p.min_value, p.max_value):
            common.validate_model_config(dataclasses.replace(base, **{p.name: p.cast(value)}))
    return base, params


def check_flag_bounds(params, flag_values=FLAGS):
    """Every searched range inside its flag's bounds (so that best.flags is accepted
    by trainers.fit); ValueError naming the parameter and the bound."""
    for p in params:
        parser = flag_values[p.name].parser
        low = getattr(parser, "lower_bound", None)
        high = getattr(parser, "upper_bound", None)
        if low is not None and p.min_value < low:
            raise ValueError(f"--search_space: {p.name}={p.spec()}: the minimum is below "
                             f"--{p.name}'s lower bound {low:g}")
        if high is not None and p.max_value > high:
            raise ValueError(f"--search_space: {p.name}={p.spec()}: the maximum is above "
                             f"--{p.name}'s upper bound {high:g}")


def make_tuner(base, params):
    import keras_tuner
    from tf_dpvae import data as data_lib
    from tf_dpvae import evaluation, search_space, training
    from tf_dpvae.callbacks import TrainingDivergedError

    hp = search_space.apply(params)
    objective = keras_tuner.Objective(FLAGS.objective, direction="min")
    # keras-tuner reads seed 0 as "no seed" (`seed or random.randint(...)`): shift by one
    # so every --seed, 0 included, gives a reproducible search.
    common_args = dict(objective=objective, hyperparameters=hp, seed=FLAGS.seed + 1,
                       tune_new_entries=False, allow_new_entries=False)
    if FLAGS.tuner == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=FLAGS.max_trials,
                                                        **common_args)
    elif FLAGS.tuner == "bayesian":
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=FLAGS.max_trials, num_initial_points=min(3, FLAGS.max_trials),
            **common_args)
    else:
        oracle = keras_tuner.oracles.HyperbandOracle(
            max_epochs=FLAGS.hyperband_max_epochs, factor=3, **common_args)
        oracle.max_trials = FLAGS.max_trials  # Hyperband has no cap of its own

    base_train = common.train_config_from_flags()
    trials_dir = os.path.join(FLAGS.tune_dir, "trials")

    class DpVAETuner(keras_tuner.Tuner):
        """Each trial: ``training.train`` with the trial's hyperparameters, then score."""

        dataset = None

        def trial_steps(self, trial):
            if FLAGS.tuner != "hyperband":
                return FLAGS.trial_steps
            epochs = trial.hyperparameters.get("tuner/epochs")
            return max(1, math.ceil(FLAGS.trial_steps * epochs / FLAGS.hyperband_max_epochs))

        def run_trial(self, trial, *args, **kwargs):
            import keras
            values = search_space.trial_values(params, trial.hyperparameters)
            config = dataclasses.replace(base, **values)
            model_dir = os.path.join(trials_dir, trial.trial_id)
            steps = self.trial_steps(trial)
            done = len([t for t in self.oracle.trials.values()
                        if t.status == "COMPLETED"])
            say(f"trial {trial.trial_id} ({done + 1}/{FLAGS.max_trials}): "
                + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                + f"; {steps} steps -> {model_dir}")
            # Hyperband: continue from the trial this one was promoted from.
            parent = (trial.hyperparameters.values.get("tuner/trial_id")
                      if FLAGS.tuner == "hyperband" else None)
            if os.path.isdir(model_dir):
                shutil.rmtree(model_dir)  # an interrupted earlier attempt of this trial
            if parent and os.path.isdir(os.path.join(trials_dir, parent)):
                shutil.copytree(os.path.join(trials_dir, parent), model_dir)
            keras.backend.clear_session()
            train_config = dataclasses.replace(base_train, model_dir=model_dir,
                                               train_steps=steps)
            try:
                training.train(config, train_config)
            except TrainingDivergedError as error:
                say(f"trial {trial.trial_id}: FAILED ({error})")
                raise keras_tuner.errors.FailedTrialError(str(error)) from error
            score = self.score(model_dir)
            if not math.isfinite(score):
                say(f"trial {trial.trial_id}: FAILED (objective {score})")
                raise keras_tuner.errors.FailedTrialError(f"objective is {score}")
            say(f"trial {trial.trial_id}: {FLAGS.objective}={score:.6g}")
            return {FLAGS.objective: score}

        def load_dataset(self):
            if self.dataset is None:
                self.dataset = data_lib.load(base.dataset, data_dir=FLAGS.data_dir,
                                             source=FLAGS.data_source, seed=base.seed,
                                             **base.dataset_options())
            return self.dataset

        def score(self, model_dir):
            model = training.restore_model(model_dir)
            dataset = self.load_dataset()
            if FLAGS.objective == "skl":
                results, _ = evaluation.evaluate(model, dataset, evaluation.EvalOptions(
                    metrics=("skl",), figures=False, skl_samples=FLAGS.skl_samples,
                    seed=base.seed, verbose=False))
                return float(results["skl"])
            return validation_loss(model, dataset, base.batch_size)

        def save_model(self, trial_id, model, step=0):
            pass  # train() checkpoints into the trial's model_dir

        def load_model(self, trial):
            return training.restore_model(os.path.join(trials_dir, trial.trial_id))

    return DpVAETuner(oracle, directory=FLAGS.tune_dir, project_name="search",
                      overwrite=False)


def validation_loss(model, dataset, batch_size, max_batches=None):
    """Mean negative ELBO over the validation split (``max_batches``, default
    ``--objective_max_batches``, at most).

    ``model.evaluate`` through the model's trackers: a mean over examples, not the
    last batch.
    """
    from tf_dpvae import data as data_lib
    batches = data_lib.batch(dataset.validation, batch_size, shuffle=False, seed=0,
                             repeat=False, drop_remainder=False)
    if max_batches is None:
        max_batches = FLAGS.objective_max_batches
    results = model.evaluate(batches.take(max_batches), verbose=0,
                             return_dict=True)
    return -float(results["elbo"])


def flag_line(name, value):
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, float):
        return f"--{name}={value!r}"
    return f"--{name}={value}"


def write_best_flags(path, best_values):
    """The base flags (every set model/train flag) + the best hyperparameters."""
    lines = ["# Written by trainers.tune: the base flags with the best trial's "
             "hyperparameters."]
    skip = set(SEARCH_FLAGS) | {"model_dir", "flagfile"}
    names = [f.name for f in dataclasses.fields(common.ModelConfig)
             if f.name in FLAGS and f.name not in ("input_shape", "num_train")]
    names += ["train_steps", "checkpoint_every", "summary_every", "sample_every",
              "steps_per_epoch", "validation_steps", "strategy", "data_dir",
              "data_source", "max_checkpoints", "progress", "logical_cpus"]
    for name in names:
        if name in skip:
            continue
        value = best_values.get(name, getattr(FLAGS, name))
        if value is None:
            continue
        lines.append(flag_line(name, value))
    lines.append(f"--model_dir={os.path.join(FLAGS.tune_dir, 'best')}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_trials_md(path, tuner, params):
    names = [p.name for p in params]
    header = ["trial", *names, FLAGS.objective, "status"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for trial_id in sorted(tuner.oracle.trials):
        trial = tuner.oracle.trials[trial_id]
        values = trial.hyperparameters.values
        cells = [trial_id] + [f"{values[n]:.4g}" if n in values else "" for n in names]
        cells.append("" if trial.score is None else f"{trial.score:.6g}")
        cells.append(str(trial.status))
        rows.append("| " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write(f"# {FLAGS.tuner} search, objective {FLAGS.objective} (min)\n\n"
                + "\n".join(rows) + "\n")


def run():
    base, params = check_settings()
    from tf_dpvae import locks
    os.makedirs(FLAGS.tune_dir, exist_ok=True)
    with locks.exclusive(FLAGS.tune_dir, flag="--tune_dir"):
        return _search(base, params)


def _search(base, params):
    """The search, once --tune_dir is held."""
    from tf_dpvae import search_space
    say(f"{FLAGS.tuner} search of {[p.name + '=' + p.spec() for p in params]} "
        f"for {base.regularizer} / {base.prior} prior on {base.dataset}; objective "
        f"{FLAGS.objective}; up to {FLAGS.max_trials} trials in {FLAGS.tune_dir}")
    tuner = make_tuner(base, params)
    completed = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    if completed:
        say(f"resuming: {len(completed)} trial(s) already completed")
    tuner.search(verbose=0)
    trials = tuner.oracle.trials
    md_path = os.path.join(FLAGS.tune_dir, "trials.md")
    write_trials_md(md_path, tuner, params)
    best = tuner.oracle.get_best_trials(1)
    if not best or best[0].score is None:
        raise ValueError(f"no trial completed (see {md_path})")
    best = best[0]
    best_values = search_space.trial_values(params, best.hyperparameters)
    flags_path = os.path.join(FLAGS.tune_dir, "best.flags")
    write_best_flags(flags_path, best_values)
    say(f"{len(trials)} trial(s); best {best.trial_id}: {FLAGS.objective}="
        f"{best.score:.6g} with "
        + ", ".join(f"{k}={v:.4g}" for k, v in best_values.items()))
    say(f"wrote {md_path} and {flags_path}")
    return best_values


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.exit_on_user_error(run, prog=PROG)


if __name__ == "__main__":
    app.run(main)
