"""The regularized VAE objectives: one module per regularizer, each usable with either
prior (:mod:`tf_dpvae.objectives.base` says what a module declares).

To add a regularizer, write ``tf_dpvae/objectives/<name>.py`` with one registered
:class:`Objective` dataclass and add its module to the line below; its settings become
ModelConfig fields and ``trainers.fit`` flags, its search ranges ``trainers.tune``'s,
and the study, the benchmark and the reports list it.
"""

from tf_dpvae.objectives.base import (APPLICATIONS, MEAN_WEIGHT, REFERENCE_BATCH_SIZE,  # noqa: F401
                                      REGISTRY, SUMMED_TARGET, SUMMED_WEIGHT, Batch,
                                      Objective, Setting, all_settings, display_name, get,
                                      make_objective, paper_config_weights, per_example,
                                      schedule_names, term_names)

# The registry: importing a module registers its objective (this order is the tables').
from tf_dpvae.objectives import vae, beta_h, beta_b, beta_tc, factor, info, dip  # noqa: E402,F401

REGULARIZERS = tuple(REGISTRY)
OBJECTIVES = REGISTRY
