"""The fenced code blocks of README.md and docs/: parsed once, shared by the tests that run them.

A block is preceded (on its own line, blank lines allowed between) by at most one directive:
`<!-- not run: REASON -->` (the block is not run, and REASON says why) or
`<!-- tiny: CMD FLAGS; CMD FLAGS -->` (flags appended to every `centralpath CMD` line of the
block, so the test runs the command at tiny sizes; argparse lets a later flag override an
earlier one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Languages that run: python blocks in a fresh interpreter, bash blocks line by line.
RUNNABLE = {"python", "bash"}
#: Languages that are data, not code: a directory tree, a TOML file, a citation, a JSON sample.
DATA = {"text", "toml", "bibtex", "json"}
_DIRECTIVE = re.compile(r"^<!--\s*(not run|tiny):\s*(.*?)\s*-->$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None = None  # the stated reason
    tiny: dict[str, list[str]] | None = None  # subcommand -> flags appended

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    generated = {ROOT / "docs" / "reference" / "performance-table.md"}
    return [ROOT / "README.md"] + sorted(
        p for p in (ROOT / "docs").rglob("*.md") if p not in generated
    )


def blocks(path: Path) -> list[Block]:
    out: list[Block] = []
    lines = path.read_text().splitlines()
    directive = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _DIRECTIVE.match(line.strip())
        if m:
            directive = (m.group(1), m.group(2), i + 1)
        elif line.startswith("```"):
            language = line[3:].strip()
            start = i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            block = Block(path, start + 1, language, "\n".join(body) + "\n")
            if directive is not None:
                kind, value, _ = directive
                if kind == "not run":
                    block.not_run = value
                else:
                    block.tiny = {}
                    for part in value.split(";"):
                        command, *flags = part.split()
                        block.tiny[command] = flags
            directive = None
            out.append(block)
        elif line.strip() and directive is not None:
            raise ValueError(
                f"{path.relative_to(ROOT)}:{directive[2]}: a directive must come right before "
                "a fenced block"
            )
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for p in documents() for b in blocks(p)]
