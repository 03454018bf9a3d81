"""The extension points work as README "Extending" says: a dataset declared in one
module of its own trains and evaluates through the command-line tools, and a metric
registered in one place is computed by evaluate and gets its table column."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.helpers import REPO, env

BLOBS = textwrap.dedent('''
    """Three Gaussian blobs in 2-D: a dataset declared in one file."""
    import numpy as np

    from tf_dpvae import data, datasets


    def load(*, seed, with_labels=False, **_):
        rng = np.random.default_rng(seed)

        def split(n):
            labels = rng.integers(0, 3, n)
            centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
            x = centres[labels] + 0.3 * rng.normal(size=(n, 2))
            return x.astype(np.float32), labels.astype(np.int64)

        (a, ay), (b, by), (c, cy) = split(600), split(200), split(200)
        return data._dataset_from_arrays(
            "blobs", a, b, c, source="three generated blobs", to_float=None,
            labels=(ay, by, cy) if with_labels else None)


    datasets.register(datasets.DatasetSpec(
        "blobs", (2,), "blobs_dataset:load", (), architecture="mlp",
        likelihood="gaussian", latent_dim=2, paper_batch_size=100,
        class_names=("left", "right", "top")))
''')


@pytest.fixture
def blobs_env(tmp_path):
    (tmp_path / "blobs_dataset.py").write_text(BLOBS)
    values = env()
    values["PYTHONPATH"] = os.pathsep.join([str(tmp_path), values.get("PYTHONPATH", REPO)])
    values["TF_DPVAE_DATASET_MODULES"] = "blobs_dataset"
    return values


def _run(module, args, values):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=values,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_dataset_in_one_module_trains_and_evaluates(blobs_env, tmp_path):
    model_dir = tmp_path / "run"
    _run("trainers.fit", ["--dataset=blobs", "--regularizer=dip_i", "--prior=decoupled",
                          f"--model_dir={model_dir}", "--train_steps=30",
                          "--checkpoint_every=30", "--steps_per_epoch=30",
                          "--progress=none"], blobs_env)
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["dataset"], config["input_shape"], config["num_train"]) == \
        ("blobs", [2], 600)
    # The paper batch size's conversion applies to its weights too.
    assert config["batch_size"] == 100 and config["tc_gamma"] == pytest.approx(0.15)
    _run("trainers.evaluate", [f"--model_dir={model_dir}", "--num_samples=300",
                               "--skl_samples=300", "--nll_samples=5",
                               "--nll_max_examples=20", "--leakage_samples=300"],
         blobs_env)
    metrics = json.loads((model_dir / "eval" / "metrics.json").read_text())
    assert metrics["dataset"] == "blobs" and metrics["model"] == "DIP-dpVAE-I"
    assert np.isfinite(metrics["fid"]) and np.isfinite(metrics["nll_nats"])


def test_unknown_dataset_is_one_line(blobs_env):
    values = dict(blobs_env, TF_DPVAE_DATASET_MODULES="")
    result = subprocess.run([sys.executable, "-m", "trainers.fit", "--dataset=blobs",
                             "--model_dir=/tmp/unused"], cwd=REPO, env=values,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "--dataset" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_registered_metric_is_computed_and_tabulated():
    from tf_dpvae import data as data_lib
    from tf_dpvae import evaluation
    from tf_dpvae.config import ModelConfig
    from tf_dpvae.metrics import registry
    from tf_dpvae.training import build_model

    def compute(context):
        means, _, _ = context.aggregate
        context.results["mean_code_norm"] = float(np.linalg.norm(means, axis=1).mean())

    registry.metrics()   # the built-in ones first
    registry.register(registry.MetricSpec("code_norm", compute,
                                          columns=(("mean_code_norm", "‖μ‖"),)))
    try:
        model = build_model(ModelConfig(regularizer="vae", prior="normal"))
        dataset = data_lib.load("moons")
        options = evaluation.EvalOptions(metrics=("code_norm",), figures=False,
                                         verbose=False, max_examples=200)
        results, _ = evaluation.evaluate(model, dataset, options)
        assert results["mean_code_norm"] > 0
        assert "‖μ‖" in evaluation.table_header()
        assert evaluation.markdown_row(results).endswith(
            f"| {results['mean_code_norm']:.4g} |")
    finally:
        registry.REGISTRY.pop("code_norm")


def test_built_in_metrics_keep_their_order_whatever_imported_them_first():
    code = ("from tf_dpvae.metrics import likelihood, divergence\n"
            "from tf_dpvae.metrics import registry\n"
            "print(list(registry.metrics()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True,
                 text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    from tf_dpvae.metrics import registry
    names = eval(out.stdout.strip().splitlines()[-1])   # noqa: S307 (our own list)
    assert names == list(registry.metrics())
    assert names.index("fid") < names.index("skl") < names.index("nll")
