"""Figures (matplotlib) and the self-contained HTML report of mimlens run directories."""
