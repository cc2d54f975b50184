"""The arguments the verb families share (`cli.arguments`): parsed the same way by every verb that
takes them, and the store they name."""

from __future__ import annotations

import argparse

import pytest
import yaml

from kubetune.cli.arguments import (DEFAULT_STORE, STAGE_HELP, add_model_arg, add_predict_args, add_spec_args,
                                    add_store_args, open_store)
from kubetune.cli.main import build_parser
from kubetune.contract.errors import UserError


def _verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(verb words, its parser) for every leaf verb of `kubetune`, `models list` included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _verbs(sub, (*prefix, name))
            return
    yield prefix, parser


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions}


def test_spec_arguments_parse_a_job_and_repeated_overrides():
    parser = argparse.ArgumentParser()
    add_spec_args(parser)
    args = parser.parse_args(["jobs/x.yaml", "--set", "train.epochs=1", "--set", "train.seed=3"])
    assert args.job == "jobs/x.yaml" and args.overrides == ["train.epochs=1", "train.seed=3"]
    assert parser.parse_args(["jobs/x.yaml"]).overrides == []  # a fresh list per parse, never shared


def test_every_verb_that_reads_a_spec_takes_it_the_same_way():
    reference = argparse.ArgumentParser()
    add_spec_args(reference)
    expected = {dest: (a.help, a.metavar, a.default) for dest, a in _options(reference).items() if dest != "help"}
    spec_verbs = []
    for verb, parser in _verbs(build_parser()):
        options = _options(parser)
        if "overrides" in options:
            spec_verbs.append(" ".join(verb))
            assert {d: (options[d].help, options[d].metavar, options[d].default) for d in expected} == expected, verb
    assert set(spec_verbs) == {"validate", "render", "run", "submit", "retrain", "sweep",
                               "models list", "models show", "models promote", "models rollback"}


def test_model_and_stage_read_the_same_in_every_verb():
    for verb, parser in _verbs(build_parser()):
        options = _options(parser)
        if "model" in options:
            assert options["model"].metavar == "REF" and options["model"].default is None, verb
            assert "current, a registry version vNNNN, or a run name" in options["model"].help, verb
        if "stage" in options:
            assert options["stage"].help.startswith(STAGE_HELP), verb


def test_the_predict_arguments_bring_model_along():
    parser = argparse.ArgumentParser()
    add_predict_args(parser)
    args = parser.parse_args(["--input", "in.jsonl", "--output", "out/", "--format", "parquet", "--model", "v0001"])
    assert (args.input, args.output, args.format, args.model) == ("in.jsonl", "out/", "parquet", "v0001")
    evaluate_only = argparse.ArgumentParser()
    add_model_arg(evaluate_only, with_predict=False)
    assert _options(evaluate_only)["model"].help.startswith("--stage evaluate: ")


def _store_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", default=None)
    add_store_args(parser)
    return parser.parse_args(list(argv))


def test_open_store_reads_store_then_spec_then_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_store(_store_args()).root.rstrip("/").endswith(DEFAULT_STORE)
    assert open_store(_store_args("--store", str(tmp_path / "s"))).root.rstrip("/").endswith("/s")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "j", "model": {"source": "m"}, "data": {"train": "t.tsv"},
                                   "storage": {"root": str(tmp_path / "from-spec")}}))
    assert open_store(_store_args("--job", str(job))).root.rstrip("/").endswith("/from-spec")
    with pytest.raises(UserError, match="^give either --store URI or a JOB.yaml, not both$"):
        open_store(_store_args("--job", str(job), "--store", "elsewhere"))
