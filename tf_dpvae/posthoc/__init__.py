"""Post-hoc priors: fitted to a trained model's aggregate posterior q(z), after training.

    from tf_dpvae import posthoc

    prior, info = posthoc.fit("gmm", model, dataset.train, posthoc.FitOptions(seed=0))
    model = posthoc.attach(model, prior)        # every metric, figure, export: with it

or, on a model directory of ``trainers.fit`` (what ``trainers.fit_prior`` and
``trainers.evaluate --posthoc_prior`` do)::

    posthoc.fit_model_dir(model_dir, "gmm", posthoc.FitOptions())
    model = posthoc.attach(model, posthoc.load_for_model(model, model_dir, "gmm"))

Kinds (:data:`POSTHOC`, the ``--prior`` values of ``trainers.fit_prior``):

* ``gmm``: a Gaussian mixture (scikit-learn EM), K chosen by held-out likelihood
  (:mod:`.gmm`);
* ``flow``: a flow of :mod:`tf_dpvae.flows` fitted by maximum likelihood (:mod:`.flow`);
* ``two_stage``: a second small VAE on z (Dai & Wipf 2019; :mod:`.two_stage`).

Each is a Keras layer with the interface of :mod:`tf_dpvae.priors`, so every metric,
figure and the export run unchanged with it in place of ``model.prior``
(:func:`attach`). Each declares ``kind``, ``title``, its own ``SETTINGS`` (the flags of
``trainers.fit_prior``) and ``fit(train, validation, options, settings)``. What codes
they are fitted to is in :mod:`.base`. A fitted prior lives in
``<model_dir>/posthoc/<kind>/`` (``prior.json`` + ``weights.npz``), its evaluation in
``<model_dir>/posthoc/<kind>/eval/``.
"""

from tf_dpvae.posthoc.base import FitOptions
from tf_dpvae.posthoc.flow import FlowPrior
from tf_dpvae.posthoc.gmm import GaussianMixturePrior
from tf_dpvae.posthoc.model_dir import directory, fit_model_dir, load_for_model
from tf_dpvae.posthoc.registry import (POSTHOC, all_settings, attach, fit, get, load,
                                       read_info, save)
from tf_dpvae.posthoc.two_stage import TwoStagePrior

__all__ = ["POSTHOC", "FitOptions", "GaussianMixturePrior", "FlowPrior", "TwoStagePrior",
           "fit", "save", "load", "read_info", "attach", "get", "all_settings",
           "directory", "fit_model_dir", "load_for_model"]
