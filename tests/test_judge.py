"""The judge on its own: every graded test has a probe and a judge, correct answers in other forms pass, wrong ones
and lies fail with a hint.

The probes run as they do while grading, in the grading environment (no instructor library) on a student copy of the
release, and hand back JSON; the judge decides here, in the instructor's process. The alternative answers below are
written from the questions' text (what the notebooks ask), not from the instructor's solutions.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pytest

from tests.course import GRADING_PYTHON, OWN_LIBRARY, REPO, require, write_library
from tools.grading import judge, probe, verdicts

RELEASE = REPO / "notebooks" / "segmentation"
SOURCE = REPO / "solutions" / "segmentation"

PREAMBLE = """
import json, os, sys
sys.path.insert(0, os.getcwd())
import numpy as np
import torch
import torch.nn.functional as F
from labcode.classes import CLASSES, NUM_CLASSES, REAL_CLASS_FREQUENCIES
import labcode_probe
DATADIR = os.environ["LABCODE_DATADIR"]
WALL = CLASSES.index("wall")
torch.manual_seed(0)
"""

RUN = """
out = {grade_id: labcode_probe.collect(grade_id, globals())["evidence"] for grade_id in GRADE_IDS}
with open("evidence.json", "w") as handle:
    json.dump(out, handle)
"""


def probe_answers(copy: Path, answers: str, grade_ids: list[str], datadir: Path) -> dict:
    """Run ``answers`` then the probes of ``grade_ids`` in the grading environment, in ``copy``; the evidence."""
    require(GRADING_PYTHON.is_file(), "no grading environment (bash scripts/setup.sh --grading)")
    shutil.copyfile(probe.__file__, copy / verdicts.PROBE_FILE)
    script = PREAMBLE + textwrap.dedent(answers) + f"\nGRADE_IDS = {grade_ids!r}\n" + RUN
    done = subprocess.run([str(GRADING_PYTHON), "-c", script], cwd=copy, capture_output=True, text=True, timeout=600,
                          env={"LABCODE_DATADIR": str(datadir), "PATH": "/usr/bin:/bin", "HOME": str(copy),
                               "NO_ALBUMENTATIONS_UPDATE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((copy / "evidence.json").read_text())


def verdicts_of(evidence: dict, datadir: Path) -> dict[str, judge.Verdict]:
    # Through JSON text, as the evidence reaches the grader.
    evidence = json.loads(json.dumps(evidence))
    return {gid: judge.judge(gid, ev, judge.Context(datadir=datadir)) for gid, ev in evidence.items()}


def student_copy(tmp_path: Path, library: str, own: dict | None = None) -> Path:
    copy = tmp_path / "segmentation"
    shutil.copytree(RELEASE, copy, ignore=shutil.ignore_patterns("*.ipynb"))
    if library == "solved":
        write_library(copy / "labcode", own)
    return copy


LIBRARY_TESTS = ["test_augmentation_pipeline", "test_unet_conv_block_layers", "test_unet_conv_block_forward",
                 "test_unet_encoder", "test_unet_up_block_layers", "test_unet_up_block_forward", "test_unet_decoder",
                 "test_class_weights_inverse"]

#: Answers of the notebook cells, each written from its question in another form than the instructor's.
ALTERNATIVE_ANSWERS = """
def describe_sample(image, mask):
    # Tensors or arrays: look at them as NumPy arrays; shapes as lists, types by their NumPy names.
    image = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    mask = mask.numpy() if hasattr(mask, "numpy") else np.asarray(mask)
    return {"image_shape": list(image.shape), "image_dtype": image.dtype.name, "mask_shape": list(mask.shape),
            "mask_dtype": mask.dtype.name, "classes": [CLASSES[int(k)] for k in np.unique(mask)]}

wall_accuracy = 0.3367  # written down to 4 decimals from the table of frequencies
share = REAL_CLASS_FREQUENCIES[WALL]  # read as it stands (the shares add up to 0.9999)
wall_macro_f1 = (share / (share + 0.5 * (1 - share))) / NUM_CLASSES

from labcode.stats import class_weights

def weighted_cross_entropy(logits, target, counts, strategy):
    weights = torch.from_numpy(np.asarray(class_weights(counts, strategy))).to(logits.dtype)
    nll = -torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    per_pixel = weights[target]
    return (per_pixel * nll).sum() / per_pixel.sum()

from labcode.unet import UNet
model = UNet(NUM_CLASSES, num_blocks=3, base_chan=4).eval()
with torch.no_grad():
    dummy_output = model(torch.zeros(2, 3, 96, 128))

from labcode.deeplab import DeepLabV3Plus
deeplab = DeepLabV3Plus(NUM_CLASSES, base_chan=8, aspp_chan=32, low_level_chan=8)
deeplab.eval()
with torch.no_grad():
    deeplab_output = deeplab(torch.zeros(1, 3, 70, 90))

from labcode.losses import LOSSES, build_loss
target = torch.randint(0, NUM_CLASSES, (2, 16, 16))
perfect = torch.zeros(2, NUM_CLASSES, 16, 16).scatter_(1, target.unsqueeze(1), 20.0)
uniform = torch.full((2, NUM_CLASSES, 16, 16), 3.0)  # any constant: every class equally likely
perfect_losses = {name: build_loss(name)(perfect, target).item() for name in LOSSES}
uniform_losses = {name: build_loss(name)(uniform, target).item() for name in LOSSES}
"""

NOTEBOOK_TESTS = ["test_describe_sample", "test_wall_accuracy", "test_wall_macro_f1", "test_weighted_cross_entropy",
                  "test_unet_dummy_forward", "test_deeplab_forward", "test_loss_zoo"]


@pytest.fixture(scope="module")
def alternatives(tmp_path_factory, synth_root):
    copy = student_copy(tmp_path_factory.mktemp("own"), "solved", OWN_LIBRARY)
    return probe_answers(copy, ALTERNATIVE_ANSWERS, LIBRARY_TESTS + NOTEBOOK_TESTS, synth_root), synth_root


def test_every_graded_test_cell_has_a_probe_and_a_judge_and_no_hidden_test_is_left():
    graded = set()
    for path in sorted(SOURCE.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            assert "HIDDEN TESTS" not in cell.source, f"{path.name}: hidden tests live in tools/grading/judge.py now"
            if verdicts.is_test_cell(cell):
                graded.add(cell.metadata["nbgrader"]["grade_id"])
    assert graded == set(judge.JUDGES) == set(probe.PROBES)


def test_correct_answers_in_other_forms_than_the_instructors_pass(alternatives):
    evidence, datadir = alternatives
    got = verdicts_of(evidence, datadir)
    failed = {gid: v.hint for gid, v in got.items() if not v.passed}
    assert not failed, failed


@pytest.mark.parametrize("answer", ["wall_accuracy = float(REAL_CLASS_FREQUENCIES[WALL])",
                                    "wall_accuracy = REAL_CLASS_FREQUENCIES[WALL] / REAL_CLASS_FREQUENCIES.sum()",
                                    "wall_accuracy = np.float32(0.33673)"])
def test_each_reading_of_the_wall_share_passes(tmp_path, synth_root, answer):
    evidence = probe_answers(student_copy(tmp_path, "blank"), answer, ["test_wall_accuracy"], synth_root)
    assert verdicts_of(evidence, synth_root)["test_wall_accuracy"].passed


WRONG_ANSWERS = {
    "test_wall_accuracy": "wall_accuracy = 0.34",
    "test_wall_macro_f1": "f = REAL_CLASS_FREQUENCIES[WALL]\nwall_macro_f1 = 2 * f / (1 + f)",
    "test_describe_sample": """
def describe_sample(image, mask):
    image, mask = np.asarray(image), np.asarray(mask)
    seen = list(dict.fromkeys(mask.ravel().tolist()))  # order of appearance, not of the indices
    return {"image_shape": image.shape, "image_dtype": str(image.dtype), "mask_shape": mask.shape,
            "mask_dtype": str(mask.dtype), "classes": [CLASSES[k] for k in seen]}""",
    "test_weighted_cross_entropy": """
from labcode.stats import class_weights
def weighted_cross_entropy(logits, target, counts, strategy):
    weights = torch.as_tensor(class_weights(counts, strategy), dtype=logits.dtype)
    return (F.cross_entropy(logits, target, reduction="none") * weights[target]).mean()""",
}


@pytest.mark.parametrize("grade_id", sorted(WRONG_ANSWERS))
def test_wrong_notebook_answers_fail_with_a_hint(tmp_path, synth_root, grade_id):
    evidence = probe_answers(student_copy(tmp_path, "blank"), WRONG_ANSWERS[grade_id], [grade_id], synth_root)
    verdict = verdicts_of(evidence, synth_root)[grade_id]
    assert not verdict.passed and verdict.hint, verdict


WRONG_LIBRARY = {
    "UNetUpConvBlock forward": ("test_unet_up_block_forward", """
        return self.convblock(torch.cat([encoder_features, self.upconv(inputs)], dim=1))"""),
    "UNetConvBlock layers": ("test_unet_conv_block_layers", """
        self.block1 = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout),
                                    nn.Conv2d(cout, cout, 1))
        self.block2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout))
        self.block3 = nn.MaxPool2d(2)"""),
    "Class weights": ("test_class_weights_inverse", """
        counts = np.asarray(counts, dtype=np.float64)
        return np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0).astype(np.float32)"""),
}


@pytest.mark.parametrize("title", sorted(WRONG_LIBRARY))
def test_wrong_library_exercises_fail_with_a_hint(tmp_path, synth_root, title):
    grade_id, code = WRONG_LIBRARY[title]
    copy = student_copy(tmp_path, "solved", {title: code})
    verdict = verdicts_of(probe_answers(copy, "", [grade_id], synth_root), synth_root)[grade_id]
    assert not verdict.passed and verdict.hint, verdict


def test_the_untouched_stubs_fail_every_library_test(tmp_path, synth_root):
    got = verdicts_of(probe_answers(student_copy(tmp_path, "blank"), "", LIBRARY_TESTS, synth_root), synth_root)
    assert all(not v.passed for v in got.values()), got
    assert "NotImplementedError" in got["test_unet_conv_block_layers"].hint


# --------------------------------------------------------------------------------------------------------------------
# Evidence that lies
# --------------------------------------------------------------------------------------------------------------------

def _npy(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return {"__array__": base64.b64encode(buffer.getvalue()).decode()}


def test_outputs_that_do_not_come_from_the_described_layers_fail(alternatives):
    evidence, datadir = alternatives
    forged = json.loads(json.dumps(evidence["test_unet_up_block_forward"]))
    honest = judge.decode(forged["visible"]["output"]["value"])
    forged["visible"]["output"]["value"] = {**_npy(np.asarray(honest) + 1e-2), "tensor": "torch.float32"}
    assert not judge.judge("test_unet_up_block_forward", forged, judge.Context(datadir=datadir)).passed


def test_a_description_that_lies_about_its_layers_fails(alternatives):
    evidence, datadir = alternatives
    forged = json.loads(json.dumps(evidence["test_unet_conv_block_forward"]))
    conv = forged["visible"]["description"]["children"][0][1]["children"][0][1]
    assert conv["kind"] == "Conv2d"
    conv["kind"] = "Identity"  # claims a layer without weights: the weights sent no longer fit
    verdict = judge.judge("test_unet_conv_block_forward", forged, judge.Context(datadir=datadir))
    assert not verdict.passed and "should hold no other layer" not in verdict.hint


def test_a_forged_probe_that_sends_nothing_useful_scores_nothing(synth_root):
    context = judge.Context(datadir=synth_root)
    for grade_id in judge.JUDGES:
        for forged in (None, {}, {"visible": {}, "hidden": {}}, {"value": 1.0}, {"error": "x"}):
            assert not judge.judge(grade_id, forged, context).passed, (grade_id, forged)


def test_pickled_arrays_are_never_loaded(synth_root):
    buffer = io.BytesIO()
    np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
    forged = {"value": {"__array__": base64.b64encode(buffer.getvalue()).decode()}}
    with pytest.raises(ValueError, match="pickle"):
        judge.decode(forged)


def test_notebook_4s_self_check_agrees_with_the_judge_on_every_answer(synth_root):
    """The cell comparing questions 4.1 and 4.2 with the library never prints False for an accepted answer."""
    import re

    from labcode.classes import CLASSES, REAL_CLASS_FREQUENCIES
    from labcode.metrics import constant_predictor_scores

    source = next(cell.source for cell in nbformat.read(SOURCE / "04_metrics_losses.ipynb", as_version=4).cells
                  if "agrees with the library" in cell.source)
    tolerances = {float(t) for t in re.findall(r"atol=([0-9.e-]+)", source)}
    assert tolerances == {judge.FOUR_DECIMALS}, tolerances
    library = constant_predictor_scores(REAL_CLASS_FREQUENCIES, CLASSES.index("wall"))
    context = judge.Context(datadir=synth_root)
    for offset in np.linspace(-1e-4, 1e-4, 41):
        for grade_id, key in (("test_wall_accuracy", "pixel_accuracy"), ("test_wall_macro_f1", "macro_f1")):
            value = float(library[key]) + offset
            printed = bool(np.isclose(value, library[key], atol=max(tolerances)))
            assert judge.judge(grade_id, {"value": value}, context).passed == printed, (grade_id, value)
