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
VERDICTS = ("reproduced", "not reproduced", "within errors", "not judged", "inconclusive")  # the last: rules v1


@dataclass
class Section:
    """One heading of the report and its sub-headings. A folded section shows only its title until opened;
    the contents list the top-level sections and their children that are not folded."""

    title: str
    body: str = ""
    children: list[Section] = field(default_factory=list)
    folded: bool = False


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def decimals(values: Iterable[Any]) -> int | None:
    """Decimals that give the largest float of ``values`` four significant digits (0 to 4), so a column or row
    shows all its floats alike ("33.00" next to "33.12"); None when there is no float or it is below 1e-3."""
    floats = [abs(v) for v in values if isinstance(v, float) and math.isfinite(v)]
    if not floats or max(floats) < 1e-3:
        return None
    return min(4, max(0, 3 - math.floor(math.log10(max(floats)))))


def fmt(value: Any, places: int | None = None) -> str:
    """A number as the page shows it: integers in full, floats with ``places`` decimals (a table's column
    or row, see :func:`decimals`) or, alone, four significant digits (scientific below 1e-3)."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if places is not None:
            return f"{value:.{places}f}"
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 image``, ``2 images`` (``nouns``: an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def duration(seconds: float | None) -> str:
    """Seconds in readable units: "0.5 s", "12 s", "3 min 12 s", "1 h 4 min"; "" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    if round(seconds, 1) < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min" + (f" {whole % 60} s" if whole % 60 else "")
    return f"{whole // 3600} h" + (f" {whole % 3600 // 60} min" if whole % 3600 // 60 else "")


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


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "", right: Sequence[str] = ()) -> str:
    """A table of escaped cells; numeric columns and those named in ``right`` (e.g. durations) are
    right-aligned, a column's floats all with the same decimals."""
    rows = [list(r) for r in rows]
    for r in rows:
        if len(r) != len(headers):
            raise ValueError(f"table row {r!r} has {len(r)} cells for {len(headers)} columns")
    numeric = [h in right or bool(rows) and all(_is_number(r[i]) or r[i] is None for r in rows)
               for i, h in enumerate(headers)]
    places = [decimals(r[i] for r in rows) for i in range(len(headers))]

    def cells(values: Sequence[Any], tag: str, head: bool = False) -> str:
        return "".join(f'<{tag} class="num">{esc(v if head else fmt(v, d))}</{tag}>' if n
                       else f"<{tag}>{esc(v if head else fmt(v))}</{tag}>"
                       for v, n, d in zip(values, numeric, places, strict=True))

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="table-wrap"><table>{cap}<thead><tr>{cells(headers, "th", head=True)}</tr></thead>'
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


def numbers_table(numbers: Mapping[str, Any], layout: Mapping[str, Any]) -> str:
    """A finding's numbers as a small table: ``layout["rows"]`` are ``[label, key, ...]`` with one key of
    ``numbers`` (or null) per entry of ``layout["columns"]``; a row with a single key spans every column.
    Each row's floats share their decimals. Numbers the layout leaves out follow as "key: value" lines."""
    columns = list(layout.get("columns") or [])
    width = max(1, len(columns))
    used, lines = set(), []
    for label, *keys in layout.get("rows", []):
        used.update(k for k in keys if k is not None)
        values = [numbers.get(k) if k is not None else None for k in keys]
        places = decimals(values)
        span = f' class="span" colspan="{width}"' if len(keys) == 1 and width > 1 else ""
        num = span or ' class="num"'
        tds = "".join(f"<td{num}>{esc(fmt(v, places))}</td>" if _is_number(v) else f"<td{span}>{esc(fmt(v))}</td>"
                      for v in values)
        lines.append(f"<tr><th>{esc(label)}</th>{tds}</tr>")
    head = "<tr><th></th>" + "".join(f'<th class="num">{esc(c)}</th>' for c in columns) + "</tr>"
    head = head if any(len(keys) > 1 for _, *keys in layout.get("rows", [])) else ""
    rest = "".join(f"<div>{esc(k)}: {esc(fmt(v))}</div>" for k, v in numbers.items()
                   if k not in used and k != "reason")
    return f'<table class="numbers"><thead>{head}</thead><tbody>{"".join(lines)}</tbody></table>{rest}'


def findings_table(rows: Iterable[Mapping[str, Any] | Sequence[Any]], thumbs: Mapping[str, str] | None = None) -> str:
    """The paper's findings next to what a run shows.

    Each row is a mapping with ``id``, ``statement``, ``verdict`` and ``numbers`` or a 4-tuple in that
    order. ``verdict`` is one of :data:`VERDICTS` ("inconclusive" from findings judged by rules version 1);
    ``numbers`` (a mapping or a string) are the values the verdict was computed from, ``numbers["reason"]`` why
    it is not judged or within errors. A mapping row's optional ``table`` lays the numbers out
    (:func:`numbers_table`) and its optional ``rule`` (how the verdict follows from the numbers) is printed open
    under them. ``thumbs`` maps a
    finding's id to the HTML of the figures behind its verdict, shown in a last column.
    """
    cells = []
    thumbs = thumbs or {}
    for row in rows:
        fid, statement, verdict, numbers, extra = _finding(row)
        if verdict not in VERDICTS:
            raise MimlensError(f"findings row {fid}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        reason = numbers.get("reason") if isinstance(numbers, Mapping) else None
        if isinstance(numbers, Mapping):
            numbers = numbers_table(numbers, extra.get("table") or {"rows": [[k, k] for k in numbers]})
        else:
            numbers = esc(numbers)
        rule = extra.get("rule")
        rule_line = f'<details class="rule" open><summary>rule</summary>{esc(rule)}</details>' if rule else ""
        why = f'<div class="reason">{esc(reason)}</div>' if reason else ""
        figures = f'<td><div class="thumbs">{thumbs.get(fid, "")}</div></td>' if thumbs else ""
        cells.append(f'<tr id="finding-{slug(fid)}"><td><b>{esc(fid)}</b> {esc(statement)}'
                     f'<div><span class="verdict {slug(verdict)}">{esc(verdict)}</span></div>{why}</td>'
                     f"<td>{numbers}{rule_line}</td>{figures}</tr>")
    head = "<th>finding (paper) and verdict</th><th>numbers behind the verdict</th>"
    head += "<th>figures</th>" if thumbs else ""
    return (f'<div class="table-wrap"><table class="findings"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(cells)}</tbody></table></div>")


def _finding(row: Mapping[str, Any] | Sequence[Any]) -> tuple[Any, Any, Any, Any, Mapping[str, Any]]:
    """(id, statement, verdict, numbers, the row itself or {}) of a findings row; a malformed row is an error."""
    if isinstance(row, Mapping):
        missing = [k for k in ("id", "statement", "verdict", "numbers") if k not in row]
        if missing:
            raise MimlensError(f"findings row {dict(row)!r} lacks {', '.join(missing)}")
        return row["id"], row["statement"], row["verdict"], row["numbers"], row
    if len(row) != 4:
        raise MimlensError(f"findings row {row!r} must have 4 fields: id, statement, verdict, numbers")
    return (*row, {})


def thumbnail(png: str | Path, link: str, alt: str) -> str:
    """A small embedded figure that links to the full-size file ``link`` next to the report."""
    return f'<a href="{esc(link)}"><img class="thumb" src="{png_data_uri(png)}" alt="{esc(alt)}"></a>'


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
