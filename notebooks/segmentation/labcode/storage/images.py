# Your copy of the course library: labcode/storage/images.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Image file decoding for the data set reader: :func:`read_rgb` and :func:`read_codes` pick the fastest PNG decoder
installed, by themselves, and give exactly OpenCV's pixels whichever it is. Callers never choose a decoder;
:func:`read_with` names one only to compare them (the tests and ``benchmarks/bench_loader.py``, which times each).

Decoders, fastest first:

- ``wuffs``: `Wuffs <https://github.com/google/wuffs>`_ through ``pywuffs`` (built from source, see
  ``requirements-optional.txt``). It writes RGB straight from the file for photos, and 4-byte BGRA for label images,
  whose little-endian ``uint32`` view is the packed code: no colour conversion, no extra copy.
- ``spng``: libspng through ``imagecodecs`` (a wheel, pinned in ``requirements.txt``).
- ``opencv``: ``cv2.imdecode``, always there; it reads every file the others do not take.

The two fast decoders take only the PNGs they are tested identical on: 8-bit grayscale, RGB or RGBA, not interlaced,
without a ``tRNS`` transparency chunk, which is what 2D-3D-S and the generated data set store. Every other file
(16-bit, palette, gray + alpha, interlaced, JPEG, ...) goes through OpenCV, whose conversions define the results:
16-bit samples keep their 8 most significant bits, gray is replicated on the three channels, alpha is dropped.
Wuffs verifies the zlib and chunk checksums, like OpenCV's libpng; libspng does not check chunk CRCs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from labcode.errors import DatasetError, UnknownNameError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour types the fast decoders take (with bit depth 8): gray, RGB, RGBA.
GRAY, RGB, RGBA = 0, 2, 6


class PngHeader(NamedTuple):
    """The IHDR fields of a PNG that choose its decoder, and whether a ``tRNS`` chunk precedes the image data."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlaced: bool
    has_trns: bool


def png_header(data: bytes) -> PngHeader | None:
    """Parse the header of a PNG held in ``data``; ``None`` when it is not a PNG (or too short to be one)."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    has_trns, pos = False, 8
    while pos + 8 <= len(data):  # the chunks before the image data: a handful
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            break
        if kind == b"tRNS":
            has_trns = True
            break
        pos += 12 + length
    return PngHeader(width, height, bit_depth, color_type, interlace != 0, has_trns)


def _fast_path(header: PngHeader | None) -> bool:
    return (header is not None and header.bit_depth == 8 and header.color_type in (GRAY, RGB, RGBA)
            and not header.interlaced and not header.has_trns)


def _codes_of_bgra(bgra: np.ndarray) -> np.ndarray:
    """``uint32`` (H, W) codes ``R << 16 | G << 8 | B`` from a contiguous (H, W, 4) BGRA (or BGRx) array, in place."""
    code = bgra.view(np.uint32)[..., 0]
    if not np.little_endian:
        code = code.byteswap()
    return np.bitwise_and(code, 0x00FFFFFF, out=code)


def pack_codes(image_bgr: np.ndarray) -> np.ndarray:
    """Pack an OpenCV-ordered image (gray (H, W), BGR or BGRA) into ``uint32`` codes ``R << 16 | G << 8 | B``.

    A gray pixel ``g`` is the colour ``(g, g, g)``; alpha is ignored. The bytes go through one 4-byte BGRA array
    whose little-endian ``uint32`` view is the code (the alpha byte masked away).
    """
    if image_bgr.ndim == 2:
        bgra = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGRA)
    elif image_bgr.shape[2] == 4:
        bgra = np.array(image_bgr, dtype=np.uint8, order="C")
    else:
        bgra = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2BGRA)
    return _codes_of_bgra(bgra)


# --------------------------------------------------------------------------------------------------------------------
# Decoders: each turns the bytes of a PNG that passed _fast_path into RGB, or into packed codes
# --------------------------------------------------------------------------------------------------------------------

class Decoder(NamedTuple):
    """A PNG decoder for the fast path: ``rgb(data, header)`` gives ``uint8`` (H, W, 3) RGB, ``codes(data, header)``
    ``uint32`` (H, W) packed codes; both raise on a damaged file."""

    rgb: Callable[[bytes, PngHeader], np.ndarray]
    codes: Callable[[bytes, PngHeader], np.ndarray]
    version: str


def _wuffs_decoder() -> Decoder:
    from pywuffs import ImageDecoderQuirks, ImageDecoderType, PixelFormat
    from pywuffs.aux import ImageDecoder, ImageDecoderConfig

    def decode(data: bytes, pixel_format) -> np.ndarray:
        config = ImageDecoderConfig()  # about a microsecond: made per call, so nothing is shared between threads
        config.enabled_decoders = [ImageDecoderType.PNG]
        config.pixel_format = pixel_format
        config.quirks = {ImageDecoderQuirks.IGNORE_CHECKSUM: 0}  # verify zlib and chunk checksums, as libpng does
        result = ImageDecoder(config).decode(data)
        if result.error_message:
            raise ValueError(result.error_message)
        return result.pixbuf

    def rgb(data: bytes, header: PngHeader) -> np.ndarray:
        if header.color_type == RGBA:  # Wuffs would composite RGBA onto black for an RGB output: drop alpha instead
            return cv2.cvtColor(decode(data, PixelFormat.RGBA_NONPREMUL), cv2.COLOR_RGBA2RGB)
        return decode(data, PixelFormat.RGB)  # gray is replicated by Wuffs

    def codes(data: bytes, header: PngHeader) -> np.ndarray:
        return _codes_of_bgra(decode(data, PixelFormat.BGRA_NONPREMUL))

    return Decoder(rgb, codes, f"Wuffs (pywuffs {_dist_version('pywuffs')})")


def _spng_decoder() -> Decoder:
    import imagecodecs

    if not imagecodecs.SPNG.available:
        raise ImportError("imagecodecs was built without libspng")

    def rgb(data: bytes, header: PngHeader) -> np.ndarray:
        image = imagecodecs.spng_decode(data)  # G8 (H, W), RGB8 or RGBA8 in file order
        if header.color_type == GRAY:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        if header.color_type == RGBA:
            return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
        return image

    def codes(data: bytes, header: PngHeader) -> np.ndarray:
        image = imagecodecs.spng_decode(data)
        conversion = {GRAY: cv2.COLOR_GRAY2BGRA, RGB: cv2.COLOR_RGB2BGRA, RGBA: cv2.COLOR_RGBA2BGRA}[header.color_type]
        return _codes_of_bgra(cv2.cvtColor(image, conversion))

    return Decoder(rgb, codes, f"libspng ({imagecodecs.spng_version()}, imagecodecs {imagecodecs.__version__})")


def _opencv_decoder() -> Decoder:
    def rgb(data: bytes, header: PngHeader) -> np.ndarray:
        return _opencv_to_rgb(_opencv_decode(data))

    def codes(data: bytes, header: PngHeader) -> np.ndarray:
        return pack_codes(_opencv_decode(data))

    return Decoder(rgb, codes, f"OpenCV {cv2.__version__}")


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


#: Decoder factories, fastest first; a factory raises ImportError when its package is missing.
DECODERS: dict[str, Callable[[], Decoder]] = {"wuffs": _wuffs_decoder, "spng": _spng_decoder, "opencv": _opencv_decoder}


@cache
def _load(name: str) -> Decoder | None:
    try:
        return DECODERS[name]()
    except ImportError:
        return None


def available_decoders() -> list[str]:
    """Names of the installed decoders, fastest first (``"opencv"`` always last)."""
    return [name for name in DECODERS if _load(name) is not None]


def default_decoder() -> str:
    """The decoder used when none is named: the fastest installed."""
    return available_decoders()[0]


def decoder_version(name: str | None = None) -> str:
    """Library and version of a decoder (default: the default decoder), e.g. ``"libspng (libspng 0.7.4, ...)"``."""
    return _get(name).version


def _get(name: str | None) -> Decoder:
    name = default_decoder() if name is None else name
    if name not in DECODERS:
        raise UnknownNameError(f"unknown decoder {name!r}; choose one of: {', '.join(DECODERS)}")
    decoder = _load(name)
    if decoder is None:
        raise UnknownNameError(f"decoder {name!r} is not installed; installed: {', '.join(available_decoders())}")
    return decoder


# --------------------------------------------------------------------------------------------------------------------
# OpenCV: every file the fast path does not take
# --------------------------------------------------------------------------------------------------------------------

def _opencv_decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise ValueError("OpenCV cannot decode it")
    if image.dtype == np.uint16:  # 16-bit PNGs: keep the 8 most significant bits
        image = (image >> 8).astype(np.uint8)
    return image


def _opencv_to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------------

def _read(path: Path, decoder: str | None) -> tuple[bytes, PngHeader | None, Decoder]:
    chosen = _get(decoder)  # unknown names fail before the file is read
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    data = path.read_bytes()
    return data, png_header(data), chosen


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Turn a decoder's error (imagecodecs raises RuntimeError subclasses) into a DatasetError naming the file."""
    try:
        yield
    except (ValueError, RuntimeError) as exc:
        raise DatasetError(f"cannot decode image file {path} (not a readable PNG/JPEG: {exc})") from exc


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as ``uint8`` (H, W, 3) RGB; gray, RGBA and 16-bit inputs are converted as OpenCV does.

    Args:
        path: a PNG (or any format OpenCV reads), decoded by the fastest installed decoder.

    Raises:
        DatasetError: the file is missing or cannot be decoded (the message names it).
    """
    return read_with(path)


def read_codes(path: str | Path) -> np.ndarray:
    """Read a label image as ``uint32`` (H, W) codes ``R * 65536 + G * 256 + B`` (the 2D-3D-S semantic encoding).

    Gray pixels count as ``(g, g, g)``, alpha is ignored, 16-bit samples keep their 8 most significant bits.
    Arguments and errors as :func:`read_rgb`.
    """
    return read_with(path, codes=True)


def read_with(path: str | Path, decoder: str | None = None, *, codes: bool = False) -> np.ndarray:
    """:func:`read_rgb` (or :func:`read_codes` when ``codes``) with a named decoder, to compare decoders.

    Args:
        path: the image file.
        decoder: a name from :data:`DECODERS` (default: the fastest installed, as :func:`read_rgb` uses).
        codes: return packed label codes instead of RGB.

    Raises:
        UnknownNameError: ``decoder`` is unknown or not installed (checked before the file is read).
        DatasetError: the file is missing or cannot be decoded (the message names it).
    """
    path = Path(path)
    data, header, chosen = _read(path, decoder)
    with _decoding(path):
        if codes:
            return chosen.codes(data, header) if _fast_path(header) else pack_codes(_opencv_decode(data))
        return chosen.rgb(data, header) if _fast_path(header) else _opencv_to_rgb(_opencv_decode(data))
