"""Losses against formulas written independently here, on small hand-made tensors."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labcode.errors import LabError, UnknownNameError
from labcode.losses import (
    LOSSES,
    build_loss,
    cross_entropy,
    dice_loss,
    focal_loss,
    lovasz_softmax,
    mcc_loss,
    tversky_loss,
)

K = 4
ALL_LOSSES = [cross_entropy, focal_loss, dice_loss, tversky_loss, lovasz_softmax, mcc_loss]


@pytest.fixture
def batch():
    torch.manual_seed(0)
    logits = torch.randn(2, K, 5, 6, dtype=torch.float64) * 2
    target = torch.randint(0, K, (2, 5, 6))
    return logits, target


def hard_logits(labels: torch.Tensor, num_classes: int = K, scale: float = 1e4) -> torch.Tensor:
    """Logits whose softmax is exactly the one-hot of ``labels``."""
    return F.one_hot(labels, num_classes).movedim(-1, 1).double() * scale


# --- cross-entropy and focal ----------------------------------------------------------------------------------------


def test_cross_entropy_matches_torch(batch):
    logits, target = batch
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(cross_entropy(logits, target), F.cross_entropy(logits, target))
    torch.testing.assert_close(cross_entropy(logits, target, weight), F.cross_entropy(logits, target, weight=weight))
    masked = target.clone()
    masked[0, :2] = 255
    torch.testing.assert_close(
        cross_entropy(logits, masked, weight, ignore_index=255),
        F.cross_entropy(logits, masked, weight=weight, ignore_index=255),
    )


def test_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2): two pixels, two classes
    target = torch.tensor([[[0, 1]]])
    weight = torch.tensor([1.0, 3.0])
    nll0 = -np.log(np.exp(2) / (np.exp(2) + 1))
    nll1 = -np.log(np.e / (np.e + 1))
    expected = (1 * nll0 + 3 * nll1) / (1 + 3)
    assert cross_entropy(logits, target, weight).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_integer_target_dtypes(batch, dtype):
    logits, target = batch
    for loss in ALL_LOSSES:
        torch.testing.assert_close(loss(logits, target.to(dtype)), loss(logits, target), msg=loss.__name__)


def focal_by_formula(logits, target, gamma, alpha=None, valid=None):
    p = logits.softmax(1).movedim(1, -1).reshape(-1, logits.shape[1]).numpy()
    y = target.reshape(-1).numpy()
    keep = np.ones_like(y, dtype=bool) if valid is None else valid.reshape(-1).numpy()
    terms = []
    for i in range(len(y)):
        if keep[i]:
            pt = p[i, y[i]]
            a = 1.0 if alpha is None else alpha[y[i]]
            terms.append(-a * (1 - pt) ** gamma * np.log(pt))
    return float(np.mean(terms))


def test_focal_gamma_zero_is_cross_entropy(batch):
    logits, target = batch
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    assert torch.equal(focal_loss(logits, target, gamma=0.0), cross_entropy(logits, target))
    assert torch.equal(focal_loss(logits, target, gamma=0.0, weight=weight), cross_entropy(logits, target, weight))


def test_focal_gamma_two_and_alpha_against_formula(batch):
    logits, target = batch
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(focal_by_formula(logits, target, 2.0))
    alpha = [0.25, 0.5, 0.75, 1.0]
    got = focal_loss(logits, target, gamma=2.0, alpha=torch.tensor(alpha)).item()
    assert got == pytest.approx(focal_by_formula(logits, target, 2.0, alpha))
    masked = target.clone()
    masked[1] = 9
    got = focal_loss(logits, masked, gamma=1.5, ignore_index=9).item()
    assert got == pytest.approx(focal_by_formula(logits, target, 1.5, valid=masked != 9))
    assert focal_loss(logits, target, alpha=0.5).item() == pytest.approx(0.5 * focal_loss(logits, target).item())


def test_focal_is_smaller_than_cross_entropy_and_focuses_on_hard_pixels():
    target = torch.tensor([[[0, 0]]])
    logits = torch.tensor([[[[4.0, -1.0]], [[0.0, 0.0]]]])  # pixel 0 is easy, pixel 1 hard
    per_pixel_ce = F.cross_entropy(logits, target, reduction="none")[0, 0]
    ratio_easy_hard_ce = (per_pixel_ce[0] / per_pixel_ce[1]).item()
    easy = focal_loss(logits[..., :1], target[..., :1])
    hard = focal_loss(logits[..., 1:], target[..., 1:])
    assert (easy / hard).item() < ratio_easy_hard_ce
    assert focal_loss(logits, target) < cross_entropy(logits, target)


# --- Dice and Tversky -----------------------------------------------------------------------------------------------


def tversky_by_formula(logits, target, alpha, beta, smooth, weight=None, valid=None):
    p = logits.softmax(1).numpy()
    y = target.numpy()
    keep = np.ones(y.shape, dtype=bool) if valid is None else valid.numpy()
    losses = []
    for k in range(logits.shape[1]):
        pk, gk = p[:, k][keep], (y == k)[keep].astype(float)
        tp, fp, fn = (pk * gk).sum(), (pk * (1 - gk)).sum(), ((1 - pk) * gk).sum()
        losses.append(1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth))
    w = np.ones(len(losses)) if weight is None else np.asarray(weight, dtype=float)
    return float((w * np.array(losses)).sum() / w.sum())


def test_dice_and_tversky_against_formula(batch):
    logits, target = batch
    weight = [1.0, 0.0, 2.0, 1.0]
    assert dice_loss(logits, target).item() == pytest.approx(tversky_by_formula(logits, target, 0.5, 0.5, 1.0))
    assert dice_loss(logits, target, weight=weight, smooth=0.1).item() == pytest.approx(
        tversky_by_formula(logits, target, 0.5, 0.5, 0.1, weight)
    )
    got = tversky_loss(logits, target, alpha=0.3, beta=0.7).item()
    assert got == pytest.approx(tversky_by_formula(logits, target, 0.3, 0.7, 1.0))
    torch.testing.assert_close(tversky_loss(logits, target, 0.5, 0.5), dice_loss(logits, target))


def test_dice_is_twice_tp_over_sum_of_areas(batch):
    logits, target = batch
    p, g = logits.softmax(1), F.one_hot(target, K).movedim(-1, 1).double()
    dice = (2 * (p * g).sum((0, 2, 3))) / (p.sum((0, 2, 3)) + g.sum((0, 2, 3)))
    torch.testing.assert_close(dice_loss(logits, target, smooth=0.0), 1 - dice.mean())


def test_dice_tversky_perfect_and_worst_predictions():
    target = torch.tensor([[[0, 1, 2, 3], [3, 2, 1, 0]]])
    perfect = hard_logits(target)
    worst = hard_logits((target + 1) % K)
    for loss in (dice_loss, lambda lg, t, **kw: tversky_loss(lg, t, 0.2, 0.8, **kw)):
        assert loss(perfect, target).item() == 0.0
        assert loss(worst, target, smooth=0.0).item() == 1.0
        # every class: TP = 0, FP = FN = 2 and alpha + beta = 1, so 1 - smooth / (2 + smooth)
        assert loss(worst, target).item() == pytest.approx(1 - 1 / 3)


def test_tversky_beta_penalises_missed_pixels():
    target = torch.tensor([[[1, 1, 1, 1, 0, 0, 0, 0]]])
    misses = hard_logits(torch.tensor([[[1, 1, 0, 0, 0, 0, 0, 0]]]), 2)  # class 1: two pixels missed
    alarms = hard_logits(torch.tensor([[[1, 1, 1, 1, 1, 1, 0, 0]]]), 2)  # class 1: two false alarms
    w = [0.0, 1.0]  # look at class 1 only
    assert tversky_loss(misses, target, 0.3, 0.7, weight=w) > tversky_loss(misses, target, 0.7, 0.3, weight=w)
    assert tversky_loss(alarms, target, 0.3, 0.7, weight=w) < tversky_loss(alarms, target, 0.7, 0.3, weight=w)
    # class 1 of `misses`: TP = 2, FP = 0, FN = 2
    assert tversky_loss(misses, target, 0.3, 0.7, weight=w).item() == pytest.approx(1 - 3 / (2 + 0.7 * 2 + 1))


# --- Lovász-softmax -------------------------------------------------------------------------------------------------


def jaccard_loss_of_set(mistakes: set, truth: np.ndarray) -> float:
    positives = set(np.flatnonzero(truth))
    union = positives | mistakes
    return len(mistakes) / len(union) if union else 0.0


def lovasz_extension(errors: np.ndarray, truth: np.ndarray) -> float:
    """Lovász extension of the set function ``jaccard_loss_of_set`` at ``errors``, straight from its definition."""
    order = np.argsort(-errors, kind="stable")
    value, previous, chosen = 0.0, 0.0, set()
    for i in order:
        chosen.add(int(i))
        current = jaccard_loss_of_set(chosen, truth)
        value += errors[i] * (current - previous)
        previous = current
    return value


def test_lovasz_against_the_extension_definition():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 3, 4, dtype=torch.float64)
    target = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1], [0, 0, 0, 2]]])
    p = logits.softmax(1)[0].reshape(3, -1).numpy()
    y = target.reshape(-1).numpy()
    per_class = [lovasz_extension(np.abs((y == k) - p[k]), (y == k).astype(int)) for k in range(3)]
    assert lovasz_softmax(logits, target).item() == pytest.approx(np.mean(per_class))
    weight = [2.0, 1.0, 1.0]
    expected = np.dot(weight, per_class) / sum(weight)
    assert lovasz_softmax(logits, target, weight=weight).item() == pytest.approx(expected)


def test_lovasz_on_hard_predictions_is_one_minus_iou_of_present_classes():
    target = torch.tensor([[[0, 0, 1, 1, 1, 2]], [[2, 2, 0, 1, 1, 1]]])  # class 3 absent
    pred = torch.tensor([[[0, 1, 1, 1, 3, 2]], [[2, 0, 0, 1, 1, 3]]])
    ious = []
    for k in range(3):
        inter = ((pred == k) & (target == k)).sum().item()
        union = ((pred == k) | (target == k)).sum().item()
        ious.append(inter / union)
    assert lovasz_softmax(hard_logits(pred), target).item() == pytest.approx(1 - np.mean(ious))
    assert lovasz_softmax(hard_logits(target), target).item() == 0.0


# --- MCC ------------------------------------------------------------------------------------------------------------


def test_mcc_on_hard_predictions_against_counts():
    target = torch.tensor([[[0, 0, 1, 1, 1, 2]], [[2, 2, 0, 1, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1, 3, 2]], [[2, 0, 0, 1, 1, 3]]])
    mccs = []
    for k in range(3):  # classes present in the target
        t, p = (target == k).numpy(), (pred == k).numpy()
        tp, tn = (t & p).sum(), (~t & ~p).sum()
        fp, fn = (~t & p).sum(), (t & ~p).sum()
        mccs.append((tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))))
    assert mcc_loss(hard_logits(pred), target).item() == pytest.approx(1 - np.mean(mccs))
    assert mcc_loss(hard_logits(target), target).item() == pytest.approx(0.0, abs=1e-12)
    assert mcc_loss(hard_logits((target + 1) % K), target).item() > 1.0  # anti-correlated: MCC < 0


def test_mcc_soft_against_formula(batch):
    logits, target = batch
    p, g = logits.softmax(1).numpy(), F.one_hot(target, K).movedim(-1, 1).numpy()
    losses = []
    for k in range(K):
        pk, gk = p[:, k], g[:, k]
        tp, fp = (pk * gk).sum(), (pk * (1 - gk)).sum()
        fn, tn = ((1 - pk) * gk).sum(), ((1 - pk) * (1 - gk)).sum()
        losses.append(1 - (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert mcc_loss(logits, target).item() == pytest.approx(np.mean(losses))


# --- properties shared by all losses --------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_ignored_pixels_change_nothing(batch, loss):
    logits, target = batch
    target = target.to(torch.uint8)
    target[0, 1:3] = 255
    changed = logits.clone()
    changed[0, :, 1:3] = torch.randn_like(changed[0, :, 1:3]) * 10
    base = loss(logits, target, ignore_index=255)
    torch.testing.assert_close(loss(changed, target, ignore_index=255), base)
    keep = target != 255  # dropping the ignored pixels altogether gives the same value
    flat_logits = logits.movedim(1, -1)[keep].T.reshape(1, K, 1, -1)
    torch.testing.assert_close(loss(flat_logits, target[keep].reshape(1, 1, -1)), base)
    assert not torch.isclose(loss(logits, target.clamp(max=K - 1)), base)  # without ignore_index it differs


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_weights_are_used(batch, loss):
    logits, target = batch
    plain = loss(logits, target)
    torch.testing.assert_close(loss(logits, target, weight=torch.ones(K)), plain)
    torch.testing.assert_close(loss(logits, target, weight=np.full(K, 3.0)), plain)  # only ratios matter
    assert not torch.isclose(loss(logits, target, weight=[1.0, 5.0, 0.2, 1.0]), plain)
    with pytest.raises(ValueError, match="weight"):
        loss(logits, target, weight=torch.ones(K + 1))


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_finite_gradients_for_extreme_logits(loss):
    target = torch.tensor([[[0, 1, 2, 3], [3, 3, 0, 1]]])
    for labels in (target, (target + 1) % K):
        logits = (F.one_hot(labels, K).movedim(-1, 1).float() * 2e4 - 1e4).requires_grad_()
        value = loss(logits, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all(), loss.__name__


def test_focal_gradient_finite_for_gamma_below_one():
    logits = (F.one_hot(torch.tensor([[[0, 1]]]), 2).movedim(-1, 1).float() * 1e4).requires_grad_()
    focal_loss(logits, torch.tensor([[[0, 1]]]), gamma=0.5).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_all_pixels_ignored_gives_zero(batch, loss):
    logits, target = batch
    logits = logits.clone().requires_grad_()
    value = loss(logits, torch.full_like(target, -1), ignore_index=-1)
    value.backward()
    assert value.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_bad_shapes_and_dtypes(batch, loss):
    logits, target = batch
    with pytest.raises(ValueError, match="do not match"):
        loss(logits, target[:, :4])
    with pytest.raises(ValueError, match="integer"):
        loss(logits, target.float())


# --- modules and registry -------------------------------------------------------------------------------------------


def test_registry_modules_match_functions(batch):
    logits, target = batch
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    assert set(LOSSES) == {"ce", "focal", "dice", "tversky", "lovasz", "mcc"}
    cases = {
        "ce": ({}, cross_entropy),
        "focal": ({"gamma": 1.0}, lambda lg, t, **kw: focal_loss(lg, t, gamma=1.0, **kw)),
        "dice": ({"smooth": 0.5}, lambda lg, t, **kw: dice_loss(lg, t, smooth=0.5, **kw)),
        "tversky": ({"alpha": 0.2, "beta": 0.8}, lambda lg, t, **kw: tversky_loss(lg, t, 0.2, 0.8, **kw)),
        "lovasz": ({}, lovasz_softmax),
        "mcc": ({}, mcc_loss),
    }
    for name, (options, function) in cases.items():
        module = build_loss(name, weight=weight, ignore_index=3, **options)
        assert isinstance(module, torch.nn.Module)
        assert torch.equal(module.weight, weight.float())
        torch.testing.assert_close(module(logits, target), function(logits, target, weight=weight, ignore_index=3))


def test_registry_errors():
    with pytest.raises(UnknownNameError) as info:
        build_loss("hinge")
    assert isinstance(info.value, KeyError) and isinstance(info.value, LabError)
    assert str(info.value) == "unknown loss 'hinge'; valid names: ce, dice, focal, lovasz, mcc, tversky"
    with pytest.raises(UnknownNameError, match="loss 'ce' has no option 'gamma'"):
        build_loss("ce", gamma=2.0)


def test_combinations_of_ignore_and_weight_keep_ce_equal_to_torch():
    torch.manual_seed(3)
    for ignore_index, use_weight in itertools.product([None, 0, 2], [False, True]):
        logits, target = torch.randn(3, K, 4, 4), torch.randint(0, K, (3, 4, 4))
        weight = torch.rand(K) + 0.1 if use_weight else None
        torch_ignore = -100 if ignore_index is None else ignore_index
        expected = F.cross_entropy(logits, target, weight=weight, ignore_index=torch_ignore)
        torch.testing.assert_close(cross_entropy(logits, target, weight, ignore_index), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_modules_on_the_gpu_match_the_cpu(batch, name):  # CPU twin: test_registry_modules_match_functions
    logits, target = batch
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0])
    on_cpu = build_loss(name, weight=weight, ignore_index=3)
    on_gpu = build_loss(name, weight=weight, ignore_index=3).cuda()
    assert on_gpu.weight.device.type == "cuda"
    torch.testing.assert_close(on_gpu(logits.cuda(), target.cuda()).cpu(), on_cpu(logits, target))


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_half_precision_logits_are_computed_in_float32(batch, loss):
    logits, target = batch
    half = logits.to(torch.bfloat16)
    value = loss(half, target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(half.float(), target))
