"""The registry's checks (ruff's security rules S102/S307, E702) and the pack's own lint rules."""

import subprocess
import sys

from conftest import PACK_DIR


def test_ruff_finds_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", PACK_DIR], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
