"""The paper's figures as matplotlib Figures (Agg): two moons, leakage, samples, latents.

Each function returns a :class:`matplotlib.figure.Figure`; turn it into PNG bytes for a
file or TensorBoard with :func:`tf_dpvae.plots.figure_png` (which also closes it)::

    fig = figures.leakage_curves({"β-VAE": ls_beta, "β-dpVAE": ls_beta_dp})
    plots.save_png(plots.figure_png(fig), "leakage.png")

Inputs are plain numpy arrays (plus the model where decoding or the prior's bijection
g is needed), so these functions do not depend on how the metrics were computed:

* ``aggregate=(means, log_vars)``: the posterior parameters of N encoded training
  points, [N, L] each. q(z) = (1/N) Σ_n N(z; μ_n, σ_n²) is evaluated on a grid with
  :func:`tf_dpvae.estimators.aggregate_log_density` (see :func:`density_grid`).
* ``lp`` / ``hp``: low-/high-posterior samples as a dict with ``"z"`` ([K, L], in the
  representation space) and optionally ``"z0"`` (= g(z); computed when absent) and
  ``"x"`` (decoded; computed with ``model.decode_mean`` when absent). A bare [K, L]
  array is taken as ``"z"``.

The main panels of every figure carry an artist label (``ax.get_label()``, e.g.
``"q(z)"``) so that callers and tests can find them; colour bars are extra axes
labelled ``"<colorbar>"`` by matplotlib.
"""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_dpvae import estimators  # noqa: E402
from tf_dpvae.plots import image_grid  # noqa: E402

LP_STYLE = dict(marker="x", color="red", s=90, linewidths=2.5, zorder=5,
                label="low posterior (LP)")
HP_STYLE = dict(marker="+", color="darkorange", s=140, linewidths=2.5, zorder=5,
                label="high posterior (HP)")
DATA_STYLE = dict(s=4, c="0.75", linewidths=0, label="training data", zorder=1)

__all__ = ["density_grid", "moons_panels", "leakage_curves", "leakage_panels", "montage",
           "sample_grids", "latent_line", "traversals"]


# --------------------------------------------------------------------------- helpers
def _points(values, dim, name):
    """``values`` as a float32 [N, dim] array, or a ValueError naming ``name``."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        want = f"[N, {dim}]" if dim is not None else "[N, D]"
        raise ValueError(f"{name}: expected an array of shape {want}, got shape "
                         f"{tuple(array.shape)}")
    return array


def _vector(values, dim, name):
    array = np.asarray(values, dtype=np.float32)
    if array.shape != (dim,):
        raise ValueError(f"{name}: expected a vector of shape ({dim},), got shape "
                         f"{tuple(array.shape)}")
    return array


def _aggregate(aggregate, latent_dim):
    """(means, log_vars) checked: two [N, L] arrays of the same shape."""
    if aggregate is None or len(aggregate) != 2:
        raise ValueError("aggregate: expected (means, log_vars) of the encoded training "
                         "points, two arrays of shape [N, L]")
    means = _points(aggregate[0], latent_dim, "aggregate means")
    log_vars = _points(aggregate[1], latent_dim, "aggregate log_vars")
    if means.shape != log_vars.shape:
        raise ValueError(f"aggregate: means {means.shape} and log_vars {log_vars.shape} "
                         "differ in shape")
    if len(means) == 0:
        raise ValueError("aggregate: no encoded points")
    return means, log_vars


def _require_latent_2d(model, what):
    latent_dim = int(model.config.latent_dim)
    if latent_dim != 2:
        raise ValueError(f"{what} draws the 2-D latent space and needs latent_dim=2; "
                         f"this model has latent_dim={latent_dim}")


def _is_points_model(model):
    return model.config.is_points


def _numpy(tensor):
    return np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor)


def _decode(model, z):
    if len(z) == 0:
        return np.zeros((0,) + tuple(model.config.input_shape), np.float32)
    return _numpy(model.decode_mean(tf.constant(z, tf.float32)))


def _to_generation(model, z):
    if len(z) == 0:
        return z
    return _numpy(model.prior.to_generation(tf.constant(z, tf.float32)))


def _to_representation(model, z0):
    if len(z0) == 0:
        return z0
    return _numpy(model.prior.to_representation(tf.constant(z0, tf.float32)))


def _marked(samples, model, name):
    """A dict with z, z0 and x (numpy) for LP/HP samples given as a dict or array."""
    latent_dim = int(model.config.latent_dim)
    if isinstance(samples, dict):
        if "z" not in samples:
            raise ValueError(f"{name}: expected a dict with key 'z' (and optionally "
                             f"'z0', 'x'), got keys {sorted(samples)}")
        z = _points(samples["z"], latent_dim, f"{name}['z']")
        z0 = samples.get("z0")
        x = samples.get("x")
    else:
        z = _points(samples, latent_dim, name)
        z0 = x = None
    z0 = _to_generation(model, z) if z0 is None else _points(z0, latent_dim,
                                                             f"{name}['z0']")
    x = _decode(model, z) if x is None else np.asarray(x, np.float32)
    if len(z0) != len(z) or len(x) != len(z):
        raise ValueError(f"{name}: 'z' ({len(z)}), 'z0' ({len(z0)}) and 'x' ({len(x)}) "
                         "must hold the same number of samples")
    return {"z": z, "z0": z0, "x": x}


def _extent(*point_sets, pad=0.1):
    """(x0, x1, y0, y1) around all given [N, 2] points, padded by ``pad`` of the span."""
    points = np.concatenate([p for p in point_sets if len(p)], axis=0)
    finite = points[np.all(np.isfinite(points), axis=1)]
    if len(finite) == 0:
        return (-3.0, 3.0, -3.0, 3.0)
    lo, hi = finite.min(0), finite.max(0)
    span = np.maximum(hi - lo, 1e-3)
    lo, hi = lo - pad * span, hi + pad * span
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def _latent_extent(means, log_vars, *extra):
    """A view of q(z): the bulk of the means (0.5–99.5 %) ± 2 typical posterior sd,
    widened to hold every point of ``extra`` (LP/HP samples, a path)."""
    typical_sd = np.exp(0.5 * np.median(log_vars, axis=0))
    lo = np.percentile(means, 0.5, axis=0) - 2 * typical_sd
    hi = np.percentile(means, 99.5, axis=0) + 2 * typical_sd
    return _extent(np.stack([lo, hi]), *extra, pad=0.05)


def density_grid(means, log_vars, *, extent=None, size=100, batch_size=2048,
                 chunk_size=1024):
    """log q(z) of the aggregate posterior on a ``size`` × ``size`` grid (L = 2).

    Args:
      means, log_vars: [N, 2] posterior parameters of the encoded training points.
      extent: (x0, x1, y0, y1); default: the means' bounding box plus 3 posterior
        standard deviations, padded.
      size: grid points per axis.
      batch_size, chunk_size: grid points per call and mixture components per chunk of
        :func:`tf_dpvae.estimators.aggregate_log_density` (memory ∝ their product).

    Returns:
      ``(xs, ys, log_q)`` with ``log_q[i, j] = log q((xs[j], ys[i]))``, shape
      [len(ys), len(xs)] (the layout of ``imshow``/``contourf``).
    """
    means, log_vars = _aggregate((means, log_vars), 2)
    if extent is None:
        sd = np.exp(0.5 * log_vars)
        extent = _extent(means - 3 * sd, means + 3 * sd, pad=0.05)
    x0, x1, y0, y1 = (float(v) for v in extent)
    xs = np.linspace(x0, x1, int(size), dtype=np.float32)
    ys = np.linspace(y0, y1, int(size), dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    log_q = np.concatenate([
        _numpy(estimators.aggregate_log_density(grid[i:i + batch_size], means, log_vars,
                                                chunk_size=chunk_size))
        for i in range(0, len(grid), batch_size)])
    return xs, ys, log_q.reshape(len(ys), len(xs))


def _draw_density(ax, xs, ys, log_q, *, colorbar=True, log_scale=False):
    """q(z) (or log q(z), floored 12 nats below its maximum) as an image."""
    if log_scale:
        top = np.nanmax(log_q)
        values, label = np.maximum(log_q, top - 12.0), "log q(z)"
    else:
        values, label = np.exp(log_q), "q(z)"
    image = ax.imshow(values, origin="lower", extent=(xs[0], xs[-1], ys[0], ys[-1]),
                      cmap="magma", aspect="auto", interpolation="bilinear", zorder=0)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.02)
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    return image


def _show_images(ax, images, columns):
    if len(images):  # none (e.g. no LP samples could be chosen): an empty panel
        grid = image_grid(images, columns=columns)
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray",
                  vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _check_images_or_points(samples, name):
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim == 4 and array.shape[-1] in (1, 3):
        return array
    if array.ndim == 2 and array.shape[1] == 2:
        return array
    raise ValueError(f"{name}: expected images [N, H, W, 1 or 3] or 2-D points [N, 2], "
                     f"got shape {tuple(array.shape)}")


def _legend(ax, **kwargs):
    """A legend whose point markers are opaque and readable whatever the plot's alpha."""
    legend = ax.legend(**dict(dict(loc="best", fontsize=8, framealpha=0.85), **kwargs))
    for handle in legend.legend_handles:
        if handle is not None:
            handle.set_alpha(1.0)
            if hasattr(handle, "get_sizes") and len(handle.get_sizes()) and \
                    handle.get_sizes()[0] < 20:
                handle.set_sizes([20.0])
    return legend


def _finish(fig, title):
    if title:
        fig.suptitle(title)
    return fig


def _standard_normal_rings(ax):
    """Dashed circles at 1, 2, 3 sd of N(0, I): what p(z0) looks like."""
    angle = np.linspace(0, 2 * np.pi, 200)
    for radius in (1, 2, 3):
        ax.plot(radius * np.cos(angle), radius * np.sin(angle), ls="--", lw=0.8,
                color="0.4", zorder=2, label="N(0, I): 1, 2, 3 sd" if radius == 1 else None)


# --------------------------------------------------------------------------- Fig. 1/3
def moons_panels(model, data_points, lp, hp, *, aggregate, num_samples=2000, seed=0,
                 grid_size=120, log_density=False, title=None):
    """Paper Fig. 1 / Fig. 3: generation and latent spaces of a two-moons VAE (L = 2).

    Four panels in a row (artist labels in brackets):

    (a) ``"samples"``: ``num_samples`` generated points E[x|z], z ~ p(z), coloured by
        log p(z) (decoupled prior: log N(g(z); 0, I) + log|det ∂g/∂z|), over the
        training data in grey.
    (b) ``"q(z)"``: the aggregate posterior q(z) over a grid, with the LP samples'
        ``z`` (red x) and HP samples' ``z`` (orange +).
    (c) ``"z0"``: the generation space: the encoded training means g(μ) and the LP/HP
        ``z0``, with the 1/2/3-sd circles of N(0, I). For the standard prior z0 = z and
        the panel says "generation space = representation space".
    (d) ``"data"``: the training points with the decoded LP and HP samples.

    Args:
      model: a DpVAE with 2-D data and latent_dim = 2 (either prior).
      data_points: [N, 2] training points.
      lp, hp: low-/high-posterior samples (dict with ``"z"``, optional ``"z0"``,
        ``"x"``; or a [K, 2] array of z), e.g. the top five of each.
      aggregate: ``(means, log_vars)`` of the encoded training points, [M, 2] each;
        used for q(z) (panel b) and g(μ) (panel c).
      num_samples, seed: generated samples of panel (a).
      grid_size: grid points per axis of q(z).
      log_density: draw log q(z) (floored 12 nats below its maximum) instead of q(z).
      title: figure title.

    Returns a Figure with 4 panel axes and 2 colour bars.
    """
    if not _is_points_model(model) or tuple(model.config.input_shape) != (2,):
        raise ValueError("moons_panels needs a model of 2-D points (input_shape=(2,)); "
                         f"this model has input_shape={tuple(model.config.input_shape)}")
    _require_latent_2d(model, "moons_panels")
    data_points = _points(data_points, 2, "data_points")
    means, log_vars = _aggregate(aggregate, 2)
    lp = _marked(lp, model, "lp")
    hp = _marked(hp, model, "hp")
    decoupled = bool(model.prior.is_decoupled)

    x, z = model.generate(int(num_samples), seed=seed, return_latents=True)
    x, log_p = _numpy(x), _numpy(model.prior.log_prob(z))

    fig, axes = plt.subplots(1, 4, figsize=(22, 5.4), layout="constrained")
    ax_a, ax_b, ax_c, ax_d = axes
    for ax, label in zip(axes, ("samples", "q(z)", "z0", "data")):
        ax.set_label(label)

    # (a) generated samples coloured by their prior log-density.
    ax_a.scatter(data_points[:, 0], data_points[:, 1], **DATA_STYLE)
    finite = log_p[np.isfinite(log_p)]
    vmin, vmax = (np.percentile(finite, [1, 100]) if len(finite) else (None, None))
    points = ax_a.scatter(x[:, 0], x[:, 1], s=4, c=log_p, cmap="viridis", vmin=vmin,
                          vmax=vmax, linewidths=0, label="generated", zorder=2)
    fig.colorbar(points, ax=ax_a, fraction=0.046, pad=0.02,
                 label="log p(z)" + (" (with log-det of g)" if decoupled else ""))
    ax_a.set_title("(a) generated samples")
    ax_a.set_xlabel("x₁")
    ax_a.set_ylabel("x₂")
    _legend(ax_a, loc="upper right")

    # (b) aggregate posterior with LP/HP marked.
    extent = _latent_extent(means, log_vars, lp["z"], hp["z"])
    xs, ys, log_q = density_grid(means, log_vars, extent=extent, size=grid_size)
    _draw_density(ax_b, xs, ys, log_q, log_scale=log_density)
    ax_b.scatter(lp["z"][:, 0], lp["z"][:, 1], **LP_STYLE)
    ax_b.scatter(hp["z"][:, 0], hp["z"][:, 1], **HP_STYLE)
    ax_b.set_title("(b) aggregate posterior q(z), representation space")
    ax_b.set_xlabel("z₁")
    ax_b.set_ylabel("z₂")
    _legend(ax_b)

    # (c) generation space.
    mu0 = _to_generation(model, means)
    _standard_normal_rings(ax_c)
    ax_c.scatter(mu0[:, 0], mu0[:, 1], s=4, c="tab:blue", alpha=0.4, linewidths=0,
                 label="g(μ) of training data" if decoupled else "μ of training data",
                 zorder=1)
    ax_c.scatter(lp["z0"][:, 0], lp["z0"][:, 1], **LP_STYLE)
    ax_c.scatter(hp["z0"][:, 0], hp["z0"][:, 1], **HP_STYLE)
    if decoupled:
        ax_c.set_title("(c) generation space z₀ = g(z)")
    else:
        ax_c.set_title("(c) generation space = representation space (z₀ = z)")
    ax_c.set_xlabel("z₀,₁")
    ax_c.set_ylabel("z₀,₂")
    ax_c.set_aspect("equal", adjustable="datalim")
    _legend(ax_c)

    # (d) data space.
    ax_d.scatter(data_points[:, 0], data_points[:, 1], **DATA_STYLE)
    ax_d.scatter(lp["x"][:, 0], lp["x"][:, 1], **LP_STYLE)
    ax_d.scatter(hp["x"][:, 0], hp["x"][:, 1], **HP_STYLE)
    ax_d.set_title("(d) data space: decoded LP / HP samples")
    ax_d.set_xlabel("x₁")
    ax_d.set_ylabel("x₂")
    _legend(ax_d)

    prior_name = "decoupled prior" if decoupled else "standard normal prior"
    return _finish(fig, title or f"{model.config.regularizer}, {prior_name}")


# --------------------------------------------------------------------------- Fig. 4
def _check_curves(curves):
    if not isinstance(curves, dict) or not curves:
        raise ValueError("curves: expected a non-empty dict {label: {tau: score}}")
    if all(not isinstance(v, dict) for v in curves.values()):
        curves = {"": curves}
    for label, curve in curves.items():
        if not isinstance(curve, dict):
            raise ValueError(f"curves[{label!r}]: expected a dict {{tau: score}}, got "
                             f"{type(curve).__name__}")
    return curves


def _draw_leakage(ax, curves, xlabel, styles=None):
    markers = "osD^vP*Xh<>"
    for i, (label, curve) in enumerate(curves.items()):
        taus = sorted(float(t) for t in curve)
        by_tau = {float(t): s for t, s in curve.items()}
        scores = [np.nan if by_tau[t] is None else float(by_tau[t]) for t in taus]
        style = dict(marker=markers[i % len(markers)], ms=6, lw=1.8)
        style.update((styles or {}).get(label, {}))
        ax.plot(taus, scores, label=str(label) if label != "" else None, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("leakage score LS(τ)")
    ax.grid(True, alpha=0.3)
    if any(label != "" for label in curves):
        ax.legend(fontsize=8)


def leakage_curves(curves, *, title=None, xlabel="τ (threshold on log p(z))"):
    """Paper Fig. 4: leakage score LS(τ) against the threshold τ, one line per model.

    Args:
      curves: ``{label: {τ: LS(τ)}}`` for one or several models (a single ``{τ: LS}``
        is drawn unlabelled). A score of None or NaN means that no sample has
        log p(z) < τ; that point is left missing (a gap in the line), as in the paper.
      title: axes title.

    Returns a Figure with one axes (label ``"leakage"``); lines are drawn in the
    order of ``curves``, with their x data sorted by τ.
    """
    curves = _check_curves(curves)
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    ax.set_label("leakage")
    _draw_leakage(ax, curves, xlabel)
    ax.set_title(title or "Latent leakage (missing: no sample with log p(z) < τ)",
                 fontsize=10)
    return fig


def leakage_panels(panels, *, title=None, xlabel="τ (threshold on log p(z))", columns=3):
    """Fig. 4 for a whole study: one axes per regularizer, its models overlaid.

    Args:
      panels: ``{panel title: {label: {τ: LS(τ)}}}``. Within a panel, labels that
        contain "dp" (the decoupled prior's models, e.g. "β-dpVAE-H seed 0") are drawn
        dashed in orange, the others solid in blue; several seeds of one model share
        its colour.

    Returns a Figure with one axes per panel, labelled by the panel title.
    """
    if not isinstance(panels, dict) or not panels:
        raise ValueError("panels: expected a non-empty dict {title: {label: curve}}")
    rows = math.ceil(len(panels) / columns)
    columns = min(columns, len(panels))
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.9 * rows),
                             layout="constrained", squeeze=False)
    for ax, (panel, curves) in zip(axes.flat, panels.items()):
        curves = _check_curves(curves)
        styles = {label: (dict(color="tab:orange", ls="--", marker="s", ms=4)
                          if "dp" in str(label) else
                          dict(color="tab:blue", ls="-", marker="o", ms=4))
                  for label in curves}
        ax.set_label(str(panel))
        _draw_leakage(ax, curves, xlabel, styles)
        ax.set_title(str(panel), fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return _finish(fig, title)


def montage(cells, *, rows, columns, row_labels=None, column_labels=None, title=None,
            cell_width=None):
    """Tile already-written PNG figures into one figure (e.g. one per run of a study).

    Args:
      cells: ``{(row, column): path to a PNG}``; missing cells stay empty.
      rows, columns: the grid size.
      row_labels, column_labels: text at the left of each row / top of each column.
      cell_width: inches per column (default: 4, or 9 for wide images such as the
        four-panel two-moons figure); heights follow the images' aspect ratio.

    Returns the Figure.
    """
    if not cells:
        raise ValueError("cells: expected at least one {(row, column): png path}")
    images = {}
    for (row, col), path in cells.items():
        if not (0 <= row < rows and 0 <= col < columns):
            raise ValueError(f"cells: ({row}, {col}) is outside a {rows}×{columns} grid")
        images[(row, col)] = plt.imread(path)
    aspect = max(image.shape[0] / image.shape[1] for image in images.values())
    cell_width = cell_width or (9.0 if aspect < 0.4 else 4.0)
    fig, axes = plt.subplots(rows, columns, squeeze=False, layout="constrained",
                             figsize=(cell_width * columns, cell_width * aspect * rows + 0.4))
    for (row, col), ax in np.ndenumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if (row, col) in images:
            ax.imshow(images[(row, col)])
        if row_labels and col == 0:
            ax.set_ylabel(row_labels[row], fontsize=11)
        if column_labels and row == 0:
            ax.set_title(column_labels[col], fontsize=11)
    return _finish(fig, title)


# --------------------------------------------------------------------------- Fig. 5
def sample_grids(generated, lp_generated, *, data_points=None, columns=None, title=None):
    """Paper Fig. 5: generated ("Gen") and low-posterior ("LP-Gen") samples side by side.

    Args:
      generated: decoded prior samples, images [N, H, W, C] in [0, 1] (C = 1 or 3) or
        2-D points [N, 2].
      lp_generated: decoded LP samples, of the same kind.
      data_points: for 2-D points, the training data drawn in grey underneath.
      columns: images per grid row (default: square grids).
      title: figure title.

    Returns a Figure with two axes, labelled ``"Gen"`` and ``"LP-Gen"``.
    """
    generated = _check_images_or_points(generated, "generated")
    lp_generated = _check_images_or_points(lp_generated, "lp_generated")
    if generated.shape[1:] != lp_generated.shape[1:]:
        raise ValueError(f"generated {tuple(generated.shape)} and lp_generated "
                         f"{tuple(lp_generated.shape)} must be samples of the same kind")
    images = generated.ndim == 4
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.3 if images else 5.5),
                             layout="constrained")
    if not images and data_points is not None:
        data_points = _points(data_points, 2, "data_points")
    for ax, samples, label in zip(axes, (generated, lp_generated), ("Gen", "LP-Gen")):
        ax.set_label(label)
        if images:
            _show_images(ax, samples, columns)
        else:
            if data_points is not None:
                ax.scatter(data_points[:, 0], data_points[:, 1], **DATA_STYLE)
            style = dict(LP_STYLE, s=12, linewidths=1.2) if label == "LP-Gen" else dict(
                s=4, c="tab:blue", linewidths=0, zorder=2)
            ax.scatter(samples[:, 0], samples[:, 1], **dict(style, label=label))
            ax.set_xlabel("x₁")
            ax.set_ylabel("x₂")
        ax.set_title(f"{label} ({len(samples)} samples)")
    if not images:
        x_lo = min(ax.get_xlim()[0] for ax in axes)
        x_hi = max(ax.get_xlim()[1] for ax in axes)
        y_lo = min(ax.get_ylim()[0] for ax in axes)
        y_hi = max(ax.get_ylim()[1] for ax in axes)
        for ax in axes:
            ax.set_xlim(x_lo, x_hi)
            ax.set_ylim(y_lo, y_hi)
    return _finish(fig, title)


# --------------------------------------------------------------------------- Fig. 6
def latent_line(model, z0_start, z0_end, *, aggregate, num_points=10, grid_size=100,
                data_points=None, log_density=False, title=None):
    """Paper Fig. 6: a straight line in the generation space z0, mapped through g⁻¹.

    The line z0(t) = (1 − t) z0_start + t z0_end, t in [0, 1] (``num_points``
    points), is mapped to the representation space, z(t) = g⁻¹(z0(t)), and drawn over
    the aggregate posterior q(z) (start: green star, end: yellow star); next to it,
    the decoded E[x|z(t)] as a row of images (for 2-D data: the decoded points over
    the training data). For the decoupled prior a first panel shows the straight line
    in z0 over the encoded g(μ); for the standard prior g is the identity, the line is
    straight in z and that panel is left out.

    Args:
      model: a DpVAE with latent_dim = 2 (either prior).
      z0_start, z0_end: [2] codes in the generation space (e.g. g(μ(x)) of two images).
      aggregate: ``(means, log_vars)`` of the encoded training points, [N, 2] each.
      num_points: points along the line (≥ 2).
      grid_size: grid points per axis of q(z).
      data_points: for 2-D data, the training points drawn in grey.
      log_density: draw log q(z) instead of q(z).
      title: figure title.

    Returns a Figure with the panels ``"z0"`` (decoupled prior only), ``"q(z)"`` and
    ``"decoded"`` (plus one colour bar). In ``"q(z)"`` the path is the line labelled
    ``"path"`` whose points are ``prior.to_representation(line)``.

    Raises ValueError for latent_dim ≠ 2 or wrongly shaped inputs.
    """
    _require_latent_2d(model, "latent_line")
    z0_start = _vector(z0_start, 2, "z0_start")
    z0_end = _vector(z0_end, 2, "z0_end")
    if int(num_points) < 2:
        raise ValueError(f"num_points={num_points}: need at least 2 points on the line")
    means, log_vars = _aggregate(aggregate, 2)
    decoupled = bool(model.prior.is_decoupled)

    t = np.linspace(0.0, 1.0, int(num_points), dtype=np.float32)[:, None]
    line = (1.0 - t) * z0_start + t * z0_end
    path = _to_representation(model, line)
    decoded = _decode(model, path)
    images = not _is_points_model(model)

    if images:
        # Images in rows of at most 8, the strip about as tall as the latent panels.
        rows = math.ceil(len(decoded) / 8)
        columns = math.ceil(len(decoded) / rows)
        strip = max(1.0, 0.8 * columns / rows)
    else:
        columns, strip = None, 1.0
    widths = ([1.0] if decoupled else []) + [1.15, strip]
    fig, axes = plt.subplots(1, len(widths), figsize=(4.6 * sum(widths), 4.6),
                             width_ratios=widths, layout="constrained")
    axes = list(axes)
    start_style = dict(marker="*", s=260, color="limegreen", edgecolors="k", zorder=6,
                       label="start")
    end_style = dict(marker="*", s=260, color="gold", edgecolors="k", zorder=6,
                     label="end")

    if decoupled:
        ax0 = axes.pop(0)
        ax0.set_label("z0")
        mu0 = _to_generation(model, means)
        _standard_normal_rings(ax0)
        ax0.scatter(mu0[:, 0], mu0[:, 1], s=3, c="tab:blue", alpha=0.3, linewidths=0,
                    label="g(μ) of training data", zorder=1)
        ax0.plot(line[:, 0], line[:, 1], "-o", color="red", ms=4, lw=2, zorder=4,
                 label="line")
        ax0.scatter(*line[0], **start_style)
        ax0.scatter(*line[-1], **end_style)
        ax0.set_aspect("equal", adjustable="datalim")
        ax0.set_title("generation space z₀: straight line")
        ax0.set_xlabel("z₀,₁")
        ax0.set_ylabel("z₀,₂")
        _legend(ax0)

    ax_q, ax_x = axes
    ax_q.set_label("q(z)")
    ax_x.set_label("decoded")
    extent = _latent_extent(means, log_vars, path)
    xs, ys, log_q = density_grid(means, log_vars, extent=extent, size=grid_size)
    _draw_density(ax_q, xs, ys, log_q, log_scale=log_density)
    ax_q.plot(path[:, 0], path[:, 1], "-o", color="red", ms=4, lw=2, zorder=4,
              label="path")
    ax_q.scatter(*path[0], **start_style)
    ax_q.scatter(*path[-1], **end_style)
    ax_q.set_title("q(z) with the path g⁻¹(line)" if decoupled
                   else "q(z) with the line (z₀ = z)")
    ax_q.set_xlabel("z₁")
    ax_q.set_ylabel("z₂")

    if images:
        _show_images(ax_x, decoded, columns=columns)
        ax_x.set_title(f"decoded along the path: {len(decoded)} steps, start → end"
                       + (", row by row" if len(decoded) > columns else ""))
    else:
        if data_points is not None:
            data_points = _points(data_points, 2, "data_points")
            ax_x.scatter(data_points[:, 0], data_points[:, 1], **DATA_STYLE)
        decoded = decoded.reshape(len(decoded), -1)
        ax_x.plot(decoded[:, 0], decoded[:, 1], "-", color="red", lw=1, zorder=3)
        ax_x.scatter(decoded[:, 0], decoded[:, 1], c=t[:, 0], cmap="viridis", s=30,
                     zorder=4, label="decoded")
        ax_x.scatter(*decoded[0], **start_style)
        ax_x.scatter(*decoded[-1], **end_style)
        ax_x.set_title("decoded along the path")
        ax_x.set_xlabel("x₁")
        ax_x.set_ylabel("x₂")
    return _finish(fig, title)


# --------------------------------------------------------------------------- Fig. 8
def traversals(model, z_center, spreads, *, num_steps=11, max_sd=5.0, dims=None,
               data_points=None, title=None):
    """Paper Fig. 8: per-dimension latent traversals of ±``max_sd`` standard deviations.

    For each latent dimension l, z_l runs over ``z_center[l] + s · spreads[l]`` for
    ``num_steps`` values of s evenly spaced in [−max_sd, max_sd], the other dimensions
    fixed at ``z_center`` (e.g. the posterior mean of one image, so the middle column
    is its reconstruction). Rows are sorted by spread, largest (most used dimension)
    first. Traversals act on z directly, so both priors are handled alike.

    Args:
      model: a DpVAE.
      z_center: [L] code to traverse around.
      spreads: [L] standard deviation of q(z) per dimension (e.g. the std of the
        encoded means), all ≥ 0.
      num_steps: values per dimension (odd puts z_center in the middle).
      max_sd: the traversal covers ±max_sd spreads.
      dims: None (all dimensions), an int k (the k dimensions of largest spread), or a
        list of dimension indices (drawn sorted by spread).
      data_points: for 2-D data, the training points drawn in grey.
      title: figure title.

    Returns a Figure: for images one axes per row, labelled ``"z_l"`` with the y label
    ``"z_l (sd=…)"``; for 2-D data one axes (label ``"traversals"``) with one decoded
    curve per dimension, in row order, labelled ``"z_l (sd=…)"``.
    """
    latent_dim = int(model.config.latent_dim)
    z_center = _vector(z_center, latent_dim, "z_center")
    spreads = _vector(spreads, latent_dim, "spreads")
    if not np.all(np.isfinite(spreads)) or np.any(spreads < 0):
        raise ValueError("spreads: expected finite standard deviations ≥ 0")
    if int(num_steps) < 2:
        raise ValueError(f"num_steps={num_steps}: need at least 2 steps")
    if dims is None:
        chosen = np.arange(latent_dim)
    elif isinstance(dims, (int, np.integer)):
        if not 1 <= dims <= latent_dim:
            raise ValueError(f"dims={dims}: expected 1..{latent_dim} dimensions")
        chosen = np.argsort(-spreads, kind="stable")[:int(dims)]
    else:
        chosen = np.asarray(list(dims), dtype=int)
        if chosen.ndim != 1 or len(chosen) == 0 or np.any(chosen < 0) or np.any(
                chosen >= latent_dim) or len(set(chosen.tolist())) != len(chosen):
            raise ValueError(f"dims={list(dims)}: expected distinct indices in "
                             f"[0, {latent_dim})")
    order = chosen[np.argsort(-spreads[chosen], kind="stable")]

    offsets = np.linspace(-max_sd, max_sd, int(num_steps), dtype=np.float32)
    codes = np.repeat(z_center[None, None, :], len(order) * len(offsets), 0).reshape(
        len(order), len(offsets), latent_dim).copy()
    for row, dim in enumerate(order):
        codes[row, :, dim] = z_center[dim] + offsets * spreads[dim]
    decoded = _decode(model, codes.reshape(-1, latent_dim))
    decoded = decoded.reshape((len(order), len(offsets)) + decoded.shape[1:])
    labels = [f"z_{dim} (sd={spreads[dim]:.3g})" for dim in order]

    if _is_points_model(model):
        fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
        ax.set_label("traversals")
        if data_points is not None:
            data_points = _points(data_points, 2, "data_points")
            ax.scatter(data_points[:, 0], data_points[:, 1], **DATA_STYLE)
        colors = plt.get_cmap("tab10")
        for row, label in enumerate(labels):
            curve = decoded[row].reshape(len(offsets), -1)
            color = colors(row % 10)
            ax.plot(curve[:, 0], curve[:, 1], "-o", ms=3, lw=1.5, color=color,
                    label=label, zorder=3)
            ax.scatter(*curve[0], marker="s", s=45, color=color, zorder=4)
            ax.scatter(*curve[-1], marker="^", s=70, color=color, zorder=4)
        if len(offsets) % 2:
            center = decoded[0, len(offsets) // 2].reshape(-1)
            ax.scatter(center[0], center[1], marker="*", s=200, color="k", zorder=5,
                       label="decoded z_center")
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
        _legend(ax, title=f"from −{max_sd:g} sd (■) to +{max_sd:g} sd (▲)")
        ax.set_title(title or "latent traversals, sorted by spread")
        return fig

    height, width = decoded.shape[2:4]
    cell = 0.62
    fig_w = cell * len(offsets) * max(width / height, 0.5) + 1.9
    fig, axes = plt.subplots(len(order), 1, figsize=(fig_w, cell * len(order) + 1.0),
                             layout="constrained", squeeze=False)
    axes = axes[:, 0]
    for row, (ax, dim, label) in enumerate(zip(axes, order, labels)):
        ax.set_label(f"z_{dim}")
        _show_images(ax, decoded[row], columns=len(offsets))
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        if len(offsets) % 2:
            middle = len(offsets) // 2
            ax.add_patch(plt.Rectangle((middle * width - 0.5, -0.5), width, height,
                                       fill=False, edgecolor="tab:red", lw=1.2))
    axes[-1].set_xticks((np.arange(len(offsets)) + 0.5) * width - 0.5)
    axes[-1].set_xticklabels([f"{o:+.3g}" for o in offsets], fontsize=8)
    axes[-1].set_xlabel("offset in sd of q(z)")
    return _finish(fig, title)
