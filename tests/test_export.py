"""ONNX export: one file, dynamic batch/height/width, metadata, parity with PyTorch; the export and view commands."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from labcode.classes import CLASSES
from labcode.export import ExportError, check_onnx_parity, export_onnx
from labcode.models import build_model
from labcode.runtime.checkpoint import save_checkpoint


def tiny_unet(seed: int, num_blocks: int = 2) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("unet", len(CLASSES), num_blocks=num_blocks, base_chan=4)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that eval mode matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = tiny_unet(seed=0, num_blocks=3)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", example_size=(32, 32))
    return model, path


def test_exported_graph_is_one_file_with_dynamic_batch_height_width(exported) -> None:
    _, path = exported
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no external data file
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert graph_input.name == "image" and graph_output.name == "logits"
    in_dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim]
    assert in_dims[1] == 3 and out_dims[1] == len(CLASSES)
    assert all(isinstance(d, str) for d in in_dims[0:1] + in_dims[2:])  # symbolic batch, height, width
    assert all(isinstance(d, str) for d in out_dims[0:1] + out_dims[2:])
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(metadata["classes"]) == list(CLASSES)


def test_onnxruntime_matches_pytorch_at_sizes_not_traced(exported) -> None:
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(3, 3, 37, 53), (1, 3, 8, 100)]:  # odd sizes, not multiples of 2**num_blocks, batch != 2
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        got = session.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == (shape[0], len(CLASSES), *shape[2:])
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    diffs = check_onnx_parity(model, path, sizes=[(32, 32), (45, 77)])
    assert set(diffs) == {"32x32", "45x77"} and max(diffs.values()) < 1e-4


def test_parity_check_catches_a_different_model(exported) -> None:
    _, path = exported
    other = tiny_unet(seed=1, num_blocks=3)
    diffs = check_onnx_parity(other, path, sizes=[(16, 16)])
    assert diffs["16x16"] > 1e-2
    with pytest.raises(ExportError, match="differs from PyTorch"):
        check_onnx_parity(other, path, sizes=[(16, 16)], atol=1e-3)


@pytest.mark.slow
def test_export_command_writes_and_checks(tmp_path: Path, capsys) -> None:
    from labcode.commands import export as export_command

    model = tiny_unet(seed=2)
    ckpt = save_checkpoint({"model": model.state_dict(), "model_name": "unet", "num_classes": len(CLASSES),
                            "model_options": {"num_blocks": 2, "base_chan": 4}}, tmp_path / "best.pt")
    assert export_command.main([str(ckpt), "--check-sizes", "24x40", "17"]) == 0
    out = capsys.readouterr().out
    assert "parity at 24x40" in out and "parity at 17x17" in out
    assert export_command.main([str(ckpt), "--fold", "-o", str(tmp_path / "fast.onnx")]) == 0
    assert "(folded graph, " in capsys.readouterr().out
    x = np.random.default_rng(0).standard_normal((2, 3, 19, 23)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for name, depth_to_space in (("best.onnx", 0), ("fast.onnx", 2)):
        ops = [node.op_type for node in onnx.load(str(tmp_path / name)).graph.node]
        assert ops.count("DepthToSpace") == depth_to_space, name
        session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"image": x})[0], expected, atol=1e-4, rtol=1e-4)


def test_view_serves_the_graph_on_localhost(exported, capsys) -> None:
    import netron

    from labcode.commands import view

    _, path = exported
    url = view.start_viewer(path, port=0)
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        netron.stop()
    assert view.main([str(path), "--port", "0", "--no-wait"]) == 0
    assert "http://127.0.0.1:" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        view.main([str(path.parent / "missing.onnx"), "--no-wait"])


def test_export_refuses_class_names_that_do_not_match_the_outputs(tmp_path: Path, capsys) -> None:
    from labcode.commands.cli import main

    torch.manual_seed(0)
    five = build_model("unet", 5, num_blocks=1, base_chan=2).eval()
    with pytest.raises(ExportError, match=r"the model outputs 5 classes but the class list has 14 \(<UNK>, beam"):
        export_onnx(five, tmp_path / "default.onnx")
    assert not (tmp_path / "default.onnx").exists()
    names = ["a", "b", "c", "d", "e"]
    metadata = {p.key: p.value for p in onnx.load(str(export_onnx(five, tmp_path / "named.onnx",
                                                                  classes=names))).metadata_props}
    assert json.loads(metadata["classes"]) == names and metadata["num_classes"] == "5"

    ckpt = save_checkpoint({"model": five.state_dict(), "model_name": "unet", "num_classes": 5,
                            "model_options": {"num_blocks": 1, "base_chan": 2}}, tmp_path / "five.pt")
    assert main(["export", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model outputs 5 classes but the class list has 14") and err.count("\n") == 1
    assert not (tmp_path / "five.onnx").exists()


@pytest.mark.parametrize("bias, relu", [(True, True), (False, False)])
def test_nearest_upsample_conv_is_upsample_then_conv(bias: bool, relu: bool) -> None:
    from labcode.export import NearestUpsampleConv

    torch.manual_seed(1)
    conv = torch.nn.Conv2d(5, 7, 3, padding=1, bias=bias)
    reference = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2), conv, *([torch.nn.ReLU()] if relu else []))
    x = torch.randn(2, 5, 9, 13)
    with torch.no_grad():
        got, want = NearestUpsampleConv(conv, relu=relu)(x), reference(x)
    assert got.shape == want.shape == (2, 7, 18, 26)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_export_folds_the_up_blocks_and_only_them_when_asked(tmp_path: Path) -> None:
    from labcode.export import NearestUpsampleConv, fold_nearest_upsampling

    model = tiny_unet(seed=3, num_blocks=3)
    folded = export_onnx(model, tmp_path / "folded.onnx", fold=True)
    plain = export_onnx(model, tmp_path / "plain.onnx")  # the default: the network as written
    ops = {name: [node.op_type for node in onnx.load(str(p)).graph.node] for name, p in
           (("folded", folded), ("plain", plain))}
    assert ops["plain"].count("Resize") == 3 and "DepthToSpace" not in ops["plain"]
    assert "Resize" not in ops["folded"] and ops["folded"].count("DepthToSpace") == 3
    notes = {path.name: {m.key: m.value for m in onnx.load(str(path)).metadata_props}.get("upsampling")
             for path in (folded, plain)}
    assert notes["plain.onnx"] is None and notes["folded.onnx"].startswith("3 nearest x2 upsampling + 3x3 Conv pairs")
    for path in (folded, plain):
        assert max(check_onnx_parity(model, path, sizes=[(64, 64), (45, 77), (17, 30)]).values()) < 1e-4
    assert all(p.requires_grad for p in model.parameters())  # the caller's model is untouched
    assert not any(isinstance(m, NearestUpsampleConv) for m in model.modules())
    others = torch.nn.Sequential(
        torch.nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.Conv2d(3, 3, 3, padding=1),
        torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(3, 3, 3, padding=1, stride=2),
        torch.nn.Upsample(scale_factor=3), torch.nn.Conv2d(3, 3, 3, padding=1))
    wrapper = torch.nn.Module()
    wrapper.body = others
    assert fold_nearest_upsampling(wrapper) == 0 and wrapper.body is others
