"""Inference: image reading (modes, EXIF), segmenters (ONNX and checkpoint), area metrics, single-photo figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labcode.classes import NUM_CLASSES
from labcode.errors import LabError
from labcode.export import export_onnx
from labcode.infer import (
    ImageFileError,
    ModelFileError,
    OnnxSegmenter,
    TorchSegmenter,
    as_rgb,
    load_segmenter,
    read_image,
    resize_labels_nearest,
    segment_image_file,
)
from labcode.models import build_model
from labcode.runtime.checkpoint import save_checkpoint
from labcode.transforms import preprocess


def sharpened_unet() -> torch.nn.Module:
    """A tiny UNet whose classifier is sharpened, so that it predicts several classes (also used by test_scoring)."""
    torch.manual_seed(0)
    model = build_model("unet", NUM_CLASSES, num_blocks=2, base_chan=4).eval()
    classifier = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        classifier.weight.mul_(30.0)
        classifier.bias.zero_()
    return model


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    """A tiny UNet with a sharpened classifier (so that it predicts several classes), as ONNX and checkpoint."""
    model = sharpened_unet()
    folder = tmp_path_factory.mktemp("models")
    ckpt = save_checkpoint({"model": model.state_dict(), "model_name": "unet", "num_classes": NUM_CLASSES,
                            "model_options": {"num_blocks": 2, "base_chan": 4}}, folder / "best.pt")
    onnx_path = export_onnx(model, folder / "best.onnx", example_size=(32, 32))
    return model, onnx_path, ckpt


def torch_labels(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(preprocess(image))[None]).argmax(1)[0].numpy()


def test_as_rgb_converts_gray_rgba_and_float() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(as_rgb(gray), np.repeat(gray[..., None], 3, axis=2))
    rgba = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    assert np.array_equal(as_rgb(rgba), rgba[..., :3])
    assert np.array_equal(as_rgb(np.full((2, 2, 3), 0.5)), np.full((2, 2, 3), 128, dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        as_rgb(np.zeros((2, 2, 2)))


def test_read_image_honours_exif_orientation_and_converts_modes(tmp_path: Path) -> None:
    # left half red, right half blue, 40 wide and 20 high, stored with "rotate 90 clockwise to display" (6)
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = read_image(tmp_path / "rotated.jpg")
    assert upright.shape == (40, 20, 3)  # displayed portrait
    # after a clockwise quarter turn the left (red) half is on top
    assert upright[:15, :, 0].mean() > 200 and upright[:15, :, 2].mean() < 60
    assert upright[25:, :, 2].mean() > 200 and upright[25:, :, 0].mean() < 60
    Image.fromarray(np.full((5, 6, 4), 200, dtype=np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((5, 6), 90, dtype=np.uint8), mode="L").save(tmp_path / "gray.png")
    assert read_image(tmp_path / "rgba.png").shape == (5, 6, 3)
    assert np.array_equal(read_image(tmp_path / "gray.png"), np.full((5, 6, 3), 90, dtype=np.uint8))


def test_read_image_decodes_as_the_server_does(tmp_path: Path) -> None:
    from labcode.serving.uploads import open_image

    values = np.linspace(0, 65535, 30 * 40).reshape(30, 40).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # 16-bit gray: scaled to 8 bits, not clipped at 255
    image = read_image(tmp_path / "deep.png")
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 1], np.rint(values / 257.0).astype(np.uint8))
    served = open_image((tmp_path / "deep.png").read_bytes()).convert("RGB")
    np.testing.assert_array_equal(image, np.asarray(served))


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image at all")
    with pytest.raises(ImageFileError, match="notes.jpg") as info:
        read_image(tmp_path / "notes.jpg")
    assert isinstance(info.value, LabError)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def nearest_by_formula(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Output pixel (y, x) takes the input pixel under its centre: row (2y + 1) h // 2H, column (2x + 1) w // 2W."""
    h, w = labels.shape
    return np.array([[labels[(2 * y + 1) * h // (2 * height), (2 * x + 1) * w // (2 * width)] for x in range(width)]
                     for y in range(height)], dtype=labels.dtype)


def test_resize_labels_nearest_picks_the_source_pixel_under_each_centre() -> None:
    labels = np.arange(6).reshape(2, 3)
    up = resize_labels_nearest(labels, 4, 6)
    assert np.array_equal(up, np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1))
    assert np.array_equal(resize_labels_nearest(up, 2, 3), labels)
    rng = np.random.default_rng(5)
    for (h, w), (height, width) in [((7, 11), (23, 17)), ((158, 256), (433, 700)), ((9, 4), (3, 10)), ((1, 1), (5, 2))]:
        labels = rng.integers(0, NUM_CLASSES, (h, w)).astype(np.uint8)
        np.testing.assert_array_equal(resize_labels_nearest(labels, height, width),
                                      nearest_by_formula(labels, height, width), err_msg=f"{h}x{w} -> {height}x{width}")


def test_a_prediction_gives_full_size_rows_and_class_shares_of_its_image() -> None:
    from labcode.classes import CLASSES
    from labcode.infer import Prediction, class_fractions

    labels = np.random.default_rng(6).integers(0, 5, (13, 21)).astype(np.uint8)
    prediction = Prediction(labels, width=50, height=31)
    full = nearest_by_formula(labels, 31, 50)
    np.testing.assert_array_equal(prediction.full(), full)
    assert prediction.full().dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([prediction.rows(0, 7), prediction.rows(7, 30),
                                                  prediction.rows(30, 31)]), full)
    shares = prediction.fractions()
    assert list(shares) == list(CLASSES) and sum(shares.values()) == pytest.approx(1.0)
    for k, name in enumerate(CLASSES):
        assert shares[name] == pytest.approx((full == k).mean(), abs=1e-12), name
    assert class_fractions(labels) == {name: pytest.approx((labels == k).mean()) for k, name in enumerate(CLASSES)}


def test_onnx_and_checkpoint_segmenters_agree_with_pytorch(model_files) -> None:
    model, onnx_path, ckpt = model_files
    onnx_seg, torch_seg = OnnxSegmenter(onnx_path), TorchSegmenter(ckpt, device="cpu")
    if not torch.cuda.is_available():
        assert onnx_seg.providers == ["CPUExecutionProvider"]
    image = np.random.default_rng(1).integers(0, 256, (27, 45, 3), dtype=np.uint8)
    expected = torch_labels(model, image)
    for segmenter in (onnx_seg, torch_seg):
        got = segmenter.predict(image)
        assert got.dtype == np.int64 and got.shape == (27, 45)
        assert (got == expected).mean() > 0.999  # float rounding may flip a near-tie
    assert len(np.unique(expected)) > 1
    batch = onnx_seg.predict_batch(np.stack([image, image[::-1]]))
    assert batch.shape == (2, 27, 45) and np.array_equal(batch[0], onnx_seg.predict(image))
    # the same photo as RGBA or with the same gray on three channels gives the same labels
    rgba = np.concatenate([image, np.full((27, 45, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(onnx_seg.predict(rgba), onnx_seg.predict(image))
    gray = image[..., 0]
    assert np.array_equal(onnx_seg.predict(gray), onnx_seg.predict(np.repeat(gray[..., None], 3, axis=2)))
    assert isinstance(load_segmenter(onnx_path), OnnxSegmenter) and isinstance(load_segmenter(ckpt), TorchSegmenter)


def test_max_size_predicts_small_and_returns_full_resolution(model_files) -> None:
    _, onnx_path, _ = model_files
    segmenter = OnnxSegmenter(onnx_path)
    colours = np.random.default_rng(2).integers(0, 256, (3, 3, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(colours, 20, axis=0), 30, axis=1)  # (60, 90, 3) of 9 flat blocks
    labels = segmenter.predict(image, max_size=30)
    assert labels.shape == (60, 90)
    small = np.asarray(Image.fromarray(image).resize((30, 20), Image.Resampling.BILINEAR))
    assert len(np.unique(labels)) > 1
    assert np.array_equal(labels, resize_labels_nearest(segmenter.predict(small), 60, 90))
    assert np.array_equal(segmenter.predict(image, max_size=90), segmenter.predict(image))


def test_unreadable_model_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFileError, match="broken.onnx"):
        OnnxSegmenter(bad)
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        load_segmenter(tmp_path / "absent.onnx")


def test_segment_image_file_writes_a_figure_and_a_full_resolution_mask(model_files, tmp_path: Path) -> None:
    _, onnx_path, _ = model_files
    photo = np.random.default_rng(3).integers(0, 256, (70, 50, 4), dtype=np.uint8)
    Image.fromarray(photo, mode="RGBA").save(tmp_path / "photo.png")
    result = segment_image_file(OnnxSegmenter(onnx_path), tmp_path / "photo.png", tmp_path / "out" / "seg.png",
                                max_size=32)
    assert result["size"] == [50, 70]
    with Image.open(result["figure"]) as figure:
        assert figure.format == "PNG" and figure.width > 300
    with Image.open(result["mask"]) as mask:
        assert mask.size == (50, 70)
    assert sum(result["fractions"].values()) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def five_class_files(tmp_path_factory) -> tuple[Path, Path]:
    """A UNet with 5 output channels, as ONNX (exported with 5 class names) and as a checkpoint."""
    torch.manual_seed(1)
    model = build_model("unet", 5, num_blocks=1, base_chan=2).eval()
    folder = tmp_path_factory.mktemp("five")
    ckpt = save_checkpoint({"model": model.state_dict(), "model_name": "unet", "num_classes": 5,
                            "model_options": {"num_blocks": 1, "base_chan": 2}}, folder / "five.pt")
    onnx_path = export_onnx(model, folder / "five.onnx", classes=["a", "b", "c", "d", "e"])
    return onnx_path, ckpt


def test_a_model_with_another_number_of_classes_is_refused(five_class_files) -> None:
    for path in five_class_files:
        with pytest.raises(ModelFileError) as info:
            load_segmenter(path)
        assert str(info.value).startswith(f"model {path} outputs 5 classes but the course's class list has 14")
    assert OnnxSegmenter(five_class_files[0], num_classes=None).num_classes == 5  # when asked to accept any
    assert TorchSegmenter(five_class_files[1], device="cpu", num_classes=5).num_classes == 5


def test_test_command_refuses_a_model_with_another_number_of_classes(five_class_files, synth_root: Path,
                                                                     tmp_path: Path, capsys) -> None:
    from labcode.commands.cli import main

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((20, 30, 3), 99, dtype=np.uint8)).save(photo)
    for path in five_class_files:
        for where in (["--image", str(photo)], ["--areas-test", "5a", "--datadir", str(synth_root)]):
            status = main(["test", "--modelpath", str(path), *where, "--out", str(tmp_path / "out.json")])
            err = capsys.readouterr().err
            assert status == 2 and err.count("\n") == 1, err
            assert err.startswith(f"error: model {path} outputs 5 classes but the course's class list has 14"), err
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob("photo_*"))


def test_onnx_sessions_use_the_settings_they_report(model_files) -> None:
    import os

    import onnxruntime as ort

    from labcode.infer import physical_cores, session_settings

    _, onnx_path, _ = model_files
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
    default = OnnxSegmenter(onnx_path, providers=["CPUExecutionProvider"])
    assert default.settings == session_settings() and default.settings["intra_op_num_threads"] == physical_cores()
    one = OnnxSegmenter(onnx_path, providers=["CPUExecutionProvider"], threads=1)
    used = one.session.get_session_options()
    assert used.intra_op_num_threads == 1 and used.inter_op_num_threads == 1
    assert used.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert used.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert used.enable_mem_pattern and used.enable_cpu_mem_arena
    assert used.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    image = np.random.default_rng(2).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    assert np.array_equal(one.predict(image), default.predict(image))


def test_a_network_in_memory_predicts_as_its_checkpoint(model_files) -> None:
    model, _, ckpt = model_files
    in_memory = TorchSegmenter.from_model(model, "cpu")
    image = np.random.default_rng(4).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    assert np.array_equal(in_memory.predict(image), torch_labels(model, image))
    assert np.array_equal(in_memory.predict(image, max_size=32),
                          TorchSegmenter(ckpt, device="cpu").predict(image, max_size=32))
    assert in_memory.num_classes == NUM_CLASSES and str(in_memory.path) == "<in-memory model>"
    five = build_model("unet", 5, num_blocks=1, base_chan=2)
    with pytest.raises(ModelFileError, match="model five outputs 5 classes"):
        TorchSegmenter.from_model(five, "cpu", name="five")
    assert TorchSegmenter.from_model(five, "cpu", num_classes=None).num_classes == 5


def test_sessions_log_errors_only_without_touching_the_global_logger(model_files) -> None:
    import subprocess
    import sys

    _, onnx_path, _ = model_files
    assert OnnxSegmenter(onnx_path, providers=["CPUExecutionProvider"]).session.get_session_options() \
        .log_severity_level == 3
    # Importing labcode.infer and opening a session leave ONNX Runtime's default logger alone.
    code = ("import sys, onnxruntime as ort; calls = []; ort.set_default_logger_severity = calls.append; "
            "from labcode.infer import OnnxSegmenter; OnnxSegmenter(sys.argv[1]); sys.exit(len(calls))")
    assert subprocess.run([sys.executable, "-c", code, str(onnx_path)], timeout=120).returncode == 0
