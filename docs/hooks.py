"""mkdocs hooks: the command-line reference is generated from the parsers (which the `Config`
declarations populate), and the table of measured quantities and the JSON Schema of
`analyze --json` from `centralpath._quantities`, so the pages cannot drift from the program."""

from __future__ import annotations

import argparse
import re

MARKER = "<!-- cli-reference -->"
QUANTITIES_MARKER = "<!-- quantities -->"
#: Where the site serves the generated schema (linked from the file-formats page).
SCHEMA_URI = "reference/analyze.schema.json"
_DEFAULT_SUFFIX = re.compile(r" \(default [^()]*(\([^()]*\)[^()]*)*\)$")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _shown(value) -> str:
    if value is None or value is argparse.SUPPRESS:
        return "–"
    if isinstance(value, list):
        return "`" + ",".join(map(str, value)) + "`" if value else "(none)"
    return f"`{value}`"


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest.upper()}`"
    names = list(action.option_strings)
    if isinstance(action, argparse.BooleanOptionalAction):
        names = [n for n in names if not n.startswith("--no-")]
        names = [f"{n}, --no-{n[2:]}" for n in names]
    metavar = ""
    if action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction):
        metavar = " " + (action.metavar or action.dest.upper())
    return ", ".join(f"`{n}{metavar}`" for n in names)


def cli_reference() -> str:
    from centralpath.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = [
        "Generated when the site is built from the program's own parsers (the `Config` "
        "declarations add most flags), so it lists what `centralpath COMMAND --help` prints. "
        "Every flag of a configured command is also a key of its `--config FILE.toml` "
        "(the flag's name with `_` for `-`); flags override the file, the file overrides "
        "the defaults.",
        "",
        "Exit status: 0 success, 2 usage error or bad input (one line, no traceback; "
        "`--debug` shows it), 1 runtime failure, 130 interrupted. "
        "`centralpath --version` prints the installed version.",
        "",
    ]
    for name, p in sub.choices.items():
        lines += [f"## `centralpath {name}`", "", _cell(p.description or ""), ""]
        if p.epilog:
            example = p.epilog.split("\n", 1)[-1].strip()
            lines += ["Example:", "", "```text", example, "```", ""]
        lines += ["| argument | default | help |", "|---|---|---|"]
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            help_text = action.help or ""
            declared = _DEFAULT_SUFFIX.search(help_text)
            if declared:  # a Config option: its default lives in the declaration, shown in help
                default = "`" + declared.group(0)[len(" (default ") : -1] + "`"
                help_text = help_text[: declared.start()]
            elif action.nargs == 0:  # a switch
                default = "off"
            else:
                default = _shown(action.default)
            if action.choices and "|" not in help_text and not isinstance(action.choices, range):
                help_text = " | ".join(map(str, action.choices)) + f": {help_text}"
            lines.append(f"| {_flags(action)} | {_cell(default)} | {_cell(help_text)} |")
        lines.append("")
    return "\n".join(lines)


def quantities_table() -> str:
    """Every key of a record of `analyze --json`, with its meaning, unit and JSON value."""
    from centralpath._quantities import BY_NAME, JSON_RECORD_KEYS, RECORD_FROM_FILE

    shown = {"number": "number or null", "boolean": "true/false", "vector": "list of numbers"}
    lines = ["| key | meaning | unit | JSON |", "|---|---|---|---|"]
    for key in JSON_RECORD_KEYS:
        q = BY_NAME[key]
        meaning = q.description + (" (only when the file has it)" if key in RECORD_FROM_FILE else "")
        lines.append(f"| `{key}` | {_cell(meaning)} | {_cell(q.unit)} | {shown[q.kind]} |")
    return "\n".join(lines)


def schema_json() -> str:
    import json

    from centralpath._quantities import record_schema

    return json.dumps(record_schema(), indent=2, ensure_ascii=False) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    if QUANTITIES_MARKER in markdown:
        markdown = markdown.replace(QUANTITIES_MARKER, quantities_table())
    return markdown


#: Figures of the repository shown on the site, taken from where the experiments write them
#: (never copied into docs/, so a regenerated figure is the one shown).
FIGURES = {"assets/omega.png": "figures/closed_form/figures/omega.png"}


def on_files(files, config):
    from pathlib import Path

    from mkdocs.structure.files import File

    root = Path(config["config_file_path"]).parent
    for uri, source in FIGURES.items():
        files.append(File.generated(config, uri, abs_src_path=str(root / source)))
    files.append(File.generated(config, SCHEMA_URI, content=schema_json()))
    return files
