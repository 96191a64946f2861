"""docs/extending.md stays true: every python block runs as written, in a fresh process (so the
examples' registrations never touch this session's registries), and every path it names exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"example_{index}.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "each example prints what it made"


def test_named_source_paths_exist() -> None:
    for path in set(re.findall(r"`(src/placement[\w/.<>-]*\.py|tests/[\w.]+\.py)`", PAGE.read_text("utf-8"))):
        if "<" not in path:
            assert (ROOT / path).exists(), f"docs/extending.md names missing {path}"
