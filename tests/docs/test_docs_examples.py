"""Every code block of README.md and docs/*.md, tried as written.

Convention (README.md states it too, under "Documentation"):

- A ```python block runs as written: on its own (its own imports and names; nothing carries over from an
  earlier block: each gets a fresh namespace), in a fresh temporary working directory, so files it writes
  (``runs/...``) go there. Every block makes what it reads (synthetic data, a small run directory) itself.
  Each runs in seconds on 2 CPU cores; the durations are printed at the end of the session (``-s`` shows them).
- A block preceded by ``<!-- example: not run (REASON) -->`` is not run, for the reason given (released
  checkpoints that are not shipped, a run of many minutes). It must still compile, and every name it imports
  from mimlens must exist.
- Every ``mimlens ...`` command line of a ```bash / ```console block (also after ``torchrun ... -m`` or a
  ``$`` prompt, continued with ``\\``, comments removed) is parsed by the real argument parser: the
  subcommand, every flag and every value's type and choice exist as written. Commands are not run: most
  train or analyse for minutes. Other programs (``make``, ``python benchmarks/...``, ``xdg-open``) are left
  alone. Synopses with ``[...]`` and ``{a,b}`` live in ```text blocks.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import os
import re
import shlex
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
NOT_RUN = re.compile(r"<!-- example: not run \(([^)]+)\) -->\s*$")
TIMES: dict[str, tuple[float, float]] = {}


def blocks(languages: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    """``(where, code, reason not run or None)`` of every fenced block in one of ``languages``."""
    found = []
    for path in FILES:
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) not in languages:
                continue
            line = text.count("\n", 0, match.start()) + 1
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            reason = NOT_RUN.search(before)
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(2), reason.group(1) if reason else None))
    return found


PYTHON = blocks(("python",))
SHELL = blocks(("bash", "sh", "console", "shell"))


@pytest.fixture(scope="module", autouse=True)
def durations():
    yield
    print("\ndocs examples: wall and CPU seconds")
    for where, (wall, cpu) in sorted(TIMES.items(), key=lambda item: -item[1][0]):
        print(f"  {wall:6.1f} {cpu:6.1f}  {where}")


@pytest.mark.parametrize(("where", "code", "reason"), PYTHON, ids=[b[0] for b in PYTHON])
def test_python_example_runs_as_written(where, code, reason, tmp_path, monkeypatch):
    compiled = compile(code, where, "exec")
    if reason is not None:
        assert len(reason) > 10, f"{where}: say why the example is not run"
        check_mimlens_imports(where, code)
        return
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compiled, {"__name__": "__main__"})
    TIMES[where] = (time.perf_counter() - start, time.process_time() - cpu)


def check_mimlens_imports(where: str, code: str) -> None:
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mimlens"):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name) and not submodule(node.module, a.name)]
            assert not missing, f"{where}: {node.module} has no {missing}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mimlens"):
                    importlib.import_module(alias.name)


def submodule(package: str, name: str) -> bool:
    try:
        importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError:
        return False
    return True


def command_lines(code: str) -> list[str]:
    """The command lines of a shell block: continuations joined, comments dropped; console blocks: ``$`` lines."""
    console = any(line.startswith("$ ") for line in code.splitlines())
    lines, current = [], []
    for raw in code.splitlines():
        if console and not current:
            if not raw.startswith("$ "):
                continue
            raw = raw[2:]
        current.append(raw.strip().removesuffix("\\").strip())
        if not raw.rstrip().endswith("\\"):
            lines.append(" ".join(current))
            current = []
    return [line for line in lines if line]


def mimlens_argv(line: str) -> list[str] | None:
    """The arguments after ``mimlens`` (or ``-m mimlens``) of a command line, or None for another program."""
    words = shlex.split(line, comments=True)
    while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value before the command
        words.pop(0)
    if words[:1] == ["mimlens"]:
        return words[1:]
    if "-m" in words and words[words.index("-m") + 1:words.index("-m") + 2] == ["mimlens"]:
        return words[words.index("-m") + 2:]
    return None


def test_shell_examples_name_real_commands_and_flags():
    from mimlens.cli import build_parser

    checked, wrong = 0, []
    for where, code, _ in SHELL:
        for line in command_lines(code):
            argv = mimlens_argv(line)
            if argv is not None:
                checked += 1
                problem = parse_problem(build_parser(), argv)
                if problem:
                    wrong.append(f"{where}: {line}\n    {problem}")
    assert not wrong, "\n".join(wrong)
    assert checked > 40


def parse_problem(parser, argv: list[str]) -> str:
    """What the parser says against ``argv`` ("" when it parses), a shortened flag counting as wrong too."""
    with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.suppress(SystemExit):
        parser.parse_args([os.path.expanduser(a) for a in argv])
    if err.getvalue():
        return err.getvalue().strip().splitlines()[-1]
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    known = {flag for action in commands[argv[0]]._actions for flag in action.option_strings}
    short = [w.split("=", 1)[0] for w in argv[1:] if w.startswith("--") and w.split("=", 1)[0] not in known]
    return f"not a flag of mimlens {argv[0]} as written: {short}" if short else ""


def test_the_parser_check_can_fail():
    from mimlens.cli import build_parser

    assert parse_problem(build_parser(), mimlens_argv("mimlens analyze vit-tiny-64 --num-imagez 5")) == (
        "mimlens: error: unrecognized arguments: --num-imagez 5")
    assert parse_problem(build_parser(), mimlens_argv("mimlens analyze vit-tiny-64 --num-image 5")) == (
        "not a flag of mimlens analyze as written: ['--num-image']")
    bad_value = parse_problem(build_parser(), mimlens_argv("mimlens masks --ratio high"))
    assert bad_value.endswith("invalid float value: 'high'")
    assert parse_problem(build_parser(), mimlens_argv("OMP_NUM_THREADS=1 mimlens masks --ratio 0.5")) == ""
    assert command_lines("$ mimlens report a \\\n  --out b\nreport: b/report.html\n") == ["mimlens report a --out b"]
