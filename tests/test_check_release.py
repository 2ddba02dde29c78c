"""The students' self-check (labcode.check) in the student release: one source with the notebooks' visible checks,
stubs failing and solutions passing, other correct forms passing, wrong forms failing with messages that hold no code,
and no solution line in the checks' source."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from labcode.check import CHECKS
from tests.course import OWN_LIBRARY, write_library
from tools import release

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "solutions" / "segmentation"
RELEASE = REPO / "notebooks" / "segmentation"


def _visible_test_sources(stem: str) -> dict[str, str]:
    """grade_id -> the visible part of each graded test cell of a solution notebook."""
    cells = json.loads((SOURCE / f"{stem}.ipynb").read_text())["cells"]
    return {cell["metadata"]["nbgrader"]["grade_id"]: "".join(cell["source"]).split("### BEGIN HIDDEN TESTS")[0]
            for cell in cells if cell["metadata"].get("nbgrader", {}).get("grade") and cell["cell_type"] == "code"}


def test_each_notebook_test_of_a_library_exercise_runs_its_check_from_labcode_check():
    """The visible checks have one source: the notebook cells call the functions the self-check runs."""
    calls: dict[str, list[str]] = {}
    for stem in sorted({check.notebook for check in CHECKS}):
        for grade_id, visible in _visible_test_sources(stem).items():
            for name in re.findall(r"^(check_\w+)\(\)", visible, flags=re.MULTILINE):
                assert f"from labcode.check import {name}" in visible, grade_id
                calls.setdefault(name, []).append(grade_id)
    names = {check.run.__name__ for check in CHECKS}
    assert set(calls) <= names and all(len(ids) == 1 for ids in calls.values()), calls
    # Every check but the last one (the parts together, a whole UNet) is the visible test of one exercise's cell.
    assert names - set(calls) == {"check_whole_unet"}


def test_every_library_exercise_has_a_question_and_a_self_check():
    regions = [r for path in sorted((REPO / "labcode").rglob("*.py"))
               for r in release.find_regions(path.read_text(), str(path))]
    titles = {(r.stem, r.title) for r in regions}
    assert {("02_data_pipeline", "Augmentation pipeline"), ("04_metrics_losses", "Class weights"),
            ("03_unet", "UNetConvBlock layers"), ("03_unet", "Decoder first and last layers")} <= titles
    assert titles <= {(c.notebook, c.title) for c in CHECKS}
    for stem, title in titles:
        assert title in (SOURCE / f"{stem}.ipynb").read_text(), f"{title!r} is not a question of {stem}"


def _self_check(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_self_check_fails_on_the_stubs_and_passes_with_the_solutions(tmp_path):
    work = tmp_path / "segmentation"
    shutil.copytree(RELEASE, work)
    stubs = _self_check(work, "labcode.check")
    assert stubs.returncode == 1, stubs.stdout + stubs.stderr
    assert f"Checking the exercises of {work / 'labcode'}" in stubs.stdout
    assert "WARNING" not in stubs.stdout
    for check in CHECKS:
        assert f"[TODO]   {check.notebook}: {check.title}" in stubs.stdout
    assert "Augmentation pipeline: write it (see notebook 02_data_pipeline.ipynb)" in stubs.stdout
    assert f"0/{len(CHECKS)} checks pass." in stubs.stdout

    write_library(work / "labcode")  # the instructor's code in the stubs
    solved = _self_check(work, "labcode", "check")  # the CLI spelling
    assert solved.returncode == 0, solved.stdout + solved.stderr
    assert f"{len(CHECKS)}/{len(CHECKS)} checks pass." in solved.stdout
    assert solved.stdout.count("[PASS]") == len(CHECKS)


def test_self_check_says_when_it_does_not_check_a_student_copy(tmp_path):
    # The instructor library copied in place of the student copy: its checks pass, and say nothing.
    work = tmp_path / "segmentation"
    shutil.copytree(REPO / "labcode", work / "labcode", ignore=shutil.ignore_patterns("__pycache__"))
    result = _self_check(work, "labcode.check")
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"WARNING: {(work / 'labcode').resolve()} is not a student copy" in result.stdout
    assert f"{len(CHECKS)}/{len(CHECKS)} checks pass." in result.stdout
    # A student copy, but run from another folder while the instructor library is installed: the wrong copy.
    shutil.rmtree(work / "labcode")
    shutil.copytree(RELEASE / "labcode", work / "labcode")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _self_check(elsewhere, "labcode.check")
    assert result.returncode == 3
    assert f"not from {elsewhere / 'labcode'}: run the check from the folder" in result.stdout


def test_self_check_explains_wrong_and_crashing_code(tmp_path):
    work = tmp_path / "segmentation"
    shutil.copytree(RELEASE, work)
    write_library(work / "labcode")  # the instructor's code in the stubs
    unet = work / "labcode" / "unet.py"
    text = unet.read_text()
    wrong = text.replace("nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout))",
                         "nn.Conv2d(cout, cout // 2, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout // 2))",
                         1)
    assert wrong != text
    unet.write_text(wrong)
    stats = work / "labcode" / "stats.py"
    crashing = stats.read_text().replace("raw = np.divide(1.0, freq,", "raw = np.divide(1.0, frequency,", 1)
    stats.write_text(crashing)
    result = _self_check(work, "labcode.check")
    assert result.returncode == 1
    out = result.stdout
    assert "[FAIL]   03_unet: UNetConvBlock layers\n         block2's convolution should output 16 channels, got 8" \
        in out
    assert re.search(r"\[ERROR\]  04_metrics_losses: Class weights\n +NameError: name 'frequency' is not defined "
                     r"\(labcode/stats.py:\d+: raw = np.divide\(1.0, frequency,", out), out
    assert "[PASS]   02_data_pipeline: Augmentation pipeline" in out


def _student_copy(tmp_path: Path, own: dict[str, str] | None) -> Path:
    """A student folder with a copy of the current library (not the generated release) and exercises written."""
    work = tmp_path / "segmentation"
    release.release_library(REPO / "labcode", work / "labcode", {p.stem for p in SOURCE.glob("*.ipynb")})
    assert (work / "labcode" / "check_data" / "unet.npz").is_file()  # the release copies the data files
    write_library(work / "labcode", own)
    return work


#: Correct blocks written in yet other ways: parts registered in another order, Sequentials built from lists,
#: in-place ReLUs, an Upsample spelled with a float factor, named arguments.
OTHER_FORMS = {
    "UNetConvBlock layers": """
        self.block3 = nn.MaxPool2d(kernel_size=(2, 2))
        self.block2 = nn.Sequential(*[nn.Conv2d(cout, cout, (3, 3), padding="same"), nn.ReLU(inplace=True),
                                      nn.BatchNorm2d(num_features=cout)])
        self.block1 = nn.Sequential(*[nn.Conv2d(cin, cout, (3, 3), padding="same"), nn.ReLU(inplace=True),
                                      nn.BatchNorm2d(num_features=cout)])""",
    "UNetConvBlock forward": """
        hidden = self.block1(x)
        features = self.block2(hidden)
        outputs = self.block3(features)""",
    "UNetUpConvBlock layers": """
        layers = []
        for a in (cin, cout):
            layers += [nn.Conv2d(a, cout, kernel_size=3, stride=1, padding=1), nn.ReLU(inplace=True),
                       nn.BatchNorm2d(cout)]
        self.convblock = nn.Sequential(*layers)
        self.upconv = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"),
                                    nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                                    nn.BatchNorm2d(cout))""",
}


def _run_unet_checks(work: Path) -> subprocess.CompletedProcess:
    return _self_check(work, "labcode.check", "--notebook", "03")


def test_correct_exercises_written_in_other_ways_pass_the_checks(tmp_path):
    for index, own in enumerate((OWN_LIBRARY, OTHER_FORMS)):
        work = _student_copy(tmp_path / str(index), own)
        result = _run_unet_checks(work)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("[PASS]") == 7, result.stdout


#: Wrong forwards of the two blocks, each with the line of the report it must produce.
WRONG_FORMS = [
    ({"UNetUpConvBlock forward": """
        return self.convblock(torch.cat([encoder_features, self.upconv(inputs)], dim=1))""",
      "UNetConvBlock forward": """
        features = self.block1(x)
        outputs = self.block3(features)"""},
     ["[FAIL]   03_unet: UNetUpConvBlock forward\n         the output: the values differ from those expected",
      "[FAIL]   03_unet: UNetConvBlock forward\n         features: the values differ from those expected"]),
    ({"UNetUpConvBlock forward": """
        return self.convblock(torch.cat([self.upconv(inputs), torch.zeros_like(encoder_features)], dim=1))""",
      "UNetConvBlock forward": """
        outputs = self.block3(self.block2(self.block1(x)))
        features = outputs"""},
     ["[FAIL]   03_unet: UNetUpConvBlock forward\n         the output does not change when the encoder features "
      "change", "[FAIL]   03_unet: UNetConvBlock forward\n         features (before pooling) should be (2, 4, 8, 6)"]),
    ({"UNetUpConvBlock forward": """
        return self.convblock(torch.cat([self.upconv(torch.zeros_like(inputs)), encoder_features], dim=1))"""},
     ["[FAIL]   03_unet: UNetUpConvBlock forward\n         the output does not change when the decoder input "
      "changes"]),
]


def test_wrong_forwards_fail_with_messages_that_hold_no_code(tmp_path):
    for index, (own, reports) in enumerate(WRONG_FORMS):
        work = _student_copy(tmp_path / str(index), own)
        result = _run_unet_checks(work)
        assert result.returncode == 1, result.stdout + result.stderr
        for report in reports:
            assert report in result.stdout, result.stdout
        assert re.search(r"^\[(FAIL|ERROR)\] +03_unet: The whole UNet", result.stdout, flags=re.MULTILINE)
        lines = result.stdout.splitlines()  # the checks' own messages (an error quotes the student's line instead)
        messages = [line for before, line in zip(lines, lines[1:]) if before.startswith("[FAIL]")]
        assert messages
        for message in messages:
            assert not re.search(r"(block\d|upconv|convblock|cat|pool2d|torch\.\w+)\(", message), message
            assert forward_spellings(message) == [], message


# --------------------------------------------------------------------------------------------------------------------
# No answer in the checks' source
# --------------------------------------------------------------------------------------------------------------------

#: Ways of writing the forwards of the blocks (whitespace removed): none may appear in the checks.
FORWARD_SPELLINGS = [
    r"block2\((\w+\.)*block1\(",  # a conv block's two stages chained
    r"block3\((\w+\.)*block2\(",
    r"cat\([\[(](\w+\.)*upconv\(",  # the up block's concatenation
    r"cat\([\[(]\w+,(\w+\.)*upconv\(",
    r"convblock\((\w+\.)*cat\(",
    r"cat\([\[(](\w+\.)*(interpolate|upsample)\(",  # the same with another upsampling
    r"classifier\((\w+\.)*up_blocks",
]


def forward_spellings(code: str) -> list[str]:
    """The spellings of :data:`FORWARD_SPELLINGS` found in ``code``."""
    flat = re.sub(r"\s+", "", code)
    return [pattern for pattern in FORWARD_SPELLINGS if re.search(pattern, flat)]


def _solution_lines_without_the_checks(tmp_path: Path) -> set[str]:
    """The secret lines of the solutions (notebooks and library exercises), judged without labcode/check.py.

    :func:`tools.leaks.secret_lines` counts every line of the library outside the exercise regions as public, the
    checks' lines included: a solution line copied into check.py would pass for public. Here the checks are left out.
    (The grader's judge shares a few helper lines with the checks, such as ``if not condition:``: it is not a
    solution, and its lines are not compared here.)
    """
    from tools import leaks

    repo = tmp_path / "repo"
    shutil.copytree(REPO / "solutions", repo / "solutions")
    shutil.copytree(REPO / "labcode", repo / "labcode",
                    ignore=shutil.ignore_patterns("__pycache__", "check.py", "check_data"))
    for path in leaks.PUBLIC_SOURCES:
        if (REPO / path).is_file():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / path, repo / path)
    secrets = leaks.secret_lines(repo)
    assert any(source.startswith("solutions/") and lines for source, lines in secrets.items())
    return set().union(*(lines for source, lines in secrets.items() if source.startswith(("solutions/", "labcode/"))))


def test_no_line_of_the_checks_is_a_line_of_a_solution_or_a_hidden_test(tmp_path):
    from tools import leaks

    source = (REPO / "labcode" / "check.py").read_text(encoding="utf-8")
    code = [leaks.squash(line) for line in leaks.code_lines(source) if leaks.meaningful(line)]
    assert len(code) > 200
    regions = {leaks.squash(line) for path in sorted((REPO / "labcode").rglob("*.py"))
               for region in release.find_regions(path.read_text(), str(path))
               for line in region.body if leaks.meaningful(line) and not line.strip().startswith("#")}
    assert len(regions) > 20
    secrets = _solution_lines_without_the_checks(tmp_path) | regions
    assert regions <= secrets
    assert [line for line in code if line in secrets] == []
    assert forward_spellings("\n".join(leaks.code_lines(source))) == []


def test_the_spelling_scan_finds_the_forwards_it_is_meant_to_find():
    # the references the checks computed before (they wrote the answers), and the instructor's own forwards
    assert forward_spellings("reference = block.block2(block.block1(x))")
    assert forward_spellings("reference = up.convblock(torch.cat([up.upconv(inputs), skipped], dim=1))")
    assert forward_spellings("x = torch.cat( (self.upconv(inputs),\n   encoder_features), 1)")
    assert forward_spellings("conv(torch.cat([F.interpolate(inputs, scale_factor=2.0), encoder_features], dim=1))")
    unet = (REPO / "labcode" / "unet.py").read_text()
    for region in release.find_regions(unet):
        if region.title.endswith("forward") and region.title.startswith("UNetConvBlock"):
            assert forward_spellings("\n".join(region.body))
    assert forward_spellings("features = self.block2(self.block1(x))")
    assert not forward_spellings("features = block(x)[1]")
