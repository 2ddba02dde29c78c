"""The library's imports: every module imports on its own in a fresh interpreter, and no two modules import each
other, directly or round a longer cycle (a static scan of every ``import`` statement, those inside functions too)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` (a folder), packages by their ``__init__.py``."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that the module ``name`` imports anywhere in its file (``from pkg import module``
    counts as importing the module; relative imports are resolved)."""
    top = next(iter(known)).split(".")[0]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
    return {m for m in found if m.split(".")[0] == top and m in known and m != name}


def import_cycles(package: Path) -> list[list[str]]:
    """The groups of modules of ``package`` that import one another (strongly connected components of more than one
    module in the graph of imports), each sorted."""
    known = module_names(package)
    graph = {name: imported_modules(name, path, known) for name, path in known.items()}
    order, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's algorithm
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in order:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], order[other])
        if low[node] == order[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return sorted(cycles)


def test_no_two_labcode_modules_import_each_other():
    assert import_cycles(REPO / "labcode") == []


def test_the_scan_finds_direct_indirect_and_function_level_cycles(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from pkg.c import g\n",  # inside a function: still a cycle
        "c.py": "import pkg.a\n",
        "d.py": "from . import a\n",  # imports the cycle, is not part of it
        "sub/__init__.py": "",
        "sub/e.py": "from ..sub import f\n",
        "sub/f.py": "from pkg.sub.e import x\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    assert import_cycles(package) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.sub.e", "pkg.sub.f"]]
    (package / "c.py").write_text("import json\n")
    assert import_cycles(package) == [["pkg.sub.e", "pkg.sub.f"]]


#: Run in a fresh interpreter: import the third-party packages once, then import each labcode module in a forked
#: child that has imported no labcode module yet, so that each one is imported first, alone, as a user would.
_IMPORT_EACH = """
import importlib, json, os, sys, traceback
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
for heavy in ("numpy", "torch", "cv2", "PIL.Image", "albumentations", "onnxruntime", "fastapi", "matplotlib"):
    importlib.import_module(heavy)
assert not [m for m in sys.modules if m.split(".")[0] == "labcode"]
failures = {}
for name in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException:
            os.write(write, traceback.format_exc().encode()[-2000:])
            os._exit(1)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    if os.waitpid(pid, 0)[1] != 0:
        failures[name] = message or "the child died"
print(json.dumps(failures))
"""


def test_every_labcode_module_imports_first_and_alone():
    names = [name for name in module_names(REPO / "labcode") if not name.endswith("__main__")]
    assert {"labcode", "labcode.infer", "labcode.serving.uploads", "labcode.serving.serve",
            "labcode.commands.models"} <= set(names)
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(names)], cwd=REPO, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {}
