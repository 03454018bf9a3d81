"""ModelConfig: everything needed to rebuild a trained model, saved as JSON.

``config.json`` holds the fields and a ``history``: one entry per training run in the
directory (the step it started from, the step it trained to, the settings that only
steer training, :func:`steering_fields`, and those of them that changed).
"""

import dataclasses
import json
import os

from tf_dpvae import datasets, objectives, priors
from tf_dpvae.objectives import paper_config_weights

CONFIG_FILENAME = "config.json"
HISTORY_KEY = "history"
# ModelConfig fields that steer training without defining the model (besides the
# settings declared with ``steers_training``).
STEERING = ("learning_rate",)

# The paper's batch size per dataset (Appendix C; two moons as MNIST): the B of the
# conversion of Table 2's weights to our per-example loss (tf_dpvae/objectives/).
PAPER_BATCH_SIZE = {name: spec.paper_batch_size
                    for name, spec in datasets.REGISTRY.items()}



def dataset_defaults(name):
    """What DESIGN §4 uses on dataset ``name`` (tf_dpvae/datasets.py), with every
    regularizer's weights converted at its paper batch size; flags left unset take
    these."""
    spec = datasets.get(name)
    return {**spec.model_defaults(), **paper_config_weights(spec.paper_batch_size)}


DATASET_DEFAULTS = {name: dataset_defaults(name) for name in datasets.REGISTRY}

@dataclasses.dataclass
class _ModelConfigBase:
    """The fields every model has; ModelConfig adds each regularizer's settings."""

    dataset: str = "moons"
    input_shape: tuple = (2,)
    num_train: int = 2000                 # dataset size N (β-TC's stratified sampling)
    architecture: str = "mlp"
    latent_dim: int = 2
    likelihood: str = "gaussian"
    gaussian_scale: float = 0.1
    learn_gaussian_scale: bool = False
    mse_weight: float = 1.0               # likelihood "mse": −log p = w·Σ(x̂ − x)² + const
    augment: bool = False                 # the official code's MNIST training augmentation
    # prior (its own settings, e.g. flow_blocks, are declared in tf_dpvae/priors.py)
    prior: str = "decoupled"
    # objective
    regularizer: str = "beta_h"
    analytic_kl: bool = True             # closed-form KL under the standard normal prior
    kl_samples: int = 1                   # Monte Carlo samples for the KL otherwise
    # optimization
    learning_rate: float = 1e-4
    batch_size: int = 100
    seed: int = 0
    precision: str = "float32"            # or "mixed_bfloat16" (tf_dpvae/precision.py)

    @property
    def data_kind(self):
        """``"points"`` or ``"images"``, as tf_dpvae/datasets.py declares the dataset."""
        return datasets.get(self.dataset).kind

    @property
    def is_points(self):
        return self.data_kind == datasets.POINTS

    def dataset_options(self):
        """{setting: value} of the dataset's own settings (what ``data.load`` passes
        to its loader, e.g. dSprites' sub-grid and resolution)."""
        return {spec.config_name: getattr(self, spec.config_name)
                for spec in datasets.get(self.dataset).settings}

    def to_json(self, history=()):
        values = dataclasses.asdict(self)
        if history:
            values[HISTORY_KEY] = list(history)
        return json.dumps(values, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        values = {k: v for k, v in values.items() if k != HISTORY_KEY}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        if "input_shape" in values:
            values["input_shape"] = tuple(values["input_shape"])
        return cls(**values)

    def save(self, model_dir, history=None):
        """Write ``config.json`` atomically; ``history`` None keeps the file's."""
        os.makedirs(model_dir, exist_ok=True)
        path = os.path.join(model_dir, CONFIG_FILENAME)
        if history is None:
            history = load_history(model_dir)
        with open(path + ".tmp", "w") as f:
            f.write(self.to_json(history))
        os.replace(path + ".tmp", path)
        return path

    @classmethod
    def load(cls, model_dir):
        """The config saved in ``model_dir``; FileNotFoundError if there is none,
        ValueError naming the file if it cannot be read as a config."""
        values = _read(model_dir)
        try:
            return cls.from_dict(values)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{os.path.join(model_dir, CONFIG_FILENAME)}: not a model "
                             f"config ({error})") from None

    def steering(self):
        """{field: value} of the fields that only steer training."""
        return {name: getattr(self, name) for name in steering_fields()}


def _read(model_dir):
    path = os.path.join(model_dir, CONFIG_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"--model_dir={model_dir}: no {CONFIG_FILENAME} there; train a model with "
            "`python -m trainers.fit --model_dir=...` first")
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}); restore it from a copy, "
                         "or train into a new --model_dir") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: not a model config (a JSON object expected)")
    return values


def load_history(model_dir):
    """config.json's training history (a list; empty without a readable file)."""
    try:
        history = _read(model_dir).get(HISTORY_KEY, [])
    except (FileNotFoundError, ValueError):
        return []
    return history if isinstance(history, list) else []


def steering_fields():
    """ModelConfig fields that steer training and may change on resume:
    :data:`STEERING` and every setting declared with ``steers_training``."""
    declared = [spec.config_name for _, spec in objectives.all_settings()
                + priors.all_settings() + datasets.all_settings()
                if spec.steers_training]
    return tuple(STEERING) + tuple(declared)


def _settings_fields():
    """(name, type, field) of every registered objective's and prior's settings,
    defaults included."""
    taken = {f.name: "ModelConfig" for f in dataclasses.fields(_ModelConfigBase)}
    out = []
    for variant, spec in (objectives.all_settings() + priors.all_settings()
                          + datasets.all_settings()):
        if spec.config_name in taken:
            raise ValueError(f"{variant!r}: setting {spec.config_name!r} is already "
                             f"declared by {taken[spec.config_name]}")
        taken[spec.config_name] = repr(variant)
        kind = spec.kind if spec.default is not None else spec.kind | None
        out.append((spec.config_name, kind, dataclasses.field(default=spec.default)))
    return out


ModelConfig = dataclasses.make_dataclass(
    "ModelConfig", _settings_fields(), bases=(_ModelConfigBase,),
    namespace={"__module__": __name__, "__doc__": """\
Model, prior, objective and optimizer settings (the flags of ``trainers.fit``).

The fields are those of ``_ModelConfigBase`` plus each registered regularizer's
settings (:func:`tf_dpvae.objectives.base.setting`, e.g. ``beta``, ``capacity_max``,
``tc_gamma``) and each prior's (``priors.DecoupledPrior.SETTINGS``: ``flow_blocks``...). Regularizer weights follow the per-example convention of
:mod:`tf_dpvae.objectives` (official batch loss / B); the defaults are Table 2
converted at B = 100, and the trainer's flags default to the conversion at the paper's
B of the chosen dataset (``DATASET_DEFAULTS``).
"""})
