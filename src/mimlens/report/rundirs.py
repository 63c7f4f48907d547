"""What a report reads of a run directory: its kind (recognised by the files it holds), the runs under a
folder, the files a report places next to itself, and the pieces every run's section shows (its figures, its
files, the notice on random weights).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimlens.report import explanations as ex
from mimlens.report.blocks import Section, esc, figure, notice

MARKERS = {
    "comparison": ("cka_across.json", "compare.json"),
    "analysis": ("analysis.json", "attention.json"),
    "probe": ("probe.json",),
    "over_training": ("attention_over_training.json",),
    "masks": ("avgdist.json",),
    "training": ("log.jsonl", "metrics.json"),
    "findings": ("findings.json",),
}
NOT_RUNS = {"figures", "checkpoints", "tensorboard", "attention", "stages", "__pycache__"}  # stages: a demo's records
DATA_SUFFIXES = (".json", ".csv", ".yaml", ".jsonl")


@dataclass(frozen=True)
class Run:
    """A run directory, the top-level directory it was found under and the name its copies go under;
    ``named``: the report shows several top-level directories, so titles start with the directory's name."""

    path: Path
    kind: str
    root: Path
    root_label: str
    named: bool = True

    @property
    def title(self) -> str:
        """The run's path inside its top-level directory (the directory's name for the directory itself)."""
        rel = self.path.relative_to(self.root)
        if rel == Path("."):
            return self.root.name
        return f"{self.root.name}/{rel.as_posix()}" if self.named else rel.as_posix()

    def show(self, value: Any) -> Any:
        """``value`` (a string, or strings nested in lists and mappings) with paths inside the top-level
        directory written as the report titles runs: relative to it, or starting with its name."""
        if isinstance(value, Mapping):
            return {k: self.show(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.show(v) for v in value]
        if not isinstance(value, str):
            return value
        root = str(self.root)
        if value == root:
            return self.root.name
        return value.replace(f"{root}/", f"{self.root.name}/" if self.named else "")


def run_kind(path: Path) -> str | None:
    for kind, names in MARKERS.items():
        if any((path / n).is_file() for n in names):
            return kind
    return None


def discover(root: Path, root_label: str, skip: Path | None = None, depth: int = 3, named: bool = True) -> list[Run]:
    """The runs at ``root`` and below it, parents before children, siblings in name order; ``skip`` (the
    report's own directory, which holds copies of runs) is not searched, nor a demo directory inside another
    (e.g. ``OUT/masking``, the masking study, which has its own report); ``named`` as in :class:`Run`."""
    root = root.resolve()
    found = []

    def visit(path: Path, level: int, in_demo: bool) -> None:
        kind = run_kind(path)
        if kind == "findings" and in_demo:
            return
        if kind:
            found.append(Run(path, kind, root, root_label, named))
        if level < depth:
            for sub in sorted(p for p in path.iterdir() if p.is_dir()):
                if sub.name not in NOT_RUNS and not sub.name.startswith(".") and sub.resolve() != skip:
                    visit(sub, level + 1, in_demo or kind == "findings")

    visit(root, 0, False)
    return found


class Assets:
    """Puts the files a report shows next to it and returns their links relative to the report.

    Files already under the output directory stay where they are; others are copied to
    ``OUT/<root label>/<path inside the run's top-level directory>``.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir.resolve()
        self.links: list[str] = []
        self.written: dict[Path, list[str]] = {}

    def target(self, run: Run, rel: str) -> Path:
        """Where a file at ``rel`` inside ``run`` lives next to the report."""
        src = run.path / rel
        if src.resolve().is_relative_to(self.out_dir):
            return src.resolve()
        return self.out_dir / run.root_label / run.path.relative_to(run.root) / rel

    def place(self, run: Run, rel: str) -> str:
        src, dest = (run.path / rel).resolve(), self.target(run, rel)
        if dest != src and src.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        return self._link(dest)

    def write(self, run: Run, rel: str, data: bytes) -> str:
        """Write a file the report made for ``run`` (e.g. curves drawn from its log) next to the report."""
        dest = self.target(run, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        self.written.setdefault(run.path, []).append(rel)
        return self._link(dest)

    def has(self, run: Run, rel: str) -> bool:
        """Whether the file at ``rel`` inside ``run`` is already next to the report."""
        return self.target(run, rel).relative_to(self.out_dir).as_posix() in self.links

    def _link(self, dest: Path) -> str:
        link = dest.relative_to(self.out_dir).as_posix()
        if link not in self.links:
            self.links.append(link)
        return link


def run_figure(run: Run, assets: Assets, stem: str) -> str:
    """The figure ``figures/<stem>.png`` of a run, placed next to the report and embedded; "" if absent."""
    rel = f"figures/{stem}.png"
    if not (run.path / rel).is_file():
        return ""
    assets.place(run, rel)
    key = next((k for k in ex.FIGURES if stem == k or stem.startswith(f"{k}_") or stem.endswith(f"_{k}")), stem)
    title, caption = ex.FIGURES.get(key, (stem.replace("_", " ").capitalize(), ""))
    if stem.startswith("cka_across_"):
        title = f"{title}: {stem.removeprefix('cka_across_').replace('_vs_', ' vs ')}"
    return figure(run.path / rel, caption, title)


def files_section(run: Run, assets: Assets) -> Section | None:
    rels = sorted(p.relative_to(run.path).as_posix() for p in [*run.path.iterdir(), *run.path.glob("attention/*")]
                  if p.is_file() and p.suffix in DATA_SUFFIXES)
    figures = {f"figures/{p.name}" for p in (run.path / "figures").glob("*.png")}
    rels += sorted(figures.union(assets.written.get(run.path, [])))
    if not rels:
        return None
    links = "".join(f'<li><a href="{esc(assets.place(run, r))}">{esc(r)}</a></li>' for r in rels)
    return Section("Files", '<p>The numbers and figures of this run, next to this report:</p>'
                            f'<ul class="files">{links}</ul>')


def weights_notice(weights: str | None) -> str:
    if weights and "random" in weights:
        return notice("The weights are a random initialisation: these statistics describe an untrained "
                      "model and serve as the reference a trained model is read against.")
    return ""
