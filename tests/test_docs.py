"""README quick start and CI stay in step; documentation links resolve."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_quick_start_has_two_commands():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert "placement solve" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in ci.splitlines()]
    assert _quick_start_commands()[1] in lines


def test_quick_start_inputs_exist():
    solve = _quick_start_commands()[0]
    trace = re.search(r"--trace (\S+)", solve).group(1)
    assert (ROOT / trace).is_file()


def test_markdown_links_resolve():
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "data").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            assert (md.parent / target).exists(), f"{md.relative_to(ROOT)} links to missing {target}"


def test_cli_reference_documents_every_command_and_option():
    from placement.cli import build_parser
    from placement.cli.reference import iter_commands

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, parser in iter_commands(build_parser()):
        assert f"## `{name}`" in text, f"docs/cli.md lacks {name}; run python -m placement.cli.reference > docs/cli.md"
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in text, f"docs/cli.md lacks {name} {flag}; regenerate it"


def test_cli_reference_is_the_generated_text():
    """docs/cli.md is exactly what ``python -m placement.cli.reference`` prints (choices included, e.g. a new
    method in --method), so it cannot go stale."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "placement.cli.reference"], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.stdout == (ROOT / "docs" / "cli.md").read_text(encoding="utf-8"), (
        "docs/cli.md is stale; run python -m placement.cli.reference > docs/cli.md")


def test_readme_python_example_runs_from_any_directory(monkeypatch, capsys, tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## Python\n\n```python\n(.*?)```", text, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)  # not the repository root: the example reaches the samples through placement.data
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "round_robin" in out and "contiguous" in out and "fastest: " in out
    assert list(tmp_path.iterdir()) == []  # and writes nothing
