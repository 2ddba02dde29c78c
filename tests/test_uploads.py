"""Uploads in, answers out (labcode.serving.uploads): decoding with pixel limits, downscaled prediction, strip-wise
PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labcode.classes import CLASSES
from tests.test_serve import decode_png, encode, photo, png_header_only, tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory)


# --------------------------------------------------------------------------------------------------------------------
# In-process: decoding, loading once, the command's errors
# --------------------------------------------------------------------------------------------------------------------

def test_decode_scales_16_bit_grayscale_to_8_bit():
    from labcode.serving.uploads import decode_image

    values = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    image = decode_image(encode(Image.fromarray(values), "PNG"))
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], np.rint(values / 257.0).astype(np.uint8))
    assert (image == image[..., :1]).all()


def test_decode_checks_pixels_before_decoding():
    from labcode.serving.uploads import UploadError, decode_image

    data = png_header_only(100, 100)
    with pytest.raises(UploadError) as refused:
        decode_image(data, max_pixels=9999, name="x.png")
    assert refused.value.status_code == 413 and "x.png is 100x100" in str(refused.value)
    with pytest.raises(UploadError) as broken:  # allowed size: now the missing data is found
        decode_image(data, max_pixels=10_000, name="x.png")
    assert broken.value.status_code == 400 and "cannot decode x.png" in str(broken.value)


def test_png_strips_encode_exactly_the_image():
    from labcode.serving.uploads import encode_png, encode_png_strips

    image = np.asarray(photo(301, 97, seed=4))
    for data in (encode_png(image), encode_png_strips([image[:10], image[10:11], image[11:]], 301, 97)):
        np.testing.assert_array_equal(decode_png(data), image)
    with pytest.raises(ValueError, match="96 rows, not 97"):
        encode_png_strips([image[:96]], 301, 97)


def nearest_by_formula(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize written out pixel by pixel: output (y, x) takes input row (2y + 1) h // 2H and
    column (2x + 1) w // 2W, the input pixel under the output pixel's centre."""
    h, w = labels.shape
    return np.array([[labels[(2 * y + 1) * h // (2 * height), (2 * x + 1) * w // (2 * width)] for x in range(width)]
                     for y in range(height)], dtype=labels.dtype)


def test_answers_of_a_downscaled_prediction_are_those_of_the_full_size_labels(model_path):
    from labcode.infer import OnnxSegmenter
    from labcode.serving.uploads import open_image, render_png
    from labcode.viz import colorize

    segmenter = OnnxSegmenter(model_path, providers=["CPUExecutionProvider"])
    img = open_image(encode(photo(700, 433, seed=9), "PNG"))
    prediction = segmenter.segment(img, max_size=256)
    assert prediction.labels.dtype == np.uint8 and prediction.labels.shape == (158, 256)
    assert len(np.unique(prediction.labels)) > 1
    full = nearest_by_formula(prediction.labels, 433, 700)
    np.testing.assert_array_equal(decode_png(render_png(img, prediction, "mask")), colorize(full))
    counts = np.bincount(full.ravel(), minlength=len(CLASSES))
    assert list(prediction.fractions()) == list(CLASSES)
    np.testing.assert_allclose(list(prediction.fractions().values()), counts / full.size, atol=1e-12)
    with pytest.raises(ValueError, match="700x433 image cannot be drawn on a 70x43"):
        render_png(img.resize((70, 43)), prediction, "mask")


def test_gray_uploads_are_segmented_as_their_rgb_copy(model_path):
    from labcode.infer import OnnxSegmenter
    from labcode.serving.uploads import open_image

    segmenter = OnnxSegmenter(model_path, providers=["CPUExecutionProvider"])
    gray = open_image(encode(photo(300, 200, seed=3).convert("L"), "PNG"))
    assert gray.mode == "L"
    rgb = np.repeat(np.asarray(gray)[..., None], 3, axis=2)
    for max_size in (None, 100):
        np.testing.assert_array_equal(segmenter.segment(gray, max_size=max_size).labels,
                                      segmenter.segment(rgb, max_size=max_size).labels)
