"""trainers.knee end to end on the offline MNIST digits (a few steps), and the
``long`` budget it decides."""

import json
import os

import pytest

from tests import helpers


def test_knee_records_curves_budget_and_skips_finished_runs(tmp_path):
    store, out = tmp_path / "store", tmp_path / "runs"
    args = ["--datasets=mnist", "--chunk=20", "--window=20", "--tolerance=10",
            "--max_steps=60", f"--out={out}", f"--store={store}"]
    first = helpers.run_module("trainers.knee", *args)
    for prior in ("normal", "decoupled"):
        record = json.loads((store / "mnist" / f"vae_{prior}.json").read_text())
        # Validation every 20 steps (gcd of 1000 and the chunk); the knee needs a
        # whole window after it: found at 20 once step 40 is seen.
        assert record["steps"] == [20, 40] and record["knee"] == 20
        assert record["finished"] and record["learning_rate"] == 1e-4
        assert "--learning_rate=0.0001" in record["command"]
    assert json.loads((store / "budget.json").read_text()) == {"mnist": 20}
    assert (store / "mnist.png").stat().st_size > 1000
    text = (store / "report.md").read_text()
    assert "`long` budget (steps): mnist 20" in text
    assert "[knee]" in first.stdout
    # Finished runs are skipped: nothing trains again.
    again = helpers.run_module("trainers.knee", *args)
    assert "validation loss" not in again.stdout
    assert os.path.exists(store / "report.md")


def test_budget_takes_the_larger_knee_rounded_up_and_max_steps_without_one():
    from trainers import knee
    records = [
        {"dataset": "a", "prior": "normal", "knee": 12_000, "finished": True},
        {"dataset": "a", "prior": "decoupled", "knee": 31_000, "finished": True},
        {"dataset": "b", "prior": "normal", "knee": None, "finished": True},
        {"dataset": "b", "prior": "decoupled", "knee": 5_000, "finished": True},
        {"dataset": "c", "prior": "normal", "knee": 5_000, "finished": True},
        {"dataset": "c", "prior": "decoupled", "knee": None, "finished": False},
    ]
    assert knee.budget(records, 5000, 100_000) == {"a": 35_000, "b": 100_000}


def test_bad_dataset_is_one_line():
    result = helpers.run_module("trainers.knee", "--datasets=moons", check=False)
    assert result.returncode != 0
    assert "--datasets" in result.stderr and "Traceback" not in result.stderr


def test_long_budget_reads_the_measured_steps(tmp_path):
    from tf_dpvae import study
    from trainers import presets
    path = tmp_path / "budget.json"
    path.write_text(json.dumps({"fashion_mnist": 35_000}))
    budget = presets.budget("long", ["fashion_mnist", "moons"], knee_budget=str(path))
    assert budget.steps_for("fashion_mnist") == 35_000
    assert budget.steps_for("moons") == 10_000
    assert budget.learning_rate_for("fashion_mnist") == 1e-4
    assert budget.learning_rate_for("moons") is None        # the flagfile's
    assert budget.eval_options == study.BUDGETS["paper"].eval_options
    with pytest.raises(ValueError, match="no steps for 'mnist'"):
        budget.steps_for("mnist")
    with pytest.raises(ValueError, match="trainers.knee --datasets=mnist"):
        presets.budget("long", ["mnist"], knee_budget=str(path))
    spec = study.RunSpec("fashion_mnist", "beta_h", "decoupled", 1)
    model_config, train_config = presets.run_configs(spec, budget, str(tmp_path))
    assert (train_config.train_steps, model_config.learning_rate) == (35_000, 1e-4)
    assert presets.budget("cpu") is study.BUDGETS["cpu"]


def test_study_long_budget_without_a_measurement_is_one_line(tmp_path):
    if os.path.exists("docs/results/knee/budget.json"):
        pytest.skip("the knee has been measured")
    result = helpers.run_module("trainers.study", "--datasets=fashion_mnist",
                                "--budget=long", f"--out={tmp_path}", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--budget=long" in result.stderr and "trainers.knee" in result.stderr
