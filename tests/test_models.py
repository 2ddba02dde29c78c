"""Model registry, parameter counts, the summary table and ``python -m labcode models``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labcode.commands.models import main
from labcode.deeplab import DeepLabV3Plus
from labcode.errors import LabError, UnknownNameError
from labcode.models import MODELS, build_model, count_parameters, model_summary
from labcode.unet import UNet

ROOT = Path(__file__).resolve().parents[1]


def test_registry_builds_each_model_with_options():
    assert set(MODELS) == {"unet", "deeplabv3plus"}
    unet = build_model("unet", 7, num_blocks=2, base_chan=4)
    assert isinstance(unet, UNet) and len(unet.encoder.blocks) == 2 and unet.decoder.classifier.out_channels == 7
    deeplab = build_model("deeplabv3plus", 3, base_chan=4, aspp_chan=8)
    assert isinstance(deeplab, DeepLabV3Plus) and deeplab.classifier.out_channels == 3
    for model, num_classes in ((unet, 7), (deeplab, 3)):
        assert model(torch.randn(1, 3, 20, 28)).shape == (1, num_classes, 20, 28)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        build_model("segformer", 14)
    assert isinstance(info.value, KeyError) and isinstance(info.value, LabError)
    assert str(info.value) == "unknown model 'segformer'; valid names: deeplabv3plus, unet"


def test_unknown_model_option_is_named():
    with pytest.raises(UnknownNameError, match=r"model 'deeplabv3plus' has no option 'num_blocks'.*base_chan"):
        build_model("deeplabv3plus", 14, num_blocks=3)


def test_count_parameters_against_an_independent_sum():
    model = UNet(4, num_blocks=2, base_chan=4)
    independent = 0
    for module in model.modules():
        for tensor in module._parameters.values():
            independent += tensor.numel() if tensor is not None else 0
    assert count_parameters(model) == independent > 0
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    encoder_size = sum(p.numel() for p in model.encoder.parameters())
    assert count_parameters(model, trainable_only=True) == independent - encoder_size


def parse_rows(summary: str) -> list[list[str]]:
    return [line.split() for line in summary.splitlines() if re.match(r"^(encoder|decoder)\.", line)]


def test_model_summary_table_and_totals():
    model = UNet(6, num_blocks=2, base_chan=4).train()
    summary = model_summary(model, (2, 3, 24, 40))
    rows = parse_rows(summary)
    names = [row[0] for row in rows]
    leaves = [n for n, m in model.named_modules() if not list(m.children())]
    assert sorted(names) == sorted(leaves)  # every leaf once (each is called once)
    assert names[0] == "encoder.blocks.0.block1.0" and names[-1] == "decoder.classifier"
    classifier = rows[-1]
    assert classifier[1] == "Conv2d" and "".join(classifier[2:6]) == "(2,6,24,40)" and classifier[-1] == "30"
    assert sum(int(row[-1].replace(",", "")) for row in rows) == count_parameters(model)
    assert f"total parameters: {count_parameters(model):,}" in summary
    assert "output shape: (2, 6, 24, 40)" in summary
    assert model.training  # mode restored
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_main_prints_a_summary(capsys):
    assert main(["--model", "deeplabv3plus", "--img-size", "33", "47", "--base-chan", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DeepLabV3Plus on input (1, 3, 33, 47)")
    assert "output shape: (1, 14, 33, 47)" in out
    with pytest.raises(SystemExit) as info:
        main(["--model", "deeplabv3plus", "--num-blocks", "3"])
    assert info.value.code == 2
    assert "no option 'num_blocks'" in capsys.readouterr().err


def test_python_dash_m_labcode_models():
    result = subprocess.run(
        [sys.executable, "-m", "labcode", "models", "--img-size", "32", "--num-blocks", "2", "--base-chan", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    expected_total = count_parameters(UNet(14, num_blocks=2, base_chan=4))
    assert f"total parameters: {expected_total:,}" in result.stdout
    assert "decoder.classifier" in result.stdout


def test_summary_runs_on_a_model_with_a_shared_module():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 2, 1), relu, nn.Conv2d(2, 2, 1), relu)
    summary = model_summary(model, (1, 3, 4, 4))
    assert summary.count("ReLU") == 2 and "total parameters: 14" in summary


#: Small options of each registered model, for quick tests on the CPU.
SMALL = {"unet": {"num_blocks": 3, "base_chan": 4},
         "deeplabv3plus": {"base_chan": 4, "aspp_chan": 8, "low_level_chan": 4}}


def test_every_registered_model_has_small_test_options():
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 3, 1080, 1080), (3, 3, 97, 65), (2, 3, 7, 5), (1, 3, 1, 1)])
def test_every_model_gives_one_score_per_class_and_pixel_for_any_input_size(name, shape):
    model = build_model(name, 5, **SMALL[name]).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], 5, *shape[2:])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_with_a_batch_of_one(name):  # in training mode, BatchNorm and image pooling must hold
    torch.manual_seed(0)
    model = build_model(name, 5, **SMALL[name]).train()
    x, target = torch.randn(1, 3, 45, 37), torch.randint(0, 5, (1, 45, 37))
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    assert torch.isfinite(loss)
    for parameter_name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), parameter_name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_on_the_gpu_any_size(name):  # CPU twins: the two registry-wide tests above
    model = build_model(name, 5, base_chan=4).cuda()
    out = model(torch.randn(2, 3, 97, 65, device="cuda"))
    assert out.shape == (2, 5, 97, 65) and out.device.type == "cuda"
    out.float().mean().backward()
    assert "output shape: (1, 5, 33, 47)" in model_summary(model, (1, 3, 33, 47))
