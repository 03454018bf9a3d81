"""A setting a variant declares (a regularizer's weight, a flow's size): one
ModelConfig field and one command-line flag, declared once beside the code that uses
it (``tf_dpvae/objectives/<name>.py``, ``tf_dpvae/priors.py``). ``config.py`` adds
the fields to ModelConfig, ``trainers/common.py`` defines the flags, ``search_space``
reads the ranges.
"""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting of a variant: a ModelConfig field and the flag of the same name.

    config_name:       the ModelConfig field and flag (unique over all variants).
    help:              the flag's help (the variant's name is prefixed).
    kind:              ``float``, ``int``, ``str`` or ``bool``.
    paper:             the paper's (Table 2) value, if it has one; then the default is
                       converted per dataset and the flag defaults to that.
    applied_to:        how the official code applies ``paper`` (:data:`APPLICATIONS`).
    default:           the default where there is no conversion (None allowed).
    search:            ``(min, max)`` or ``(min, max, "log")`` for ``trainers.tune``.
    lower_bound:       the flag's lower bound.
    scales_with_steps: a number of training steps (a schedule's length): the study
                       compresses it with the budget.
    choices:           the allowed values of a ``str`` setting (an enum flag).
    steers_training:   only steers training (a learning rate), it does not define the
                       model: a run may resume with another value (config.json's
                       ``history`` records the change) instead of being refused.
    """

    config_name: str
    help: str
    kind: type = float
    paper: float | None = None
    applied_to: str | None = None
    default: Any = None
    search: tuple | None = None
    lower_bound: float | None = None
    scales_with_steps: bool = False
    steers_training: bool = False
    choices: tuple | None = None

    @property
    def per_dataset(self):
        """Whether the default depends on the dataset's paper batch size."""
        return self.paper is not None


def flag_kind(spec):
    """The absl flag type of a setting: "integer", "float", "string", "enum" or
    "boolean"."""
    if spec.choices:
        return "enum"
    return {int: "integer", float: "float", str: "string", bool: "boolean"}[spec.kind]
