"""The paper's findings F1–F6 (and F4, F6 from frozen probes) judged from JSON documents: the rules
(:mod:`.rules`, rules version :data:`.rules.RULES_VERSION`), how comparisons become verdicts (:mod:`.judging`),
the findings of any models by role (:func:`judge_study`, :mod:`.roles`) and a study folder's reader
(:func:`read_study`, :mod:`.folder`)."""

from mimlens.findings.folder import StudyFolder, read_study
from mimlens.findings.roles import ROLES, judge_study

__all__ = ["ROLES", "StudyFolder", "judge_study", "read_study"]
