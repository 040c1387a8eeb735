"""What the README's "1. Install" says `make` installs: `make demo` only the runtime
requirements, `make test` the development ones (which include them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = ("prod_requirements.txt", "dev_requirements.txt", "postgres_requirements.txt")


def _dry_run(tmp_path: Path, target: str) -> list[str]:
    """The commands ``make -n target`` would run in a fresh copy (no .venv yet)."""
    for name in ("Makefile", *REQUIREMENTS):
        shutil.copy(REPO / name, tmp_path / name)
    # Under `make test-all` the outer make's variables would turn this into its sub-make.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_installs_only_the_runtime_requirements(tmp_path):
    commands = _dry_run(tmp_path, "demo")
    installs = [c for c in commands if " install " in c and " -r " in c]
    assert installs and all(c.endswith("-r prod_requirements.txt") for c in installs)
    assert not any("dev_requirements" in c for c in commands)
    assert commands[-1].endswith("demo.py --dir demo")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_installs_the_development_requirements(tmp_path):
    commands = _dry_run(tmp_path, "test")
    assert any(c.endswith("-r dev_requirements.txt") for c in commands)
    assert "-r prod_requirements.txt" in (REPO / "dev_requirements.txt").read_text()
