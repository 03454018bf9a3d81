"""The post-hoc priors, declared once: each kind's class, and fitting, storing and
attaching one (the rest of the package derives from :data:`POSTHOC`)."""


from tf_dpvae.posthoc import base
from tf_dpvae.posthoc.flow import FlowPrior
from tf_dpvae.posthoc.gmm import GaussianMixturePrior
from tf_dpvae.posthoc.two_stage import TwoStagePrior

POSTHOC = {cls.kind: cls for cls in (GaussianMixturePrior, FlowPrior, TwoStagePrior)}
SUBDIR = "posthoc"


def get(kind, flag="--prior"):
    """The post-hoc prior class of a kind; ValueError naming the flag otherwise."""
    if kind not in POSTHOC:
        raise ValueError(f"{flag}={kind}: expected one of {', '.join(POSTHOC)}")
    return POSTHOC[kind]


def all_settings():
    """[(kind, Setting)] of every post-hoc prior's own settings (names unique)."""
    return [(kind, spec) for kind, cls in POSTHOC.items() for spec in cls.SETTINGS]


def fit(kind, model, train_data, options, settings=None):
    """Fit a post-hoc prior of ``kind`` to ``model``'s q(z) on ``train_data`` (the
    training split). Returns (prior, info): info holds the codes' counts and where they
    came from, the held-out mean log p(z) under the fitted prior and under the model's
    own prior, the fitting seconds, and what the kind reports of its fit."""
    cls = get(kind)
    timer = base.Timer()
    train, validation, about = base.codes(model, train_data, options)
    encode_seconds = timer.seconds
    prior, info = cls.fit(train, validation, options, dict(settings or {}))
    info = {**info, **about,
            "num_train_codes": int(len(train)),
            "num_validation_codes": int(len(validation)),
            "validation_log_prob": base.mean_log_prob(prior, validation),
            "validation_log_prob_model_prior": base.mean_log_prob(model.prior, validation),
            "encode_seconds": encode_seconds, "fit_seconds": timer.seconds,
            "options": vars(options).copy(), "settings": dict(settings or {})}
    return prior, info


def save(prior, where, info):
    """Write a fitted prior into ``where`` (prior.json + weights.npz)."""
    return base.save(prior, where, info)


def load(where):
    """The fitted prior stored in ``where`` (ValueError / FileNotFoundError naming the
    file)."""
    record = base.read_record(where)
    cls = get(record["kind"])
    prior = cls(**record["arguments"], name="prior")
    return base.load_weights(prior, where)


def read_info(where):
    """prior.json of a fitted prior: its kind, arguments and fitting info."""
    return base.read_record(where)


def attach(model, prior):
    """``model`` with ``prior`` in place of its own (for evaluation and export); the
    model's own prior stays in ``model.own_prior``."""
    if int(prior.latent_dim) != int(model.config.latent_dim):
        raise ValueError(f"the fitted prior has L = {prior.latent_dim}, the model "
                         f"L = {model.config.latent_dim}")
    model.own_prior = model.prior
    model.prior = prior
    model.posthoc_kind = prior.kind
    return model
