"""End to end through ``python -m labcode``: train → best checkpoint → ONNX → test on an area → one photo; the
pipeline and slurm commands; bad invocations give one clear line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from labcode.classes import CLASSES
from labcode.data import StanfordDataset
from labcode.errors import LabError

REPO = Path(__file__).resolve().parents[1]



def labcode_env(tmp_path: Path) -> dict[str, str]:
    """Environment of the subprocesses: one thread each, no generated default data set outside tmp_path."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "LABCODE_DATA_HOME": str(tmp_path / "data_home"),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def run_labcode(args: list[str], tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labcode", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=labcode_env(tmp_path), timeout=timeout)


def train_args(datadir: Path, logdir: Path, name: str) -> list[str]:
    return ["train", "--datadir", str(datadir), "--areas-train", "1", "2", "4", "6", "--areas_valid", "3",
            "--img-size", "64", "--base-chan", "8", "--num-blocks", "2", "--epochs", "2", "--batch-size", "4",
            "--lr", "3e-3", "--num-workers", "0", "--small", "--logdir", str(logdir), "--run-name", name,
            "--no-progress"]


def check_end_to_end(synth_root: Path, tmp_path: Path, extra: list[str]) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from labcode.runtime.checkpoint import load_model

    trained = run_labcode(train_args(synth_root, tmp_path / "runs", "e2e") + extra, tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "Traceback" not in trained.stderr
    run = tmp_path / "runs" / "e2e"
    for name in ("best.pt", "last.pt", "best.onnx", "summary.md", "history.json"):
        assert (run / name).is_file(), name

    # summary: command, git commit, data set sizes and the model table
    summary = (run / "summary.md").read_text()
    assert "git commit:" in summary and "training images: 16, validation images: 4" in summary
    assert "--areas-train 1 2 4 6" in summary and "total parameters" in summary
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]

    # TensorBoard: scalars of both epochs, the two figures and the summary text
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("loss/train", "loss/valid", "macro_f1/valid", "macro_f1/train", "lr", "f1_valid/wall",
                "iou_valid/floor", "epoch_time_s"):
        assert [e.step for e in events.Scalars(tag)] == [0, 1], tag
    valid_f1 = [e.value for e in events.Scalars("macro_f1/valid")]
    assert valid_f1 == pytest.approx([h["valid"]["macro_f1"] for h in history])
    assert {"valid/predictions", "valid/confusion_matrix"} <= set(tags["images"])
    assert any("summary" in tag for tag in tags["tensors"])

    # best checkpoint = best validation macro F1; ONNX equals PyTorch at two sizes
    model, state = load_model(run / "best.pt")
    assert state["best_score"] == pytest.approx(max(valid_f1))
    session = ort.InferenceSession(str(run / "best.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 64, 64), (2, 3, 41, 75)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[2]))
        with torch.no_grad():
            np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], model(x).numpy(), atol=1e-4,
                                       rtol=1e-4)

    # test on held-out areas: the table is printed and the JSON is saved
    tested = run_labcode(["test", "--modelpath", str(run / "best.onnx"), "--datadir", str(synth_root),
                          "--areas_test", "5a", "5b", "--num-workers", "0", "--out", str(tmp_path / "m.json")],
                         tmp_path)
    assert tested.returncode == 0, tested.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["images"] == 8 and list(metrics["f1_per_class"]) == list(CLASSES)
    assert 0.0 <= metrics["macro_f1"] <= 1.0 and f"macro F1  {metrics['macro_f1']:6.3f}" in tested.stdout

    # one photo: the figure and the mask at the photo's resolution
    photo = StanfordDataset(synth_root, areas=["5a"]).files[0].rgb
    inferred = run_labcode(["test", "--modelpath", str(run / "best.onnx"), "--image", str(photo), "--out",
                            str(tmp_path / "photo_seg.png")], tmp_path)
    assert inferred.returncode == 0, inferred.stderr
    with Image.open(tmp_path / "photo_seg_mask.png") as mask, Image.open(photo) as original:
        assert mask.size == original.size == (64, 64)
    with Image.open(tmp_path / "photo_seg.png") as figure:
        assert figure.format == "PNG" and figure.width > 300
    return {"summary": summary, "history": history}


@pytest.mark.slow
def test_train_export_test_infer_end_to_end_on_cpu(synth_root: Path, tmp_path: Path) -> None:
    result = check_end_to_end(synth_root, tmp_path, ["--device", "cpu", "--no-amp"])
    assert "device: cpu (fp32), processes: 1" in result["summary"]  # --no-amp: full precision on any CPU
    assert '"amp": false' in result["summary"] and '"device": "cpu"' in result["summary"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_export_test_infer_end_to_end_on_cuda_with_amp(synth_root: Path, tmp_path: Path) -> None:
    result = check_end_to_end(synth_root, tmp_path, ["--device", "cuda", "--channels-last"])
    assert "device: cuda (bf16)" in result["summary"] or "device: cuda (fp16)" in result["summary"]


@pytest.mark.slow
def test_bad_invocations_exit_2_with_one_line(synth_root: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    (tmp_path / "notes.jpg").write_text("not an image")
    cases = {
        "missing datadir": (["train", "--datadir", str(tmp_path / "nowhere")], "nowhere"),
        "unknown model": (["train", "--datadir", str(synth_root), "--model", "resnet"], "unknown model 'resnet'"),
        "unknown loss": (["train", "--datadir", str(synth_root), "--loss", "hinge"], "unknown loss 'hinge'"),
        "unknown area": (["train", "--datadir", str(synth_root), "--areas-train", "9", "--num-workers", "0"],
                         "area '9' not found"),
        "unreadable model": (["test", "--modelpath", str(tmp_path / "broken.onnx"), "--areas-test", "5a",
                              "--datadir", str(synth_root)], "broken.onnx"),
        "not an image": (["test", "--modelpath", str(tmp_path / "broken.onnx"), "--image",
                          str(tmp_path / "notes.jpg")], "notes.jpg"),
    }
    env = labcode_env(tmp_path)
    procs = {name: subprocess.Popen([sys.executable, "-m", "labcode", *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
             for name, (args, _) in cases.items()}
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=120)
        lines = stderr.strip().splitlines()
        assert proc.returncode == 2, (name, stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, stderr)
        assert cases[name][1] in lines[0], (name, lines[0])
    assert not (tmp_path / "runs").exists()  # no run directory left behind by a failed start


def test_pipeline_writes_everything_under_one_directory(synth_root: Path, tmp_path: Path, capsys,
                                                        monkeypatch) -> None:
    from labcode.commands import pipeline

    args = ["--datadir", str(synth_root), "--logdir", str(tmp_path / "runs"), "--name", "demo", "--epochs", "1",
            "--img-size", "64", "--base-chan", "4", "--num-blocks", "2", "--batch-size", "4", "--num-workers", "0",
            "--areas-train", "1", "2", "--small", "--no-progress"]
    assert pipeline.main(args) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "demo"
    summary = json.loads((run / "pipeline.json").read_text())
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert summary["test_areas"] == ["5a", "5b"] and metrics["images"] == 8
    assert summary["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert summary["epochs"] == 1 and summary["seconds_per_epoch"] > 0
    for key in ("onnx", "inference_figure", "inference_mask", "test_metrics"):
        assert Path(summary[key]).is_file(), key
    with Image.open(summary["inference_mask"]) as mask:
        assert mask.size == (64, 64)
    assert "pipeline done" in out and f"macro F1 {metrics['macro_f1']:.4f}" in out
    with pytest.raises(LabError, match="already exists"):
        pipeline.main(args)


def _git_repo(path: Path) -> str:
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.name=test", "-c", "user.email=test@example.org"]
    subprocess.run(git + ["init", "-q"], check=True)
    (path / "requirements.txt").write_text("torch\n")
    subprocess.run(git + ["add", "requirements.txt"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "first"], check=True)
    return subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_slurm_script_pins_the_commit_and_runs_train(tmp_path: Path, capsys, monkeypatch) -> None:
    from labcode.commands import slurm

    sha = _git_repo(tmp_path / "repo")
    argv = ["--repo", str(tmp_path / "repo"), "--partition", "gpu_prod", "--time", "2:00:00", "--gpus", "2",
            "--run-name", "big", "--logdir", str(tmp_path / "runs")]
    assert slurm.main(argv + ["--dry-run", "--", "--epochs", "50", "--areas_train", "1", "2"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n")
    for expected in ("#SBATCH --partition=gpu_prod", "#SBATCH --time=2:00:00", "#SBATCH --gres=gpu:2",
                     f"COMMIT={sha}", 'git -C "$REPO" archive', "SLURM_TMPDIR", "TMPDIR", 'venv "$SCRATCH/venv"',
                     'pip install --quiet -r "$SCRATCH/code/requirements.txt"', 'cd "$SCRATCH/code/"',
                     "torchrun --standalone --nproc_per_node=2 -m labcode train",
                     "--run-name big", "--epochs 50 --areas_train 1 2"):
        assert expected in script, expected
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # valid shell syntax
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing

    git_only = tmp_path / "git-only"  # a PATH with git but without sbatch
    git_only.mkdir()
    (git_only / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", str(git_only))
    with pytest.raises(LabError, match="sbatch not found"):
        slurm.main(argv)
    assert (tmp_path / "runs" / "big.sbatch").read_text().startswith("#!/bin/bash")

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "sbatch").write_text('#!/bin/sh\necho "Submitted batch job 42 ($1)"\n')
    (fake_bin / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{git_only}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert slurm.main(argv) == 0
    assert f"Submitted batch job 42 ({tmp_path / 'runs' / 'big.sbatch'})" in capsys.readouterr().out


@pytest.mark.slow
def test_the_training_job_runs_on_a_real_slurm(tmp_path: Path, synth_root: Path, slurm) -> None:
    # The script of `python -m labcode slurm`, submitted to a one-node cluster: the job extracts the committed code,
    # trains one tiny epoch with the repository's environment, and writes its run where the script says.
    repo = Path(__file__).resolve().parents[1]
    logdir = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "labcode", "slurm", "--gpus", "0", "--cpus", "1", "--time", "00:10:00", "--wait",
         "--venv", str(Path(sys.executable).parents[1]), "--run-name", "tiny", "--logdir", str(logdir), "--",
         "--datadir", str(synth_root), "--areas-train", "1", "--epochs", "1", "--img-size", "32", "--batch-size", "2",
         "--num-blocks", "2", "--base-chan", "4", "--small", "--num-workers", "0"],
        cwd=repo, capture_output=True, text=True, timeout=600)
    logs = "".join(p.read_text() for p in logdir.glob("tiny.slurm-*.out"))
    assert done.returncode == 0, done.stdout + done.stderr + logs
    assert "Submitted batch job" in done.stdout
    assert (logdir / "tiny" / "best.pt").is_file() and (logdir / "tiny" / "best.onnx").is_file(), logs
    assert "commit" in logs


def _copy_with_truncated_png(synth_root: Path, out: Path, areas: tuple[str, ...]) -> dict[str, Path]:
    """A copy of the data set in which the first photo of each of ``areas`` is cut after 300 bytes."""
    shutil.copytree(synth_root, out)
    cut = {}
    for area in areas:
        path = StanfordDataset(out, areas=[area]).files[0].rgb
        path.write_bytes(path.read_bytes()[:300])
        cut[area] = path
    return cut


def _only_error_line(stderr: str) -> str:
    """The last stderr line, which must be the only one mentioning an error (besides progress bars and OpenCV's own
    warnings), and no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and "Caught " not in stderr, stderr
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], stderr
    assert lines[-1].startswith("error: "), stderr
    return lines[-1]


def _is_decode_error(line: str, path: Path) -> bool:
    """The decoder's own reason may follow (Wuffs and libspng name it, OpenCV does not)."""
    return re.fullmatch(rf"error: cannot decode image file {re.escape(str(path))} \(not a readable PNG/JPEG(: .+)?\)",
                        line) is not None


@pytest.mark.slow
def test_errors_in_loader_workers_reach_the_user_as_their_own_line(synth_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    cut = _copy_with_truncated_png(synth_root, data, ("1", "5a"))
    trained = run_labcode(["train", "--datadir", str(data), "--areas-train", "1", "--areas-valid", "3",
                           "--img-size", "32", "--base-chan", "4", "--num-blocks", "2", "--epochs", "1",
                           "--batch-size", "2", "--logdir", str(tmp_path / "runs"), "--run-name", "cut",
                           "--no-progress"], tmp_path)  # default --num-workers: 2 worker processes
    assert trained.returncode == 2, trained.stderr
    assert _is_decode_error(_only_error_line(trained.stderr), cut['1'])
    assert not (tmp_path / "runs").exists()  # a run without a checkpoint is not left behind

    model = tmp_path / "m.onnx"
    _tiny_onnx(model)
    tested = run_labcode(["test", "--modelpath", str(model), "--datadir", str(data), "--areas-test", "5a"], tmp_path)
    assert tested.returncode == 2, tested.stderr
    assert _is_decode_error(_only_error_line(tested.stderr), cut['5a'])


def _tiny_onnx(path: Path) -> Path:
    from labcode.export import export_onnx
    from labcode.models import build_model

    torch.manual_seed(0)
    return export_onnx(build_model("unet", len(CLASSES), num_blocks=1, base_chan=2).eval(), path)


def test_resume_refuses_another_architecture_and_lists_the_differences(synth_root: Path, tmp_path: Path,
                                                                       capsys) -> None:
    from labcode.commands.cli import main
    from labcode.runtime.checkpoint import load_checkpoint
    from labcode.train import TrainConfig, fit

    logdir = tmp_path / "runs"
    first = ["train", "--datadir", str(synth_root), "--areas-train", "1", "--areas-valid", "3", "--img-size", "32",
             "--base-chan", "4", "--num-blocks", "2", "--epochs", "1", "--batch-size", "4", "--num-workers", "0",
             "--small", "--logdir", str(logdir), "--run-name", "r", "--no-progress", "--no-export"]
    assert main(first) == 0
    last = logdir / "r" / "last.pt"
    capsys.readouterr()
    refused = {
        ("--base-chan", "8"): "asks for base_chan 8 (checkpoint: 4); leave these options out",
        ("--num-blocks", "3", "--base-chan", "16"):
            "asks for num_blocks 3 (checkpoint: 2); base_chan 16 (checkpoint: 4)",
        ("--model", "deeplabv3plus"): "the checkpoint holds a unet model but this run asks for deeplabv3plus",
    }
    for options, words in refused.items():
        status = main(["train", "--resume", str(last), "--epochs", "2", "--no-progress", *options])
        err = capsys.readouterr().err
        assert status == 2, err
        assert err.startswith(f"error: --resume {last}: ") and err.count("\n") == 1 and words in err, err
        assert load_checkpoint(last)["epoch"] == 1  # nothing was trained

    # what may change on resume (the epoch count) still does; repeating the same architecture is fine
    assert main(["train", "--resume", str(last), "--epochs", "2", "--base-chan", "4", "--no-progress"]) == 0
    resumed = load_checkpoint(last)
    assert resumed["epoch"] == 2 and resumed["config"]["epochs"] == 2
    assert resumed["config"]["model_options"] == resumed["model_options"] == {"num_blocks": 2, "base_chan": 4}
    assert '"base_chan": 4' in (logdir / "r" / "summary.md").read_text()

    config = TrainConfig(**{**resumed["config"], "resume": str(last), "epochs": 3,
                            "model_options": {"num_blocks": 2, "base_chan": 4, "cin": 1}})
    with pytest.raises(LabError, match=r"asks for cin 1 \(checkpoint: 3\)"):
        fit(config)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_behind(synth_root: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    from labcode import losses
    from labcode.engine import NonFiniteLossError
    from labcode.train import TrainConfig, fit

    class NaNLoss(torch.nn.Module):
        def forward(self, logits, target):
            return logits.mean() * float("nan")

    monkeypatch.setattr(losses, "build_loss", lambda name, **options: NaNLoss())
    logdir = tmp_path / "runs"
    config = TrainConfig(datadir=str(synth_root), areas_train=["1"], areas_valid=["3"], img_size=32,
                         model_options={"num_blocks": 2, "base_chan": 4}, batch_size=4, epochs=1, num_workers=0,
                         logdir=str(logdir), run_name="nan", progress=False, export_onnx=False)
    with pytest.raises(NonFiniteLossError):
        fit(config)
    assert not logdir.exists()  # no summary, no TensorBoard events, no empty directories

    (logdir / "nan").mkdir(parents=True)
    (logdir / "nan" / "notes.txt").write_text("mine")
    with pytest.raises(NonFiniteLossError):
        fit(config)
    assert [p.name for p in (logdir / "nan").iterdir()] == ["notes.txt"]  # only what the run wrote is removed


def test_the_command_line_defaults_are_those_of_train_config() -> None:
    import dataclasses

    from labcode.commands.train import build_parser, config_from_args
    from labcode.config import TrainConfig

    config = config_from_args(build_parser().parse_args([]), [])
    assert config.command == "python -m labcode train"
    assert dataclasses.replace(config, command=None) == TrainConfig()


def test_resume_keeps_the_saved_configuration_except_the_options_given_now() -> None:
    from labcode.commands.train import build_parser, config_from_args, given_fields, resumed_config
    from labcode.config import TrainConfig

    saved = TrainConfig(img_size=64, epochs=2, lr=3e-3, loss="focal", loss_options={"gamma": 1.0},
                        model_options={"num_blocks": 2, "base_chan": 4}, augment=False, run_name="r").to_dict()
    argv = ["--resume", "runs/r/last.pt", "--epochs", "5", "--img-size", "256", "--no-progress"]
    assert given_fields(argv) == {"resume", "epochs", "img_size", "progress"}  # 256 is also the default size
    config = resumed_config(config_from_args(build_parser().parse_args(argv), argv), {"config": saved},
                            given_fields(argv))
    assert (config.epochs, config.img_size, config.progress) == (5, 256, False)  # given now
    assert (config.lr, config.loss, config.loss_options, config.augment) == (3e-3, "focal", {"gamma": 1.0}, False)
    assert config.model_options == {"num_blocks": 2, "base_chan": 4} and config.resume == "runs/r/last.pt"

    argv = ["--resume", "runs/r/last.pt", "--loss", "tversky", "--tversky-beta", "0.7", "--base-chan", "8"]
    assert given_fields(argv) == {"resume", "loss", "loss_options", "model_options"}
    config = resumed_config(config_from_args(build_parser().parse_args(argv), argv), {"config": saved},
                            given_fields(argv))
    assert (config.loss, config.loss_options) == ("tversky", {"beta": 0.7})
    assert config.model_options == {"num_blocks": 2, "base_chan": 8}  # asked for: fit compares it and refuses
