"""Scoring submitted models on the hidden test set, in the sandbox: good, bad and broken models."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from labcode.classes import NUM_CLASSES
from labcode.export import export_onnx
from labcode.unet import UNet
from tests.course import GRADING_PYTHON, REPO, require_sandbox
from tools.grading import sandbox
from tools.grading.models import (
    ModelGrading,
    ModelScore,
    class_medians,
    leaderboard_html,
    make_hidden_set,
    pack_hidden_set,
    points_for,
    pseudonym,
    report_html,
    score_model,
)

SIDE = 48


@pytest.fixture(scope="module")
def hidden(tmp_path_factory) -> dict:
    """A small hidden set (16 images of 64 px, areas 5a and 5b, a seed of its own), packed at 48 px."""
    out = tmp_path_factory.mktemp("hidden")
    root = make_hidden_set(out, images=16, size=64, seed=12345)
    packed = out / "hidden.npz"
    info = pack_hidden_set(root, SIDE, shareable=2, dest=packed)
    return {"root": root, "packed": packed, "images": info["images"], "out": out}


@pytest.fixture(scope="module")
def spec() -> sandbox.SandboxSpec:
    require_sandbox()
    return sandbox.SandboxSpec(python=GRADING_PYTHON, slot=5, limits=sandbox.Limits(memory_bytes=2 * sandbox.GIB))


def overfit_model(hidden: dict, path: Path, steps: int) -> Path:
    """A UNet trained on the hidden images themselves: the best model the test can make in seconds."""
    data = np.load(hidden["packed"])
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = ((torch.tensor(data["images"]).float() / 255 - mean) / std).permute(0, 3, 1, 2)
    y = torch.tensor(data["masks"]).long()
    torch.manual_seed(0)
    model = UNet(NUM_CLASSES, num_blocks=2, base_chan=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return export_onnx(model.eval(), path, example_size=(SIDE, SIDE))


def graph_model(path: Path, nodes, outputs, initializers=()) -> Path:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    graph = helper.make_graph(nodes, "crafted", [image], outputs, initializer=list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def settings(**values) -> ModelGrading:
    return ModelGrading(**{"time_limit": 60, "memory_gb": 2, **values})


@pytest.mark.slow
def test_a_trained_model_scores_high_and_an_untrained_one_low(hidden, spec, tmp_path):
    good = score_model(overfit_model(hidden, tmp_path / "good.onnx", steps=150), hidden["packed"], settings(), spec,
                       NUM_CLASSES)
    bad = score_model(overfit_model(hidden, tmp_path / "bad.onnx", steps=0), hidden["packed"], settings(), spec,
                      NUM_CLASSES)
    assert good.status == bad.status == "scored"
    assert np.array(good.confusion).sum() == hidden["images"] * SIDE * SIDE  # every pixel of the hidden set
    assert good.metrics()["macro_f1"] > 0.6 > 0.2 > bad.metrics()["macro_f1"]
    assert set(good.shareable) == {"0", "1"}  # predictions come back for the shareable images only
    bands = ModelGrading().bands
    assert points_for(good.metrics()["macro_f1"], bands, 5) >= 3
    assert points_for(bad.metrics()["macro_f1"], bands, 5) == 0


@pytest.mark.parametrize("case, expected", [
    ("missing", "no my_model.onnx in the submission"),
    ("corrupt", "ONNX Runtime cannot load the model"),
    ("five_classes", "expected [4, 14, 48, 48]"),
    ("hangs", "did not finish the hidden set within 8 s"),
    ("hog", "memory"),
])
def test_a_model_that_cannot_be_scored_gets_a_reason(hidden, spec, tmp_path, case, expected):
    path = tmp_path / "my_model.onnx"
    if case == "corrupt":
        path.write_bytes(b"not an onnx model at all")
    elif case == "five_classes":
        weight = helper.make_tensor("w", TensorProto.FLOAT, [5, 3, 1, 1], np.ones(15, dtype=np.float32))
        graph_model(path, [helper.make_node("Conv", ["image", "w"], ["logits"])],
                    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [weight])
    elif case == "hangs":  # a loop of 10^15 trips around an addition
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Add", ["x_in", "x_in"], ["x_out"])],
            "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                     helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None)])
        trips = helper.make_tensor("trips", TensorProto.INT64, [], [10**15])
        cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
        graph_model(path, [helper.make_node("Loop", ["trips", "cond", "image"], ["logits"], body=body)],
                    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [trips, cond])
    elif case == "hog":  # copies the batch 30,000 times: 3.3 GB, over the limit of 2 GB
        repeats = helper.make_tensor("repeats", TensorProto.INT64, [4], [30_000, 1, 1, 1])
        graph_model(path, [helper.make_node("Tile", ["image", "repeats"], ["logits"])],
                    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [repeats])
    score = score_model(path, hidden["packed"], settings(time_limit=8), spec, NUM_CLASSES)
    assert score.status == "refused" and score.confusion is None
    assert expected.lower() in score.reason.lower(), score.reason


def external_data_model(path: Path, location: str, *, in_constant: bool = False) -> Path:
    """A 1x1 convolution whose weights are "stored" in the file ``location``: the way a model reads a file as data."""
    weight = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[NUM_CLASSES, 3, 1, 1],
                              data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(NUM_CLASSES * 3 * 4))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    if in_constant:  # hidden in a node's attribute rather than among the initializers
        nodes = [helper.make_node("Constant", [], ["w"], value=weight), helper.make_node("Conv", ["image", "w"],
                                                                                         ["logits"])]
        return graph_model(path, nodes, [logits])
    return graph_model(path, [helper.make_node("Conv", ["image", "w"], ["logits"])], [logits], [weight])


@pytest.mark.parametrize("location, in_constant", [
    ("hidden.npz", False),  # beside the model
    ("../srv/hidden.npz", False),  # up and into a neighbouring folder
    ("/srv/hidden.npz", False),  # absolute
    ("../../proc/self/fd/0", True),  # the scorer's own input, from a node attribute
])
def test_a_model_reading_files_as_weights_is_refused(hidden, spec, tmp_path, location, in_constant):
    path = external_data_model(tmp_path / "my_model.onnx", location, in_constant=in_constant)
    (tmp_path / "hidden.npz").write_bytes(Path(hidden["packed"]).read_bytes())  # what the attack hoped to find
    score = score_model(path, hidden["packed"], settings(), spec, NUM_CLASSES)
    assert score.status == "refused" and score.confusion is None
    assert "export with external_data=False" in score.reason, score.reason


def test_the_model_gets_its_bytes_and_the_images_and_nothing_else(hidden, spec, tmp_path, monkeypatch):
    """What reaches the sandbox: no bind, no file, an input without masks; the folders a model could name are empty."""
    calls = []
    real_run = sandbox.run

    def spy(spec_, argv, **kwargs):
        calls.append((argv, kwargs))
        return real_run(spec_, argv, **kwargs)

    monkeypatch.setattr(sandbox, "run", spy)
    model = overfit_model(hidden, tmp_path / "my_model.onnx", steps=0)
    assert score_model(model, hidden["packed"], settings(), spec, NUM_CLASSES).status == "scored"
    (argv, kwargs), = calls
    assert not kwargs.get("binds") and kwargs.get("cwd", sandbox.HOME) == sandbox.HOME
    assert not [arg for arg in argv for host in (REPO, hidden["out"], tmp_path) if str(host) in arg]  # no host path
    payload = np.load(io.BytesIO(kwargs["input"]), allow_pickle=False)
    assert sorted(payload.files) == ["images", "model"]
    assert payload["model"].tobytes() == model.read_bytes()
    assert np.array_equal(payload["images"], np.load(hidden["packed"])["images"])
    listing = real_run(spec, ["sh", "-c", "ls -A . /tmp; test -e /srv && echo /srv exists; echo end"], timeout=60)
    assert listing.stdout.split() == [".:", "/tmp:", "end"], listing.stdout + listing.stderr  # empty; no /srv


def test_predictions_are_counted_outside_against_the_masks(hidden, spec, tmp_path):
    """The confusion matrix is the grader's count of the returned labels: a constant model fills one column."""
    bias = helper.make_tensor("b", TensorProto.FLOAT, [NUM_CLASSES], [0.0] * 12 + [10.0, 0.0])  # always class 12
    weight = helper.make_tensor("w", TensorProto.FLOAT, [NUM_CLASSES, 3, 1, 1], np.zeros(NUM_CLASSES * 3))
    path = graph_model(tmp_path / "my_model.onnx", [helper.make_node("Conv", ["image", "w", "b"], ["logits"])],
                       [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [weight, bias])
    score = score_model(path, hidden["packed"], settings(), spec, NUM_CLASSES)
    assert score.status == "scored", score.reason
    masks = np.load(hidden["packed"])["masks"]
    expected = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    expected[:, 12] = np.bincount(masks.reshape(-1), minlength=NUM_CLASSES)
    assert np.array_equal(np.array(score.confusion), expected)
    shared = np.frombuffer(base64.b64decode(score.shareable["0"]), dtype=np.uint8)
    assert shared.size == SIDE * SIDE and set(shared.tolist()) == {12}


def test_reports_show_the_students_scores_and_hidden_images_only_when_shared(hidden, tmp_path):
    confusion = np.diag(np.arange(1, NUM_CLASSES + 1)).tolist()
    confusion[12][9] = 5  # some wall predicted as floor
    mine = ModelScore("scored", confusion=confusion, shareable={}, model_mb=1.2)
    other = ModelScore("scored", confusion=np.diag(np.ones(NUM_CLASSES, dtype=int)).tolist())
    medians = class_medians([mine, other, ModelScore("refused", "no model")], NUM_CLASSES)
    assert medians[0] == 1.0 and len(medians) == NUM_CLASSES
    page = report_html(mine, 4.0, 5.0, medians, ModelGrading(), np.load(hidden["packed"]))
    assert "4 / 5 points" in page and "class median" in page and "data:image/png;base64," in page
    assert page.count("<img") == 1  # the confusion matrix; no hidden image without shareable predictions
    refused = report_html(ModelScore("refused", "no my_model.onnx in the submission"), 0, 5, medians, ModelGrading(),
                          None)
    assert "0 / 5 points" in refused and "no my_model.onnx" in refused


def test_leaderboard_ranks_by_macro_f1_with_stable_pseudonyms():
    assert pseudonym("alice", "salt") == pseudonym("alice", "salt") != pseudonym("alice", "other salt")
    page = leaderboard_html([{"name": "B", "macro_f1": 0.5, "mean_iou": 0.4, "model_mb": 2.0},
                             {"name": "A", "macro_f1": 0.7, "mean_iou": 0.6, "model_mb": 2.1},
                             {"name": "C", "macro_f1": None, "mean_iou": None, "model_mb": 0.0}])
    assert page.index(">A<") < page.index(">B<") and ">C<" not in page
    assert "1 submission(s) without a scored model" in page


def test_the_hidden_set_keeps_its_secret_seed_to_itself(hidden):
    manifest = json.loads((hidden["out"] / "hidden.json").read_text())
    assert manifest["seed"] == 12345 and manifest["images"] == hidden["images"] == 16
    assert sorted(p.name for p in hidden["root"].iterdir()) == ["area_5a", "area_5b", "assets"]
