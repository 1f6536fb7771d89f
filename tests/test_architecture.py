"""The dependency rule of ``../shared/docs/ARCHITECTURE.md``, checked on the source.

    tracker  <-  sdk  <-  training  <-  export      (temtrack/cli.py may import them all)

``sdk`` never imports torch, ``temtrack.training`` or ``temtrack.export``, not even
lazily inside a function, through a relative import (``from ..training import x``) or
by naming the module in a string for ``importlib`` (a backend for checkpoints is found
through the entry point ``training`` registers). ``tracker`` imports no other
tem-track package. Every ``.py`` file is parsed, not imported, so code that runs only
on some paths counts too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> (its package, the tem-track packages it must not reach, other modules it must not import)
RULES = {
    "sdk": ("temtrack.sdk", ("temtrack.training", "temtrack.export"), ("torch",)),
    "tracker": ("temtrack.tracker", ("temtrack.sdk", "temtrack.training", "temtrack.export", "temtrack.cli"), ()),
}
_MODULE_STRING = re.compile(r"temtrack(\.\w+)+(:\w+)?")


def _package_of(path: Path, folder: str) -> str:
    """The dotted package a file's relative imports start from."""
    parts = path.relative_to(ROOT / folder).parent.parts
    return ".".join((RULES[folder][0], *parts))


def _imports(path: Path, folder: str) -> list[tuple[int, str]]:
    """(line, module) for every import and every string naming a tem-track module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(path, folder)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # "from temtrack import training" reaches the package as well
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_STRING.fullmatch(node.value):
                found.append((node.lineno, node.value.split(":")[0]))
    return found


def _violations(folder: str) -> list[str]:
    _, packages, modules = RULES[folder]
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in _imports(path, folder):
            top = module.split(".")[0]
            if top in modules or any(module == p or module.startswith(p + ".") for p in packages):
                bad.append(f"{path.relative_to(ROOT)}:{line} {module}")
    return bad


@pytest.mark.parametrize("folder", sorted(RULES))
def test_dependency_rule(folder):
    bad = _violations(folder)
    assert not bad, f"{folder}/ reaches where the dependency rule forbids:\n" + "\n".join(bad)


def test_the_check_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The parser catches what the rule is about: lazy, relative and importlib imports."""
    sdk = tmp_path / "sdk"
    (sdk / "backends").mkdir(parents=True)
    (sdk / "backends" / "x.py").write_text(
        "import numpy\n"
        "def f():\n    import torch.nn\n"
        "from ...training import model\n"
        "from temtrack import export\n"
        "REGISTRY = {'torch': ('temtrack.training.inference', 'factory')}\n"
        "'''Docstrings may name temtrack.training.synth.storage in prose.'''\n"
        "from . import onnx\n"
        "from .. import results\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = sorted(entry.split(" ", 1)[1] for entry in _violations("sdk"))
    assert found == ["temtrack.export", "temtrack.training", "temtrack.training.inference",
                     "temtrack.training.model", "torch.nn"]
