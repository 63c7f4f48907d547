"""Figures (matplotlib) and the self-contained HTML report of mimlens run directories.

Importing the package sets the figures' matplotlib defaults (:func:`mimlens.report.style.use_figure_style`).
"""

from mimlens.report.style import use_figure_style

use_figure_style()
