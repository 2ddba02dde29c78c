# Your copy of the course library: labcode/unet.py, used by the lab's notebooks.
# The exercises in this file are yours: replace each `raise NotImplementedError` marked EXERCISE
# with your code, as the notebook named there asks, and leave the rest as it is.
"""The UNet of Ronneberger et al. (2015) as the lab builds it: conv block → encoder → up block → decoder → UNet.

Every convolution is a 3×3 with padding 1, so only the max-poolings (÷2) and the upsamplings (×2) change the spatial
size. Each convolution is followed by a ReLU then a BatchNorm (that order is the lab's choice).

Channel flow for ``num_blocks=4``, ``base_chan=64`` and an input of size H×W (a multiple of 16)::

    encoder  3 → 64 → 128 → 256 → 512 (features kept at H, H/2, H/4, H/8), then bottleneck 512 → 1024 at H/16
    decoder  1024 → 1024, up blocks 1024 → 512 → 256 → 128 → 64 (back to H), then 1×1 conv 64 → num_classes

:class:`UNet` accepts any input size: it pads the image with zeros up to the next multiple of ``2**num_blocks`` and
crops the logits back to the input size. The padding amounts are computed from the input's shape inside
``forward``, so the model exports to ONNX with dynamic height and width.

Notebook ``03_unet`` asks students to write the layers and the forward passes of these blocks, one question at a
time, and then puts them together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UNetConvBlock(nn.Module):
    """One encoder stage: two Conv3×3-ReLU-BatchNorm then a 2×2 max-pooling.

    Attributes ``block1``, ``block2`` (``nn.Sequential`` of Conv2d, ReLU, BatchNorm2d, ``cout`` channels) and
    ``block3`` (``nn.MaxPool2d(2)``).

    Args:
        cin: number of input channels.
        cout: number of output channels of both convolutions.

    Shape:
        - Input: ``(B, cin, H, W)``
        - Output: ``(outputs, features)``: the pooled tensor ``(B, cout, H // 2, W // 2)`` that goes on along the
          encoder, and the tensor before pooling ``(B, cout, H, W)`` that the decoder receives.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        # EXERCISE "UNetConvBlock layers" (see notebook 03_unet.ipynb): replace the next line with your code.
        raise NotImplementedError("UNetConvBlock layers: write it (see notebook 03_unet.ipynb). This exercise of the library is not written yet, and whatever uses it, in any notebook, waits for it: write it in notebook 03_unet first, then run this again.")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # EXERCISE "UNetConvBlock forward" (see notebook 03_unet.ipynb): replace the next line with your code.
        raise NotImplementedError("UNetConvBlock forward: write it (see notebook 03_unet.ipynb). This exercise of the library is not written yet, and whatever uses it, in any notebook, waits for it: write it in notebook 03_unet first, then run this again.")
        return outputs, features


class UNetEncoder(nn.Module):
    """The contracting path: ``num_blocks`` conv blocks then a Conv3×3-ReLU-BatchNorm bottleneck.

    Block ``i`` has ``base_chan * 2**i`` channels; the bottleneck doubles the channels of the last block, so the
    encoder outputs ``cout = base_chan * 2**num_blocks`` channels.

    Args:
        cin: number of input channels (3 for RGB images).
        num_blocks: number of conv blocks, i.e. of halvings of the spatial size.
        base_chan: channels of the first block.
        conv_block: class of the blocks, called as ``conv_block(cin, cout)``; it must return ``(outputs, features)``.

    Shape:
        - Input: ``(B, cin, H, W)`` with H and W multiples of ``2**num_blocks``
        - Output: ``(outputs, features)``: ``outputs`` is ``(B, cout, H / 2**num_blocks, W / 2**num_blocks)``;
          ``features`` is the list of the blocks' tensors before pooling, shallowest first: item ``i`` is
          ``(B, base_chan * 2**i, H / 2**i, W / 2**i)``.
    """

    def __init__(
        self, cin: int, num_blocks: int, base_chan: int = 64, conv_block: type[nn.Module] = UNetConvBlock
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        c = cin
        for i in range(num_blocks):
            self.blocks.append(conv_block(c, base_chan * 2**i))
            c = base_chan * 2**i
        # EXERCISE "Encoder bottleneck" (see notebook 03_unet.ipynb): replace the next line with your code.
        raise NotImplementedError("Encoder bottleneck: write it (see notebook 03_unet.ipynb). This exercise of the library is not written yet, and whatever uses it, in any notebook, waits for it: write it in notebook 03_unet first, then run this again.")
        self.cout = base_chan * 2**num_blocks

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for block in self.blocks:
            x, f = block(x)  # x: (B, c_i, H/2^(i+1), W/2^(i+1)), f: (B, c_i, H/2^i, W/2^i)
            features.append(f)
        return self.bottleneck(x), features  # (B, cout, H/2^n, W/2^n), n tensors


class UNetUpConvBlock(nn.Module):
    """One decoder stage: upsample and halve the channels, concatenate the encoder features, two convolutions.

    Attributes ``upconv`` (Upsample×2, Conv3×3 ``cin → cout``, ReLU, BatchNorm) and ``convblock``
    (Conv3×3 ``cin → cout``, ReLU, BatchNorm, Conv3×3 ``cout → cout``, ReLU, BatchNorm). The concatenation of the
    ``cout`` upsampled channels with the ``cout`` encoder channels gives back ``cin = 2 * cout`` channels.

    Args:
        cin: channels of the decoder input.
        cout: channels of the output, ``cin // 2``; the encoder features must have ``cout`` channels too.

    Shape:
        - Input: ``inputs`` ``(B, cin, H, W)`` and ``encoder_features`` ``(B, cout, 2H, 2W)``
        - Output: ``(B, cout, 2H, 2W)``
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        # EXERCISE "UNetUpConvBlock layers" (see notebook 03_unet.ipynb): replace the next line with your code.
        raise NotImplementedError("UNetUpConvBlock layers: write it (see notebook 03_unet.ipynb). This exercise of the library is not written yet, and whatever uses it, in any notebook, waits for it: write it in notebook 03_unet first, then run this again.")

    def forward(self, inputs: torch.Tensor, encoder_features: torch.Tensor) -> torch.Tensor:
        # EXERCISE "UNetUpConvBlock forward" (see notebook 03_unet.ipynb): replace the next line with your code.
        raise NotImplementedError("UNetUpConvBlock forward: write it (see notebook 03_unet.ipynb). This exercise of the library is not written yet, and whatever uses it, in any notebook, waits for it: write it in notebook 03_unet first, then run this again.")


class UNetDecoder(nn.Module):
    """The expanding path: a Conv3×3-ReLU-BatchNorm keeping the channels, ``num_blocks`` up blocks, a 1×1 conv.

    Attributes ``first_block``, ``up_blocks`` (``nn.ModuleList``; block ``i`` maps ``cin // 2**i`` to
    ``cin // 2**(i+1)`` channels) and ``classifier`` (the 1×1 convolution to ``num_classes`` channels).

    Args:
        cin: channels of the encoder output.
        num_blocks: number of up blocks (the encoder's ``num_blocks``).
        num_classes: number of classes K, i.e. of output channels.
        upconv_block: class of the up blocks, called as ``upconv_block(cin, cout)`` then ``block(x, features)``.

    Shape:
        - Input: ``inputs`` ``(B, cin, h, w)`` and ``encoder_features``, the encoder's list (shallowest first, item
          ``i`` being ``(B, cin // 2**(num_blocks - i), h * 2**(num_blocks - i), w * 2**(num_blocks - i))``);
          the decoder consumes it deepest first.
        - Output: ``(B, num_classes, h * 2**num_blocks, w * 2**num_blocks)``
    """

    def __init__(
        self, cin: int, num_blocks: int, num_classes: int, upconv_block: type[nn.Module] = UNetUpConvBlock
    ) -> None:
        super().__init__()
        self.up_blocks = nn.ModuleList(upconv_block(cin // 2**i, cin // 2 ** (i + 1)) for i in range(num_blocks))
        # EXERCISE "Decoder first and last layers" (see notebook 03_unet.ipynb): replace the next line with your code.
        raise NotImplementedError("Decoder first and last layers: write it (see notebook 03_unet.ipynb). This exercise of the library is not written yet, and whatever uses it, in any notebook, waits for it: write it in notebook 03_unet first, then run this again.")

    def forward(self, inputs: torch.Tensor, encoder_features: list[torch.Tensor]) -> torch.Tensor:
        x = self.first_block(inputs)  # (B, cin, h, w)
        for block, features in zip(self.up_blocks, reversed(encoder_features), strict=True):
            x = block(x, features)  # channels halved, size doubled
        return self.classifier(x)  # (B, num_classes, h * 2^n, w * 2^n)


class UNet(nn.Module):
    """UNet for semantic segmentation of images of any size.

    Args:
        num_classes: number of classes K.
        num_blocks: number of encoder (and decoder) blocks.
        cin: number of input channels.
        base_chan: channels of the first encoder block (64 in the original UNet; 8 or 16 make a small model).
        conv_block: encoder block class (see :class:`UNetEncoder`); swap in your own to test it.
        upconv_block: decoder block class (see :class:`UNetDecoder`).

    Shape:
        - Input: ``(B, cin, H, W)``, any H and W
        - Output: logits ``(B, num_classes, H, W)``
    """

    def __init__(
        self,
        num_classes: int,
        num_blocks: int = 4,
        cin: int = 3,
        base_chan: int = 64,
        conv_block: type[nn.Module] = UNetConvBlock,
        upconv_block: type[nn.Module] = UNetUpConvBlock,
    ) -> None:
        super().__init__()
        self.encoder = UNetEncoder(cin, num_blocks, base_chan, conv_block)
        self.decoder = UNetDecoder(self.encoder.cout, num_blocks, num_classes, upconv_block)
        self.size_multiple = 2**num_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        # Zero-pad (about equally on both sides) up to a multiple of 2**num_blocks so that every pooling is exact.
        # (m - h % m) % m rather than (-h) % m: torch.export can bound the former for named dynamic dimensions.
        m = self.size_multiple
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        top, left = pad_h // 2, pad_w // 2
        x = F.pad(x, (left, pad_w - left, top, pad_h - top))  # (B, cin, H + pad_h, W + pad_w)
        outputs, features = self.encoder(x)
        logits = self.decoder(outputs, features)  # (B, K, H + pad_h, W + pad_w)
        # narrow(dim, start, length) keeps the exported output size symbolic and equal to the input's.
        return logits.narrow(2, top, h).narrow(3, left, w)  # (B, K, H, W)
