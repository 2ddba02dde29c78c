"""Notebook 5's short run as the grader sees it: the probe reads fit's FitResult (and the dict older libraries
returned), and the judge passes a finished run and fails an interrupted one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from labcode.train import TrainConfig, fit
from tools.grading import judge, probe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def short_run(synth_root: Path, tmp_path_factory):
    config = TrainConfig(datadir=str(synth_root), areas_train=["3"], class_weights="inverse", img_size=32,
                         model_options={"num_blocks": 2, "base_chan": 4}, batch_size=4, epochs=2, num_workers=0,
                         small=True, small_batches=1, logdir=str(tmp_path_factory.mktemp("runs")), progress=False,
                         figure_items=1)
    return config, fit(config)


def verdict(namespace: dict, datadir: Path) -> judge.Verdict:
    evidence = json.loads(json.dumps(probe.probe_short_training_run(namespace)))  # what crosses to the judge
    return judge.judge("test_short_training_run", evidence, judge.Context(datadir=datadir))


def test_the_judge_passes_the_short_run_from_its_fit_result(short_run, synth_root: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)  # the probe runs beside the notebook, where labcode/ is
    config, result = short_run
    assert verdict({"result": result, "config": config}, synth_root).passed
    assert verdict({"result": result.to_dict(), "config": config}, synth_root).passed  # a dict, as before FitResult
    interrupted = dataclasses.replace(result, interrupted=True)
    failed = verdict({"result": interrupted, "config": config}, synth_root)
    assert not failed.passed and "interrupted" in failed.hint
    missing = verdict({"config": config}, synth_root)
    assert not missing.passed
