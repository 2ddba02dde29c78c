# Your copy of the course library: labcode/runtime/checkpoint.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Training checkpoints: atomic writes, safe loading, random-generator states, model rebuilding, and the checks of a
resume (:func:`find_resume_checkpoint`, :func:`check_same_architecture`).

A checkpoint is a plain dict holding only tensors and primitive Python values (numbers, strings, lists, dicts), so
that it loads with ``torch.load(..., weights_only=True)``: loading a file never runs code from it. The keys written
by :func:`labcode.train.fit` are:

- ``epoch``: the index of the next epoch to run (completed epochs; an interrupted epoch is *not* counted, so a
  resumed run restarts it from its first batch, with the weights saved at the interruption);
- ``model``, ``optimizer``, ``scheduler``, ``scaler``: the ``state_dict`` of each (``scaler`` may be ``None``);
- ``rng``: the states of Python's, NumPy's and PyTorch's generators, as tensors (:func:`rng_state`);
- ``best_score``, ``best_epoch``, ``history``, ``interrupted``;
- ``model_name``, ``model_options``, ``num_classes``: enough to rebuild the network (:func:`load_model`);
- ``config``: the training configuration as a dict of primitive values.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from labcode.errors import LabError

if TYPE_CHECKING:
    from labcode.config import TrainConfig

logger = logging.getLogger(__name__)


class CheckpointError(LabError):
    """A checkpoint file cannot be read or lacks what is needed."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically.

    The state is first written to a temporary file in the same directory, flushed to disk, then renamed over
    ``path`` with ``os.replace``: a reader (or a run killed while saving) sees either the previous complete file or
    the new complete file, never a truncated one.

    Args:
        state: dict of tensors and primitive values.
        path: destination file; its directory is created if needed.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a readable checkpoint, or holds more than weights and plain values
            (one line naming the file and the reason).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors all mean "not a checkpoint we can use"
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_failure(exc)}") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a labcode training checkpoint (no 'model' entry)")
    return state


def _load_failure(exc: Exception) -> str:
    """One line saying why ``torch.load`` refused a file (its own messages are paragraphs of advice)."""
    text = str(exc).strip()
    if text.startswith("Weights only load failed"):
        found = re.search(r"(Unsupported global: GLOBAL \S+|unsupported GLOBAL \S+|Unsupported operand \S+|"
                          r"Unsupported class \S+)", text)
        detail = found.group(1) if found else "content it does not support"
        return (f"not a plain weights file: torch.load(weights_only=True), which never runs code from a file, "
                f"refused it ({detail})")
    first = text.splitlines()[0].split(". ")[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# --------------------------------------------------------------------------------------------------------------------
# Random generator states, stored as tensors
# --------------------------------------------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Capture the states of Python's ``random``, NumPy's global generator and PyTorch (CPU and CUDA) as tensors."""
    version, py_state, gauss = random.getstate()
    kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_version": version,
        "python_gauss": gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generator states captured by :func:`rng_state`."""
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], state["numpy_has_gauss"],
         state["numpy_gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning("checkpoint has %d CUDA generator states for %d devices; CUDA states not restored",
                           len(cuda_states), torch.cuda.device_count())


# --------------------------------------------------------------------------------------------------------------------
# Rebuilding the network
# --------------------------------------------------------------------------------------------------------------------

def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network saved in a checkpoint, in eval mode.

    Returns:
        ``(model, checkpoint)``: the model with its weights loaded and the whole checkpoint dict.

    Raises:
        FileNotFoundError, CheckpointError: as :func:`load_checkpoint`, or the entries needed are missing.
    """
    from labcode.models import build_model

    state = load_checkpoint(path, map_location=map_location)
    missing = [key for key in ("model_name", "num_classes") if key not in state]
    if missing:
        raise CheckpointError(f"{path} does not say how to rebuild its model (missing {', '.join(missing)})")
    model = build_model(state["model_name"], state["num_classes"], **state.get("model_options", {}))
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:  # missing, unexpected or mis-shaped tensors
        details = "; ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise CheckpointError(f"the weights in {path} do not fit the {state['model_name']} model it describes "
                              f"({state['num_classes']} classes, options {state.get('model_options', {})}): "
                              f"{details[:300] or type(exc).__name__}") from exc
    return model.eval(), state


def find_resume_checkpoint(resume: str | Path) -> Path:
    """The checkpoint named by ``resume``: the file itself, or ``last.pt`` of a run directory."""
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return path


def check_same_architecture(config: TrainConfig, resumed: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume a checkpoint with another model or other model options than ``config`` asks for.

    The network is rebuilt from the checkpoint, so an architecture given now would be silently ignored while the
    run's summary and saved configuration recorded it. Options that do not change the network (epochs, learning
    rate, ...) may change.

    Raises:
        LabError: the model name or model options differ; the message lists every difference.
    """
    from labcode.models import model_options_with_defaults

    saved_name = resumed.get("model_name")
    if config.model != saved_name:
        raise LabError(f"--resume {path}: the checkpoint holds a {saved_name} model but this run asks for "
                       f"{config.model}; the architecture cannot change on resume (leave --model out to continue "
                       "the checkpoint's, or start a new run)")
    saved = model_options_with_defaults(saved_name, resumed.get("model_options", {}))
    wanted = model_options_with_defaults(config.model, config.model_options)
    differences = [f"{key} {wanted[key]} (checkpoint: {saved[key]})" for key in wanted if wanted[key] != saved[key]]
    if differences:
        raise LabError(f"--resume {path}: the architecture cannot change on resume, but this run asks for "
                       f"{'; '.join(differences)}; leave these options out to continue the checkpoint's, or start "
                       "a new run")
