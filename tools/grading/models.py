"""Grade the trained model, not only the code: each submission's ONNX model scored on a hidden test set.

Students end notebook 5 by exporting their best model to ``my_model.onnx`` next to the notebooks. The instructor
generates a **hidden test set** once (``python -m tools.grading hidden-set``): the course's generator, same format
and class frequencies, with a secret seed, written under ``data/hidden/`` (git-ignored; never in the students'
distribution or the site). With the real data set, a folder of held-out images in the same layout (``--hidden
PATH``) plays that part.

For each submission, the worker (:mod:`tools.grading.worker`) runs :mod:`tools.grading.score_model` in the sandbox
with a time and a memory limit: it receives the model's bytes and the hidden images (never the masks, never a file)
and returns the labels the model predicts. The trusted side counts them against the masks into the confusion matrix,
computes from it the macro F1, the mIoU and the per-class F1, and turns the macro F1 into points by the bands of the
course configuration (``c.ModelGrading`` in ``nbgrader_config.py``). The points become the manual score of the
model's graded cell of notebook 5, so totals, feedback and the CSV export include them; a missing, unreadable,
external-data, wrong-class-count, too slow or too greedy model gets 0 and the reason. The feedback of notebook 5 then
shows the student's per-class F1 against the class median, their confusion matrix and their predictions on the hidden
images the instructor marked shareable; a leaderboard page ranks the class.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.grading import sandbox

MODEL_FILE = "my_model.onnx"
NOTEBOOK = "05_training"


@dataclass(frozen=True)
class ModelGrading:
    """The course's settings of model grading (``c.ModelGrading.<name>`` in ``nbgrader_config.py``).

    Attributes:
        model_file: the file students export, next to their notebooks.
        grade_id: the graded cell of ``notebook`` that receives the points (its points are the maximum).
        notebook: the notebook holding that cell.
        bands: ``(minimum macro F1, share of the points)`` from the best band down; below the last, 0.
        img_size: side of the square images the models are evaluated on.
        time_limit: seconds a model may take over the whole hidden set.
        memory_gb: memory a model's evaluation may use.
        max_model_mb: larger files are not evaluated.
        names: ``"pseudonym"`` (stable, made from the student id) or ``"student_id"`` on the leaderboard.
        shareable: how many hidden images (the first of the set) students see their predictions on.
    """

    model_file: str = MODEL_FILE
    grade_id: str = "test_model_export"
    notebook: str = NOTEBOOK
    bands: tuple[tuple[float, float], ...] = ((0.70, 1.0), (0.60, 0.8), (0.50, 0.6), (0.35, 0.4), (0.20, 0.2))
    img_size: int = 128
    time_limit: int = 300
    memory_gb: float = 4.0
    max_model_mb: float = 200.0
    names: str = "pseudonym"
    shareable: int = 3

    @classmethod
    def from_config(cls, config) -> ModelGrading:
        section = config.get("ModelGrading", {}) if hasattr(config, "get") else {}
        values = {key: section[key] for key in cls.__dataclass_fields__ if key in section}
        if "bands" in values:
            values["bands"] = tuple(tuple(map(float, band)) for band in values["bands"])
        return cls(**values)


def points_for(macro_f1: float | None, bands: tuple[tuple[float, float], ...], max_points: float) -> float:
    """The points of a macro F1: the share of the first band it reaches, times ``max_points`` (0 below them all)."""
    if macro_f1 is None:
        return 0.0
    for minimum, share in bands:
        if macro_f1 >= minimum:
            return round(share * max_points, 2)
    return 0.0


# --------------------------------------------------------------------------------------------------------------------
# The hidden test set
# --------------------------------------------------------------------------------------------------------------------

def make_hidden_set(out: Path, *, images: int = 120, size: int | None = None, seed: int | None = None) -> Path:
    """Generate the hidden test set in ``out``: areas 5a and 5b of the course's generator with a secret seed.

    The seed is drawn from the system's secure random source unless given, and kept in ``out/hidden.json`` with the
    list of shareable images; nothing of it is written anywhere else.
    """
    from labcode.classes import TEST_AREAS
    from labcode.synth import DEFAULT_SYNTH, area_image_counts, generate_dataset

    seed = secrets.randbits(62) if seed is None else seed
    counts = area_image_counts(images, TEST_AREAS)
    root = generate_dataset(out / "stanford", areas=TEST_AREAS, images_per_area=counts,
                            size=size or DEFAULT_SYNTH.size, seed=seed, workers=2, progress=False)
    (out / "hidden.json").write_text(json.dumps({"seed": seed, "images": sum(counts.values()),
                                                 "areas": counts}, indent=1))
    return root


def pack_hidden_set(root: Path, img_size: int, shareable: int, dest: Path) -> dict:
    """Decode the hidden set, resized to ``img_size``, into one ``.npz`` for the sandboxed scorer.

    Returns:
        what the report needs of it: the number of images.
    """
    import cv2

    from labcode.data import StanfordDataset

    dataset = StanfordDataset(root)
    if len(dataset) == 0:
        raise ValueError(f"the hidden set {root} holds no image")
    images = np.empty((len(dataset), img_size, img_size, 3), dtype=np.uint8)
    masks = np.empty((len(dataset), img_size, img_size), dtype=np.uint8)
    for index in range(len(dataset)):
        image, mask = dataset.load_image(index), dataset.load_mask(index)
        images[index] = cv2.resize(image, (img_size, img_size), interpolation=cv2.INTER_AREA)
        masks[index] = cv2.resize(mask, (img_size, img_size), interpolation=cv2.INTER_NEAREST)
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dest, images=images, masks=masks, shareable=np.arange(min(shareable, len(dataset))))
    return {"images": len(dataset)}


# --------------------------------------------------------------------------------------------------------------------
# Scoring one model (in the sandbox)
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class ModelScore:
    """What the grader knows of one submitted model."""

    status: str  # "scored" or "refused"
    reason: str = ""
    confusion: list | None = None
    shareable: dict = field(default_factory=dict)
    model_mb: float = 0.0
    seconds: float = 0.0

    def metrics(self) -> dict:
        """Macro F1, mIoU, accuracy and per-class F1 of the confusion matrix (empty when not scored)."""
        if self.confusion is None:
            return {}
        import torch

        from labcode.metrics import f1_per_class, macro_f1, mean_iou, pixel_accuracy

        cm = torch.tensor(self.confusion, dtype=torch.int64)
        return {"macro_f1": float(macro_f1(cm)), "mean_iou": float(mean_iou(cm)),
                "pixel_accuracy": float(pixel_accuracy(cm)),
                "f1_per_class": [float(v) for v in f1_per_class(cm)]}


def score_model(model: Path, packed: Path, settings: ModelGrading, spec: sandbox.SandboxSpec,
                num_classes: int) -> ModelScore:
    """Evaluate ``model`` on the packed hidden set: it predicts in the sandbox ``spec``, the grader scores here.

    The sandbox receives the model's bytes and the hidden images on its standard input, nothing else
    (:mod:`tools.grading.score_model`); it returns the predicted labels, from which this function computes the
    confusion matrix against the masks, which stay here. A model with external data is refused; one that runs past
    the time limit or beyond the memory limit is stopped.

    Args:
        model: the submitted ONNX file.
        packed: the packed hidden set (:func:`pack_hidden_set`): images, masks and the shareable indexes.
        settings: the course's model grading settings (time and memory limits, largest model).
        spec: the sandbox to predict in.
        num_classes: the classes the model must score.

    Returns:
        The score: ``"scored"`` with the confusion matrix and the predictions on the shareable images, or
        ``"refused"`` with the reason.
    """
    if not model.is_file():
        return ModelScore("refused", f"no {settings.model_file} in the submission: end notebook 5 by exporting it")
    size_mb = model.stat().st_size / 2**20
    if size_mb > settings.max_model_mb:
        return ModelScore("refused", f"{settings.model_file} is {size_mb:.0f} MB, over the limit of "
                                     f"{settings.max_model_mb:.0f} MB", model_mb=size_mb)
    hidden = np.load(packed, allow_pickle=False)
    images, masks = hidden["images"], hidden["masks"]
    payload = io.BytesIO()
    np.savez(payload, model=np.frombuffer(model.read_bytes(), dtype=np.uint8), images=images)
    scorer = Path(__file__).with_name("score_model.py").read_text()
    argv = [spec.python_inside, "-I", "-c", scorer, str(num_classes),
            "--threads", spec.env.get("OMP_NUM_THREADS", "1")]
    answer_bytes = masks.size + (1 << 20)  # the labels (one byte a pixel), the header and the .npy preamble
    done = sandbox.run(spec, argv, timeout=settings.time_limit, name="model", input=payload.getvalue(), text=False,
                       max_output=answer_bytes)
    del payload
    stderr = done.stderr.decode(errors="replace")
    if stderr.endswith(sandbox.TIMED_OUT):
        return ModelScore("refused", f"the model did not finish the hidden set within {settings.time_limit} s",
                          model_mb=size_mb)
    if stderr.endswith(sandbox.TOO_MUCH_OUTPUT):
        return ModelScore("refused", "the evaluation wrote more than its predictions", model_mb=size_mb)
    header, _, rest = done.stdout.partition(b"\n")
    try:
        answer = json.loads(header)
        ok = bool(answer["ok"])
    except (ValueError, KeyError, TypeError):
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        killed = done.returncode < 0 or "MemoryError" in stderr or "bad_alloc" in stderr
        reason = (f"the evaluation stopped at the memory limit of {settings.memory_gb:g} GB" if killed
                  else f"the evaluation failed: {last[:200]}")
        return ModelScore("refused", reason, model_mb=size_mb)
    if not ok:
        return ModelScore("refused", str(answer.get("reason", "no reason given"))[:500], model_mb=size_mb)
    try:
        predicted = np.load(io.BytesIO(rest), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        return ModelScore("refused", f"the evaluation returned no readable predictions: {err}", model_mb=size_mb)
    in_range = predicted.dtype == np.uint8 and (predicted.size == 0 or int(predicted.max()) < num_classes)
    if not in_range or predicted.shape != masks.shape:
        return ModelScore("refused", f"the evaluation returned predictions of shape {list(predicted.shape)} and type "
                                     f"{predicted.dtype}, not {list(masks.shape)} labels below {num_classes}",
                          model_mb=size_mb)
    confusion = confusion_matrix(masks, predicted, num_classes)
    shareable = {str(int(i)): base64.b64encode(predicted[int(i)].tobytes()).decode() for i in hidden["shareable"]}
    seconds = float(answer.get("seconds", 0.0)) if isinstance(answer.get("seconds"), (int, float)) else 0.0
    return ModelScore("scored", confusion=confusion.tolist(), shareable=shareable, model_mb=size_mb, seconds=seconds)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``num_classes x num_classes`` pixel counts: rows the true class, columns the predicted one."""
    pairs = truth.reshape(-1).astype(np.int64) * num_classes + predicted.reshape(-1).astype(np.int64)
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


# --------------------------------------------------------------------------------------------------------------------
# What students see: their report, and the leaderboard
# --------------------------------------------------------------------------------------------------------------------

def pseudonym(student: str, salt: str) -> str:
    """A stable, unguessable name for the leaderboard (two words and a number from a salted hash of the id)."""
    adjectives = ["amber", "brisk", "calm", "deft", "eager", "fleet", "gentle", "hardy", "keen", "lucid", "merry",
                  "nimble", "plucky", "quiet", "rapid", "sly", "tidy", "vivid", "witty", "zesty"]
    animals = ["otter", "heron", "lynx", "finch", "ibex", "koala", "marten", "newt", "osprey", "panda", "quail",
               "raven", "seal", "tapir", "urchin", "vole", "wren", "yak", "zebu", "gecko"]
    digest = hashlib.sha256(f"{salt}:{student}".encode()).digest()
    return f"{adjectives[digest[0] % 20].title()} {animals[digest[1] % 20].title()} {digest[2] % 100:02d}"


def _png(array_or_figure) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    if hasattr(array_or_figure, "savefig"):
        array_or_figure.savefig(buffer, format="png", dpi=80)
    else:
        Image.fromarray(array_or_figure).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def report_html(score: ModelScore, points: float, max_points: float, medians: list[float | None],
                settings: ModelGrading, hidden: np.lib.npyio.NpzFile | None) -> str:
    """The model part of a student's feedback: self-contained HTML (figures embedded)."""
    from labcode.classes import CLASSES
    from labcode.viz import colorize, plot_confusion_matrix

    if score.status != "scored":
        return (f"<div class='model-report'><p><b>Your model on the hidden test set: {points:g} / {max_points:g} "
                f"points.</b> It could not be scored: {html.escape(score.reason)}.</p></div>")
    metrics = score.metrics()
    bands = ", ".join(f"macro F1 ≥ {low:.2f}: {share * max_points:g}" for low, share in settings.bands)
    rows = []
    for name, mine, median in zip(CLASSES, metrics["f1_per_class"], medians):
        fmt = (lambda v: "n/a" if v is None or v != v else f"{v:.2f}")  # noqa: E731 (NaN: absent class)
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{fmt(mine)}</td><td>{fmt(median)}</td></tr>")
    parts = [
        "<div class='model-report'>",
        f"<p><b>Your model on the hidden test set: {points:g} / {max_points:g} points</b> (macro F1 "
        f"{metrics['macro_f1']:.3f}, mIoU {metrics['mean_iou']:.3f}, pixel accuracy {metrics['pixel_accuracy']:.3f}; "
        f"points by band: {bands}; below the last band, 0).</p>",
        "<table><tr><th>class</th><th>your F1</th><th>class median</th></tr>", *rows, "</table>",
        f"<p>Your confusion matrix (rows: true class, columns: your prediction):</p>"
        f"<img alt='confusion matrix' src='{_png(plot_confusion_matrix(np.array(score.confusion)))}'>",
    ]
    if hidden is not None and score.shareable:
        parts.append("<p>Your predictions on hidden images shared by your instructors (photo, annotation, yours):</p>")
        side = int(hidden["images"].shape[1])
        for key, encoded in sorted(score.shareable.items(), key=lambda kv: int(kv[0])):
            predicted = np.frombuffer(base64.b64decode(encoded), dtype=np.uint8).reshape(side, side)
            row = np.concatenate([hidden["images"][int(key)], colorize(hidden["masks"][int(key)]),
                                  colorize(predicted)], axis=1)
            parts.append(f"<img alt='hidden image {int(key) + 1}' src='{_png(row)}'>")
    parts.append("</div>")
    return "\n".join(parts)


def class_medians(scores: list[ModelScore], num_classes: int) -> list[float | None]:
    """Per class, the median F1 over the scored models (``None`` where no model has a value for that class)."""
    import warnings

    per_class = np.array([s.metrics()["f1_per_class"] for s in scores if s.status == "scored"], dtype=float)
    if per_class.size == 0:
        return [None] * num_classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent everywhere: all-NaN column
        medians = np.nanmedian(per_class, axis=0)
    return [None if np.isnan(m) else float(m) for m in medians]


def leaderboard_html(entries: list[dict], title: str = "Segmentation lab: leaderboard") -> str:
    """A static page ranking the scored models by macro F1 (entries: name, macro_f1, mean_iou, model_mb)."""
    scored = sorted((e for e in entries if e.get("macro_f1") is not None), key=lambda e: -e["macro_f1"])
    rows = [f"<tr><td>{rank}</td><td>{html.escape(e['name'])}</td><td>{e['macro_f1']:.3f}</td>"
            f"<td>{e['mean_iou']:.3f}</td><td>{e['model_mb']:.1f}</td></tr>"
            for rank, e in enumerate(scored, start=1)]
    unscored = len(entries) - len(scored)
    return "\n".join([
        "<!doctype html>", "<html lang='en'>", "<head>", "<meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:.3em .8em;text-align:right}td:nth-child(2){text-align:left}</style>",
        "</head>", "<body>", f"<h1>{html.escape(title)}</h1>",
        "<p>Models ranked by macro F1 on the hidden test set.</p>",
        "<table id='leaderboard'><tr><th>rank</th><th>name</th><th>macro F1</th><th>mIoU</th>"
        "<th>model size (MB)</th></tr>",
        *rows, "</table>",
        f"<p>{unscored} submission(s) without a scored model.</p>" if unscored else "",
        "</body>", "</html>", ""])


# --------------------------------------------------------------------------------------------------------------------
# Into the gradebook, the feedback and the leaderboard
# --------------------------------------------------------------------------------------------------------------------

def record_points(course, student: str, model: dict, settings: ModelGrading) -> dict:
    """Write the points of a submission's model into the course gradebook; return what was recorded."""
    from tools.grading.merge import cell_points, set_manual_score

    score = ModelScore(**model)
    maximum = cell_points(course, settings.notebook, settings.grade_id)
    if maximum is None:
        return {"points": None, "max": None, "reason": f"no graded cell {settings.grade_id} in {settings.notebook}"}
    metrics = score.metrics()
    points = points_for(metrics.get("macro_f1"), settings.bands, maximum) if score.status == "scored" else 0.0
    set_manual_score(course, student, settings.notebook, settings.grade_id, points)
    return {"points": points, "max": maximum, **{k: metrics[k] for k in ("macro_f1", "mean_iou") if k in metrics}}


def inject_report(notebook: Path, grade_id: str, report: str, summary: str) -> None:
    """Make ``report`` the output of the graded cell ``grade_id`` of an autograded notebook (its feedback shows it)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cell = next((c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id), None)
    if cell is None:
        return
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": report, "text/plain": summary})]
    nbformat.write(nb, notebook)


def finish(course, results: list[dict], settings: ModelGrading, packed: Path, salt: str, out: Path) -> Path:
    """Reports in the autograded notebooks (medians over the class) and the leaderboard page; return its path."""
    from labcode.classes import NUM_CLASSES

    graded = [r for r in results if r.get("model")]
    scores = {r["student"]: ModelScore(**r["model"]) for r in graded}
    medians = class_medians(list(scores.values()), NUM_CLASSES)
    hidden = np.load(packed)
    entries = []
    for result in graded:
        student, score, recorded = result["student"], scores[result["student"]], result.get("model_points", {})
        name = pseudonym(student, salt) if settings.names == "pseudonym" else student
        points, maximum = recorded.get("points") or 0.0, recorded.get("max") or 0.0
        report = report_html(score, points, maximum, medians, settings, hidden)
        report += f"<p>Your name on the class leaderboard: <b>{html.escape(name)}</b>.</p>"
        summary = f"model on the hidden test set: {points:g} / {maximum:g} points"
        notebook = course.folder("autograded", student) / f"{settings.notebook}.ipynb"
        if notebook.is_file():
            inject_report(notebook, settings.grade_id, report, summary)
        metrics = score.metrics()
        entries.append({"name": name, "macro_f1": metrics.get("macro_f1"), "mean_iou": metrics.get("mean_iou"),
                        "model_mb": score.model_mb})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(leaderboard_html(entries))
    return out
