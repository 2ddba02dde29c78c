# Your copy of the course library: labcode/deeplab.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""DeepLabv3+ (Chen et al., 2018) written from scratch: residual backbone → ASPP → decoder → DeepLabV3Plus.

- **Backbone**: a ResNet made of BasicBlocks (ResNet-18 depths by default, ``(3, 4, 6, 3)`` gives ResNet-34).
  A stride-2 7×7 stem and a max-pooling bring the image to 1/4 of its size, then four stages of widths
  ``base_chan * (1, 2, 4, 8)``: the first keeps 1/4 (these are the "low-level" features), the next two halve the
  size, and the last one keeps 1/16 and dilates its convolutions by 2 instead (output stride 16).
- **ASPP** (atrous spatial pyramid pooling) on the 1/16 features: a 1×1 branch, three 3×3 branches dilated by the
  ``atrous_rates`` (6, 12, 18 at output stride 16) and an image-pooling branch (the mean over the whole map, a 1×1
  conv, broadcast back to the map's size), concatenated and projected by a 1×1 conv.
- **Decoder**: the ASPP output is upsampled (bilinear) to the 1/4 features, which a 1×1 conv reduces to
  ``low_level_chan`` (48) channels; both are concatenated, go through two 3×3 convs and a 1×1 classifier, and the
  logits are upsampled (bilinear) to the input size.

Every resize uses the runtime size of its target tensor, so any input size works and the model exports to ONNX with
dynamic height and width. No pretrained weights are used (nothing is downloaded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias, "same" padding for odd kernels) → BatchNorm → ReLU, the unit of the backbone and the heads."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Residual block of ResNet-18/34: two 3×3 convs plus a shortcut (a 1×1 conv when the shape changes).

    Args:
        cin: input channels.
        cout: output channels.
        stride: stride of the first conv (2 halves the size).
        dilation: dilation of both convs.

    Shape:
        - Input: ``(B, cin, H, W)``
        - Output: ``(B, cout, ceil(H / stride), ceil(W / stride))``
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, 3, stride=stride, dilation=dilation)
        self.conv2 = nn.Sequential(
            nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout)
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """ResNet of BasicBlocks with output stride 16, returning the stride-4 and stride-16 features.

    Args:
        cin: input channels.
        base_chan: width of the first stage; stage ``i`` has ``base_chan * 2**i`` channels.
        depths: number of blocks of each of the four stages.

    Shape:
        - Input: ``(B, cin, H, W)``
        - Output: ``(low_level, high_level)``: ``(B, base_chan, ~H/4, ~W/4)`` and ``(B, 8 * base_chan, ~H/16, ~W/16)``
          (sizes rounded up).
    """

    def __init__(self, cin: int = 3, base_chan: int = 64, depths: tuple[int, int, int, int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        widths = [base_chan * 2**i for i in range(4)]
        strides, dilations = (1, 2, 2, 1), (1, 1, 1, 2)  # the last stage dilates instead of striding
        self.stem = nn.Sequential(conv_bn_relu(cin, base_chan, 7, stride=2), nn.MaxPool2d(3, stride=2, padding=1))
        self.stages = nn.ModuleList()
        c = base_chan
        for width, depth, stride, dilation in zip(widths, depths, strides, dilations, strict=True):
            blocks = [BasicBlock(c, width, stride, dilation)]
            blocks += [BasicBlock(width, width, 1, dilation) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(*blocks))
            c = width
        self.cout = c

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)  # (B, c0, H/4, W/4)
        low_level = x = self.stages[0](x)  # (B, c0, H/4, W/4)
        for stage in self.stages[1:]:
            x = stage(x)  # (B, c1, H/8, W/8), (B, c2, H/16, W/16), (B, c3, H/16, W/16)
        return low_level, x


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel 1×1, dilated 3×3 and image-pooling branches, then a 1×1 projection.

    The image-pooling branch has no BatchNorm: its map is 1×1, so with a batch of one image BatchNorm would see a
    single value per channel and fail in training mode.

    Args:
        cin: input channels.
        cout: channels of each branch and of the output.
        atrous_rates: dilations of the 3×3 branches.

    Shape:
        - Input: ``(B, cin, h, w)``
        - Output: ``(B, cout, h, w)``
    """

    def __init__(self, cin: int, cout: int = 256, atrous_rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout, 1)])
        self.branches.extend(conv_bn_relu(cin, cout, 3, dilation=rate) for rate in atrous_rates)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = conv_bn_relu(cout * (len(atrous_rates) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches]  # each (B, cout, h, w)
        pooled = self.image_pool(x)  # (B, cout, 1, 1)
        outputs.append(pooled.expand(-1, -1, x.shape[-2], x.shape[-1]))  # (B, cout, h, w), no fixed size baked in
        return self.project(torch.cat(outputs, dim=1))  # (B, cout, h, w)


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ with a from-scratch ResNet backbone, for images of any size.

    Args:
        num_classes: number of classes K.
        cin: input channels.
        base_chan: width of the first backbone stage (64 for a ResNet-18/34; 8 or 16 make a small CPU model).
        depths: blocks per backbone stage: ``(2, 2, 2, 2)`` is ResNet-18, ``(3, 4, 6, 3)`` ResNet-34.
        aspp_chan: channels of the ASPP branches and of the decoder convs (256 in the paper).
        low_level_chan: channels the stride-4 features are reduced to (48 in the paper).
        atrous_rates: dilations of the ASPP 3×3 branches.

    Shape:
        - Input: ``(B, cin, H, W)``, any H and W
        - Output: logits ``(B, num_classes, H, W)``
    """

    def __init__(
        self,
        num_classes: int,
        cin: int = 3,
        base_chan: int = 64,
        depths: tuple[int, int, int, int] = (2, 2, 2, 2),
        aspp_chan: int = 256,
        low_level_chan: int = 48,
        atrous_rates: tuple[int, ...] = (6, 12, 18),
    ) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(cin, base_chan, tuple(depths))
        self.aspp = ASPP(self.backbone.cout, aspp_chan, tuple(atrous_rates))
        self.reduce_low_level = conv_bn_relu(base_chan, low_level_chan, 1)
        self.fuse = nn.Sequential(
            conv_bn_relu(aspp_chan + low_level_chan, aspp_chan, 3), conv_bn_relu(aspp_chan, aspp_chan, 3)
        )
        self.classifier = nn.Conv2d(aspp_chan, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_level, high_level = self.backbone(x)  # (B, c0, H/4, W/4), (B, 8 c0, H/16, W/16)
        context = self.aspp(high_level)  # (B, A, H/16, W/16)
        low_level = self.reduce_low_level(low_level)  # (B, 48, H/4, W/4)
        context = F.interpolate(context, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fuse(torch.cat([context, low_level], dim=1))  # (B, A, H/4, W/4)
        logits = self.classifier(y)  # (B, K, H/4, W/4)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, H, W)
