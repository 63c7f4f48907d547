"""The paper's findings F1–F6 (and F4, F6 from frozen probes) judged from JSON documents: the rules
(:mod:`.rules`, rules version :data:`.rules.RULES_VERSION`) and how comparisons become verdicts (:mod:`.judging`)."""
