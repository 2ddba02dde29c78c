# Your copy of the course library: labcode/uploads.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Uploaded images in, segmentation answers out, in memory bounded by the image's size and not by copies of it.

:func:`open_image` decodes an upload into an upright Pillow image (``RGB``, or ``L`` for gray photos, one byte per
pixel), refusing too many pixels from the header alone; :func:`predict_labels` runs the network on a copy whose
longer side is at most ``max_side`` and keeps the labels ``uint8`` at that resolution; :func:`render_png` brings
them to the image's size, colours or blends them and compresses the PNG strip by strip (:func:`encode_png_strips`),
so that neither a full-size label map nor a float copy nor the uncompressed answer is ever made;
:func:`class_fractions` gives the class shares of the full-size labels without making them.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from labcode.classes import CLASS_COLORS, CLASSES
from labcode.errors import LabError

if TYPE_CHECKING:
    from labcode.infer import Segmenter

#: Largest accepted width x height of an upload.
DEFAULT_MAX_PIXELS = 40_000_000


class UploadError(LabError, ValueError):
    """An upload the server refuses; ``status_code`` is the HTTP status of the answer (400 or 413)."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "upload") -> Image.Image:
    """Decode an uploaded file into an upright Pillow image of mode ``RGB`` or ``L`` (8-bit gray).

    The pixel count is checked on the header, before the pixels are decoded, so a small file announcing a huge image
    costs nothing. EXIF orientation is applied in place; palette, CMYK and alpha images become RGB (the alpha
    channel is dropped), 1-bit and gray-with-alpha ones 8-bit gray, 16-bit and float gray ones 8-bit gray.
    Each conversion holds at most the decoded image and its converted copy; gray stays one byte per pixel.

    Raises:
        UploadError: 400 when ``data`` is empty or not a decodable image, 413 when it has too many pixels (Pillow's
            own decompression-bomb guard also answers 413 past twice ``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    if not data:
        raise UploadError(f"{name} is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise UploadError(f"{name}: {exc}", 413) from exc
    except Exception as exc:  # PIL raises many types on foreign or damaged files
        raise UploadError(f"{name} is not an image (PNG, JPEG, WebP, BMP, TIFF, ... are accepted)") from exc
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise UploadError(f"{name} is {width}x{height} = {width * height} pixels, more than the limit of "
                          f"{max_pixels}", 413)
    try:
        ImageOps.exif_transpose(img, in_place=True)
        return _to_rgb_or_gray(img)
    except Exception as exc:
        raise UploadError(f"cannot decode {name} ({img.format} {width}x{height}): {exc}") from exc


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
    for top, bottom in _strips(*img.size):
        values = np.asarray(img.crop((0, top, img.width, bottom)), dtype=np.float64)
        values = values / 257.0 if scale else values  # the 16-bit range onto the 8-bit range
        gray.paste(Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)), (0, top))
    return gray


def _strips(width: int, height: int, pixels: int = 2**20) -> list[tuple[int, int]]:
    """Row ranges ``(top, bottom)`` of horizontal strips of about ``pixels`` pixels covering an image."""
    rows = max(1, pixels // max(width, 1))
    return [(top, min(top + rows, height)) for top in range(0, height, rows)]


def _rgb_rows(img: Image.Image, top: int, bottom: int) -> np.ndarray:
    """Rows ``top:bottom`` of an ``RGB`` or ``L`` image as ``uint8`` (rows, W, 3)."""
    rows = np.asarray(img.crop((0, top, img.width, bottom)))
    return np.repeat(rows[..., None], 3, axis=2) if rows.ndim == 2 else rows


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "upload") -> np.ndarray:
    """Decode an uploaded file into an upright RGB array (see :func:`open_image`).

    Shape:
        ``uint8`` (H, W, 3) out, H and W after the EXIF rotation.

    Raises:
        UploadError: as :func:`open_image`.
    """
    img = open_image(data, max_pixels=max_pixels, name=name)
    return _rgb_rows(img, 0, img.height)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB ``uint8`` (H, W, 3) image (fast compression: the answer is made once)."""
    height, width = image.shape[:2]
    return encode_png_strips((image[top:bottom] for top, bottom in _strips(width, height)), width, height)


def encode_png_strips(strips: Iterable[np.ndarray], width: int, height: int) -> bytes:
    """PNG bytes of an RGB ``uint8`` image given as horizontal strips, top to bottom, each compressed as it comes.

    The whole image is never held: memory is one strip and the compressed answer. Rows use PNG's "Sub" filter
    (each byte minus the one of the pixel on its left), which compresses photos and flat colours well at zlib
    level 1.

    Shape:
        each strip ``uint8`` (rows, width, 3); their rows add up to ``height``.
    """
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(level=1)
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    rows = 0
    for strip in strips:
        flat = np.ascontiguousarray(strip, dtype=np.uint8).reshape(len(strip), width * 3)
        filtered = np.empty((len(strip), 1 + width * 3), dtype=np.uint8)
        filtered[:, 0] = 1  # filter type Sub
        filtered[:, 1:4] = flat[:, :3]
        np.subtract(flat[:, 3:], flat[:, :-3], out=filtered[:, 4:])  # uint8 arithmetic wraps modulo 256, as PNG's
        rows += len(strip)
        if piece := compressor.compress(filtered):
            parts.append(chunk(b"IDAT", piece))
    if rows != height:
        raise ValueError(f"the strips hold {rows} rows, not {height}")
    parts += [chunk(b"IDAT", compressor.flush()), chunk(b"IEND", b"")]
    return b"".join(parts)


def legend() -> list[dict[str, Any]]:
    """The classes in order, each as ``{"index", "name", "color"}`` with a ``#rrggbb`` colour."""
    return [{"index": i, "name": name, "color": "#{:02x}{:02x}{:02x}".format(*CLASS_COLORS[i])}
            for i, name in enumerate(CLASSES)]


def class_fractions(labels: np.ndarray, size: tuple[int, int] | None = None) -> list[float]:
    """Share of the pixels of each class, in the order of ``CLASSES`` (they sum to 1).

    Args:
        labels: class indices (h, w).
        size: ``(width, height)`` of the image the labels stand for, when they were predicted on a downscaled copy:
            the shares are those of the labels brought to that size by nearest neighbour (computed exactly, without
            making them).
    """
    weights = None
    if size is not None:
        from labcode.infer import nearest_indices

        (h, w), (width, height) = labels.shape, size
        weights = np.outer(np.bincount(nearest_indices(h, height), minlength=h),
                           np.bincount(nearest_indices(w, width), minlength=w)).ravel()
    counts = np.bincount(labels.ravel(), weights=weights, minlength=len(CLASSES))[: len(CLASSES)]
    return (counts / max(counts.sum(), 1)).tolist()


def predict_labels(segmenter: Segmenter, img: Image.Image, max_side: int | None) -> np.ndarray:
    """Class map of a decoded upload at the resolution the network saw: the image itself, or a copy whose longer
    side is ``max_side`` (bilinear, as :meth:`labcode.infer.Segmenter.predict`).

    Shape:
        ``uint8`` (h, w) out; (H, W) of the image when it was not downscaled.
    """
    from labcode.infer import downscaled_size

    small_size = downscaled_size(img.width, img.height, max_side)
    small = img if small_size is None else img.resize(small_size, Image.Resampling.BILINEAR)
    return segmenter.predict_batch(_rgb_rows(small, 0, small.height)[None])[0].astype(np.uint8)


def render_png(img: Image.Image, labels: np.ndarray, view: str = "overlay", alpha: float = 0.5) -> bytes:
    """PNG of the image's size: the colourised labels (``view="mask"``) or blended over the image (``"overlay"``).

    The labels are brought to each strip's rows by nearest neighbour, coloured, blended and compressed strip by
    strip, so no full-size label map, float copy or answer image is ever made.

    Shape:
        ``labels`` (h, w) class indices of any resolution; the PNG is (H, W) of ``img``.
    """
    from labcode.infer import nearest_indices
    from labcode.viz import colorize, overlay

    width, height = img.size
    rows, cols = nearest_indices(labels.shape[0], height), nearest_indices(labels.shape[1], width)

    def strips() -> Iterator[np.ndarray]:
        for top, bottom in _strips(width, height):
            strip_labels = labels[rows[top:bottom]][:, cols]  # (rows, W), the dtype of ``labels``
            if view == "mask":
                yield colorize(strip_labels)
            else:
                yield overlay(_rgb_rows(img, top, bottom), strip_labels, alpha)

    return encode_png_strips(strips(), width, height)
