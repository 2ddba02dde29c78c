"""UNet: the block/encoder/decoder contract of the lab, padding, injectable blocks (any input size and training:
the registry-wide tests of test_models.py; the exercise regions: test_release_exercises.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labcode.models import count_parameters
from labcode.unet import UNet, UNetConvBlock, UNetDecoder, UNetEncoder, UNetUpConvBlock


def conv_relu_bn_layers(block: nn.Module) -> list[type]:
    return [type(m) for m in block]


def test_conv_block_layers_and_outputs():
    block = UNetConvBlock(3, 16)
    for sub in (block.block1, block.block2):
        assert conv_relu_bn_layers(sub) == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]
        assert sub[0].kernel_size == (3, 3) and sub[0].out_channels == 16 and sub[2].num_features == 16
    assert block.block1[0].in_channels == 3 and block.block2[0].in_channels == 16

    x = torch.randn(2, 3, 32, 48)
    assert block.block1(x).shape == (2, 16, 32, 48)
    assert block.block2(block.block1(x)).shape == (2, 16, 32, 48)
    assert block.block3(x).shape == (2, 3, 16, 24)  # the 2×2 max-pooling halves the size

    block.eval()
    outputs, features = block(x)
    assert outputs.shape == (2, 16, 16, 24) and features.shape == (2, 16, 32, 48)
    torch.testing.assert_close(features, block.block2(block.block1(x)))
    torch.testing.assert_close(outputs, F.max_pool2d(features, 2))


def test_conv_block_parameter_count_by_hand():
    cin, cout = 3, 16
    conv1 = cin * cout * 9 + cout  # weights + biases
    conv2 = cout * cout * 9 + cout
    batchnorms = 2 * (2 * cout)  # gamma and beta of each BatchNorm
    block = UNetConvBlock(cin, cout)
    assert count_parameters(block) == conv1 + conv2 + batchnorms == 2832


def test_encoder_shapes_four_blocks_base_64():
    encoder = UNetEncoder(3, num_blocks=4, base_chan=64)
    assert isinstance(encoder.blocks, nn.ModuleList) and len(encoder.blocks) == 4
    assert encoder.cout == 64 * 2**4
    outputs, features = encoder(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape) for f in features] == [(2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4)]
    assert outputs.shape == (2, 1024, 2, 2)
    assert conv_relu_bn_layers(encoder.bottleneck) == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]


def test_up_conv_block_shapes():
    block = UNetUpConvBlock(64, 32)
    assert isinstance(block.upconv[0], nn.Upsample)
    assert conv_relu_bn_layers(block.upconv)[1:] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]
    assert conv_relu_bn_layers(block.convblock) == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d] * 2
    assert block.upconv(torch.randn(2, 64, 8, 10)).shape == (2, 32, 16, 20)
    assert block.convblock[0].in_channels == 64  # 32 upsampled + 32 encoder channels
    out = block(torch.randn(2, 64, 8, 10), torch.randn(2, 32, 16, 20))
    assert out.shape == (2, 32, 16, 20)


@pytest.fixture(scope="module")
def default_unet():
    return UNet(14)


def test_decoder_with_documented_encoder_features(default_unet):
    decoder = default_unet.decoder
    assert isinstance(decoder, UNetDecoder)
    assert conv_relu_bn_layers(decoder.first_block) == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]
    assert decoder.first_block[0].out_channels == 1024
    assert decoder.classifier.kernel_size == (1, 1) and decoder.classifier.in_channels == 64
    features = [torch.randn(1, 64 * 2**i, 32 // 2**i, 48 // 2**i) for i in range(4)]  # as the encoder returns them
    out = decoder(torch.randn(1, 1024, 2, 3), features)
    assert out.shape == (1, 14, 32, 48)
    with pytest.raises(ValueError):  # one feature map missing
        decoder(torch.randn(1, 1024, 2, 3), features[1:])


def test_unet_default_configuration(default_unet):
    model = default_unet
    assert model.encoder.cout == 1024 and len(model.decoder.up_blocks) == 4
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 14, 32, 32)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_unet_pads_around_the_image_and_crops_back():
    model = UNet(4, num_blocks=3, base_chan=4).eval()
    x = torch.randn(2, 3, 29, 21)  # padded to 32 × 24: 1 row/col before, 2 after
    with torch.no_grad():
        out = model(x)
        reference = model(F.pad(x, (1, 2, 1, 2)))[:, :, 1:30, 1:22]
    torch.testing.assert_close(out, reference)


def test_injected_blocks_are_used():
    calls = {"down": 0, "up": 0}

    class MyConvBlock(UNetConvBlock):
        def forward(self, x):
            calls["down"] += 1
            return super().forward(x)

    class MyUpConvBlock(UNetUpConvBlock):
        def forward(self, inputs, encoder_features):
            calls["up"] += 1
            return super().forward(inputs, encoder_features)

    model = UNet(3, num_blocks=3, base_chan=4, conv_block=MyConvBlock, upconv_block=MyUpConvBlock)
    assert all(isinstance(b, MyConvBlock) for b in model.encoder.blocks)
    assert all(isinstance(b, MyUpConvBlock) for b in model.decoder.up_blocks)
    model(torch.randn(1, 3, 16, 16))
    assert calls == {"down": 3, "up": 3}
