"""The figures: PNG images of the expected size with something drawn on them; templates drop
the bias row and span 0..255 as the notebook's."""
import matplotlib.image
import numpy as np
import pytest
import torch

from torch_svm.plots import plot_loss, plot_tune, plot_weights, weight_images

PNG = b"\x89PNG\r\n\x1a\n"


def test_weight_images_drop_bias_reshape_and_rescale_globally():
    W = torch.arange(2 * 3 * 2 * 4 + 4, dtype=torch.float32).reshape(-1, 4)  # (D + 1, C)
    W[-1] = 1e6                                                  # the bias row: must not count
    images = weight_images(W, (2, 3, 2))
    assert images.shape == (4, 2, 3, 2) and images.dtype.name == "uint8"
    assert images.min() == 0 and images.max() == 255            # one global min/max
    # column c of W[:-1] reshaped (H, W, channels) is template c
    assert images[0, 0, 0, 0] == 0 and images[3, 1, 2, 1] == 255
    with pytest.raises(ValueError, match="rows"):
        weight_images(W, (3, 3, 3))


def test_plots_write_pngs(tmp_path):
    plot_loss([5.0, 4.0, 3.0] * 100, tmp_path / "loss.png")
    plot_weights(torch.randn(65, 10), (8, 8, 1), [str(i) for i in range(10)], tmp_path / "w.png")
    plot_weights(torch.randn(3073, 3), (32, 32, 3), ["a", "b", "c"], tmp_path / "c.png")
    grid = [{"lr": lr, "reg": reg, "iters": 10, "val_accuracy": lr * reg, "diverged": lr > 2}
            for lr in (1.0, 3.0) for reg in (0.1, 0.2)]
    plot_tune(grid, tmp_path / "grid.png")
    plot_tune(grid[:3], tmp_path / "scatter.png")              # not a full grid
    for name in ("loss.png", "w.png", "c.png", "grid.png", "scatter.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
        _assert_drawn(tmp_path / name)
    with pytest.raises(ValueError, match="class_names"):
        plot_weights(torch.randn(65, 10), (8, 8, 1), ["a"], tmp_path / "x.png")


def _assert_drawn(path, min_side=100):
    """The PNG decodes to an image of a readable size with a real picture on it: not one flat
    colour, and more than a few pixels away from the background."""
    image = matplotlib.image.imread(path)                          # (H, W, 3 or 4) floats
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side, image.shape
    rgb = image[..., :3]
    background = np.median(rgb.reshape(-1, 3), axis=0)
    drawn = np.abs(rgb - background).max(axis=-1) > 0.1            # (H, W)
    assert rgb.std() > 0.01 and drawn.mean() > 0.002, (path.name, rgb.std(), drawn.mean())


def test_a_blank_image_is_caught(tmp_path):
    """The negative twin of _assert_drawn: a PNG of one colour is refused."""
    matplotlib.image.imsave(tmp_path / "blank.png", np.ones((300, 400, 3)))
    with pytest.raises(AssertionError):
        _assert_drawn(tmp_path / "blank.png")
