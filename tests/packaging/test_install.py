"""``pip install .`` into a clean venv gives a working ``labguard`` and nothing but the product.

Needs the package index (pip's cache makes it quicker); about a minute on the 2-core machine, so it is
marked ``install`` (``make test`` runs it; ``pytest -m 'not install'`` leaves it out).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]

pytestmark = pytest.mark.install

CHECK_IMPORTS = """
import importlib.util, json
print(json.dumps({name: importlib.util.find_spec(name) is not None
                  for name in ("shared", "handlers", "labguard", "function_app",
                               "devtools", "emulator", "bench", "tests", "typer", "pytest")}))
"""


def clean_env() -> dict[str, str]:
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("LABGUARD_")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no pip of its own) with the checkout's tracked files installed by this venv's pip."""
    work = tmp_path_factory.mktemp("install")
    src = work / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    done = subprocess.run(
        [*pip, "install", "--quiet", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "labguard"), *args], capture_output=True, text=True, env=clean_env(), cwd=cwd, timeout=60
    )


def test_labguard_runs_help_version_and_check_policy(installed: Path, tmp_path: Path) -> None:
    help_ = run(installed, "--help", cwd=tmp_path)
    assert help_.returncode == 0, help_.stderr
    assert all(command in help_.stdout for command in ("audit", "enforce", "check-policy"))
    version = run(installed, "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout.strip()) == (0, f"labguard {VERSION}")
    (tmp_path / "policy.yaml").write_text((ROOT / "policy.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    check = run(installed, "check-policy", "policy.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "valid" in check.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: sometimes\n", encoding="utf-8")
    refused = run(installed, "check-policy", str(bad), cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


def test_the_install_holds_the_product_and_its_dependencies_only(installed: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [str(installed / "bin" / "python"), "-I", "-c", CHECK_IMPORTS],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
        check=True,
    )
    assert found.stdout.strip() == (
        '{"shared": true, "handlers": true, "labguard": true, "function_app": true, '
        '"devtools": false, "emulator": false, "bench": false, "tests": false, '
        '"typer": true, "pytest": false}'
    )
