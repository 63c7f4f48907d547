"""Conformance of mimlens's similarity measures with their reference formulas, on shared random data.

For each measure: mimlens's value (``mimlens.analysis.similarity.pair_similarity``) and the reference formula's
(``tests/analysis/similarity_reference.py``: the formulas of platonic-rep's ``metrics.py``, Google's ``svcca``,
Morcos et al.'s PWCCA, netrep's ``LinearMetric`` and scipy's ``pdist``/``spearmanr``, re-implemented in numpy) on
the first data set, then the largest absolute difference over every data set (several seeds and widths, both
orders of the widths). Two rows show the references' own constants: SVCCA with the tutorial's epsilon 1e-10 in
the CCA, and CKNNA with the 1e-6 that platonic-rep adds to its denominator (mimlens uses neither).

    python benchmarks/similarity_conformance.py
    python benchmarks/similarity_conformance.py --images 500 --seeds 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "analysis"))

from similarity_reference import REFERENCES, cknna, shared_data, svcca  # noqa: E402

from mimlens.analysis.similarity import pair_similarity  # noqa: E402

WIDTHS = ((24, 40), (40, 24), (16, 16), (64, 8))


def reference(name: str, a, b) -> float:
    return REFERENCES[name](a, b, epsilon=0.0) if name == "svcca" else REFERENCES[name](a, b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="images (rows) per data set")
    parser.add_argument("--seeds", type=int, default=3, help="data sets per pair of widths")
    args = parser.parse_args()
    sets = [shared_data(n=args.images, widths=w, seed=s) for w in WIDTHS for s in range(args.seeds)]
    rows = []
    for name in REFERENCES:
        first = (pair_similarity(*sets[0], name), reference(name, *sets[0]))
        worst = max(abs(pair_similarity(a, b, name) - reference(name, a, b)) for a, b in sets)
        rows.append((name, *first, worst))
    for label, ref, ours in (("svcca, epsilon 1e-10", lambda a, b: svcca(a, b), "svcca"),
                             ("cknna, +1e-6 guard", lambda a, b: cknna(a, b, eps=1e-6), "cknna")):
        worst = max(abs(pair_similarity(a, b, ours) - ref(a, b)) for a, b in sets)
        rows.append((label, pair_similarity(*sets[0], ours), ref(*sets[0]), worst))
    print(f"{len(sets)} data sets of {args.images} images, widths {', '.join(f'{a}x{b}' for a, b in WIDTHS)}")
    print(f"{'measure':<22}{'mimlens':>14}{'reference':>14}{'largest |difference|':>24}")
    for name, ours, theirs, worst in rows:
        print(f"{name:<22}{ours:>14.10f}{theirs:>14.10f}{worst:>24.3e}")


if __name__ == "__main__":
    main()
