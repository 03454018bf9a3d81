"""ModelConfig: everything needed to rebuild a trained model, saved as JSON."""

import dataclasses
import json
import os

from tf_dpvae.objectives import paper_config_weights

CONFIG_FILENAME = "config.json"

# The paper's batch size per dataset (Appendix C; two moons as MNIST): the B of the
# conversion of Table 2's weights to our per-example loss (tf_dpvae/objectives.py).
PAPER_BATCH_SIZE = {"moons": 100, "mnist": 100, "fashion_mnist": 100, "svhn_cropped": 50,
                    "celeb_a": 50}

# What DESIGN §4 uses per dataset; flags left unset take these.
DATASET_DEFAULTS = {
    "moons": dict(architecture="mlp", likelihood="gaussian", latent_dim=2,
                  batch_size=100, gaussian_scale=0.1, learn_gaussian_scale=False),
    "mnist": dict(architecture="conv28", likelihood="bernoulli", latent_dim=2,
                  batch_size=100, gaussian_scale=0.1, learn_gaussian_scale=False),
    "fashion_mnist": dict(architecture="conv28", likelihood="bernoulli", latent_dim=2,
                          batch_size=100, gaussian_scale=0.1, learn_gaussian_scale=False),
    "svhn_cropped": dict(architecture="conv32", likelihood="gaussian", latent_dim=32,
                         batch_size=50, gaussian_scale=0.1, learn_gaussian_scale=True),
    "celeb_a": dict(architecture="conv64", likelihood="gaussian", latent_dim=64,
                    batch_size=50, gaussian_scale=0.1, learn_gaussian_scale=True),
}
for _name, _defaults in DATASET_DEFAULTS.items():
    _defaults.update(paper_config_weights(PAPER_BATCH_SIZE[_name]))
_WEIGHTS_AT_100 = paper_config_weights(100)


@dataclasses.dataclass
class ModelConfig:
    """Model, prior, objective and optimizer settings (the flags of ``trainers.fit``).

    Regularizer weights follow the per-example convention of :mod:`tf_dpvae.objectives`
    (official batch loss / B); the defaults are Table 2 converted at B = 100, and the
    trainer's flags default to the conversion at the paper's B of the chosen dataset
    (``DATASET_DEFAULTS``).
    """

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
    # prior
    prior: str = "decoupled"
    flow_blocks: int = 6
    flow_hidden_units: int = 64
    flow_hidden_layers: int = 2
    flow_masks: str = "alternate"
    flow_bound_shift: bool = False
    # objective
    regularizer: str = "beta_h"
    analytic_kl: bool = True             # closed-form KL under the standard normal prior
    kl_samples: int = 1                   # Monte Carlo samples for the KL otherwise
    beta: float = _WEIGHTS_AT_100["beta"]
    capacity_gamma: float = _WEIGHTS_AT_100["capacity_gamma"]
    capacity_max: float = _WEIGHTS_AT_100["capacity_max"]
    capacity_stop_steps: int = 100_000
    tc_alpha: float = _WEIGHTS_AT_100["tc_alpha"]
    tc_beta: float = _WEIGHTS_AT_100["tc_beta"]
    tc_gamma: float = _WEIGHTS_AT_100["tc_gamma"]
    factor_gamma: float = _WEIGHTS_AT_100["factor_gamma"]
    info_alpha: float = _WEIGHTS_AT_100["info_alpha"]
    info_lambda: float = _WEIGHTS_AT_100["info_lambda"]
    mmd_bandwidth_sq: float | None = None
    # optimization
    learning_rate: float = 1e-4
    discriminator_learning_rate: float = 1e-4
    batch_size: int = 100
    seed: int = 0

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
