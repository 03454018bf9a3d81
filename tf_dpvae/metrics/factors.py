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


def compute(context):
    options, data = context.options, context.dataset.factors
    train, test = options.disentanglement_train, options.disentanglement_test
    represent = representation(context.model)
    seed = options.seed
    context.say(f"disentanglement metrics ({train} / {test} samples; {data.describe()})")
    details = {
        "mig": mig.compute(data, represent, seed, num_train=train),
        "dci": dci.compute(data, represent, seed, num_train=train, num_test=test),
        "factor_vae_score": factor_vae.compute(data, represent, seed, num_train=train,
                                               num_eval=test,
                                               num_variance_estimate=train),
        "sap": sap.compute(data, represent, seed, num_train=train, num_test=test)}
    details["data"] = data.describe()
    context.results["disentanglement"] = details
    for part in details.values():
        if isinstance(part, dict):
            context.results.update({key: float(part[key]) for key, _ in SCALARS
                                    if key in part})


register(MetricSpec("disentanglement", compute, needs_factors=True, scores=SCALARS,
                    help="MIG, DCI, FactorVAE score and SAP of the encoder means "
                         "(datasets with known factors, e.g. dsprites)"))
