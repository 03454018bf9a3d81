"""Tests of tf_dpvae.priors against independent answers (numpy, scipy, autodiff)."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tf_dpvae import priors
from tf_dpvae.config import ModelConfig
from flow_reference import autodiff_log_det  # noqa: E402


def randomize(prior, seed):
    """Random non-trivial weights for every flow variable, so g is not the identity."""
    rng = np.random.default_rng(seed)
    for v in prior.trainable_variables:
        v.assign(rng.normal(0.0, 0.2, v.shape).astype(v.dtype))


def random_flow(latent_dim, seed, **kwargs):
    prior = priors.DecoupledPrior(latent_dim, **kwargs)
    prior.build()
    randomize(prior, seed)
    return prior


def np_mlp(weights, x, final):
    """Dense stack in numpy ([(kernel, bias)] per layer): LeakyReLU(0.2) on hidden
    layers, ``final`` on the output. (TF's LeakyRelu op holds its slope as a float32
    attribute: 0.2 rounded to float32, also in float64 graphs.)"""
    slope = float(np.float32(0.2))
    for i, (kernel, bias) in enumerate(weights):
        x = x @ kernel + bias
        x = np.where(x > 0, x, slope * x) if i < len(weights) - 1 else final(x)
    return x


def np_nets(prior, k, u_c, bound_shift=False):
    """Block k's (t(u_c), s(u_c)) in numpy from its weights."""
    weights = prior.flow.block_weights(k)
    return (np_mlp(weights["shift"], u_c, np.tanh if bound_shift else (lambda a: a)),
            np_mlp(weights["log_scale"], u_c, np.tanh))


# ------------------------------------------------------------------ coupling masks
def test_masks_alternate_latent2():
    masks = priors.coupling_masks(2, 6)
    expected = [[1, 0], [0, 1]] * 3
    assert [m.tolist() for m in masks] == expected


def test_masks_alternate_latent5_halves():
    masks = priors.coupling_masks(5, 4, "alternate")
    expected = [[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]] * 2
    assert [m.tolist() for m in masks] == expected


def test_masks_checkerboard():
    masks = priors.coupling_masks(5, 3, "checkerboard")
    expected = [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0], [1, 0, 1, 0, 1]]
    assert [m.tolist() for m in masks] == expected


def test_masks_explicit_cycled():
    masks = priors.coupling_masks(2, 3, "10,01")
    assert [m.tolist() for m in masks] == [[1, 0], [0, 1], [1, 0]]
    masks = priors.coupling_masks(4, 2, "0110, 1001")
    assert [m.tolist() for m in masks] == [[0, 1, 1, 0], [1, 0, 0, 1]]


@pytest.mark.parametrize("latent_dim, kind", [
    (1, "alternate"),       # nothing to split
    (1, "checkerboard"),
    (2, "11"),              # all ones: nothing transformed
    (2, "00,10"),           # all zeros: nothing to condition on
    (2, "101"),             # wrong length
    (3, "10,01"),           # wrong length
    (2, "1x"),              # not 0/1
])
def test_masks_errors(latent_dim, kind):
    with pytest.raises(ValueError):
        priors.coupling_masks(latent_dim, 2, kind)


def test_decoupled_prior_rejects_latent1():
    with pytest.raises(ValueError):
        priors.DecoupledPrior(1)


# ------------------------------------------------------------------ bijection
@pytest.mark.parametrize("latent_dim, masks", [
    (2, "alternate"), (5, "alternate"), (5, "checkerboard"), (5, "10110,01001"),
])
def test_round_trip(float64, latent_dim, masks):
    prior = random_flow(latent_dim, seed=latent_dim, masks=masks)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(64, latent_dim)) * 1.5
    z0 = prior.to_generation(tf.constant(z)).numpy()
    assert np.max(np.abs(z0 - z)) > 0.1, "flow is (nearly) the identity: test would be vacuous"
    np.testing.assert_allclose(prior.to_representation(tf.constant(z0)).numpy(), z,
                               atol=1e-10)
    w0 = rng.normal(size=(64, latent_dim))
    w = prior.to_representation(tf.constant(w0)).numpy()
    np.testing.assert_allclose(prior.to_generation(tf.constant(w)).numpy(), w0, atol=1e-10)


@pytest.mark.parametrize("latent_dim", [2, 3, 6])
def test_log_det_matches_autodiff_jacobian(float64, latent_dim):
    prior = random_flow(latent_dim, seed=10 + latent_dim)
    z = np.random.default_rng(2).normal(size=(32, latent_dim)) * 1.5
    y_ad, log_det_ad = autodiff_log_det(prior, z)
    assert np.std(log_det_ad) > 1e-2, "log-det (nearly) constant: test would be vacuous"
    y, log_det = prior.forward_and_log_det(tf.constant(z))
    np.testing.assert_allclose(y.numpy(), y_ad, atol=1e-12)
    np.testing.assert_allclose(log_det.numpy(), log_det_ad, atol=1e-9)


@pytest.mark.parametrize("masks, mask", [
    ("alternate", [1, 1, 0, 0]),
    ("checkerboard", [1, 0, 1, 0]),
    ("0110", [0, 1, 1, 0]),
])
def test_single_block_coupling_formula(float64, masks, mask):
    """y = b⊙u + (1−b)⊙(u⊙exp(s(b⊙u)) + t(b⊙u)), log-det Σ (1−b) s (DESIGN §1)."""
    prior = random_flow(4, seed=3, num_blocks=1, masks=masks)
    np.testing.assert_array_equal(prior.flow.masks[0], mask)
    b = np.array(mask, bool)
    u = np.random.default_rng(4).normal(size=(20, 4))
    shift, log_scale = np_nets(prior, 0, u[:, b])
    y = u.copy()
    y[:, ~b] = u[:, ~b] * np.exp(log_scale) + shift
    assert np.max(np.abs(y - u)) > 0.1
    got, log_det = prior.forward_and_log_det(tf.constant(u))
    np.testing.assert_allclose(got.numpy(), y, atol=1e-12)
    np.testing.assert_allclose(log_det.numpy(), log_scale.sum(-1), atol=1e-12)
    np.testing.assert_allclose(prior.to_generation(tf.constant(u)).numpy(), y, atol=1e-12)


def test_two_blocks_compose_in_order(float64):
    """Block 0 acts on z first, then block 1 (z → z0)."""
    prior = random_flow(4, seed=5, num_blocks=2)
    u = np.random.default_rng(6).normal(size=(20, 4))
    y, total = u, np.zeros(len(u))
    for k, mask in enumerate(prior.flow.masks):
        b = mask.astype(bool)
        shift, log_scale = np_nets(prior, k, y[:, b])
        y = y.copy()
        y[:, ~b] = y[:, ~b] * np.exp(log_scale) + shift
        total += log_scale.sum(-1)
    got, log_det = prior.forward_and_log_det(tf.constant(u))
    np.testing.assert_allclose(got.numpy(), y, atol=1e-12)
    np.testing.assert_allclose(log_det.numpy(), total, atol=1e-12)


@pytest.mark.parametrize("bound_shift", [False, True])
def test_coupling_net_is_the_documented_mlp(float64, bound_shift):
    """s, t: in→64→64→out, LeakyReLU(0.2), tanh on s (and on t with bound_shift)."""
    prior = random_flow(4, seed=7, num_blocks=1, bound_shift=bound_shift)
    weights = prior.flow.block_weights(0)
    for kind in ("shift", "log_scale"):
        assert [k.shape for k, _ in weights[kind]] == [(2, 64), (64, 64), (64, 2)]
        assert [b.shape for _, b in weights[kind]] == [(64,), (64,), (2,)]
    # The two MLPs have their own weights.
    assert not np.allclose(weights["shift"][1][0], weights["log_scale"][1][0])
    x = np.random.default_rng(8).normal(size=(10, 2)) * 2.0
    shift, log_scale = (v.numpy() for v in prior.flow.shift_and_log_scale(0, tf.constant(x)))
    t_final = np.tanh if bound_shift else (lambda a: a)
    np.testing.assert_allclose(shift, np_mlp(weights["shift"], x, t_final), atol=1e-12)
    np.testing.assert_allclose(log_scale, np_mlp(weights["log_scale"], x, np.tanh),
                               atol=1e-12)


def test_decoupled_log_prob_is_change_of_variables(float64):
    prior = random_flow(3, seed=9)
    z = np.random.default_rng(9).normal(size=(16, 3))
    y, log_det = autodiff_log_det(prior, z)
    expected = scipy.stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(y) + log_det
    np.testing.assert_allclose(prior.log_prob(tf.constant(z)).numpy(), expected, atol=1e-9)


# ------------------------------------------------------------------ normalisation
def _grid_integral(prior, half_width=30.0, step=0.2):
    # A random flow (weights ~ N(0, 0.2²)) has heavy tails: ~1.3% of its mass lies
    # beyond |z| = 12 for the seed below, so the box is wide; the density is smooth
    # enough that step 0.2 changes the sum by ~1e-4 against step 0.1.
    axis = np.arange(-half_width, half_width + step / 2, step)
    zz = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    density = np.exp(prior.log_prob(tf.constant(zz)).numpy())
    return density.sum() * step * step, density


def test_decoupled_density_integrates_to_one(float64):
    prior = random_flow(2, seed=11)
    total, density = _grid_integral(prior)
    # Not the standard normal: the flow reshapes the density noticeably.
    _, normal_density = _grid_integral(priors.StandardNormalPrior(2))
    assert np.max(np.abs(density - normal_density)) > 1e-2
    assert abs(total - 1.0) < 2e-3


def test_standard_normal_density_integrates_to_one(float64):
    total, _ = _grid_integral(priors.StandardNormalPrior(2))
    assert abs(total - 1.0) < 1e-6


# ------------------------------------------------------------------ standard normal
def test_standard_normal_prior(float64):
    prior = priors.StandardNormalPrior(4)
    z = np.random.default_rng(12).normal(size=(10, 4)) * 2.0
    expected = scipy.stats.multivariate_normal(np.zeros(4), np.eye(4)).logpdf(z)
    np.testing.assert_allclose(prior.log_prob(tf.constant(z)).numpy(), expected, atol=1e-12)
    y, log_det = prior.forward_and_log_det(tf.constant(z))
    np.testing.assert_array_equal(y.numpy(), z)
    np.testing.assert_array_equal(log_det.numpy(), np.zeros(10))
    np.testing.assert_array_equal(prior.to_generation(tf.constant(z)).numpy(), z)
    np.testing.assert_array_equal(prior.to_representation(tf.constant(z)).numpy(), z)


# ------------------------------------------------------------------ sampling
def test_sample_seeded():
    normal = priors.StandardNormalPrior(3)
    a = normal.sample(500, seed=1).numpy()
    np.testing.assert_array_equal(a, normal.sample(500, seed=1).numpy())
    assert not np.allclose(a, normal.sample(500, seed=2).numpy())
    # Really N(0, I): moments within a few standard errors.
    assert np.all(np.abs(a.mean(0)) < 4 / np.sqrt(500))
    assert np.all(np.abs(a.std(0) - 1) < 4 / np.sqrt(1000))

    flow = random_flow(3, seed=13)
    s = flow.sample(200, seed=1).numpy()
    np.testing.assert_array_equal(s, flow.sample(200, seed=1).numpy())
    assert not np.allclose(s, flow.sample(200, seed=2).numpy())
    # z = g⁻¹(z0) with z0 the same seeded standard-normal draw.
    z0 = normal.sample(200, seed=1).numpy()
    assert np.max(np.abs(s - z0)) > 0.1
    np.testing.assert_allclose(s, flow.to_representation(tf.constant(z0)).numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(flow.to_generation(tf.constant(s)).numpy(), z0,
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ initialisation
def test_fresh_decoupled_prior_is_identity(float64):
    prior = priors.make_prior("decoupled", 3)
    z = np.random.default_rng(14).normal(size=(20, 3)) * 2.0
    np.testing.assert_allclose(prior.to_generation(tf.constant(z)).numpy(), z, atol=1e-12)
    expected = scipy.stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(z)
    np.testing.assert_allclose(prior.log_prob(tf.constant(z)).numpy(), expected, atol=1e-12)


def test_flow_variables_tracked_by_model():
    from tf_dpvae.model import DpVAE

    config = ModelConfig(prior="decoupled")
    model = DpVAE(config)
    model_ids = {id(v) for v in model.trainable_variables}
    flow = model.prior.trainable_variables
    # Blocks of one shape share a variable per layer and kind: [K, 2 (t, s), d_in, d_out]
    # kernels and [K, 2, 1, d_out] biases; for L = 2 every block has |C| = |T| = 1.
    expected_count = (config.flow_hidden_layers + 1) * 2
    assert len(flow) == expected_count == 6
    assert sum(id(v) in model_ids for v in flow) == expected_count
    assert [tuple(v.shape) for v in flow if len(v.shape) == 4 and v.shape[-2] != 1] == [
        (6, 2, 64, 64), (6, 2, 64, 1)]
    # Parameter count for L = 2: K blocks × (s, t) MLPs, each 1→64→64→1.
    per_mlp = (1 * 64 + 64) + (64 * 64 + 64) + (64 * 1 + 1)
    assert sum(int(np.prod(v.shape)) for v in flow) == config.flow_blocks * 2 * per_mlp


# ------------------------------------------------------------------ one pass vs TFP
def tfp_real_nvp_chain(prior):
    """The same flow built from TFP's bijectors (Permute, RealNVP, Permute per block),
    sharing the prior's s and t networks: an independent implementation of g."""
    import tensorflow_probability as tfp
    tfb = tfp.bijectors
    blocks = []
    for k, mask in enumerate(prior.flow.masks):
        conditioning, transformed = np.flatnonzero(mask), np.flatnonzero(1 - mask)
        order = np.concatenate([conditioning, transformed]).astype(np.int32)
        nvp = tfb.RealNVP(num_masked=len(conditioning),
                          shift_and_log_scale_fn=lambda u, _w, k=k: prior.flow.shift_and_log_scale(
                              k, u))
        blocks.append(tfb.Chain([tfb.Permute(np.argsort(order).astype(np.int32)), nvp,
                                 tfb.Permute(order)]))
    return tfb.Chain(list(reversed(blocks)))


@pytest.mark.parametrize("latent_dim, masks", [(2, "alternate"), (5, "checkerboard"),
                                               (4, "1100,0110,0011")])
def test_one_pass_matches_tfp_real_nvp(float64, latent_dim, masks):
    prior = random_flow(latent_dim, seed=11, num_blocks=5, masks=masks, bound_shift=True)
    bijector = tfp_real_nvp_chain(prior)
    z = np.random.default_rng(12).normal(size=(40, latent_dim)) * 1.5
    y, log_det = prior.forward_and_log_det(tf.constant(z))
    assert np.std(log_det.numpy()) > 1e-2
    np.testing.assert_allclose(y.numpy(), bijector.forward(tf.constant(z)).numpy(),
                               atol=1e-12)
    np.testing.assert_allclose(
        log_det.numpy(),
        bijector.forward_log_det_jacobian(tf.constant(z), event_ndims=1).numpy(), atol=1e-12)
    z0 = np.random.default_rng(13).normal(size=(40, latent_dim))
    np.testing.assert_allclose(prior.to_representation(tf.constant(z0)).numpy(),
                               bijector.inverse(tf.constant(z0)).numpy(), atol=1e-12)


def test_coupling_nets_run_once_per_block_in_log_prob():
    """log p(z) evaluates each block's s and t networks once (g(z) and the log-det in
    one pass, the two MLPs batched): one batched matmul per block and layer."""
    prior = random_flow(2, seed=14)
    graph = tf.function(prior.log_prob).get_concrete_function(
        tf.TensorSpec([None, 2], tf.float32)).graph
    matmuls = sum(op.type in ("MatMul", "_MklMatMul", "BatchMatMulV2", "BatchMatMulV3")
                  for op in graph.get_operations())
    assert matmuls == len(prior.flow.masks) * 3 == 18


def test_blocks_of_different_shapes_get_their_own_variables():
    """L = 5, alternate masks: |C| = 2, |T| = 3, then |C| = 3, |T| = 2 — two groups."""
    prior = random_flow(5, seed=15, num_blocks=4)
    assert len(prior.nets) == 2
    assert [net.num_blocks for net in prior.nets] == [2, 2]
    assert [net.dims for net in prior.nets] == [[2, 64, 64, 3], [3, 64, 64, 2]]
    u = np.random.default_rng(16).normal(size=(8, 5))
    for k, mask in enumerate(prior.flow.masks):
        b = mask.astype(bool)
        got = [v.numpy() for v in prior.flow.shift_and_log_scale(k, tf.constant(u[:, b],
                                                                            tf.float32))]
        for a, e in zip(got, np_nets(prior, k, u[:, b])):
            np.testing.assert_allclose(a, e, atol=1e-5)
