# Your copy of the course library: labcode/losses.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Segmentation losses on logits, as pure functions plus thin ``nn.Module`` wrappers and a registry.

Every loss takes ``logits`` of shape ``(B, K, H, W)`` (any number of trailing dimensions works) and integer
``target`` labels of shape ``(B, H, W)`` in any integer dtype (uint8, int32, int64), and returns a scalar.
Pixels whose label equals ``ignore_index`` (when it is not ``None``) take no part in the loss nor in the averages.
When a batch has no valid pixel at all, every loss returns 0 (still attached to the graph).

How the optional class weights ``weight`` (shape ``(K,)``, e.g. from :func:`labcode.stats.class_weights`) act:

- pixel losses (``cross_entropy``, ``focal_loss``): a weighted average over the valid pixels,
  ``sum_i w[y_i] * l_i / sum_i w[y_i]``, the convention of :func:`torch.nn.functional.cross_entropy`;
- class losses (``dice_loss``, ``tversky_loss``, ``lovasz_softmax``, ``mcc_loss``): a weighted average of the
  per-class losses, ``sum_k w[k] * L_k / sum_k w[k]`` over the classes the loss averages over (a class of weight 0
  is left out).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labcode.errors import UnknownNameError, unknown_name

WeightLike = torch.Tensor | np.ndarray | Sequence[float] | None


def _prepare(
    logits: torch.Tensor, target: torch.Tensor, weight: WeightLike
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate shapes and dtypes; return the logits in at least float32 and ``weight`` as a tensor (or None).

    Half-precision logits (under autocast) are upcast: sums over millions of pixels overflow float16.
    """
    if logits.dim() < 2 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"logits (B, K, H, W) and target (B, H, W) do not match: {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class labels, got dtype {target.dtype}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if weight is None:
        return logits, None
    weight = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
    if weight.shape != (logits.shape[1],):
        raise ValueError(f"weight must have shape ({logits.shape[1]},) (one per class), got {tuple(weight.shape)}")
    return logits, weight


def _labels(target: torch.Tensor, ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels, valid)``: int64 labels with ignored pixels set to class 0, and the boolean mask of valid pixels."""
    target = target.long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    return target.masked_fill(~valid, 0), valid


def _pixel_mean(
    losses: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """Weighted average of per-pixel losses over the valid pixels; 0 when the weights sum to 0."""
    w = valid.to(losses.dtype)
    if weight is not None:
        w = w * weight[labels]
    total = w.sum()
    return (w * losses).sum() / total.clamp_min(torch.finfo(losses.dtype).tiny) * (total > 0)


def _class_mean(losses: torch.Tensor, include: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Weighted average of per-class losses (K,) over the classes in ``include``; 0 when none is left."""
    w = include.to(losses.dtype)
    if weight is not None:
        w = w * weight
    total = w.sum()
    return (w * losses).sum() / total.clamp_min(torch.finfo(losses.dtype).tiny) * (total > 0)


def _soft_counts(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft per-class TP, FP, FN over the valid pixels, plus the hard per-class support, all of shape (K,)."""
    labels, valid = _labels(target, ignore_index)
    probs = logits.softmax(dim=1)  # (B, K, H, W)
    onehot = torch.zeros_like(probs).scatter_(1, labels.unsqueeze(1), 1.0)  # (B, K, H, W)
    mask = valid.unsqueeze(1).to(probs.dtype)  # (B, 1, H, W)
    dims = [0] + list(range(2, probs.dim()))
    tp = (probs * onehot * mask).sum(dims)
    predicted = (probs * mask).sum(dims)
    support = (onehot * mask).sum(dims)
    return tp, predicted - tp, support - tp, support


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: WeightLike = None, ignore_index: int | None = None
) -> torch.Tensor:
    """(Weighted) cross-entropy averaged over the valid pixels: ``-sum_i w[y_i] log p_i[y_i] / sum_i w[y_i]``.

    Args:
        logits: unnormalised class scores.
        target: class labels, any integer dtype.
        weight: optional class weights; without it every pixel weighs 1 (plain cross-entropy).
        ignore_index: label of the pixels to leave out, or None.

    Shape:
        - logits: ``(B, K, H, W)``
        - target: ``(B, H, W)``
        - output: scalar
    """
    logits, weight = _prepare(logits, target, weight)
    labels, valid = _labels(target, ignore_index)
    ce = F.cross_entropy(logits, labels, reduction="none")  # (B, H, W)
    return _pixel_mean(ce, labels, valid, weight)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: WeightLike | float = None,
    weight: WeightLike = None,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Focal loss of Lin et al. (2017): ``-alpha[y] (1 - p_y)**gamma log p_y`` per pixel.

    ``log p_y`` comes from a per-pixel cross-entropy (stable log-softmax) and ``1 - p_y`` from ``-expm1(-ce)``.
    With ``gamma = 0`` and no ``alpha`` the loss is exactly :func:`cross_entropy` (with the same ``weight``).

    Args:
        logits: unnormalised class scores.
        target: class labels, any integer dtype.
        gamma: focusing parameter (>= 0); larger values lower the share of well-classified pixels.
        alpha: optional per-class factor (a ``(K,)`` tensor or one float), multiplying each pixel's term without
            changing the normaliser (Lin et al.'s convention: the mean over valid pixels).
        weight: optional class weights, a weighted average as in :func:`cross_entropy`.
        ignore_index: label of the pixels to leave out, or None.

    Shape:
        - logits: ``(B, K, H, W)``
        - target: ``(B, H, W)``
        - output: scalar
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    logits, weight = _prepare(logits, target, weight)
    labels, valid = _labels(target, ignore_index)
    loss = F.cross_entropy(logits, labels, reduction="none")  # (B, H, W), -log p_y
    if gamma != 0:
        one_minus_pt = -torch.expm1(-loss)  # 1 - p_y, accurate when p_y is close to 1
        # The floor keeps the gradient of x**gamma finite at x = 0 when gamma < 1.
        loss = one_minus_pt.clamp_min(1e-12) ** gamma * loss
    if alpha is not None:
        alpha_t = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
        loss = loss * (alpha_t[labels] if alpha_t.dim() == 1 else alpha_t)
    return _pixel_mean(loss, labels, valid, weight)


def tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    weight: WeightLike = None,
    ignore_index: int | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft multi-class Tversky loss: the mean over classes of ``1 - TI_k``.

    With the softmax probabilities ``p`` and one-hot targets ``g`` summed over the valid pixels of the whole batch,
    ``TP_k = sum p g``, ``FP_k = sum p (1 - g)``, ``FN_k = sum (1 - p) g`` and
    ``TI_k = (TP_k + smooth) / (TP_k + alpha FP_k + beta FN_k + smooth)``. ``alpha = beta = 0.5`` gives the Dice
    loss; a larger ``beta`` penalises missed pixels more than false alarms. All K classes are averaged: a class
    absent from both target and prediction has ``TI_k = 1`` (``smooth`` > 0 makes it so; with ``smooth = 0`` such a
    class is set to 1 explicitly).

    Args:
        logits: unnormalised class scores.
        target: class labels, any integer dtype.
        alpha: weight of the false positives.
        beta: weight of the false negatives.
        weight: optional class weights (weighted mean of the per-class losses).
        ignore_index: label of the pixels to leave out, or None.
        smooth: added to the numerator and the denominator (in pixels); keeps absent classes at ``TI = 1``.

    Shape:
        - logits: ``(B, K, H, W)``
        - target: ``(B, H, W)``
        - output: scalar
    """
    logits, weight = _prepare(logits, target, weight)
    tp, fp, fn, _ = _soft_counts(logits, target, ignore_index)  # each (K,)
    denominator = tp + alpha * fp + beta * fn + smooth
    index = torch.where(denominator > 0, (tp + smooth) / denominator.clamp_min(1e-12), torch.ones_like(tp))
    return _class_mean(1.0 - index, torch.ones_like(tp, dtype=torch.bool), weight)


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: WeightLike = None,
    ignore_index: int | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft multi-class Dice loss: the mean over classes of ``1 - D_k``.

    ``D_k = (TP_k + smooth) / (TP_k + (FP_k + FN_k) / 2 + smooth) = (2 TP_k + 2 smooth) / (sum p_k + sum g_k + 2
    smooth)``, a soft version of the per-class F1 of :mod:`labcode.metrics`. It is :func:`tversky_loss` with
    ``alpha = beta = 0.5``; see there for the counts, the absent classes and ``smooth``.

    Args:
        logits: unnormalised class scores.
        target: class labels, any integer dtype.
        weight: optional class weights (weighted mean of the per-class losses).
        ignore_index: label of the pixels to leave out, or None.
        smooth: added to the numerator and the denominator of ``TP / (TP + (FP + FN) / 2)``.

    Shape:
        - logits: ``(B, K, H, W)``
        - target: ``(B, H, W)``
        - output: scalar
    """
    return tversky_loss(logits, target, 0.5, 0.5, weight=weight, ignore_index=ignore_index, smooth=smooth)


def _lovasz_jaccard_gradient(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Increments of the Jaccard loss when the pixels, by decreasing error, are counted wrong one after the other.

    ``sorted_truth`` (K, N) is 1 where the pixel belongs to the class. After the first ``i`` pixels are counted
    wrong, the intersection is the class pixels not among them and the union is the class pixels plus the other
    pixels among them; the Jaccard loss is ``1 - intersection / union``.
    """
    total = sorted_truth.sum(dim=1, keepdim=True)  # (K, 1)
    intersection = total - sorted_truth.cumsum(dim=1)
    union = total + (1.0 - sorted_truth).cumsum(dim=1)  # >= 1, so no division by 0
    jaccard = 1.0 - intersection / union  # (K, N)
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def lovasz_softmax(
    logits: torch.Tensor, target: torch.Tensor, weight: WeightLike = None, ignore_index: int | None = None
) -> torch.Tensor:
    """Lovász-softmax loss (Berman, Rannen Triki and Blaschko, 2018), a convex surrogate of ``1 - IoU`` per class.

    For each class k, the pixel errors ``e_i = |g_i - p_i[k]|`` are sorted in decreasing order and the loss is
    ``sum_i e_(i) * (J(i) - J(i - 1))``, where ``J(i)`` is the Jaccard loss when the ``i`` largest errors are counted
    as mistakes: the Lovász extension of the Jaccard loss evaluated at the errors. On hard (0/1) predictions it equals
    ``1 - IoU_k``. Computed over all valid pixels of the batch together and averaged over the classes present in the
    target (the paper's default).

    Args:
        logits: unnormalised class scores.
        target: class labels, any integer dtype.
        weight: optional class weights (weighted mean over the present classes).
        ignore_index: label of the pixels to leave out, or None.

    Shape:
        - logits: ``(B, K, H, W)``
        - target: ``(B, H, W)``
        - output: scalar
    """
    logits, weight = _prepare(logits, target, weight)
    labels, valid = _labels(target, ignore_index)
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1).movedim(1, -1)[valid].T  # (K, N) over the valid pixels
    truth = F.one_hot(labels[valid], num_classes).T.to(probs.dtype)  # (K, N)
    errors, order = (truth - probs).abs().sort(dim=1, descending=True)
    per_class = (errors * _lovasz_jaccard_gradient(truth.gather(1, order))).sum(dim=1)  # (K,)
    return _class_mean(per_class, truth.sum(dim=1) > 0, weight)


def mcc_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: WeightLike = None,
    ignore_index: int | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Matthews-correlation-coefficient loss (Abhishek and Hamarneh, 2021), one-vs-rest over the classes.

    With soft counts over the valid pixels of the batch (``TP = sum p g``, ``FP = sum p (1 - g)``,
    ``FN = sum (1 - p) g``, ``TN = sum (1 - p)(1 - g)``, in pixels) the class MCC is
    ``(TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN))`` and the loss is the mean of ``1 - MCC_k`` over
    the classes present in the target. A class that covers every valid pixel has an undefined MCC, taken as 0.

    Args:
        logits: unnormalised class scores.
        target: class labels, any integer dtype.
        weight: optional class weights (weighted mean over the present classes).
        ignore_index: label of the pixels to leave out, or None.
        eps: floor of the product under the square root (in squared-squared pixels), for a finite gradient.

    Shape:
        - logits: ``(B, K, H, W)``
        - target: ``(B, H, W)``
        - output: scalar
    """
    logits, weight = _prepare(logits, target, weight)
    tp, fp, fn, support = _soft_counts(logits, target, ignore_index)  # each (K,)
    tn = support.sum() - tp - fp - fn
    numerator = tp * tn - fp * fn
    denominator = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)).clamp_min(eps).sqrt()
    return _class_mean(1.0 - numerator / denominator, support > 0, weight)


class _Loss(nn.Module):
    """Common wrapper: stores the class weights as a buffer (so ``.to(device)`` moves them) and the options."""

    def __init__(self, weight: WeightLike = None, ignore_index: int | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.ignore_index = ignore_index

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"


class CrossEntropyLoss(_Loss):
    """Module form of :func:`cross_entropy`."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, target, self.weight, self.ignore_index)


class FocalLoss(_Loss):
    """Module form of :func:`focal_loss`."""

    def __init__(self, gamma: float = 2.0, alpha: WeightLike | float = None, weight: WeightLike = None,
                 ignore_index: int | None = None) -> None:
        super().__init__(weight, ignore_index)
        self.gamma = gamma
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.alpha, self.weight, self.ignore_index)


class DiceLoss(_Loss):
    """Module form of :func:`dice_loss`."""

    def __init__(self, weight: WeightLike = None, ignore_index: int | None = None, smooth: float = 1.0) -> None:
        super().__init__(weight, ignore_index)
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(logits, target, self.weight, self.ignore_index, self.smooth)


class TverskyLoss(_Loss):
    """Module form of :func:`tversky_loss`."""

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, weight: WeightLike = None,
                 ignore_index: int | None = None, smooth: float = 1.0) -> None:
        super().__init__(weight, ignore_index)
        self.alpha, self.beta, self.smooth = alpha, beta, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tversky_loss(logits, target, self.alpha, self.beta, self.weight, self.ignore_index, self.smooth)


class LovaszSoftmaxLoss(_Loss):
    """Module form of :func:`lovasz_softmax`."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lovasz_softmax(logits, target, self.weight, self.ignore_index)


class MCCLoss(_Loss):
    """Module form of :func:`mcc_loss`."""

    def __init__(self, weight: WeightLike = None, ignore_index: int | None = None, eps: float = 1e-6) -> None:
        super().__init__(weight, ignore_index)
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mcc_loss(logits, target, self.weight, self.ignore_index, self.eps)


#: Loss modules by name; each is called as ``cls(**options)`` then ``loss(logits, target)``.
LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "tversky": TverskyLoss,
    "lovasz": LovaszSoftmaxLoss,
    "mcc": MCCLoss,
}


def build_loss(name: str, **options) -> nn.Module:
    """Build a registered loss module.

    Args:
        name: a key of ``LOSSES``: ``ce``, ``focal``, ``dice``, ``tversky``, ``lovasz``, ``mcc``.
        **options: keyword arguments of the loss: ``weight`` and ``ignore_index`` for all, ``gamma``/``alpha`` for
            ``focal``, ``alpha``/``beta``/``smooth`` for ``tversky``, ``smooth`` for ``dice``, ``eps`` for ``mcc``.

    Raises:
        UnknownNameError: unknown loss name, or an option the loss does not take (the message lists the valid ones).
    """
    if name not in LOSSES:
        raise unknown_name("loss", name, list(LOSSES))
    cls = LOSSES[name]
    valid = list(inspect.signature(cls).parameters)
    for option in options:
        if option not in valid:
            raise UnknownNameError(f"loss {name!r} has no option {option!r}; valid options: {', '.join(valid)}")
    return cls(**options)
