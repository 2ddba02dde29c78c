"""Draw the figures of the course book from the course library (``make figures``).

Everything under ``book/figures/generated/`` comes from here, so the figures always match the code. They are
committed, so that ``jupyter-book build book`` works from a clean clone, with ``manifest.json`` saying what they were
drawn from; the tests redraw the quick ones and compare, and check that the prediction comes from the current
reference model's recipe and data set (``make figures`` after ``make reference`` refreshes them all):

    sample.png            an image of the data set, its mask and the class legend
    augmentation.png      the same image and mask after the training augmentation
    class_histogram.png   share of the pixels of each class, beside the real data set's
    areas.md              table of the areas: images in the real data set and in the data set used here
    focal_term.png        the focal loss term and its modulating factor for several gamma
    unet_shapes.md        channels and spatial size of every UNet stage, measured by a forward pass (256x256 input)
    unet_diagram.png      the same measurements drawn as the "U"
    prediction.png        held-out images with their ground truth and a model's prediction

The prediction comes from a model file given with ``--model`` (an ONNX export or a training checkpoint), else from the
course's reference model (``make reference``, found through ``labcode.reference.reference_model_path``). Without
either (a fresh clone), the prediction figure already in the output folder is kept as it is, with the prediction
entry of ``manifest.json``, and the output says so: a committed figure is never replaced by a worse one.
The data set is ``--datadir``, else ``$LABCODE_DATADIR``, else the generated default data set (made on first use).

Usage::

    python tools/make_figures.py [--out DIR] [--datadir DIR] [--model FILE] [--threads N] [--skip-prediction]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

import labcode  # noqa: F401  (environment variables before albumentations / onnxruntime)
from labcode.classes import AREAS, NUM_CLASSES, TEST_AREAS, TRAIN_AREAS
from labcode.data import StanfordDataset, default_datadir
from labcode.reference import CPU_RECIPE, find_reference_model
from labcode.synth import REAL_AREA_IMAGES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "book" / "figures" / "generated"
TEST_AREA = TEST_AREAS[0]  # the prediction figure shows images of 5a
SHAPE_INPUT = 256  # side of the dummy image of the UNet shape table
DPI = 110


def save(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG with a white background."""
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Data set figures
# --------------------------------------------------------------------------------------------------------------------

def pick_rich_sample(dataset: StanfordDataset, candidates: int = 24) -> int:
    """Index, among the first ``candidates`` images, of the one whose mask shows the most classes."""
    counts = [len(np.unique(dataset.load_mask(i))) for i in range(min(candidates, len(dataset)))]
    return int(np.argmax(counts))


def sample_figures(datadir: Path, out: Path, *, img_size: int, seed: int) -> list[Path]:
    """``sample.png`` (image, mask, legend) and ``augmentation.png`` (the same after the training transforms)."""
    from labcode.transforms import PairedTransform, denormalize, train_transforms
    from labcode.viz import plot_sample

    dataset = StanfordDataset(datadir, areas=[TRAIN_AREAS[0]])
    index = pick_rich_sample(dataset)
    image, mask = dataset.load_image(index), dataset.load_mask(index)
    view = re.search(r"camera_[0-9a-f]+_(.+)_frame_(\d+)_domain", dataset.files[index].rgb.name)
    where = f", {view[1]}, frame {view[2]}" if view else ""
    sample = plot_sample(image, mask, title=f"area {dataset.files[index].area}{where}")

    pipeline = train_transforms(img_size)
    pipeline.set_random_seed(seed)  # albumentations 2.x draws from the pipeline's own generator
    aug_image, aug_mask = PairedTransform(pipeline)(image, mask)
    augmented = augmentation_grid(image, mask, denormalize(aug_image), aug_mask.numpy(),
                                  title=f"training augmentation ({img_size}x{img_size} crop)")
    return [save(sample, out / "sample.png"), save(augmented, out / "augmentation.png")]


def augmentation_grid(image: np.ndarray, mask: np.ndarray, aug_image: np.ndarray, aug_mask: np.ndarray,
                      title: str) -> Figure:
    """The original pair on the first row, the augmented pair on the second, the class legend beside them: a
    figure compact enough to be read at the width of a page."""
    from labcode.viz import colorize, legend_handles

    fig = Figure(figsize=(8.4, 6.4), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = [("image", image), ("label map", colorize(mask)),
              ("augmented image", aug_image), ("augmented label map", colorize(aug_mask))]
    for ax, (name, picture) in zip(axes.flat, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name, fontsize=11)
        ax.axis("off")
    fig.legend(handles=legend_handles(), loc="outside right center", ncol=1, fontsize=10, frameon=False)
    fig.suptitle(title, fontsize=12)
    return fig


def histogram_figure(datadir: Path, out: Path, *, max_images: int | None) -> list[Path]:
    """``class_histogram.png`` over the whole data set, or over ``max_images`` images spread evenly over it; the
    title says how many images were counted and how many the data set holds."""
    from torch.utils.data import Subset

    from labcode.stats import class_histogram
    from labcode.viz import plot_class_histogram

    dataset = StanfordDataset(datadir)
    total = len(dataset)
    if max_images and total > max_images:
        dataset = Subset(dataset, np.linspace(0, total - 1, max_images).astype(int).tolist())
    counts = class_histogram(dataset, progress=False)
    fig = plot_class_histogram(counts)
    counted = "all" if len(dataset) == total else f"{len(dataset)} of the"
    fig.axes[0].set_title(f"class frequencies over {counted} {total} images of the data set")
    return [save(fig, out / "class_histogram.png")]


def areas_table(datadir: Path, out: Path) -> list[Path]:
    """``areas.md``: images per area in the real data set and in the data set the figures use.

    The real counts are those of the course handout, which counts area 5 as one: its total is given on the 5a row
    and the 5b row refers to it, rather than an invented split between the halves.
    """
    here = {area: len(StanfordDataset(datadir, areas=[area])) for area in AREAS}
    real = {area: f"{REAL_AREA_IMAGES[area]:,}" for area in AREAS if area in REAL_AREA_IMAGES}
    real["5a"] = f"{REAL_AREA_IMAGES['5']:,} for 5a and 5b together"
    real["5b"] = "counted with 5a"
    lines = [
        "| area | images in Stanford 2D-3D-S | images in the data set of these pages |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {area} | {real[area]} | {here[area]:,} |" for area in AREAS]
    lines.append(f"| **total** | **{sum(REAL_AREA_IMAGES.values()):,}** | **{sum(here.values()):,}** |")
    path = out / "areas.md"
    path.write_text("\n".join(lines) + "\n")
    return [path]


def focal_figure(out: Path) -> list[Path]:
    """``focal_term.png``: modulating factor and focal loss against the probability of the true class."""
    from labcode.viz import plot_focal_term

    return [save(plot_focal_term((0, 0.5, 1, 2, 5)), out / "focal_term.png")]


# --------------------------------------------------------------------------------------------------------------------
# UNet shapes
# --------------------------------------------------------------------------------------------------------------------

def unet_stage_shapes(model: torch.nn.Module, size: int) -> list[dict]:
    """Run one ``(1, 3, size, size)`` batch through a UNet and record each stage's output with forward hooks.

    Returns:
        One dict per stage in call order: ``path`` ("encoder"/"decoder"), ``level`` (0 at full resolution),
        ``stage``, ``module`` (attribute path), ``channels``, ``height``, ``width``, ``params``, ``skip`` (channels
        sent to the decoder, encoder blocks only).
    """
    encoder, decoder = model.encoder, model.decoder
    stages: list[tuple[str, int, str, str, torch.nn.Module]] = []
    for i, block in enumerate(encoder.blocks):
        stages.append(("encoder", i, f"conv block {i + 1}", f"encoder.blocks[{i}]", block))
    depth = len(encoder.blocks)
    stages.append(("encoder", depth, "bottleneck", "encoder.bottleneck", encoder.bottleneck))
    stages.append(("decoder", depth, "first conv", "decoder.first_block", decoder.first_block))
    for j, block in enumerate(decoder.up_blocks):
        stages.append(("decoder", depth - 1 - j, f"up block {j + 1}", f"decoder.up_blocks[{j}]", block))
    stages.append(("decoder", 0, "classifier (1x1 conv)", "decoder.classifier", decoder.classifier))

    rows: list[dict] = []

    def hook_for(path: str, level: int, stage: str, module_path: str, module: torch.nn.Module):
        def hook(_module, _inputs, output) -> None:
            skip = None
            if isinstance(output, tuple):  # encoder block: (pooled outputs, features sent to the decoder)
                output, skip = output
            rows.append({
                "path": path, "level": level, "stage": stage, "module": module_path,
                "channels": output.shape[1], "height": output.shape[2], "width": output.shape[3],
                "params": sum(p.numel() for p in module.parameters()),
                "skip": None if skip is None else (skip.shape[1], skip.shape[2], skip.shape[3]),
            })
        return hook

    handles = [stage[-1].register_forward_hook(hook_for(*stage)) for stage in stages]
    try:
        model.eval()
        with torch.no_grad():
            logits = model(torch.zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    if tuple(logits.shape) != (1, NUM_CLASSES, size, size):
        raise RuntimeError(f"the UNet gave logits of shape {tuple(logits.shape)} for a {size}x{size} input")
    return rows


def shapes_markdown(rows: Sequence[dict], size: int, total_params: int) -> str:
    """The stage table as MyST markdown (included by the model chapter)."""
    lines = [
        "| stage | module | output (C × H × W) | sent to the decoder | parameters |",
        "| --- | --- | --- | --- | ---: |",
        f"| input | | 3 × {size} × {size} | | |",
    ]
    for row in rows:
        skip = "" if row["skip"] is None else "{} × {} × {}".format(*row["skip"])
        lines.append(f"| {row['path']} {row['stage']} | `{row['module']}` | "
                     f"{row['channels']} × {row['height']} × {row['width']} | {skip} | {row['params']:,} |")
    lines.append(f"| **total** | | | | **{total_params:,}** |")
    return "\n".join(lines) + "\n"


def unet_diagram(rows: Sequence[dict], size: int) -> Figure:
    """Draw the measured stages as a "U": encoder going down on the left, decoder going up on the right."""
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    width, height = 1.8, 0.74
    positions = []
    for k, row in enumerate(rows):
        x, y = 2.1 * k, -1.1 * row["level"]
        positions.append((x, y))
        colour = "#cfe2f3" if row["path"] == "encoder" else "#d9ead3"
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.03",
                                    facecolor=colour, edgecolor="black", linewidth=0.8))
        ax.text(x, y + 0.15, row["stage"].replace(" (1x1 conv)", ""), ha="center", va="center", fontsize=7.5)
        channels, side = (row["skip"][0], row["skip"][1]) if row["skip"] else (row["channels"], row["height"])
        ax.text(x, y - 0.16, f"{channels} × {side}²", ha="center", va="center", fontsize=8, weight="bold")
    for k in range(len(rows) - 1):
        (x0, y0), (x1, y1) = positions[k], positions[k + 1]
        if y1 == y0:  # same level: from one box's side to the next one's
            start, end = (x0 + width / 2, y0), (x1 - width / 2, y1)
        else:  # between levels: from a box's bottom (or top) to the next one's top (or bottom), in the gap between
            # the rows, so that neither the arrow nor its label crosses the text of a box
            sign = -1 if y1 < y0 else 1
            start, end = (x0 + width / 3, y0 + sign * height / 2), (x1 - width / 3, y1 - sign * height / 2)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, linewidth=1.0,
                                     color="black", shrinkA=1, shrinkB=1))
        if y1 != y0:
            going_down = y1 < y0
            ax.text(start[0] - 0.08 if going_down else end[0] + 0.08, (y0 + y1) / 2,
                    "max-pool" if going_down else "upsample", fontsize=7, color="dimgray", va="center",
                    ha="right" if going_down else "left")
    for k, row in enumerate(rows):
        if row["skip"] is None:
            continue
        target = next(j for j, r in enumerate(rows) if r["path"] == "decoder" and r["level"] == row["level"]
                      and r["stage"].startswith("up block"))
        (x0, y0), (x1, _) = positions[k], positions[target]
        ax.add_patch(FancyArrowPatch((x0 + width / 2, y0 + 0.2), (x1 - width / 2, y0 + 0.2), arrowstyle="-|>",
                                     mutation_scale=10, linewidth=1.0, linestyle="--", color="tab:blue"))
        ax.text((x0 + x1) / 2, y0 + 0.27, f"skip connection ({row['skip'][0]} channels)", ha="center", fontsize=7.5,
                color="tab:blue")
    xs, ys = zip(*positions)
    ax.set_xlim(min(xs) - width / 2 - 0.1, max(xs) + width / 2 + 0.1)
    ax.set_ylim(min(ys) - height / 2 - 0.1, max(ys) + 0.55)
    ax.set_title(f"UNet stages measured on a 3 × {size}² input (channels × size², before pooling for the encoder)",
                 fontsize=10)
    return fig


def unet_figures(out: Path) -> list[Path]:
    """``unet_shapes.md`` and ``unet_diagram.png`` for the lab's UNet (4 blocks, 64 base channels)."""
    from labcode.models import build_model, count_parameters

    model = build_model("unet", NUM_CLASSES, num_blocks=4, base_chan=64)
    rows = unet_stage_shapes(model, SHAPE_INPUT)
    table = out / "unet_shapes.md"
    table.write_text(shapes_markdown(rows, SHAPE_INPUT, count_parameters(model)))
    return [table, save(unet_diagram(rows, SHAPE_INPUT), out / "unet_diagram.png")]


# --------------------------------------------------------------------------------------------------------------------
# Example prediction
# --------------------------------------------------------------------------------------------------------------------

def predict_with_file(model_path: Path, images: np.ndarray, img_size: int) -> np.ndarray:
    """Class maps of ``images`` from a model file (ONNX or checkpoint), predicted on copies at most ``img_size``.

    Shape:
        ``uint8`` (B, H, W, 3) in, ``int64`` (B, H, W) out.
    """
    from labcode.infer import load_segmenter

    return predict_with(load_segmenter(model_path), images, img_size)


def predict_with(segmenter, images: np.ndarray, img_size: int) -> np.ndarray:
    """Class maps of ``images`` from a :class:`labcode.infer.Segmenter`, predicted on copies at most ``img_size``."""
    return np.stack([segmenter.predict(image, max_size=img_size) for image in images])


def prediction_figure(datadir: Path, out: Path, *, model_path: Path, img_size: int, items: int = 3) -> list[Path]:
    """``prediction.png``: held-out images of area 5a (evenly spaced: chosen by position, not by score), their ground
    truth and the prediction of the model in ``model_path`` (ONNX or checkpoint)."""
    from labcode.metrics import ConfusionMatrix
    from labcode.viz import plot_predictions

    dataset = StanfordDataset(datadir, areas=[TEST_AREA])
    picks = np.unique(np.linspace(0, len(dataset) - 1, items + 2).astype(int)[1:-1])
    images = np.stack([dataset.load_image(i) for i in picks])
    targets = np.stack([dataset.load_mask(i) for i in picks]).astype(np.int64)
    preds = predict_with_file(model_path, images, img_size)
    source = "the reference model" if model_path == find_reference_model() else model_path.name
    scores = model_path.with_name("reference.json")
    if source == "the reference model" and scores.is_file():
        macro_f1 = json.loads(scores.read_text())["scores"]["5a+5b"]["macro_f1"]
        source += f" (macro F1 {macro_f1:.2f} on all of 5a + 5b)"
    confusion = ConfusionMatrix(NUM_CLASSES)
    confusion.update(torch.from_numpy(preds), torch.from_numpy(targets))
    fig = plot_predictions(images, targets, preds, max_items=items)
    fig.suptitle(f"area {TEST_AREA} (held out), {source}: macro F1 of these images "
                 f"{confusion.compute()['macro_f1']:.2f}", fontsize=10)
    return [save(fig, out / "prediction.png")]


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python tools/make_figures.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--datadir", type=Path, default=None,
                        help="data set root (default: $LABCODE_DATADIR or the generated data set)")
    parser.add_argument("--model", type=Path, default=None,
                        help="ONNX model or checkpoint for the prediction figure (default: the reference model; "
                        "without one, the prediction figure of the output folder is kept)")
    parser.add_argument("--img-size", type=int, default=CPU_RECIPE["img_size"],
                        help="side of the images the model sees in the prediction figure (default: the CPU "
                        f"recipe's training crops, {CPU_RECIPE['img_size']})")
    parser.add_argument("--max-images", type=int, default=None,
                        help="at most this many images for the class histogram (default: all of them)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-prediction", action="store_true",
                        help="draw every figure but the prediction (no model needed)")
    args = parser.parse_args(argv)
    if args.model is not None and not args.model.is_file():
        parser.error(f"--model {args.model}: no such file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    datadir = args.datadir if args.datadir is not None else default_datadir()
    model = args.model if args.model is not None else find_reference_model()
    args.out.mkdir(parents=True, exist_ok=True)
    steps = [
        ("data samples", lambda: sample_figures(datadir, args.out, img_size=256, seed=args.seed)),
        ("areas", lambda: areas_table(datadir, args.out)),
        ("class histogram", lambda: histogram_figure(datadir, args.out, max_images=args.max_images)),
        ("focal term", lambda: focal_figure(args.out)),
        ("UNet shapes", lambda: unet_figures(args.out)),
    ]
    if not args.skip_prediction and model is not None:
        steps.append(("prediction", lambda: prediction_figure(datadir, args.out, model_path=model,
                                                              img_size=args.img_size)))
    start = time.monotonic()
    for name, step in steps:
        t0 = time.monotonic()
        written = step()
        print(f"{name:<16} {time.monotonic() - t0:5.1f} s  " + ", ".join(str(p.relative_to(args.out)) for p in written))
    if not args.skip_prediction:
        if model is None:
            print(keep_prediction(args.out))
        write_manifest(args.out, datadir, None if model is None else prediction_source(model))
    print(f"figures written to {args.out} in {time.monotonic() - start:.1f} s (data: {datadir})")
    return 0


def keep_prediction(out: Path) -> str:
    """What happens to the prediction figure without a model: the one in ``out`` is kept, never redrawn from a
    model trained for the occasion. Returns the line to print."""
    how = "run `make reference`, then `make figures`, to redraw it"
    if (out / "prediction.png").is_file():
        return f"prediction       kept: no reference model, so {out / 'prediction.png'} stays as it is ({how})"
    return f"prediction       not drawn: no reference model and no prediction.png in {out} ({how})"


def prediction_source(model: Path) -> dict:
    """What the prediction figure comes from: the reference model (its recipe, data set and file) or another
    file."""
    import hashlib

    digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    if model == find_reference_model():
        return {"model": "reference", "recipe": CPU_RECIPE, "sha256": digest}
    return {"model": Path(model).name, "sha256": digest}


def write_manifest(out: Path, datadir: Path, prediction: dict | None) -> Path:
    """``manifest.json``: the data set and the model the figures were drawn from. ``prediction`` ``None`` means the
    prediction figure was kept: its entry is carried over from the manifest already in ``out`` (none if there is no
    such manifest), so that a kept figure keeps its description."""
    from labcode.synth import SYNTH_VERSION, ensure_default_dataset

    path = out / "manifest.json"
    old: dict = {}
    if prediction is None and path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as err:
            raise SystemExit(f"{path} is not valid JSON ({err}): fix or remove it") from None

    default = not os.environ.get("LABCODE_DATADIR") and Path(datadir).resolve() == \
        Path(ensure_default_dataset(progress=False)).resolve()
    manifest = {"data": f"generated data set, version {SYNTH_VERSION}" if default else str(datadir)}
    if prediction is None and old.get("prediction") is not None:
        prediction = dict(old["prediction"])
        if old.get("data") not in (None, manifest["data"]):  # the kept figure shows the data it was drawn from
            prediction.setdefault("data", old["data"])
    if prediction is not None:
        manifest["prediction"] = prediction
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
