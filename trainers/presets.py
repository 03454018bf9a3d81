"""The study's base configurations: where each preset's flagfile is, and the configs
``trainers.fit`` would build from it (the library's study takes configs, not flags).

``paper``: ``trainers/configs/<dataset>/base.flags`` with ``--regularizer`` and
``--prior`` (Table 2 and Appendix C, the same for both priors). ``official``: the
released configs as they are, per prior:
``trainers/configs/<dataset>/official/<regularizer>_<prior>.flags``.
"""

import os

from tf_dpvae import datasets
from trainers import common

CONFIG_DIR = os.path.join("trainers", "configs")  # flagfiles name each other from the repo root


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
