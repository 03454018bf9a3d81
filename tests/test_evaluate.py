"""trainers.evaluate and trainers.compare end to end on briefly trained two-moons models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _run(module, *args, check=True):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def moons_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    dirs = {}
    for prior in ("normal", "decoupled"):
        model_dir = root / prior
        _run("trainers.fit", f"--flagfile=trainers/configs/moons/beta_h_{prior}.flags",
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
