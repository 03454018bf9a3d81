"""The study's base configurations: where each preset's flagfile is, and the configs
``trainers.fit`` would build from it (the library's study takes configs, not flags).

``paper``: ``trainers/configs/<dataset>/base.flags`` with ``--regularizer`` and
``--prior`` (Table 2 and Appendix C, the same for both priors). ``official``: the
released configs as they are, per prior:
``trainers/configs/<dataset>/official/<regularizer>_<prior>.flags``.
"""

import json
import os

from tf_dpvae import datasets
from trainers import common

CONFIG_DIR = os.path.join("trainers", "configs")  # flagfiles name each other from the repo root
# The steps of the ``long`` budget, measured by trainers.knee (committed).
KNEE_BUDGET = os.path.join("docs", "results", "knee", "budget.json")
BUDGET_NAMES = ("smoke", "cpu", "long", "paper")
LONG_LEARNING_RATE = 1e-4      # the paper's


def budget(name, datasets_wanted=(), knee_budget=KNEE_BUDGET):
    """The study budget called ``name``: one of tf_dpvae.study.BUDGETS, or ``long`` —
    for each image dataset the steps at which the validation −ELBO of the plain VAE
    and of its decoupled twin have flattened (``knee_budget``, written by
    ``python -m trainers.knee``), at the paper's learning rate 1e-4; two moons as
    shipped (10,000 steps, its flagfile's learning rate); the paper's evaluation
    sizes. Raises ValueError naming a wanted dataset that has no measured budget."""
    from tf_dpvae import study
    if name != "long":
        if name not in study.BUDGETS:
            raise ValueError(f"--budget={name!r}: expected one of {BUDGET_NAMES}")
        return study.BUDGETS[name]
    measured = {}
    if os.path.exists(knee_budget):
        with open(knee_budget) as f:
            measured = {k: int(v) for k, v in json.load(f).items()}
    images = {n for n in datasets.names() if datasets.get(n).kind == datasets.IMAGES}
    missing = [d for d in datasets_wanted if d in images and d not in measured]
    if missing:
        raise ValueError(f"--budget=long: {knee_budget} has no measured steps for "
                         f"{', '.join(missing)}; run python -m trainers.knee "
                         f"--datasets={','.join(missing)} first")
    # Datasets of points (two moons) train as shipped: the cpu budget's steps and
    # their flagfiles' learning rates.
    cpu = study.BUDGETS["cpu"]
    points = [n for n in datasets.names() if n not in images]
    steps = {**{n: cpu.steps_for(n) for n in points}, **measured}
    learning_rate = {**{n: cpu.learning_rate_for(n) for n in points},
                     "*": LONG_LEARNING_RATE}
    return study.Budget(
        "long", steps=steps, learning_rate=learning_rate,
        eval_options=dict(study.BUDGETS["paper"].eval_options),
        description="the steps at which the plain VAE's validation −ELBO has flattened "
                    "with both priors (trainers.knee: " + (", ".join(
                        f"{d} {s:,}" for d, s in sorted(measured.items()))
                        or "not measured yet") +
                    ") at learning rate 1e-4; two moons as shipped (10,000 steps); the "
                    "paper's evaluation sizes")


def base_args(spec):
    """The command-line arguments of the spec's base configuration (its preset)."""
    known = spec.dataset in datasets.REGISTRY
    folder = os.path.join(CONFIG_DIR, datasets.get(spec.dataset).config_dir if known
                          else spec.dataset)
    if spec.preset == "paper":
        path = os.path.join(folder, "base.flags")
        args = [f"--flagfile={path}", f"--regularizer={spec.regularizer}",
                f"--prior={spec.prior}"]
    else:
        path = os.path.join(folder, spec.preset, f"{spec.regularizer}_{spec.prior}.flags")
        args = [f"--flagfile={path}"]
    if not os.path.isdir(CONFIG_DIR):
        raise FileNotFoundError(f"{CONFIG_DIR}: not found; run the study from the "
                                "repository root (the flagfiles name each other from there)")
    if not os.path.exists(path):
        unknown = ("" if known else f" (unknown dataset {spec.dataset!r}; expected one "
                   f"of {datasets.names()})")
        raise ValueError(f"--datasets/--regularizers/--preset: no flagfile {path}{unknown}")
    return args


def base_configs(spec, out, extra_args=()):
    """(ModelConfig, TrainConfig) of the spec's base configuration, as trainers.fit
    builds them from its flagfile (and ``extra_args``, e.g. ``--precision=...``)."""
    return common.configs_from_args(base_args(spec) + list(extra_args)
                                    + [f"--model_dir={spec.directory(out)}"])


def run_configs(spec, budget, out, **options):
    """(ModelConfig, TrainConfig) of one run: its base configuration, budget applied."""
    from tf_dpvae import study
    model_config, train_config, _ = study.apply_budget(
        spec, budget, out, *base_configs(spec, out), **options)
    return model_config, train_config


def run_one(spec, budget, out, extra_args=(), **options):
    """Resolve the spec's base configuration (plus ``extra_args``) and train and
    evaluate it."""
    from tf_dpvae import study
    return study.run_one(spec, budget, out, base_configs(spec, out, extra_args),
                         base_args=base_args(spec) + list(extra_args), **options)


# Held on a run's directory while a study process trains and evaluates it, so that
# several study processes can share one --out and --store (each takes the runs no other
# holds): a run claimed elsewhere, or recorded meanwhile, is skipped.
CLAIM_FILENAME = ".study_claim"


def claim_and_run(spec, budget, out, store, options):
    """``run_one`` under the run's claim; None when another process holds the claim or
    the run was recorded (in ``store``, else ``out``) since this study was planned."""
    from tf_dpvae import locks, study
    directory = spec.directory(out)
    os.makedirs(directory, exist_ok=True)
    try:
        with locks.exclusive(directory, flag="--out", filename=CLAIM_FILENAME):
            if study.finished(spec, store or out) is not None:
                return None
            return run_one(spec, budget, out, **options)
    except locks.LockedError:
        return None
