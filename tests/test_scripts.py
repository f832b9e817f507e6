"""scripts/setup.sh, as a fresh clone runs it: each step said as it happens (pip's own line for every
package), the time it took, and a second run that knows it has nothing to do. Run on a copy of the script in a
temporary folder, with one real package (a wheel made here) installed offline into a new virtual environment."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _wheel(folder: Path, name: str = "rll_setup_probe", version: str = "0.1") -> Path:
    """A minimal pure-Python wheel (PEP 427): one module, its metadata and its RECORD."""
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": b"VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  b"Tag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for path, data in files.items()]
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join([*record, f"{name}-{version}.dist-info/RECORD,,"]) +
                                                  "\n").encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


@pytest.mark.slow
def test_setup_says_what_it_installs_as_it_goes_and_skips_when_nothing_changed(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", clone / "scripts" / "setup.sh")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels)
    (clone / "requirements.txt").write_text("# the app\nrll_setup_probe==0.1\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHON": sys.executable,
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_CONFIG_FILE": os.devnull}
    first = subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, env=env, capture_output=True, text=True,
                           timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("setup [1/3]: creating .venv with Python")
    assert lines[1].startswith("setup [2/3]: installing 1 packages from requirements.txt")
    assert any("rll_setup_probe" in line and line.startswith(("Processing", "Collecting")) for line in lines)
    assert any(line.startswith("Successfully installed rll_setup_probe-0.1") for line in lines)
    assert lines[-1].startswith("setup [3/3]: done in ") and lines[-1].endswith(" s")
    probe = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c",
                            "import rll_setup_probe as p; print(p.VALUE)"], capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "42"
    again = subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == "setup: .venv is up to date (requirements.txt)"
