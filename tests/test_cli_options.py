"""Every numeric option of every command is checked while parsing: one ``error:`` line naming it, exit status 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from labcode.commands.cli import main
from labcode.commands.options import ArgumentParser, float_in, int_at_least, port
from labcode.errors import UsageError, user_message

REPO = Path(__file__).resolve().parents[1]

# (command line, words the error must hold); --datadir/--model point nowhere, so that an option that is not checked
# while parsing fails later with another message (or starts work), and the test fails.
BAD = [
    ("prepare --datadir {nowhere} --out {tmp}/c --size 4", "--size must be at least 8, got 4"),
    ("prepare --datadir {nowhere} --out {tmp}/c --size 0", "--size must be at least 8, got 0"),
    ("train --datadir {nowhere} --valid-ratio 1.5", "--valid-ratio must be in (0, 1), got 1.5"),
    ("train --datadir {nowhere} --valid-ratio 0", "--valid-ratio must be in (0, 1), got 0"),
    ("train --datadir {nowhere} --batch-size 0", "--batch-size must be positive, got 0"),
    ("train --datadir {nowhere} --img-size 0", "--img-size must be at least 8, got 0"),
    ("train --datadir {nowhere} --img_size -3", "--img-size must be at least 8, got -3"),
    ("train --datadir {nowhere} --lr nan", "--lr must be a finite number, got nan"),
    ("train --datadir {nowhere} --lr inf", "--lr must be a finite number, got inf"),
    ("train --datadir {nowhere} --lr -1", "--lr must be positive, got -1"),
    ("train --datadir {nowhere} --lr 0", "--lr must be positive, got 0"),
    ("train --datadir {nowhere} --lr fast", "--lr must be a number, got 'fast'"),
    ("train --datadir {nowhere} --epochs 0", "--epochs must be positive, got 0"),
    ("train --datadir {nowhere} --epochs 2.5", "--epochs must be an integer, got '2.5'"),
    ("train --datadir {nowhere} --num-workers -1", "--num-workers must be zero or positive, got -1"),
    ("train --datadir {nowhere} --weight-decay -0.1", "--weight-decay must be zero or positive, got -0.1"),
    ("train --datadir {nowhere} --warmup-ratio 1.5", "--warmup-ratio must be in [0, 1], got 1.5"),
    ("train --datadir {nowhere} --focal-gamma -1 --loss focal", "--focal-gamma must be zero or positive, got -1"),
    ("train --datadir {nowhere} --tversky-alpha nan --loss tversky", "--tversky-alpha must be a finite number"),
    ("train --datadir {nowhere} --tversky-beta -2 --loss tversky", "--tversky-beta must be zero or positive"),
    ("train --datadir {nowhere} --base-chan 0", "--base-chan must be positive, got 0"),
    ("train --datadir {nowhere} --num-blocks -1", "--num-blocks must be positive, got -1"),
    ("train --datadir {nowhere} --seed -1", "--seed must be from 0 to 4294967295, got -1"),
    ("train --datadir {nowhere} --figure-every 0", "--figure-every must be positive, got 0"),
    ("train --datadir {nowhere} --threads 0", "--threads must be positive, got 0"),
    ("pipeline --datadir {nowhere} --valid-ratio 1", "--valid-ratio must be in (0, 1), got 1"),
    ("pipeline --datadir {nowhere} --epochs 0", "--epochs must be positive, got 0"),
    ("pipeline --datadir {nowhere} --lr nan", "--lr must be a finite number, got nan"),
    ("pipeline --datadir {nowhere} --batch-size 0", "--batch-size must be positive, got 0"),
    ("pipeline --datadir {nowhere} --img-size 4", "--img-size must be at least 8, got 4"),
    ("pipeline --datadir {nowhere} --test-img-size -1", "--test-img-size must be zero or positive, got -1"),
    ("pipeline --datadir {nowhere} --num-workers -2", "--num-workers must be zero or positive, got -2"),
    ("pipeline --datadir {nowhere} --base-chan 0", "--base-chan must be positive, got 0"),
    ("reference --datadir {nowhere} --out {tmp}/r --epochs 0", "--epochs must be positive, got 0"),
    ("reference --datadir {nowhere} --out {tmp}/r --threads 0", "--threads must be positive, got 0"),
    ("reference --datadir {nowhere} --out {tmp}/r --num-workers -1", "--num-workers must be zero or positive, got -1"),
    ("test --modelpath {tmp}/m.onnx --areas-test 5a --datadir {nowhere} --batch-size 0",
     "--batch-size must be positive, got 0"),
    ("test --modelpath {tmp}/m.onnx --areas-test 5a --datadir {nowhere} --img-size 0",
     "--img-size must be at least 8, got 0"),
    ("test --modelpath {tmp}/m.onnx --areas-test 5a --datadir {nowhere} --num-workers -1",
     "--num-workers must be zero or positive, got -1"),
    ("test --modelpath {tmp}/m.onnx --image {tmp}/p.png --max-size 0", "--max-size must be positive, got 0"),
    ("serve --model {tmp}/m.onnx --port -1", "--port -1 is not a port number (0 to 65535)"),
    ("serve --model {tmp}/m.onnx --max-upload-mb 0", "--max-upload-mb must be positive, got 0"),
    ("serve --model {tmp}/m.onnx --max-upload-mb nan", "--max-upload-mb must be a finite number, got nan"),
    ("serve --model {tmp}/m.onnx --max-pixels 0", "--max-pixels must be positive, got 0"),
    ("serve --model {tmp}/m.onnx --max-side -1", "--max-side must be zero or positive, got -1"),
    ("export {tmp}/m.pt --atol -1", "--atol must be positive, got -1"),
    ("export {tmp}/m.pt --opset 0", "--opset must be positive, got 0"),
    ("export {tmp}/m.pt --example-size 0x4", "--example-size expected HEIGHTxWIDTH"),
    ("show --datadir {nowhere} --index -1", "--index must be zero or positive, got -1"),
    ("show --datadir {nowhere} --img-size 2", "--img-size must be at least 8, got 2"),
    ("stats --datadir {nowhere} --beta 1", "--beta must be in (0, 1), got 1"),
    ("synth --out {tmp}/s --size 0", "--size must be positive, got 0"),
    ("synth --out {tmp}/s --images-per-area 0", "--images-per-area must be positive, got 0"),
    ("synth --out {tmp}/s --workers 0", "--workers must be positive, got 0"),
    ("view {tmp}/m.onnx --port 65536", "--port 65536 is not a port number (0 to 65535)"),
    ("slurm --cpus 0 --dry-run", "--cpus must be positive, got 0"),
    ("slurm --gpus -1 --dry-run", "--gpus must be zero or positive, got -1"),
]


@pytest.mark.parametrize("command, words", BAD, ids=[f"{c.split()[0]} {w.split()[0]}" for c, w in BAD])
def test_bad_numbers_are_refused_while_parsing_with_one_line(command, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LABCODE_DATA_HOME", str(tmp_path / "data_home"))  # nothing is generated elsewhere
    argv = command.format(tmp=tmp_path, nowhere=tmp_path / "nowhere").split()
    status = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    assert words in lines[0], lines[0]
    assert f"python -m labcode {argv[0]} --help" in lines[0]
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists() and not (tmp_path / "data_home").exists()


def test_a_bad_number_in_a_subprocess_prints_one_line_and_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "labcode", "train", "--datadir", str(tmp_path), "--lr", "nan"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: --lr must be a finite number, got nan "
                                        "(see python -m labcode train --help)"]


def test_types_return_the_value_when_it_is_good():
    assert int_at_least(8)("8") == 8 and int_at_least(0)("0") == 0
    assert float_in(0.0, 1.0, low_open=True, high_open=True)("0.25") == 0.25
    assert float_in(0.0, 1.0)("1") == 1.0 and port("0") == 0 and port("65535") == 65535
    with pytest.raises(argparse.ArgumentTypeError, match="must be greater than 2, got 2"):
        float_in(2.0, low_open=True)("2")


def test_other_parse_errors_are_one_line_too():
    parser = ArgumentParser(prog="prog")
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--out", required=True)
    with pytest.raises(UsageError, match=r"^--device invalid choice: 'tpu'"):
        parser.parse_args(["--out", "x", "--device", "tpu"])
    with pytest.raises(UsageError, match=r"^the following arguments are required: --out \(see prog --help\)$"):
        parser.parse_args([])


def test_user_message_unwraps_an_error_raised_in_a_loader_worker():
    from labcode.errors import DatasetError

    wrapped = DatasetError("Caught DatasetError in DataLoader worker process 1.\nOriginal Traceback (most recent call "
                           "last):\n  File \"x.py\", line 3, in f\n    raise DatasetError(...)\n"
                           "labcode.errors.DatasetError: cannot decode image file /d/a.png (not a readable PNG/JPEG)\n")
    assert user_message(wrapped) == "cannot decode image file /d/a.png (not a readable PNG/JPEG)"
    missing = FileNotFoundError("Caught FileNotFoundError in DataLoader worker process 0.\nOriginal Traceback (most "
                                "recent call last):\n  ...\nFileNotFoundError: image not found: b.png")
    assert user_message(missing) == "image not found: b.png"
    assert user_message(DatasetError("plain message")) == "plain message"


def test_models_and_check_are_commands_like_the_others(capsys):
    from labcode.commands.cli import COMMANDS

    assert COMMANDS["models"][0] == "labcode.commands.models" and COMMANDS["check"][0] == "labcode.check"
    assert main(["models", "--img-size", "32", "--num-blocks", "2", "--base-chan", "4"]) == 0
    assert "decoder.classifier" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:  # argparse's own error: usage and status 2
        main(["models", "--model", "deeplabv3plus", "--num-blocks", "2"])
    assert info.value.code == 2 and "no option 'num_blocks'" in capsys.readouterr().err
    assert main(["check", "--notebook", "99"]) == 2  # labcode.check.main: no exercise for that notebook
    assert "no exercise for notebook '99'" in capsys.readouterr().err


def test_train_and_pipeline_share_their_data_model_and_training_options():
    from labcode.commands import pipeline, train

    shared = ["--datadir", "d", "--areas-train", "1", "2", "--valid-ratio", "0.3", "--img-size", "64",
              "--batch-size", "3", "--num-workers", "0", "--model", "unet", "--num-blocks", "2", "--base-chan", "4",
              "--loss", "dice", "--class-weights", "inverse", "--epochs", "2", "--lr", "0.01", "--seed", "5",
              "--small", "--device", "cpu", "--threads", "1", "--no-amp", "--no-progress"]
    ours, theirs = vars(train.build_parser().parse_args(shared)), vars(pipeline.build_parser().parse_args(shared))
    given = {arg[2:].replace("-", "_") for arg in shared if arg.startswith("--")} - {"no_amp", "no_progress"}
    given |= {"amp", "progress"}
    assert len(given) == 19 and {key: ours[key] for key in given} == {key: theirs[key] for key in given}
    defaults = vars(pipeline.build_parser().parse_args([]))
    from labcode.reference import CPU_RECIPE

    for key in ("valid_ratio", "img_size", "batch_size", "num_workers", "model", "loss", "class_weights", "epochs",
                "lr", "areas_train"):
        assert defaults[key] == CPU_RECIPE[key], key
