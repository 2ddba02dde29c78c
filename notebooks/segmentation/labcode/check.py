# Your copy of the course library: labcode/check.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Students' self-check of the library exercises: ``python -m labcode.check`` (or ``python -m labcode check``).

Run it in a terminal from the assignment folder, the one holding the notebooks and your copy of ``labcode/``: Python
then imports that copy. Each exercise of the library (the parts that raise ``NotImplementedError`` in the student
version) gets one check, named after its question in the notebooks, and one line of report:

- ``PASS``: the code behaves as the notebook asks;
- ``TODO``: not written yet (the stub, or a part it depends on, still raises ``NotImplementedError``);
- ``FAIL``: it runs but gives a wrong result; the message says what was expected and what came out;
- ``ERROR``: it crashes; the message gives the exception and the line of the library where it happened.

The checks are the visible tests of the notebooks, run outside Jupyter: each graded test cell of an exercise calls
its check from this module (grading then runs more tests, hidden ones). The exit status is 0 when every check passes,
1 otherwise, and 3 when the library checked is not your copy in this folder (a complete library with the exercises
already written, or another copy found on the path): the report then says so, since passing checks would say nothing
about your work.

The checks do not hold the answers: they compare what the code gives with expected values stored in
``labcode/check_data/`` (outputs for fixed inputs and weights, computed once with a complete library by
:func:`write_check_data`), and they test properties (shapes, layer kinds and settings, numbers of weights, which
inputs the result depends on). For a forward pass, the block under test gets known weights, layer by layer in the
order the question lists its layers, whatever way it builds them; convolution biases are set to zero.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import labcode
from labcode.classes import NUM_CLASSES


@dataclass(frozen=True)
class Check:
    """One exercise: the notebook asking for it, its question title and the function that checks it."""

    notebook: str
    title: str
    run: Callable[[], None]


@dataclass(frozen=True)
class Outcome:
    """Result of one check: ``status`` is ``"pass"``, ``"todo"``, ``"fail"`` or ``"error"``."""

    check: Check
    status: str
    message: str = ""


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------

def _layer_types(sequence) -> list[str]:
    return [type(layer).__name__ for layer in sequence]


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _attributes(module, names: Sequence[str]) -> None:
    for name in names:
        _expect(hasattr(module, name), f"{type(module).__name__} should have an attribute {name!r}")


def _conv(conv, name: str, cin: int, cout: int, kernel: int = 3) -> None:
    import torch.nn as nn

    _expect(isinstance(conv, nn.Conv2d), f"{name} should be an nn.Conv2d, got {type(conv).__name__}")
    _expect(conv.in_channels == cin, f"{name} should take {cin} channels, got {conv.in_channels}")
    _expect(conv.out_channels == cout, f"{name} should output {cout} channels, got {conv.out_channels}")
    _expect(conv.kernel_size == (kernel, kernel), f"{name} should be a {kernel}x{kernel} convolution, got "
            f"{conv.kernel_size}")
    if kernel == 3:
        _expect(conv.padding in ((1, 1), "same"), f"{name} should use padding 1 (to keep the size), got "
                f"{conv.padding}")


#: Where the expected values of the checks are stored (one ``.npz`` file per exercise).
CHECK_DATA = Path(__file__).resolve().parent / "check_data"


def _stored(name: str) -> dict[str, np.ndarray]:
    """The expected values of ``check_data/<name>.npz``, by key."""
    path = CHECK_DATA / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the checks need the files of labcode/check_data/ (copy them "
                                "again from the assignment you were given)")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _weighted_layers(module, parts: Sequence[str]) -> list:
    """The convolutions and batch normalisations of ``module``'s attributes ``parts``, in that order."""
    from torch import nn

    found = []
    for part in parts:
        node = module
        for name in part.split("."):
            _expect(name.isdigit() or hasattr(node, name), f"{type(node).__name__} should have an attribute {name!r}")
            node = node[int(name)] if name.isdigit() else getattr(node, name)
        found += [m for m in node.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    return found


def _weight_count(module) -> int:
    """Number of learned values of ``module``, convolution biases left out (a choice the questions leave open)."""
    from torch import nn

    total = 0
    for layer in module.modules():
        for name, parameter in layer.named_parameters(recurse=False):
            if not (isinstance(layer, nn.Conv2d) and name == "bias"):
                total += parameter.numel()
    return total


_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


def _known_weights(module, parts: Sequence[str], stored: dict[str, np.ndarray], what: str) -> None:
    """Give ``module`` the stored weights, layer by layer (biases of convolutions to zero), and put it in eval mode.

    ``stored["layers"]`` holds the values one after the other: a convolution's weight, a batch normalisation's
    weight, bias, running mean and running variance; ``stored["layer_shapes"]`` their shapes (padded with zeros).
    """
    import torch
    from torch import nn

    layers = _weighted_layers(module, parts)
    tensors = [(index, layer, field) for index, layer in enumerate(layers)
               for field in (("weight",) if isinstance(layer, nn.Conv2d) else _BN_FIELDS)]
    shapes = [tuple(int(n) for n in row if n) for row in stored["layer_shapes"]]
    _expect(len(tensors) == len(shapes), f"{what} has {len(layers)} convolution and batch-norm layers, which is not "
            "what the question asks for: pass the layers check of this block first")
    values, offset = stored["layers"], 0
    with torch.no_grad():
        for (index, layer, field), shape in zip(tensors, shapes):
            target = getattr(layer, field)
            _expect(target is not None and tuple(target.shape) == shape,
                    f"layer {index + 1} of {what} ({type(layer).__name__}) has a {field} of shape "
                    f"{None if target is None else tuple(target.shape)}, expected {shape}: pass the layers check of "
                    "this block first")
            size = int(np.prod(shape))
            target.copy_(torch.from_numpy(values[offset:offset + size].reshape(shape)))
            offset += size
        for layer in layers:
            if isinstance(layer, nn.Conv2d) and layer.bias is not None:
                layer.bias.zero_()
    module.eval()


def _differs(name: str, got, expected: np.ndarray, advice: str) -> None:
    """Fail unless ``got`` has the shape and values of ``expected``."""
    got = got.detach().cpu().numpy()
    _expect(got.shape == expected.shape, f"{name} should have shape {expected.shape}, got {got.shape}")
    gap = float(np.abs(got - expected).max())
    _expect(bool(np.allclose(got, expected, rtol=1e-4, atol=1e-4)),
            f"{name}: the values differ from those expected for the stored inputs and weights (largest "
            f"difference {gap:.3g}); {advice}")


def _weights_as_stored(module, what: str, expected: int) -> None:
    count = _weight_count(module)
    _expect(count == expected, f"{what} has {count} learned values (convolution biases not counted), expected "
            f"{expected}: compare its layers' sizes and options with the question")


def _shown(values: np.ndarray) -> list[float]:
    """``values`` rounded to 4 decimals, for a message."""
    return [round(float(v), 4) for v in np.asarray(values).ravel()]


def _stand_ins():
    """Simple encoder and decoder blocks, so that each check judges a single exercise."""
    import torch.nn.functional as F
    from torch import nn

    class StandInConvBlock(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel_size=1)

        def forward(self, x):
            features = self.conv(x)
            return F.max_pool2d(features, 2), features

    class StandInUpBlock(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel_size=1)

        def forward(self, inputs, encoder_features):
            return self.conv(F.interpolate(inputs, scale_factor=2.0)) + encoder_features  # not the lab's up block

    return StandInConvBlock, StandInUpBlock


# --------------------------------------------------------------------------------------------------------------------
# The checks, in the order of the notebooks
# --------------------------------------------------------------------------------------------------------------------

def check_augmentation() -> None:
    import albumentations as A
    import torch

    from labcode.transforms import denormalize, train_transforms

    pipeline = train_transforms(64)
    _expect(isinstance(pipeline, A.Compose), f"train_transforms should return an A.Compose, got "
            f"{type(pipeline).__name__}")
    rng = np.random.default_rng(0)
    for shape in ((90, 120), (40, 50)):
        photo = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
        labels = rng.integers(0, NUM_CLASSES, size=shape).astype(np.uint8)
        out = pipeline(image=photo, mask=labels)
        x, y = out["image"], out["mask"]
        _expect(isinstance(x, torch.Tensor) and x.dtype == torch.float32,
                f"the image should come out as a float32 tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}")
        _expect(tuple(x.shape) == (3, 64, 64), f"train_transforms(64) should give (3, 64, 64) images for a "
                f"{shape[0]}x{shape[1]} input, got {tuple(x.shape)}")
        _expect(tuple(y.shape) == (64, 64), f"train_transforms(64) should give (64, 64) masks, got {tuple(y.shape)}")
        invented = set(np.unique(np.asarray(y)).tolist()) - set(np.unique(labels).tolist())
        _expect(not invented, f"the mask holds labels absent from the input {sorted(invented)}: resample masks with "
                "nearest neighbour (mask_interpolation=0)")
    masks = [np.asarray(pipeline(image=photo, mask=labels)["mask"]) for _ in range(6)]
    _expect(any(not np.array_equal(masks[0], m) for m in masks[1:]),
            "six calls on the same image gave the same mask: add a random geometric transform")
    # Bright orange stripes (label 12) between dark blue ones (label 9): a colour photo, so that colour transforms
    # (hue, saturation, RGB shifts...) run as they would on the data set, without warnings.
    stripes = (np.arange(120) // 10) % 2 == 0
    photo = np.where(stripes[None, :, None], np.array([240, 200, 120]), np.array([20, 40, 90]))
    photo = photo.astype(np.uint8).repeat(90, axis=0)
    labels = np.where(stripes[None, :], 12, 9).astype(np.uint8).repeat(90, axis=0)
    agree = tried = 0
    for _ in range(20):
        out = pipeline(image=photo, mask=labels)
        gray, lab = denormalize(out["image"]).mean(axis=2), np.asarray(out["mask"])
        invented = set(np.unique(lab).tolist()) - {0, 9, 12}  # 0 (<UNK>) may fill holes and borders
        _expect(not invented, f"a mask of labels 9 and 12 came out with labels {sorted(invented)} too: resample "
                "masks with nearest neighbour (mask_interpolation=0)")
        if (lab == 12).any() and (lab == 9).any():
            tried += 1
            agree += int(gray[lab == 12].mean() > gray[lab == 9].mean())
    _expect(tried >= 5, f"only {tried} of 20 augmented masks kept both labels of a striped image: crops too small")
    _expect(agree >= 0.9 * tried, f"image and mask disagree after augmentation in {tried - agree} of {tried} "
            "trials: apply the geometric transforms to both (pipeline(image=..., mask=...))")


def check_class_weights() -> None:
    from labcode.stats import class_weights, inverse_frequency_weights

    stored = _stored("class_weights")
    for case in sorted(key for key in stored if key.startswith("counts")):
        counts, expected = stored[case], stored[case.replace("counts", "weights")]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            weights = np.asarray(inverse_frequency_weights(counts))
        _expect(weights.shape == expected.shape, f"one weight per class expected for counts {counts.tolist()}, got "
                f"shape {weights.shape}")
        _expect(weights.dtype == np.float32, f"weights should be float32, got {weights.dtype}")
        absent = counts == 0
        _expect(bool((weights[absent] == 0).all()), f"a class without pixels should get weight 0: counts "
                f"{counts.tolist()} gave {_shown(weights)}")
        present = weights[~absent]
        _expect(bool(np.isclose(present.mean(), 1.0, rtol=1e-5)), f"the weights of the classes present should average "
                f"1: counts {counts.tolist()} gave {_shown(weights)}")
        _expect(bool(np.allclose(weights, expected, rtol=1e-5)),
                f"for counts {counts.tolist()} expected {_shown(expected)} (proportional to "
                f"1 / frequency), got {_shown(weights)}")
        _expect(bool(np.allclose(class_weights(counts, "inverse"), expected, rtol=1e-5)),
                "class_weights(counts, 'inverse') disagrees with inverse_frequency_weights")


def check_conv_block_layers() -> None:
    import torch.nn as nn

    from labcode.unet import UNetConvBlock

    block = UNetConvBlock(3, 16)
    _attributes(block, ("block1", "block2", "block3"))
    for name, cin in (("block1", 3), ("block2", 16)):
        part = getattr(block, name)
        _expect(_layer_types(part) == ["Conv2d", "ReLU", "BatchNorm2d"],
                f"{name} should be Conv2d, ReLU, BatchNorm2d in this order, got {_layer_types(part)}")
        _conv(part[0], f"{name}'s convolution", cin, 16)
        _expect(part[2].num_features == 16, f"{name}'s BatchNorm should have 16 features, got {part[2].num_features}")
    _expect(isinstance(block.block3, nn.MaxPool2d), f"block3 should be an nn.MaxPool2d, got "
            f"{type(block.block3).__name__}")
    _weights_as_stored(block, "UNetConvBlock(3, 16)", int(_stored("conv_block")["weights"]))


def check_conv_block_forward() -> None:
    import torch

    from labcode.unet import UNetConvBlock

    stored = _stored("conv_block")
    block = UNetConvBlock(3, 4)
    _known_weights(block, ("block1", "block2"), stored, "UNetConvBlock(3, 4)")
    x = torch.from_numpy(stored["x"])
    with torch.no_grad():
        result = block(x.clone())
    _expect(isinstance(result, tuple) and len(result) == 2, "forward should return a pair (outputs, features)")
    outputs, features = result
    size = tuple(x.shape)
    _expect(tuple(features.shape) == stored["features"].shape, f"features (before pooling) should be "
            f"{stored['features'].shape} for a {size} input, got {tuple(features.shape)}")
    _expect(tuple(outputs.shape) == stored["outputs"].shape, f"outputs (after pooling) should be "
            f"{stored['outputs'].shape} for a {size} input, got {tuple(outputs.shape)}")
    _differs("features", features, stored["features"],
             "they should be what both Conv-ReLU-BatchNorm stages, in their order, make of the input")
    _differs("outputs", outputs, stored["outputs"], "they should be the features after the block's pooling")


def check_encoder_bottleneck() -> None:
    import torch

    from labcode.unet import UNetEncoder

    stand_in, _ = _stand_ins()
    encoder = UNetEncoder(3, num_blocks=3, base_chan=8, conv_block=stand_in).eval()
    _attributes(encoder, ("bottleneck",))
    _expect(_layer_types(encoder.bottleneck) == ["Conv2d", "ReLU", "BatchNorm2d"],
            f"the bottleneck should be Conv2d, ReLU, BatchNorm2d, got {_layer_types(encoder.bottleneck)}")
    _conv(encoder.bottleneck[0], "the bottleneck's convolution (3 blocks, base_chan=8)", 32, 64)
    with torch.no_grad():
        outputs, features = encoder(torch.randn(2, 3, 48, 40))
    _expect(tuple(outputs.shape) == (2, 64, 6, 5), f"the encoder should output (2, 64, 6, 5) for a (2, 3, 48, 40) "
            f"input, got {tuple(outputs.shape)}")
    shapes = [tuple(f.shape) for f in features]
    _expect(shapes == [(2, 8, 48, 40), (2, 16, 24, 20), (2, 32, 12, 10)], f"unexpected feature shapes {shapes}")


def check_up_block_layers() -> None:
    from labcode.unet import UNetUpConvBlock

    up = UNetUpConvBlock(32, 16)
    _attributes(up, ("upconv", "convblock"))
    _expect(_layer_types(up.upconv) == ["Upsample", "Conv2d", "ReLU", "BatchNorm2d"],
            f"upconv should be Upsample, Conv2d, ReLU, BatchNorm2d, got {_layer_types(up.upconv)}")
    _expect(float(up.upconv[0].scale_factor) == 2.0, f"upconv should upsample by 2, got {up.upconv[0].scale_factor}")
    _conv(up.upconv[1], "upconv's convolution", 32, 16)
    _expect(_layer_types(up.convblock) == ["Conv2d", "ReLU", "BatchNorm2d"] * 2,
            f"convblock should be (Conv2d, ReLU, BatchNorm2d) twice, got {_layer_types(up.convblock)}")
    _conv(up.convblock[0], "convblock's first convolution (16 upsampled + 16 skipped channels in)", 32, 16)
    _conv(up.convblock[3], "convblock's second convolution", 16, 16)
    _weights_as_stored(up, "UNetUpConvBlock(32, 16)", int(_stored("up_block")["weights"]))


def check_up_block_forward() -> None:
    import torch

    from labcode.unet import UNetUpConvBlock

    stored = _stored("up_block")
    up = UNetUpConvBlock(8, 4)
    _known_weights(up, ("upconv", "convblock"), stored, "UNetUpConvBlock(8, 4)")
    inputs, skipped = torch.from_numpy(stored["inputs"]), torch.from_numpy(stored["skipped"])
    with torch.no_grad():
        out = up(inputs.clone(), skipped.clone())
        _expect(isinstance(out, torch.Tensor), f"forward should return a tensor, got {type(out).__name__}")
        _expect(tuple(out.shape) == stored["output"].shape, f"a {tuple(inputs.shape)} input with "
                f"{tuple(skipped.shape)} encoder features should give {stored['output'].shape}, got "
                f"{tuple(out.shape)}")
        other_skipped = up(inputs.clone(), -skipped)
        other_inputs = up(-inputs, skipped.clone())
    _expect(not torch.allclose(out, other_skipped), "the output does not change when the encoder features change: "
            "forward should use them")
    _expect(not torch.allclose(out, other_inputs), "the output does not change when the decoder input changes: "
            "forward should use it")
    _differs("the output", out, stored["output"], "compare your forward with the steps the question lists: which "
             "layers see which tensor, in which order, and the order of the tensors joined along the channels")


def check_decoder_layers() -> None:
    import torch
    from torch import nn

    from labcode.unet import UNetDecoder

    _, stand_in = _stand_ins()
    decoder = UNetDecoder(64, num_blocks=3, num_classes=NUM_CLASSES, upconv_block=stand_in).eval()
    _attributes(decoder, ("first_block", "classifier"))
    _expect(_layer_types(decoder.first_block) == ["Conv2d", "ReLU", "BatchNorm2d"],
            f"first_block should be Conv2d, ReLU, BatchNorm2d, got {_layer_types(decoder.first_block)}")
    _conv(decoder.first_block[0], "first_block's convolution", 64, 64)
    _expect(isinstance(decoder.classifier, nn.Conv2d), "classifier should be an nn.Conv2d")
    _conv(decoder.classifier, "the classifier (64 / 2**3 channels in)", 8, NUM_CLASSES, kernel=1)
    features = [torch.randn(2, 8, 48, 40), torch.randn(2, 16, 24, 20), torch.randn(2, 32, 12, 10)]
    with torch.no_grad():
        logits = decoder(torch.randn(2, 64, 6, 5), features)
    _expect(tuple(logits.shape) == (2, NUM_CLASSES, 48, 40), f"the decoder should output (2, {NUM_CLASSES}, 48, 40), "
            f"got {tuple(logits.shape)}")


def check_whole_unet() -> None:
    import torch

    from labcode.unet import UNet

    model = UNet(NUM_CLASSES, num_blocks=3, base_chan=8).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 70, 45))
    _expect(tuple(logits.shape) == (1, NUM_CLASSES, 70, 45), f"UNet(14, num_blocks=3, base_chan=8) should map a "
            f"(1, 3, 70, 45) image to (1, {NUM_CLASSES}, 70, 45) logits, got {tuple(logits.shape)}")
    stored = _stored("unet")
    small = UNet(NUM_CLASSES, num_blocks=1, base_chan=2)
    _known_weights(small, UNET_PARTS, stored, "UNet(14, num_blocks=1, base_chan=2)")
    with torch.no_grad():
        logits = small(torch.from_numpy(stored["x"]))
    _differs("the logits of UNet(14, num_blocks=1, base_chan=2)", logits, stored["logits"],
             "the checks of the blocks above tell which part to look at")


#: The exercises of the library, by the title of their question (the title the stubs print).
CHECKS: tuple[Check, ...] = (
    Check("02_data_pipeline", "Augmentation pipeline", check_augmentation),
    Check("03_unet", "UNetConvBlock layers", check_conv_block_layers),
    Check("03_unet", "UNetConvBlock forward", check_conv_block_forward),
    Check("03_unet", "Encoder bottleneck", check_encoder_bottleneck),
    Check("03_unet", "UNetUpConvBlock layers", check_up_block_layers),
    Check("03_unet", "UNetUpConvBlock forward", check_up_block_forward),
    Check("03_unet", "Decoder first and last layers", check_decoder_layers),
    Check("03_unet", "The whole UNet (all the parts above together)", check_whole_unet),
    Check("04_metrics_losses", "Class weights", check_class_weights),
)


# --------------------------------------------------------------------------------------------------------------------
# The expected values (labcode/check_data/)
# --------------------------------------------------------------------------------------------------------------------

#: The layers of ``UNet(num_blocks=1)`` that get known weights, in this order (each block's layers as the question
#: lists them).
UNET_PARTS: tuple[str, ...] = ("encoder.blocks.0.block1", "encoder.blocks.0.block2", "encoder.bottleneck",
                               "decoder.first_block", "decoder.up_blocks.0.upconv", "decoder.up_blocks.0.convblock",
                               "decoder.classifier")

#: Pixel counts whose inverse-frequency weights are stored (absent classes, a single class, equal shares).
CLASS_COUNTS: tuple[tuple[int, ...], ...] = ((0, 10, 30, 60), (5, 0, 5, 90, 0, 0), (7,), (1, 1, 1, 1), (3, 1000, 0))


def _draw_weights(layers: Sequence, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights for ``layers`` (convolutions and batch normalisations), as :func:`_known_weights` reads them."""
    from torch import nn

    values, shapes = [], []
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            shape = tuple(layer.weight.shape)
            drawn = [rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))]
        else:
            n = layer.num_features
            drawn = [rng.uniform(0.5, 1.5, n), 0.2 * rng.standard_normal(n), 0.2 * rng.standard_normal(n),
                     rng.uniform(0.5, 1.5, n)]
        values += [array.astype(np.float32).ravel() for array in drawn]
        shapes += [list(array.shape) + [0] * (4 - array.ndim) for array in drawn]
    return {"layers": np.concatenate(values), "layer_shapes": np.array(shapes, dtype=np.int32)}


def _with_known_weights(module, parts: Sequence[str], seed: int) -> tuple[dict[str, np.ndarray], np.random.Generator]:
    rng = np.random.default_rng(seed)
    drawn = _draw_weights(_weighted_layers(module, parts), rng)
    _known_weights(module, parts, drawn, type(module).__name__)
    return dict(drawn), rng


def check_data(name: str) -> dict[str, np.ndarray]:
    """The expected values of ``check_data/<name>.npz`` computed again with the library imported (a complete one).

    ``name`` is one of ``"class_weights"``, ``"conv_block"``, ``"up_block"`` and ``"unet"``.
    """
    import torch

    from labcode.stats import inverse_frequency_weights
    from labcode.unet import UNet, UNetConvBlock, UNetUpConvBlock

    if name == "class_weights":
        data = {}
        for index, counts in enumerate(CLASS_COUNTS):
            data[f"counts{index}"] = np.array(counts, dtype=np.int64)
            data[f"weights{index}"] = np.asarray(inverse_frequency_weights(data[f"counts{index}"]), dtype=np.float32)
        return data
    if name == "conv_block":
        block = UNetConvBlock(3, 4)
        data, rng = _with_known_weights(block, ("block1", "block2"), seed=1)
        data["x"] = rng.standard_normal((2, 3, 8, 6)).astype(np.float32)
        with torch.no_grad():
            outputs, features = block(torch.from_numpy(data["x"]))
        data |= {"outputs": outputs.numpy(), "features": features.numpy()}
        data["weights"] = np.array(_weight_count(UNetConvBlock(3, 16)))
        return data
    if name == "up_block":
        up = UNetUpConvBlock(8, 4)
        data, rng = _with_known_weights(up, ("upconv", "convblock"), seed=2)
        data["inputs"] = rng.standard_normal((1, 8, 4, 3)).astype(np.float32)
        data["skipped"] = rng.standard_normal((1, 4, 8, 6)).astype(np.float32)
        with torch.no_grad():
            data["output"] = up(torch.from_numpy(data["inputs"]), torch.from_numpy(data["skipped"])).numpy()
        data["weights"] = np.array(_weight_count(UNetUpConvBlock(32, 16)))
        return data
    if name == "unet":
        model = UNet(NUM_CLASSES, num_blocks=1, base_chan=2)
        data, rng = _with_known_weights(model, UNET_PARTS, seed=3)
        data["x"] = rng.standard_normal((1, 3, 7, 5)).astype(np.float32)
        with torch.no_grad():
            data["logits"] = model(torch.from_numpy(data["x"])).numpy()
        return data
    raise ValueError(f"no check data named {name!r}; names: class_weights, conv_block, up_block, unet")


#: The files of ``check_data/``, without their ``.npz``.
CHECK_DATA_NAMES: tuple[str, ...] = ("class_weights", "conv_block", "up_block", "unet")


def write_check_data(folder: Path = CHECK_DATA) -> list[Path]:
    """Write the expected values of the checks to ``folder``, computed with the library imported (a complete one)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in CHECK_DATA_NAMES:
        path = folder / f"{name}.npz"
        np.savez_compressed(path, **check_data(name))
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------------------------------------

def _where(error: BaseException) -> str:
    """``file:line`` of the deepest frame of the traceback inside the library, or an empty string."""
    package = Path(labcode.__file__).resolve().parent
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve().parent == package]
    frames = [f for f in frames if Path(f.filename).name != "check.py"]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (labcode/{Path(frame.filename).name}:{frame.lineno}: {(frame.line or '').strip()})"


def run_check(check: Check) -> Outcome:
    """Run one check and classify what happened."""
    try:
        check.run()
    except NotImplementedError as error:
        # a stub's message: "<title>: write it (see notebook <stem>.ipynb). <what to do when met elsewhere>"
        message = (str(error) or "not written yet").split(". ", 1)[0]
        if not message.startswith(check.title):
            message = f"waits for another exercise: {message}"
        return Outcome(check, "todo", message)
    except AssertionError as error:
        return Outcome(check, "fail", str(error))
    except Exception as error:  # a crash in the student's code, reported rather than raised
        return Outcome(check, "error", f"{type(error).__name__}: {error}{_where(error)}")
    return Outcome(check, "pass")


def run_checks(notebook: str | None = None) -> list[Outcome]:
    """Run the checks (those of one notebook when ``notebook`` is given, e.g. ``"03_unet"``)."""
    return [run_check(check) for check in CHECKS if notebook is None or check.notebook.startswith(notebook)]


#: How every file of a student's copy of the library starts (the self-check tells that copy from others by it).
STUDENT_COPY_HEADER = "# Your copy of the course library"


def copy_problems(folder: Path | None = None) -> list[str]:
    """Why the ``labcode`` being checked is not the student copy of ``folder`` (default: the current one), if so."""
    folder = Path.cwd() if folder is None else folder
    loaded = Path(labcode.__file__).resolve().parent
    problems = []
    if loaded != (folder / "labcode").resolve():
        problems.append(f"labcode was imported from {loaded}, not from {folder / 'labcode'}: run the check from the "
                        "folder holding your notebooks and your labcode/ copy")
    if not (loaded / "__init__.py").read_text(encoding="utf-8").startswith(STUDENT_COPY_HEADER):
        problems.append(f"{loaded} is not a student copy (its files do not start with {STUDENT_COPY_HEADER!r}): "
                        "it is a complete library, whose exercises are already written, so its checks say nothing "
                        "about your work")
    return problems


#: The files of the library that hold the exercises, the ones students write (named by the report's last line).
EXERCISE_FILES = ("labcode/transforms.py", "labcode/unet.py", "labcode/stats.py")


def format_report(outcomes: Sequence[Outcome], problems: Sequence[str] = ()) -> str:
    """The copy's problems (if any), one line per check, a summary line, then the files the exercises are in."""
    lines = [f"Checking the exercises of {Path(labcode.__file__).resolve().parent}", ""]
    lines += [f"WARNING: {problem}" for problem in problems] + ([""] if problems else [])
    for outcome in outcomes:
        label = f"[{outcome.status.upper()}]"
        line = f"{label:<8} {outcome.check.notebook}: {outcome.check.title}"
        if outcome.message:
            line += f"\n         {outcome.message}"
        lines.append(line)
    passed = sum(outcome.status == "pass" for outcome in outcomes)
    lines += ["", f"{passed}/{len(outcomes)} checks pass."]
    if passed < len(outcomes):
        lines.append("The notebooks' test cells grade these exercises (with more, hidden, tests).")
    lines.append(f"Your exercises are in {', '.join(EXERCISE_FILES[:-1])} and {EXERCISE_FILES[-1]}.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labcode.check",
                                     description="Check the library exercises of the lab (run it from the folder "
                                                 "holding the notebooks and your labcode/).")
    parser.add_argument("--notebook", default=None, help="only the exercises of this notebook, e.g. 03_unet or 03")
    args = parser.parse_args(argv)
    outcomes = run_checks(args.notebook)
    if not outcomes:
        print(f"no exercise for notebook {args.notebook!r}; notebooks: "
              f"{', '.join(sorted({c.notebook for c in CHECKS}))}", file=sys.stderr)
        return 2
    problems = copy_problems()
    print(format_report(outcomes, problems))
    if problems:
        return 3
    return 0 if all(outcome.status == "pass" for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
