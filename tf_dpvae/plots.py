"""PNG figures: sample grids and two-moons scatter plots (files and TensorBoard images)."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(images, columns=None):
    """Tile [N, H, W, C] images in [0, 1] into one [rows·H, cols·W, C] array."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.ones((rows * h, columns * w, c), np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return grid


def figure_png(fig):
    """Render a matplotlib figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def samples_figure(samples, *, data=None, color=None, color_label=None, title=None):
    """A figure of generated samples: an image grid, or (2-D data) a scatter plot.

    For points, ``color`` (e.g. the prior log-density of each sample's z) colours the
    samples and ``data`` (the training points) is drawn in grey underneath.
    """
    samples = np.asarray(samples)
    if samples.ndim == 4:
        grid = image_grid(samples)
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid,
                  cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    else:
        fig, ax = plt.subplots(figsize=(6, 5))
        if data is not None:
            ax.scatter(data[:, 0], data[:, 1], s=3, c="0.8", label="training data")
        points = ax.scatter(samples[:, 0], samples[:, 1], s=3, c=color,
                            cmap="viridis" if color is not None else None,
                            label="generated")
        if color is not None:
            fig.colorbar(points, ax=ax, label=color_label)
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4)
    if title:
        ax.set_title(title)
    return fig


def save_png(png_bytes, path):
    with open(path, "wb") as f:
        f.write(png_bytes)
    return path
