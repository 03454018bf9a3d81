"""The flows the decoupled prior can use, by their ``--flow`` value.

Each is a :class:`tf_dpvae.flows.base.Flow`: a TFP bijector (forward = g⁻¹, generation
→ representation) whose networks are Keras 3 layers. ``realnvp`` is the paper's and the
default.
"""

from tf_dpvae.flows.autoregressive import IAF, MAF
from tf_dpvae.flows.base import Flow
from tf_dpvae.flows.realnvp import RealNVP
from tf_dpvae.flows.spline import NeuralSplineCoupling

FLOWS = {cls.name_: cls for cls in (RealNVP, MAF, IAF, NeuralSplineCoupling)}
DEFAULT = RealNVP.name_


def get(name):
    """The flow class of a ``--flow`` value; ValueError naming the flag otherwise."""
    if name not in FLOWS:
        raise ValueError(f"--flow={name!r}: expected one of {tuple(FLOWS)}")
    return FLOWS[name]


def all_settings():
    """Every flow's own Settings, each once (shared ones, e.g. the masks, appear in
    the first flow that declares them)."""
    seen, out = set(), []
    for cls in FLOWS.values():
        for spec in cls.SETTINGS:
            if spec.config_name not in seen:
                seen.add(spec.config_name)
                out.append(spec)
    return out


__all__ = ["FLOWS", "DEFAULT", "Flow", "RealNVP", "MAF", "IAF", "NeuralSplineCoupling",
           "get", "all_settings"]
