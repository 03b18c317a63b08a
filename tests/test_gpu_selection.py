"""`pytest -m gpu` on a machine or a selection where it would test nothing fails, not passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def gpu_run(*arguments: str) -> subprocess.CompletedProcess:
    """``pytest -m gpu --collect-only`` with no GPU visible."""
    return subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q",
                           *arguments], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=os.environ | {"CUDA_VISIBLE_DEVICES": ""})


def test_a_gpu_run_that_selects_no_test_fails():
    done = gpu_run("tests/test_parsing.py")
    assert done.returncode == 1
    assert "`pytest -m gpu` selected no test" in done.stdout + done.stderr


def test_a_gpu_run_without_a_gpu_fails():
    done = gpu_run("tests/test_gpu.py")
    assert done.returncode == 1
    assert "needs a CUDA GPU and none is visible" in done.stdout + done.stderr
