"""ModelConfig: everything needed to rebuild a trained model, saved as JSON."""

import dataclasses
import json
import os

CONFIG_FILENAME = "config.json"

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


@dataclasses.dataclass
class ModelConfig:
    """Model, prior, objective and optimizer settings (the flags of ``trainers.fit``).

    Regularizer weights follow the per-example convention of :mod:`tf_dpvae.objectives`.
    """

    dataset: str = "moons"
    input_shape: tuple = (2,)
    num_train: int = 2000                 # dataset size N (β-TC's stratified sampling)
    architecture: str = "mlp"
    latent_dim: int = 2
    likelihood: str = "gaussian"
    gaussian_scale: float = 0.1
    learn_gaussian_scale: bool = False
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
    beta: float = 4.0
    capacity_gamma: float = 15.0
    capacity_max: float = 25.0
    capacity_stop_steps: int = 100_000
    tc_alpha: float = 1.0
    tc_beta: float = 4.0
    tc_gamma: float = 15.0
    factor_gamma: float = 10.0
    info_alpha: float = 0.0
    info_lambda: float = 10.99
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
