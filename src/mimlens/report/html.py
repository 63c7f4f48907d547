"""The self-contained HTML report of one or more run directories.

One file, readable from ``file://`` without a server: the stylesheet is inlined, every figure is a
base64 PNG data URI, and there is no JavaScript. The figures (PNG) and numbers (JSON/CSV/YAML) the
report shows are also placed next to it, and linked from each run's "Files" list.

Typical use::

    from mimlens.report.html import build_report
    build_report(["runs/analyze-vit", "runs/compare"], "runs/report/report.html", title="My models")

The demo reuses the pieces: :func:`render_page` with its own :class:`Section` list, and
:func:`findings_table` for the paper's findings next to the verdicts of a run.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from mimlens import __version__
from mimlens.errors import MimlensError
from mimlens.io import save_text
from mimlens.report.blocks import Section, esc, explain, facts, figure, findings_table, json_table, notice, slug, table
from mimlens.report.runs import MARKERS, Assets, discover, run_section
from mimlens.report.style import CSS

__all__ = ["Section", "build_report", "explain", "facts", "figure", "findings_table", "json_table", "notice",
           "render_page", "table"]


def render_page(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    """A complete HTML document: title, table of contents (two levels), the sections, a footer."""
    used: set[str] = set()

    def anchor(text: str) -> str:
        base = name = slug(text)
        n = 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        return name

    toc, body = [], []
    for section in sections:
        sid = anchor(section.title)
        subs = [(anchor(f"{section.title} {c.title}"), c) for c in section.children]
        sub_toc = "".join(f'<li><a href="#{a}">{esc(c.title)}</a></li>' for a, c in subs)
        toc.append(f'<li><a href="#{sid}">{esc(section.title)}</a>' + (f"<ol>{sub_toc}</ol>" if subs else "") + "</li>")
        body.append(f'<section><h2 id="{sid}">{esc(section.title)}</h2>{section.body}'
                    + "".join(f'<h3 id="{a}">{esc(c.title)}</h3>{c.body}' for a, c in subs) + "</section>")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><div class=\"page\">"
        f'<header class="title"><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>'
        f'<nav class="toc"><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>\n<main>{"".join(body)}</main>'
        f"<footer>mimlens {esc(__version__)} · {esc(stamp)} · figures follow "
        "“Revealing the Dark Secrets of Masked Image Modeling” (Xie et al., CVPR 2023)</footer>"
        "</div></body></html>\n"
    )


def build_report(run_dirs: Sequence[str | Path], out_path: str | Path, title: str = "mimlens report",
                 intro: Sequence[Section] = ()) -> Path:
    """Write ``out_path`` (an HTML file) describing every run found in ``run_dirs``.

    Args:
        run_dirs: run directories or directories holding runs (searched three levels down).
        out_path: the HTML file; the figures and numbers it shows are placed in its directory too.
        title: the page title.
        intro: sections placed before the runs' sections (e.g. the demo's findings).

    Returns:
        The path written. Raises :class:`MimlensError` when a directory is missing or holds no run.
    """
    out_path = Path(out_path)
    assets = Assets(out_path.parent)
    sections = list(intro)
    labels: set[str] = set()
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise MimlensError(f"run directory {run_dir} does not exist")
        label = base = slug(run_dir.resolve().name)
        n = 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.add(label)
        runs = discover(run_dir, label, skip=assets.out_dir)
        if not runs:
            expected = ", ".join(n for names in MARKERS.values() for n in names)
            raise MimlensError(f"{run_dir} holds no mimlens run (expected one of {expected} in it or below it)")
        sections.extend(run_section(run, assets) for run in runs)
    names = ", ".join(Path(d).resolve().name for d in run_dirs)
    return save_text(render_page(title, sections, subtitle=f"Runs: {names}"), out_path)
