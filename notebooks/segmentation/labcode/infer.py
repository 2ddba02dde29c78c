# Your copy of the course library: labcode/infer.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Inference with an exported model (ONNX Runtime), a checkpoint or a network in memory, on photos of any size.

A segmenter turns images of any size into class maps of the same size. :class:`OnnxSegmenter` needs only
onnxruntime and NumPy at prediction time; :class:`TorchSegmenter` runs a training checkpoint (or, with
:meth:`TorchSegmenter.from_model`, a network in memory) with the same interface. Both use
:func:`labcode.transforms.preprocess`, the normalisation of training. Whole areas are scored by
:func:`labcode.scoring.evaluate_areas`.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labcode.classes import CLASSES, NUM_CLASSES
from labcode.errors import LabError
from labcode.uploads import UploadError, open_image


class ModelFileError(LabError):
    """A model file cannot be loaded."""


#: Photos read from files have no pixel limit of their own (Pillow's decompression-bomb guard still applies).
_NO_PIXEL_LIMIT = 2**62


class ImageFileError(LabError):
    """An image file cannot be read."""


# --------------------------------------------------------------------------------------------------------------------
# Images in
# --------------------------------------------------------------------------------------------------------------------

def as_rgb(image: np.ndarray) -> np.ndarray:
    """Bring an image array to ``uint8`` (H, W, 3) RGB.

    Grayscale (H, W) or (H, W, 1) is replicated on the three channels, RGBA (H, W, 4) loses its alpha channel, and
    float images in [0, 1] are scaled to [0, 255].
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[..., :3]
    if image.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(image.dtype, np.floating) and image.max(initial=0) <= 1.0 else 1.0
        image = np.clip(np.rint(image.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def read_image(path: str | Path) -> np.ndarray:
    """Read a photo as ``uint8`` (H, W, 3) RGB, decoded as the server decodes an upload
    (:func:`labcode.uploads.open_image`): turned upright by its EXIF orientation, any mode brought to 8 bits.

    Raises:
        FileNotFoundError: no such file.
        ImageFileError: the file is not an image Pillow can decode (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        image = open_image(path.read_bytes(), max_pixels=_NO_PIXEL_LIMIT, name=str(path))
    except UploadError as exc:
        raise ImageFileError(f"cannot read {path} as an image ({exc})") from exc
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def nearest_indices(source: int, target: int) -> np.ndarray:
    """For each of ``target`` pixels along one axis, the index of the ``source`` pixel under its centre."""
    return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)


def resize_labels_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a class map (pixel centres matched), exact and interpolation-free.

    Shape:
        (h, w) in, (height, width) out, same dtype.
    """
    h, w = labels.shape
    return labels[np.ix_(nearest_indices(h, height), nearest_indices(w, width))]


def downscaled_size(width: int, height: int, max_size: int | None) -> tuple[int, int] | None:
    """``(width, height)`` scaled so that the longer side is ``max_size``, or ``None`` when it already fits."""
    if max_size is None or max(height, width) <= max_size:
        return None
    scale = max_size / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


# --------------------------------------------------------------------------------------------------------------------
# Segmenters
# --------------------------------------------------------------------------------------------------------------------

class Segmenter:
    """Shared prediction logic; subclasses implement :meth:`logits` on preprocessed batches."""

    path: Path
    #: Classes the model outputs (K), when known.
    num_classes: int | None = None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw network output.

        Shape:
            ``float32`` (B, 3, H, W) preprocessed images in, (B, K, H, W) logits out.
        """
        raise NotImplementedError

    def predict_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class maps of images that share one size.

        Shape:
            (B, H, W, 3) ``uint8`` (or a sequence of images accepted by :func:`as_rgb`) in, ``int64`` (B, H, W) out.
        """
        from labcode.transforms import preprocess

        batch = np.stack([preprocess(as_rgb(image)) for image in images])
        return check_logits(self.logits(batch), self.path).argmax(axis=1).astype(np.int64)

    def predict(self, image: np.ndarray, *, max_size: int | None = None) -> np.ndarray:
        """Class map of one image of any size and mode (grayscale, RGB, RGBA).

        Args:
            image: the image array.
            max_size: when the longer side exceeds it, predict on a downscaled copy (longer side ``max_size``) and
                bring the labels back to the original resolution by nearest neighbour.

        Shape:
            (H, W[, C]) in, ``int64`` (H, W) out.
        """
        image = as_rgb(image)
        height, width = image.shape[:2]
        small_size = downscaled_size(width, height, max_size)
        if small_size is not None:
            from PIL import Image

            small = np.asarray(Image.fromarray(image).resize(small_size, Image.Resampling.BILINEAR))
            return resize_labels_nearest(self.predict_batch(small[None])[0], height, width)
        return self.predict_batch(image[None])[0]


def check_logits(logits: np.ndarray, path: str | Path) -> np.ndarray:
    """Return ``logits`` after checking that they are (B, K, H, W) with one channel per class of :data:`CLASSES`.

    Raises:
        ModelFileError: another shape or number of classes (the message names the model file).
    """
    if logits.ndim != 4 or logits.shape[1] != NUM_CLASSES:
        raise ModelFileError(_classes_message(path, logits.shape[1] if logits.ndim == 4 else None))
    return logits


def _classes_message(path: str | Path, found: int | None) -> str:
    what = f"outputs {found} classes" if found is not None else "does not output (B, K, H, W) logits"
    return (f"model {path} {what} but the course's class list has {NUM_CLASSES} ({', '.join(CLASSES[:3])}, ..., "
            f"{CLASSES[-1]}): it was not trained for these classes, its predictions would be named wrongly")


def _cuda_usable() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the package
        return True
    return torch.cuda.is_available()


def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings counted once); the logical count where unknown."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def session_settings(threads: int | None = None) -> dict[str, Any]:
    """The ONNX Runtime session settings of every :class:`OnnxSegmenter` (the benchmark prints them).

    - ``graph_optimization_level`` ``ORT_ENABLE_ALL``: constant folding of the padding arithmetic, Conv+ReLU fusion,
      and on x86 the NCHWc blocked layout, kept from the first convolution to the last (eager PyTorch reorders
      around every convolution);
    - ``intra_op_num_threads``: ``threads``, by default the physical cores (SMT siblings share one core's vector
      units);
    - ``execution_mode`` sequential and ``inter_op_num_threads`` 1: a UNet is one chain of operators;
    - ``enable_mem_pattern`` and ``enable_cpu_mem_arena``: buffers planned once per input shape and reused. The
      arena keeps the memory of the largest input the session saw (4.2 GB after a batch of two 1080x1080 images for
      the 8.6 M-parameter UNet, 1.5 GB without the arena, which costs 6-9 % more time at 256x256);
    - ``allow_spinning`` on: pool threads spin between operators instead of sleeping (on a shared two-core machine a
      256x256 image took 152 ms with spinning and 184 ms without in its quiet moments; under load they were alike).
    - ``log_severity_level`` 3: the session logs errors only (set per session: nothing changes ONNX Runtime's global
      logger).

    Most of these are ONNX Runtime's defaults, written out so that a change of default cannot slow the course down
    unseen; the time goes to the 3x3 convolutions, which ONNX Runtime already runs in the NCHWc layout.
    """
    return {"graph_optimization_level": "ORT_ENABLE_ALL", "execution_mode": "ORT_SEQUENTIAL",
            "intra_op_num_threads": threads or physical_cores(), "inter_op_num_threads": 1,
            "enable_mem_pattern": True, "enable_cpu_mem_arena": True, "allow_spinning": True, "log_severity_level": 3}


def session_options(settings: dict[str, Any] | None = None):
    """``onnxruntime.SessionOptions`` from :func:`session_settings` (the one place sessions are configured)."""
    import onnxruntime as ort

    settings = session_settings() if settings is None else settings
    options = ort.SessionOptions()
    options.log_severity_level = settings["log_severity_level"]
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings["graph_optimization_level"])
    options.execution_mode = getattr(ort.ExecutionMode, settings["execution_mode"])
    options.intra_op_num_threads = settings["intra_op_num_threads"]
    options.inter_op_num_threads = settings["inter_op_num_threads"]
    options.enable_mem_pattern = settings["enable_mem_pattern"]
    options.enable_cpu_mem_arena = settings["enable_cpu_mem_arena"]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings["allow_spinning"] else "0")
    return options


class OnnxSegmenter(Segmenter):
    """An ONNX model in an ONNX Runtime session.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers; by default CUDA then CPU when a GPU is usable, otherwise CPU only (so that
            machines without CUDA do not print the failed CUDA probe).
        threads: CPU threads of the session (default: the physical cores); see :func:`session_settings`.
        num_classes: classes the model must output (those of :data:`CLASSES`); ``None`` accepts any.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: onnxruntime cannot load it, or it outputs another number of classes (message names the
            file).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None, *,
                 num_classes: int | None = NUM_CLASSES) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model not found: {self.path}")
        if providers is None:
            wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if _cuda_usable() else ["CPUExecutionProvider"]
            providers = [p for p in wanted if p in ort.get_available_providers()]
        self.settings = session_settings(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=session_options(self.settings),
                                                providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"cannot load ONNX model {self.path}: {message}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.num_classes = self._output_classes()
        if num_classes is not None and self.num_classes != num_classes:
            raise ModelFileError(_classes_message(self.path, self.num_classes))

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses."""
        return self.session.get_providers()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def _output_classes(self) -> int | None:
        """K of the (B, K, H, W) output: from the graph when it is fixed there, else from one small run."""
        shape = self.session.get_outputs()[0].shape
        if len(shape) == 4 and isinstance(shape[1], int):
            return shape[1]
        try:
            out = self.logits(np.zeros((1, 3, 64, 64), dtype=np.float32))
        except Exception as exc:  # onnxruntime's own error types
            raise ModelFileError(f"cannot run ONNX model {self.path} on a 64x64 image: {type(exc).__name__}") from exc
        return out.shape[1] if out.ndim == 4 else None


class TorchSegmenter(Segmenter):
    """A training checkpoint (``best.pt`` / ``last.pt``) run by PyTorch, with the interface of :class:`OnnxSegmenter`.

    Args:
        path: the checkpoint.
        device: where to run it (CUDA when available by default).
        num_classes: classes the model must output (those of :data:`CLASSES`); ``None`` accepts any.

    Raises:
        ModelFileError: the checkpoint's model outputs another number of classes.
    """

    def __init__(self, path: str | Path, device: str | None = None, *, num_classes: int | None = NUM_CLASSES) -> None:
        from labcode.checkpoint import load_model

        model, state = load_model(Path(path), map_location="cpu")
        self._setup(model, Path(path), device, num_classes, found=int(state["num_classes"]))

    @classmethod
    def from_model(cls, model, device: str | None = None, *, name: str = "<in-memory model>",
                   num_classes: int | None = NUM_CLASSES) -> "TorchSegmenter":
        """A segmenter of ``model``, a network in memory (one just trained, say) mapping ``(B, 3, H, W)`` images to
        ``(B, K, H, W)`` logits, put in eval mode on ``device``; ``name`` stands for a file name in messages.

        Raises:
            ModelFileError: the model outputs another number of classes (checked on a 64x64 image).
        """
        segmenter = cls.__new__(cls)
        segmenter._setup(model, Path(name), device, num_classes)
        return segmenter

    def _setup(self, model, path: Path, device: str | None, num_classes: int | None, found: int | None = None) -> None:
        import torch

        self.path = path
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        if found is None:  # an in-memory network: run it once
            found = self.logits(np.zeros((1, 3, 64, 64), dtype=np.float32)).shape[1]
        self.num_classes = found
        if num_classes is not None and self.num_classes != num_classes:
            raise ModelFileError(_classes_message(self.path, self.num_classes))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)) \
                .float().cpu().numpy()


def load_segmenter(path: str | Path) -> Segmenter:
    """Open a model file: an ONNX graph, or a training checkpoint (recognised as a zip archive or ``.pt``).

    Raises:
        ModelFileError: the model does not output one channel per class of :data:`CLASSES`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    if path.suffix.lower() == ".onnx":
        return OnnxSegmenter(path)
    if path.suffix.lower() in (".pt", ".pth", ".ckpt") or zipfile.is_zipfile(path):
        return TorchSegmenter(path)
    return OnnxSegmenter(path)


# --------------------------------------------------------------------------------------------------------------------
# Single photos (whole areas: labcode.scoring)
# --------------------------------------------------------------------------------------------------------------------

def segment_image_file(
    segmenter: Segmenter,
    image_path: str | Path,
    out_path: str | Path | None = None,
    *,
    max_size: int | None = None,
) -> dict[str, Any]:
    """Segment one photo and save a figure (input, colourised prediction, legend) and the colourised mask.

    Args:
        segmenter: the model.
        image_path: any image PIL reads (RGBA and grayscale are converted, EXIF orientation honoured).
        out_path: the figure's PNG path (default: ``<image stem>_segmentation.png`` next to the image); the mask, at
            the photo's resolution, goes to ``<out stem>_mask.png``.
        max_size: see :meth:`Segmenter.predict`.

    Returns:
        ``image``, ``figure``, ``mask`` (paths), ``size`` ([width, height]) and ``fractions`` (class -> share of the
        pixels, classes present only).
    """
    from PIL import Image

    from labcode.viz import colorize, plot_inference

    image_path = Path(image_path)
    image = read_image(image_path)
    labels = segmenter.predict(image, max_size=max_size)
    out_path = Path(out_path) if out_path else image_path.with_name(f"{image_path.stem}_segmentation.png")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path = out_path.with_name(f"{out_path.stem}_mask.png")
    figure = plot_inference(image, labels, title=image_path.name)
    figure.savefig(out_path, dpi=100)
    Image.fromarray(colorize(labels)).save(mask_path)
    counts = np.bincount(labels.ravel(), minlength=NUM_CLASSES)
    return {
        "image": str(image_path),
        "figure": str(out_path),
        "mask": str(mask_path),
        "size": [int(image.shape[1]), int(image.shape[0])],
        "fractions": {CLASSES[k]: float(counts[k] / labels.size) for k in np.flatnonzero(counts)},
    }
