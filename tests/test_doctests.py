"""The examples in the docstrings of every module run and give what they show.

Each module is imported under its installed name (``temtrack.sdk.metrics``, not
``sdk.metrics``, as ``pytest --doctest-modules`` would from the folder layout), so
relative imports and the package-dir mapping behave as for users. A module whose
optional dependency is missing (torch for most of ``training``, TensorRT for the
engine builder) is skipped with the reason.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("temtrack", "temtrack.tracker", "temtrack.sdk", "temtrack.training", "temtrack.export")


def _modules() -> list[str]:
    names = set(PACKAGES)
    for package in PACKAGES[1:]:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            names.add(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_pass(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional extra that is not installed here
        pytest.skip(f"{name} needs {exc.name or exc}")
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):  # objects defined in the module only, with its globals
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed (see above)"

