"""trainers.evaluate and trainers.compare end to end on briefly trained two-moons models."""

import json
import math
import os

import numpy as np
import pytest

import helpers

_run = helpers.run_module


@pytest.fixture(scope="module")
def moons_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    dirs = {}
    for prior in ("normal", "decoupled"):
        model_dir = root / prior
        _run("trainers.fit", "--flagfile=trainers/configs/moons/base.flags",
             "--regularizer=beta_h", f"--prior={prior}",
             f"--model_dir={model_dir}", "--train_steps=300", "--checkpoint_every=300",
             "--steps_per_epoch=300", "--validation_steps=2", "--progress=none")
        _run("trainers.evaluate", f"--model_dir={model_dir}", "--num_samples=500",
             "--skl_samples=500", "--nll_samples=20", "--nll_max_examples=50",
             "--leakage_samples=1000")
        dirs[prior] = model_dir
    return dirs


def test_evaluate_writes_metrics_table_figures_and_events(moons_runs):
    for prior, model_dir in moons_runs.items():
        out = model_dir / "eval"
        metrics = json.loads((out / "metrics.json").read_text())
        for key in ("fid", "fid_lp", "skl", "nll_nats", "nll_bits_per_dim", "leakage",
                    "leakage_full", "feature_extractor", "num_samples"):
            assert key in metrics, key
        assert metrics["feature_extractor"] == "identity (2-D points)"
        assert metrics["num_samples"] == 500
        assert metrics["prior"] == prior and metrics["step"] == 300
        assert metrics["skl"] == pytest.approx(metrics["kl_pq"] + metrics["kl_qp"])
        assert metrics["nll_bits_per_dim"] == pytest.approx(
            metrics["nll_nats"] / (2 * 0.6931471805599453))
        assert any(v is not None for v in metrics["leakage"].values())
        assert metrics["unavailable"] == {}
        from tf_dpvae.metrics import precision_recall, registry
        for key in precision_recall.KEYS + precision_recall.LP_KEYS:
            assert 0.0 <= metrics[key] <= (3.0 if key.startswith("density") else 1.0), key
        assert metrics["manifold_protocol"]["num_real"] == metrics["num_real"]
        assert metrics["manifold_protocol"]["set_size"] == min(metrics["num_real"], 500)
        # Every scalar of every metric goes to TensorBoard.
        tags = {key for key in registry.scalar_keys()
                if helpers.scalars(str(out), f"eval/{key}")}
        assert tags == {key for key in registry.scalar_keys()
                        if isinstance(metrics.get(key), float)}
        assert {"fid", "precision", "recall_lp", "kl_pq", "nll_bits_per_dim"} <= tags
        table = (out / "table.md").read_text().splitlines()
        assert table[0].startswith("| Methods | FID | FID (LP) | sKL | NLL")
        assert len(table) == 3
        for name in ("moons_panels", "leakage", "samples", "latent_line", "traversals"):
            assert (out / f"{name}.png").stat().st_size > 5000, name
        assert any(f.startswith("events") for f in os.listdir(out))
        assert any(f.startswith("events") for f in os.listdir(out / "leakage"))


def test_evaluate_is_reproducible(moons_runs, tmp_path):
    model_dir = moons_runs["decoupled"]
    first = json.loads((model_dir / "eval" / "metrics.json").read_text())
    _run("trainers.evaluate", f"--model_dir={model_dir}", "--num_samples=500",
         "--skl_samples=500", "--nll_samples=20", "--nll_max_examples=50",
         "--leakage_samples=1000", "--nofigures")
    second = json.loads((model_dir / "eval" / "metrics.json").read_text())
    for key in ("fid", "fid_lp", "skl", "nll_nats"):
        assert first[key] == pytest.approx(second[key], rel=1e-5), key


def test_compare_puts_runs_side_by_side(moons_runs, tmp_path):
    out = tmp_path / "cmp"
    result = _run("trainers.compare", str(moons_runs["normal"]), str(moons_runs["decoupled"]),
                  f"--output_dir={out}")
    table = (out / "comparison.md").read_text()
    assert "β-VAE-H" in table and "β-dpVAE-H" in table
    assert table.count("**") >= 2 * 4  # one bold best per column
    assert (out / "leakage.png").stat().st_size > 5000
    assert "β-dpVAE-H" in result.stdout


def test_compare_refuses_mixed_feature_extractors(moons_runs, tmp_path):
    other = tmp_path / "other"
    (other / "eval").mkdir(parents=True)
    metrics = json.loads((moons_runs["normal"] / "eval" / "metrics.json").read_text())
    metrics["feature_extractor"] = "inception_v3_pool3"
    (other / "eval" / "metrics.json").write_text(json.dumps(metrics))
    result = _run("trainers.compare", str(moons_runs["decoupled"]), str(other), check=False)
    assert result.returncode == 2 and "feature extractors" in result.stderr


def test_evaluate_without_a_trained_model_fails_clearly(tmp_path):
    result = _run("trainers.evaluate", f"--model_dir={tmp_path}", check=False)
    assert result.returncode == 2
    assert "--model_dir" in result.stderr and "Traceback" not in result.stderr


def test_inspect_lp_reports_lp_statistics_and_the_rate_split(moons_runs, tmp_path):
    out = tmp_path / "lp.json"
    result = _run("trainers.inspect_lp", str(moons_runs["normal"]),
                  str(moons_runs["decoupled"]), "--num_candidates=2000", "--num_keep=400",
                  f"--output={out}")
    assert "| model | rate (nats) | I(x; z) | KL[q(z) ‖ p(z)] | log N |" in result.stdout
    stats = json.loads(out.read_text())
    for model_dir in moons_runs.values():
        rate = stats[str(model_dir)]["rate"]
        assert rate["log_n"] == pytest.approx(np.log(rate["num_examples"]))
        assert 0 <= rate["mutual_information"] <= rate["log_n"] + 1e-6
        assert rate["rate"] == pytest.approx(rate["mutual_information"] + rate["kl_qp"])
        lp = stats[str(model_dir)]["lp"]
        assert lp["log_q"]["median"] >= stats[str(model_dir)]["prior_draws"]["log_q"]["median"]
    assert "round_trip_error" in stats[str(moons_runs["decoupled"])]["lp"]


# ------------------------------------------------------------------ no silent NaN
def _strict_json(path):
    """Parse with a parser that refuses NaN and Infinity tokens."""
    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _moons_model(log_var=None, mean_shift=0.0):
    """An untrained moons VAE; with ``log_var``, its encoder outputs that log σ² for every
    input (last layer's log-variance kernel 0, bias ``log_var``), means shifted."""
    from tf_dpvae.config import ModelConfig
    from tf_dpvae.training import build_model
    model = build_model(ModelConfig(dataset="moons", regularizer="vae", prior="normal"))
    if log_var is not None:
        last, latent_dim = model.encoder.layers[-1], model.config.latent_dim
        kernel, bias = last.kernel.numpy(), last.bias.numpy()
        kernel[:, latent_dim:] = 0.0
        bias[latent_dim:] = log_var
        bias[:latent_dim] += mean_shift
        last.kernel.assign(kernel)
        last.bias.assign(bias)
    return model


SMALL = dict(num_samples=200, lp_candidates_factor=2, skl_samples=200, nll_samples=10,
             nll_max_examples=20, leakage_samples=200, max_examples=300, verbose=False)


def test_evaluate_with_a_tiny_posterior_variance_writes_strict_json(tmp_path, capsys):
    """log σ² = −100 (σ ≈ 2e-22), means around (8, 8): q(z) underflows to 0 (log −inf
    in float32) at every prior draw, so KL[p‖q], sKL and the LP samples (FID (LP)) are
    unavailable, with reasons; everything else is computed and finite."""
    from tf_dpvae import data as data_lib
    from tf_dpvae import evaluation
    from tf_dpvae.metrics import aggregate
    model = _moons_model(log_var=-100.0, mean_shift=8.0)
    dataset = data_lib.load("moons", seed=0)
    results, figs = evaluation.evaluate(model, dataset, evaluation.EvalOptions(**SMALL))
    evaluation.write_json(tmp_path / "metrics.json", results)
    metrics = _strict_json(tmp_path / "metrics.json")
    assert metrics == results
    missing = {"skl", "kl_pq", "fid_lp", "kid_lp", "precision_lp", "recall_lp",
               "density_lp", "coverage_lp"}
    assert set(metrics["unavailable"]) == missing
    assert all(metrics[key] is None for key in missing)
    assert "log q(z) is -inf or NaN at all 400 candidates" in metrics["unavailable"]["fid_lp"]
    assert "at 200 of the 200 samples of p(z)" in metrics["unavailable"]["skl"]
    for key in ("fid", "kl_qp", "nll_nats", "nll_bits_per_dim"):
        assert math.isfinite(metrics[key]), key
    assert all(v is not None and math.isfinite(v) for v in metrics["leakage"].values())
    stderr = capsys.readouterr().err.splitlines()
    for key in missing:
        assert sum(line.startswith(f"[evaluate] {key} unavailable: ") for line in stderr) == 1
    assert set(figs) == {"moons_panels", "leakage", "samples", "latent_line", "traversals"}

    # KL[q‖p] against float64 numpy: each z ~ q(z) rounds to its component's mean in
    # float32, where log q(z) = log(c/N) − ½ Σ_l (log 2π − 100), c = components at z.
    means, _ = aggregate.encode_dataset(model, dataset.train, max_examples=300)
    z = aggregate.AggregatePosterior(means, np.full_like(means, -100.0)).sample(200, seed=0)
    z64 = z.astype(np.float64)
    count = (z[:, None, :] == means[None]).all(-1).sum(1)
    log_q = np.log(count / len(means)) - 0.5 * 2 * (np.log(2 * np.pi) - 100.0)
    log_p = -0.5 * (2 * np.log(2 * np.pi) + (z64 ** 2).sum(-1))
    assert np.all(count >= 1)
    assert metrics["kl_qp"] == pytest.approx(np.mean(log_q - log_p), rel=1e-5)


def test_evaluate_reports_non_finite_metrics_as_unavailable(tmp_path, capsys, monkeypatch):
    """A NaN log p(x) and an infinite LS(τ) become null, each with a reason and one line
    on stderr; the other metrics are kept."""
    from tf_dpvae import data as data_lib
    from tf_dpvae import evaluation
    from tf_dpvae.metrics import leakage, likelihood

    def nll_with_a_nan(model, x, **kwargs):
        return np.where(np.arange(len(x)) == 3, np.nan, -1.5)

    real_leakage = leakage.leakage_scores

    def leakage_with_an_inf(*args, **kwargs):
        scores = real_leakage(*args, **kwargs)
        if kwargs["variant"] == "paper":
            scores["by_tau"][max(scores["by_tau"])] = math.inf
        return scores

    monkeypatch.setattr(likelihood, "importance_sampled_log_likelihood", nll_with_a_nan)
    monkeypatch.setattr(leakage, "leakage_scores", leakage_with_an_inf)
    options = evaluation.EvalOptions(**dict(SMALL, metrics=("skl", "nll", "leakage"),
                                            figures=False))
    results, _ = evaluation.evaluate(_moons_model(), data_lib.load("moons", seed=0), options)
    evaluation.write_json(tmp_path / "metrics.json", results)
    metrics = _strict_json(tmp_path / "metrics.json")
    assert metrics["nll_nats"] is None and metrics["nll_bits_per_dim"] is None
    assert metrics["unavailable"]["nll_nats"] == ("the importance-sampled log p(x) is not "
                                                  "finite for 1 of 20 examples")
    top = max(metrics["leakage"], key=float)
    assert metrics["leakage"][top] is None
    assert metrics["unavailable"]["leakage"] == f"not finite: leakage/{top} = inf"
    assert set(metrics["unavailable"]) == {"nll_nats", "nll_bits_per_dim", "leakage"}
    assert math.isfinite(metrics["skl"]) and metrics["leakage_full"][top] is not None
    stderr = capsys.readouterr().err
    assert f"[evaluate] leakage unavailable: not finite: leakage/{top} = inf\n" in stderr
    assert stderr.count("[evaluate] nll_nats unavailable: ") == 1


def test_json_safe_replaces_every_non_finite_float():
    from tf_dpvae.evaluation import json_safe
    value = {"a": 1.0, "b": np.float32("nan"), "c": {"d": [0.5, -math.inf, np.int64(3)]},
             "e": np.array([1.0, np.inf]), "f": "nan", "g": None, "h": np.bool_(True)}
    clean, replaced = json_safe(value)
    assert clean == {"a": 1.0, "b": None, "c": {"d": [0.5, None, 3]}, "e": [1.0, None],
                     "f": "nan", "g": None, "h": True}
    assert json.loads(json.dumps(clean, allow_nan=False)) == clean
    assert set(replaced) == {("b",), ("c", "d", 1), ("e", 1)}
    assert math.isnan(replaced[("b",)]) and replaced[("c", "d", 1)] == -math.inf


def test_compare_table_shows_an_unavailable_metric_as_a_dash_with_its_reason():
    from trainers import compare
    runs = [{"model": "VAE", "model_dir": "a", "fid": 2.0, "fid_lp": None, "skl": None,
             "nll_nats": 5.0, "feature_extractor": "x", "num_samples": 10,
             "unavailable": {"fid_lp": "no LP samples", "kid_lp": "no LP samples"}},
            {"model": "dpVAE", "model_dir": "b", "fid": 3.0, "fid_lp": 4.0, "skl": 1.0,
             "nll_nats": 4.0, "feature_extractor": "x", "num_samples": 10}]
    table = compare.markdown_table(runs)
    assert "| VAE | **2** | – | – | 5 | a |" in table
    assert "| dpVAE | 3 | **4** | **1** | **4** | b |" in table
    assert "FID (LP) of VAE (a) unavailable: no LP samples." in table
    assert "kid_lp" not in table


def test_evaluate_reports_validation_means(moons_runs):
    """metrics.json's validation terms = the example-weighted mean of the per-batch
    terms of the restored model over the whole validation split (not the last batch)."""
    from tf_dpvae import data as data_lib
    from tf_dpvae.training import restore_model
    model_dir = moons_runs["decoupled"]
    metrics = json.loads((model_dir / "eval" / "metrics.json").read_text())
    model = restore_model(str(model_dir))
    dataset = data_lib.load("moons")
    batches = data_lib.batch(dataset.validation, model.config.batch_size, shuffle=False,
                             seed=0, repeat=False, drop_remainder=False)
    terms = [(model.compute_terms(x)[0], int(x.shape[0])) for x in batches]
    assert metrics["validation_examples"] == sum(n for _, n in terms) == 500
    for name in ("loss", "elbo", "kl", "reconstruction"):
        values = [float(t[name]) for t, _ in terms]
        expected = np.average(values, weights=[n for _, n in terms])
        assert metrics["validation"][name] == pytest.approx(expected, rel=1e-5), name
