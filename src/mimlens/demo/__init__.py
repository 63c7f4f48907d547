"""``mimlens demo``: the paper's whole pipeline at tiny scale on the generated scenes, with findings F1–F6
judged from the run's own numbers (presets.py: recipes and time budget; pipeline.py: resumable stages;
bars.py: training bars; findings_stage.py: findings.json by :mod:`mimlens.findings`, figures, report.html)."""
