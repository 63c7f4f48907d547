"""Data specs as every command takes them (``--data``), checked without importing torch, so a typo costs no
start-up time: ``synthetic`` / ``synthetic:N`` (generated scenes or sequences), ``photos`` / ``photos:N`` (crops
of the bundled photos) or a directory.

A bare ``synthetic`` or ``photos`` means :data:`DEFAULT_COUNTS` items, the same in every reader; where a folder of
that name exists in the working directory, the bare word is refused as ambiguous (``./photos`` names the folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mimlens.errors import MimlensError

DEFAULT_COUNTS = {"synthetic": 2048, "photos": 1000}


@dataclass(frozen=True)
class DataSpec:
    kind: str  # synthetic | photos | folder
    count: int | None = None  # generated items
    path: Path | None = None  # folder


def parse_data_spec(spec: str | Path, *, generated: tuple[str, ...] = ("synthetic", "photos")) -> DataSpec:
    """Read a data spec; ``generated``: the generated kinds this command accepts. A folder must exist."""
    text = str(spec)
    name, _, count = text.partition(":")
    if name in DEFAULT_COUNTS:
        if not _ and Path(text).is_dir():
            other = f", or {text}:N for N generated items" if name in generated else ""
            raise MimlensError(f"data spec {text!r} is ambiguous: it names the generated {text} set, and ./{text} is "
                               f"a folder here; write ./{text} for the folder{other}")
        if name not in generated:
            raise MimlensError(f"data spec {text!r}: this command takes {_choices(generated)} or a directory")
        if not _:
            return DataSpec(name, DEFAULT_COUNTS[name])
        if not count.isdigit() or int(count) < 1:
            raise MimlensError(f"data spec {text!r}: expected '{name}' or '{name}:N' with N a positive integer")
        return DataSpec(name, int(count))
    path = Path(text).expanduser()
    if not path.is_dir():
        raise MimlensError(f"data {text!r} is neither {_choices(generated).replace(' or ', ', ')} nor an existing "
                           "directory")
    return DataSpec("folder", path=path)


def _choices(generated: tuple[str, ...]) -> str:
    return " or ".join(f"'{g}[:N]'" for g in generated)
