"""Data bundled with installed packages (no download)."""

import torch

from pgmdl.datasets import load_digits


def test_digits_binarized_with_labels(device):
    images, labels = load_digits(return_labels=True, device=device)
    assert images.shape == (1797, 64) and images.device.type == device.type
    assert set(images.unique().tolist()) == {0.0, 1.0}
    assert labels.dtype == torch.long and set(labels.tolist()) == set(range(10))


def test_digits_grey_levels():
    images = load_digits(binarize=False, dtype=torch.float64)
    assert images.dtype == torch.float64
    assert images.min() == 0.0 and images.max() == 1.0
    assert len(images.unique()) == 17  # 0..16 grey levels scaled to [0, 1]
