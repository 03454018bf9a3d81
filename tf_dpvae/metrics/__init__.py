"""Evaluation metrics of paper Section 5.1 (DESIGN §5).

Modules (import them directly; this package imports nothing on its own):

* :mod:`tf_dpvae.metrics.aggregate`: encode a dataset; the exact aggregate posterior
  q(z) = (1/N) Σ_n N(z; μ_n, σ_n²), streamed; batched prior densities.
* :mod:`tf_dpvae.metrics.selection`: low-posterior (LP) and high-posterior (HP) samples.
* :mod:`tf_dpvae.metrics.divergence`: symmetric KL between p(z) and q(z) by sampling.
* :mod:`tf_dpvae.metrics.likelihood`: importance-sampled log p(x), NLL summaries,
  fixed binarization.
* :mod:`tf_dpvae.metrics.leakage`: the leakage score LS(τ) (paper Eq. 6).
* :mod:`tf_dpvae.metrics.fid`, :mod:`tf_dpvae.metrics.features`: FID and its feature
  extractors.

Every function takes explicit integer seeds and uses stateless random ops, so a metric
computed twice with the same seed gives the same number.

A metric that cannot be computed from the model at hand (e.g. no LP sample can be
chosen because log q(z) underflows at every candidate) raises
:class:`MetricUnavailableError`; :func:`tf_dpvae.evaluation.evaluate` records it as
``null`` with the reason under ``"unavailable"`` and computes the other metrics.
"""


class MetricUnavailableError(ValueError):
    """A metric cannot be computed for this model; the message says why."""
