"""The instructor notebooks: nbgrader structure, coverage of the course's questions, and a clean run on a CPU."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from labcode.check import CHECKS
from tests.course import MODEL_FREE_STEMS
from tools.grading.judge import JUDGES

CHECK_NAMES = {check.run.__name__ for check in CHECKS}
REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "solutions" / "segmentation"
STEMS = ["01_data_exploration", "02_data_pipeline", "03_unet", "04_metrics_losses", "05_training",
         "06_inference_onnx", "07_going_further"]

#: Every question of the course specification, in our words, and the graded cell that answers it. Library exercises
#: are graded by the test cell named here; notebook questions by their answer cell (or its test when autograded).
QUESTIONS = {
    "dimensions and types of inputs and targets": ("01_data_exploration", "answer_tensor_types"),
    "check them on one sample": ("01_data_exploration", "test_describe_sample"),
    "noisy labels, <UNK>, and a diverging cross-entropy": ("01_data_exploration", "answer_noisy_labels"),
    "good and bad transforms for photos of rooms": ("02_data_pipeline", "answer_augmentation_choice"),
    "implement the augmentation pipeline": ("02_data_pipeline", "test_augmentation_pipeline"),
    "judge the augmentation hyper-parameters": ("02_data_pipeline", "answer_augmentation_quality"),
    "fully convolutional, and the input sizes": ("03_unet", "answer_fully_convolutional"),
    "mini-batch constraint on sizes": ("03_unet", "answer_minibatch_sizes"),
    "UNetConvBlock": ("03_unet", "test_unet_conv_block_layers"),
    "UNetConvBlock forward": ("03_unet", "test_unet_conv_block_forward"),
    "the encoder's last block": ("03_unet", "test_unet_encoder"),
    "UNetUpConvBlock": ("03_unet", "test_unet_up_block_layers"),
    "UNetUpConvBlock forward": ("03_unet", "test_unet_up_block_forward"),
    "the decoder's first and last layers": ("03_unet", "test_unet_decoder"),
    "a dummy tensor through the model": ("03_unet", "test_unet_dummy_forward"),
    "sides that are not multiples of 2**n": ("03_unet", "answer_unet_any_side"),
    "accuracy of an always-wall predictor": ("04_metrics_losses", "test_wall_accuracy"),
    "its macro F1": ("04_metrics_losses", "test_wall_macro_f1"),
    "where the macro F1 is computed, what validation F1 is for": ("04_metrics_losses", "answer_macro_f1_in_training"),
    "why F1 cannot be optimised by gradient descent": ("04_metrics_losses", "answer_f1_not_differentiable"),
    "class weights against imbalance, and PyTorch's weight argument": ("04_metrics_losses", "answer_class_weights"),
    "class-weight strategy in the library": ("04_metrics_losses", "test_class_weights_inverse"),
    "weighted cross-entropy with a strategy": ("04_metrics_losses", "test_weighted_cross_entropy"),
    "where the focal loss is and which option turns it on": ("04_metrics_losses", "answer_focal_loss"),
    "a short training run on a small subset": ("05_training", "test_short_training_run"),
    "epoch time, share of data loading, memory": ("05_training", "answer_epoch_time"),
    "TensorBoard curves and figures": ("05_training", "answer_tensorboard"),
    "hand in the trained model (scored on a hidden test set)": ("05_training", "test_model_export"),
    "the ONNX graph in netron": ("06_inference_onnx", "answer_onnx_graph"),
    "where and how the model is exported, the export arguments": ("06_inference_onnx", "answer_onnx_export"),
    "where and how ONNX Runtime runs inference": ("06_inference_onnx", "answer_onnxruntime"),
    "evaluate on the training areas and on 5a/5b": ("06_inference_onnx", "test_evaluate_areas"),
    "what the scores on seen and unseen areas say": ("06_inference_onnx", "answer_generalisation"),
    "why any image size works": ("06_inference_onnx", "answer_any_size"),
    "segment a photo of your own": ("06_inference_onnx", "test_segment_photo"),
    "where the model succeeds or fails on the photo": ("06_inference_onnx", "answer_own_photo"),
    "going further: DeepLabv3+": ("07_going_further", "test_deeplab_forward"),
    "going further: other losses": ("07_going_further", "test_loss_zoo"),
    "which losses vanish, and the cross-entropy of a uniform prediction": ("07_going_further", "answer_loss_values"),
}


def cells(stem: str) -> list:
    return nbformat.read(SOURCE / f"{stem}.ipynb", as_version=4).cells


def nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def test_the_assignment_has_the_seven_notebooks_clean_and_valid():
    assert sorted(p.stem for p in SOURCE.glob("*.ipynb")) == STEMS
    for stem in STEMS:
        nb = nbformat.read(SOURCE / f"{stem}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {int(stem[:2])}. ")
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{stem}: commit sources without outputs"


def test_every_question_of_the_course_has_a_graded_cell():
    graded = {(stem, nbgrader(c)["grade_id"]) for stem in STEMS for c in cells(stem) if nbgrader(c).get("grade")}
    missing = {question: where for question, where in QUESTIONS.items() if where not in graded}
    assert not missing, f"questions without their graded cell: {missing}"


def test_grade_ids_are_unique_and_cells_are_well_formed():
    seen: set[str] = set()
    for stem in STEMS:
        pending_answer = None
        for cell in cells(stem):
            info = nbgrader(cell)
            if not info:
                assert "BEGIN SOLUTION" not in cell.source and "HIDDEN TESTS" not in cell.source, stem
                continue
            grade_id = info["grade_id"]
            if grade_id == "setup":  # the read-only setup cell
                assert info["locked"] and not info.get("grade") and not info.get("solution")
                continue
            assert re.fullmatch(r"(answer|test)_[a-z0-9_]+", grade_id), grade_id
            assert grade_id not in seen, f"duplicate grade_id {grade_id}"
            seen.add(grade_id)
            if info.get("solution") and not info.get("grade"):  # autograded answer: a region, then its test
                assert cell.cell_type == "code" and grade_id.startswith("answer_")
                assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, grade_id
                assert pending_answer is None, f"{pending_answer} has no test cell before {grade_id}"
                pending_answer = grade_id
            elif info.get("grade") and not info.get("solution"):  # test cell
                assert cell.cell_type == "code" and grade_id.startswith("test_") and info["locked"], grade_id
                assert info["points"] > 0, grade_id
                # the hidden tests are the grader's judge (tools/grading/judge.py), never in a notebook
                assert "HIDDEN TESTS" not in cell.source and grade_id in JUDGES, f"{grade_id} has no judge"
                visible = cell.source
                # explained asserts, or a check of labcode.check (whose every expectation carries its message)
                calls_check = re.search(r"^(check_\w+)\(\)", visible, re.MULTILINE)
                assert re.search(r"assert .+, f?\"", visible) or re.search(r"assert .+, \\\n", visible) or (
                    calls_check and calls_check.group(1) in CHECK_NAMES), \
                    f"{grade_id}: visible asserts should explain what went wrong"
                pending_answer = None
            else:  # manually graded written answer, with the instructor's answer
                assert cell.cell_type == "markdown" and info.get("solution") and info.get("grade"), grade_id
                assert grade_id.startswith("answer_") and info["points"] > 0
                assert len(cell.source) > 200, f"{grade_id}: the instructor's answer is missing"
        assert pending_answer is None, f"{stem}: {pending_answer} has no test cell"


def test_every_notebook_starts_with_the_same_kind_of_setup():
    for stem in STEMS:
        cell = next(c for c in cells(stem) if c.cell_type == "code")
        # read-only: nbgrader puts it back as released when grading, so the copy check below always runs
        assert nbgrader(cell) == {"grade": False, "grade_id": "setup", "locked": True, "schema_version": 3,
                                  "solution": False, "task": False}, stem
        setup = cell.source
        # outside the folder holding labcode/, a message saying where to open the notebook, before any import of it
        assert setup.index('if not os.path.isfile(os.path.join("labcode", "__init__.py")):\n    raise ') < \
            setup.index("sys.path.insert(0, os.getcwd())") < setup.index("import labcode"), stem
        assert setup.index("import labcode") < setup.index(
            'if [os.path.realpath(path) for path in labcode.__path__] != [MY_LABCODE]:\n    raise ImportError('), stem
        assert 'GRADING = bool(os.environ.get("NBGRADER_EXECUTION"))' in setup
        assert 'torch.device("cuda" if torch.cuda.is_available() else "cpu")' in setup
        if stem == "05_training":  # tiny runs only while grading; on a CPU, the CPU recipe
            assert 'SETTING = "tiny" if GRADING else DEVICE.type' in setup and "QUICK" not in setup
        elif stem == "06_inference_onnx":  # sizes come from the model evaluated
            assert "QUICK" not in setup
        else:
            assert 'QUICK = GRADING or DEVICE.type == "cpu"' in setup


# --------------------------------------------------------------------------------------------------------------------
# Running the sources
# --------------------------------------------------------------------------------------------------------------------

#: Seconds each solution notebook took to run, printed at the end of the session (see ``conftest.py``).
RUN_TIMES: dict[str, float] = {}


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_solution_notebook_runs_top_to_bottom_on_cpu(stem, synth_root, reference_model, tmp_path, monkeypatch,
                                                     request):
    from tools.site_notebooks import SHOWN_WORKDIR

    if stem in MODEL_FREE_STEMS:  # run as students run them, once for this and the site's leak scan (conftest.py)
        nb, elapsed = request.getfixturevalue("solved_notebooks")[stem]
        folder = SHOWN_WORKDIR  # (the scratch folder is printed as the site's pages print it)
    else:  # 05 and 06 study a model: the reference model is given
        nb, elapsed = run_with_reference(stem, tmp_path, synth_root, reference_model, monkeypatch)
        folder = str(tmp_path)
    RUN_TIMES[stem] = elapsed
    errors = [(i, out.ename, out.evalue) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{stem}: cells ending in an error: {errors}"
    first = next(c for c in nb.cells if c.cell_type == "code")
    printed = "".join(out.get("text", "") for out in first.outputs)
    assert f"labcode from {folder}/labcode" in printed, printed  # the instructor library, with the solutions
    if stem == "06_inference_onnx":  # the questions study the reference model
        studied = "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
        assert f"model: {reference_model} (the reference model" in studied, studied[-2000:]


def run_with_reference(stem: str, folder: Path, datadir: Path, reference: Path, monkeypatch) -> tuple:
    """A solution notebook run in ``folder`` (the instructor library copied next to it) with ``reference`` as the
    reference model: the executed notebook and its seconds.

    Notebook 05 runs with the grading settings (a tiny run): the CPU recipe the students run, the same cells but for
    the answer, runs in tests/test_student_path.py, and training it twice would double the suite's longest notebook.
    """
    import nbclient

    shutil.copytree(REPO / "labcode", folder / "labcode", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("LABCODE_DATADIR", str(datadir))  # a small generated data set
    monkeypatch.setenv("LABCODE_REFERENCE_MODEL", str(reference))
    monkeypatch.setenv("LABCODE_DATA_HOME", str(folder / "data_home"))  # nothing written to the user's cache
    if stem == "05_training":
        monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    else:
        monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)  # what students run
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    path = folder / f"{stem}.ipynb"
    shutil.copy(SOURCE / path.name, path)
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=300, allow_errors=True, resources={"metadata": {"path": str(folder)}})
    client.execute()
    return nb, time.perf_counter() - started
