"""docs/cli.md documents the real parser: every flag and every choice of every command, in that command's section."""

import argparse
import re
from pathlib import Path

import pytest

from mimlens.cli import build_parser
from mimlens.tasks.registry import TASKS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def section(name: str) -> str:
    """The text of ``## `mimlens NAME` ...`` up to the next section."""
    match = re.search(rf"^## `mimlens {name}`.*?(?=^## |\Z)", DOCS.read_text(), re.M | re.S)
    assert match, f"docs/cli.md has no section '## `mimlens {name}`'"
    return match.group(0)


def mentioned(word: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


@pytest.mark.parametrize("name", list(commands()))
def test_every_flag_and_choice_is_documented_in_its_section(name):
    text = section(name)
    actions = [a for a in commands()[name]._actions if not isinstance(a, argparse._HelpAction)]
    flags = [flag for a in actions for flag in a.option_strings]
    choices = [str(choice) for a in actions for choice in (a.choices or ())]
    missing = [word for word in flags + choices if not mentioned(word, text)]
    assert not missing, f"docs/cli.md, section mimlens {name}, does not mention {missing}"


def test_every_finetune_task_is_documented():
    text = section("finetune")
    assert [task for task in TASKS if f"`{task}`" not in text] == []
    synopsis = DOCS.read_text().split("```text", 1)[1].split("```", 1)[0]
    assert f"{{{','.join(TASKS)}}}" in synopsis


def test_every_command_has_a_synopsis_line():
    synopsis = DOCS.read_text().split("```text", 1)[1].split("```", 1)[0]
    assert [name for name in commands() if f"mimlens {name} " not in synopsis] == []
