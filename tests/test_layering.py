"""The layers of ARCHITECTURE.md §2 hold: the SDK never reaches up (its command-line front end
aside), benchmarks never use train/, and optimize/ uses train/ only for its training engine,
imported lazily inside the functions that fine-tune."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UPPER = ("mirnet.train", "mirnet.optimize", "mirnet.benchmarks")
TRAINING_ENGINE = ("mirnet.train.loop", "mirnet.train.data", "mirnet.train.losses", "mirnet.train.schedule")


def python_files(folder: str, *, skip: str | None = None) -> list[Path]:
    files = sorted((REPO / folder).rglob("*.py"))
    return [f for f in files if skip is None or skip not in f.relative_to(REPO).parts]


def imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, at_module_level)`` for every absolute import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, id(node) in top))
    return out


@pytest.mark.parametrize("path", python_files("sdk", skip="cli"), ids=lambda p: str(p.relative_to(REPO)))
def test_sdk_never_mentions_the_layers_above(path):
    text = path.read_text()
    assert not [name for name in UPPER if name in text], f"{path} reaches above the SDK"


@pytest.mark.parametrize("path", python_files("benchmarks"), ids=lambda p: str(p.relative_to(REPO)))
def test_benchmarks_do_not_use_train(path):
    assert not [m for m, _ in imports(path) if m.startswith("mirnet.train")]


@pytest.mark.parametrize("path", python_files("optimize"), ids=lambda p: str(p.relative_to(REPO)))
def test_optimize_uses_only_the_training_engine_lazily(path):
    for module, top_level in imports(path):
        if module.startswith("mirnet.train"):
            assert not top_level, f"{path}: `import {module}` at module level (import it where it fine-tunes)"
            assert module in TRAINING_ENGINE, f"{path}: {module} is not part of the training engine"


def test_sdk_runs_with_the_upper_layers_absent():
    code = ("import sys\n"
            "for name in ('mirnet.train', 'mirnet.optimize', 'mirnet.benchmarks', 'torch'):\n"
            "    sys.modules[name] = None\n"
            "import pkgutil, importlib, numpy as np, mirnet.sdk\n"
            "for info in pkgutil.walk_packages(mirnet.sdk.__path__, 'mirnet.sdk.'):\n"
            "    if not info.name.startswith(('mirnet.sdk.cli', 'mirnet.sdk.model.arch', 'mirnet.sdk.model.weights',\n"
            "                                 'mirnet.sdk.model.complexity', 'mirnet.sdk.backends.torch')):\n"
            "        importlib.import_module(info.name)\n"
            "from mirnet.sdk import Restorer\n"
            "with Restorer() as r:\n"
            "    print(r.restore(np.full((20, 30, 3), 100, np.uint8)).shape)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(20, 30, 3)"
