"""trainers.benchmark: its measurements run, and its windows, table and targets say
what the samples say."""

import math
import os
import subprocess
import sys

import pytest

from trainers import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_time_bare_runs_every_configuration():
    lines = []
    configs = benchmark.configurations(["vae"], ["normal", "decoupled"],
                                       ["float32", "mixed_bfloat16"])
    assert configs[:2] == [("vae", "normal", "float32", "graph"),
                           ("vae", "decoupled", "float32", "graph")]
    configs.append(("vae", "decoupled", "float32", "xla"))
    report = benchmark.time_bare("moons", configs, steps=3, rounds=2, warmup_steps=1,
                                 log=lines.append)
    assert set(report["peak_gflops"]) == {"float32", "bfloat16"}
    assert all(p > 0 for p in report["peak_gflops"].values())
    for r in report["results"]:
        assert len(r["samples"]) == len(r["cpu_ms"]) == 2
        assert all(math.isfinite(s) and s > 0 for s in r["samples"])
        assert math.isfinite(r["loss"])
        assert r["flops_per_step"] > 0
    # The flow adds FLOPs; the precision does not change the count.
    assert [r["compile"] for r in report["results"]] == ["graph"] * 4 + ["xla"]
    flops = {(r["prior"], r["precision"]): r["flops_per_step"] for r in report["results"]
             if r["compile"] == "graph"}
    assert flops[("decoupled", "float32")] > flops[("normal", "float32")]
    assert flops[("normal", "mixed_bfloat16")] == flops[("normal", "float32")]


def test_step_flops_of_a_matmul_step():
    """The profiler's count of a known graph: [B, n] @ [n, m] is 2·B·n·m FLOPs."""
    import tensorflow as tf
    w = tf.Variable(tf.ones([30, 20]))
    step = tf.function(lambda x: tf.matmul(x, w))
    assert benchmark.step_flops(step, tf.ones([10, 30])) == 2 * 10 * 30 * 20


def test_fit_windows():
    # Callbacks every 100 steps; 2 rounds of 200 steps after a 100-step warm-up.
    points = [(100, 10.0, 5.0), (200, 11.0, 6.0), (300, 12.0, 7.0), (400, 14.0, 9.0),
              (500, 16.0, 11.0)]
    rates, cpu_ms = benchmark.fit_windows(points, warmup_steps=100, steps=200, rounds=2)
    assert rates == [100.0, 50.0]
    assert cpu_ms == [10.0, 20.0]
    with pytest.raises(RuntimeError, match="no callback at step"):
        benchmark.fit_windows(points, warmup_steps=150, steps=200, rounds=1)


def fake_report():
    def entry(rate):
        return {"steps_per_second": rate, "samples": [rate], "cpu_ms_per_step": 1e3 / rate,
                "cpu_ms": [1e3 / rate]}
    rows = []
    for reg, prior, prec, code, bare, fit in [
            ("vae", "normal", "float32", "current", 40.0, 39.0),
            ("vae", "decoupled", "float32", "current", 30.0, 25.0),
            ("vae", "normal", "mixed_bfloat16", "current", 50.0, 49.0),
            ("vae", "decoupled", "mixed_bfloat16", "current", 40.0, 39.0),
            ("factor", "normal", "mixed_bfloat16", "current", 30.0, 35.0),
            ("vae", "normal", "float32", "abc123", None, 30.0),
            ("vae", "decoupled", "float32", "abc123", None, 30.0)]:
        row = {"regularizer": reg, "prior": prior, "precision": prec, "code": code,
               "fit_2": entry(fit)}
        if bare:
            row["bare_2"] = entry(bare)
            row["flops_per_step"] = 2e9
        rows.append(row)
    return {"settings": {"dataset": "mnist", "threads": [2], "baseline_rev": "abc123"},
            "peak_gflops": {2: {"float32": 100.0, "bfloat16": 200.0}}, "rows": rows}


def test_targets_and_table():
    report = fake_report()
    checks = {name: (passed, value) for name, passed, value in
              benchmark.check_targets(report, "mixed_bfloat16")}
    assert checks["fit >= 0.95 x bare: vae / normal / float32 (2 threads)"] == (True, "0.97")
    assert checks["fit >= 0.95 x bare: vae / decoupled / float32 (2 threads)"] == (
        False, "0.83")
    passed, value = checks["fit mixed_bfloat16 >= 1.35 x abc123's fit: vae / normal"]
    assert passed and value.startswith("1.63")
    assert checks["fit mixed_bfloat16 >= 1.35 x abc123's fit: vae / decoupled"] == (
        False, "1.30 (39.0 vs 30.0 steps/s)")
    assert checks["factor >= 0.7 x vae (fit): normal / mixed_bfloat16"] == (True, "0.71")
    assert checks["factor >= 0.7 x vae (bare): normal / mixed_bfloat16"] == (False, "0.60")
    table = benchmark.format_table(report)
    lines = table.splitlines()
    assert lines[0].startswith("| regularizer | prior | precision | compile | code |")
    # vae / normal / float32: 2 GFLOP × 39 steps/s = 78 GFLOP/s = 78 % of 100.
    assert lines[2].split("|")[-2].strip() == "78"
    assert lines[2].split("|")[10].strip() == "0.97"


def test_moons_targets():
    report = fake_report()
    report["settings"]["dataset"] = "moons"
    names = [name for name, _, _ in benchmark.check_targets(report)]
    assert "moons decoupled >= 0.5 x standard (fit): vae / float32" in names


def test_moons_target_takes_each_prior_at_its_fastest_compiler():
    def entry(rate):
        return {"steps_per_second": rate, "samples": [rate], "cpu_ms_per_step": 1e3 / rate,
                "cpu_ms": [1e3 / rate]}
    rows = [{"regularizer": "vae", "prior": prior, "precision": "float32", "compile": c,
             "code": "current", "fit_1": entry(rate)}
            for prior, c, rate in [("normal", "graph", 1000.0), ("normal", "xla", 800.0),
                                   ("decoupled", "graph", 300.0),
                                   ("decoupled", "xla", 550.0)]]
    report = {"settings": {"dataset": "moons", "threads": [1], "baseline_rev": None},
              "peak_gflops": {}, "rows": rows}
    checks = {name: (passed, value) for name, passed, value in
              benchmark.check_targets(report)}
    assert checks["moons decoupled >= 0.5 x standard (fit): vae / float32"] == (
        False, "0.30")
    assert checks["moons decoupled >= 0.5 x standard (fit): vae / float32 / xla"] == (
        True, "0.55")
    assert "| vae | decoupled | float32 | xla | current |" in benchmark.format_table(report)


def test_bad_flags_are_one_line_errors():
    proc = subprocess.run([sys.executable, "-m", "trainers.benchmark", "--modes=fast"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "trainers.benchmark: error: --modes=fast")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_times_bare_and_fit_on_moons(tmp_path):
    out = tmp_path / "moons.json"
    proc = subprocess.run(
        [sys.executable, "-m", "trainers.benchmark", "--dataset=moons", "--regularizers=vae",
         "--priors=normal", "--precisions=float32", "--threads=2", "--steps=100",
         "--rounds=1", "--warmup_steps=100", f"--output_json={out}"],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["fit_2"]["steps_per_second"] > 0 and row["bare_2"]["steps_per_second"] > 0
    assert (tmp_path / "moons.md").read_text().count("| vae | normal | float32 |") == 1
