"""The docs hold together: every citation of a README or docs section names a file and a
heading that exist, the README stays a front page, and its two fresh-machine commands are the
ones CI runs.

Why: code comments, job files and pages cite sections by name (`README.md, "Tests"`,
`docs/recovery.md#exact-resume`, Markdown links), and a section that is renamed or moved
leaves its citations pointing nowhere; they were found stale twice before this test existed.
Headings are read as Markdown parses them (markdown-it, so a `# comment` in a code block is no
heading) and turned into anchors by GitHub's rules: lowercase, punctuation dropped, spaces to
`-`, a repeated heading suffixed `-1`, `-2`.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
README_MAX_LINES = 250
# Where citations live: the code, the job files, the docs and the files next to them.
SCANNED_DIRS = ("src", "jobs", "docs", "bench", "k8s", "docker", "tests", ".ci")
SCANNED_FILES = ("README.md", "pyproject.toml")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cpu", ""}  # "": Dockerfile, .ci/run
SELF = Path(__file__).resolve()  # its own examples of stale citations are not citations

_MD_FILE = r"(?:\.\./)*(?:[\w.-]+/)*[\w.-]+\.md"
# `README.md, "Section"`, `README's "Section"`, `docs/x.md, section "Section"`, `README ("Section")`.
QUOTED = re.compile(rf"(?P<file>{_MD_FILE}|README)(?:'s)?(?:,)?(?:\s+section)?\s+\(?\"(?P<section>[^\"]+)\"")
# `docs/x.md#anchor`, in prose, code or a link.
ANCHORED = re.compile(rf"(?P<file>{_MD_FILE})#(?P<anchor>[\w-]+)")
# A line break inside a citation, with the comment marker or indentation that continues it.
CONTINUATION = re.compile(r"[ \t]*\n[ \t]*(?:#+[ \t]*)?")


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def _markdown(path: Path) -> list:
    return MarkdownIt("commonmark").enable("table").parse(path.read_text())


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    tokens = _markdown(path)
    seen: Counter[str] = Counter()
    found = set()
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            text = "".join(child.content for child in tokens[i + 1].children or [])
            anchor = github_anchor(text)
            found.add(f"{anchor}-{seen[anchor]}" if seen[anchor] else anchor)
            seen[anchor] += 1
    return frozenset(found)


def _resolve(cited: str, citing: Path) -> Path | None:
    """A cited file, relative to the citing file's folder, else to the repository root."""
    name = "README.md" if cited == "README" else cited
    for base in (citing.parent, REPO):
        if (base / name).is_file():
            return (base / name).resolve()
    return None


def _check(citing: Path, cited: str, anchor: str | None, what: str) -> str | None:
    """None when `cited` (and its heading) exist, else why not."""
    target = _resolve(cited, citing) if cited else citing
    where = f"{citing.relative_to(REPO)}: {what}"
    if target is None:
        return f"{where}: no file {cited}"
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return f"{where}: {target.relative_to(REPO)} has no heading with anchor #{anchor}"
    return None


def text_citations(path: Path) -> list[tuple[str, str | None, str]]:
    """(file, anchor, as written) for every section citation in a file's text."""
    text = path.read_text(errors="replace")
    found = [(m["file"], m["anchor"], m[0]) for m in ANCHORED.finditer(text)]
    joined = CONTINUATION.sub(" ", text)
    found += [(m["file"], github_anchor(m["section"]), m[0]) for m in QUOTED.finditer(joined)]
    return found


def link_citations(path: Path) -> list[tuple[str, str | None, str]]:
    """(file, anchor, as written) for every relative link and image of a Markdown file."""
    found = []
    for token in _markdown(path):
        for child in token.children or []:
            target = child.attrs.get("href") or child.attrs.get("src")
            if not isinstance(target, str) or re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # none, or http:, mailto:, ...
            file, _, anchor = target.partition("#")
            found.append((file, anchor or None, f"({target})"))
    return found


def problems_in(path: Path) -> list[str]:
    cited = text_citations(path) + (link_citations(path) if path.suffix == ".md" else [])
    return [p for file, anchor, what in cited if (p := _check(path, file, anchor, what))]


def scanned_files() -> list[Path]:
    files = [REPO / name for name in SCANNED_FILES]
    for folder in SCANNED_DIRS:
        files += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in SUFFIXES]
    return sorted(p for p in files if p.resolve() != SELF and "__pycache__" not in p.parts
                  and "node_modules" not in p.parts)  # .ci/node: Azurite from npm (.ci/run)


def test_every_cited_file_and_section_exists():
    files = scanned_files()
    assert any(p.name == "kubetune_trainer.py" for p in files) and README in files
    problems = [problem for path in files for problem in problems_in(path)]
    assert not problems, "citations of missing files or sections:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Run on a cluster: kubectl", "run-on-a-cluster-kubectl"),
        ("The `kubernetes:` section", "the-kubernetes-section"),
        ("Tasks and the jobs shipped in `jobs/`", "tasks-and-the-jobs-shipped-in-jobs"),
        ("A store outage at a pod's start", "a-store-outage-at-a-pods-start"),
        ("Using a registered model: `--model`", "using-a-registered-model---model"),
    ],
)
def test_anchors_follow_githubs_rules(tmp_path, heading, anchor):
    page = tmp_path / "page.md"
    page.write_text(f"# {heading}\n\n## {heading}\n\n```sh\n# not a heading\n```\n")
    assert anchors(page) == {anchor, f"{anchor}-1"}


def test_the_checker_finds_stale_citations(tmp_path):
    """Each form of citation, once pointing at a heading that exists and once at one that does
    not (a Python comment broken over two lines included): only the stale ones are reported."""
    (tmp_path / "guide.md").write_text("# Guide\n\n## Exact resume\n\ntext\n")
    quote = '"'
    code = tmp_path / "module.py"
    code.write_text(
        f"# exact resume (guide.md, {quote}Exact\n# resume{quote}); stale: (guide.md, {quote}Preemption{quote}),\n"
        f"# guide.md ({quote}Tests{quote})\n"
        f"# also guide.md#exact-resume and guide.md#tests and missing.md#x\n"
    )
    page = tmp_path / "page.md"
    page.write_text("[ok](guide.md#exact-resume) [stale](guide.md#gone) [none](nowhere.md) [self](#no-such)\n")
    stale_code = [what for file, anchor, what in text_citations(code) if _stale(code, file, anchor)]
    stale_page = [what for file, anchor, what in link_citations(page) if _stale(page, file, anchor)]
    assert stale_code == ["guide.md#tests", "missing.md#x", f"guide.md, {quote}Preemption{quote}",
                          f"guide.md ({quote}Tests{quote}"]
    assert stale_page == ["(guide.md#gone)", "(nowhere.md)", "(#no-such)"]


def _stale(citing: Path, cited: str, anchor: str | None) -> bool:
    target = _resolve(cited, citing) if cited else citing
    return target is None or bool(anchor and anchor not in anchors(target))


def test_the_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move reference material into docs/"
    )


def _fresh_machine_commands() -> list[str]:
    """The one-line bash blocks under the README's "Fresh machine: the two commands"."""
    text = README.read_text()
    section = text.split("## Fresh machine: the two commands\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```bash\n(.+)\n```$", section, flags=re.MULTILINE)


def _steps(command: str) -> list[str]:
    """A command's steps without the flags that only change how much pip and pytest print."""
    return [" ".join(re.sub(r"--quiet|--durations=\d+", "", step).split()) for step in command.split("&&")]


CI_MARKER = "# README.md's test command"


def test_the_fresh_machine_commands_are_what_ci_and_the_install_test_run():
    """The README's second command, step by step, is `.ci/run` (which adds only `pip check`);
    the two commands install the extras `tests/project/test_install.py` resolves."""
    commands = _fresh_machine_commands()
    assert len(commands) == 2, commands
    train, tests = commands
    assert "pip install -c constraints.txt -e '.[train,quickstart]'" in train
    assert "kubetune run jobs/quickstart.yaml --local" in train
    assert "pip install -c constraints.txt -e '.[dev]'" in tests
    # .ci/run first gives this machine kind a container engine, then runs the README's command.
    text = (REPO / ".ci" / "run").read_text().split(CI_MARKER, 1)[1].split("\n", 1)[1]
    ci = [" ".join(line.split()) for line in text.splitlines()]
    ci_steps = [step for line in ci if line and not line.startswith(("#", "set ", "cd ")) for step in _steps(line)]
    assert [step for step in ci_steps if step != "pip check"] == _steps(tests)
    install_test = (REPO / "tests" / "project" / "test_install.py").read_text()
    assert '["train,quickstart", "dev"]' in install_test


def test_every_documented_kubetune_command_parses_and_its_spec_validates_and_renders(capsys):
    """Every `kubetune` command of the README's and docs/'s shell blocks (issue 28, point 4),
    placeholders filled in as `helpers_docs` says: the real parser takes it, the job file it
    names exists and validates with its `--set`s, and a command that renders or submits renders
    (`render` runs as written; `submit`'s objects are rendered as it would send them). What runs
    against a store runs for real in tests/e2e/test_watching_runs.py (the docs' journeys)."""
    from helpers_docs import doc_commands

    from kubetune.cli.main import build_parser, main
    from kubetune.contract import names as kn
    from kubetune.contract.spec.job import load_spec
    from kubetune.launch.render import render_objects

    commands = [c for c in doc_commands() if not c.setup]
    assert len(commands) >= 40 and {"render", "submit", "status", "runs", "models list", "retrain"} <= {c.verb for c in commands}
    failures = []
    for c in commands:
        try:
            args = build_parser().parse_args(c.argv)
        except SystemExit:
            failures.append(f"{c.where}: {c.written}: {capsys.readouterr().err.strip().splitlines()[-1]}")
            continue
        job = getattr(args, "job", None) or (args.name if c.verb == "status" and args.name.endswith(".yaml") else None)
        if job is None:
            continue
        if not (REPO / job).is_file():
            failures.append(f"{c.where}: {c.written}: no file {job}")
            continue
        spec = load_spec(REPO / job, getattr(args, "overrides", None) or [])
        if c.verb == "submit":
            render_objects(spec, stage=kn.STAGE_TRAIN, schedule=args.schedule)
        elif c.verb == "render":
            job_argv = [str(REPO / job) if word == job else word for word in c.argv]
            if main(job_argv) != 0:
                failures.append(f"{c.where}: {c.written}: {capsys.readouterr().err.strip()}")
    assert not failures, "\n".join(failures)


def test_the_readme_names_the_default_image_and_how_to_build_it():
    from kubetune.contract.spec.job import JobSpec

    readme = README.read_text()
    assert JobSpec.model_fields["image"].default in readme
    assert "docker build -f docker/Dockerfile " in readme and "docker/Dockerfile.cpu" in readme
