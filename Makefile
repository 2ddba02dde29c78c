# Entry points of the course repository. `make lab` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export NO_ALBUMENTATIONS_UPDATE := 1
export ORT_DISABLE_TELEMETRY := 1
export MPLBACKEND := Agg

.PHONY: setup lab reference test test-fast release book figures bench bench-grading gpu-check grade grading-env clean

setup:
	bash scripts/setup.sh

## The main job: the whole lab pipeline on the built-in offline data set: the reference model (trained with the CPU
## recipe when missing), its test on areas 5a and 5b, one segmented photo.
lab: setup
	$(VENV)/python -m labcode pipeline --reference

## The course's reference model alone (into the data home, next to the generated data set; kept if present).
reference: setup
	$(VENV)/python -m labcode reference

## The test suite (sets up both environments and, as root, Debian's chromium, bubblewrap and slurm first), after the
## linter (ruff, configured in pyproject.toml); two test processes, each test file in one of them (pytest-xdist), the
## longest files first (tests/conftest.py).
test:
	bash scripts/setup.sh --grading --system
	$(VENV)/ruff check .
	$(VENV)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test-fast: setup
	$(VENV)/ruff check .
	$(VENV)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow and not browser"

## Regenerate the student release (notebooks/ and the stripped library) from solutions/ and labcode/, then the
## students' distribution (dist/student/), which always ships the reference model: trained first when it is missing.
release: reference
	$(VENV)/python tools/release.py

## Figures of the book, then the book itself. The prediction figure is redrawn from the reference model (make
## reference); without it, the committed one is kept as it is. The notebook pages (book/segmentation/, not tracked)
## are the student release run on the CPU with the generated data set, answers left to students
## (tools/site_notebooks.py, about two minutes).
figures: setup
	$(VENV)/python tools/make_figures.py

book: figures
	$(VENV)/python tools/site_notebooks.py
	$(VENV)/jupyter-book build book -W -n --keep-going

bench: setup
	$(VENV)/python -m benchmarks.run_all

## Grading throughput: the grader with one worker against the parallel grader (about 8 minutes).
bench-grading: grading-env
	$(VENV)/python -m benchmarks.bench_grading

## The grading environment: the notebooks' stack without labcode (submissions run their own copy).
grading-env:
	bash scripts/setup.sh --grading

## The whole grading loop: collect, autograde (sandboxed, parallel), feedback, export grades.csv.
grade: grading-env
	$(VENV)/python -m tools.grading run

## On a GPU machine (one H200, 16 cores: under 8 minutes): GPU tests, AMP training rows, a short mixed-precision
## training scored on 5a+5b, ONNX Runtime CUDA vs CPU, torchrun; tables in runs/gpu-check/gpu_check.md.
## `python scripts/gpu_check.py --dry-run` lists the steps without a GPU.
gpu-check: setup
	$(VENV)/python scripts/gpu_check.py

clean:
	rm -rf book/_build book/segmentation runs .pytest_cache grading
