"""What the grader runs in the student's kernel after each graded test cell: it records evidence, it judges nothing.

The grader (:mod:`tools.grading.verdicts`) copies this file next to the notebook being graded, as
``labcode_probe.py``, and inserts after each graded test cell a cell calling :func:`emit` with the test's id. The
probe calls the student's functions and classes on the tests' inputs and sends back **data only**, as one
``display_data`` output of MIME type :data:`MIME`: numbers, strings, arrays (``.npy`` bytes in base64), module
descriptions (layer types, hyper-parameters, weights) and the outputs of the student's modules. A trusted process
that imports no student code (:mod:`tools.grading.judge`) decides the verdict from that data.

Nothing here is secret: the inputs are those the tests use, and no expected value or test code is in this file.
Since it runs next to the student's code, anything it sends may be forged; the judge assumes so (it recomputes what
it can from the described modules and weights, so a description that lies fails).

Runs in the grading environment: the third-party stack and the submission's own ``labcode`` only.
"""

from __future__ import annotations

import base64
import io
import math
import os
import traceback
import warnings

import numpy as np

MIME = "application/vnd.labcode.probe+json"
#: Cell metadata key marking a probe cell the grader inserted (its outputs have a budget of their own).
CELL_KEY = "labcode_probe"

#: Layer attributes that define each torch.nn layer the course uses (the judge rebuilds layers from them).
HYPER = {
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"),
    "ConvTranspose2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding",
                        "dilation", "groups"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "ReLU": (), "Identity": (), "Sigmoid": (), "Tanh": (), "GELU": ("approximate",), "SiLU": (),
    "LeakyReLU": ("negative_slope",),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "AvgPool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    "Upsample": ("size", "scale_factor", "mode", "align_corners"),
    "UpsamplingNearest2d": ("size", "scale_factor"),
    "UpsamplingBilinear2d": ("size", "scale_factor"),
    "Dropout": ("p",), "Dropout2d": ("p",),
}


# --------------------------------------------------------------------------------------------------------------------
# Encoding values as JSON
# --------------------------------------------------------------------------------------------------------------------

def array(values) -> dict:
    """An array as ``.npy`` bytes in base64 (the judge reads it with ``allow_pickle=False``)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values), allow_pickle=False)
    return {"__array__": base64.b64encode(buffer.getvalue()).decode("ascii")}


def encode(value, depth: int = 0):
    """``value`` as JSON: numbers, strings, lists, dicts, arrays; anything else by its type and a short repr."""
    import torch

    if depth > 6:
        return {"__repr__": "(too deep)", "type": type(value).__name__}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu()
        return {**array(data.numpy()), "tensor": str(value.dtype), "requires_grad": bool(value.requires_grad)}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return {"__repr__": repr(value)[:200], "type": "ndarray(object)"}
        return array(value)
    if isinstance(value, (np.dtype, torch.dtype)):
        return {"__dtype__": str(value)}
    if isinstance(value, type) and issubclass(value, np.generic):
        return {"__dtype__": np.dtype(value).name}
    if isinstance(value, dict):
        return {"__dict__": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in list(value.items())[:200]]}
    if isinstance(value, (list, tuple, torch.Size)):
        return {"__seq__": type(value).__name__, "items": [encode(v, depth + 1) for v in list(value)[:1000]]}
    return {"__repr__": repr(value)[:200], "type": f"{type(value).__module__}.{type(value).__qualname__}"}


def call(function, *args, **kwargs) -> dict:
    """Call a student's function: ``{"value": ...}``, or ``{"error": "Name: message"}`` when it raises."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = function(*args, **kwargs)
        out = {"value": encode(value)}
        if caught:
            out["warnings"] = [f"{w.category.__name__}: {w.message}"[:300] for w in caught[:5]]
        return out
    except Exception as error:  # noqa: BLE001 - the student's error is evidence
        return failure(error)


def failure(error: BaseException) -> dict:
    return {"error": f"{type(error).__name__}: {error}"[:500],
            "where": [f"{os.path.basename(f.filename)}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__)
                      ][-3:]}


def inputs(seed: int, *shape: int, dtype: str = "float32") -> np.ndarray:
    """The tests' random inputs: standard normal values from numpy's PCG64 (the judge draws the same)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def tensor(seed: int, *shape: int):
    import torch

    return torch.from_numpy(inputs(seed, *shape))


# --------------------------------------------------------------------------------------------------------------------
# Describing modules
# --------------------------------------------------------------------------------------------------------------------

def kind(module) -> str:
    """What the judge should rebuild: a torch.nn layer or container, a course class, a stand-in, or custom code."""
    from torch import nn

    cls = type(module)
    if cls.__module__.startswith("torch.nn"):
        return cls.__name__
    if isinstance(module, StandInConvBlock):
        return "StandInConvBlock"
    if isinstance(module, StandInUpBlock):
        return "StandInUpBlock"
    if cls.__module__ == "labcode.unet":
        return f"labcode.unet.{cls.__name__}"
    for base in (nn.Sequential, nn.ModuleList, nn.ModuleDict):  # a subclass that only adds a constructor
        if isinstance(module, base) and cls.forward is base.forward:
            return base.__name__
    return f"custom:{cls.__module__}.{cls.__qualname__}"


def describe(module) -> dict:
    """A module as data: its kind, hyper-parameters, training flag and children (in registration order)."""
    name = kind(module)
    hyper = {}
    for attribute in HYPER.get(name, ()):
        value = getattr(module, attribute, None)
        hyper[attribute] = list(value) if isinstance(value, tuple) else value
    if name == "Conv2d" or name == "ConvTranspose2d":
        hyper["bias"] = module.bias is not None
    if name.startswith("labcode.unet.") and hasattr(module, "size_multiple"):
        hyper["size_multiple"] = int(module.size_multiple)
    return {"kind": name, "hyper": encode(hyper), "training": bool(module.training),
            "children": [[child_name, describe(child)] for child_name, child in module.named_children()]}


def snapshot(module) -> dict:
    """Description, weights and buffers of a module."""
    return {"description": describe(module),
            "state": {name: array(value.detach().cpu().numpy()) for name, value in module.state_dict().items()}}


def build(factory, *args, **kwargs) -> dict:
    """Construct a student's module: its snapshot, or the error."""
    try:
        module = factory(*args, **kwargs)
        return {"module": module, **snapshot(module)}
    except Exception as error:  # noqa: BLE001
        return failure(error)


def run(module, *args) -> dict:
    """A module's output on inputs, without gradients."""
    import torch

    try:
        with torch.no_grad():
            return {"value": encode(module(*args))}
    except Exception as error:  # noqa: BLE001
        return failure(error)


def public(built: dict) -> dict:
    """What is sent of a built module (not the live object)."""
    return {k: v for k, v in built.items() if k != "module"}


# --------------------------------------------------------------------------------------------------------------------
# Stand-in blocks: each UNet test judges one exercise, the other parts being these known ones
# --------------------------------------------------------------------------------------------------------------------

def _stand_ins():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ConvBlock(nn.Module):
        """A 1x1 convolution then a 2x2 pooling, with the interface of UNetConvBlock."""

        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel_size=1)

        def forward(self, x):
            features = self.conv(x)
            return F.max_pool2d(features, 2), features

    class UpBlock(nn.Module):
        """Nearest upsampling, concatenation and one 1x1 convolution, with the interface of UNetUpConvBlock."""

        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin + cout, cout, kernel_size=1)

        def forward(self, inputs, encoder_features):
            return self.conv(torch.cat([F.interpolate(inputs, scale_factor=2.0), encoder_features], dim=1))

    return ConvBlock, UpBlock


StandInConvBlock, StandInUpBlock = _stand_ins()


# --------------------------------------------------------------------------------------------------------------------
# The probes, one per graded test cell
# --------------------------------------------------------------------------------------------------------------------

def _datadir(ns: dict) -> str:
    return str(ns.get("DATADIR") or os.environ.get("LABCODE_DATADIR", ""))


def _variable(ns: dict, name: str) -> dict:
    return {"value": encode(ns[name])} if name in ns else {"error": f"NameError: name {name!r} is not defined"}


def probe_describe_sample(ns: dict) -> dict:
    import torch

    from labcode.data import StanfordDataset

    if "describe_sample" not in ns:
        return {"error": "NameError: describe_sample is not defined"}
    function = ns["describe_sample"]
    toy_mask = np.array([[0, 12, 12, 9, 9, 9]] * 4, dtype=np.int64)
    out = {"toy": call(function, np.zeros((4, 6, 3), dtype=np.uint8), toy_mask),
           "tensors": call(function, torch.zeros(3, 8, 5), torch.full((8, 5), 13)),
           "odd_types": call(function, np.ones((2, 3), dtype=np.float64), np.array([[5, 1, 1]], dtype=np.uint8))}
    dataset = StanfordDataset(_datadir(ns), areas=["1"])
    for index in (0, len(dataset) - 1):
        image, mask = dataset[index]
        out[f"area1_{index}"] = call(function, image, mask)
    out["area1_size"] = len(dataset)
    return out


def probe_augmentation(ns: dict) -> dict:
    from labcode.data import StanfordDataset
    from labcode.transforms import PairedTransform, train_transforms

    out = {}
    try:
        pipeline = train_transforms(64)
    except Exception as error:  # noqa: BLE001
        return failure(error)
    out["type"] = f"{type(pipeline).__module__}.{type(pipeline).__qualname__}"
    rng = np.random.default_rng(0)
    for shape in ((90, 120), (40, 50)):
        photo = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
        labels = rng.integers(0, 14, size=shape).astype(np.uint8)
        out[f"random_{shape[0]}x{shape[1]}"] = call(pipeline, image=photo, mask=labels)
    out["repeats"] = [call(pipeline, image=photo, mask=labels) for _ in range(6)]
    stripes = (np.arange(120) // 10) % 2 == 0
    photo = np.where(stripes[None, :, None], 230, 25).astype(np.uint8).repeat(90, axis=0)
    labels = np.where(stripes[None, :], 12, 9).astype(np.uint8).repeat(90, axis=0)
    out["stripes"] = [call(pipeline, image=photo, mask=labels) for _ in range(20)]
    rng = np.random.default_rng(1)
    for size, shape in ((48, (40, 50)), (32, (200, 150)), (40, (40, 40))):
        image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
        mask = rng.integers(0, 14, size=shape).astype(np.uint8)
        out[f"sized_{size}"] = call(lambda s, i, m: train_transforms(s)(image=i, mask=m), size, image, mask)
    gray = np.full((64, 64, 3), 128, dtype=np.uint8)
    blank = np.zeros((64, 64), np.uint8)
    out["gray"] = [call(lambda: train_transforms(32)(image=gray, mask=blank)["image"]) for _ in range(20)]
    try:
        paired = StanfordDataset(_datadir(ns), transforms=PairedTransform(train_transforms(48)), areas=["3"])
        out["paired"] = call(lambda: paired[0])
    except Exception as error:  # noqa: BLE001
        out["paired"] = failure(error)
    return out


def _unet():
    import labcode.unet as unet

    return unet


def probe_conv_block_layers(ns: dict) -> dict:
    unet = _unet()
    out = {}
    for key, (cin, cout) in {"visible": (3, 16), "hidden": (5, 12)}.items():
        built = build(unet.UNetConvBlock, cin, cout)
        module = built.get("module")
        if module is not None:
            built.update(snapshot(module.eval()))
            built["parts"] = {name: run(getattr(module, name), tensor(10 + i, 1, cin if name == "block1" else cout,
                                                                      10, 6))
                              for i, name in enumerate(("block1", "block2", "block3")) if hasattr(module, name)}
        out[key] = public(built)
    return out


def probe_conv_block_forward(ns: dict) -> dict:
    unet = _unet()
    out = {}
    for key, (cin, cout, shape) in {"visible": (3, 16, (2, 3, 32, 24)), "hidden": (4, 6, (3, 4, 20, 28))}.items():
        built = build(unet.UNetConvBlock, cin, cout)
        if "module" in built:
            built["output"] = run(built["module"].eval(), tensor(20, *shape))
            built.update(snapshot(built["module"]))
        out[key] = public(built)
    return out


def probe_encoder(ns: dict) -> dict:
    unet = _unet()
    out = {}
    for key, (cin, blocks, base, shape) in {"visible": (3, 3, 8, (2, 3, 48, 40)),
                                            "hidden": (1, 2, 4, (1, 1, 16, 12))}.items():
        built = build(unet.UNetEncoder, cin, num_blocks=blocks, base_chan=base, conv_block=StandInConvBlock)
        if "module" in built:
            module = built["module"].eval()
            built["cout"] = encode(getattr(module, "cout", None))
            built["output"] = run(module, tensor(30, *shape))
            built.update(snapshot(module))
        out[key] = public(built)
    return out


def probe_up_block_layers(ns: dict) -> dict:
    unet = _unet()
    out = {}
    for key, (cin, cout) in {"visible": (32, 16), "hidden": (12, 6)}.items():
        built = build(unet.UNetUpConvBlock, cin, cout)
        module = built.get("module")
        if module is not None:
            built.update(snapshot(module.eval()))
            built["parts"] = {}
            if hasattr(module, "upconv"):
                built["parts"]["upconv"] = run(module.upconv, tensor(40, 1, cin, 5, 4))
            if hasattr(module, "convblock"):
                built["parts"]["convblock"] = run(module.convblock, tensor(41, 1, cin, 10, 8))
        out[key] = public(built)
    return out


def probe_up_block_forward(ns: dict) -> dict:
    unet = _unet()
    out = {}
    for key, (cin, cout, below, skipped) in {"visible": (32, 16, (2, 32, 8, 6), (2, 16, 16, 12)),
                                             "hidden": (8, 4, (3, 8, 5, 7), (3, 4, 10, 14))}.items():
        built = build(unet.UNetUpConvBlock, cin, cout)
        if "module" in built:
            built["output"] = run(built["module"].eval(), tensor(50, *below), tensor(51, *skipped))
            built.update(snapshot(built["module"]))
        out[key] = public(built)
    return out


def probe_decoder(ns: dict) -> dict:
    unet = _unet()
    out = {}
    cases = {"visible": (64, 3, 14, (2, 64, 6, 5), [(2, 8, 48, 40), (2, 16, 24, 20), (2, 32, 12, 10)]),
             "hidden": (32, 2, 5, (1, 32, 3, 4), [(1, 8, 12, 16), (1, 16, 6, 8)])}
    for key, (cin, blocks, classes, below, features) in cases.items():
        built = build(unet.UNetDecoder, cin, num_blocks=blocks, num_classes=classes, upconv_block=StandInUpBlock)
        if "module" in built:
            skips = [tensor(61 + i, *shape) for i, shape in enumerate(features)]
            built["output"] = run(built["module"].eval(), tensor(60, *below), skips)
            built.update(snapshot(built["module"]))
        out[key] = public(built)
    return out


def probe_dummy_forward(ns: dict) -> dict:
    out = {"dummy_output": _variable(ns, "dummy_output")}
    model = ns.get("model")
    if model is None:
        return {**out, "error": "NameError: name 'model' is not defined"}
    out["type"] = f"{type(model).__module__}.{type(model).__qualname__}"
    out["blocks"] = encode(len(getattr(getattr(model, "encoder", None), "blocks", [])))
    training = bool(getattr(model, "training", False))
    try:
        model.eval()
        out["odd"] = run(model, tensor(70, 1, 3, 70, 45))
        out.update(snapshot(model))
    except Exception as error:  # noqa: BLE001
        out["odd"] = failure(error)
    finally:
        if hasattr(model, "train"):
            model.train(training)  # the notebook goes on with the model as the student left it
    return out


def probe_wall_accuracy(ns: dict) -> dict:
    return _variable(ns, "wall_accuracy")


def probe_wall_macro_f1(ns: dict) -> dict:
    return _variable(ns, "wall_macro_f1")


def probe_class_weights(ns: dict) -> dict:
    from labcode.stats import class_weights, inverse_frequency_weights

    counts = np.array([0, 10, 30, 60])
    rng = np.random.default_rng(3)
    hidden = rng.integers(1, 10_000, size=14).astype(np.int64)
    hidden[[2, 7]] = 0
    return {"visible": call(inverse_frequency_weights, counts),
            "visible_strategy": call(class_weights, counts, "inverse"),
            "hidden": call(inverse_frequency_weights, hidden),
            "hidden_scaled": call(class_weights, hidden.astype(float) / 7, "inverse")}


def probe_weighted_cross_entropy(ns: dict) -> dict:
    import torch

    if "weighted_cross_entropy" not in ns:
        return {"error": "NameError: weighted_cross_entropy is not defined"}
    function = ns["weighted_cross_entropy"]
    logits = tensor(80, 2, 4, 5, 6)
    target = torch.from_numpy(np.random.default_rng(81).integers(0, 4, size=(2, 5, 6)))
    counts = np.array([50, 20, 5, 25])
    out = {"uniform": call(function, logits, target, counts, "uniform"),
           "median": call(function, logits, target, counts, "median")}
    logits = torch.from_numpy(inputs(82, 3, 14, 4, 4, dtype="float64")).requires_grad_(True)
    target = torch.from_numpy(np.random.default_rng(83).integers(0, 14, size=(3, 4, 4)))
    try:
        loss = function(logits, target, np.arange(1, 15) ** 2, "inverse_sqrt")
        out["inverse_sqrt"] = {"value": encode(loss)}
        loss.backward()
        out["gradient"] = {"value": encode(logits.grad)}
    except Exception as error:  # noqa: BLE001
        out.setdefault("inverse_sqrt", failure(error))
        out["gradient"] = failure(error)
    return out


def probe_training_config(ns: dict) -> dict:
    import dataclasses

    if "config" not in ns:
        return {"error": "NameError: name 'config' is not defined"}
    config = ns["config"]
    fields = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}
    return {"type": f"{type(config).__module__}.{type(config).__qualname__}", "fields": encode(fields),
            "settings": _variable(ns, "SETTINGS")}


def probe_short_training_run(ns: dict) -> dict:
    from labcode.runtime.checkpoint import load_model

    if "result" not in ns or "config" not in ns:
        return {"error": "NameError: the training run's result or config is not defined"}
    config = ns["config"]
    try:  # fit's FitResult (a dict in libraries older than FitResult)
        result = ns["result"].to_dict() if hasattr(ns["result"], "to_dict") else dict(ns["result"])
    except Exception as error:  # noqa: BLE001
        return {"error": f"the training run's result cannot be read: {type(error).__name__}: {error}"}
    out = {"epochs": encode(getattr(config, "epochs", None)), "result": encode(
        {k: v for k, v in result.items() if k in ("interrupted", "epochs_completed", "best_macro_f1", "parity",
                                                  "best_checkpoint", "onnx")}),
           "train_losses": encode([(epoch.get("train") or {}).get("loss") for epoch in result.get("history") or []])}
    for key in ("best_checkpoint", "onnx"):
        path = result.get(key)
        out[f"{key}_exists"] = bool(path) and os.path.isfile(str(path))
    try:
        trained, _ = load_model(result["best_checkpoint"])
        module = type(trained).__module__
        import sys

        out["trained_module"] = module
        out["trained_file"] = os.path.abspath(sys.modules[module].__file__)
        out["local_library"] = os.path.join(os.getcwd(), "labcode")
    except Exception as error:  # noqa: BLE001
        out["trained"] = failure(error)
    return out


def probe_model_export(ns: dict) -> dict:
    return {"exists": os.path.isfile("my_model.onnx"),
            "bytes": os.path.getsize("my_model.onnx") if os.path.isfile("my_model.onnx") else 0}


def probe_evaluate_areas(ns: dict) -> dict:
    return {"train_scores": _variable(ns, "train_scores"), "test_scores": _variable(ns, "test_scores"),
            "model": encode(str(ns.get("MODEL"))), "train_areas": encode(list(ns.get("TRAIN_AREAS", [])))}


def probe_segment_photo(ns: dict) -> dict:
    from PIL import Image

    out = {"photo_result": _variable(ns, "photo_result")}
    try:
        out["photo_size"] = list(Image.open(ns["PHOTO"]).size)
        out["mask_size"] = list(Image.open(ns["photo_result"]["mask"]).size)
    except Exception as error:  # noqa: BLE001
        out["sizes"] = failure(error)
    return out


def probe_deeplab_forward(ns: dict) -> dict:
    out = {"deeplab_output": _variable(ns, "deeplab_output")}
    deeplab = ns.get("deeplab")
    if deeplab is None:
        return {**out, "error": "NameError: name 'deeplab' is not defined"}
    out["type"] = f"{type(deeplab).__module__}.{type(deeplab).__qualname__}"
    out["has_aspp"] = getattr(deeplab, "aspp", None) is not None
    out["training"] = bool(getattr(deeplab, "training", True))
    out["parameters"] = int(sum(p.numel() for p in deeplab.parameters()))
    return out


def probe_loss_zoo(ns: dict) -> dict:
    return {"perfect": _variable(ns, "perfect_losses"), "uniform": _variable(ns, "uniform_losses"),
            "target": _variable(ns, "target")}


PROBES = {
    "test_describe_sample": probe_describe_sample,
    "test_augmentation_pipeline": probe_augmentation,
    "test_unet_conv_block_layers": probe_conv_block_layers,
    "test_unet_conv_block_forward": probe_conv_block_forward,
    "test_unet_encoder": probe_encoder,
    "test_unet_up_block_layers": probe_up_block_layers,
    "test_unet_up_block_forward": probe_up_block_forward,
    "test_unet_decoder": probe_decoder,
    "test_unet_dummy_forward": probe_dummy_forward,
    "test_wall_accuracy": probe_wall_accuracy,
    "test_wall_macro_f1": probe_wall_macro_f1,
    "test_class_weights_inverse": probe_class_weights,
    "test_weighted_cross_entropy": probe_weighted_cross_entropy,
    "test_training_config": probe_training_config,
    "test_short_training_run": probe_short_training_run,
    "test_model_export": probe_model_export,
    "test_evaluate_areas": probe_evaluate_areas,
    "test_segment_photo": probe_segment_photo,
    "test_deeplab_forward": probe_deeplab_forward,
    "test_loss_zoo": probe_loss_zoo,
}


def collect(grade_id: str, ns: dict) -> dict:
    """The evidence of one test (an ``error`` entry when the probe itself could not run)."""
    try:
        return {"grade_id": grade_id, "evidence": PROBES[grade_id](ns)}
    except Exception as error:  # noqa: BLE001
        return {"grade_id": grade_id, "evidence": failure(error)}


def emit(grade_id: str, ns: dict) -> None:
    """Send the evidence of ``grade_id`` to the grader (one display_data output of type :data:`MIME`)."""
    from IPython.display import display

    display({MIME: collect(grade_id, ns), "text/plain": f"evidence for {grade_id}"}, raw=True)
