"""ModelConfig: everything needed to rebuild a trained model, saved as JSON."""

import dataclasses
import json
import os

from tf_dpvae import datasets, objectives, priors
from tf_dpvae.objectives import paper_config_weights

CONFIG_FILENAME = "config.json"

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

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        values = dict(values)
        if "input_shape" in values:
            values["input_shape"] = tuple(values["input_shape"])
        return cls(**values)

    def save(self, model_dir):
        os.makedirs(model_dir, exist_ok=True)
        path = os.path.join(model_dir, CONFIG_FILENAME)
        with open(path + ".tmp", "w") as f:
            f.write(self.to_json())
        os.replace(path + ".tmp", path)
        return path

    @classmethod
    def load(cls, model_dir):
        path = os.path.join(model_dir, CONFIG_FILENAME)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"--model_dir={model_dir}: no {CONFIG_FILENAME} there; train a model with "
                "`python -m trainers.fit --model_dir=...` first")
        with open(path) as f:
            return cls.from_dict(json.load(f))


def _settings_fields():
    """(name, type, field) of every registered objective's and prior's settings,
    defaults included."""
    taken = {f.name: "ModelConfig" for f in dataclasses.fields(_ModelConfigBase)}
    out = []
    for variant, spec in objectives.all_settings() + priors.all_settings():
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
