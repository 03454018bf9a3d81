"""The training terms on the validation split, each a mean over the whole split."""

from tf_dpvae import data as data_lib
from tf_dpvae.metrics.registry import MetricSpec, register


def compute(context):
    """Every training term as a mean over the whole validation split (the model's
    trackers weight each batch by its size), as ``fit`` reports ``val_*`` per epoch."""
    model, dataset = context.model, context.dataset
    context.say(f"training terms on the validation split ({dataset.num_validation} "
                "examples)")
    batches = data_lib.batch(dataset.validation, model.config.batch_size, shuffle=False,
                             seed=0, repeat=False, drop_remainder=False)
    context.results["validation"] = {k: float(v) for k, v in model.evaluate(
        batches, verbose=0, return_dict=True).items()}
    context.results["validation_examples"] = int(dataset.num_validation)


register(MetricSpec("validation", compute,
                    help="every training term as a mean over the validation split"))
