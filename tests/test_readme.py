"""The README's new-game example, run exactly as written: the module file, then the usage."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_block(marker: str) -> str:
    """The fenced python block right after ``<!-- marker -->`` in the README."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, f"README has no python block after <!-- {marker} -->"
    return match.group(1)


def test_new_game_example(tmp_path):
    (tmp_path / "my_games.py").write_text(readme_block("file: my_games.py"))
    (tmp_path / "run.py").write_text(readme_block("run"))
    result = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120,
                            env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\{'player_1': [01]\.0\}\n", result.stdout), result.stdout
