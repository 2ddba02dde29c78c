"""DeepLabv3+: backbone strides and widths, ASPP, the decoder (any input size and training with a batch of one: the
registry-wide tests of test_models.py)."""

import torch
import torch.nn.functional as F
from torch import nn

from labcode.deeplab import ASPP, BasicBlock, DeepLabV3Plus, ResNetBackbone
from labcode.models import count_parameters


def test_backbone_output_stride_16_and_widths():
    backbone = ResNetBackbone(3, base_chan=8)
    low, high = backbone(torch.randn(2, 3, 64, 96))
    assert low.shape == (2, 8, 16, 24)  # stride 4
    assert high.shape == (2, 64, 4, 6)  # stride 16, 8 * base_chan channels
    last_stage_convs = [m for m in backbone.stages[3].modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert last_stage_convs and all(c.dilation == (2, 2) and c.stride == (1, 1) for c in last_stage_convs)


def test_backbone_resnet18_parameter_count():
    # ResNet-18 without its fully connected layer has 11,689,512 - (512 * 1000 + 1000) = 11,176,512 parameters.
    assert count_parameters(ResNetBackbone(3, base_chan=64, depths=(2, 2, 2, 2))) == 11_176_512


def test_basic_block_residual_and_shortcut():
    block = BasicBlock(4, 8, stride=2).eval()
    x = torch.randn(1, 4, 9, 7)
    out = block(x)
    assert out.shape == (1, 8, 5, 4)
    assert (out >= 0).all()  # ends with a ReLU
    torch.testing.assert_close(out, F.relu(block.conv2(block.conv1(x)) + block.shortcut(x)))
    assert isinstance(BasicBlock(8, 8).shortcut, nn.Identity)


def test_aspp_branches_and_rates():
    aspp = ASPP(16, 8, atrous_rates=(6, 12, 18))
    dilations = [branch[0].dilation for branch in aspp.branches]
    assert dilations == [(1, 1), (6, 6), (12, 12), (18, 18)]
    assert aspp.branches[0][0].kernel_size == (1, 1)
    assert aspp.project[0].in_channels == 5 * 8  # 4 branches + image pooling
    for size in [(5, 7), (11, 3)]:
        assert aspp(torch.randn(2, 16, *size)).shape == (2, 8, *size)


def test_aspp_image_pooling_is_a_constant_map():
    aspp = ASPP(4, 3).eval()
    x = torch.randn(1, 4, 6, 5)
    pooled = aspp.image_pool(x)
    assert pooled.shape == (1, 3, 1, 1)
    expected = F.relu(F.conv2d(x.mean(dim=(2, 3), keepdim=True), aspp.image_pool[1].weight, aspp.image_pool[1].bias))
    torch.testing.assert_close(pooled, expected)


def test_default_decoder_uses_48_low_level_channels():
    model = DeepLabV3Plus(14)
    assert model.reduce_low_level[0].out_channels == 48
    assert model.aspp.project[0].out_channels == 256
    assert model.classifier.out_channels == 14
