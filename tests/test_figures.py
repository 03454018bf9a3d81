"""Paper figures (tf_dpvae.figures) on tiny untrained models: structure, data, errors."""

import math

import numpy as np
import pytest
import tensorflow as tf
from matplotlib.figure import Figure

from tf_dpvae import estimators, figures, plots
from tf_dpvae.config import ModelConfig
from tf_dpvae.training import build_model

MNIST = dict(dataset="mnist", input_shape=(28, 28, 1), architecture="conv28",
             likelihood="bernoulli")


def _perturb_flow(model, seed=0):
    """Random coupling weights: an untrained flow is the identity (zero-initialised
    output layers), which would make every g / g⁻¹ check vacuous."""
    rng = np.random.default_rng(seed)
    for variable in model.prior.weights:
        variable.assign(rng.normal(scale=0.4, size=variable.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def moons_models():
    return {prior: _perturb_flow(build_model(ModelConfig(prior=prior, flow_blocks=2)))
            if prior == "decoupled" else build_model(ModelConfig(prior=prior))
            for prior in ("decoupled", "normal")}


@pytest.fixture(scope="module")
def mnist_model():
    return _perturb_flow(build_model(ModelConfig(**MNIST, latent_dim=2, prior="decoupled",
                                                 flow_blocks=2)))


@pytest.fixture(scope="module")
def moons_points():
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, np.pi, 200)
    upper = np.stack([np.cos(angle[:100]), np.sin(angle[:100])], 1)
    lower = np.stack([1 - np.cos(angle[100:]), 0.5 - np.sin(angle[100:])], 1)
    return (np.concatenate([upper, lower]) + rng.normal(0, 0.05, (200, 2))).astype(
        np.float32)


def _aggregate(model, x):
    mean, log_var = model.encode(tf.constant(x))
    return mean.numpy(), log_var.numpy()


def _marks(model, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(5, model.config.latent_dim)).astype(np.float32)
    return {"z": z, "z0": model.prior.to_generation(z).numpy()}


def _panels(fig):
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label() != "<colorbar>"}


def _offsets(ax, label):
    found = [c for c in ax.collections if c.get_label() == label]
    assert len(found) == 1, [c.get_label() for c in ax.collections]
    return np.asarray(found[0].get_offsets(), dtype=np.float32)


def _line(ax, label):
    found = [line for line in ax.get_lines() if line.get_label() == label]
    assert len(found) == 1, [line.get_label() for line in ax.get_lines()]
    return np.asarray(found[0].get_xydata(), dtype=np.float32)


def _png_shape(fig):
    png = plots.figure_png(fig)
    return tuple(tf.image.decode_png(png).shape)


# ------------------------------------------------------------------ Fig. 1/3
@pytest.mark.parametrize("prior", ["decoupled", "normal"])
def test_moons_panels_mark_lp_and_hp(prior, moons_models, moons_points):
    model = moons_models[prior]
    aggregate = _aggregate(model, moons_points)
    lp, hp = _marks(model, 1), {"z": _marks(model, 2)["z"]}   # hp without z0: computed
    fig = figures.moons_panels(model, moons_points, lp, hp, aggregate=aggregate,
                               num_samples=300, grid_size=40)
    assert isinstance(fig, Figure)
    panels = _panels(fig)
    assert list(panels) == ["samples", "q(z)", "z0", "data"]
    assert len(fig.axes) == 6  # + colour bars of log p(z) and q(z)

    q = panels["q(z)"]
    np.testing.assert_allclose(_offsets(q, "low posterior (LP)"), lp["z"], rtol=1e-6)
    np.testing.assert_allclose(_offsets(q, "high posterior (HP)"), hp["z"], rtol=1e-6)
    assert q.images, "q(z) is drawn as an image"
    z0 = panels["z0"]
    np.testing.assert_allclose(_offsets(z0, "low posterior (LP)"), lp["z0"], rtol=1e-6)
    np.testing.assert_allclose(_offsets(z0, "high posterior (HP)"),
                               model.prior.to_generation(hp["z"]).numpy(), atol=1e-5)
    if prior == "normal":
        assert "generation space = representation space" in z0.get_title()
    else:
        assert not np.allclose(lp["z0"], lp["z"], atol=1e-3)  # g is not the identity
    np.testing.assert_allclose(_offsets(panels["data"], "low posterior (LP)"),
                               model.decode_mean(lp["z"]).numpy(), atol=1e-5)
    samples = _offsets(panels["samples"], "generated")
    assert samples.shape == (300, 2)

    height, width, channels = _png_shape(fig)
    assert channels == 4 and 1200 < width < 3000 and 300 < height < 900
    assert width > 2.5 * height  # four panels in a row


def test_moons_panels_reject_bad_inputs(moons_models, mnist_model, moons_points):
    model = moons_models["normal"]
    aggregate = _aggregate(model, moons_points)
    lp, hp = _marks(model, 1), _marks(model, 2)
    kwargs = dict(aggregate=aggregate, num_samples=50, grid_size=10)
    with pytest.raises(ValueError, match=r"lp\['z'\].*\[N, 2\]"):
        figures.moons_panels(model, moons_points, {"z": np.zeros((5, 3))}, hp, **kwargs)
    with pytest.raises(ValueError, match="key 'z'"):
        figures.moons_panels(model, moons_points, {"x": lp["z"]}, hp, **kwargs)
    with pytest.raises(ValueError, match="data_points"):
        figures.moons_panels(model, moons_points[:, :1], lp, hp, **kwargs)
    with pytest.raises(ValueError, match="differ in shape"):
        figures.moons_panels(model, moons_points, lp, hp,
                             aggregate=(aggregate[0], aggregate[1][:10]))
    with pytest.raises(ValueError, match="input_shape"):
        figures.moons_panels(mnist_model, moons_points, lp, hp, **kwargs)


def test_density_grid_is_the_aggregate_posterior(moons_models, moons_points):
    means, log_vars = _aggregate(moons_models["normal"], moons_points)
    xs, ys, log_q = figures.density_grid(means, log_vars, extent=(-2, 2, -1, 3), size=7,
                                         batch_size=5, chunk_size=16)
    assert log_q.shape == (7, 7)
    i, j = 2, 5
    expected = estimators.aggregate_log_density(
        np.array([[xs[j], ys[i]]], np.float32), means, log_vars).numpy()[0]
    np.testing.assert_allclose(log_q[i, j], expected, rtol=1e-5)


# ------------------------------------------------------------------ Fig. 4
def test_leakage_curves_leave_missing_points_missing():
    curves = {"β-VAE": {-2.0: 0.1, -10.0: 3.0, -6.0: 1.5},
              "β-dpVAE": {-10.0: None, -6.0: float("nan"), -2.0: 0.05}}
    fig = figures.leakage_curves(curves, title="leakage")
    (ax,) = fig.axes
    assert ax.get_label() == "leakage"
    first, second = ax.get_lines()
    assert [line.get_label() for line in (first, second)] == ["β-VAE", "β-dpVAE"]
    np.testing.assert_array_equal(first.get_xdata(), [-10.0, -6.0, -2.0])  # sorted by τ
    np.testing.assert_array_equal(first.get_ydata(), [3.0, 1.5, 0.1])
    y = np.asarray(second.get_ydata(), float)
    assert np.isnan(y[:2]).all() and y[2] == 0.05
    assert first.get_marker() not in ("", "None", None)
    height, width, _ = _png_shape(fig)
    assert 400 < width < 1200 and 300 < height < 900

    single = figures.leakage_curves({-4: 0.5, -2: None})  # one unlabelled model
    assert len(single.axes[0].get_lines()) == 1
    assert single.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="non-empty dict"):
        figures.leakage_curves({})
    with pytest.raises(ValueError, match="curves\\['b'\\]"):
        figures.leakage_curves({"a": {-1: 0.1}, "b": [0.2]})


# ------------------------------------------------------------------ Fig. 5
def test_sample_grids_images_and_points(moons_points):
    rng = np.random.default_rng(0)
    generated = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
    lp = rng.uniform(size=(9, 28, 28, 1)).astype(np.float32)
    fig = figures.sample_grids(generated, lp, title="MNIST")
    panels = _panels(fig)
    assert list(panels) == ["Gen", "LP-Gen"] and len(fig.axes) == 2
    assert panels["Gen"].images[0].get_array().shape == (4 * 28, 4 * 28)
    assert panels["LP-Gen"].images[0].get_array().shape == (3 * 28, 3 * 28)
    height, width, _ = _png_shape(fig)
    assert 800 < width < 1500 and 400 < height < 900

    color = figures.sample_grids(rng.uniform(size=(4, 8, 8, 3)),
                                 rng.uniform(size=(4, 8, 8, 3)))
    assert color.axes[0].images[0].get_array().shape == (16, 16, 3)
    plots.figure_png(color)

    points = figures.sample_grids(moons_points[:50], moons_points[:5],
                                  data_points=moons_points)
    panels = _panels(points)
    np.testing.assert_allclose(_offsets(panels["LP-Gen"], "LP-Gen"), moons_points[:5])
    plots.figure_png(points)

    none = figures.sample_grids(generated, generated[:0])  # LP samples unavailable
    assert not _panels(none)["LP-Gen"].images and _panels(none)["Gen"].images
    assert _panels(none)["LP-Gen"].get_title() == "LP-Gen (0 samples)"
    plots.figure_png(none)

    with pytest.raises(ValueError, match="same kind"):
        figures.sample_grids(generated, moons_points[:5])
    with pytest.raises(ValueError, match="lp_generated"):
        figures.sample_grids(generated, np.zeros((4, 28, 28)))


# ------------------------------------------------------------------ Fig. 6
@pytest.mark.parametrize("which", ["moons-decoupled", "moons-normal", "mnist-decoupled"])
def test_latent_line_maps_the_z0_line_through_g_inverse(which, moons_models, mnist_model,
                                                       moons_points):
    model = mnist_model if which.startswith("mnist") else moons_models[which.split("-")[1]]
    x = (np.random.default_rng(0).uniform(size=(64, 28, 28, 1)).astype(np.float32)
         if which.startswith("mnist") else moons_points)
    aggregate = _aggregate(model, x)
    start, end = np.array([-1.5, -1.0], np.float32), np.array([1.5, 1.2], np.float32)
    fig = figures.latent_line(model, start, end, aggregate=aggregate, num_points=6,
                              grid_size=30, data_points=moons_points)
    panels = _panels(fig)
    decoupled = model.prior.is_decoupled
    assert list(panels) == (["z0"] if decoupled else []) + ["q(z)", "decoded"]
    assert len(fig.axes) == len(panels) + 1  # + the q(z) colour bar

    line = np.linspace(0, 1, 6, dtype=np.float32)[:, None] * (end - start) + start
    path = _line(panels["q(z)"], "path")
    np.testing.assert_allclose(path, model.prior.to_representation(line).numpy(),
                               atol=1e-5)
    if decoupled:
        np.testing.assert_allclose(_line(panels["z0"], "line"), line, atol=1e-6)
        assert not np.allclose(path, line, atol=1e-2)  # curved by g⁻¹
    else:
        np.testing.assert_allclose(path, line, atol=1e-6)
    decoded = panels["decoded"]
    if which.startswith("mnist"):
        assert decoded.images[0].get_array().shape == (28, 6 * 28)
    else:
        np.testing.assert_allclose(_offsets(decoded, "decoded"),
                                   model.decode_mean(path).numpy(), atol=1e-5)
    height, width, _ = _png_shape(fig)
    assert width > 1.5 * height and 300 < height < 800


def test_latent_line_rejects_bad_inputs(moons_models, moons_points):
    model = moons_models["decoupled"]
    aggregate = _aggregate(model, moons_points)
    three = build_model(ModelConfig(prior="normal", latent_dim=3))
    with pytest.raises(ValueError, match="latent_dim=2.*latent_dim=3"):
        figures.latent_line(three, np.zeros(3), np.ones(3),
                            aggregate=(np.zeros((4, 3)), np.zeros((4, 3))))
    with pytest.raises(ValueError, match="z0_end"):
        figures.latent_line(model, np.zeros(2), np.ones(3), aggregate=aggregate)
    with pytest.raises(ValueError, match="num_points"):
        figures.latent_line(model, np.zeros(2), np.ones(2), aggregate=aggregate,
                            num_points=1)
    with pytest.raises(ValueError, match="aggregate"):
        figures.latent_line(model, np.zeros(2), np.ones(2), aggregate=(aggregate[0],))


# ------------------------------------------------------------------ Fig. 8
def test_traversals_rows_sorted_by_spread():
    model = build_model(ModelConfig(**MNIST, latent_dim=4, prior="normal"))
    center = np.array([0.1, -0.2, 0.3, 0.0], np.float32)
    spreads = np.array([0.2, 1.5, 0.7, 1.0], np.float32)
    fig = figures.traversals(model, center, spreads, num_steps=5, max_sd=2.0)
    assert [ax.get_label() for ax in fig.axes] == ["z_1", "z_3", "z_2", "z_0"]
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "z_1 (sd=1.5)", "z_3 (sd=1)", "z_2 (sd=0.7)", "z_0 (sd=0.2)"]
    shown = fig.axes[0].images[0].get_array()
    assert shown.shape == (28, 5 * 28)
    codes = np.repeat(center[None], 5, 0)
    codes[:, 1] = center[1] + np.linspace(-2, 2, 5) * 1.5
    expected = plots.image_grid(model.decode_mean(codes).numpy(), columns=5)[..., 0]
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    height, width, _ = _png_shape(fig)
    assert 250 < width < 900 and 200 < height < 600

    top = figures.traversals(model, center, spreads, dims=2)
    assert [ax.get_label() for ax in top.axes] == ["z_1", "z_3"]
    chosen = figures.traversals(model, center, spreads, dims=[0, 2])
    assert [ax.get_label() for ax in chosen.axes] == ["z_2", "z_0"]
    for fig in (top, chosen):
        plots.figure_png(fig)

    with pytest.raises(ValueError, match="z_center"):
        figures.traversals(model, np.zeros(3), spreads)
    with pytest.raises(ValueError, match="spreads"):
        figures.traversals(model, center, -spreads)
    with pytest.raises(ValueError, match="dims"):
        figures.traversals(model, center, spreads, dims=[0, 4])
    with pytest.raises(ValueError, match="dims"):
        figures.traversals(model, center, spreads, dims=5)


@pytest.mark.parametrize("prior", ["decoupled", "normal"])
def test_traversals_of_points_are_decoded_curves(prior, moons_models, moons_points):
    model = moons_models[prior]
    center = np.array([0.2, -0.1], np.float32)
    spreads = np.array([0.5, 2.0], np.float32)
    fig = figures.traversals(model, center, spreads, num_steps=7,
                             data_points=moons_points)
    (ax,) = fig.axes
    assert ax.get_label() == "traversals"
    curves = [line for line in ax.get_lines() if line.get_label().startswith("z_")]
    assert [c.get_label() for c in curves] == ["z_1 (sd=2)", "z_0 (sd=0.5)"]
    codes = np.repeat(center[None], 7, 0)
    codes[:, 1] = center[1] + np.linspace(-5, 5, 7) * 2.0
    np.testing.assert_allclose(curves[0].get_xydata(), model.decode_mean(codes).numpy(),
                               atol=1e-5)
    plots.figure_png(fig)


# ------------------------------------------------------------------ one full set
def test_full_set_of_pngs(tmp_path, moons_models, mnist_model, moons_points):
    """Every figure for one moons model and one image model, written as PNG files."""
    model = moons_models["decoupled"]
    aggregate = _aggregate(model, moons_points)
    images = np.random.default_rng(0).uniform(size=(32, 28, 28, 1)).astype(np.float32)
    image_aggregate = _aggregate(mnist_model, images)
    made = {
        "moons": figures.moons_panels(model, moons_points, _marks(model, 1),
                                      _marks(model, 2), aggregate=aggregate,
                                      num_samples=200, grid_size=30, title="set"),
        "leakage": figures.leakage_curves({"a": {-5: 1.0, -3: None}}),
        "samples": figures.sample_grids(mnist_model.generate(16, seed=0).numpy(),
                                        mnist_model.generate(4, seed=1).numpy()),
        "line": figures.latent_line(mnist_model, [-1, 0], [1, 0.5],
                                    aggregate=image_aggregate, grid_size=30),
        "traversals": figures.traversals(mnist_model, image_aggregate[0][0],
                                         image_aggregate[0].std(0)),
    }
    for name, fig in made.items():
        path = plots.save_png(plots.figure_png(fig), str(tmp_path / f"{name}.png"))
        with open(path, "rb") as f:
            height, width, _ = tf.image.decode_png(f.read()).shape
        assert min(height, width) > 150 and max(height, width) < 3000, (name, height,
                                                                        width)
        assert math.isfinite(height * width)
