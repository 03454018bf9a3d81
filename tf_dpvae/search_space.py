"""The hyperparameter search space of ``python -m trainers.tune``, declared once.

Every entry is named after a :class:`tf_dpvae.config.ModelConfig` field and says its
type, range and whether it is sampled on a log scale. Which entries are searched
depends on the base configuration: the weights of the chosen regularizer, the flow's
size for the decoupled prior, and the learning rate always.

Ranges can be overridden from a flag string, e.g. ``beta=1:8:log,flow_blocks=2:8``
(``name=min:max`` with an optional ``:log`` or ``:linear``).
"""

import dataclasses

import keras_tuner

from tf_dpvae import objectives, priors
from tf_dpvae.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched ModelConfig field."""

    name: str
    kind: str            # "float" or "int"
    min_value: float
    max_value: float
    log: bool = False

    def __post_init__(self):
        if self.kind not in ("float", "int"):
            raise ValueError(f"{self.name}: kind must be 'float' or 'int', got {self.kind!r}")
        if not self.min_value < self.max_value:
            raise ValueError(f"--search_space: {self.name}={self.spec()}: empty range "
                             f"(min {self.min_value:g} must be less than max "
                             f"{self.max_value:g})")
        if self.log and self.min_value <= 0:
            raise ValueError(f"--search_space: {self.name}={self.spec()}: log sampling "
                             "needs a positive minimum")
        if self.kind == "int" and (self.min_value != int(self.min_value)
                                   or self.max_value != int(self.max_value)):
            raise ValueError(f"--search_space: {self.name}={self.spec()}: {self.name} "
                             "is an integer; use integer bounds")

    def spec(self):
        return f"{self.min_value:g}:{self.max_value:g}" + (":log" if self.log else "")

    def add_to(self, hp):
        """Declare this parameter on a ``keras_tuner.HyperParameters``."""
        sampling = "log" if self.log else "linear"
        if self.kind == "int":
            return hp.Int(self.name, int(self.min_value), int(self.max_value),
                          sampling=sampling)
        return hp.Float(self.name, float(self.min_value), float(self.max_value),
                        sampling=sampling)

    def cast(self, value):
        return int(value) if self.kind == "int" else float(value)


# ---------------------------------------------------------------------------
# THE declaration: per regularizer, per prior, and for every run.
# ---------------------------------------------------------------------------
def _from_setting(spec):
    low, high, *sampling = spec.search
    return Param(spec.config_name, "int" if spec.kind is int else "float", low, high,
                 log=sampling == ["log"])


# Each regularizer's ranges are declared with its settings (tf_dpvae/objectives/<name>.py,
# at the per-example scale: Table 2's 25, (1, 4, 15), 1000 at B = 100 are 0.25,
# (0.01, 0.04, 0.15), 10, and the ranges span them).
REGULARIZER_PARAMS = {name: tuple(_from_setting(spec) for spec in cls.settings().values()
                                  if spec.search is not None)
                      for name, cls in objectives.REGISTRY.items()}
# Each prior declares its ranges with its settings (tf_dpvae/priors.py).
PRIOR_PARAMS = {name: tuple(_from_setting(spec) for spec in cls.SETTINGS
                            if spec.search is not None)
                for name, cls in priors.PRIORS.items()}
COMMON_PARAMS = (Param("learning_rate", "float", 1e-4, 1e-2, log=True),)

_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
for _p in (*COMMON_PARAMS, *(p for ps in REGULARIZER_PARAMS.values() for p in ps),
           *(p for ps in PRIOR_PARAMS.values() for p in ps)):
    assert _p.name in _FIELDS, f"search space entry {_p.name} is not a ModelConfig field"


def all_params():
    """Every declared parameter by name (whatever the regularizer or prior)."""
    out = {}
    for group in (*REGULARIZER_PARAMS.values(), *PRIOR_PARAMS.values(), COMMON_PARAMS):
        for p in group:
            out[p.name] = p
    return out


def default_space(regularizer, prior):
    """The searched parameters for a base configuration, in a stable order."""
    if regularizer not in REGULARIZER_PARAMS:
        raise ValueError(f"no search space declared for --regularizer={regularizer}")
    if prior not in PRIOR_PARAMS:
        raise ValueError(f"no search space declared for --prior={prior}")
    return [*REGULARIZER_PARAMS[regularizer], *PRIOR_PARAMS[prior], *COMMON_PARAMS]


def parse_overrides(text):
    """``"beta=1:8:log,flow_blocks=2:8"`` -> {name: Param}; ValueError on bad input."""
    known = all_params()
    out = {}
    if not text or not text.strip():
        return out
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, spec = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"--search_space: {item!r}: expected name=min:max[:log]")
        if name not in known:
            raise ValueError(f"--search_space: unknown hyperparameter {name!r}; "
                             f"expected one of {sorted(known)}")
        parts = [s.strip() for s in spec.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError(f"--search_space: {name}={spec}: expected min:max[:log|linear]")
        base = known[name]
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"--search_space: {name}={spec}: bounds must be numbers") \
                from None
        log = base.log
        if len(parts) == 3:
            if parts[2] not in ("log", "linear"):
                raise ValueError(f"--search_space: {name}={spec}: the sampling must be "
                                 f"'log' or 'linear', got {parts[2]!r}")
            log = parts[2] == "log"
        if name in out:
            raise ValueError(f"--search_space: {name} is given twice")
        if not low < high:
            raise ValueError(f"--search_space: {name}={spec}: empty range (min {low:g} "
                             f"must be less than max {high:g})")
        out[name] = Param(name, base.kind, low, high, log)
    return out


def build_space(regularizer, prior, overrides=""):
    """The parameters to search: the declared ones, with ``overrides`` applied.

    Overriding a declared parameter that the base configuration does not search (e.g.
    ``tc_beta`` with ``--regularizer=beta_h``, or ``flow_blocks`` with the normal
    prior) is an error: it would have no effect on the model.
    """
    params = default_space(regularizer, prior)
    names = [p.name for p in params]
    for name, p in parse_overrides(overrides).items():
        if name not in names:
            raise ValueError(
                f"--search_space: {name} is not searched for --regularizer={regularizer} "
                f"--prior={prior}; searched here: {names}")
        params[names.index(name)] = p
    return params


def apply(params, hp=None):
    """Declare ``params`` on ``hp`` (a new ``keras_tuner.HyperParameters`` by default)."""
    hp = hp if hp is not None else keras_tuner.HyperParameters()
    for p in params:
        p.add_to(hp)
    return hp


def trial_values(params, hp):
    """{name: value} of ``params`` from a trial's HyperParameters, typed for ModelConfig."""
    return {p.name: p.cast(hp.get(p.name)) for p in params}
