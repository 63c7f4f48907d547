"""The engine's typed configuration: defaults in one place, errors that name the key, a resolved plan."""

import pytest

from mimlens.engine.settings import Settings, engine_defaults
from mimlens.errors import MimlensError


def _cfg(**changes):
    cfg = engine_defaults()
    cfg["train"]["steps"] = 100
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        cfg[section][key] = value
    return cfg


def test_defaults_are_read_back_unchanged():
    settings = Settings.from_config(_cfg())
    defaults = engine_defaults()
    assert settings.optim.base_lr == defaults["optim"]["base_lr"]
    assert settings.schedule.min_lr == defaults["optim"]["min_lr"]
    assert settings.optim.betas == tuple(defaults["optim"]["betas"])
    assert settings.train.checkpoint_every == defaults["train"]["checkpoint_every"]


def test_plan_resolves_lengths_warmup_and_the_scaled_lr():
    plan = Settings.from_config(_cfg(train__steps=None, train__epochs=3, optim__warmup_epochs=0.5,
                                     optim__decay_epochs=[2], optim__batch_size=64, optim__accum_steps=2)).plan(10, 2)
    assert (plan.total_steps, plan.warmup_steps, plan.decay_steps) == (30, 5, (20,))
    assert plan.lr == pytest.approx(4e-3 * 64 / 256)
    assert (plan.global_batch, plan.micro_batch, plan.processes) == (64, 16, 2)
    assert Settings.from_config(_cfg()).plan(10, 1).warmup_steps == 5  # 5 % of 100 steps when none is given


def test_the_plan_never_changes_the_config():
    cfg = _cfg()
    before = repr(cfg)
    Settings.from_config(cfg).plan(10, 1)
    assert repr(cfg) == before


@pytest.mark.parametrize(("changes", "message"), [
    ({"optim__batch_size": "x"}, "optim.batch_size must be a whole number"),
    ({"optim__bogus": 1}, "unknown key optim.bogus"),
    ({"train__epochs": 2}, "exactly one of train.steps and train.epochs"),
    ({"train__amp": "fp8"}, "train.amp must be one of"),
    ({"optim__warmup_steps": 3, "optim__warmup_epochs": 1}, "optim.warmup_steps or optim.warmup_epochs"),
    ({"optim__layer_decay": 1.5}, r"optim.layer_decay must lie in \(0, 1\]"),
    ({"run__progress": "yes"}, "run.progress must be a boolean"),
])
def test_errors_name_the_key(changes, message):
    with pytest.raises(MimlensError, match=message):
        Settings.from_config(_cfg(**changes))


def test_a_warmup_as_long_as_the_run_names_the_flag():
    with pytest.raises(MimlensError, match=r"optim.warmup_steps \(--warmup-steps\) gives a warm-up of 200 steps"):
        Settings.from_config(_cfg(optim__warmup_steps=200)).plan(10, 1)
