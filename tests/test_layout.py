"""The repository's shape: the top level the README promises, and every tool plugged into samkit."""

import importlib
import subprocess
from pathlib import Path

import pytest

from projects.cli import TOOLS

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_is_exactly_the_documented_one():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert tracked, "run from a git checkout (CI clones the repository)"
    top = {path.split("/")[0] for path in tracked}
    assert top == {".ci", ".gitignore", "Makefile", "README.md", "projects", "pyproject.toml", "requirements",
                   "shared", "tests"}


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_has_readme_demo_bench_and_make_target(tool):
    folder = ROOT / "projects" / tool
    assert (folder / "README.md").is_file()
    demo = importlib.import_module(f"projects.{tool}.demo")
    bench = importlib.import_module(f"projects.{tool}.bench")
    assert callable(demo.make_data) and callable(demo.run_demo) and callable(bench.run_bench)
    assert f"$(SAMKIT) demo {tool}" in (ROOT / "Makefile").read_text()
