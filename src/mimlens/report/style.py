"""The figures' matplotlib settings and the report's one stylesheet, inlined into every page so that a
report is a single file.

System fonts only (no web fonts, no external resources); numbers use tabular figures so columns align;
the layout narrows to one column on small screens and prints without the contents box. Nothing has a fixed
width: figures scale down to their column (``max-width: 100%``) and the findings table's figure column shrinks
and wraps its thumbnails, so a demo page fits a 1,024 px window without scrolling sideways.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

FIGURE_RC = {"axes.formatter.useoffset": False}  # tick labels in full: never "1e-5 + 1.9287" offset notation


def use_figure_style() -> None:
    """Make matplotlib's defaults follow ``FIGURE_RC``; figures made afterwards follow them. Importing
    :mod:`mimlens.report` does this."""
    import matplotlib

    matplotlib.rcParams.update(FIGURE_RC)


def save_png(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a matplotlib figure to ``path`` as a PNG, atomically (:func:`mimlens.io.save_bytes`)."""
    from mimlens.io import save_bytes

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return save_bytes(buffer.getvalue(), Path(path))


CSS = """
:root {
  --ink: #1d2330; --muted: #5b6475; --line: #dde2ea; --paper: #ffffff; --wash: #f5f7fa;
  --accent: #2b59c3; --good: #1e7b4a; --bad: #b3261e; --meh: #8a6100;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--wash); color: var(--ink);
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
.page { max-width: 1200px; margin: 0 auto; padding: 1.5rem 1.5rem 4rem; background: var(--paper);
  box-shadow: 0 0 0 1px var(--line); min-height: 100vh; }
header.title { border-bottom: 2px solid var(--ink); margin-bottom: 1rem; padding-bottom: 0.8rem; }
header.title h1 { margin: 0 0 0.3rem; font-size: 1.8rem; letter-spacing: -0.01em; }
header.title p { margin: 0; color: var(--muted); }
h2 { font-size: 1.45rem; margin: 2.6rem 0 0.6rem; padding-top: 0.4rem; border-top: 1px solid var(--line); }
h3 { font-size: 1.12rem; margin: 1.8rem 0 0.5rem; }
main > section:first-child > h2 { margin-top: 0; border-top: 0; }
h4 { font-size: 1rem; margin: 1.4rem 0 0.4rem; }
h2, h3, h4 { scroll-margin-top: 1rem; }
p { margin: 0.5rem 0 0.9rem; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--wash);
  padding: 0.05em 0.3em; border-radius: 3px; }
nav.toc { background: var(--wash); border: 1px solid var(--line); border-radius: 6px; padding: 0.8rem 1.2rem;
  margin: 0 0 1.5rem; }
nav.toc h2 { border: 0; margin: 0 0 0.3rem; padding: 0; font-size: 1rem; text-transform: uppercase;
  letter-spacing: 0.06em; color: var(--muted); }
nav.toc ol { margin: 0; padding-left: 1.3rem; }
nav.toc ol ol { padding-left: 1.1rem; font-size: 0.94em; }
nav.toc li { margin: 0.1rem 0; }
.explain { color: #333b4a; border-left: 3px solid var(--accent); padding: 0.1rem 0 0.1rem 0.9rem; margin: 0.8rem 0; }
.notice { background: #fff6e0; border: 1px solid #f0d28a; border-radius: 6px; padding: 0.6rem 0.9rem;
  margin: 0.8rem 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem; margin: 0.6rem 0 1rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
figure { margin: 1.2rem 0 1.6rem; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.92rem; margin: 0.45rem auto 0; max-width: 52rem; text-align: left; }
figcaption b { color: var(--ink); }
.table-wrap { overflow-x: auto; margin: 0.6rem 0 1.2rem; }
table { border-collapse: collapse; font-size: 0.92rem; font-variant-numeric: tabular-nums; min-width: 50%; }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: 0.35rem; }
th, td { padding: 0.32rem 0.7rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { text-align: left; background: var(--wash); font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafbfd; }
.verdict { display: inline-block; padding: 0.05rem 0.55rem; border-radius: 999px; font-size: 0.85em;
  font-weight: 600; white-space: nowrap; }
.verdict.reproduced { background: #e3f3ea; color: var(--good); }
.verdict.not-reproduced { background: #fbe5e3; color: var(--bad); }
.verdict.inconclusive, .verdict.within-errors { background: #fbf1d9; color: var(--meh); }
.verdict.not-judged { background: var(--wash); color: var(--muted); }
table.findings { width: 100%; }
.findings > tbody > tr > td:first-child { width: 25%; min-width: 12rem; }
.findings .reason { margin-top: 0.3rem; color: var(--muted); font-size: 0.88em; }
.findings .rule, .bars .rule { margin-top: 0.3rem; color: var(--muted); font-size: 0.88em; }
.findings summary { cursor: pointer; }
table.numbers { font-size: 0.88rem; min-width: 0; margin: 0; }
table.numbers th, table.numbers td { padding: 0.12rem 0.5rem; }
table.numbers th { background: none; font-weight: normal; color: var(--muted); }
table.numbers td { background: none !important; }
table.numbers td.span { text-align: left; }
table.numbers thead th { font-weight: 600; color: var(--ink); }
.thumbs { display: flex; flex-wrap: wrap; gap: 0.4rem; width: 100%; min-width: 10rem; max-width: 25rem;
  justify-content: center; }
.thumbs a { min-width: 0; }
img.thumb { display: block; max-width: 100%; max-height: 12.5rem; border: 1px solid var(--line); border-radius: 3px; }
.bars { display: flex; flex-wrap: wrap; gap: 0 2rem; }
details.fold { border-bottom: 1px solid var(--line); }
details.fold > summary { cursor: pointer; padding: 0.2rem 0; }
details.fold > summary > :is(h3, h4) { display: inline; font-size: 1.02rem; margin: 0; }
ul.files { columns: 2; font-size: 0.92rem; }
footer { margin-top: 3rem; color: var(--muted); font-size: 0.85rem; border-top: 1px solid var(--line);
  padding-top: 0.8rem; }
@media (max-width: 700px) { .page { padding: 1.2rem 0.8rem; } ul.files { columns: 1; } .thumbs { min-width: 8rem; } }
@media print { body { background: none; } .page { box-shadow: none; max-width: none; } nav.toc { display: none; }
  figure, table { break-inside: avoid; } }
"""
