"""The command lines the README and docs/ tell a user to type, read from the pages themselves
(issue 28, point 4: every journey in the docs runs as written).

Every line of a fenced shell block (no language, `sh`, `bash` or `console`) is split into its
shell commands (`a && b`, `a | kubectl apply -f -`, `a; b`); each command that starts with the
word `kubetune` is one `DocCommand`. A `# comment` and an optional `[...]` part are dropped (the
command is tried without it). The docs' placeholders stand for the quickstart's own names, so a
journey can run against the quickstart store: `JOB`, `JOB.yaml` and `jobs/x.yaml` for
`jobs/quickstart.yaml`, the job names `x`, `NAME` and `RUN` for `quickstart`, and `--input URI
--output URI` for the quickstart's test file and a `predictions/` folder. Other documented setup
lines of those blocks (`mkdir -p`, `cp`) are kept in order as `setup` commands, so a journey that
puts files in place first (docs/retraining.md, "Try it on this machine") can run as written.

Why by hand rather than a Markdown library: only fences and their first word matter, and the
fence rules kubetune's docs use (three backticks, an info word) are two lines of code.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from helpers import REPO

PAGES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
SHELL_BLOCKS = ("", "sh", "bash", "console", "shell")
SETUP_COMMANDS = ("mkdir", "cp")
SEPARATORS = ("&&", "||", "|", ";")

PLACEHOLDERS = {"JOB": "jobs/quickstart.yaml", "JOB.yaml": "jobs/quickstart.yaml", "jobs/x.yaml": "jobs/quickstart.yaml",
                "x": "quickstart", "NAME": "quickstart", "RUN": "quickstart"}
AFTER_OPTION = {("--input", "URI"): "datasets/quickstart/test.tsv", ("--output", "URI"): "predictions/"}


@dataclass(frozen=True)
class DocCommand:
    """One command as a page writes it (`where`: page and line), and its words after the program
    name with the placeholders filled in (`argv`). `setup` commands (mkdir, cp) are not kubetune's."""

    where: str
    written: str
    argv: list[str] = field(hash=False)
    setup: bool = False

    @property
    def verb(self) -> str:
        """`models list`, `status`, ...: the subcommand, with the `models` family's second word."""
        return " ".join(self.argv[:2]) if self.argv[0] == "models" else self.argv[0]


def _fenced_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line inside a fenced shell block."""
    out, inside, shell = [], False, False
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*(\S*)", line)
        if fence:
            inside, shell = (not inside, fence.group(1) in SHELL_BLOCKS) if not inside else (False, False)
            continue
        if inside and shell:
            out.append((number, line))
    return out


def _words(line: str) -> list[str]:
    """The words of a line, its `# comment` and `[optional]` parts dropped, the separators
    (`&&`, `|`, `;`) as words of their own."""
    line = re.sub(r"(^|\s)#.*$", "", line)
    line = re.sub(r"\s\[[^\]]*\]", "", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    return list(lexer)


def _filled(words: list[str]) -> list[str]:
    out = []
    for i, word in enumerate(words):
        before = words[i - 1] if i else ""
        out.append(AFTER_OPTION.get((before, word)) or PLACEHOLDERS.get(word, word))
    return out


def page_commands(page: Path) -> list[DocCommand]:
    """The kubetune and setup commands of one page, in the page's order."""
    name = page.relative_to(REPO).as_posix()
    commands = []
    for number, line in _fenced_lines(page.read_text()):
        try:
            words = _words(line)
        except ValueError:  # an unbalanced quote: an output line, not a command
            continue
        command: list[str] = []
        for word in [*words, ";"]:
            if word not in SEPARATORS:
                command.append(word)
                continue
            if command and command[0] == "kubetune":
                commands.append(DocCommand(f"{name}:{number}", line.strip(), _filled(command[1:])))
            elif command and command[0] in SETUP_COMMANDS:
                commands.append(DocCommand(f"{name}:{number}", line.strip(), command, setup=True))
            command = []
    return commands


def doc_commands() -> list[DocCommand]:
    """Every page's commands (README.md, then docs/*.md)."""
    return [c for page in PAGES for c in page_commands(page)]
