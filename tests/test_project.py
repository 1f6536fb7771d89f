"""Project hygiene that CI relies on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Set up.*?```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert block[0] in ci and block[1] in ci
    assert ci.index(block[0]) < ci.index(block[1])


def test_sdk_and_tracker_never_import_torch():
    code = "import sys, temtrack.cli, temtrack.sdk.labelme, temtrack.tracker, temtrack.training.synth; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the source-level rule is tests/test_architecture.py


def test_top_level_names_resolve():
    import temtrack

    for name in temtrack.__all__:
        assert getattr(temtrack, name) is not None, name
