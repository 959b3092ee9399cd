"""The environment that scripts/setup.sh builds is complete: t2a-doctor passes every check."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.ros


def test_doctor_reports_ready():
    exe = shutil.which("t2a-doctor")
    assert exe, "t2a-doctor console script is not installed (run make setup)"
    result = subprocess.run([exe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "environment ready" in result.stdout
