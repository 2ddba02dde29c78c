"""Scratch nbgrader courses and the submissions students would make, for the grading tests.

A course is built from the repository's sources exactly as instructors release it (``tools/release.py``); its
``nbgrader_config.py`` loads the repository's and only moves the folders. Submissions are made from the release, as
students fill it in: with the instructor's answers, with answers of their own, or with something worse.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
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


def make_course(root: Path, extra_config: str = "") -> Path:
    """A course folder with the sources, the generated release, its gradebook and an exchange folder.

    ``extra_config`` lines are appended to its ``nbgrader_config.py`` (after the repository's settings).
    """
    shutil.copytree(SOURCE, root / "solutions" / ASSIGNMENT)
    release.build_release(root / "notebooks", db_url=f"sqlite:///{root / 'gradebook.db'}")
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
