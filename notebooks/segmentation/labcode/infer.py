# Your copy of the course library: labcode/infer.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Inference with an exported model (ONNX Runtime), a checkpoint or a network in memory, on photos of any size.

A segmenter turns images of any size into class maps of the same size. :class:`OnnxSegmenter` needs only
onnxruntime and NumPy at prediction time; :class:`TorchSegmenter` runs a training checkpoint (or, with
:meth:`TorchSegmenter.from_model`, a network in memory) with the same interface. Both use
:func:`labcode.transforms.preprocess`, the normalisation of training. Whole areas are scored by
:func:`labcode.scoring.evaluate_areas`.

This module is the one inference path of the library, used by the notebooks, the ``test`` command and the web
service (:mod:`labcode.serving.serve`, through :mod:`labcode.serving.uploads`):

1. :func:`open_photo` / :func:`read_image` decode a photo (EXIF orientation applied, any mode to 8 bits);
2. :meth:`Segmenter.segment` downscales it when its longer side exceeds ``max_size`` and predicts;
3. the :class:`Prediction` it returns brings the labels back to the photo's size by nearest neighbour
   (:meth:`Prediction.full`, or row by row with :meth:`Prediction.rows`) and gives the class shares
   (:meth:`Prediction.fractions`);
4. :func:`check_num_classes` refuses a model that does not output one channel per class of :data:`CLASSES`.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from labcode.classes import CLASSES, NUM_CLASSES
from labcode.errors import LabError


class ModelFileError(LabError):
    """A model file cannot be loaded, or its model does not output the course's classes."""


class ImageFileError(LabError, ValueError):
    """An image (a file or uploaded bytes) cannot be decoded; ``too_large`` when it was refused for its pixel count."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


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


def open_photo(data: bytes, *, max_pixels: int | None = None, name: str = "image") -> Image.Image:
    """Decode the bytes of a photo into an upright Pillow image of mode ``RGB`` or ``L`` (8-bit gray).

    The pixel count is checked on the header, before the pixels are decoded, so a small file announcing a huge image
    costs nothing. EXIF orientation is applied in place; palette, CMYK and alpha images become RGB (the alpha
    channel is dropped), 1-bit and gray-with-alpha ones 8-bit gray, 16-bit and float gray ones 8-bit gray.
    Each conversion holds at most the decoded image and its converted copy; gray stays one byte per pixel.

    Args:
        data: the file's bytes.
        max_pixels: largest accepted width x height (``None``: no limit of its own; Pillow's decompression-bomb
            guard still applies).
        name: what the messages call the image (a file name).

    Raises:
        ImageFileError: ``data`` is empty or not a decodable image; ``too_large`` is set when it has more pixels
            than ``max_pixels`` or than Pillow's decompression-bomb guard allows.
    """
    if not data:
        raise ImageFileError(f"{name} is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageFileError(f"{name}: {exc}", too_large=True) from exc
    except Exception as exc:  # PIL raises many types on foreign or damaged files
        raise ImageFileError(f"{name} is not an image (PNG, JPEG, WebP, BMP, TIFF, ... are accepted)") from exc
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ImageFileError(f"{name} is {width}x{height} = {width * height} pixels, more than the limit of "
                             f"{max_pixels}", too_large=True)
    try:
        ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb_or_gray(img)
    except Exception as exc:
        raise ImageFileError(f"cannot decode {name} ({img.format} {width}x{height}): {exc}") from exc


def _to_rgb_or_gray(img: Image.Image) -> Image.Image:
    if img.mode in ("RGB", "L"):
        return img
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    if not img.mode.startswith(("I", "F")):
        return img.convert("RGB")
    # 16/32-bit integer or float gray: bring to 0..255, strip by strip (a float64 copy of it all would be 8 B/pixel)
    scale = img.mode.startswith("I;16") or (img.getextrema()[1] or 0) > 255
    gray = Image.new("L", img.size)
    for top, bottom in row_strips(*img.size):
        values = np.asarray(img.crop((0, top, img.width, bottom)), dtype=np.float64)
        values = values / 257.0 if scale else values  # the 16-bit range onto the 8-bit range
        gray.paste(Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)), (0, top))
    return gray


def row_strips(width: int, height: int, pixels: int = 2**20) -> list[tuple[int, int]]:
    """Row ranges ``(top, bottom)`` of horizontal strips of about ``pixels`` pixels covering a width x height image."""
    rows = max(1, pixels // max(width, 1))
    return [(top, min(top + rows, height)) for top in range(0, height, rows)]


def rgb_rows(img: Image.Image, top: int, bottom: int) -> np.ndarray:
    """Rows ``top:bottom`` of an ``RGB`` or ``L`` Pillow image as ``uint8`` (rows, W, 3)."""
    rows = np.asarray(img.crop((0, top, img.width, bottom)))
    return np.repeat(rows[..., None], 3, axis=2) if rows.ndim == 2 else rows


def read_image(path: str | Path) -> np.ndarray:
    """Read a photo as ``uint8`` (H, W, 3) RGB, decoded by :func:`open_photo` (as the server decodes an upload):
    turned upright by its EXIF orientation, any mode brought to 8 bits.

    Raises:
        FileNotFoundError: no such file.
        ImageFileError: the file is not an image Pillow can decode (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        image = open_photo(path.read_bytes(), name=str(path))
    except ImageFileError as exc:
        raise ImageFileError(f"cannot read {path} as an image ({exc})", too_large=exc.too_large) from exc
    return rgb_rows(image, 0, image.height)


# --------------------------------------------------------------------------------------------------------------------
# Labels out: downscaled size, nearest-neighbour upsampling, class shares
# --------------------------------------------------------------------------------------------------------------------

def downscaled_size(width: int, height: int, max_size: int | None) -> tuple[int, int] | None:
    """``(width, height)`` scaled so that the longer side is ``max_size``, or ``None`` when it already fits."""
    if max_size is None or max(height, width) <= max_size:
        return None
    scale = max_size / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def nearest_indices(source: int, target: int) -> np.ndarray:
    """For each of ``target`` pixels along one axis, the index of the ``source`` pixel under its centre."""
    return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)


def class_fractions(labels: np.ndarray, size: tuple[int, int] | None = None) -> dict[str, float]:
    """Share of the pixels of each class, every class of :data:`CLASSES` in order (the shares sum to 1).

    Args:
        labels: class indices (h, w).
        size: ``(width, height)`` of the image the labels stand for when they were predicted on a downscaled copy:
            the shares are those of the labels brought to that size by nearest neighbour (computed exactly, without
            making them: each label pixel counts as many times as the full-size pixels that map onto it).
    """
    weights = None
    if size is not None:
        (h, w), (width, height) = labels.shape, size
        weights = np.outer(np.bincount(nearest_indices(h, height), minlength=h),
                           np.bincount(nearest_indices(w, width), minlength=w)).ravel()
    counts = np.bincount(labels.ravel(), weights=weights, minlength=NUM_CLASSES)[:NUM_CLASSES]
    shares = counts / max(counts.sum(), 1)
    return {name: float(share) for name, share in zip(CLASSES, shares)}


@dataclass(frozen=True)
class Prediction:
    """The class map of one image, kept at the resolution the network saw (``labels``), and the image's size.

    Attributes:
        labels: (h, w) class indices (``uint8`` from :meth:`Segmenter.segment`), predicted on the image or on a
            downscaled copy of it.
        width, height: the size of the image the labels stand for.
    """

    labels: np.ndarray
    width: int
    height: int

    def rows(self, top: int = 0, bottom: int | None = None) -> np.ndarray:
        """Rows ``top:bottom`` of the class map at the image's size, by nearest neighbour (pixel centres matched).

        Shape:
            (bottom - top, width) out, the dtype of ``labels``.
        """
        bottom = self.height if bottom is None else bottom
        h, w = self.labels.shape
        picked = self.labels[nearest_indices(h, self.height)[top:bottom]]
        return picked if w == self.width else picked[:, nearest_indices(w, self.width)]

    def full(self) -> np.ndarray:
        """The class map at the image's size, ``int64`` (height, width)."""
        return self.rows().astype(np.int64)

    def fractions(self) -> dict[str, float]:
        """Class name -> share of the image's pixels, every class in order (see :func:`class_fractions`)."""
        return class_fractions(self.labels, (self.width, self.height))


def resize_labels_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a class map (pixel centres matched), exact and interpolation-free.

    Shape:
        (h, w) in, (height, width) out, same dtype.
    """
    return Prediction(labels, width, height).rows()


# --------------------------------------------------------------------------------------------------------------------
# The class check
# --------------------------------------------------------------------------------------------------------------------

def check_num_classes(found: int | None, path: str | Path, expected: int | None = NUM_CLASSES) -> None:
    """Refuse a model that outputs another number of classes than ``expected`` (``None``: accept any).

    Raises:
        ModelFileError: ``found`` differs from ``expected`` (the message names the model file and the classes).
    """
    if expected is not None and found != expected:
        what = f"outputs {found} classes" if found is not None else "does not output (B, K, H, W) logits"
        raise ModelFileError(f"model {path} {what} but the course's class list has {NUM_CLASSES} "
                             f"({', '.join(CLASSES[:3])}, ..., {CLASSES[-1]}): it was not trained for these classes, "
                             "its predictions would be named wrongly")


def check_logits(logits: np.ndarray, path: str | Path) -> np.ndarray:
    """Return ``logits`` after checking that they are (B, K, H, W) with one channel per class of :data:`CLASSES`.

    Raises:
        ModelFileError: another shape or number of classes (the message names the model file).
    """
    check_num_classes(logits.shape[1] if logits.ndim == 4 else None, path)
    return logits


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

    def segment(self, image: np.ndarray | Image.Image, *, max_size: int | None = None) -> Prediction:
        """Predict the class map of one image of any size and mode: the one inference step of the library.

        Args:
            image: an array (grayscale, RGB, RGBA; see :func:`as_rgb`) or a Pillow image (``RGB`` or ``L``, what
                :func:`open_photo` gives, are used as they are; other modes are converted to ``RGB``).
            max_size: when the longer side exceeds it, predict on a copy downscaled (bilinear) to that longer side;
                the :class:`Prediction` brings the labels back to the image's size.

        Returns:
            The labels at the resolution the network saw, and the image's size.
        """
        if isinstance(image, Image.Image):
            image = image if image.mode in ("RGB", "L") else image.convert("RGB")
            width, height = image.size
        else:
            image = as_rgb(image)
            height, width = image.shape[:2]
        small_size = downscaled_size(width, height, max_size)
        if small_size is not None:  # bilinear, on the RGB (or gray) image as it is
            image = (image if isinstance(image, Image.Image) else Image.fromarray(image)).resize(
                small_size, Image.Resampling.BILINEAR)
        labels = self.predict_batch(np.asarray(image)[None])[0].astype(np.uint8)
        return Prediction(labels, width, height)

    def predict(self, image: np.ndarray | Image.Image, *, max_size: int | None = None) -> np.ndarray:
        """Class map of one image of any size and mode, at the image's size (:meth:`segment` then
        :meth:`Prediction.full`).

        Shape:
            (H, W[, C]) in, ``int64`` (H, W) out.
        """
        return self.segment(image, max_size=max_size).full()


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
    - ``enable_mem_pattern`` and ``enable_cpu_mem_arena``: buffers planned once per input shape and reused; the
      arena keeps the memory of the largest input the session saw, and is faster than allocating each time;
    - ``allow_spinning`` on: pool threads spin between operators instead of sleeping, which shortens a run when
      cores are free (``benchmarks/bench_infer.py`` measures these settings);
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
        check_num_classes(self.num_classes, self.path, num_classes)

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
        from labcode.runtime.checkpoint import load_model

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
        check_num_classes(self.num_classes, self.path, num_classes)

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
        max_size: see :meth:`Segmenter.segment`.

    Returns:
        ``image``, ``figure``, ``mask`` (paths), ``size`` ([width, height]) and ``fractions`` (class name -> share of
        the pixels, every class in the order of :data:`CLASSES`; see :func:`class_fractions`).
    """
    from labcode.viz import colorize, plot_inference

    image_path = Path(image_path)
    image = read_image(image_path)
    prediction = segmenter.segment(image, max_size=max_size)
    labels = prediction.full()
    out_path = Path(out_path) if out_path else image_path.with_name(f"{image_path.stem}_segmentation.png")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path = out_path.with_name(f"{out_path.stem}_mask.png")
    figure = plot_inference(image, labels, title=image_path.name)
    figure.savefig(out_path, dpi=100)
    Image.fromarray(colorize(labels)).save(mask_path)
    return {
        "image": str(image_path),
        "figure": str(out_path),
        "mask": str(mask_path),
        "size": [prediction.width, prediction.height],
        "fractions": prediction.fractions(),
    }
