"""The benchmark's timing function runs and reports positive, finite steps/s."""

import math

from trainers import benchmark


def test_time_configs_vae_both_priors():
    lines = []
    report = benchmark.time_configs(regularizers=("vae",), priors=("normal", "decoupled"),
                                    steps=3, repeats=1, warmup_steps=1, log=lines.append)
    results = report["results"]
    assert [(r["regularizer"], r["prior"]) for r in results] == [
        ("vae", "normal"), ("vae", "decoupled")]
    for r in results:
        assert len(r["samples"]) == 1
        assert math.isfinite(r["steps_per_second"]) and r["steps_per_second"] > 0
        assert math.isfinite(r["loss"])
        assert r["cpu_ms_per_step"] >= 0
    assert report["settings"]["mode"] == "train_step"
    assert len(lines) == 4  # one progress line per build and per measurement
    table = benchmark.format_table(results)
    assert table.splitlines()[2].startswith("vae")
    assert results[1]["paired_ratio"] > 0
    names = [name for name, _, _ in benchmark.check_targets(results)]
    assert names == ["vae decoupled/normal >= 0.8", "vae normal >= 40 steps/s"]
