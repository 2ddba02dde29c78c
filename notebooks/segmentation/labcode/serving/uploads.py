# Your copy of the course library: labcode/serving/uploads.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Uploaded images in, segmentation answers out, in memory bounded by the image's size and not by copies of it.

The web service (:mod:`labcode.serving.serve`) goes through the library's one inference path (:mod:`labcode.infer`):
:func:`open_image` decodes an upload with :func:`labcode.infer.open_photo` (an upright Pillow image, ``RGB`` or ``L``
for gray photos, one byte per pixel), refusing too many pixels from the header alone and answering with an HTTP
status; :meth:`labcode.infer.Segmenter.segment` predicts on a copy whose longer side is at most ``max_side`` and
keeps the labels ``uint8`` at that resolution; :func:`render_png` brings them to the image's size
(:meth:`labcode.infer.Prediction.rows`), colours or blends them and compresses the PNG strip by strip
(:func:`encode_png_strips`), so that neither a full-size label map nor a float copy nor the uncompressed answer is
ever made.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from PIL import Image

from labcode.classes import CLASS_COLORS, CLASSES
from labcode.errors import LabError
from labcode.infer import ImageFileError, Prediction, open_photo, rgb_rows, row_strips

#: Largest accepted width x height of an upload.
DEFAULT_MAX_PIXELS = 40_000_000


class UploadError(LabError, ValueError):
    """An upload the server refuses; ``status_code`` is the HTTP status of the answer (400 or 413)."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "upload") -> Image.Image:
    """Decode an uploaded file into an upright Pillow image of mode ``RGB`` or ``L`` (8-bit gray), as
    :func:`labcode.infer.open_photo` does, with a pixel limit.

    Raises:
        UploadError: 400 when ``data`` is empty or not a decodable image, 413 when it has too many pixels (Pillow's
            own decompression-bomb guard also answers 413 past twice ``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    try:
        return open_photo(data, max_pixels=max_pixels, name=name)
    except ImageFileError as exc:
        raise UploadError(str(exc), 413 if exc.too_large else 400) from exc


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "upload") -> np.ndarray:
    """Decode an uploaded file into an upright RGB array (see :func:`open_image`).

    Shape:
        ``uint8`` (H, W, 3) out, H and W after the EXIF rotation.

    Raises:
        UploadError: as :func:`open_image`.
    """
    img = open_image(data, max_pixels=max_pixels, name=name)
    return rgb_rows(img, 0, img.height)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB ``uint8`` (H, W, 3) image (fast compression: the answer is made once)."""
    height, width = image.shape[:2]
    return encode_png_strips((image[top:bottom] for top, bottom in row_strips(width, height)), width, height)


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


def render_png(img: Image.Image, prediction: Prediction, view: str = "overlay", alpha: float = 0.5) -> bytes:
    """PNG of the image's size: the colourised labels (``view="mask"``) or blended over the image (``"overlay"``).

    The labels are brought to each strip's rows by :meth:`labcode.infer.Prediction.rows`, coloured, blended and
    compressed strip by strip, so no full-size label map, float copy or answer image is ever made.

    Shape:
        ``prediction`` of the image ``img``; the PNG is (H, W) of ``img``.
    """
    from labcode.viz import colorize, overlay

    width, height = img.size
    if (prediction.width, prediction.height) != (width, height):
        raise ValueError(f"a prediction for a {prediction.width}x{prediction.height} image cannot be drawn on a "
                         f"{width}x{height} one")

    def strips() -> Iterator[np.ndarray]:
        for top, bottom in row_strips(width, height):
            strip_labels = prediction.rows(top, bottom)  # (rows, W) uint8
            if view == "mask":
                yield colorize(strip_labels)
            else:
                yield overlay(rgb_rows(img, top, bottom), strip_labels, alpha)

    return encode_png_strips(strips(), width, height)
