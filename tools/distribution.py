"""The students' distribution: a self-contained folder, published as its own repository (or branch).

``make release`` writes it to ``dist/student/`` after the nbgrader release:

    README.md          for students: the set-up commands, the data, the self-check, handing in
    Makefile           setup (virtual environment with requirements.txt, then the generated data set), setup-gpu (the
                       same with requirements-gpu.txt), lab, check
    requirements.txt   the notebooks' packages for a machine without an NVIDIA GPU: PyTorch's CPU build, the CPU
                       ONNX Runtime
    requirements-gpu.txt  the same packages with PyTorch's CUDA build and ONNX Runtime's GPU build (the cluster);
                       both are written from requirements-student.txt (:func:`student_requirements`), never with
                       the course library
    labcode.py         a stand-in that stops ``python -m labcode...`` run here with a message: the library is in
                       segmentation/, where the notebooks and commands run
    segmentation/      the student release of the assignment (notebooks and the stripped labcode/)
    reference/         the course's reference model (unet_reference.onnx) and its reference.json (the size and
                       areas it was trained on, its scores), which notebook 6 reads; always there: a distribution
                       without them is refused (make release trains the model first when it is missing)

Nothing else of this repository goes in: no solutions, no instructor library, no tools, no tests. Publish it with::

    python tools/distribution.py --publish <git URL or path> [--branch main]

which commits the folder's content, as it is, to that repository (created when the path does not exist yet) and
pushes it. The course's links (the hub, the address of this published repository) are set in ``course.yml``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from labcode.reference import INFO_NAME  # noqa: E402  (the model's metadata, beside it)
from labcode.reference import SHIPPED_NAME as REFERENCE_NAME  # noqa: E402  (where notebooks look for it)

DIST = REPO / "dist" / "student"
TEMPLATES = REPO / "tools" / "student"
COURSE_FILE = REPO / "course.yml"
ASSIGNMENT = "segmentation"


class DistributionError(Exception):
    """The distribution cannot be built or published (the message names the file or command)."""


@dataclass(frozen=True)
class CourseLinks:
    """Where the course lives for students, from ``course.yml`` (empty strings when not set).

    Attributes:
        hub_url: the JupyterHub (with nbgitpuller) where notebooks open from the site's launch buttons.
        student_repository: the address of the published student distribution.
        student_branch: its branch.
        site_url: the address of the published course site.
    """

    hub_url: str = ""
    student_repository: str = ""
    student_branch: str = "main"
    site_url: str = ""


def load_links(path: Path = COURSE_FILE) -> CourseLinks:
    """Read ``course.yml``; a missing file or empty values mean "not set"."""
    import yaml

    if not path.is_file():
        return CourseLinks()
    values = yaml.safe_load(path.read_text()) or {}
    unknown = set(values) - set(CourseLinks.__dataclass_fields__)
    if unknown:
        raise DistributionError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}; valid: "
                                f"{', '.join(CourseLinks.__dataclass_fields__)}")
    return CourseLinks(**{key: str(value or "") for key, value in values.items()})


def reference_model() -> Path:
    """The reference model that ``make reference`` trains (``best.onnx`` of :func:`labcode.reference.reference_dir`),
    whether it exists or not: :func:`build_distribution` refuses a missing one."""
    from labcode.reference import reference_dir

    return reference_dir() / "best.onnx"


#: What ``reference/reference.json`` of the distribution keeps of the reference run's: no path of the instructors'
#: machine (the model is the file beside it), everything notebook 6 and curious students read.
SHIPPED_INFO_KEYS = ("protocol", "img_size", "areas_train", "train_size", "valid_size", "best_epoch", "best_macro_f1",
                     "training_seconds", "epoch_times", "precision", "device", "parity", "scores")
#: Fields of the recipe (``TrainConfig``) that name places or commands of the instructors' machine.
_LOCAL_RECIPE_FIELDS = ("datadir", "cache_dir", "logdir", "run_name", "resume", "command")


def shipped_info(reference: Path) -> dict:
    """The ``reference.json`` shipped beside the model: the reference run's, without the instructors' paths.

    Args:
        reference: the reference model's ONNX file, with its ``reference.json`` beside it.

    Raises:
        DistributionError: the model or its ``reference.json`` is missing or incomplete (the message names the file
            and the command that makes them).
    """
    from labcode.errors import LabError
    from labcode.reference import reference_info

    if not reference.is_file():
        raise DistributionError(f"no reference model at {reference}: the students' distribution always ships it; "
                                "train it with `make reference` (python -m labcode reference), then run `make "
                                "release` again")
    try:
        info = reference_info(reference)
    except LabError as err:
        raise DistributionError(f"the reference model cannot be shipped: {err}") from err
    recipe = {key: value for key, value in info.get("recipe", {}).items() if key not in _LOCAL_RECIPE_FIELDS}
    return {"model": REFERENCE_NAME, **{key: info[key] for key in SHIPPED_INFO_KEYS if key in info},
            "recipe": recipe}


def write_reference(folder: Path, reference: Path, info: dict) -> Path:
    """Write the reference model and the ``reference.json`` that ships with it (``info``, from :func:`shipped_info`)
    into ``folder``, which is created; return the model's path there."""
    folder.mkdir(parents=True)
    shutil.copyfile(reference, folder / REFERENCE_NAME)
    (folder / INFO_NAME).write_text(json.dumps(info, indent=1) + "\n")
    return folder / REFERENCE_NAME


#: Where pip finds PyTorch's CPU builds (``torch==<version>+cpu`` for Linux and Windows; macOS has only those).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

_HEADERS = {
    "cpu": ("# The lab's Python packages for a machine without an NVIDIA GPU (a laptop, say): PyTorch's CPU build,\n"
            "# from PyTorch's own index, and the CPU ONNX Runtime. `make setup` installs them into .venv.\n"
            f"--extra-index-url {TORCH_CPU_INDEX}\n"),
    "gpu": ("# The lab's Python packages for a machine with an NVIDIA GPU (the cluster): PyTorch's CUDA build and, on\n"
            "# Linux x86-64, ONNX Runtime's GPU build (it runs on the CPU too). `make setup-gpu` installs them into\n"
            "# .venv.\n"),
}


def student_requirements(source: str, build: str, name: str = "requirements-student.txt") -> str:
    """The students' requirements file for one ``build`` (``"cpu"`` or ``"gpu"``) from the notebooks' packages.

    ``source`` pins ``torch==<version>``, ``onnxruntime-gpu`` (Linux x86-64) and ``onnxruntime`` (elsewhere), as
    the instructors' and grading environments install them: that is the GPU file. The CPU file asks for
    ``torch==<version>+cpu`` (PyTorch's index; macOS wheels have no such label) and the plain ``onnxruntime``
    everywhere. Whole-line comments of ``source`` are left out (they speak of its other uses); a header says which
    build the file installs.

    Raises:
        DistributionError: ``source`` lacks one of those pins (``name`` is named).
    """
    if build not in _HEADERS:
        raise DistributionError(f"unknown build {build!r}: cpu or gpu")
    lines = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    torch = [line for line in lines if re.fullmatch(r"torch==[\w.]+", line.strip())]
    ort_gpu = [line for line in lines if line.startswith("onnxruntime-gpu==")]
    ort_cpu = [re.match(r"onnxruntime==([\w.]+)", line) for line in lines]
    ort_cpu = [match for match in ort_cpu if match]
    if len(torch) != 1 or len(ort_gpu) != 1 or len(ort_cpu) != 1:
        raise DistributionError(f"{name} should pin torch==<version> once, and onnxruntime-gpu and onnxruntime once "
                                "each: cannot write the CPU and GPU requirements from it")
    if build == "cpu":
        version = torch[0].strip().split("==")[1]
        lines = [f'torch=={version}+cpu; sys_platform != "darwin"\ntorch=={version}; sys_platform == "darwin"'
                 if line == torch[0] else f"onnxruntime=={ort_cpu[0].group(1)}" if line == ort_cpu[0].string
                 else line for line in lines if line != ort_gpu[0]]
    return _HEADERS[build] + "\n".join(lines) + "\n"


def exercise_files(library: Path = REPO / "labcode") -> list[str]:
    """The files of the library that hold exercises, the ones students write (``labcode/unet.py``...): those with
    exercise regions (:func:`tools.release.find_regions`), which the release turns into stubs; in the order of the
    notebooks that ask for them."""
    from tools.release import find_regions

    first_asked = {}
    for path in library.rglob("*.py"):
        regions = [] if "__pycache__" in path.parts else find_regions(path.read_text(encoding="utf-8"), str(path))
        if regions:
            first_asked[f"{library.name}/{path.relative_to(library).as_posix()}"] = min(r.stem for r in regions)
    return sorted(first_asked, key=lambda name: (first_asked[name], name))


def render_readme(links: CourseLinks, exercises: list[str]) -> str:
    """The students' README (``tools/student/README.md``) with the course's links and the files they write.

    Args:
        links: the course's links (the site's address, when set, is given).
        exercises: the library files holding exercises, relative to ``segmentation/`` (:func:`exercise_files`).
    """
    text = (TEMPLATES / "README.md").read_text()
    files = "\n".join(f"- `segmentation/{name}`" for name in exercises)
    site_note = f"The course site, with a chapter for each notebook: <{links.site_url}>." if links.site_url else ""
    return text.replace("{exercise_files}", files).replace("{site_note}", site_note).rstrip() + "\n"


def build_distribution(release: Path, dest: Path = DIST, *, reference: Path,
                       links: CourseLinks | None = None, ignore: tuple[str, ...] = ()) -> Path:
    """Write the students' distribution to ``dest`` (replaced entirely).

    Args:
        release: the student release of the assignment (``notebooks/segmentation``).
        dest: the folder to write.
        reference: the reference model to ship (an ONNX file with its ``reference.json`` beside it, as ``make
            reference`` writes them; :func:`reference_model`).
        links: the course's links (``course.yml`` when ``None``).
        ignore: name patterns left out of the release copy (the course's ``CourseDirectory.ignore``).

    Raises:
        DistributionError: no student release in ``release``, or no reference model with its ``reference.json``
            (nothing is written then, and ``dest`` is left as it was).
    """
    links = load_links() if links is None else links
    if not (release / "labcode" / "__init__.py").is_file():
        raise DistributionError(f"{release} is not a student release (no labcode/): run `make release` first")
    info = shipped_info(Path(reference))
    exercises = exercise_files()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dist-", dir=dest.parent) as tmp:
        staging = Path(tmp) / "student"
        shutil.copytree(release, staging / ASSIGNMENT, ignore=lambda folder, names: [
            n for n in names if any(fnmatch.fnmatch(n, pattern) for pattern in ignore)])
        packages = (REPO / "requirements-student.txt").read_text()
        (staging / "requirements.txt").write_text(student_requirements(packages, "cpu"))
        (staging / "requirements-gpu.txt").write_text(student_requirements(packages, "gpu"))
        (staging / "README.md").write_text(render_readme(links, exercises))
        shutil.copyfile(TEMPLATES / "Makefile", staging / "Makefile")
        shutil.copyfile(TEMPLATES / "labcode.py", staging / "labcode.py")
        shutil.copyfile(TEMPLATES / "gitignore", staging / ".gitignore")
        write_reference(staging / "reference", Path(reference), info)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    return dest


# --------------------------------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------------------------------

def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise DistributionError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def publish(dist: Path, target: str, *, branch: str = "main", message: str | None = None) -> str | None:
    """Commit the content of ``dist`` to ``branch`` of the git repository ``target`` and push it.

    ``target`` is a git URL or a local path (a new path becomes a bare repository). Returns the new commit, or
    ``None`` when the repository already held exactly this content.
    """
    if not (dist / "README.md").is_file():
        raise DistributionError(f"{dist} holds no distribution: run `make release` first")
    local = Path(target)
    if not ("://" in target or ":" in target.split("/")[0]) and not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        _git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(local), cwd=local.parent)
    with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
        work = Path(tmp) / "repo"
        _git("clone", "--quiet", target, str(work), cwd=Path(tmp))
        has_branch = bool(_git("ls-remote", "--heads", "origin", branch, cwd=work))
        if has_branch:
            _git("checkout", "--quiet", branch, cwd=work)
        else:
            _git("checkout", "--quiet", "--orphan", branch, cwd=work)
        for entry in work.iterdir():
            if entry.name != ".git":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        shutil.copytree(dist, work, dirs_exist_ok=True)
        _git("add", "--all", cwd=work)
        if has_branch and not _git("status", "--porcelain", cwd=work):
            return None
        source = _git("rev-parse", "--short", "HEAD", cwd=REPO) if (REPO / ".git").exists() else "unknown"
        _git("-c", "user.name=Course release", "-c", "user.email=course@localhost", "commit", "--quiet", "-m",
             message or f"Student release from instructor commit {source}", cwd=work)
        _git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
        return _git("rev-parse", "HEAD", cwd=work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/distribution.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=DIST, help="the distribution folder (default: dist/student)")
    parser.add_argument("--publish", metavar="TARGET", default=None,
                        help="git URL or path to publish to (default: student_repository of course.yml)")
    parser.add_argument("--branch", default=None, help="branch (default: student_branch of course.yml, or main)")
    args = parser.parse_args(argv)
    try:
        links = load_links()
        target = args.publish or links.student_repository
        if not target:
            raise DistributionError("nowhere to publish: give --publish TARGET or set student_repository in "
                                    f"{COURSE_FILE.name}")
        for name in (REFERENCE_NAME, INFO_NAME):
            if not (args.dist / "reference" / name).is_file():
                raise DistributionError(f"{args.dist} has no reference/{name}: run `make release` (it trains the "
                                        "reference model first when it is missing)")
        commit = publish(args.dist, target, branch=args.branch or links.student_branch or "main")
    except DistributionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"published {args.dist} to {target}: " + (f"commit {commit[:12]}" if commit else "already up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
