# Your copy of the course library: labcode/export/fold.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""The folded graph: each nearest 2x upsampling followed by a 3x3 convolution rewritten as one
:class:`NearestUpsampleConv`, the same function computed at the input's resolution with 4 instead of 9 multiply-adds
per output value (four 2x2 convolutions and a ``DepthToSpace`` in ONNX), for serving when speed matters
(``export_onnx(..., fold=True)``, ``python -m labcode export --fold``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NearestUpsampleConv(nn.Module):
    """``Upsample(scale_factor=2, mode="nearest")`` then a 3x3 ``Conv2d`` (padding 1), optionally then a ReLU, computed
    at the input's resolution.

    Output pixel ``(2h + i, 2w + j)`` sees input rows ``h - 1 + i`` and ``h + i`` (and likewise columns): the rows of
    the 3x3 kernel that fall on the same input row are summed into a 2x2 kernel, one per phase ``(i, j)``. The four
    phase outputs are interleaved by a pixel shuffle. Zero padding of the upsampled image is zero padding of the
    input, so the function is the same up to float rounding.

    Args:
        conv: the 3x3 convolution (stride 1, padding 1, no dilation, one group).
        relu: apply a ReLU to each phase (before the shuffle: ONNX Runtime fuses it into the convolution).

    Shape:
        (B, C, H, W) in, (B, conv.out_channels, 2H, 2W) out.
    """

    #: rows (or columns) of the 3x3 kernel summed into each of the 2 taps, for output parity 0 and 1
    TAPS = (((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)))

    def __init__(self, conv: nn.Conv2d, relu: bool = False) -> None:
        super().__init__()
        taps = [torch.tensor(t, dtype=conv.weight.dtype) for t in self.TAPS]
        weight = conv.weight.detach()  # (out, in, 3, 3)
        self.register_buffer("phase_weights", torch.stack([torch.einsum("ak,oikl,bl->oiab", taps[i], weight, taps[j])
                                                           for i in (0, 1) for j in (0, 1)]))  # (4, out, in, 2, 2)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phases = []
        for k in range(4):
            i, j = divmod(k, 2)
            y = F.conv2d(F.pad(x, (1 - j, j, 1 - i, i)), self.phase_weights[k], self.bias)  # (B, out, H, W)
            phases.append(F.relu(y) if self.relu else y)
        b, c, h, w = phases[0].shape
        return F.pixel_shuffle(torch.stack(phases, dim=2).reshape(b, 4 * c, h, w), 2)  # (B, out, 2H, 2W)


def _is_nearest_x2(module: nn.Module) -> bool:
    scale = module.scale_factor if isinstance(module, nn.Upsample) else None
    scales = scale if isinstance(scale, tuple) else (scale, scale)
    return scale is not None and module.mode == "nearest" and module.size is None and all(s == 2 for s in scales)


def _is_plain_3x3(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3) and module.stride == (1, 1)
            and module.padding == (1, 1) and module.dilation == (1, 1) and module.groups == 1
            and module.padding_mode == "zeros")


def _folded(layers: list[nn.Module]) -> list[nn.Module]:
    out, i = [], 0
    while i < len(layers):
        if i + 1 < len(layers) and _is_nearest_x2(layers[i]) and _is_plain_3x3(layers[i + 1]):
            relu = i + 2 < len(layers) and isinstance(layers[i + 2], nn.ReLU)
            out.append(NearestUpsampleConv(layers[i + 1], relu=relu))
            i += 3 if relu else 2
        else:
            out.append(layers[i])
            i += 1
    return out


def fold_nearest_upsampling(model: nn.Module) -> int:
    """Replace, in place, each ``Upsample(x2, nearest), Conv2d(3x3)[, ReLU]`` run inside an ``nn.Sequential`` child
    by a :class:`NearestUpsampleConv`; returns how many were replaced. Anything else is left as it is."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Sequential):
                layers = _folded(list(child))
                if len(layers) != len(child):
                    replaced += sum(isinstance(layer, NearestUpsampleConv) for layer in layers)
                    setattr(parent, name, nn.Sequential(*layers))
    return replaced
