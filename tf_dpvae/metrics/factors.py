"""The disentanglement metrics (tf_dpvae/metrics/disentanglement/) in the evaluation:
MIG, DCI, the FactorVAE score and SAP of the encoder means, on datasets generated from
known factors (``Dataset.factors``, e.g. dSprites); other datasets skip them.

Sample sizes: ``EvalOptions.disentanglement_train`` (10,000: MIG's codes, DCI's and
SAP's training codes, the FactorVAE score's training votes and variance estimate) and
``disentanglement_test`` (5,000: DCI's and SAP's test codes, the FactorVAE score's eval
votes) — disentanglement_lib's defaults. Each metric's full output (per-factor parts,
matrices, every protocol choice) goes under ``results["disentanglement"]``.
"""

import numpy as np

from tf_dpvae.metrics.disentanglement import dci, factor_vae, mig, sap
from tf_dpvae.metrics.registry import MetricSpec, register

# The scalars (higher is better in each) that go to metrics.json's top level,
# TensorBoard and the study tables.
SCALARS = (("mig", "MIG"), ("dci_disentanglement", "DCI D"),
           ("dci_completeness", "DCI C"), ("dci_informativeness_test", "DCI I"),
           ("factor_vae_score", "FactorVAE score"), ("sap", "SAP"))


def representation(model, batch_size=256):
    """x ↦ the encoder means μ(x) as float64 numpy, in batches."""
    def represent(x):
        x = np.asarray(x, np.float32)
        return np.concatenate([np.asarray(model.encode(x[i:i + batch_size])[0],
                                          np.float64)
                               for i in range(0, len(x), batch_size)])
    return represent


class EncodedOnce:
    """A view of factor data in which each distinct observation is encoded once.

    Its "observations" are the flat indices of the factor rows in the grid of
    ``factor_sizes``; :meth:`represent` encodes the observations of the indices not
    seen before (``chunk`` at a time) and looks the rest up. The metrics then draw
    exactly the same factor rows and see exactly the codes they would have computed
    (the encoder means are deterministic), but the FactorVAE score's 960,000
    observations of a 46,080-image grid cost at most 46,080 encodings. Used only when
    the data says an observation is a function of its factors
    (``deterministic_observations``).
    """

    def __init__(self, data, represent, chunk=4096):
        self.data, self._represent, self.chunk = data, represent, chunk
        self.factor_names, self.factor_sizes = data.factor_names, data.factor_sizes
        size = int(np.prod(self.factor_sizes))
        self._known = np.zeros(size, bool)
        self._codes = None
        self.encoded = 0                       # distinct observations encoded so far

    def sample_factors(self, num, rng):
        return self.data.sample_factors(num, rng)

    def observations(self, factors):
        factors = np.asarray(factors, np.int64)
        return np.ravel_multi_index(tuple(factors.T), self.factor_sizes)

    def represent(self, indices):
        indices = np.asarray(indices, np.int64)
        missing = np.unique(indices[~self._known[indices]])
        for start in range(0, len(missing), self.chunk):
            part = missing[start:start + self.chunk]
            rows = np.stack(np.unravel_index(part, self.factor_sizes), axis=1)
            codes = np.asarray(self._represent(self.data.observations(rows)), np.float64)
            if self._codes is None:
                self._codes = np.zeros((len(self._known), codes.shape[1]))
            self._codes[part] = codes
            self._known[part] = True
            self.encoded += len(part)
        return self._codes[indices]


def compute(context):
    options, data = context.options, context.dataset.factors
    train, test = options.disentanglement_train, options.disentanglement_test
    represent = representation(context.model)
    if getattr(data, "deterministic_observations", False):
        data = EncodedOnce(data, represent)
        represent = data.represent
    seed = options.seed
    context.say(f"disentanglement metrics ({train} / {test} samples; "
                f"{context.dataset.factors.describe()})")
    details = {
        "mig": mig.compute(data, represent, seed, num_train=train),
        "dci": dci.compute(data, represent, seed, num_train=train, num_test=test),
        "factor_vae_score": factor_vae.compute(data, represent, seed, num_train=train,
                                               num_eval=test,
                                               num_variance_estimate=train),
        "sap": sap.compute(data, represent, seed, num_train=train, num_test=test)}
    details["data"] = context.dataset.factors.describe()
    if isinstance(data, EncodedOnce):
        details["distinct_observations_encoded"] = data.encoded
    context.results["disentanglement"] = details
    for part in details.values():
        if isinstance(part, dict):
            context.results.update({key: float(part[key]) for key, _ in SCALARS
                                    if key in part})


register(MetricSpec("disentanglement", compute, needs_factors=True, scores=SCALARS,
                    help="MIG, DCI, FactorVAE score and SAP of the encoder means "
                         "(datasets with known factors, e.g. dsprites)"))
