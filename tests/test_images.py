"""labcode.storage.images: every installed decoder gives the pixels of a hand-written PNG and exactly OpenCV's
pixels."""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from labcode.errors import DatasetError, UnknownNameError
from labcode.storage import images
from labcode.storage.dataformat import read_rgb, read_semantic

DECODERS = images.available_decoders()


# --------------------------------------------------------------------------------------------------------------------
# A PNG encoder written from the specification, independent of every decoder under test
# --------------------------------------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def encode_png(samples: np.ndarray, color_type: int, bit_depth: int = 8, *, palette: np.ndarray | None = None,
               extra_chunks: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """PNG bytes of ``samples`` (H, W) or (H, W, C); rows cycle through the five filter types (None, Sub, Up,
    Average, Paeth) and the compressed stream is split over two IDAT chunks."""
    height, width = samples.shape[:2]
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    dtype = ">u2" if bit_depth == 16 else np.uint8
    raw = np.ascontiguousarray(samples.astype(dtype)).view(np.uint8).reshape(height, -1).astype(np.int64)
    bpp = channels * bit_depth // 8
    rows, previous = [], np.zeros(raw.shape[1], dtype=np.int64)
    for y in range(height):
        current = raw[y]
        left = np.concatenate([np.zeros(bpp, dtype=np.int64), current[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, dtype=np.int64), previous[:-bpp]])
        kind = y % 5
        predictor = [0, left, previous, (left + previous) // 2, _paeth(left, previous, up_left)][kind]
        rows.append(bytes([kind]) + ((current - predictor) % 256).astype(np.uint8).tobytes())
        previous = current
    stream = zlib.compress(b"".join(rows), 9)
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))]
    if palette is not None:
        chunks.append(_chunk(b"PLTE", palette.astype(np.uint8).tobytes()))
    chunks += [_chunk(kind, data) for kind, data in extra_chunks]
    half = len(stream) // 2
    chunks += [_chunk(b"IDAT", stream[:half]), _chunk(b"IDAT", stream[half:]), _chunk(b"IEND", b"")]
    return images.PNG_SIGNATURE + b"".join(chunks)


def codes_of(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]


def hand_written_cases() -> dict[str, tuple[bytes, np.ndarray]]:
    """name -> (PNG bytes, the RGB image a reader must return)."""
    rng = np.random.default_rng(3)
    shape = (11, 37)
    gray8, rgb8, rgba8 = (rng.integers(0, 256, shape + c, dtype=np.uint8) for c in ((), (3,), (4,)))
    gray16, rgb16, rgba16 = (rng.integers(0, 65536, shape + c, dtype=np.uint16) for c in ((), (3,), (4,)))
    gray_alpha = rng.integers(0, 256, (*shape, 2), dtype=np.uint8)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    indices = rng.integers(0, 16, shape, dtype=np.uint8)
    def to8(a: np.ndarray) -> np.ndarray:  # 16-bit: the 8 most significant bits
        return (a >> 8).astype(np.uint8)

    def gray(g: np.ndarray) -> np.ndarray:
        return np.repeat(g[..., None], 3, axis=2)

    return {
        "gray8": (encode_png(gray8, 0), gray(gray8)),
        "rgb8": (encode_png(rgb8, 2), rgb8),
        "rgba8": (encode_png(rgba8, 6), rgba8[..., :3]),
        "rgb8 with gAMA and sRGB chunks": (encode_png(rgb8, 2, extra_chunks=(
            (b"gAMA", struct.pack(">I", 100000)), (b"sRGB", b"\x00"))), rgb8),
        "gray16": (encode_png(gray16, 0, 16), gray(to8(gray16))),
        "rgb16": (encode_png(rgb16, 2, 16), to8(rgb16)),
        "rgba16": (encode_png(rgba16, 6, 16), to8(rgba16[..., :3])),
        "gray+alpha8": (encode_png(gray_alpha, 4), gray(gray_alpha[..., 0])),
        "palette8": (encode_png(indices, 3, palette=palette), palette[indices]),
        "rgb8 with tRNS": (encode_png(rgb8, 2, extra_chunks=((b"tRNS", struct.pack(">HHH", *rgb8[0, 0])),)), rgb8),
    }


CASES = hand_written_cases()


# --------------------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------------------

def test_opencv_is_always_there_and_last() -> None:
    assert DECODERS[-1] == "opencv" and images.default_decoder() == DECODERS[0]
    assert all(name in images.DECODERS for name in DECODERS)
    assert images.decoder_version("opencv") == f"OpenCV {cv2.__version__}"


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("case", list(CASES))
def test_hand_written_png_decodes_to_its_pixels(tmp_path: Path, decoder: str, case: str) -> None:
    data, want = CASES[case]
    path = tmp_path / "image.png"
    path.write_bytes(data)
    rgb = images.read_with(path, decoder)
    assert rgb.dtype == np.uint8 and rgb.shape == want.shape
    np.testing.assert_array_equal(rgb, want)
    codes = images.read_with(path, decoder, codes=True)
    assert codes.dtype == np.uint32
    np.testing.assert_array_equal(codes, codes_of(want))


def test_only_plain_8_bit_pngs_take_the_fast_path() -> None:
    header = images.png_header(CASES["rgb8"][0])
    assert header == images.PngHeader(37, 11, 8, 2, False, False)
    fast = {name for name, (data, _) in CASES.items() if images._fast_path(images.png_header(data))}
    assert fast == {"gray8", "rgb8", "rgba8", "rgb8 with gAMA and sRGB chunks"}
    assert images.png_header(b"\xff\xd8\xff\xe0 a JPEG") is None


def _photo_like(size: int, seed: int) -> np.ndarray:
    """Smooth gradients, flat areas and noise: every PNG filter type gets chosen by the encoders."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([(x * 255 // size), (y * 255 // size), ((x + y) * 127 // size)], axis=-1)
    noise = rng.integers(-12, 13, (size, size, 3))
    image = np.clip(base + noise, 0, 255).astype(np.uint8)
    image[size // 3: size // 2, size // 4: size // 2] = (200, 40, 90)
    return image


@pytest.mark.parametrize("decoder", DECODERS)
def test_decoders_equal_opencv_on_files_written_by_other_encoders(tmp_path: Path, synth_root: Path,
                                                                  decoder: str) -> None:
    files = sorted(synth_root.glob("area_*/data/*/*.png"))[:12]
    photo = _photo_like(150, seed=1)
    for level in (0, 1, 6, 9):  # stored, fast and best deflate blocks (OpenCV's encoder)
        files.append(tmp_path / f"cv2_{level}.png")
        cv2.imwrite(str(files[-1]), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, level])
    files.append(tmp_path / "pil.png")  # PIL's encoder, with its own filter choice
    Image.fromarray(photo).save(files[-1], optimize=True)
    files.append(tmp_path / "pil_rgba.png")
    Image.fromarray(np.dstack([photo, photo[..., 0]])).save(files[-1])
    for path in files:
        reference = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        want_rgb = cv2.cvtColor(reference, cv2.COLOR_BGRA2RGB if reference.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(images.read_with(path, decoder), want_rgb, err_msg=str(path))
        np.testing.assert_array_equal(images.read_with(path, decoder, codes=True), codes_of(want_rgb),
                                      err_msg=str(path))


@pytest.mark.parametrize("case", ["rgb8", "rgb16"])
def test_data_readers_choose_no_decoder_and_convert_16_bit(tmp_path: Path, case: str) -> None:
    data, want = CASES[case]
    path = tmp_path / "image.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_rgb(path), want)
    np.testing.assert_array_equal(images.read_rgb(path), images.read_with(path, images.default_decoder()))
    lut = np.arange(256, dtype=np.uint8) % 14
    labels = read_semantic(path, lut)
    np.testing.assert_array_equal(labels, lut[np.minimum(codes_of(want), 255)])


def _damaged(data: bytes, kind: str) -> bytes:
    if kind == "not a PNG":
        return b"this is not a png"
    if kind == "truncated":
        return data[: len(data) // 2]
    # "bad zlib checksum": flip the stream's last (Adler-32) byte and fix the chunk CRC, so only the checksum is wrong
    start = data.rindex(b"IDAT") - 4
    length = struct.unpack(">I", data[start:start + 4])[0]
    payload = bytearray(data[start + 8:start + 8 + length])
    payload[-1] ^= 0xFF
    return data[:start] + _chunk(b"IDAT", bytes(payload)) + data[start + 12 + length:]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("kind", ["not a PNG", "truncated", "bad zlib checksum"])
def test_damaged_files_raise_naming_the_file(tmp_path: Path, decoder: str, kind: str) -> None:
    path = tmp_path / "broken_frame.png"
    path.write_bytes(_damaged(CASES["rgb8"][0], kind))
    for codes in (False, True):
        with pytest.raises(DatasetError, match="cannot decode image file .*broken_frame.png"):
            images.read_with(path, decoder, codes=codes)


def test_missing_file_and_unknown_decoder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="image file not found: .*nowhere.png"):
        images.read_rgb(tmp_path / "nowhere.png")
    with pytest.raises(UnknownNameError, match="unknown decoder 'libpng'; choose one of: wuffs, spng, opencv"):
        images.read_with(tmp_path / "nowhere.png", "libpng")


def test_without_the_fast_packages_opencv_reads_everything(tmp_path: Path, monkeypatch) -> None:
    try:
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "pywuffs", None)  # import fails as if not installed
            patch.setitem(sys.modules, "imagecodecs", None)
            images._load.cache_clear()
            assert images.available_decoders() == ["opencv"] and images.default_decoder() == "opencv"
            with pytest.raises(UnknownNameError, match="'spng' is not installed; installed: opencv"):
                images.read_with(tmp_path / "x.png", "spng")
            for name in ("rgb8", "rgba8", "rgb16"):
                data, want = CASES[name]
                (tmp_path / "x.png").write_bytes(data)
                np.testing.assert_array_equal(images.read_rgb(tmp_path / "x.png"), want)
    finally:
        images._load.cache_clear()
    assert images.available_decoders() == DECODERS
