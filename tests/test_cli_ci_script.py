"""``.ci/run`` installs into and tests with the Python that is active (a virtual environment or not)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None or os.name == "nt", reason="needs bash")
def test_ci_script_uses_the_active_python(tmp_path):
    script = (ROOT / ".ci" / "run").read_text()
    # a dry run: the install, lint and test commands and apt-get only say what they would do
    dry = re.sub(r'^"\$PY" -m ', 'echo WOULD-RUN "$PY" -m ', script, flags=re.M)
    dry = dry.replace("$SUDO apt-get", "echo WOULD-RUN apt-get")
    assert dry.count("WOULD-RUN") == 5
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text(dry)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    result = subprocess.run(["bash", ".ci/run"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    commands = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("WOULD-RUN")]
    python = [c for c in commands if c[0] != "apt-get"]
    assert [c[1:4] for c in python] == [["-m", "pip", "install"], ["-m", "ruff", "check"], ["-m", "pytest"]]
    prefix = subprocess.run(
        [python[0][0], "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert os.path.realpath(prefix) == os.path.realpath(sys.prefix)
    assert not (tmp_path / ".venv").exists()  # this Python accepts pip install: no venv of its own
