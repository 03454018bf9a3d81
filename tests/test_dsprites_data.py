"""--dataset=dsprites end to end: its settings as flags and config fields, the
procedural and (faked) tfds sources giving the same grid, the splits, the factor
data the disentanglement metrics sample from, and evaluate computing the metrics."""

import json

import numpy as np
import pytest

import helpers
from tf_dpvae import data, dsprites, dsprites_data
from tf_dpvae.config import ModelConfig

SMALL = dict(dsprites_subsample="scale=2,orientation=10,position_x=8,position_y=8",
             dsprites_resolution=16)          # 3 · 3 · 4 · 4 · 4 = 576 images


def test_procedural_splits_cover_the_sub_grid_once():
    d = data.load("dsprites", source="procedural", seed=3, **SMALL)
    assert d.element_shape == (16, 16, 1)
    assert (d.num_train, d.num_validation, d.num_test) == (576 - 2 * 29, 29, 29)
    images = np.concatenate([data.as_numpy(s) for s in (d.train, d.validation, d.test)])
    assert images.shape == (576, 16, 16, 1) and set(np.unique(images)) == {0.0, 1.0}
    rendered = dsprites.render_batch(dsprites.grid_indices(
        subsample=dsprites_data.parse_subsample(SMALL["dsprites_subsample"])), 16)
    # the splits are a permutation of the sub-grid's images
    key = lambda a: sorted(map(bytes, a.astype(np.uint8).reshape(len(a), -1)))  # noqa: E731
    assert key(images) == key(rendered)
    again = data.load("dsprites", source="procedural", seed=3, **SMALL)
    np.testing.assert_array_equal(data.as_numpy(again.train), data.as_numpy(d.train))
    other = data.load("dsprites", source="procedural", seed=4, **SMALL)
    assert not np.array_equal(data.as_numpy(other.train), data.as_numpy(d.train))


def test_factor_data_samples_the_sub_grid_and_shows_its_images():
    d = data.load("dsprites", source="procedural", seed=0, **SMALL)
    rng = np.random.default_rng(0)
    factors = d.factors.sample_factors(200, rng)
    assert factors.shape == (200, 5)
    for column, step in zip(factors.T, (1, 2, 10, 8, 8)):
        assert np.all(column % step == 0)
    np.testing.assert_array_equal(d.factors.observations(factors),
                                  dsprites.render_batch(factors, 16))


def test_settings_are_flags_config_fields_and_checked():
    config = ModelConfig(dataset="dsprites", **SMALL)
    assert config.dataset_options() == SMALL
    assert ModelConfig(dataset="moons").dataset_options() == {}
    with pytest.raises(ValueError, match="--dsprites_subsample"):
        data.load("dsprites", source="procedural", dsprites_subsample="size=2")
    with pytest.raises(ValueError, match="--dsprites_resolution=24"):
        data.load("dsprites", source="procedural", dsprites_resolution=24)
    with pytest.raises(ValueError, match="--dsprites_resolution: not a setting of "
                                         "--dataset=moons"):
        data.load("moons", dsprites_resolution=32)


def _fake_tfds(monkeypatch, rows):
    """tfds.load('dsprites') yielding the original format: 0/1 uint8 64×64 images and
    label_* indices, in a shuffled order."""
    import tensorflow as tf
    import tensorflow_datasets as tfds
    rows = rows[np.random.default_rng(0).permutation(len(rows))]
    examples = {"image": dsprites.render_batch(rows, 64).astype(np.uint8)}
    examples.update({name: rows[:, i].astype(np.int64)
                     for i, name in enumerate(dsprites_data._TFDS_LABELS)})
    monkeypatch.setattr(tfds, "load", lambda *a, **k: tf.data.Dataset.from_tensor_slices(
        examples))
    monkeypatch.setattr(data, "_tfds_is_prepared", lambda *a: True)


def test_tfds_source_maps_labels_to_the_grid_and_downsamples(monkeypatch):
    subsample = dsprites_data.parse_subsample(SMALL["dsprites_subsample"])
    rows = dsprites.grid_indices(subsample=subsample)
    _fake_tfds(monkeypatch, rows)
    from_tfds = data.load("dsprites", source="auto", seed=0,
                          dsprites_subsample=SMALL["dsprites_subsample"],
                          dsprites_resolution=64)
    procedural = data.load("dsprites", source="procedural", seed=0,
                           dsprites_subsample=SMALL["dsprites_subsample"],
                           dsprites_resolution=64)
    assert from_tfds.source.startswith("tfds:dsprites")
    np.testing.assert_array_equal(data.as_numpy(from_tfds.train),
                                  data.as_numpy(procedural.train))
    small = data.load("dsprites", source="auto", seed=0, **SMALL)
    rendered = data.as_numpy(data.load("dsprites", source="procedural", seed=0,
                                       **SMALL).train)
    downsampled = data.as_numpy(small.train)
    overlap = (downsampled * rendered).sum() / np.maximum(downsampled, rendered).sum()
    assert overlap > 0.7                      # same geometry, other rasterisation
    # a grid image missing from the tfds files is an error naming the source
    _fake_tfds(monkeypatch, rows[1:])
    with pytest.raises(ValueError, match="1 of the 576 images of the grid are missing"):
        data.load("dsprites", source="auto", **SMALL)


def test_train_and_evaluate_with_the_disentanglement_metrics(tmp_path):
    model_dir = tmp_path / "dsprites"
    helpers.run_module("trainers.fit", "--flagfile=trainers/configs/dsprites/base.flags",
                       "--dsprites_subsample=" + SMALL["dsprites_subsample"],
                       "--dsprites_resolution=16", "--regularizer=beta_h",
                       "--prior=decoupled", f"--model_dir={model_dir}",
                       "--train_steps=40", "--steps_per_epoch=20", "--checkpoint_every=20",
                       "--summary_every=20", "--sample_every=40", "--progress=none")
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architecture"] == "conv_dis" and config["input_shape"] == [16, 16, 1]
    helpers.run_module("trainers.evaluate", f"--model_dir={model_dir}",
                       "--metrics=skl,disentanglement", "--figures=false",
                       "--skl_samples=200", "--disentanglement_train=300",
                       "--disentanglement_test=200")
    metrics = json.loads((model_dir / "eval" / "metrics.json").read_text())
    for key in ("mig", "dci_disentanglement", "dci_completeness",
                "dci_informativeness_test", "factor_vae_score", "sap"):
        assert 0.0 <= metrics[key] <= 1.0, key
    details = metrics["disentanglement"]
    assert details["mig"]["protocol"]["representation"] == "encoder means"
    assert details["dci"]["protocol"]["scikit_learn"]
    assert "sub-grid" in details["data"]


@pytest.mark.slow   # 60–120 s: two smoke runs, evaluated, and a rerun that skips them
def test_disentanglement_study_records_runs_and_reports(tmp_path):
    store, out = tmp_path / "store", tmp_path / "runs"
    args = ["--regularizers=vae", "--seeds=1", "--budget=smoke", f"--out={out}",
            f"--store={store}"]
    helpers.run_module("trainers.disentanglement_study", *args)
    records = sorted(p.name for p in (store / "dsprites").glob("*.json"))
    assert records == ["vae_decoupled_seed0.json", "vae_normal_seed0.json"]
    record = json.loads((store / "dsprites" / "vae_normal_seed0.json").read_text())
    assert record["status"] == "done" and "mig" in record["metrics"]
    assert record["protocols"]["mig"]["num_bins"] == 20
    assert "fid" in record["unavailable"]
    report = (store / "report.md").read_text()
    assert "| vae | normal | 1 |" in report and "figures/vae_decoupled_traversals.png" \
        in report
    again = helpers.run_module("trainers.disentanglement_study", *args)
    assert "0 run(s) to do" in again.stdout


def test_disentanglement_report_bolds_only_with_two_seeds_a_side(tmp_path):
    from trainers import disentanglement_study as ds
    from trainers import results_store

    def record(prior, seed, mig):
        return {"dataset": "dsprites", "regularizer": "vae", "prior": prior,
                "seed": seed, "status": "done", "metrics": {"mig": mig}}
    store = str(tmp_path)
    for r in (record("normal", 0, 0.1), record("decoupled", 0, 0.5)):
        results_store.write_record(ds.store_path(store, "dsprites", "vae", r["prior"],
                                                 r["seed"]), r)
    assert "**" not in open(ds.report(store)).read().split("| vae |", 1)[1]
    for r in (record("normal", 1, 0.12), record("decoupled", 1, 0.52)):
        results_store.write_record(ds.store_path(store, "dsprites", "vae", r["prior"],
                                                 r["seed"]), r)
    rows = [line for line in open(ds.report(store)).read().splitlines()
            if line.startswith("| vae |")]
    assert "**0.51 ± 0.014**" in rows[1] and "**" not in rows[0]
