"""Reading the documentation's pages: which pages, their code blocks and prose, the shell commands
in them (``tests/docs/``' test files share these; no test here)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from conftest import REPO

from recsys_cli.commands import commands

FENCE = re.compile(r"^\s*```(\S*)\s*$")
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
# the verbs of the command registry (train, evaluate, prepare, ...)
VERBS = tuple(commands())


def doc_files() -> list[Path]:
    pages = [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "data" / "README.md"]
    return [p for p in pages if p.is_file()] + sorted((REPO / "docs").rglob("*.md"))


FENCE = re.compile(r"^\s*```(\S*)\s*$")
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
# the verbs of the command registry (train, evaluate, prepare, ...)
VERBS = tuple(commands())


@dataclass(frozen=True)
class Command:
    """One shell command of a page: where it is, and its text with continuations joined."""

    page: Path
    line: int
    text: str
    # from `inline code` in the prose, where a bare `recsys evaluate` names the command
    inline: bool = False

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}: {self.text}"


def split_page(text: str) -> tuple[list[tuple[str, int, list[str]]], list[tuple[int, str]]]:
    """The fenced code blocks of a page (language, first line number, lines) and its other lines."""
    blocks, prose = [], []
    block: tuple[str, int, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if block is None and fence:
            block = (fence.group(1), number + 1, [])
        elif block is not None and line.strip() == "```":
            blocks.append(block)
            block = None
        elif block is not None:
            block[2].append(line)
        else:
            prose.append((number, line))
    return blocks, prose


def shell_lines(first: int, lines: list[str]) -> list[tuple[int, str]]:
    """A bash block's commands: continuation lines joined, ``NAME="..."`` variables expanded."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, line in enumerate(lines):
        start, text = pending if pending else (first + offset, "")
        text += line
        if text.endswith("\\"):
            pending = (start, text[:-1] + " ")
            continue
        pending = None
        joined.append((start, text))
    variables: dict[str, str] = {}
    commands = []
    for number, text in joined:
        for name, value in variables.items():
            text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
        assignment = ASSIGNMENT.match(text.strip())
        if assignment:
            variables[assignment.group(1)] = " ".join(shlex.split(assignment.group(2)))
            continue
        if text.strip() and not text.strip().startswith("#"):
            commands.append((number, text.strip()))
    return commands


@cache
def page_commands(page: Path) -> tuple[Command, ...]:
    blocks, prose = split_page(page.read_text(encoding="utf-8"))
    commands = []
    for language, first, lines in blocks:
        if language in ("bash", "sh", "shell", "console"):
            commands += [Command(page, n, text) for n, text in shell_lines(first, lines)]
    for number, code in inline_code(prose):
        if code.startswith(("recsys ", "python scripts/", "bash scripts/")):
            commands.append(Command(page, number, code, inline=True))
    return tuple(commands)


def inline_code(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """`Inline code` spans of the prose, also those that wrap onto the next line (not across a
    blank line), as (line number, text with the line break as one space)."""
    spans = []
    paragraph: list[tuple[int, str]] = []
    for number, line in [*prose, (0, "")]:
        if line.strip():
            paragraph.append((number, line))
            continue
        text = "\n".join(t for _, t in paragraph)
        for match in re.finditer(r"`([^`]+)`", text):
            first = paragraph[text.count("\n", 0, match.start())][0]
            spans.append((first, " ".join(match.group(1).split())))
        paragraph = []
    return spans


def all_commands() -> list[Command]:
    return [c for page in doc_files() for c in page_commands(page)]


def tokens(text: str) -> list[str]:
    """Shell words, a ``<placeholder with spaces>`` kept as one word."""
    return shlex.split(re.sub(r"<[^<>]*>", "<placeholder>", text), comments=True)


def recsys_calls(words: list[str]) -> list[tuple[str, list[str]]]:
    """``(verb, arguments)`` of every ``recsys VERB`` in a command (also after
    ``torchrun ... --no-python`` or ``srun``, and inside a quoted argument)."""
    calls = []
    for i, word in enumerate(words):
        if word == "recsys" and i + 1 < len(words) and words[i + 1] in VERBS:
            calls.append((words[i + 1], words[i + 2 :]))
            break
        if " " in word and re.search(rf"\brecsys ({'|'.join(VERBS)})\b", word):
            calls += recsys_calls(tokens(word))
    return calls
