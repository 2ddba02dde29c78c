# Your copy of the course library: labcode/transforms.py, used by the lab's notebooks.
# The exercises in this file are yours: replace each `raise NotImplementedError` marked EXERCISE
# with your code, as the notebook named there asks, and leave the rest as it is.
"""Image/mask transforms: the albumentations 2.x presets, the paired wrapper and the model's input normalisation.

``preprocess`` is the one normalisation shared by training (through ``A.Normalize`` with the same constants),
ONNX export, inference and serving.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

#: Per-channel mean and standard deviation (ImageNet statistics) applied to images scaled to [0, 1].
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _finish() -> list:
    return [A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0), ToTensorV2()]


def eval_transforms(img_size: int | None) -> A.Compose:
    """Deterministic preset: resize to ``img_size`` x ``img_size`` (kept as is when ``None``), normalise, to tensor.

    The mask is resized with nearest-neighbour interpolation so that it keeps valid class indices.
    """
    resize = [] if img_size is None else [A.Resize(img_size, img_size, mask_interpolation=0)]
    return A.Compose(resize + _finish())


def train_transforms(img_size: int) -> A.Compose:
    """Augmentation preset for training, ending with the same normalisation as :func:`eval_transforms`.

    Geometric transforms move image and mask together; photometric ones touch the image only; dropout blacks out
    holes in the image and marks them ``<UNK>`` (0) in the mask, exactly like the scanner's gaps.
    """
    # EXERCISE "Augmentation pipeline" (see notebook 02_data_pipeline.ipynb): replace the next line with your code.
    raise NotImplementedError("Augmentation pipeline: write it (see notebook 02_data_pipeline.ipynb). This exercise of the library is not written yet, and whatever uses it, in any notebook, waits for it: write it in notebook 02_data_pipeline first, then run this again.")
    return A.Compose(augment + _finish())


class PairedTransform:
    """Adapt an albumentations pipeline to the ``transforms(image, mask) -> (image, mask)`` interface.

    Args:
        pipeline: an ``A.Compose`` (or any callable taking ``image=`` and ``mask=`` keywords).

    Shape:
        image ``uint8`` (H, W, 3), mask (H, W) in; ``float32`` (3, S, S) and ``int64`` (S, S) tensors out.
    """

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.pipeline(image=image, mask=mask)
        image_out, mask_out = out["image"], out["mask"]
        mask_out = torch.as_tensor(mask_out).long() if not isinstance(mask_out, torch.Tensor) else mask_out.long()
        return image_out, mask_out

    def __repr__(self) -> str:
        return f"PairedTransform({self.pipeline!r})"


def preprocess(image: np.ndarray) -> np.ndarray:
    """Normalise an RGB image for the network.

    Shape:
        ``uint8`` (H, W, 3) in, ``float32`` (3, H, W) out.
    """
    x = image.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(MEAN, dtype=np.float32)
    x /= np.asarray(STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def denormalize(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Invert :func:`preprocess` for display.

    Shape:
        (3, H, W) float in, ``uint8`` (H, W, 3) out.
    """
    x = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    x = x.transpose(1, 2, 0) * np.asarray(STD, dtype=np.float32) + np.asarray(MEAN, dtype=np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
