# Your copy of the course library: labcode/export/onnx_export.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""ONNX export with dynamic batch, height and width, and the onnxruntime-against-PyTorch parity check.

The networks of the course are fully convolutional and pad their input internally to a multiple of their total
stride, so one exported graph serves every image size. The export uses PyTorch's default exporter (``dynamo=True``,
built on ``torch.export``) with named dynamic dimensions; if that exporter fails on a model, the TorchScript-based
one (``dynamo=False`` with ``dynamic_axes``) is tried. Either way the result is a single ``.onnx`` file (weights
inside, no external data) and :func:`check_onnx_parity` compares it with PyTorch.

By default the graph is the network as written (a UNet's up blocks appear as ``Resize`` then ``Conv``). With
``fold=True`` (``python -m labcode export --fold``), every nearest 2x upsampling followed by a 3x3 convolution is
first rewritten as :class:`NearestUpsampleConv`: the same function computed at the input's resolution with 4 instead
of 9 multiply-adds per output value (four 2x2 convolutions and a ``DepthToSpace``), a graph for serving when speed
matters; ``benchmarks/bench_infer.py`` measures both.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from labcode.errors import LabError
from labcode.export.fold import fold_nearest_upsampling

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class ExportError(LabError):
    """The model could not be exported, or the exported graph disagrees with PyTorch."""


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's chatter (optional torchvision ops, deprecation notes of its dependencies)."""
    noisy = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript",
                                                  "onnx_ir")]
    levels = [log.level for log in noisy]
    for log in noisy:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(noisy, levels):
            log.setLevel(level)


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode (the caller's model keeps its device, dtype and mode)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    return copy.deepcopy(model).cpu().float().eval()


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    example_size: tuple[int, int] = (64, 64),
    opset: int | None = None,
    metadata: dict[str, str] | None = None,
    classes: Sequence[str] | None = None,
    fold: bool = False,
) -> Path:
    """Export ``model`` to a single ONNX file whose batch, height and width are dynamic.

    Args:
        model: a segmentation network taking ``(B, 3, H, W)`` and returning ``(B, K, H, W)`` logits.
        path: the ``.onnx`` file to write (its directory is created).
        example_size: (height, width) of the example input traced by the exporter.
        opset: ONNX opset version (the exporter's default when ``None``).
        metadata: extra ``key: value`` strings stored in the model's metadata (the class names and the input
            normalisation are always stored).
        classes: names of the model's output channels (default: :data:`labcode.classes.CLASSES`); the model must
            output exactly that many.
        fold: export each nearest x2 upsampling + 3x3 convolution pair as a :class:`NearestUpsampleConv` (a faster
            graph computing the same values; the model's metadata then says how many pairs were folded). The
            default exports the network as it is written.

    Returns:
        The path written. The graph's input is named ``image`` and its output ``logits``.

    Raises:
        ExportError: the model outputs another number of classes than ``classes`` names (nothing is written), or
            both exporters failed.
    """
    from labcode.classes import CLASSES
    from labcode.transforms import MEAN, STD

    classes = list(CLASSES if classes is None else classes)
    path = Path(path)
    model = _cpu_eval_copy(model)
    folded = fold_nearest_upsampling(model) if fold else 0
    example = torch.randn(2, 3, *example_size)
    with torch.no_grad():
        found = model(example).shape[1]
    if found != len(classes):
        raise ExportError(f"the model outputs {found} classes but the class list has {len(classes)} "
                          f"({', '.join(classes[:3])}, ...): refusing to export it to {path} with the wrong class "
                          "names")
    path.parent.mkdir(parents=True, exist_ok=True)
    _export_graph(model, example, path, opset)
    _add_metadata(path, {"classes": json.dumps(classes), "num_classes": str(len(classes)),
                         "mean": json.dumps(list(MEAN)), "std": json.dumps(list(STD)),
                         "input": "RGB, (x / 255 - mean) / std, NCHW float32",
                         **({"upsampling": f"{folded} nearest x2 upsampling + 3x3 Conv pairs exported as four 2x2 "
                             "Conv phases + DepthToSpace (labcode.export.NearestUpsampleConv)"} if folded else {}),
                         **(metadata or {})})
    return path


def _export_graph(model: nn.Module, example: torch.Tensor, path: Path, opset: int | None) -> None:
    """Write the graph with dynamic batch, height and width: the dynamo exporter, else the TorchScript one.

    Raises:
        ExportError: both exporters failed.
    """
    try:
        with _quiet_exporter(), torch.no_grad():
            dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
            torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=(dims,), opset_version=opset, external_data=False, dynamo=True,
                              verbose=False)
    except Exception as exc:  # the dynamo exporter fails with many exception types
        logger.warning("dynamo ONNX export failed (%s: %s); trying the TorchScript exporter",
                       type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        axes = {0: "batch", 2: "height", 3: "width"}
        try:
            with _quiet_exporter(), torch.no_grad():
                torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                                  opset_version=opset or 17, dynamo=False, verbose=False)
        except Exception as exc2:
            raise ExportError(f"cannot export the model to {path}: {type(exc2).__name__}: {exc2}") from exc2


def _add_metadata(path: Path, entries: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=str(value))
    onnx.save(proto, str(path))


def check_onnx_parity(
    model: nn.Module,
    onnx_path: str | Path,
    sizes: Sequence[tuple[int, int]] = ((64, 64), (45, 77)),
    *,
    batch_size: int = 2,
    seed: int = 0,
    atol: float | None = None,
) -> dict[str, float]:
    """Run the ONNX graph (onnxruntime, CPU) and ``model`` (PyTorch, CPU) on the same random batches.

    Args:
        model: the PyTorch network that was exported.
        onnx_path: the exported file.
        sizes: (height, width) of the batches compared; use sizes the example input did not have.
        batch_size: images per batch (2 checks that the batch dimension is dynamic).
        seed: seed of the random inputs.
        atol: when given, raise :class:`ExportError` if a difference exceeds it.

    Returns:
        ``{"HxW": max absolute difference of the logits}`` for each size.
    """
    from labcode.infer import OnnxSegmenter

    model = _cpu_eval_copy(model)
    segmenter = OnnxSegmenter(onnx_path, providers=["CPUExecutionProvider"], num_classes=None)
    generator = torch.Generator().manual_seed(seed)
    diffs: dict[str, float] = {}
    for height, width in sizes:
        batch = torch.randn(batch_size, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(batch).numpy()
        got = segmenter.logits(batch.numpy())
        if got.shape != expected.shape:
            raise ExportError(f"{onnx_path}: output shape {got.shape} for input {tuple(batch.shape)}, "
                              f"PyTorch gives {expected.shape}")
        diffs[f"{height}x{width}"] = float(np.max(np.abs(got - expected)))
    if atol is not None and max(diffs.values()) > atol:
        raise ExportError(f"{onnx_path} differs from PyTorch by more than {atol}: {diffs}")
    return diffs
