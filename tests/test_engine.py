"""One epoch of training and evaluation: learning, early stops, non-finite losses, metrics, mixed precision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labcode.engine import NonFiniteLossError, amp_setup, cpu_has_bf16_matmul, evaluate, train_one_epoch
from labcode.errors import LabError
from labcode.metrics import nan_to_none
from labcode.models import build_model
from labcode.transforms import MEAN, STD

K = 14



def block_batches(n_batches: int = 2, batch: int = 2, size: int = 16, seed: int = 0) -> list[tuple]:
    """Images made of 4x4-pixel blocks whose colour says their class (1..4): a learnable toy problem."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[0, 0, 0], [1.5, -1, -1], [-1, 1.5, -1], [-1, -1, 1.5], [1, 1, 1]], dtype=torch.float32)
    batches = []
    for _ in range(n_batches):
        classes = torch.randint(1, 5, (batch, size // 4, size // 4), generator=g)
        mask = classes.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (B, S, S)
        image = colours[mask].permute(0, 3, 1, 2) + 0.1 * torch.randn(batch, 3, size, size, generator=g)
        batches.append((image, mask))
    return batches


class ListLoader(list):
    """A list of batches standing in for a DataLoader (len() and iteration are all the loops use)."""


def tiny_unet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", K, num_blocks=2, base_chan=4)


def test_training_on_fixed_batches_lowers_the_loss_and_counts_steps() -> None:
    model = tiny_unet()
    loader = ListLoader(block_batches())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    criterion = nn.CrossEntropyLoss()
    with torch.no_grad():
        model.eval()
        before = np.mean([criterion(model(x), y).item() for x, y in loader])
    results = [train_one_epoch(model, criterion, optimizer, loader, torch.device("cpu"), scheduler=scheduler,
                               progress=False, epoch=e) for e in range(25)]
    with torch.no_grad():
        model.eval()
        after = np.mean([criterion(model(x), y).item() for x, y in loader])
    assert after < 0.5 * before
    assert results[-1]["loss"] < 0.6 * results[0]["loss"]
    assert all(r["batches"] == 2 and not r["interrupted"] for r in results)
    assert int(optimizer.state_dict()["state"][0]["step"]) == 50 and scheduler.last_epoch == 50
    # the training metrics come from the predictions of the epoch: the toy problem is nearly solved by now
    assert results[-1]["pixel_accuracy"] > 0.8 and len(results[-1]["f1_per_class"]) == K


def test_max_batches_and_should_stop_end_the_epoch_early() -> None:
    model = tiny_unet()
    loader = ListLoader(block_batches(n_batches=5))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    result = train_one_epoch(model, nn.CrossEntropyLoss(), optimizer, loader, torch.device("cpu"), max_batches=3,
                             progress=False)
    assert result["batches"] == 3 and not result["interrupted"]
    polls = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) > 2  # stop before the third batch

    result = train_one_epoch(model, nn.CrossEntropyLoss(), optimizer, loader, torch.device("cpu"),
                             should_stop=should_stop, progress=False)
    assert result["batches"] == 2 and result["interrupted"]
    assert len(polls) == 3


class NaNAfter(nn.Module):
    """Cross-entropy that returns NaN from the ``bad_batch``-th call on."""

    def __init__(self, bad_batch: int) -> None:
        super().__init__()
        self.calls, self.bad_batch = 0, bad_batch

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, target)
        self.calls += 1
        return loss * float("nan") if self.calls > self.bad_batch else loss


def test_non_finite_loss_stops_with_the_epoch_and_batch() -> None:
    model = tiny_unet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteLossError, match=r"nan at epoch 3, batch 1") as info:
        train_one_epoch(model, NaNAfter(bad_batch=1), optimizer, ListLoader(block_batches(n_batches=3)),
                        torch.device("cpu"), epoch=3, progress=False)
    assert isinstance(info.value, LabError)
    # one good step was taken, the NaN batch did not update the weights
    assert int(optimizer.state_dict()["state"][0]["step"]) == 1
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.isfinite(p).all() for p in model.parameters())


class FixedPredictor(nn.Module):
    """Predicts class (channel-0 value rounded) with logits 10 for it and 0 elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = x[:, 0].round().long().clamp(0, K - 1)
        return 10.0 * F.one_hot(labels, K).permute(0, 3, 1, 2).float()


def test_evaluate_matches_an_independent_confusion_matrix() -> None:
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(3):
        target = torch.randint(0, 5, (2, 6, 7), generator=g)
        noisy = torch.where(torch.rand(target.shape, generator=g) < 0.3, torch.randint(0, 6, target.shape,
                                                                                        generator=g), target)
        image = torch.zeros(2, 3, 6, 7)
        image[:, 0] = noisy.float()
        batches.append((image, target))
    result = evaluate(FixedPredictor(), nn.CrossEntropyLoss(), ListLoader(batches), torch.device("cpu"),
                      progress=False, keep_examples=3)
    preds = np.concatenate([b[0][:, 0].round().long().numpy().ravel() for b in batches])
    targets = np.concatenate([b[1].numpy().ravel() for b in batches])
    cm = np.zeros((K, K), dtype=np.int64)
    np.add.at(cm, (targets, preds), 1)
    tp, fp, fn = np.diag(cm), cm.sum(0) - np.diag(cm), cm.sum(1) - np.diag(cm)
    present = tp + fp + fn > 0
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    iou = tp[present] / (tp[present] + fp[present] + fn[present])
    assert result["macro_f1"] == pytest.approx(f1.mean())
    assert result["mean_iou"] == pytest.approx(iou.mean())
    assert result["pixel_accuracy"] == pytest.approx((preds == targets).mean())
    np.testing.assert_allclose(np.array(result["f1_per_class"])[present], f1)
    assert np.isnan(np.array(result["f1_per_class"])[~present]).all()
    assert result["support"] == np.bincount(targets, minlength=K).tolist()
    assert torch.equal(result["confusion"], torch.from_numpy(cm))
    # mean loss over images, each batch weighted by its size
    expected_loss = np.mean([F.cross_entropy(FixedPredictor()(x), y).item() for x, y in batches])
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)
    examples = result["examples"]
    assert examples["images"].shape == (3, 6, 7, 3) and examples["images"].dtype == np.uint8
    assert examples["preds"].shape == (3, 6, 7) and examples["targets"].shape == (3, 6, 7)
    # the kept image is the de-normalised input: channel 0 of a zero input is MEAN[0] * 255
    assert examples["images"][0, 0, 0, 1] == round(255 * (0 * STD[1] + MEAN[1]))
    assert nan_to_none({"a": [1.0, float("nan")]}) == {"a": [1.0, None]}


def test_amp_setup_on_cpu_is_one_disabled_path() -> None:
    for kwargs in ({"enabled": False}, {"cpu_bf16": False}):
        autocast_ctx, scaler, name = amp_setup(torch.device("cpu"), **kwargs)
        assert name == "fp32" and not scaler.is_enabled()
        with autocast_ctx():
            y = torch.ones(2, 2) @ torch.ones(2, 2)
        assert y.dtype == torch.float32


@pytest.mark.parametrize("amx", [True, False, None])
def test_amp_setup_on_cpu_uses_bf16_only_where_the_cpu_has_matrix_units(monkeypatch, amx: bool | None) -> None:
    # the hardware probe answers as a CPU with AMX tiles, one without, and a PyTorch without the probe
    if amx is None:
        monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    else:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert cpu_has_bf16_matmul() is bool(amx)
    autocast_ctx, scaler, name = amp_setup(torch.device("cpu"))
    assert name == ("bf16" if amx else "fp32") and not scaler.is_enabled()
    with autocast_ctx():
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == (torch.bfloat16 if amx else torch.float32)
    assert amp_setup(torch.device("cpu"), enabled=False)[2] == "fp32"  # --no-amp wins over the hardware


def train_with_mixed_precision(device: torch.device, autocast_ctx, scaler) -> tuple[nn.Module, list[dict], dict]:
    """25 epochs of a tiny UNet (channels_last) under the given autocast and scaler, then one evaluation."""
    torch.manual_seed(0)
    model = tiny_unet().to(device).to(memory_format=torch.channels_last)
    loader = ListLoader(block_batches())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    results = [train_one_epoch(model, nn.CrossEntropyLoss(), optimizer, loader, device, scaler=scaler,
                               autocast_ctx=autocast_ctx, channels_last=True, progress=False) for _ in range(25)]
    valid = evaluate(model, nn.CrossEntropyLoss(), loader, device, autocast_ctx=autocast_ctx, progress=False)
    return model, results, valid


def test_training_with_bf16_autocast_on_cpu() -> None:
    """The CPU twin of the CUDA mixed-precision test: the same loop learns under bfloat16 autocast, no scaler."""
    autocast_ctx, scaler, name = amp_setup(torch.device("cpu"), cpu_bf16=True)
    assert name == "bf16" and not scaler.is_enabled()
    with autocast_ctx():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    model, results, valid = train_with_mixed_precision(torch.device("cpu"), autocast_ctx, scaler)
    assert results[-1]["loss"] < 0.6 * results[0]["loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps float32 weights
    assert math.isfinite(valid["loss"]) and valid["pixel_accuracy"] > 0.8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_with_mixed_precision_on_cuda() -> None:
    device = torch.device("cuda")
    autocast_ctx, scaler, name = amp_setup(device)
    assert name in ("bf16", "fp16") and scaler.is_enabled() == (name == "fp16")
    _, results, valid = train_with_mixed_precision(device, autocast_ctx, scaler)
    assert results[-1]["loss"] < 0.6 * results[0]["loss"]
    assert valid["pixel_accuracy"] > 0.8
