"""Every fenced code block of README.md and docs/ runs (at tiny sizes where a directive says so)
or states why not; the site's navigation, command-line reference and performance table are
complete. The example notebooks run in tests/test_examples.py."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from _docs import DATA, ROOT, RUNNABLE, all_blocks, blocks, documents

#: Files a document's blocks read, put in its working directory first (the documents say
#: where they come from: e.g. `centralpath train --out runs/digits`).
FIXTURES = {
    "docs/guides/simulate.md": {
        "runs/digits/features.npz": ROOT / "tests" / "data" / "digits_mlp_final.npz"
    },
}
_TORCH_BLOCK = re.compile(r"^\s*(import torch|from centralpath\.torch )", re.M)
LAUNCH = "import sys, centralpath_launch; sys.exit(centralpath_launch.main())"


def _env() -> dict:
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(args, cwd, where: str) -> None:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{where}: {shlex.join(map(str, args))}\n{proc.stderr[-3000:]}"


def _commands(code: str) -> list[str]:
    """The shell block's commands: continuation lines joined, comments and blanks dropped."""
    return [
        c.strip()
        for c in code.replace("\\\n", " ").splitlines()
        if c.strip() and not c.lstrip().startswith("#")
    ]


def test_every_block_runs_or_says_why_not():
    problems = []
    for b in all_blocks():
        if b.language not in RUNNABLE | DATA:
            problems.append(
                f"{b.where}: fence language {b.language!r}; use one of {sorted(RUNNABLE | DATA)}"
            )
        if b.not_run is not None and len(b.not_run) < 10:
            problems.append(f"{b.where}: 'not run' needs a reason")
        if b.language == "bash" and b.not_run is None:
            for command in _commands(b.code):
                if not command.startswith("centralpath "):
                    problems.append(
                        f"{b.where}: {command!r} is not a centralpath command; mark the block not run, with a reason"
                    )
        if b.tiny is not None and b.language != "bash":
            problems.append(f"{b.where}: a tiny directive applies to bash blocks only")
    assert problems == []


def test_the_directives_are_read():
    """The parser sees the README's two not-run set-up commands and its tiny quickstart."""
    readme = blocks(ROOT / "README.md")
    setup = [b for b in readme if "pip install" in b.code]
    assert len(setup) == 2 and all(b.not_run for b in setup)
    assert any(b.tiny == {"train": ["--epochs", "4", "--num-checkpoints", "4"]} for b in readme)


# Runs every command of the pages in fresh processes (~1 CPU-minute): the slow tier, which CI
# runs after the default one.
@pytest.mark.slow
@pytest.mark.parametrize(
    "document",
    [
        p
        for p in documents()
        if any(b.language in RUNNABLE and b.not_run is None for b in blocks(p))
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_document_blocks_run(document, tmp_path):
    """A document's blocks run in order in one working directory (a later block may read what
    an earlier one wrote), python blocks in a fresh interpreter, commands through the program's
    own entry point."""
    for rel, source in FIXTURES.get(str(document.relative_to(ROOT)), {}).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, tmp_path / rel)
    for k, b in enumerate(blocks(document)):
        if b.not_run is not None or b.language not in RUNNABLE:
            continue
        if b.language == "python":
            if _TORCH_BLOCK.search(b.code) and importlib.util.find_spec("torch") is None:
                continue  # PyTorch is an optional extra (pip install -e ".[torch]")
            script = tmp_path / f"block_{k}.py"
            script.write_text(b.code)
            _run([sys.executable, str(script)], tmp_path, b.where)
            continue
        for command in _commands(b.code):
            args = shlex.split(command)[1:]
            args += (b.tiny or {}).get(args[0], [])
            _run([sys.executable, "-c", LAUNCH, *args], tmp_path, b.where)


def test_the_navigation_lists_every_page_and_example():
    import re

    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:\n", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r":\s+(\S+\.(?:md|py))\s*$", nav, re.M))
    docs = ROOT / "docs"
    wanted = {str(p.relative_to(docs)) for p in documents() if docs in p.parents}
    wanted -= {"reference/performance-table.md"}
    wanted |= {str(p.relative_to(docs)) for p in (docs / "examples").glob("*.py")}
    assert wanted - listed == set() and listed - wanted == set()


def test_the_command_line_reference_lists_every_subcommand_and_flag():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    import argparse

    from centralpath.cli import build_parser

    page = hooks.cli_reference()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 8
    for name, parser in sub.choices.items():
        section = page.split(f"## `centralpath {name}`", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for flag in action.option_strings:
                if (
                    flag in ("-h", "--help")
                    or flag.startswith("--no-")
                    and isinstance(action, argparse.BooleanOptionalAction)
                ):
                    continue
                assert f"`{flag}" in section, (name, flag)
    # A Config option's default comes from its declaration, not argparse's None.
    simulate = page.split("## `centralpath simulate`", 1)[1].split("\n## ", 1)[0]
    assert "| `--t-end T_END` | `10000.0` |" in simulate


def test_the_performance_table_is_written_by_bench_all(tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import bench_all
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    results = [
        {"name": "demo", "rows": [{"name": "a|b", "seconds": 0.5, "ratio": 2.0, "met": True}]}
    ]
    text = bench_all.markdown_table(results, "tiny", ["--profile", "tiny"])
    assert text.startswith("<!-- Written by experiments/bench_all.py --markdown")
    assert "| demo: a\\|b | 0.5 | - | 2 | - | yes | - | - |" in text
    shipped = (ROOT / "docs" / "reference" / "performance-table.md").read_text()
    assert shipped.startswith("<!-- Written by experiments/bench_all.py --markdown")
    assert (
        '--8<-- "docs/reference/performance-table.md"'
        in (ROOT / "docs" / "reference" / "performance.md").read_text()
    )
