"""Shared fixtures: a hand-written tiny data set in the real format, and a small generated one."""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import labcode  # noqa: F401  (environment variables before albumentations / onnxruntime)
import tools  # noqa: F401  (before nbformat: its schema checks skip a slow import, see tools/__init__.py)

#: JSON entries of the hand-written data set: index -> class
TINY_ENTRIES = [
    "<UNK>_0_<UNK>_0_0",      # 0 -> <UNK>
    "wall_1_office_1_1",      # 1 -> wall (12)
    "floor_1_office_1_1",     # 2 -> floor (9)
    "chair_3_office_1_1",     # 3 -> chair (5)
    "sofa_1_lounge_2_5",      # 4 -> sofa (10)
    "window_2_hallway_7_5",   # 5 -> window (13)
    "beam_1_hallway_7_5",     # 6 -> beam (1)
]
TINY_CLASSES = [0, 12, 9, 5, 10, 13, 1]


def code_to_rgb(code: int) -> tuple[int, int, int]:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def write_png_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB (or RGBA / gray) uint8 array as PNG, independent of labcode's readers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif rgb.ndim == 3 and rgb.shape[2] == 4:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), rgb)


def semantic_image(codes: np.ndarray) -> np.ndarray:
    """RGB semantic image whose pixels hold the given integer codes."""
    return np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], axis=-1).astype(np.uint8)


@pytest.fixture
def tiny_root(tmp_path: Path) -> dict:
    """Three images in areas 1, 5a and 5b with known codes, 0x0D0D0D, out-of-range codes and an RGBA input."""
    root = tmp_path / "stanford"
    (root / "assets").mkdir(parents=True)
    (root / "assets" / "semantic_labels.json").write_text(json.dumps(TINY_ENTRIES))
    rng = np.random.default_rng(0)
    expected = {}
    layouts = {
        ("1", "camera_" + "a" * 32 + "_office_1_frame_0"): np.array(
            [[1, 1, 2, 2, 3], [1, 0x0D0D0D, 2, 3, 3], [7, 1, 2, 1000, 1]]),
        ("5a", "camera_" + "b" * 32 + "_lounge_2_frame_3"): np.array(
            [[4, 4, 5, 5, 6], [4, 6, 5, 0x0D0D0D, 0xFFFFFF], [0, 1, 2, 3, 4]]),
        ("5b", "camera_" + "c" * 32 + "_hallway_7_frame_12"): np.array(
            [[6, 6, 6, 1, 1], [5, 5, 1, 1, 2], [2, 2, 2, 2, 2]]),
    }
    lut = dict(enumerate(TINY_CLASSES))
    for (area, stem), codes in layouts.items():
        data = root / f"area_{area}" / "data"
        channels = 4 if area == "5a" else 3  # one RGBA input
        rgb = rng.integers(0, 256, size=(*codes.shape, channels), dtype=np.uint8)
        write_png_rgb(data / "rgb" / f"{stem}_domain_rgb.png", rgb)
        write_png_rgb(data / "semantic" / f"{stem}_domain_semantic.png", semantic_image(codes))
        mask = np.vectorize(lambda c: lut.get(int(c), 0))(codes)
        expected[area] = (rgb[..., :3], mask)
    return {"root": root, "expected": expected}


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small generated data set (all areas, 64 px, a few images each), shared by the whole session."""
    from labcode.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "stanford"
    return generate_dataset(out, images_per_area=4, size=64, seed=1, workers=1, progress=False)


def shared_folder(tmp_path_factory) -> Path:
    """The folder that the test processes of one run share (pytest-xdist workers), or this process's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def _shared_course_template(tmp_path_factory):
    """The course template of ``tests.course`` (sources, release, gradebook) is built once per run."""
    import tests.course

    tests.course.SHARED_FOLDER = shared_folder(tmp_path_factory)


@pytest.fixture(scope="session")
def reference_model(synth_root, tmp_path_factory) -> Path:
    """A reference model of the small data set, made as ``make reference`` makes one but quickly (two short epochs
    of the recipe): its ``best.onnx``, with the run's ``best.pt`` and ``reference.json`` beside it.

    Trained once per run (``tests.course.built_once``, on the asking process's copy of the generated data set,
    identical in every process). No test changes its files.
    """
    from labcode.reference import train_reference
    from tests.course import built_once

    def train(folder: Path) -> None:
        train_reference(synth_root, folder / "run", progress=False, epochs=2, small=True, num_workers=0)

    return built_once(shared_folder(tmp_path_factory), "reference-model", train) / "run" / "best.onnx"


@pytest.fixture(scope="session")
def solved_notebooks(synth_root, tmp_path_factory) -> dict[str, tuple]:
    """The solution notebooks that study no model (``tests.course.MODEL_FREE_STEMS``) run top to bottom as students
    run them (``tools.leaks.execute_solutions``: the instructor library next to them, the small data set, no grading
    setting), each in a fresh kernel: ``{stem: (executed notebook, seconds)}``.

    Run once per run (``tests.course.built_once``) for the tests of both the solutions and the site's leaks.
    """
    from tests.course import MODEL_FREE_STEMS, built_once
    from tools.leaks import execute_solutions

    def run(folder: Path) -> None:
        solved = {}
        for stem in MODEL_FREE_STEMS:
            started = time.perf_counter()
            executed = execute_solutions(synth_root, stems=[stem], timeout=60)
            solved[stem] = (executed[stem], time.perf_counter() - started)
        with open(folder / "solved.pickle", "wb") as file:
            pickle.dump(solved, file)

    with open(built_once(shared_folder(tmp_path_factory), "solved-notebooks", run) / "solved.pickle", "rb") as file:
        return pickle.load(file)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is fastest, and the 2 CI cores stay free for subprocesses and loader workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def chromium(tmp_path, monkeypatch):
    """Headless Chromium (selenium and the system's chromedriver) that reaches this machine only.

    Every host name but ``localhost`` and ``127.0.0.1`` fails to resolve, as on a course machine without internet:
    a page that needs the network (a CDN) shows it. Skipped without Chromium, a failure in CI (``CI`` set).
    """
    import shutil

    from tests.course import require

    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    require(browser is not None and driver_path is not None,
            "Chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def slurm():
    """A one-node SLURM cluster on this machine (``scripts/slurm_local.sh``): ``SLURM_CONF`` for the session.

    Needs root and Debian's slurm-wlm and munge (``scripts/setup.sh --system``); skipped without them, a failure in
    CI.
    """
    import os
    import shutil
    import subprocess

    from tests.course import REPO, require

    require(os.geteuid() == 0 and shutil.which("slurmctld") is not None and shutil.which("munged") is not None,
            "a one-node slurm needs root and the packages slurm-wlm and munge")
    import fcntl

    with open("/tmp/labcode-slurm.lock", "w") as lock:  # test processes run in parallel: one starts the cluster
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(["bash", str(REPO / "scripts" / "slurm_local.sh"), "start"], capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    conf = done.stdout.strip().split("SLURM_CONF=")[-1]
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if saved is None:
        os.environ.pop("SLURM_CONF")
    else:
        os.environ["SLURM_CONF"] = saved


def pytest_terminal_summary(terminalreporter) -> None:
    """The run time of each solution notebook, when ``test_solutions.py`` ran some (a table at the end)."""
    module = sys.modules.get("tests.test_solutions")
    times = getattr(module, "RUN_TIMES", None)
    if not times:
        return
    terminalreporter.write_sep("-", "solution notebooks run top to bottom on the CPU")
    for stem, seconds in sorted(times.items()):
        terminalreporter.write_line(f"{stem:<22} {seconds:7.1f} s")
    terminalreporter.write_line(f"{'total':<22} {sum(times.values()):7.1f} s")


@pytest.fixture(scope="module")
def grading_env(synth_root, reference_model):
    """The grader's environment for the grading tests: the generated data set, the reference model the notebooks
    study (as the students' distribution ships it), the instructor library importable by the grader (never by the
    submissions); skipped without a working sandbox (a failure in CI)."""
    from tests.course import REPO, require_sandbox

    require_sandbox()
    saved = {key: os.environ.get(key) for key in ("LABCODE_DATADIR", "PYTHONPATH", "LABCODE_REFERENCE_MODEL")}
    os.environ["LABCODE_DATADIR"] = str(synth_root)
    os.environ["LABCODE_REFERENCE_MODEL"] = str(reference_model)
    os.environ["PYTHONPATH"] = str(REPO)  # the instructor library is importable by the grader, never by submissions
    yield synth_root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def built_site(request, tmp_path_factory) -> Path:
    """The course site as ``make book`` builds it, once for the whole run: the folder of its HTML.

    The notebook pages are the student release run by ``tools/site_notebooks.py`` on the small generated data set
    (``synth_root``); the book is built with ``jupyter-book build -W`` from a copy of the committed sources whose
    ``course.yml`` names no link (``tests.test_book``'s ``NO_LINKS``, ``_copy_sources`` and ``build``), so the setup
    page offers the students' distribution as a zip; the reference model that the zip ships is a stand-in file (with
    a ``reference.json``) named by ``$LABCODE_REFERENCE_MODEL`` during the build, whatever this machine has trained.
    The test processes of one run (pytest-xdist workers) share the site (``tests.course.built_once``).
    """
    from tests.course import REPO, built_once
    from tests.test_book import NO_LINKS, _copy_sources, build

    release = REPO / "notebooks" / "segmentation"
    if not release.is_dir():
        pytest.fail("notebooks/segmentation/ is missing: generate the student release first (make release)")

    def build_site(root: Path) -> None:
        from labcode.reference import ENV_MODEL, INFO_KEYS, INFO_NAME
        from tools.site_notebooks import build_site_notebooks

        (root / "site").mkdir()
        (root / "reference").mkdir()
        stand_in = root / "reference" / "best.onnx"
        stand_in.write_bytes(b"a stand-in for the reference model")
        (root / "reference" / INFO_NAME).write_text(json.dumps({key: None for key in INFO_KEYS}))
        saved = os.environ.get(ENV_MODEL)
        try:
            pages = root / "pages" / "segmentation"
            reports = build_site_notebooks(pages, release=release, datadir=request.getfixturevalue("synth_root"),
                                           timeout=60)
            with open(root / "reports.pickle", "wb") as file:  # for the page tests of every test process
                pickle.dump(reports, file)
            os.environ[ENV_MODEL] = str(stand_in)  # for the download only: the notebooks ran with the real one
            build(_copy_sources(root / "site", links=NO_LINKS, pages=pages))
        finally:
            if saved is None:
                os.environ.pop(ENV_MODEL, None)
            else:
                os.environ[ENV_MODEL] = saved

    return built_once(shared_folder(tmp_path_factory), "course-site", build_site) / "site" / "book" / "_build" / "html"


#: The longest test files, longest first (measured with LABCODE_CPU_REPORT, below): with one file per test process
#: (``--dist loadfile``, in this order with ``--no-loadscope-reorder``), a long file started last would leave the
#: other process idle at the end.
LONG_FILES = ("test_grading.py", "test_grading_cluster.py", "test_book.py", "test_student_path.py", "test_train_cli.py",
              "test_grading_outputs.py", "test_solutions.py", "test_grading_attacks.py", "test_serve.py",
              "test_grading_models.py", "test_export.py", "test_judge.py", "test_reference.py", "test_check_release.py",
              "test_layout.py")


def pytest_collection_modifyitems(session, config, items) -> None:
    """Run the longest files first (the order is the same in every test process, as pytest-xdist requires)."""
    rank = {name: index for index, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


# --------------------------------------------------------------------------------------------------------------------
# CPU seconds per test file (LABCODE_CPU_REPORT=<file>): what the suite's time goes to, subprocesses included
# --------------------------------------------------------------------------------------------------------------------

def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process, and of its finished subprocesses (those their parents waited for)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _machine_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (``/proc/stat``): a test's own when tests run one at a time
    (``-p no:xdist``), kernels run by sandboxes and slurm jobs included."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    report = os.environ.get("LABCODE_CPU_REPORT")
    if not report:
        yield
        return
    before, machine, begun, started = _cpu_seconds(), _machine_cpu_seconds(), time.time(), time.perf_counter()
    yield
    after = _cpu_seconds()  # one line per test; module fixtures count in the test that first needs them
    with open(report, "a") as handle:
        handle.write(json.dumps({"file": item.path.name, "test": item.name,
                                 "process": os.environ.get("PYTEST_XDIST_WORKER", "main"),
                                 "start": round(begun, 2),
                                 "wall": round(time.perf_counter() - started, 2),
                                 "self": round(after[0] - before[0], 2),
                                 "children": round(after[1] - before[1], 2),
                                 "machine": round(_machine_cpu_seconds() - machine, 2)}) + "\n")
