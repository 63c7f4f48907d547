"""HTML building blocks of the report: figures, tables, fact lists, notes and the findings table.

Every function returns an HTML fragment (a string). Text that comes from files or users is escaped
here; only the short explanations written in this package are passed through as HTML. Figures are
embedded as base64 PNG data URIs, so a page never loads anything from outside itself.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimlens.errors import MimlensError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VERDICTS = ("reproduced", "not reproduced", "inconclusive")


@dataclass
class Section:
    """One heading of the report: level-2 sections hold level-3 children; both appear in the contents."""

    title: str
    body: str = ""
    children: list[Section] = field(default_factory=list)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A number as a table shows it: integers in full, floats with four significant digits."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def slug(text: str) -> str:
    """A lower-case anchor or file name made of letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def png_data_uri(png: bytes | str | Path) -> str:
    """``data:image/png;base64,...`` for PNG bytes or a PNG file; anything else is an error."""
    data = Path(png).read_bytes() if isinstance(png, (str, Path)) else bytes(png)
    if not data.startswith(PNG_SIGNATURE):
        where = png if isinstance(png, (str, Path)) else "figure bytes"
        raise MimlensError(f"{where} is not a PNG image (expected the 8-byte PNG signature)")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(png: bytes | str | Path, caption: str, title: str = "") -> str:
    """An embedded PNG with a caption; ``caption`` is trusted HTML, ``title`` (bold lead-in) is escaped."""
    lead = f"<b>{esc(title)}.</b> " if title else ""
    alt = esc(title or re.sub(r"<[^>]+>", "", caption)[:120])
    return (f'<figure><img src="{png_data_uri(png)}" alt="{alt}">'
            f"<figcaption>{lead}{caption}</figcaption></figure>")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """A table of escaped cells; numeric cells are formatted by :func:`fmt` and right-aligned."""
    rows = [list(r) for r in rows]
    for r in rows:
        if len(r) != len(headers):
            raise ValueError(f"table row {r!r} has {len(r)} cells for {len(headers)} columns")
    numeric = [bool(rows) and all(_is_number(r[i]) or r[i] is None for r in rows) for i in range(len(headers))]

    def cells(values: Sequence[Any], tag: str) -> str:
        return "".join(f'<{tag} class="num">{esc(fmt(v))}</{tag}>' if n else f"<{tag}>{esc(fmt(v))}</{tag}>"
                       for v, n in zip(values, numeric, strict=True))

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="table-wrap"><table>{cap}<thead><tr>{cells(headers, "th")}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def facts(pairs: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """A two-column list of labelled facts (model, images, policy, ...); empty values are left out."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    body = "".join(f"<dt>{esc(k)}</dt><dd>{esc(fmt(v))}</dd>" for k, v in items if v not in (None, ""))
    return f'<dl class="facts">{body}</dl>'


def explain(text: str) -> str:
    """How to read a figure or table against the paper (trusted HTML written by mimlens)."""
    return f'<p class="explain">{text}</p>'


def notice(text: str) -> str:
    """A highlighted warning, e.g. that a model's weights are a random initialisation (escaped)."""
    return f'<p class="notice">{esc(text)}</p>'


def findings_table(rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> str:
    """The paper's findings next to what a run shows.

    Each row is a mapping with ``id``, ``statement``, ``verdict`` and ``numbers`` or a 4-tuple in that
    order. ``verdict`` is one of "reproduced", "not reproduced", "inconclusive"; ``numbers`` (a mapping
    or a string) are the values the verdict was computed from. A mapping row's optional ``rule`` (how the
    verdict follows from the numbers) is shown under them.
    """
    cells = []
    for row in rows:
        if isinstance(row, Mapping):
            missing = [k for k in ("id", "statement", "verdict", "numbers") if k not in row]
            if missing:
                raise MimlensError(f"findings row {dict(row)!r} lacks {', '.join(missing)}")
            fid, statement, verdict, numbers = row["id"], row["statement"], row["verdict"], row["numbers"]
            rule = row.get("rule")
        else:
            if len(row) != 4:
                raise MimlensError(f"findings row {row!r} must have 4 fields: id, statement, verdict, numbers")
            fid, statement, verdict, numbers = row
            rule = None
        if verdict not in VERDICTS:
            raise MimlensError(f"findings row {fid}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        if isinstance(numbers, Mapping):
            numbers = "; ".join(f"{k} = {fmt(v)}" for k, v in numbers.items())
        rule_line = f'<div class="rule">rule: {esc(rule)}</div>' if rule else ""
        cells.append(f"<tr><td><b>{esc(fid)}</b></td><td>{esc(statement)}</td>"
                     f'<td><span class="verdict {slug(verdict)}">{esc(verdict)}</span></td>'
                     f"<td>{esc(numbers)}{rule_line}</td></tr>")
    return ('<div class="table-wrap"><table class="findings"><thead><tr><th>#</th><th>finding (paper)</th>'
            f"<th>verdict</th><th>numbers</th></tr></thead><tbody>{''.join(cells)}</tbody></table></div>")


def json_table(obj: Any, caption: str = "") -> str:
    """A JSON value as a table: a mapping as key/value rows (nested keys dotted), a list of mappings
    as one row each with the union of their keys as columns. Returns "" for anything else."""
    if isinstance(obj, Mapping):
        flat = _flatten(obj)
        return table(["key", "value"], [[k, v] for k, v in flat.items()], caption) if flat else ""
    if isinstance(obj, list) and obj and all(isinstance(r, Mapping) for r in obj):
        flat_rows = [_flatten(r) for r in obj]
        columns = list(dict.fromkeys(k for r in flat_rows for k in r))
        return table(columns, [[r.get(c) for c in columns] for r in flat_rows], caption)
    return ""


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of a nested mapping under dotted keys; short lists of scalars joined, long ones skipped."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            if len(value) <= 8 and all(_is_number(v) or isinstance(v, str) for v in value):
                out[name] = ", ".join(fmt(v) for v in value)
        else:
            out[name] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
