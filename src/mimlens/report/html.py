"""The self-contained HTML report of one or more run directories.

One file, readable from ``file://`` without a server: the stylesheet is inlined, every figure is a
base64 PNG data URI, and there is no JavaScript. The figures (PNG) and numbers (JSON/CSV/YAML) the
report shows are also placed next to it, and linked from each run's "Files" list.

Typical use::

    from mimlens.report.html import build_report
    build_report(["runs/analyze-vit", "runs/compare"], "runs/report/report.html", title="My models")

A demo directory (``findings.json``) opens its page with the findings table (:func:`findings_table`), the
figures behind each verdict and what the demo ran; :func:`render_page` lays out any :class:`Section` list.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from mimlens import __version__
from mimlens.errors import MimlensError
from mimlens.io import save_text
from mimlens.report.blocks import (
    Section,
    esc,
    explain,
    facts,
    figure,
    findings_table,
    json_table,
    notice,
    plural,
    slug,
    table,
)
from mimlens.report.findings_page import demo_title, findings_sections
from mimlens.report.rundirs import MARKERS, Assets, Run, discover
from mimlens.report.runs import group_runs, run_section
from mimlens.report.style import CSS

__all__ = ["Section", "build_report", "explain", "facts", "figure", "findings_table", "json_table", "notice",
           "render_page", "table"]


def render_page(title: str, sections: Sequence[Section], subtitle: str = "", contents_after: int = 0) -> str:
    """A complete HTML document: title, the sections with the contents after the first ``contents_after`` of
    them, a footer. Folded sections are ``<details>`` elements, closed until a reader opens them."""
    anchors = _anchors(sections)
    toc = []
    for section in sections:
        subs = "".join(f'<li><a href="#{anchors[id(c)]}">{esc(c.title)}</a></li>'
                       for c in section.children if not c.folded and not section.folded)
        toc.append(f'<li><a href="#{anchors[id(section)]}">{esc(section.title)}</a>'
                   + (f"<ol>{subs}</ol>" if subs else "") + "</li>")
    body = [f"<section>{_render(s, 2, anchors)}</section>" for s in sections]
    nav = f'<nav class="toc"><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>\n'
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><div class=\"page\">"
        f'<header class="title"><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>\n'
        f'<main>{"".join(body[:contents_after])}{nav}{"".join(body[contents_after:])}</main>'
        f"<footer>mimlens {esc(__version__)} · {esc(stamp)} · figures follow "
        "“Revealing the Dark Secrets of Masked Image Modeling” (Xie et al., CVPR 2023)</footer>"
        "</div></body></html>\n"
    )


def _anchors(sections: Sequence[Section]) -> dict[int, str]:
    """A unique anchor for every section (keyed by ``id``): its title, prefixed by its parents' below the top."""
    found: dict[int, str] = {}
    used: set[str] = set()

    def visit(section: Section, prefix: str) -> None:
        base = name = slug(f"{prefix} {section.title}")
        n = 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        found[id(section)] = name
        for child in section.children:
            visit(child, f"{prefix} {section.title}")

    for section in sections:
        visit(section, "")
    return found


def _render(section: Section, level: int, anchors: dict[int, str]) -> str:
    tag = f"h{min(level, 6)}"
    head = f'<{tag} id="{anchors[id(section)]}">{esc(section.title)}</{tag}>'
    inner = section.body + "".join(_render(c, level + 1, anchors) for c in section.children)
    return f'<details class="fold"><summary>{head}</summary>{inner}</details>' if section.folded else head + inner


def build_report(run_dirs: Sequence[str | Path], out_path: str | Path, title: str | None = None) -> Path:
    """Write ``out_path`` (an HTML file) describing every run found in ``run_dirs``.

    A directory with ``findings.json`` (a demo) opens the page with its findings, the figures behind them
    and what it ran; its runs follow, grouped by kind and folded. Other pages show each run in turn.

    Args:
        run_dirs: run directories or directories holding runs (searched three levels down).
        out_path: the HTML file; the figures and numbers it shows are placed in its directory too.
        title: the page title (default: the demo's, else "mimlens report").

    Returns:
        The path written. Raises :class:`MimlensError` when a directory is missing or holds no run.
    """
    out_path = Path(out_path)
    assets = Assets(out_path.parent)
    runs = _discover_all(run_dirs, assets)
    front = [r for r in runs if r.kind == "findings"]
    sections = [s for r in front for s in findings_sections(r, assets)]
    rest = [run_section(r, assets) for r in runs if r.kind != "findings"]
    sections += group_runs(rest) if front else rest
    title = title or next((t for t in map(demo_title, front) if t), "mimlens report")
    names = ", ".join(Path(d).resolve().name for d in run_dirs)
    subtitle = f"{'Demo directory' if front else 'Runs'}: {names} · {plural(len(rest), 'run')}"
    return save_text(render_page(title, sections, subtitle, contents_after=1 if front else 0), out_path)


def _discover_all(run_dirs: Sequence[str | Path], assets: Assets) -> list[Run]:
    """The runs of every directory, each directory under a distinct label; empty or missing ones are errors."""
    found, labels = [], set()
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise MimlensError(f"run directory {run_dir} does not exist")
        label = base = slug(run_dir.resolve().name)
        n = 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.add(label)
        runs = discover(run_dir, label, skip=assets.out_dir, named=len(run_dirs) > 1)
        if not runs:
            expected = ", ".join(n for names in MARKERS.values() for n in names)
            raise MimlensError(f"{run_dir} holds no mimlens run (expected one of {expected} in it or below it)")
        found += runs
    return found
