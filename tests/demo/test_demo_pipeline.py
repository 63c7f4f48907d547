"""Stages of the demo: when a stage counts as done, what a changed key redoes, presets and their budget."""

import dataclasses
import json

import pytest

from mimlens.demo.pipeline import (
    Stage,
    build_stages,
    is_done,
    prepare_out,
    run_stage,
)
from mimlens.demo.presets import PRESETS, QUICK, expected_minutes, get_preset, stage_kinds
from mimlens.errors import MimlensError
from mimlens.study.schedule import ready_stages, schedule_minutes


def writing_stage(out, key, calls, resumable=False):
    """A stage that writes ``out/step/result.txt`` and counts its runs."""

    def action():
        calls.append(key)
        (out / "step").mkdir(parents=True, exist_ok=True)
        (out / "step" / "result.txt").write_text(json.dumps(key))

    return Stage("step", out / "step", ("result.txt",), key, action, 0.1, resumable)


def test_done_needs_outputs_and_the_same_key(tmp_path):
    calls = []
    stage = writing_stage(tmp_path, {"steps": 10, "dims": (1, 2)}, calls)
    assert not is_done(tmp_path, stage)
    run_stage(tmp_path, stage)
    assert is_done(tmp_path, stage)  # tuples in the key compare equal after the JSON round trip
    record = json.loads((tmp_path / "stages" / "step.json").read_text())
    assert record["finished"] is True and record["seconds"] >= 0 and record["expected_minutes"] == 0.1
    assert not is_done(tmp_path, writing_stage(tmp_path, {"steps": 11, "dims": (1, 2)}, calls))
    (tmp_path / "step" / "result.txt").unlink()
    assert not is_done(tmp_path, stage)


def test_changed_key_starts_the_stage_over(tmp_path):
    calls = []
    run_stage(tmp_path, writing_stage(tmp_path, {"steps": 10}, calls))
    (tmp_path / "step" / "stale.txt").write_text("from the old configuration")
    run_stage(tmp_path, writing_stage(tmp_path, {"steps": 20}, calls))
    assert not (tmp_path / "step" / "stale.txt").exists()
    assert calls == [{"steps": 10}, {"steps": 20}]


def test_interrupted_resumable_stage_keeps_its_directory(tmp_path):
    def crash():
        (tmp_path / "step").mkdir()
        (tmp_path / "step" / "checkpoint.pt").write_text("half way")
        raise KeyboardInterrupt

    stage = Stage("step", tmp_path / "step", ("result.txt",), {"steps": 10}, crash, 0.1, resumable=True)
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path, stage)
    assert not is_done(tmp_path, stage)
    run_stage(tmp_path, writing_stage(tmp_path, {"steps": 10}, [], resumable=True))
    assert (tmp_path / "step" / "checkpoint.pt").is_file()  # resumed, not cleared


def test_prepare_out_refuses_other_directories_and_fresh_clears_a_demo(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("objective: simmim\n")
    with pytest.raises(MimlensError, match="holds a pre-training run"):
        prepare_out(other, QUICK, fresh=True)
    demo = tmp_path / "demo"
    prepare_out(demo, QUICK, fresh=False)
    (demo / "old.txt").write_text("x")
    prepare_out(demo, QUICK, fresh=False)
    assert (demo / "old.txt").is_file()
    prepare_out(demo, QUICK, fresh=True)
    assert not (demo / "old.txt").exists() and (demo / "config.yaml").is_file()


def test_stages_in_order_with_sweeps_for_supervised_geometry(tmp_path):
    stages = build_stages(QUICK, tmp_path)
    names = [s.name for s in stages]
    assert names[:5] == ["init", "pretrain_simmim", "pretrain_supervised", "pretrain_moco", "bars"]
    assert len(names) == len(stage_kinds(QUICK)) - 1  # the findings stage runs after them
    sweeps = [s.name for s in stages if s.outputs == ("drop_sweep.json",)]
    assert sweeps == ["finetune_depth_supervised", "finetune_pose_supervised"]


def test_a_longer_pretraining_redoes_what_reads_it(tmp_path):
    longer = dataclasses.replace(QUICK, pretrain_steps={**QUICK.pretrain_steps, "simmim": 99})
    before = {s.name: s.key for s in build_stages(QUICK, tmp_path)}
    after = {s.name: s.key for s in build_stages(longer, tmp_path)}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"pretrain_simmim", "bars", "analyze_simmim", "compare", "probe_simmim",
                       *(f"finetune_{t}_simmim" for t in ("cls", "depth", "pose", "track"))}
    # what reads a stage's output (its key embeds that stage's key) waits for it when stages run in parallel
    needs = {s.name: set(s.needs) for s in build_stages(QUICK, tmp_path)}

    def upstream(name):
        return needs[name].union(*(upstream(n) for n in needs[name])) if needs[name] else set()

    assert {name for name in changed if "pretrain_simmim" in upstream(name)} == changed - {"pretrain_simmim"}
    assert all(list(needs).index(n) < list(needs).index(name) for name in needs for n in needs[name])


def test_schedule_minutes_of_a_small_graph():
    def stage(name, minutes, needs=()):
        return Stage(name, None, (), {}, lambda: None, minutes, needs=needs)

    stages = [stage("a", 10), stage("b", 5, ("a",)), stage("c", 3), stage("d", 4, ("c",))]
    assert schedule_minutes(stages, 1) == 22
    # two workers: a on one (0-10); b waits for a (10-15); c (0-3) and d (3-7) on the other
    assert schedule_minutes(stages, 2, after=1) == 16
    assert schedule_minutes(stages, 4) == 15


def test_the_longest_ready_stage_starts_first():
    def stage(name, minutes, needs=()):
        return Stage(name, None, (), {}, lambda: None, minutes, needs=needs)

    stages = [stage("a", 2), stage("b", 2), stage("c", 4)]
    assert [s.name for s in ready_stages(stages, {"a", "b", "c"})] == ["c", "a", "b"]
    assert schedule_minutes(stages, 2) == 4  # c (0-4) beside a (0-2) and b (2-4); in list order it would be 6
    waiting = [stage("d", 9, ("a",)), stage("e", 1)]
    assert [s.name for s in ready_stages(waiting, {"a", "d", "e"})] == ["e"]  # d waits for a


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_stage_kind_has_a_budget(name):
    preset = get_preset(name)
    assert all(kind in preset.budget for kind, _ in stage_kinds(preset))


@pytest.mark.parametrize("name, minutes", [("default", 60), ("quick", 3)])
def test_budgets_fit_the_promised_time(name, minutes, tmp_path):
    preset = get_preset(name)
    after = expected_minutes(preset, "findings", "")
    assert schedule_minutes(build_stages(preset, tmp_path), preset.parallel, after) <= minutes


def test_unknown_preset_names_the_choices():
    with pytest.raises(MimlensError, match="quick, default, gpu"):
        get_preset("huge")
