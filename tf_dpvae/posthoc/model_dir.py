"""Post-hoc priors of a model directory written by ``trainers.fit``: fit one and store it
beside the model (``<model_dir>/posthoc/<kind>/``), or load it back for that model.

The stored prior records the checkpoint step it was fitted at; loading it for a model
that has trained on since is refused (its q(z) has moved: refit).
"""

import os

from tf_dpvae import data as data_lib
from tf_dpvae import locks
from tf_dpvae.posthoc import base
from tf_dpvae.posthoc import registry


def directory(model_dir, kind):
    """Where a fitted prior of ``kind`` lives: ``<model_dir>/posthoc/<kind>``."""
    return os.path.join(model_dir, registry.SUBDIR, kind)


def _step(model):
    return int(model.optimizer.iterations.numpy())


def fit_model_dir(model_dir, kind, options, settings=None, *, data_dir=None,
                  data_source="auto", say=print):
    """Fit a post-hoc prior of ``kind`` to the newest checkpoint of ``model_dir`` (on
    its own training split) and write it to :func:`directory`. Holds the model
    directory's lock while it works. Returns (prior, info, where)."""
    from tf_dpvae.training import restore_model

    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"--model_dir={model_dir}: not a directory")
    registry.get(kind)
    with locks.exclusive(model_dir):
        model = restore_model(model_dir)
        config = model.config
        dataset = data_lib.load(config.dataset, data_dir=data_dir, source=data_source,
                                seed=config.seed, **config.dataset_options())
        say(f"[fit_prior] {kind} prior for {config.regularizer} / {config.prior} prior "
            f"at step {_step(model)}: encoding {dataset.name}'s training split")
        prior, info = registry.fit(kind, model, dataset.train, options, settings)
        info = {**info, "model_step": _step(model), "model_dir": model_dir,
                "checkpoint": os.path.basename(str(model.restored_from))}
        where = base.save(prior, directory(model_dir, kind), info)
    return prior, info, where


def load_for_model(model, model_dir, kind):
    """The prior of ``kind`` fitted for ``model`` (restored from ``model_dir``);
    FileNotFoundError / ValueError naming the file or flag and the fix."""
    registry.get(kind, flag="--posthoc_prior")
    where = directory(model_dir, kind)
    if not os.path.exists(os.path.join(where, base.PRIOR_FILE)):
        raise FileNotFoundError(
            f"--posthoc_prior={kind}: no fitted prior in {where}; fit one with "
            f"python -m trainers.fit_prior --model_dir={model_dir} --prior={kind}")
    record = base.read_record(where)
    fitted_at, now = record.get("model_step"), _step(model)
    if fitted_at is not None and int(fitted_at) != now:
        raise ValueError(f"{os.path.join(where, base.PRIOR_FILE)}: fitted at step "
                         f"{fitted_at}, but the model is at step {now}; refit it with "
                         f"python -m trainers.fit_prior --model_dir={model_dir} "
                         f"--prior={kind}")
    return registry.load(where)
