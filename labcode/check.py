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
        _expect(conv.padding == (1, 1), f"{name} should use padding 1 (to keep the size), got {conv.padding}")


def _stand_ins():
    """Simple encoder and decoder blocks, so that each check judges a single exercise."""
    import torch
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
            self.conv = nn.Conv2d(cin + cout, cout, kernel_size=1)

        def forward(self, inputs, encoder_features):
            return self.conv(torch.cat([F.interpolate(inputs, scale_factor=2.0), encoder_features], dim=1))

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

    counts = np.array([0, 10, 30, 60])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weights = np.asarray(inverse_frequency_weights(counts))
    _expect(weights.shape == (4,), f"one weight per class expected, got shape {weights.shape}")
    _expect(weights.dtype == np.float32, f"weights should be float32, got {weights.dtype}")
    _expect(weights[0] == 0, f"a class without pixels should get weight 0, got {weights[0]}")
    expected = np.array([0, 1 / 0.1, 1 / 0.3, 1 / 0.6])
    expected = expected * 3 / expected.sum()
    _expect(bool(np.allclose(weights, expected, rtol=1e-5)),
            f"expected {np.round(expected, 4).tolist()} (proportional to 1 / frequency, mean 1 over the classes "
            f"present), got {np.round(weights, 4).tolist()}")
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


def check_conv_block_forward() -> None:
    import torch

    from labcode.unet import UNetConvBlock

    torch.manual_seed(0)
    block = UNetConvBlock(3, 16).eval()
    x = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        result = block(x)
        _expect(isinstance(result, tuple) and len(result) == 2, "forward should return a pair (outputs, features)")
        outputs, features = result
        _expect(tuple(features.shape) == (2, 16, 32, 24), f"features (before pooling) should be (2, 16, 32, 24) for "
                f"a (2, 3, 32, 24) input, got {tuple(features.shape)}")
        _expect(tuple(outputs.shape) == (2, 16, 16, 12), f"outputs (after pooling) should be (2, 16, 16, 12), got "
                f"{tuple(outputs.shape)}")
        reference = block.block2(block.block1(x))
    _expect(bool(torch.allclose(features, reference, atol=1e-6)), "features should be block2(block1(x))")
    _expect(bool(torch.allclose(outputs, torch.nn.functional.max_pool2d(reference, 2), atol=1e-6)),
            "outputs should be the features pooled by block3")


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


def check_up_block_forward() -> None:
    import torch

    from labcode.unet import UNetUpConvBlock

    torch.manual_seed(0)
    up = UNetUpConvBlock(32, 16).eval()
    inputs, skipped = torch.randn(2, 32, 8, 6), torch.randn(2, 16, 16, 12)
    with torch.no_grad():
        out = up(inputs, skipped)
        _expect(isinstance(out, torch.Tensor), f"forward should return a tensor, got {type(out).__name__}")
        _expect(tuple(out.shape) == (2, 16, 16, 12), f"a (2, 32, 8, 6) input with (2, 16, 16, 12) encoder features "
                f"should give (2, 16, 16, 12), got {tuple(out.shape)}")
        reference = up.convblock(torch.cat([up.upconv(inputs), skipped], dim=1))
    _expect(bool(torch.allclose(out, reference, atol=1e-6)),
            "forward should return convblock(cat([upconv(inputs), encoder_features], dim=1))")


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


def format_report(outcomes: Sequence[Outcome], problems: Sequence[str] = ()) -> str:
    """The copy's problems (if any), one line per check, then a summary line."""
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
