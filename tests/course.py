"""Scratch nbgrader courses and the submissions students would make, for the grading tests.

A course is built from the repository's sources exactly as instructors release it (``tools/release.py``); its
``nbgrader_config.py`` loads the repository's and only moves the folders. Submissions are made from the release, as
students fill it in: with the instructor's answers, with answers of their own, or with something worse.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from tools import release

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "solutions" / "segmentation"
ASSIGNMENT = "segmentation"
COURSE_ID = "segmentation-lab"
STEMS = sorted(p.stem for p in SOURCE.glob("*.ipynb"))
GRADING_PYTHON = REPO / ".venv-grading" / "bin" / "python"


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` fails, except in CI (``CI`` set), where the missing tool is a broken setup."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide this: {reason}")
        pytest.skip(reason)


def require_sandbox() -> None:
    from tools.grading import sandbox

    require(GRADING_PYTHON.is_file(), "no grading environment (bash scripts/setup.sh --grading)")
    problem = sandbox.probe(GRADING_PYTHON)
    require(problem is None, f"the sandbox cannot start: {problem}")


#: A folder that the test processes of one run share (``tests/conftest.py`` sets it): the course template is built
#: there once per run. ``None``: once per process, in a temporary folder.
SHARED_FOLDER: Path | None = None

#: The solution notebooks that study no model (05 trains one, 06 studies one): they run the same way for every test.
MODEL_FREE_STEMS = ("01_data_exploration", "02_data_pipeline", "03_unet", "04_metrics_losses", "07_going_further")


def built_once(shared: Path, name: str, build: Callable[[Path], None]) -> Path:
    """``shared/name``, made by ``build(folder)`` once per run of the suite: the first test process to ask builds it
    under a lock, the others (pytest-xdist workers sharing ``shared``) wait and reuse it. A failed build fails the
    others at once, with its message, instead of being retried."""
    import fcntl

    folder = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "FAILED").is_file():
            pytest.fail(f"{name} failed to build (see the first test that asked for it):\n"
                        + (folder / "FAILED").read_text())
        if not (folder / "BUILT").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            try:
                build(folder)
            except BaseException as error:
                (folder / "FAILED").write_text(str(error)[-5000:])
                raise
            (folder / "BUILT").write_text("")
    return folder


@functools.cache
def _course_template() -> Path:
    """The sources, the release and its gradebook (which names no path), built once per run (:func:`built_once`)
    or, without a shared folder, once per test process."""
    if SHARED_FOLDER is not None:
        return built_once(SHARED_FOLDER, "course-template", _build_template) / "course"
    import atexit
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="course-template-"))
    atexit.register(shutil.rmtree, folder, True)  # removed when the test process ends
    _build_template(folder)
    return folder / "course"


def _build_template(folder: Path) -> None:
    root = folder / "course"
    shutil.copytree(SOURCE, root / "solutions" / ASSIGNMENT)
    release.build_release(root / "notebooks", db_url=f"sqlite:///{root / 'gradebook.db'}")


def fresh_release() -> Path:
    """The student release generated from the sources by this test process (``tools/release.py``, the release of
    the course template): the tests that need one read it or copy it, and none changes it."""
    return _course_template() / "notebooks" / ASSIGNMENT


def make_course(root: Path, extra_config: str = "") -> Path:
    """A course folder with the sources, the generated release, its gradebook and an exchange folder.

    ``extra_config`` lines are appended to its ``nbgrader_config.py`` (after the repository's settings).
    """
    shutil.copytree(_course_template(), root, dirs_exist_ok=True)  # sources, release, gradebook: built once
    (root / "exchange").mkdir()
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"load_subconfig({str(REPO / 'nbgrader_config.py')!r})\n"
        f"c.CourseDirectory.root = {str(root)!r}\n"
        f"c.Exchange.root = {str(root / 'exchange')!r}\n"
        f"c.Exchange.cache = {str(root / 'cache')!r}\n"
        + extra_config
    )
    return root


# --------------------------------------------------------------------------------------------------------------------
# What students write
# --------------------------------------------------------------------------------------------------------------------

def instructor_answers(stem: str) -> dict[str, str]:
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(SOURCE / f"{stem}.ipynb", 4).cells
            if c.metadata.get("nbgrader", {}).get("solution")}


def answer(folder: Path, stem: str, answers: dict[str, str] | None = None) -> None:
    """Fill the answer cells of a notebook: the instructor's answers, with ``answers`` (grade id -> source) instead."""
    chosen = {**instructor_answers(stem), **(answers or {})}
    path = folder / f"{stem}.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in chosen:
            cell.source = chosen[grade_id]
    nbformat.write(nb, path)


def write_library(library: Path, own: dict[str, str] | None = None) -> None:
    """Write the exercises of a student copy of the library: the instructor's code, or ``own`` (title -> code)."""
    for source in sorted((REPO / "labcode").rglob("*.py")):
        regions = release.find_regions(source.read_text(), str(source))
        if not regions:
            continue
        target = library / source.relative_to(REPO / "labcode")
        text = target.read_text()
        for region in regions:
            stub = "\n".join(release.stub_lines(region))
            assert stub in text, f"{target}: no stub for {region.title}"
            code = textwrap.indent(textwrap.dedent(own[region.title]).strip("\n"), region.indent) \
                if own and region.title in own else "\n".join(region.body)
            text = text.replace(stub, code, 1)
        target.write_text(text)


#: Correct exercises written differently from the instructor's: no biases, other layer constructions, another
#: augmentation, another formula. Every question leaves these choices open.
OWN_LIBRARY = {
    "Augmentation pipeline": """
        augment = [
            A.SmallestMaxSize(max_size=img_size, mask_interpolation=0),
            A.RandomCrop(height=img_size, width=img_size),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.0, p=0.5),
        ]""",
    "UNetConvBlock layers": """
        for name, channels in (("block1", cin), ("block2", cout)):
            setattr(self, name, nn.Sequential(nn.Conv2d(channels, cout, kernel_size=3, padding=1, bias=False),
                                              nn.ReLU(), nn.BatchNorm2d(cout)))
        self.block3 = nn.MaxPool2d(2)""",
    "UNetConvBlock forward": """
        features = self.block1(x)
        features = self.block2(features)
        outputs = self.block3(features)""",
    "Encoder bottleneck": """
        self.bottleneck = nn.Sequential()
        self.bottleneck.append(nn.Conv2d(c, c * 2, kernel_size=(3, 3), padding=(1, 1), bias=False))
        self.bottleneck.append(nn.ReLU())
        self.bottleneck.append(nn.BatchNorm2d(c * 2))""",
    "UNetUpConvBlock layers": """
        def conv_relu_norm(a, b):
            return [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.ReLU(), nn.BatchNorm2d(b)]

        self.upconv = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), *conv_relu_norm(cin, cout))
        self.convblock = nn.Sequential(*conv_relu_norm(cin, cout), *conv_relu_norm(cout, cout))""",
    "UNetUpConvBlock forward": """
        upsampled = self.upconv(inputs)
        return self.convblock(torch.cat((upsampled, encoder_features), 1))""",
    "Decoder first and last layers": """
        self.first_block = nn.Sequential(nn.Conv2d(cin, cin, kernel_size=3, padding=1, bias=False), nn.ReLU(),
                                         nn.BatchNorm2d(cin))
        self.classifier = nn.Conv2d(in_channels=cin // (2**num_blocks), out_channels=num_classes,
                                    kernel_size=(1, 1))""",
    "Class weights": """
        shares = np.asarray(counts, dtype=np.float64)
        shares = shares / shares.sum()
        weights = np.zeros_like(shares)
        weights[shares > 0] = 1.0 / shares[shares > 0]
        weights *= (shares > 0).sum() / weights.sum()
        return weights.astype(np.float32)""",
}

#: Notebook answers in other words than the instructor's.
OWN_ANSWERS = {
    "01_data_exploration": {"answer_describe_sample": '''def describe_sample(image, mask) -> dict:
    image_array, mask_array = np.array(image), np.array(mask)
    present = sorted(set(mask_array.reshape(-1).tolist()))
    return dict(image_shape=image_array.shape, mask_shape=mask_array.shape, image_dtype=image_array.dtype.name,
                mask_dtype=mask_array.dtype.name, classes=[CLASSES[int(k)] for k in present])'''},
    "03_unet": {"answer_unet_dummy_forward": '''from labcode.unet import UNet

model = UNet(num_classes=NUM_CLASSES, num_blocks=3, base_chan=4).eval()  # any width answers the question
with torch.no_grad():
    dummy_output = model(torch.zeros((2, 3, 96, 128)))
print(f"output shape: {tuple(dummy_output.shape)}")'''},
    "04_metrics_losses": {
        # the share as the table gives it (the shares add up to 0.9999): 0.3367, right to the 4 decimals asked
        "answer_wall_accuracy": "wall_accuracy = float(REAL_CLASS_FREQUENCIES[WALL])",
        "answer_wall_macro_f1": '''f = REAL_CLASS_FREQUENCIES[WALL] / REAL_CLASS_FREQUENCIES.sum()
f1 = np.zeros(NUM_CLASSES)
f1[WALL] = f / (f + 0.5 * (1 - f))
wall_macro_f1 = f1.mean()''',
    },
    "05_training": {"answer_training_config": '''from labcode.train import TrainConfig, fit

SETTINGS = {
    "tiny": dict(model_options={"num_blocks": 3, "base_chan": 8}, img_size=64, batch_size=4, num_workers=0, epochs=2,
                 small=True, small_batches=3, figure_items=2),
    "cpu": dict(model_options={"num_blocks": 3, "base_chan": 16}, img_size=128, batch_size=8, num_workers=2, epochs=4,
                small=False, channels_last=True, figure_items=4),
    "cuda": dict(model_options={"num_blocks": 4, "base_chan": 32}, img_size=256, batch_size=16, num_workers=4,
                 epochs=10, small=False, figure_items=4),
}[SETTING] | {"progress": not GRADING}
config = TrainConfig(**SETTINGS, class_weights="inverse", loss="ce", model="unet", areas_train=("3",),
                     areas_valid=[], datadir=str(DATADIR))
config'''},
    "06_inference_onnx": {
        "answer_evaluate_areas": '''from labcode.infer import OnnxSegmenter
from labcode.scoring import evaluate_areas, format_metrics_table

segmenter = OnnxSegmenter(MODEL)
print(f"ONNX Runtime providers: {segmenter.providers}")
scores = {name: evaluate_areas(segmenter, DATADIR, areas, img_size=EVAL_SIZE, progress=not GRADING)
          for name, areas in (("seen", tuple(TRAIN_AREAS)), ("unseen", ("5a", "5b")))}
train_scores, test_scores = scores["seen"], scores["unseen"]
print(f"training areas {', '.join(TRAIN_AREAS)}: macro F1 {train_scores['macro_f1']:.3f}, "
      f"accuracy {train_scores['pixel_accuracy']:.3f}")
print(f"held-out areas 5a, 5b:\\n{format_metrics_table(test_scores)}")''',
        "answer_segment_photo": '''from PIL import Image

from labcode.infer import segment_image_file

PHOTO = next((p for p in (Path("my_photo.png"), Path("my_photo.jpg")) if p.exists()), Path("stand_in_photo.png"))
if not PHOTO.exists():  # no photo of yours yet: a non-square crop of a held-out image
    held_out = StanfordDataset(DATADIR, areas=["5b"]).load_image(0)
    height, width = held_out.shape[:2]
    Image.fromarray(held_out[height // 8:, : width - width // 5]).save(PHOTO)
photo_result = segment_image_file(segmenter, str(PHOTO), Path("photo_figure.png"), max_size=EVAL_SIZE)
print(f"{PHOTO}: {photo_result['size'][0]}x{photo_result['size'][1]} pixels")
display(Image.open(photo_result["figure"]))''',
    },
    "07_going_further": {
        "answer_deeplab_forward": '''from labcode.models import build_model, count_parameters
from labcode.deeplab import DeepLabV3Plus

deeplab = DeepLabV3Plus(NUM_CLASSES, base_chan=8, aspp_chan=32, low_level_chan=8)
deeplab.eval()
with torch.no_grad():
    deeplab_output = deeplab(torch.zeros(1, 3, 70, 90))
unet = build_model("unet", NUM_CLASSES, num_blocks=3, base_chan=8)
print(f"output {tuple(deeplab_output.shape)}; parameters: DeepLabv3+ {count_parameters(deeplab):,}, "
      f"UNet {count_parameters(unet):,}")''',
        "answer_loss_zoo": '''from labcode.losses import LOSSES, build_loss

target = torch.randint(0, NUM_CLASSES, (2, 16, 16))
confident = torch.zeros(2, NUM_CLASSES, 16, 16).scatter_(1, target[:, None], 20.0)
flat = torch.ones(2, NUM_CLASSES, 16, 16)  # equal logits: every class equally likely
perfect_losses, uniform_losses = {}, {}
for name in LOSSES:
    loss = build_loss(name)
    perfect_losses[name], uniform_losses[name] = loss(confident, target).item(), loss(flat, target).item()
for name in LOSSES:
    print(f"{name:>8}: perfect {perfect_losses[name]:.4f}, uniform {uniform_losses[name]:.4f}")''',
    },
}


def new_submission(course: Path, student: str, *, notebooks: str = "solved", library: str = "solved",
                   own: bool = False) -> Path:
    """A collected submission ``submitted/<student>/segmentation`` made from the release.

    Args:
        notebooks: ``"solved"`` (answer cells filled) or ``"blank"``.
        library: ``"solved"`` (exercises written), ``"blank"`` (stubs) or ``"deleted"`` (no ``labcode/``).
        own: write the student's own forms (:data:`OWN_LIBRARY`, :data:`OWN_ANSWERS`) instead of the instructor's.
    """
    folder = course / "submitted" / student / ASSIGNMENT
    shutil.copytree(course / "notebooks" / ASSIGNMENT, folder)
    if notebooks == "solved":
        for stem in STEMS:
            answer(folder, stem, OWN_ANSWERS.get(stem) if own else None)
    if library == "solved":
        write_library(folder / "labcode", OWN_LIBRARY if own else None)
    elif library == "deleted":
        shutil.rmtree(folder / "labcode")
    return folder


def keep_notebooks(folder: Path, stems: set[str]) -> None:
    """Remove from a submission the notebooks not in ``stems``: the grader records them as missing, without running a
    kernel, so a submission made for one test costs only the notebooks that test reads."""
    for path in folder.glob("*.ipynb"):
        if path.stem not in stems:
            path.unlink()


# --------------------------------------------------------------------------------------------------------------------
# Reading the results
# --------------------------------------------------------------------------------------------------------------------

def grades(course: Path, student: str) -> dict[str, dict]:
    """grade_id -> notebook, kind (``auto`` for test cells, ``manual`` for written answers), score, max score."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gradebook:
        submission = gradebook.find_submission(ASSIGNMENT, student)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                out[grade.name] = {"notebook": notebook.name, "kind": "auto" if grade.cell.cell_type == "code"
                                   else "manual", "score": grade.auto_score, "max": grade.max_score}
    return out


def auto_grades(course: Path, student: str, notebooks: set[str] | None = None) -> dict[str, dict]:
    return {k: g for k, g in grades(course, student).items()
            if g["kind"] == "auto" and (notebooks is None or g["notebook"] in notebooks)}


def cell_outputs(course: Path, student: str, stem: str, grade_id: str) -> list[dict]:
    nb = nbformat.read(course / "autograded" / student / ASSIGNMENT / f"{stem}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    return cell.outputs


def output_text(outputs: list[dict]) -> str:
    parts = []
    for out in outputs:
        parts += [out.get("text", ""), out.get("ename", ""), out.get("evalue", "")]
        parts += [str(v) for v in out.get("data", {}).values()]
    return "\n".join(parts)


def grader(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    """``python -m tools.grading ...`` from the repository root, as instructors run it."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "tools.grading", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_grader(course: Path, *options: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """``python -m tools.grading autograde`` on ``course`` with two workers; its process and each student's result."""
    import json

    done = grader("autograde", "--course", str(course), "--workers", "2", "--no-progress", *options)
    results = {p.parent.name: json.loads(p.read_text()) for p in (course / "grading").glob("*/result.json")}
    return done, results


# --------------------------------------------------------------------------------------------------------------------
# A student working through the distribution
# --------------------------------------------------------------------------------------------------------------------

#: The written answers (markdown cells) as a student might put them, short and in words of their own. Nothing grades
#: them automatically; they replace the instructor's answers so that no line of those reaches a student's notebook.
OWN_WORDS = {
    "01_data_exploration": {
        "answer_tensor_types": "(a) The photo comes back as a height x width x 3 array of bytes (0 to 255) and the "
                               "target as a height x width array of class numbers, 0 to 13. (b) The network gets "
                               "floats, channels first, stacked as batch x 3 x H x W; the targets become a "
                               "batch x H x W tensor of 64-bit integers.",
        "answer_noisy_labels": "(a) Scores are counted against the annotation: where it is wrong, or `<UNK>` hides "
                               "the truth, even a perfect model loses points. (b) A wrong label on a pixel the model "
                               "is sure about gives a probability near zero to the labelled class, and its log "
                               "goes to minus infinity: the loss and its gradient blow up and steer the weights "
                               "towards the noise.",
    },
    "02_data_pipeline": {
        "answer_augmentation_choice": "Crops and rescaling, horizontal flips and small colour or brightness changes "
                                      "give photos that could be taken in a real building. Vertical flips or big "
                                      "rotations make upside-down rooms, and strong hue shifts make colours no wall "
                                      "has: they teach the model things the test photos never show.",
        "answer_augmentation_quality": "Train the same model with each setting, all else equal, and compare the "
                                       "macro F1 on the validation rooms (never on 5a or 5b), against a run with no "
                                       "augmentation; a few seeds each, since runs vary.",
    },
    "03_unet": {
        "answer_fully_convolutional": "It has no dense layer, only convolutions, pooling and upsampling that slide "
                                      "over the image, so the weights do not fix the image size: it trains on crops "
                                      "and predicts on larger photos, as long as the sides can be halved at every "
                                      "pooling.",
        "answer_minibatch_sizes": "A batch is one tensor, so all its images need the same height and width: the "
                                  "pipeline crops or resizes every sample to the same square size.",
        "answer_unet_any_side": "I got (2, 14, 96, 128): one score per class and pixel. With a side that is not a "
                                "multiple of 8, a pooling rounds down and the upsampled map no longer matches the "
                                "skip connection, so the concatenation fails; padding the input to a multiple of 8 "
                                "(then cropping the output) fixes it.",
    },
    "04_metrics_losses": {
        "answer_macro_f1_in_training": "`fit` calls the engine's training and evaluation passes, which fill a "
                                       "confusion matrix batch by batch; the macro F1 is computed from it at the end "
                                       "of each pass. The validation value picks the best epoch, whose checkpoint is "
                                       "kept and exported.",
        "answer_f1_not_differentiable": "It counts argmax decisions, which do not move for a tiny change of the "
                                        "weights: the F1 is flat almost everywhere and jumps elsewhere, so its "
                                        "gradient is zero or undefined.",
        "answer_class_weights": "Weights that grow as a class gets rarer, such as one over its pixel share or one "
                                "over its square root (gentler), normalised to a mean of one. They go to "
                                "`nn.CrossEntropyLoss(weight=...)` as a float tensor with one entry per class.",
        "answer_focal_loss": "It is `focal_loss` in `labcode/losses.py`; `TrainConfig(loss=\"focal\")` or `--loss "
                             "focal` on the command line selects it, with gamma as its option. At p = 0.9 and "
                             "gamma = 2 the factor (1 - 0.9)^2 = 0.01 makes it a hundred times smaller than the "
                             "cross-entropy.",
    },
    "05_training": {
        "answer_epoch_time": "My epochs took a second or two on the laptop; reading and augmenting the batches "
                             "alone took a good part of that, so more loader workers would help. The weights are a "
                             "couple of megabytes, and the process peaked at a few hundred megabytes.",
        "answer_tensorboard": "Both losses fall fast, then slowly, and the validation macro F1 climbs and levels "
                              "off. Walls, floors and ceilings are learnt first; small objects such as boards stay "
                              "poor and are confused with walls. The learning rate ramps up, then decays like a "
                              "cosine. Overfitting would show as a validation loss going up while training goes "
                              "down.",
    },
    "06_inference_onnx": {
        "answer_onnx_graph": "Each encoder block is two convolutions with their ReLU and batch norm, then a max "
                             "pool; each decoder block a resize, a convolution, a concatenation with the skip "
                             "tensor and two more convolutions; a 1x1 convolution gives the 14 scores.",
        "answer_onnx_export": "`export_onnx` in `labcode/export/onnx_export.py`, called at the end of training, "
                              "traces the model in eval mode on an example input; the input and output get names, "
                              "the batch and image sides are declared dynamic, and the opset fixes the operator "
                              "versions.",
        "answer_onnxruntime": "`OnnxSegmenter` in `labcode/infer.py` opens an inference session and feeds it "
                              "normalised float batches. It needs only ONNX Runtime and NumPy, not PyTorch or the "
                              "model's code.",
        "answer_generalisation": "The scores on the training areas and on 5a and 5b are close, so the model "
                                 "generalises to new buildings about as well as it fits the old ones: it is small "
                                 "and trained briefly, and the generated areas look alike.",
        "answer_any_size": "Only convolutions and pooling, no layer tied to a size, and the export declares height "
                           "and width dynamic; the library pads the sides to a multiple of the poolings and crops "
                           "the answer back.",
        "answer_own_photo": "Walls and floor come out mostly right, edges of furniture are ragged, and small "
                            "objects are often called wall: the model saw few of them.",
    },
    "07_going_further": {
        "answer_deeplab_vs_unet": "(a) The UNet pools many times; DeepLabv3+ stops earlier and uses dilated "
                                  "convolutions in parallel (ASPP). (b) The UNet copies every encoder level into "
                                  "its decoder; DeepLabv3+ only one early level. The UNet costs memory at high "
                                  "resolution, DeepLabv3+ dilated convolutions on large maps.",
        "answer_loss_values": "All of them are about zero on the perfect prediction. On the uniform one the "
                              "cross-entropy is ln 14, about 2.64, the focal loss a bit less, and the overlap "
                              "losses (Dice, Tversky, Lovasz) stay well above zero.",
        "answer_choose_loss": "Dice first, added to the cross-entropy: it is close to the macro F1 and weighs all "
                              "classes alike. Alone it trains unsteadily and can favour tiny classes too much.",
    },
}


#: A student's code for the notebooks' code questions, each written where the released cell asks for it (in place
#: of its stub; the given code around it stays as released), in forms other than the instructor's.
OWN_CODE = {
    "01_data_exploration": {"answer_describe_sample": """
        pixels, labels = np.array(image), np.array(mask)
        present = sorted(set(labels.reshape(-1).tolist()))
        return dict(image_shape=pixels.shape, mask_shape=labels.shape, image_dtype=pixels.dtype.name,
                    mask_dtype=labels.dtype.name, classes=[CLASSES[int(k)] for k in present])"""},
    "03_unet": {"answer_unet_dummy_forward": """
        model = UNet(num_classes=NUM_CLASSES, num_blocks=3, base_chan=4).eval()  # any width answers the question
        with torch.no_grad():
            dummy_output = model(torch.zeros((2, 3, 96, 128)))"""},
    "04_metrics_losses": {
        # the share as the table gives it (the shares add up to 0.9999): 0.3367, right to the 4 decimals asked
        "answer_wall_accuracy": "wall_accuracy = float(REAL_CLASS_FREQUENCIES[WALL])",
        "answer_wall_macro_f1": """
            f = REAL_CLASS_FREQUENCIES[WALL] / REAL_CLASS_FREQUENCIES.sum()
            f1 = np.zeros(NUM_CLASSES)
            f1[WALL] = f / (f + 0.5 * (1 - f))
            wall_macro_f1 = f1.mean()""",
        "answer_weighted_cross_entropy": """
            w = torch.tensor(class_weights(counts, strategy), dtype=torch.float32).to(logits)
            return torch.nn.functional.cross_entropy(logits, target, weight=w)""",
    },
    "05_training": {"answer_training_config": """
        config = TrainConfig(**SETTINGS, class_weights="inverse", loss="ce", model="unet", areas_train=("3",),
                             datadir=str(DATADIR))"""},
    "06_inference_onnx": {
        "answer_evaluate_areas": """
            scores = {name: evaluate_areas(segmenter, DATADIR, areas, img_size=EVAL_SIZE, progress=not GRADING)
                      for name, areas in (("seen", list(TRAIN_AREAS)), ("unseen", ["5a", "5b"]))}
            train_scores, test_scores = scores["seen"], scores["unseen"]""",
        "answer_segment_photo": "photo_result = segment_image_file(segmenter, str(PHOTO), max_size=EVAL_SIZE)",
    },
    "07_going_further": {
        "answer_deeplab_forward": """
            from labcode.deeplab import DeepLabV3Plus

            deeplab = DeepLabV3Plus(NUM_CLASSES, base_chan=8, aspp_chan=32, low_level_chan=8)
            deeplab.eval()
            with torch.no_grad():
                deeplab_output = deeplab(torch.zeros(1, 3, 70, 90))""",
        "answer_loss_zoo": """
            confident = torch.zeros(2, NUM_CLASSES, 16, 16).scatter_(1, target[:, None], 20.0)
            flat = torch.ones(2, NUM_CLASSES, 16, 16)  # equal logits: every class equally likely
            perfect_losses, uniform_losses = {}, {}
            for name in LOSSES:
                loss = build_loss(name)
                perfect_losses[name] = loss(confident, target).item()
                uniform_losses[name] = loss(flat, target).item()""",
    },
}


def fill_in(folder: Path, stem: str, code: dict[str, str], words: dict[str, str]) -> None:
    """Answer every question of a released notebook as a student does: each code stub replaced by ``code[grade
    id]`` (indented like the stub), each written answer's placeholder by ``words[grade id]``.

    Raises:
        AssertionError: a question of the notebook has no answer in ``code`` or ``words``, or an answer has no
            question (the notebooks changed: write the new answers).
    """
    import re

    stubs = release.load_course_config().ClearSolutions
    code_stub, text_stub = stubs.code_stub["python"], stubs.text_stub
    first, *rest = code_stub.splitlines()
    stub = re.compile(r"^([ \t]*)" + re.escape(first) + "".join(r"\n\1" + re.escape(line) for line in rest), re.M)
    path = folder / f"{stem}.ipynb"
    nb = nbformat.read(path, as_version=4)
    answered = set()
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.cell_type == "code" and stub.search(cell.source):
            assert grade_id in code, f"{stem}: no code of a student for {grade_id}"
            cell.source = stub.sub(lambda m: textwrap.indent(textwrap.dedent(code[grade_id]).strip("\n"), m.group(1)),
                                   cell.source, count=1)
            answered.add(grade_id)
        elif cell.cell_type == "markdown" and cell.source.strip() == text_stub:
            assert grade_id in words, f"{stem}: no written answer of a student for {grade_id}"
            cell.source = words[grade_id]
            answered.add(grade_id)
    unused = (set(code) | set(words)) - answered
    assert not unused, f"{stem}: answers without a question: {unused}"
    nbformat.write(nb, path)


def do_the_work(segmentation: Path) -> None:
    """Write a student's own exercises (:data:`OWN_LIBRARY`) and answers (:data:`OWN_CODE`, :data:`OWN_WORDS`) into
    the ``segmentation/`` folder of a distribution, as a student saves them."""
    write_library(segmentation / "labcode", OWN_LIBRARY)
    for stem in STEMS:
        fill_in(segmentation, stem, OWN_CODE.get(stem, {}), OWN_WORDS.get(stem, {}))


def build_student_distribution(dest: Path, reference: Path) -> Path:
    """The students' distribution as ``make release`` writes it, from the release this test process generated from
    the sources (:func:`fresh_release`).

    Args:
        dest: a scratch folder (``dest / "student"`` is written).
        reference: the ONNX reference model to ship (its ``reference.json`` beside it goes too).

    Returns:
        The distribution's folder, ``dest / "student"``.
    """
    from tools import distribution

    return distribution.build_distribution(fresh_release(), dest / "student", reference=reference,
                                           links=distribution.CourseLinks(),
                                           ignore=tuple(release.load_course_config().CourseDirectory.ignore))


def student_venv(dist: Path, stack: Path = GRADING_PYTHON) -> Path:
    """A ``.venv`` in the distribution that sees the packages of ``stack``'s environment, without installing them.

    ``make setup`` would download and install ``requirements.txt``; the grading environment holds the same
    notebooks' stack without the course library, so the simulation borrows it through a ``.pth`` file. The
    distribution's make targets (``make data``, ``make check``) then run with ``.venv/bin/python`` as written.

    Returns:
        The new environment's Python.
    """
    site = subprocess.run([str(stack), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # made by the stack's own Python (its base interpreter, so the same version), as `python3 -m venv .venv`
    subprocess.run([str(stack), "-m", "venv", "--without-pip", str(dist / ".venv")], check=True)
    python = dist / ".venv" / "bin" / "python"
    own_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    Path(own_site, "notebooks_stack.pth").write_text(site + "\n")
    (dist / ".venv" / "lab-build").write_text("cpu\n")
    return python


def student_env(datadir: Path | None, data_home: Path) -> dict[str, str]:
    """The environment of a student's JupyterLab: no grading, no instructor library, model or program on any path.

    Args:
        datadir: the data set (``LABCODE_DATADIR``); ``None``: the default generated one, as students have it.
        data_home: the student's data cache (``LABCODE_DATA_HOME``, ``~/.cache/labcode`` on a student's machine).
    """
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LABCODE_", "NBGRADER_", "PYTHON")) and key != "VIRTUAL_ENV"}
    path = [entry for entry in env.get("PATH", os.defpath).split(os.pathsep) if not entry.startswith(str(REPO))]
    return {**env, "PATH": os.pathsep.join(path), "LABCODE_DATA_HOME": str(data_home),
            **({"LABCODE_DATADIR": str(datadir)} if datadir else {})}


def link_default_dataset(data_home: Path) -> Path | None:
    """Make the default generated data set of this checkout (when it is complete) visible in ``data_home`` too, so
    that ``make data`` finds it there instead of rendering it again; the link, or ``None`` when there is none."""
    from labcode import synth

    made = synth.data_home() / f"synth-{synth.SYNTH_VERSION}"
    if not (made / "assets" / "synth.json").is_file():
        return None
    data_home.mkdir(parents=True, exist_ok=True)
    link = data_home / made.name
    link.symlink_to(made.resolve(), target_is_directory=True)
    return link


#: The notebook runner, run by the student environment's Python (its kernel then is that Python, as under
#: JupyterLab): executes the notebooks named on its command line in the current folder, top to bottom, saves each
#: one back with its outputs, and prints a JSON line per notebook: wall seconds, and CPU seconds of the kernel and
#: the processes it started (user + system, counted once they have ended).
RUNNER = """
import json, os, resource, shutil, sys, time
import nbclient, nbformat
from jupyter_client.kernelspec import KernelSpecManager
kernel = KernelSpecManager().get_kernel_spec("python3").argv[0]
if os.path.abspath(shutil.which(kernel) or kernel) != os.path.abspath(sys.executable):
    raise SystemExit(f"the python3 kernel would run {kernel}, not this environment's {sys.executable}")
def cpu():
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime
for stem in sys.argv[2:]:
    nb = nbformat.read(stem + ".ipynb", as_version=4)
    started, cpu_before = time.perf_counter(), cpu()
    nbclient.NotebookClient(nb, timeout=int(sys.argv[1]), allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": "."}}).execute()
    seconds = time.perf_counter() - started
    nbformat.write(nb, stem + ".ipynb")
    print(json.dumps({stem: {"seconds": seconds, "cpu_seconds": cpu() - cpu_before}}), flush=True)
"""


def run_student_notebooks(dist: Path, stems: list[str], env: dict[str, str], *, timeout: int = 600,
                          budget: int = 3600) -> dict[str, dict[str, float]]:
    """Execute notebooks of a distribution in its ``segmentation/`` folder with its ``.venv``, as a student runs
    them (Restart & Run All), saving their outputs in place.

    Args:
        dist: the distribution, set up (``.venv``).
        stems: the notebooks, in order.
        env: the process environment (:func:`student_env`).
        timeout: seconds allowed to one cell.
        budget: seconds allowed to all of them.

    Returns:
        For each notebook, ``seconds`` (wall time, the kernel's start included) and ``cpu_seconds`` (the kernel's
        and its worker processes' CPU time).
    """
    import json

    done = subprocess.run([str(dist / ".venv" / "bin" / "python"), "-c", RUNNER, str(timeout), *stems],
                          cwd=dist / ASSIGNMENT, env=env, capture_output=True, text=True, timeout=budget)
    if done.returncode != 0:
        raise RuntimeError(f"the notebook runner failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}")
    times = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            times.update(json.loads(line))
    return times


def error_outputs(notebook: Path) -> list[str]:
    """``cell <index>: <error name>: <message>`` for each error output of a saved notebook."""
    nb = nbformat.read(notebook, as_version=4)
    return [f"cell {i}: {out.get('ename')}: {out.get('evalue')}" for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"]


def notebook_text(notebook: Path) -> str:
    """All the text a saved notebook's cells printed (streams and plain-text results)."""
    nb = nbformat.read(notebook, as_version=4)
    return output_text([out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs])
