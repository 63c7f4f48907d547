"""The demo's presets as shipped study files: ``mimlens study studies/demo-<preset>.yaml`` runs every stage of
``mimlens demo --preset <preset>`` with the same configuration, so the two write the same numbers. Checked here
stage by stage from the stages both build (nothing runs)."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from mimlens.demo.presets import get_preset
from mimlens.demo.stages import demo_stages
from mimlens.io import save_json, save_text
from mimlens.study.closing import f2_avgdist_row
from mimlens.study.spec import load_study
from mimlens.study.stages import study_stages

STUDIES = Path(__file__).resolve().parents[2] / "studies"
STUDY_ONLY = {"weights_random_init", "findings"}  # the demo's init and bars stages: export and closing here
DEMO_ONLY = {"init", "bars"}


def plain(obj):
    return json.loads(json.dumps(obj))


def stages_of_both(preset_name: str, tmp_path: Path):
    preset = get_preset(preset_name)
    demo = {s.name: s for s in demo_stages(preset, tmp_path / "demo")}
    study = {s.name: s for s in study_stages(load_study(STUDIES / f"demo-{preset_name}.yaml"), tmp_path / "study")}
    return preset, demo, study


@pytest.mark.parametrize("preset_name", ["quick", "default", "gpu"])
def test_the_study_file_has_every_stage_of_the_demo(preset_name, tmp_path):
    _, demo, study = stages_of_both(preset_name, tmp_path)
    assert set(demo) - DEMO_ONLY == set(study) - STUDY_ONLY


@pytest.mark.parametrize("preset_name", ["quick", "default", "gpu"])
def test_each_stage_runs_with_the_demo_configuration(preset_name, tmp_path):
    preset, demo, study = stages_of_both(preset_name, tmp_path)
    for name, stage in study.items():
        if name in STUDY_ONLY:
            continue
        ours, theirs = plain(stage.config), plain(demo[name].key.get("config"))
        if name.startswith(("pretrain_", "finetune_")):  # the demo leaves its run section out of the key
            assert ours.pop("run", {}).get("num_workers", 0) == preset.workers
        if name.startswith("pretrain_"):
            assert stage.kind == f"pretrain_{theirs.pop('objective')}"
        elif name.startswith("finetune_"):
            source = theirs["data"].pop("source")
            assert stage.argv[stage.argv.index("--data") + 1] == source
            assert theirs.pop("task") == name.split("_")[1]
            theirs.pop("init")
            sweep = theirs.pop("sweep_drop")
            assert (stage.argv[stage.argv.index("--sweep-drop") + 1] if "--sweep-drop" in stage.argv else None) == \
                (",".join(map(str, sweep)) if sweep else None)
        elif name == "masks":
            assert stage.argv[:-2] == demo[name].key["argv"]
            continue
        assert ours == theirs, name


def test_the_random_initialisation_is_the_one_the_pretrainings_start_from(tmp_path):
    _, demo, study = stages_of_both("default", tmp_path)
    init, export = demo["init"].key, study["weights_random_init"].key
    assert (export["source"], export["kwargs"], export["seed"]) == (init["arch"], init["kwargs"], init["seed"])


def test_f2_reads_the_avgdist_sweep_at_the_masking_of_the_pretrained_mim_model(tmp_path):
    """The study's F2 row is the AvgDist row at the mask patch and ratio the MIM model was pre-trained with."""
    from mimlens.findings import rules

    study = load_study(STUDIES / "demo-quick.yaml")
    out = tmp_path / "out"
    avgdist = {"img_size": 32, "moderate_band_px": [1.0, 2.0],
               "settings": [{"mask_patch_size": 8, "ratio": 0.6, "avg_dist_px": 1.5},
                            {"mask_patch_size": 16, "ratio": 0.6, "avg_dist_px": 3.0}]}
    assert f2_avgdist_row(study, out, False) is None  # nothing measured yet
    save_json(avgdist, out / "masks" / "avgdist.json")
    config = copy.deepcopy(study.model("simmim").pretrain["overrides"])
    config["simmim"] = {"mask_patch": 16, "mask_ratio": 0.6}
    save_text(yaml.safe_dump(config), out / "pretrain" / "simmim" / "config.yaml")
    row = f2_avgdist_row(study, out, True)
    assert row == rules.f2_avgdist(avgdist, 16, 0.6, True)
    assert row["numbers"]["pre-training AvgDist px"] == 3.0 and row["numbers"]["settings in band"] == 1
