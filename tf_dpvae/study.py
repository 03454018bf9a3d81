"""The study behind ``python -m trainers.study``: every regularizer with both priors.

One *run* is (dataset, regularizer, prior, seed): train it from its base configuration
(the application resolves it: ``trainers.study`` reads the dataset's flagfile of the
chosen preset) at the chosen budget (:func:`apply_budget`, which changes configs, never
flag strings), then evaluate it (:func:`tf_dpvae.evaluation.evaluate`). Runs live in
``<out>/<dataset>/<regularizer>_<prior>/seed<k>/`` and end with ``study_run.json``; a
run that has one is skipped when the study is started again, a run without one
resumes its training from its last checkpoint.

The report (:mod:`tf_dpvae.study_report`) reads only those files.
"""

import dataclasses
import json
import os
import time

from tf_dpvae import objectives, priors
from tf_dpvae.metrics import registry as metric_registry

REGULARIZERS = objectives.REGULARIZERS
PRIORS = (priors.STANDARD, priors.DECOUPLED)   # the pair the paper compares
PRESETS = ("paper", "official")
COLUMNS = metric_registry.table_columns()   # ((result key, title), ...) of every metric
# The columns of the paper's Table 1, the order of each objective's PAPER_TABLE1_MNIST.
PAPER_COLUMNS = ("fid", "fid_lp", "skl", "nll_nats")
RUN_FILENAME = "study_run.json"
STUDY_FILENAME = "study.json"

# The paper's Table 1, MNIST columns (Inception FIDs; NLL ×10³), as each objective
# declares it: only for the relative change the decoupled prior makes there, next to
# ours. {regularizer: (standard, dp)}.
PAPER_MNIST = {name: cls.PAPER_TABLE1_MNIST for name, cls in objectives.REGISTRY.items()
               if cls.PAPER_TABLE1_MNIST is not None}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long each run trains and how much the evaluation draws.

    ``steps`` and ``learning_rate`` map a dataset to its value (key ``"*"`` for the
    rest); a learning rate of None keeps the base configuration's. When a budget trains
    fewer steps than the base configuration, every setting an objective declares
    ``scales_with_steps`` (β-VAE-B's capacity schedule) is compressed by the same
    factor (C reaches C_max at the same fraction of the run).
    """

    name: str
    steps: dict
    learning_rate: dict
    eval_options: dict
    description: str

    def steps_for(self, dataset):
        if dataset in self.steps:
            return self.steps[dataset]
        if "*" in self.steps:
            return self.steps["*"]
        raise ValueError(f"the {self.name} budget has no steps for {dataset!r} (it has "
                         f"{sorted(self.steps)})")

    def learning_rate_for(self, dataset):
        return self.learning_rate.get(dataset, self.learning_rate.get("*"))


BUDGETS = {
    "smoke": Budget(
        "smoke", steps={"*": 30}, learning_rate={"*": 1e-3},
        eval_options=dict(num_samples=300, skl_samples=300, nll_samples=5,
                          nll_max_examples=20, leakage_samples=500, max_examples=1000,
                          disentanglement_train=300, disentanglement_test=200),
        description="seconds per run, for the tests: checks that everything runs and "
                    "is written, not what the numbers are"),
    "cpu": Budget(
        "cpu", steps={"moons": 10_000, "dsprites": 10_000, "*": 2_500},
        learning_rate={"moons": None, "*": 1e-3},
        eval_options=dict(num_samples=10_000, skl_samples=5000, nll_samples=100,
                          nll_max_examples=500, leakage_samples=10_000),
        description="what a 2-core CPU finishes in about an hour per dataset (two seeds "
                    "of 12 runs): the shipped moons flagfiles as they are (10,000 steps); "
                    "images 2,500 steps instead of 100,000, at learning rate 1e-3 instead "
                    "of 1e-4 (the same for both priors); dSprites (its flagfile's "
                    "sub-grid at 32×32) 10,000 steps at 1e-3"),
    "paper": Budget(
        "paper", steps={"*": 100_000}, learning_rate={"*": None},
        eval_options=dict(num_samples=10_000, skl_samples=5000, nll_samples=1000,
                          nll_max_examples=1000, leakage_samples=10_000),
        description="the paper's 100,000 iterations with the flagfiles' settings"),
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run. ``preset`` names its base configuration: ``paper`` (Table 2 and
    Appendix C as written, the same for both priors) or ``official`` (the released
    configs as they are, per prior); the application resolves it."""

    dataset: str
    regularizer: str
    prior: str
    seed: int
    preset: str = "paper"

    @property
    def name(self):
        return f"{self.dataset}/{self.regularizer}_{self.prior}/seed{self.seed}"

    def directory(self, out):
        return os.path.join(out, self.dataset, f"{self.regularizer}_{self.prior}",
                            f"seed{self.seed}")


def plan(datasets, regularizers=None, priors=PRIORS, seeds=1, preset="paper"):
    """Every run, ordered so that the two priors of a pair run next to each other and
    a whole seed of a dataset finishes before the next seed starts."""
    if preset not in PRESETS:
        raise ValueError(f"--preset={preset!r}: expected one of {PRESETS}")
    regularizers = tuple(PAPER_MNIST) if regularizers is None else regularizers
    unknown = sorted(set(regularizers) - set(REGULARIZERS))
    if unknown:
        raise ValueError(f"--regularizers: unknown {unknown}; expected some of "
                         f"{REGULARIZERS}")
    return [RunSpec(d, r, p, s, preset) for d in datasets for s in range(seeds)
            for r in regularizers for p in priors]


def finished(spec, out):
    """The run's record if it finished (trained and evaluated, or diverged), else None."""
    path = os.path.join(spec.directory(out), RUN_FILENAME)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_study_dir(out, budget, datasets_flags):
    """Refuse to mix budgets (or data options) in one --out; record them otherwise."""
    path = os.path.join(out, STUDY_FILENAME)
    wanted = {"budget": budget.name, **datasets_flags}
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        diffs = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in wanted.items()
                 if saved.get(k) != v]
        if diffs:
            raise ValueError(f"--out={out} holds a study run with other settings "
                             f"({'; '.join(diffs)}); use another --out")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(wanted, f, indent=2)


def apply_budget(spec, budget, out, model_config, train_config, *, data_dir=None,
                 data_source="auto", verbose=2):
    """The run's configs: its base configs with the budget, seed and directory applied.

    Returns (model_config, train_config, overrides), ``overrides`` the changed fields
    {name: value} (what to add to the base configuration's command line).
    """
    steps = budget.steps_for(spec.dataset)
    model_changes = {"seed": spec.seed}
    train_changes = {"model_dir": spec.directory(out), "train_steps": steps,
                     "data_source": data_source, "verbose": verbose}
    if data_dir:
        train_changes["data_dir"] = data_dir
    # The official preset keeps each released learning rate (they differ per prior).
    learning_rate = budget.learning_rate_for(spec.dataset) if spec.preset == "paper" else None
    if learning_rate is not None:
        model_changes["learning_rate"] = learning_rate
    base_steps = train_config.train_steps
    if steps < base_steps:
        for _, setting in objectives.all_settings():
            if setting.scales_with_steps:
                value = getattr(model_config, setting.config_name)
                model_changes[setting.config_name] = max(1, round(value * steps / base_steps))
    for name in ("checkpoint_every", "sample_every", "summary_every", "steps_per_epoch"):
        if getattr(train_config, name) > steps:
            train_changes[name] = steps
    return (dataclasses.replace(model_config, **model_changes),
            dataclasses.replace(train_config, **train_changes),
            {**model_changes, **train_changes})


def run_one(spec, budget, out, base_configs, *, base_args=(), data_dir=None,
            data_source="auto", extractor="classifier", features_dir=None, verbose=2):
    """Train and evaluate one run (resuming either); write and return its record.

    ``base_configs`` is (ModelConfig, TrainConfig) of the spec's base configuration;
    ``base_args`` the command-line arguments that give it (for the record's command).
    """
    import keras

    from tf_dpvae import callbacks as cbs
    from tf_dpvae import checkpoint_files
    from tf_dpvae import evaluation, training

    directory = spec.directory(out)
    model_config, train_config, overrides = apply_budget(
        spec, budget, out, *base_configs, data_dir=data_dir, data_source=data_source,
        verbose=verbose)
    overrides = {k: v for k, v in overrides.items() if k != "verbose"}
    args = list(base_args) + [f"--{k}={v}" for k, v in overrides.items()]
    record = {"run": spec.name, **dataclasses.asdict(spec), "budget": budget.name,
              "train_steps": train_config.train_steps, "flags": args,
              "command": "python -m trainers.fit " + " ".join(args)}
    present = checkpoint_files.on_disk(directory)
    record["resumed_from_step"] = checkpoint_files.step_of(present[0]) if present else 0
    keras.backend.clear_session()
    started = time.time()
    try:
        summary = training.train(model_config, train_config)
    except cbs.TrainingDivergedError as error:
        record.update(status="diverged", message=str(error),
                      train_seconds=round(time.time() - started, 1))
        _write_record(directory, record)
        return record
    record.update(train_seconds=round(time.time() - started, 1), step=summary["step"],
                  steps_per_second=summary.get("steps_per_second"))

    started = time.time()
    options = evaluation.EvalOptions(seed=spec.seed, verbose=verbose > 0,
                                     **budget.eval_options)
    results, written, _ = evaluation.evaluate_model_dir(
        directory, options, data_dir=data_dir, data_source=data_source,
        feature_extractor=extractor, features_dir=features_dir)
    record.update(status="done", eval_seconds=round(time.time() - started, 1),
                  metrics=results, figures={k: os.path.relpath(p, out)
                                            for k, (p, _) in written.items()})
    _write_record(directory, record)
    return record


def _write_record(directory, record):
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, RUN_FILENAME + ".tmp")
    from tf_dpvae.evaluation import write_json
    write_json(temporary, record)  # strict JSON: non-finite numbers become null
    os.replace(temporary, os.path.join(directory, RUN_FILENAME))


# The run figures the report shows (of the first seed): what a store keeps.
REPORT_FIGURES = ("samples", "moons_panels", "latent_line", "traversals")


def publish(record, out, store):
    """Copy a finished run's record from the study directory ``out`` into the results
    store ``store`` (committed in the repository), in the same layout, so that
    :func:`tf_dpvae.study_report.write_report` builds the report from the store alone.
    Seed 0 brings the figures the report shows (:data:`REPORT_FIGURES`); the other
    seeds bring none (their records name no figures), keeping the store small. Returns
    the path."""
    import shutil
    spec = RunSpec(record["dataset"], record["regularizer"], record["prior"],
                   record["seed"], record.get("preset", "paper"))
    kept = {}
    if record["seed"] == 0:
        for name, relative in (record.get("figures") or {}).items():
            source = os.path.join(out, relative)
            if name in REPORT_FIGURES and os.path.exists(source):
                target = os.path.join(store, relative)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(source, target)
                kept[name] = relative
    _write_record(spec.directory(store), {**record, "figures": kept})
    return os.path.join(spec.directory(store), RUN_FILENAME)
