"""The trusted judge: each autograded test's verdict, decided from the evidence a probe sent, outside student code.

Runs in the grader's process (the instructor's environment), never in the sandbox, and imports no code of the
submission: the evidence is JSON (numbers, strings, lists) with arrays as ``.npy`` bytes read with
``allow_pickle=False``. For every module a test judges, the probe sent its description (layer kinds, hyper-parameters)
and its weights; the judge **rebuilds** it from ``torch.nn`` layers and reference containers written here (the course's
definition of each block's forward), loads the weights, runs the tests' inputs (drawn here with the probe's seeds)
and compares with the outputs the submission reported. A description that lies, or outputs that do not come from the
described layers, fail.

Each judge returns a :class:`Verdict`; a failing verdict carries the hint the student sees in the feedback. The
hints say what is wrong, never the expected code. The tests accept every correct reading of their question
(biases or not, any torch.nn spelling of the layers, shapes as tuples or lists, a share normalised or not).

Public names: :data:`JUDGES`, :func:`judge`, :class:`Verdict`, :class:`Context`, :func:`decode`.
"""

from __future__ import annotations

import base64
import io
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labcode.classes import CLASSES, NUM_CLASSES, REAL_CLASS_FREQUENCIES

#: Largest array the judge decodes (elements): evidence is small by construction.
MAX_ELEMENTS = 20_000_000


@dataclass(frozen=True)
class Verdict:
    """A test's outcome: ``points`` between 0 and the cell's points (``None``: all of them when passed)."""

    passed: bool
    hint: str = ""
    points: float | None = None
    scored: bool = True


@dataclass(frozen=True)
class Context:
    """What the judge knows that the submission does not hold: the data set the notebooks read."""

    datadir: Path | None = None
    settings: dict = field(default_factory=dict)


class Fail(Exception):
    """A failed check; its message is the hint."""


def expect(condition: bool, hint: str) -> None:
    if not condition:
        raise Fail(hint)


# --------------------------------------------------------------------------------------------------------------------
# Decoding evidence (safe: JSON and .npy without pickle)
# --------------------------------------------------------------------------------------------------------------------

class Opaque:
    """A value the probe could only describe (an object of some other type)."""

    def __init__(self, type_name: str, text: str) -> None:
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return self.text


class Tensor(np.ndarray):
    """An array that was a torch tensor on the submission's side (its dtype name kept)."""

    torch_dtype: str = ""
    requires_grad: bool = False


def _array(encoded: str) -> np.ndarray:
    raw = base64.b64decode(encoded, validate=True)
    value = np.load(io.BytesIO(raw), allow_pickle=False)
    if value.size > MAX_ELEMENTS:
        raise Fail(f"an array of {value.size} elements is larger than any test needs")
    return value


def decode(value):
    """Evidence JSON back to Python values and arrays."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        array = _array(value["__array__"])
        if "tensor" in value:
            array = array.view(Tensor)
            array.torch_dtype, array.requires_grad = str(value["tensor"]), bool(value.get("requires_grad"))
        return array
    if "__float__" in value:
        return float(value["__float__"])
    if "__dtype__" in value:
        return str(value["__dtype__"])
    if "__seq__" in value:
        return [decode(v) for v in value["items"]]
    if "__dict__" in value:
        return {_key(decode(k)): decode(v) for k, v in value["__dict__"]}
    if "__repr__" in value:
        return Opaque(str(value.get("type", "")), str(value["__repr__"]))
    return {k: decode(v) for k, v in value.items()}


def _key(key):
    return tuple(key) if isinstance(key, list) else key


def returned(item: dict, what: str):
    """The value a call returned, or fail with the student's error."""
    expect(isinstance(item, dict), f"{what}: no evidence")
    if "error" in item:
        raise Fail(f"{what} raised {item['error']}")
    expect("value" in item, f"{what}: no value")
    return item["value"]


def shape_of(value) -> tuple | None:
    if isinstance(value, np.ndarray):
        return tuple(value.shape)
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


# --------------------------------------------------------------------------------------------------------------------
# Rebuilding described modules with the course's own code
# --------------------------------------------------------------------------------------------------------------------

def _pair(value):
    return tuple(value) if isinstance(value, list) else value


LAYERS: dict[str, Callable[[dict], nn.Module]] = {
    "Conv2d": lambda h: nn.Conv2d(h["in_channels"], h["out_channels"], _pair(h["kernel_size"]), _pair(h["stride"]),
                                  _pair(h["padding"]) if not isinstance(h["padding"], str) else h["padding"],
                                  _pair(h["dilation"]), h["groups"], bias=bool(h["bias"]),
                                  padding_mode=h.get("padding_mode", "zeros")),
    "ConvTranspose2d": lambda h: nn.ConvTranspose2d(h["in_channels"], h["out_channels"], _pair(h["kernel_size"]),
                                                    _pair(h["stride"]), _pair(h["padding"]),
                                                    _pair(h["output_padding"]), h["groups"], bool(h["bias"]),
                                                    _pair(h["dilation"])),
    "BatchNorm2d": lambda h: nn.BatchNorm2d(h["num_features"], h["eps"], h["momentum"], h["affine"],
                                            h["track_running_stats"]),
    "ReLU": lambda h: nn.ReLU(), "Identity": lambda h: nn.Identity(), "Sigmoid": lambda h: nn.Sigmoid(),
    "Tanh": lambda h: nn.Tanh(), "SiLU": lambda h: nn.SiLU(), "GELU": lambda h: nn.GELU(h.get("approximate", "none")),
    "LeakyReLU": lambda h: nn.LeakyReLU(h["negative_slope"]),
    "MaxPool2d": lambda h: nn.MaxPool2d(_pair(h["kernel_size"]), _pair(h["stride"]), _pair(h["padding"]),
                                        _pair(h["dilation"]), ceil_mode=bool(h["ceil_mode"])),
    "AvgPool2d": lambda h: nn.AvgPool2d(_pair(h["kernel_size"]), _pair(h["stride"]), _pair(h["padding"]),
                                        bool(h["ceil_mode"]), bool(h["count_include_pad"])),
    "Upsample": lambda h: nn.Upsample(_pair(h["size"]), _pair(h["scale_factor"]), h["mode"], h["align_corners"]),
    "UpsamplingNearest2d": lambda h: nn.UpsamplingNearest2d(_pair(h["size"]), _pair(h["scale_factor"])),
    "UpsamplingBilinear2d": lambda h: nn.UpsamplingBilinear2d(_pair(h["size"]), _pair(h["scale_factor"])),
    "Dropout": lambda h: nn.Dropout(h["p"]), "Dropout2d": lambda h: nn.Dropout2d(h["p"]),
}


class RefConvBlock(nn.Module):
    """The course's UNetConvBlock forward over the described block1, block2, block3."""

    def forward(self, x):
        features = self.block2(self.block1(x))
        return self.block3(features), features


class RefEncoder(nn.Module):
    def forward(self, x):
        features = []
        for block in self.blocks:
            x, f = block(x)
            features.append(f)
        return self.bottleneck(x), features


class RefUpBlock(nn.Module):
    def forward(self, inputs, encoder_features):
        return self.convblock(torch.cat([self.upconv(inputs), encoder_features], dim=1))


class RefDecoder(nn.Module):
    def forward(self, inputs, encoder_features):
        x = self.first_block(inputs)
        for block, features in zip(self.up_blocks, reversed(encoder_features), strict=True):
            x = block(x, features)
        return self.classifier(x)


class RefUNet(nn.Module):
    size_multiple = 1

    def forward(self, x):
        h, w = x.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        top, left = pad_h // 2, pad_w // 2
        x = F.pad(x, (left, pad_w - left, top, pad_h - top))
        outputs, features = self.encoder(x)
        return self.decoder(outputs, features).narrow(2, top, h).narrow(3, left, w)


class StandInConvBlock(nn.Module):
    def forward(self, x):
        features = self.conv(x)
        return F.max_pool2d(features, 2), features


class StandInUpBlock(nn.Module):
    def forward(self, inputs, encoder_features):
        return self.conv(torch.cat([F.interpolate(inputs, scale_factor=2.0), encoder_features], dim=1))


#: Containers whose forward is the course's (children rebuilt from the description, attributes by name).
CONTAINERS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "labcode.unet.UNetConvBlock": (RefConvBlock, ("block1", "block2", "block3")),
    "labcode.unet.UNetEncoder": (RefEncoder, ("blocks", "bottleneck")),
    "labcode.unet.UNetUpConvBlock": (RefUpBlock, ("upconv", "convblock")),
    "labcode.unet.UNetDecoder": (RefDecoder, ("up_blocks", "first_block", "classifier")),
    "labcode.unet.UNet": (RefUNet, ("encoder", "decoder")),
    "StandInConvBlock": (StandInConvBlock, ("conv",)),
    "StandInUpBlock": (StandInUpBlock, ("conv",)),
}


def rebuild(description: dict, where: str = "the module") -> nn.Module:
    """A module made of torch.nn layers and the reference containers, as ``description`` says."""
    expect(isinstance(description, dict), f"{where}: no description")
    kind = description.get("kind")
    hyper = description.get("hyper") or {}
    children = [(name, rebuild(child, f"{where}.{name}")) for name, child in description.get("children", [])]
    if kind == "Sequential":
        module = nn.Sequential(OrderedDict(children))
    elif kind == "ModuleList":
        module = nn.ModuleList([child for _, child in children])
    elif kind == "ModuleDict":
        module = nn.ModuleDict(OrderedDict(children))
    elif kind in LAYERS:
        expect(not children, f"{where} ({kind}) should hold no other layer")
        try:
            module = LAYERS[kind](hyper)
        except (KeyError, TypeError, ValueError) as error:
            raise Fail(f"{where} ({kind}) has settings the course cannot rebuild: {error}") from error
    elif kind in CONTAINERS:
        cls, names = CONTAINERS[kind]
        module = cls()
        have = dict(children)
        for name in names:
            expect(name in have, f"{where} should have an attribute {name!r}")
        for name, child in children:
            setattr(module, name, child)
        if "size_multiple" in hyper:
            module.size_multiple = int(hyper["size_multiple"])
    else:
        raise Fail(f"{where} is a {str(kind).removeprefix('custom:')}, which the tests cannot judge: build it from "
                   "the torch.nn layers the question names")
    module.train(bool(description.get("training", False)))
    return module


def rebuilt(evidence: dict, what: str) -> nn.Module:
    """The described module with the submitted weights loaded; fails when the two disagree."""
    if "error" in evidence:
        raise Fail(f"{what} raised {evidence['error']}")
    expect("description" in evidence and "state" in evidence, f"{what}: no description of the module")
    module = rebuild(evidence["description"], what)
    expect(isinstance(evidence["state"], dict) and all(isinstance(v, np.ndarray) for v in evidence["state"].values()),
           f"{what}: its weights are not arrays")
    state = {name: torch.from_numpy(np.array(value)) for name, value in evidence["state"].items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise Fail(f"{what}: its weights do not match its layers") from error
    return module


def tensor(seed: int, *shape: int) -> torch.Tensor:
    """The probe's inputs: numpy PCG64 standard normal values (see tools/grading/probe.py)."""
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype("float32"))


def close(got, expected: torch.Tensor, what: str, atol: float = 1e-4) -> None:
    expect(isinstance(got, np.ndarray), f"{what} should be a tensor, got {type(got).__name__}")
    expect(tuple(got.shape) == tuple(expected.shape),
           f"{what} has shape {tuple(got.shape)} where {tuple(expected.shape)} was expected")
    expect(bool(np.allclose(np.asarray(got, dtype=np.float64), expected.detach().double().numpy(), atol=atol,
                            rtol=1e-4)), f"{what} has the right shape but wrong values")


def run(module: nn.Module, *args):
    with torch.no_grad():
        return module(*args)


def layer_kinds(description: dict) -> list[str]:
    return [child["kind"] for _, child in description.get("children", [])]


def child(description: dict, name: str, where: str) -> dict:
    for child_name, value in description.get("children", []):
        if child_name == name:
            return value
    raise Fail(f"{where} should have an attribute {name!r}")


def hyper(description: dict) -> dict:
    return description.get("hyper") or {}


def expect_conv(description: dict, where: str, cin: int, cout: int, kernel: int = 3) -> None:
    expect(description["kind"] == "Conv2d", f"{where} should be an nn.Conv2d, got {description['kind']}")
    h = hyper(description)
    expect(h["in_channels"] == cin, f"{where} should take {cin} channels, got {h['in_channels']}")
    expect(h["out_channels"] == cout, f"{where} should output {cout} channels, got {h['out_channels']}")
    expect(tuple(h["kernel_size"]) == (kernel, kernel), f"{where} should be a {kernel}x{kernel} convolution")
    if kernel == 3:
        expect(tuple(h["padding"]) == (1, 1), f"{where} should use padding 1, so that the size is kept")
    expect(tuple(h["stride"]) == (1, 1) and tuple(h["dilation"]) == (1, 1) and h["groups"] == 1,
           f"{where} should be a plain convolution (stride 1, no dilation, no groups)")


def expect_conv_relu_norm(description: dict, where: str, cin: int, cout: int) -> None:
    kinds = layer_kinds(description)
    expect(description["kind"] == "Sequential" and kinds == ["Conv2d", "ReLU", "BatchNorm2d"],
           f"{where} should be an nn.Sequential of Conv2d, ReLU, BatchNorm2d in this order, got {kinds}")
    expect_conv(description["children"][0][1], f"{where}'s convolution", cin, cout)
    expect(hyper(description["children"][2][1])["num_features"] == cout,
           f"{where}'s BatchNorm should have {cout} features")


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------------------------
# The judges, in the order of the notebooks
# --------------------------------------------------------------------------------------------------------------------

def _describe_expected(image: np.ndarray, mask: np.ndarray) -> dict:
    present = sorted(set(mask.ravel().tolist()))
    return dict(image_shape=tuple(image.shape), image_dtype=image.dtype.name, mask_shape=tuple(mask.shape),
                mask_dtype=mask.dtype.name, classes=[CLASSES[k] for k in present])


def _compare_description(got, expected: dict, what: str) -> None:
    expect(isinstance(got, dict), f"describe_sample should return a dict, got {type(got).__name__} for {what}")
    for key in ("image_shape", "mask_shape"):
        expect(key in got, f"the dict should have a key {key!r}")
        expect(shape_of(got[key]) == expected[key], f"{key} of {what} should be {expected[key]}, got {got[key]!r}")
    for key in ("image_dtype", "mask_dtype"):
        expect(key in got, f"the dict should have a key {key!r}")
        value = str(got[key]).removeprefix("torch.") if isinstance(got[key], str) else repr(got[key])
        expect(value == expected[key], f"{key} of {what} should be the NumPy name {expected[key]!r}, got {got[key]!r}")
    expect("classes" in got, "the dict should have a key 'classes'")
    expect(isinstance(got["classes"], list) and list(got["classes"]) == expected["classes"],
           f"the classes of {what} are wrong or not in index order: {got['classes']!r}")


def judge_describe_sample(ev: dict, context: Context) -> None:
    toy = _describe_expected(np.zeros((4, 6, 3), np.uint8), np.array([[0, 12, 12, 9, 9, 9]] * 4, np.int64))
    _compare_description(returned(ev.get("toy"), "describe_sample"), toy, "the 4x6 example")
    tensors = {"image_shape": (3, 8, 5), "image_dtype": "float32", "mask_shape": (8, 5), "mask_dtype": "int64",
               "classes": ["window"]}
    _compare_description(returned(ev.get("tensors"), "describe_sample on tensors"), tensors, "a pair of tensors")
    odd = _describe_expected(np.ones((2, 3), np.float64), np.array([[5, 1, 1]], np.uint8))
    _compare_description(returned(ev.get("odd_types"), "describe_sample"), odd,
                         "a float64 image with a uint8 mask (report the types the arrays really have)")
    from labcode.data import StanfordDataset

    dataset = StanfordDataset(context.datadir, areas=["1"])
    for index in (0, len(dataset) - 1):
        image, mask = dataset[index]
        _compare_description(returned(ev.get(f"area1_{index}"), "describe_sample"), _describe_expected(image, mask),
                             f"item {index} of area 1")


def _transformed(item: dict, what: str) -> tuple[np.ndarray, np.ndarray]:
    out = returned(item, what)
    expect(isinstance(out, dict) and "image" in out and "mask" in out,
           f"{what} should return albumentations' dict with 'image' and 'mask'")
    image, mask = out["image"], out["mask"]
    expect(isinstance(image, Tensor) and image.torch_dtype == "torch.float32",
           f"{what}: the image should come out as a float32 tensor (end with ToTensorV2 after Normalize)")
    expect(isinstance(mask, np.ndarray), f"{what}: the mask should come out as an array or a tensor")
    return np.asarray(image), np.asarray(mask)


def judge_augmentation(ev: dict, context: Context) -> None:
    from labcode.transforms import MEAN, STD

    if "error" in ev:
        raise Fail(f"train_transforms(64) raised {ev['error']}")
    expect(str(ev.get("type", "")).endswith("Compose"), "train_transforms should return an albumentations Compose")
    rng = np.random.default_rng(0)
    for shape in ((90, 120), (40, 50)):
        rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
        labels = rng.integers(0, 14, size=shape).astype(np.uint8)
        image, mask = _transformed(ev.get(f"random_{shape[0]}x{shape[1]}"), f"train_transforms(64) on {shape}")
        expect(image.shape == (3, 64, 64) and mask.shape == (64, 64),
               f"train_transforms(64) should give (3, 64, 64) images and (64, 64) masks for a {shape} input, got "
               f"{image.shape} and {mask.shape}")
        invented = set(np.unique(mask).tolist()) - set(np.unique(labels).tolist())
        expect(not invented, "the mask holds labels absent from the input: resample masks with nearest neighbour")
    masks = [_transformed(item, "train_transforms(64)")[1] for item in ev.get("repeats", [])]
    expect(len(masks) == 6 and any(not np.array_equal(masks[0], m) for m in masks[1:]),
           "six calls on the same image gave the same mask: add a random geometric transform")
    agree = tried = 0
    for item in ev.get("stripes", []):
        image, mask = _transformed(item, "train_transforms(64) on a striped image")
        gray = (image * np.array(STD)[:, None, None] + np.array(MEAN)[:, None, None]).mean(axis=0)
        expect(not set(np.unique(mask).tolist()) - {0, 9, 12},
               "a mask of two labels came out with other labels: resample masks with nearest neighbour")
        if (mask == 12).any() and (mask == 9).any():
            tried += 1
            agree += int(gray[mask == 12].mean() > gray[mask == 9].mean())
    expect(tried >= 5, f"only {tried} of 20 augmented masks kept both labels of a striped image: crops too small")
    expect(agree >= 0.9 * tried, "image and mask disagree after augmentation: apply the geometric transforms to both")
    for size, shape in ((48, (40, 50)), (32, (200, 150)), (40, (40, 40))):
        image, mask = _transformed(ev.get(f"sized_{size}"), f"train_transforms({size})")
        expect(image.shape == (3, size, size) and mask.shape == (size, size),
               f"train_transforms({size}) on a {shape} image should give {size}x{size} outputs, got {image.shape} and "
               f"{mask.shape}")
    grays = [returned(item, "train_transforms(32) on a gray photo") for item in ev.get("gray", [])]
    expect(len(grays) == 20 and all(isinstance(g, np.ndarray) and g.shape == (3, 32, 32) for g in grays),
           "train_transforms(32) should give (3, 32, 32) images")
    means = np.mean([np.asarray(g).mean(axis=(1, 2)) for g in grays], axis=0)
    expected = (128 / 255 - np.array(MEAN)) / np.array(STD)
    expect(bool(np.all(np.abs(means - expected) < 0.6)),
           "a mid-gray photo comes out with the wrong channel means: is the output normalised with MEAN and STD?")
    pair = returned(ev.get("paired"), "the data set with PairedTransform(train_transforms(48))")
    expect(isinstance(pair, list) and len(pair) == 2, "a data set item should be an (image, mask) pair")
    px, py = pair
    expect(isinstance(px, Tensor) and px.torch_dtype == "torch.float32" and px.shape == (3, 48, 48),
           "through the data set, images should be float32 tensors of shape (3, 48, 48)")
    expect(isinstance(py, Tensor) and py.torch_dtype == "torch.int64" and py.shape == (48, 48),
           "through the data set, masks should be int64 tensors of shape (48, 48)")


def _conv_block_layers(ev: dict, cin: int, cout: int, what: str) -> nn.Module:
    module = rebuilt(ev, what)
    description = ev["description"]
    for name, channels in (("block1", cin), ("block2", cout)):
        expect_conv_relu_norm(child(description, name, what), f"{what}'s {name}", channels, cout)
    block3 = child(description, "block3", what)
    expect(block3["kind"] == "MaxPool2d", f"{what}'s block3 should be an nn.MaxPool2d, got {block3['kind']}")
    expect(tuple(run(module.block3, torch.zeros(1, 1, 10, 6)).shape) == (1, 1, 5, 3),
           f"{what}'s block3 should halve height and width")
    return module


def judge_conv_block_layers(ev: dict, context: Context) -> None:
    for key, (cin, cout) in {"visible": (3, 16), "hidden": (5, 12)}.items():
        what = f"UNetConvBlock({cin}, {cout})"
        module = _conv_block_layers(ev.get(key, {}), cin, cout, what)
        for i, name in enumerate(("block1", "block2", "block3")):
            x = tensor(10 + i, 1, cin if name == "block1" else cout, 10, 6)
            close(returned(ev[key].get("parts", {}).get(name), f"{what}.{name}"), run(getattr(module, name), x),
                  f"{what}.{name}'s output (its layers are not those it describes)")
        norms = (module.block1[2], module.block2[2])
        convs = (module.block1[0], module.block2[0])
        expected = cin * cout * 9 + cout * cout * 9 + sum(c.bias.numel() for c in convs if c.bias is not None) \
            + sum(p.numel() for n in norms for p in n.parameters())
        expect(parameters(module) == expected, f"{what} holds layers with weights the question does not ask for")


def _forward_pair(item: dict, what: str):
    out = returned(item, what)
    expect(isinstance(out, list) and len(out) == 2, f"{what} should return a pair (outputs, features)")
    return out


def judge_conv_block_forward(ev: dict, context: Context) -> None:
    for key, (cin, cout, shape) in {"visible": (3, 16, (2, 3, 32, 24)), "hidden": (4, 6, (3, 4, 20, 28))}.items():
        what = f"UNetConvBlock({cin}, {cout})"
        module = rebuilt(ev.get(key, {}), what)
        outputs, features = _forward_pair(ev[key].get("output"), f"{what}'s forward")
        x = tensor(20, *shape)
        expect(hasattr(module, "block1") and hasattr(module, "block2"), f"{what} needs block1 and block2")
        reference = run(nn.Sequential(module.block1, module.block2), x)
        close(features, reference, f"{what}'s features (block2 after block1, before pooling)")
        close(outputs, F.max_pool2d(reference, 2), f"{what}'s outputs (the features pooled by block3)")


def judge_encoder(ev: dict, context: Context) -> None:
    for key, (cin, blocks, base, shape) in {"visible": (3, 3, 8, (2, 3, 48, 40)),
                                            "hidden": (1, 2, 4, (1, 1, 16, 12))}.items():
        what = f"UNetEncoder({cin}, num_blocks={blocks}, base_chan={base})"
        evidence = ev.get(key, {})
        module = rebuilt(evidence, what)
        last = base * 2 ** (blocks - 1)
        expect_conv_relu_norm(child(evidence["description"], "bottleneck", what), f"{what}'s bottleneck", last,
                              2 * last)
        expect(evidence.get("cout") == 2 * last, f"{what}.cout should be {2 * last}")
        outputs, features = _forward_pair(evidence.get("output"), f"{what}'s forward")
        expected_outputs, expected_features = run(module, tensor(30, *shape))
        close(outputs, expected_outputs, f"{what}'s output (the bottleneck of the last pooled block)")
        for got, expected in zip(features, expected_features, strict=False):
            close(got, expected, f"{what}'s features")


def judge_up_block_layers(ev: dict, context: Context) -> None:
    for key, (cin, cout) in {"visible": (32, 16), "hidden": (12, 6)}.items():
        what = f"UNetUpConvBlock({cin}, {cout})"
        evidence = ev.get(key, {})
        module = rebuilt(evidence, what)
        upconv, convblock = child(evidence["description"], "upconv", what), child(evidence["description"],
                                                                                  "convblock", what)
        kinds = layer_kinds(upconv)
        expect(upconv["kind"] == "Sequential" and len(kinds) == 4 and kinds[1:] == ["Conv2d", "ReLU", "BatchNorm2d"]
               and kinds[0] in ("Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"),
               f"{what}'s upconv should be an upsampling, then Conv2d, ReLU, BatchNorm2d; got {kinds}")
        expect(tuple(run(module.upconv[0], torch.zeros(1, 1, 3, 5)).shape) == (1, 1, 6, 10),
               f"{what}'s upconv should upsample by 2")
        expect_conv(upconv["children"][1][1], f"{what}'s upconv convolution", cin, cout)
        expect(layer_kinds(convblock) == ["Conv2d", "ReLU", "BatchNorm2d"] * 2,
               f"{what}'s convblock should be (Conv2d, ReLU, BatchNorm2d) twice, got {layer_kinds(convblock)}")
        expect_conv(convblock["children"][0][1], f"{what}'s convblock first convolution", cin, cout)
        expect_conv(convblock["children"][3][1], f"{what}'s convblock second convolution", cout, cout)
        convs = (module.upconv[1], module.convblock[0], module.convblock[3])
        norms = (module.upconv[3], module.convblock[2], module.convblock[5])
        expected = (cin * cout * 2 + cout * cout) * 9 + sum(c.bias.numel() for c in convs if c.bias is not None) \
            + sum(p.numel() for n in norms for p in n.parameters())
        expect(parameters(module) == expected, f"{what} holds layers with weights the question does not ask for")
        parts = evidence.get("parts", {})
        close(returned(parts.get("upconv"), f"{what}.upconv"), run(module.upconv, tensor(40, 1, cin, 5, 4)),
              f"{what}.upconv's output (its layers are not those it describes)")
        close(returned(parts.get("convblock"), f"{what}.convblock"), run(module.convblock, tensor(41, 1, cin, 10, 8)),
              f"{what}.convblock's output (its layers are not those it describes)")


def judge_up_block_forward(ev: dict, context: Context) -> None:
    for key, (cin, cout, below, skipped) in {"visible": (32, 16, (2, 32, 8, 6), (2, 16, 16, 12)),
                                             "hidden": (8, 4, (3, 8, 5, 7), (3, 4, 10, 14))}.items():
        what = f"UNetUpConvBlock({cin}, {cout})"
        module = rebuilt(ev.get(key, {}), what)
        expect(hasattr(module, "upconv") and hasattr(module, "convblock"), f"{what} needs upconv and convblock")
        got = returned(ev[key].get("output"), f"{what}'s forward")
        close(got, run(module, tensor(50, *below), tensor(51, *skipped)),
              f"{what}'s forward (convblock applied to upconv's output concatenated with the encoder features, "
              "in that order)")


def judge_decoder(ev: dict, context: Context) -> None:
    cases = {"visible": (64, 3, 14, (2, 64, 6, 5), [(2, 8, 48, 40), (2, 16, 24, 20), (2, 32, 12, 10)]),
             "hidden": (32, 2, 5, (1, 32, 3, 4), [(1, 8, 12, 16), (1, 16, 6, 8)])}
    for key, (cin, blocks, classes, below, features) in cases.items():
        what = f"UNetDecoder({cin}, num_blocks={blocks}, num_classes={classes})"
        evidence = ev.get(key, {})
        module = rebuilt(evidence, what)
        description = evidence["description"]
        expect_conv_relu_norm(child(description, "first_block", what), f"{what}'s first_block", cin, cin)
        expect_conv(child(description, "classifier", what), f"{what}'s classifier", cin // 2**blocks, classes,
                    kernel=1)
        skips = [tensor(61 + i, *shape) for i, shape in enumerate(features)]
        close(returned(evidence.get("output"), f"{what}'s forward"), run(module, tensor(60, *below), skips),
              f"{what}'s logits")


def judge_dummy_forward(ev: dict, context: Context) -> None:
    if "error" in ev:
        raise Fail(ev["error"])
    expect(ev.get("type") == "labcode.unet.UNet", f"model should be a labcode.unet.UNet, got {ev.get('type')}")
    expect(ev.get("blocks") == 3, f"model should have 3 encoder blocks, got {ev.get('blocks')}")
    dummy = returned(ev.get("dummy_output"), "dummy_output")
    expect(isinstance(dummy, Tensor) and dummy.shape == (2, NUM_CLASSES, 96, 128),
           "dummy_output should hold one score per class for every pixel of both 96x128 images")
    module = rebuilt(ev, "model")  # its description and weights agree
    odd = returned(ev.get("odd"), "model on a 70x45 image")
    expect(isinstance(odd, Tensor) and odd.shape == (1, NUM_CLASSES, 70, 45),
           "the UNet should give one score per class and pixel for an image of any size (here 70x45)")
    # Its own blocks are judged by the tests of their questions: only the shape is this question's.
    expect(tuple(run(module, tensor(70, 1, 3, 70, 45)).shape) == odd.shape,
           "the model's output does not come from the layers it describes")


def _within(value, expected: float, hint: str) -> None:
    """``value`` agrees with ``expected`` to the 4 decimals questions 4.1 and 4.2 ask for, as ``np.isclose(value,
    expected, atol=5e-5)`` says: the check of notebook 4 prints the same verdict."""
    expect(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
           f"{hint}: a number is expected, got {value!r}")
    expect(bool(np.isclose(value, expected, atol=FOUR_DECIMALS)), hint)


#: Questions 4.1 and 4.2 state their answers to 4 decimals (so the share read as the table gives it, 0.3367, or
#: normalised by the shares' sum, 0.99990, both agree).
FOUR_DECIMALS = 5e-5


def _wall_share() -> float:
    return float(REAL_CLASS_FREQUENCIES[CLASSES.index("wall")] / REAL_CLASS_FREQUENCIES.sum())


def judge_wall_accuracy(ev: dict, context: Context) -> None:
    value = returned(ev, "wall_accuracy")
    _within(value, _wall_share(), f"{value!r} is not the share of pixels the always-wall model gets right")


def judge_wall_macro_f1(ev: dict, context: Context) -> None:
    value = returned(ev, "wall_macro_f1")
    f = _wall_share()
    _within(value, 2 * f / (1 + f) / NUM_CLASSES,
            f"{value!r} is not the macro F1 of the always-wall model: count TP, FP and FN of each class")


def _inverse(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    raw = np.zeros_like(counts)
    raw[present] = counts.sum() / counts[present]
    return raw * present.sum() / raw.sum()


def judge_class_weights(ev: dict, context: Context) -> None:
    weights = returned(ev.get("visible"), "inverse_frequency_weights([0, 10, 30, 60])")
    expect(isinstance(weights, np.ndarray) and weights.shape == (4,), "one weight per class expected")
    expect(weights.dtype == np.float32, f"the weights should be float32, got {weights.dtype}")
    expect(not ev["visible"].get("warnings"), "computing the weights warns (a division by zero?): "
           + "; ".join(ev["visible"].get("warnings", [])))
    expect(weights[0] == 0, "a class without pixels should get weight 0")
    expected = _inverse(np.array([0, 10, 30, 60]))
    expect(bool(np.allclose(weights, expected, rtol=1e-5)),
           "the weights should be proportional to 1 / frequency, with mean 1 over the classes present")
    expect(bool(np.allclose(returned(ev.get("visible_strategy"), "class_weights(counts, 'inverse')"), expected,
                            rtol=1e-5)), "class_weights(counts, 'inverse') disagrees with inverse_frequency_weights")
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 10_000, size=14).astype(np.int64)
    counts[[2, 7]] = 0
    expect(bool(np.allclose(returned(ev.get("hidden"), "inverse_frequency_weights"), _inverse(counts), rtol=1e-5)),
           "wrong weights for 14 classes, two of them without pixels")
    expect(bool(np.allclose(returned(ev.get("hidden_scaled"), "class_weights"), _inverse(counts), rtol=1e-5)),
           "the weights should depend on the class shares only, not on the scale of the counts")


def _weighted_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    per_pixel = -torch.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
    return (weight[target] * per_pixel).sum() / weight[target].sum()


def judge_weighted_cross_entropy(ev: dict, context: Context) -> None:
    if "error" in ev:
        raise Fail(ev["error"])
    logits = tensor(80, 2, 4, 5, 6)
    target = torch.from_numpy(np.random.default_rng(81).integers(0, 4, size=(2, 5, 6)))
    counts = np.array([50, 20, 5, 25])
    plain = returned(ev.get("uniform"), "weighted_cross_entropy(..., 'uniform')")
    expect(isinstance(plain, Tensor) and plain.shape == (), "the loss should be a scalar tensor")
    expect(abs(float(plain) - float(F.cross_entropy(logits, target))) < 1e-5,
           "with the uniform strategy the loss should be the plain cross-entropy")
    freq = counts / counts.sum()
    median = _weighted_ce(logits, target, torch.tensor(np.median(freq) / freq, dtype=torch.float32))
    expect(abs(float(returned(ev.get("median"), "weighted_cross_entropy(..., 'median')")) - float(median)) < 1e-5,
           "wrong loss with the median-frequency weights: a weighted mean over the pixels")
    logits = torch.from_numpy(np.random.default_rng(82).standard_normal((3, 14, 4, 4))).requires_grad_(True)
    target = torch.from_numpy(np.random.default_rng(83).integers(0, 14, size=(3, 4, 4)))
    counts = np.arange(1, 15) ** 2
    expected = _weighted_ce(logits, target, torch.tensor(1 / np.sqrt(counts / counts.sum()), dtype=torch.float64))
    got = returned(ev.get("inverse_sqrt"), "weighted_cross_entropy on float64 logits")
    expect(isinstance(got, Tensor) and got.torch_dtype == "torch.float64",
           "with float64 logits the loss should be float64: give the weights the logits' type")
    expect(abs(float(got) - float(expected.detach())) < 1e-9,
           "wrong loss with float64 logits and the inverse-sqrt strategy")
    expected.backward()
    gradient = returned(ev.get("gradient"), "the loss's gradient")
    close(gradient, logits.grad, "the gradient of the loss with respect to the logits", atol=1e-9)


def judge_training_config(ev: dict, context: Context) -> None:
    if "error" in ev:
        raise Fail(ev["error"])
    expect(str(ev.get("type", "")).endswith("TrainConfig"), f"config should be a TrainConfig, got {ev.get('type')}")
    fields = ev.get("fields") or {}
    settings = returned(ev.get("settings"), "SETTINGS")
    expect(list(fields.get("areas_train", [])) == ["3"], "train on area 3 only")
    expect(fields.get("model") == "unet", "the model should be 'unet'")
    expect(fields.get("loss") == "ce", "the loss should be the cross-entropy 'ce'")
    expect(fields.get("class_weights") == "inverse", "weight the classes with your inverse-frequency weights")
    expect(isinstance(settings, dict), "SETTINGS should be the dict of the cell above")
    expect(fields.get("img_size") == settings.get("img_size") and fields.get("epochs") == settings.get("epochs"),
           "keep the image size and the epochs of SETTINGS")
    expect(fields.get("model_options") == settings.get("model_options") and fields.get("small") == settings.get(
        "small"), "keep the model options and the small setting of SETTINGS")
    expect(not fields.get("areas_valid"), "leave areas_valid empty: validation images come from the training area")


def judge_short_training_run(ev: dict, context: Context) -> None:
    if "error" in ev:
        raise Fail(ev["error"])
    result = ev.get("result") or {}
    epochs = ev.get("epochs")
    losses = ev.get("train_losses") or []
    expect(result.get("interrupted") is False, "the run was interrupted")
    expect(result.get("epochs_completed") == epochs and len(losses) == epochs, f"expected {epochs} epochs")
    expect(all(isinstance(v, float) and math.isfinite(v) for v in losses), "the training loss is not finite")
    expect(ev.get("best_checkpoint_exists") is True, "no best.pt was written")
    if "trained" in ev:
        raise Fail(f"the best checkpoint does not load: {ev['trained'].get('error')}")
    expect(ev.get("trained_module") == "labcode.unet", "the run did not train a labcode.unet model")
    expect(str(ev.get("trained_file", "")).startswith(str(ev.get("local_library", "?")) + "/"),
           "the run did not train the UNet of your labcode/ copy")
    score = result.get("best_macro_f1")
    expect(isinstance(score, float) and 0.0 <= score <= 1.0, "the best macro F1 is not a score")
    expect(ev.get("onnx_exists") is True, "the run did not export its best model to ONNX")
    parity = result.get("parity") or {}
    expect(isinstance(parity, dict) and parity and max(parity.values()) < 1e-3,
           "ONNX Runtime and PyTorch disagree on the exported model")


def judge_model_export(ev: dict, context: Context) -> Verdict:
    if not ev.get("exists"):
        return Verdict(False, "export your model to my_model.onnx next to this notebook (the cell above)")
    return Verdict(False, "my_model.onnx is scored on the hidden test set when the instructors grade the models; "
                   "without that score it earns no points", points=0.0, scored=False)


def judge_evaluate_areas(ev: dict, context: Context) -> None:
    from labcode.classes import AREAS
    from labcode.data import StanfordDataset

    model = ev.get("model")
    trained_on = ev.get("train_areas")
    expect(isinstance(trained_on, list) and trained_on and all(a in AREAS for a in trained_on),
           "TRAIN_AREAS should list the areas the model was trained on")
    for name, areas in (("train_scores", trained_on), ("test_scores", ["5a", "5b"])):
        scores = returned(ev.get(name), name)
        expect(isinstance(scores, dict) and "macro_f1" in scores, f"{name} should be the dict returned by "
               "evaluate_areas")
        expect(list(scores.get("areas", [])) == areas, f"{name} should cover areas {areas}")
        expected = len(StanfordDataset(context.datadir, areas=areas))
        expect(scores.get("images") == expected, f"{name}: {scores.get('images')} images scored, expected {expected}")
        expect(isinstance(scores["macro_f1"], float) and 0.0 <= scores["macro_f1"] <= 1.0,
               f"{name}: the macro F1 is not a score")
        expect(scores.get("model") == model, "evaluate the model MODEL, through the segmenter opened above")
        cm = np.asarray(scores.get("confusion"), dtype=float)
        expect(cm.shape == (NUM_CLASSES, NUM_CLASSES), f"{name} should hold its confusion matrix")
        tp = np.diag(cm)
        denominator = tp + 0.5 * (cm.sum(axis=0) - tp + cm.sum(axis=1) - tp)
        present = denominator > 0
        expect(abs(np.mean(tp[present] / denominator[present]) - scores["macro_f1"]) < 1e-6,
               f"{name}'s macro F1 does not match its confusion matrix: use what evaluate_areas returns")


def judge_segment_photo(ev: dict, context: Context) -> None:
    result = returned(ev.get("photo_result"), "photo_result")
    expect(isinstance(result, dict) and "mask" in result, "photo_result should be what segment_image_file returns")
    if "sizes" in ev:
        raise Fail(f"the photo or its mask cannot be opened: {ev['sizes'].get('error')}")
    size = ev.get("photo_size")
    expect(list(result.get("size", [])) == size, f"the photo is {size}, photo_result says {result.get('size')}")
    expect(ev.get("mask_size") == size, "the mask should have the photo's size")
    fractions = result.get("fractions")
    expect(isinstance(fractions, dict) and abs(sum(fractions.values()) - 1.0) < 1e-6,
           "the class shares of the photo should add up to 1: use what segment_image_file returns")


def judge_deeplab_forward(ev: dict, context: Context) -> None:
    from labcode.models import build_model, count_parameters

    if "error" in ev:
        raise Fail(ev["error"])
    expect(ev.get("type") == "labcode.deeplab.DeepLabV3Plus", "deeplab should be a DeepLabV3Plus")
    output = returned(ev.get("deeplab_output"), "deeplab_output")
    expect(isinstance(output, Tensor) and output.shape == (1, NUM_CLASSES, 70, 90),
           "deeplab_output should hold the logits of one 70x90 image")
    expect(ev.get("has_aspp") is True and ev.get("training") is False, "deeplab should be in eval mode")
    expected = count_parameters(build_model("deeplabv3plus", NUM_CLASSES, base_chan=8, aspp_chan=32, low_level_chan=8))
    expect(ev.get("parameters") == expected, "deeplab should be built with base_chan=8, aspp_chan=32, "
           "low_level_chan=8")


def judge_loss_zoo(ev: dict, context: Context) -> None:
    from labcode.losses import LOSSES, build_loss

    perfect, uniform = returned(ev.get("perfect"), "perfect_losses"), returned(ev.get("uniform"), "uniform_losses")
    target = returned(ev.get("target"), "target")
    for name, values in (("perfect_losses", perfect), ("uniform_losses", uniform)):
        expect(isinstance(values, dict) and set(values) == set(LOSSES), f"{name}: one entry per loss of LOSSES")
        expect(all(isinstance(v, float) for v in values.values()), f"{name}: the values should be Python floats")
    expect(isinstance(target, Tensor) and target.shape == (2, 16, 16), "target should be the (2, 16, 16) labels")
    labels = torch.from_numpy(np.asarray(target, dtype=np.int64))
    expect(bool(((labels >= 0) & (labels < NUM_CLASSES)).all()), "target should hold class indices")
    logits = {"perfect_losses": 20.0 * F.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float(),
              "uniform_losses": torch.zeros(2, NUM_CLASSES, 16, 16)}
    for name, values in (("perfect_losses", perfect), ("uniform_losses", uniform)):
        for loss in LOSSES:
            expected = float(build_loss(loss)(logits[name], labels))
            expect(abs(values[loss] - expected) <= 1e-4 + 1e-3 * abs(expected),
                   f"{name}[{loss!r}] is not the loss of that prediction")


JUDGES: dict[str, Callable[[dict, Context], Verdict | None]] = {
    "test_describe_sample": judge_describe_sample,
    "test_augmentation_pipeline": judge_augmentation,
    "test_unet_conv_block_layers": judge_conv_block_layers,
    "test_unet_conv_block_forward": judge_conv_block_forward,
    "test_unet_encoder": judge_encoder,
    "test_unet_up_block_layers": judge_up_block_layers,
    "test_unet_up_block_forward": judge_up_block_forward,
    "test_unet_decoder": judge_decoder,
    "test_unet_dummy_forward": judge_dummy_forward,
    "test_wall_accuracy": judge_wall_accuracy,
    "test_wall_macro_f1": judge_wall_macro_f1,
    "test_class_weights_inverse": judge_class_weights,
    "test_weighted_cross_entropy": judge_weighted_cross_entropy,
    "test_training_config": judge_training_config,
    "test_short_training_run": judge_short_training_run,
    "test_model_export": judge_model_export,
    "test_evaluate_areas": judge_evaluate_areas,
    "test_segment_photo": judge_segment_photo,
    "test_deeplab_forward": judge_deeplab_forward,
    "test_loss_zoo": judge_loss_zoo,
}


def judge(grade_id: str, evidence: dict | None, context: Context) -> Verdict:
    """The verdict of one test from its evidence (``None``: the probe sent nothing)."""
    if grade_id not in JUDGES:
        return Verdict(False, f"the grader has no judge for {grade_id}")
    if evidence is None:
        return Verdict(False, "the grader received no evidence from this test (the notebook stopped before it, or "
                       "its output was removed)")
    if isinstance(evidence, dict) and "error" in evidence and set(evidence) <= {"error", "where"}:
        return Verdict(False, f"the code this test runs raised {evidence['error']}")
    try:
        outcome = JUDGES[grade_id](decode(evidence), context)
    except Fail as failed:
        return Verdict(False, str(failed))
    return outcome if isinstance(outcome, Verdict) else Verdict(True)
