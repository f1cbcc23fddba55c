"""The 8x8 handwritten digits data set (real data, bundled with scikit-learn)."""

from __future__ import annotations

import torch


def load_digits(
    *,
    binarize: bool = True,
    threshold: float = 0.5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    return_labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Load the 1797 8x8 handwritten digit images as a (1797, 64) tensor in [0, 1].

    Source: the UCI "Optical Recognition of Handwritten Digits" data set (test part), as
    bundled with scikit-learn (``sklearn.datasets.load_digits``); it ships inside the
    scikit-learn wheel, so nothing is downloaded. This is real, not synthetic, data:
    handwritten digits 0-9 from 43 writers, downsampled to 8x8 with 17 grey levels (0-16).

    Args:
        binarize: if true, return ``(pixel / 16 > threshold)`` as 0/1 values.
        threshold: binarization threshold on the [0, 1] scale.
        device: device of the returned tensors (default: torch's default device).
        dtype: floating dtype of the images.
        return_labels: if true, also return the digit labels as a LongTensor of shape (1797,).

    Returns:
        The images, or ``(images, labels)`` when ``return_labels`` is true.
    """
    try:
        from sklearn import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            'load_digits needs scikit-learn: pip install "pgmdl[data]" (or scikit-learn)'
        ) from e
    bunch = datasets.load_digits()
    images = torch.as_tensor(bunch.data, dtype=torch.float64) / 16.0
    if binarize:
        images = (images > threshold).to(torch.float64)
    images = images.to(device=device, dtype=dtype)
    if return_labels:
        labels = torch.as_tensor(bunch.target, dtype=torch.long, device=device)
        return images, labels
    return images
