# Your copy of the course library: labcode/runtime/runlog.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""What a training run writes beside its checkpoints: its summary, its TensorBoard events and its history.

In ``<logdir>/<run_name>/``:

- ``summary.md``: command, git commit, device, data set sizes, configuration and model summary (also logged to
  TensorBoard as text);
- ``events.out.tfevents.*``: TensorBoard scalars (losses, macro F1, mIoU, per-class F1 and IoU, learning rate,
  epoch time) and figures (validation predictions, confusion matrix);
- ``history.json``: one entry of metrics per completed epoch (NaN written as ``null``);
- ``result.json``: written last, by a run that finished: what :func:`labcode.train.fit` returned, with the run's
  fingerprint (:func:`run_fingerprint`), so that the same configuration on the same data is found again.

A new run that fails before its first checkpoint removes what it wrote (:meth:`RunLog.discard`), so that a run
directory always holds a checkpoint to resume or to use. Only rank 0 of a distributed run keeps a log.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labcode.classes import CLASSES
from labcode.metrics import nan_to_none


def git_commit(path: str | Path | None = None) -> str:
    """The git commit of the code (``+dirty`` when it has uncommitted changes), or ``"unknown"``."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def dataset_identity(datadir: str | Path, areas: Sequence[str]) -> dict[str, Any]:
    """What identifies the data a run reads: the data set's folder, the number of images of each of ``areas`` and,
    for a generated data set, its generator's description (``assets/synth.json``: version, seed, size).

    Raises:
        DatasetError: ``datadir`` holds no data set, or an area is missing (the message names it).
    """
    from labcode.data import StanfordDataset

    root = Path(datadir).expanduser().resolve()
    counts = {str(area): len(StanfordDataset(root, areas=[area])) for area in sorted(set(areas))}
    generator = root / "assets" / "synth.json"
    return {"root": str(root), "images": counts,
            "generator": json.loads(generator.read_text()) if generator.is_file() else None}


def cache_identity(cache_dir: str | Path) -> dict[str, Any]:
    """What identifies a prepared image cache (``python -m labcode prepare``) a run reads instead of the data set:
    its folder and a hash of its ``index.json`` (source, areas, size, files and checksums)."""
    root = Path(cache_dir).expanduser().resolve()
    index = root / "index.json"
    return {"cache": str(root), "index": hashlib.sha256(index.read_bytes()).hexdigest() if index.is_file() else None}


def run_fingerprint(config: dict[str, Any], data: dict[str, Any]) -> str:
    """A short hash of a run's result fields (``TrainConfig.result_fields()``) and of its data
    (:func:`dataset_identity` or :func:`cache_identity`): equal fingerprints mean the same training on the same
    data."""
    text = json.dumps({"config": config, "data": data}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def summary_text(run_name: str, config: dict[str, Any], *, command: str | None, commit: str, device: str,
                 precision: str, model_text: str, sizes: dict[str, int], world_size: int) -> str:
    """The Markdown of ``summary.md``; ``command`` defaults to this process's command line."""
    lines = [
        f"# Training run {run_name}",
        "",
        f"- command: `{command or ' '.join(sys.argv)}`",
        f"- git commit: {commit}",
        f"- device: {device} ({precision}), processes: {world_size}",
        f"- training images: {sizes['train']}, validation images: {sizes['valid']}",
        f"- started: {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(config, indent=2),
        "```",
        "",
        "## Model",
        "",
        "```",
        model_text,
        "```",
        "",
    ]
    return "\n".join(lines)


def plain(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of an epoch's result, without the confusion matrix and the example images."""
    return {key: value for key, value in result.items() if key not in ("confusion", "examples")}


class RunLog:
    """The log of one run in ``run_dir``: created by :meth:`open`, written every epoch, closed at the end.

    Constructed before anything is written, it notes which directories and files already exist, for
    :meth:`discard`.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.new_dirs = [path for path in (self.run_dir, *self.run_dir.parents) if not path.exists()]  # deepest first
        self.old_files = {path.name for path in self.run_dir.iterdir()} if self.run_dir.is_dir() else set()
        self.writer = None

    def open(self, summary: str, step: int) -> None:
        """Create the run directory, write ``summary.md`` and open the TensorBoard writer (logging the summary)."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.run_dir))
        (self.run_dir / "summary.md").write_text(summary)
        self.writer.add_text("summary", summary.replace("\n", "  \n"), step)

    def epoch(self, epoch: int, train: dict[str, Any], valid: dict[str, Any], epoch_time: float, *,
              figure_items: int, figures: bool) -> None:
        """TensorBoard scalars of an epoch (results of the engine's passes), and its figures when ``figures``."""
        from labcode.viz import plot_confusion_matrix, plot_predictions

        writer = self.writer
        for split, result in (("train", train), ("valid", valid)):
            writer.add_scalar(f"loss/{split}", result["loss"], epoch)
            writer.add_scalar(f"macro_f1/{split}", result["macro_f1"], epoch)
            writer.add_scalar(f"mean_iou/{split}", result["mean_iou"], epoch)
            for name, f1, iou in zip(CLASSES, result["f1_per_class"], result["iou_per_class"]):
                writer.add_scalar(f"f1_{split}/{name}", f1, epoch)
                writer.add_scalar(f"iou_{split}/{name}", iou, epoch)
        writer.add_scalar("lr", train["lr"], epoch)
        writer.add_scalar("epoch_time_s", epoch_time, epoch)
        examples = valid.get("examples")
        if figures:
            if examples is not None and len(examples["images"]):
                writer.add_figure("valid/predictions", plot_predictions(
                    examples["images"], examples["targets"], examples["preds"], max_items=figure_items), epoch)
            writer.add_figure("valid/confusion_matrix", plot_confusion_matrix(valid["confusion"]), epoch)
        writer.flush()

    def history(self, history: list[dict[str, Any]]) -> None:
        """Write ``history.json`` (strict JSON: NaN becomes ``null``)."""
        (self.run_dir / "history.json").write_text(json.dumps(nan_to_none(history), indent=1))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def discard(self) -> None:
        """Remove what a new run that failed before its first checkpoint wrote: its summary, its TensorBoard events
        and the directories it created, so that no run without a checkpoint is left behind."""
        for path in self.run_dir.iterdir() if self.run_dir.is_dir() else ():
            if path.is_file() and (path.name not in self.old_files or path.name == "summary.md"):
                path.unlink()
        for directory in self.new_dirs:
            try:
                directory.rmdir()
            except OSError:  # not empty: something else lives there
                break
