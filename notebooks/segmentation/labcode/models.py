# Your copy of the course library: labcode/models.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Model registry, parameter count and a layer-by-layer summary (``python -m labcode models`` prints one)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from labcode.deeplab import DeepLabV3Plus
from labcode.errors import UnknownNameError, unknown_name
from labcode.unet import UNet

#: Model classes by name; each is called as ``cls(num_classes, **options)``.
MODELS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "deeplabv3plus": DeepLabV3Plus,
}


def build_model(name: str, num_classes: int, **options) -> nn.Module:
    """Build a registered model.

    Args:
        name: a key of ``MODELS`` (``unet``, ``deeplabv3plus``).
        num_classes: number of classes K (output channels).
        **options: keyword arguments of the model class, e.g. ``num_blocks``, ``base_chan`` for ``unet``;
            ``base_chan``, ``depths``, ``aspp_chan`` for ``deeplabv3plus``.

    Raises:
        UnknownNameError: unknown model name, or an option the model does not take (the message lists the valid
            ones).
    """
    if name not in MODELS:
        raise unknown_name("model", name, list(MODELS))
    cls = MODELS[name]
    valid = [p for p in inspect.signature(cls).parameters if p != "num_classes"]
    for option in options:
        if option not in valid:
            raise UnknownNameError(f"model {name!r} has no option {option!r}; valid options: {', '.join(valid)}")
    return cls(num_classes, **options)


def model_options_with_defaults(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every keyword option of a registered model, the class's defaults filled in: what the network is built with.

    Values are returned as JSON would give them back (tuples as lists, classes by their qualified name), so that
    options read from a checkpoint compare equal to the same options given in Python.

    Raises:
        UnknownNameError: unknown model name.
    """
    if name not in MODELS:
        raise unknown_name("model", name, list(MODELS))
    parameters = inspect.signature(MODELS[name]).parameters
    full = {key: options.get(key, p.default) for key, p in parameters.items() if key != "num_classes"}
    return json.loads(json.dumps(full, default=lambda value: f"{value.__module__}.{value.__qualname__}"))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _shape_of(output) -> str:
    if isinstance(output, torch.Tensor):
        return str(tuple(output.shape))
    if isinstance(output, (tuple, list)):
        return ", ".join(_shape_of(o) for o in output)
    return type(output).__name__


def model_summary(model: nn.Module, input_size: Sequence[int] = (1, 3, 256, 256)) -> str:
    """A table of the leaf modules in call order: name, type, output shape, number of parameters; then totals.

    A dummy batch of zeros of ``input_size`` goes through the model in eval mode, without gradients, on the device of
    the model's parameters; forward hooks record each leaf module's output. The training mode is restored after.

    Args:
        model: any ``nn.Module`` taking one image tensor.
        input_size: shape of the dummy batch, ``(B, C, H, W)``.

    Returns:
        The table as a multi-line string (the caller prints it).
    """
    rows: list[tuple[str, str, str, int | None]] = []
    seen: set[int] = set()

    def record(name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            first_call = id(module) not in seen  # a module called twice counts its parameters once
            seen.add(id(module))
            n = sum(p.numel() for p in module.parameters(recurse=False)) if first_call else None
            rows.append((name or "(model)", type(module).__name__, _shape_of(output), n))

        return hook

    leaves = [(name, m) for name, m in model.named_modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record(name)) for name, m in leaves]
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            output = model(torch.zeros(tuple(input_size), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    header = ("module", "type", "output shape", "params")
    table = [header] + [(n, t, s, "" if p is None else f"{p:,}") for n, t, s, p in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]

    def fmt(row) -> str:
        name, kind, shape, params = row
        return f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {shape:<{widths[2]}}  {params:>{widths[3]}}"

    rule = "-" * len(fmt(header))
    total, trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    lines = [f"{type(model).__name__} on input {tuple(input_size)}", rule, fmt(header), rule]
    lines += [fmt(row) for row in table[1:]]
    lines += [
        rule,
        f"output shape: {_shape_of(output)}",
        f"total parameters: {total:,}",
        f"trainable parameters: {trainable:,}",
        f"parameter size: {sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20:.1f} MiB",
    ]
    return "\n".join(lines)

