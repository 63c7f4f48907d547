"""The study file is checked in full before anything runs: every problem one line naming the key."""

import pytest
import yaml

from mimlens.errors import MimlensError
from mimlens.study.spec import load_study


def write(tmp_path, doc) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_a_valid_study_is_read_with_paths_relative_to_the_file_and_launch_defaults(tmp_path):
    (tmp_path / "ckpt.pth").write_bytes(b"")
    (tmp_path / "images").mkdir()
    study = load_study(write(tmp_path, {
        "models": {"simmim": {"source": "ckpt.pth", "arch": "vit-micro-32", "role": "mim"},
                   "deit": {"source": "timm:deit_tiny_patch16_224.fb_in1k", "pretrained": True, "role": "supervised"},
                   "own": {"pretrain": {"objective": "simmim", "recipe": "simmim_vit-tiny_synthetic64"},
                           "role": "mim"}},
        "analysis": {"data": "images", "num_images": 8},
        "probes": {"tasks": ["depth"], "data": "synthetic:16"},
        "finetune": {"depth": {"data": "synthetic:16", "drop_last": [0, 1]}},
    }))
    assert [m.name for m in study.models] == ["simmim", "deit", "own"]
    assert study.model("simmim").source == str(tmp_path / "ckpt.pth")
    assert study.model("deit").source == "timm:deit_tiny_patch16_224.fb_in1k"
    assert study.model("own").pretrain["recipe"].endswith("configs/simmim_vit-tiny_synthetic64.yaml")
    assert study.analysis["data"] == str(tmp_path / "images") and study.probes["data"] == "synthetic:16"
    assert study.finetune[0].drop_last == (0, 1)
    assert study.launch == {"processes": 1, "device": "cpu", "parallel": 1, "threads": None, "scheduler": "local"}


def test_a_slurm_launch_gets_the_defaults_of_the_keys_it_does_not_give(tmp_path):
    study = load_study(write(tmp_path, {
        "models": {"a": {"source": "vit-micro-32", "role": "mim"}},
        "launch": {"scheduler": "slurm", "processes": 4,
                   "slurm": {"partition": "gpu", "time": 240, "gpus_per_task": 4, "sbatch": {"mem": "64G"}}},
    }))
    assert study.launch["scheduler"] == "slurm" and study.launch["processes"] == 4
    assert study.launch["slurm"] == {"partition": "gpu", "time": 240, "nodes": 1, "gpus_per_task": 4,
                                     "cpus_per_task": 1, "signal_seconds": 120, "requeues": 3, "sbatch": {"mem": "64G"}}
    bare = load_study(write(tmp_path, {"models": {"a": {"source": "vit-micro-32", "role": "mim"}},
                                       "launch": {"scheduler": "slurm"}}))
    assert bare.launch["slurm"]["time"] == 60 and "partition" not in bare.launch["slurm"]


@pytest.mark.parametrize("doc,lines", [
    ({"modles": {}}, ["modles: unknown key", "models: missing"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mimm"}}}, ["models.a.role: 'mimm': expected one of mim"]),
    ({"models": {"a": {"source": "vit-micro-32"}}}, ["models.a.role: missing"]),
    ({"models": {"a": {"role": "mim"}}}, ["models.a: give exactly one of source"]),
    ({"models": {"a": {"source": "x", "pretrain": {"objective": "simmim"}, "role": "mim"}}},
     ["models.a: give exactly one of source"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim", "seed": -1}}},
     ["models.a.seed: -1: expected an integer >= 0"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim", "pretrained": True}}},
     ["models.a.pretrained: timm's pretrained weights need a source timm:NAME.TAG"]),
    ({"models": {"a": {"pretrain": {"objective": "dino"}, "role": "mim"}}},
     ["models.a.pretrain.objective: 'dino': expected one of simmim"]),
    ({"models": {"a": {"pretrain": {"objective": "simmim", "recipe": "nope"}, "role": "mim"}}},
     ["models.a.pretrain.recipe: 'nope': no such YAML file"]),
    ({"models": {"a b": {"source": "vit-micro-32", "role": "mim"}}}, ["models.a b: a model name is a folder name"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "analysis": {"num_images": "many"}},
     ["analysis.num_images: 'many': expected an integer >= 1"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "analysis": {"names": ["attention", "rank"]}},
     ["analysis.names: unknown analysis 'rank'"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "probes": {"tasks": ["det"]}},
     ["probes.tasks: 'det' has no frozen probe"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "finetune": {"segment": {"data": "x"}}},
     ["finetune.segment: unknown task"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "finetune": {"depth": {"drop_last": [0, -1]}}},
     ["finetune.depth.drop_last: [0, -1]: expected a non-empty list of integers >= 0", "finetune.depth.data: missing"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "launch": {"processes": 0, "gpus": 2}},
     ["launch.processes: 0: expected an integer >= 1", "launch.gpus: unknown key"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "launch": {"scheduler": "pbs"}},
     ["launch.scheduler: 'pbs': expected one of local, pool, slurm"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "launch": {"slurm": {"partition": "gpu"}}},
     ["launch.slurm: given, but launch.scheduler is not slurm"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "launch": {"scheduler": "slurm", "slurm": "gpu"}},
     ["launch.slurm: 'gpu': expected a mapping"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}},
      "launch": {"scheduler": "slurm", "slurm": {"partition": 3, "time": 0, "gpus": 1, "sbatch": {"mem": [64]}}}},
     ["launch.slurm.partition: 3: expected a non-empty string", "launch.slurm.time: 0: expected an integer >= 1",
      "launch.slurm.gpus: unknown key (expected one of partition, time, nodes", "launch.slurm.sbatch: {'mem': [64]}: "
      "expected a mapping of sbatch option names"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "claims_findings": "yes"},
     ["claims_findings: 'yes': expected true or false"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "random", "kwargs": "sincos"}}},
     ["models.a.kwargs: 'sincos': expected a mapping"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "analysis": {"overrides": [1]},
      "probes": {"overrides": "x"}},
     ["analysis.overrides: [1]: expected a mapping", "probes.overrides: 'x': expected a mapping"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "masks": {"img_size": 0, "ratio": 0.6},
      "bars": {"images": "all"}},
     ["masks.img_size: 0: expected an integer >= 1", "masks.ratio: unknown key", "bars.images: 'all': expected an"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "budget": {"analyze": -1, "probe": "long"}},
     ["budget.analyze: -1: expected minutes, a number >= 0", "budget.probe: 'long': expected minutes"]),
    ({"models": {"a": {"source": "vit-micro-32", "role": "mim"}}, "budget": [3]},
     ["budget: [3]: expected a mapping of stage kind -> expected minutes"]),
])
def test_every_problem_is_one_line_naming_the_file_and_key(tmp_path, doc, lines):
    path = write(tmp_path, doc)
    with pytest.raises(MimlensError) as caught:
        load_study(path)
    found = str(caught.value).splitlines()
    assert len(found) == len(lines)
    for line in lines:
        assert any(f.startswith(f"{path}: ") and line in f for f in found), (line, found)


def test_a_budget_sets_each_stages_minutes_and_a_sweep_costs_one_fine_tuning_per_setting(tmp_path):
    from mimlens.study.stages import study_stages

    models = {"mim": {"source": "vit-micro-32", "role": "mim"}, "sup": {"source": "vit-micro-32", "role": "supervised"}}
    study = load_study(write(tmp_path, {"models": models, "finetune": {"depth": {"data": "synthetic:8",
                                                                                "drop_last": [0, 1, 2]}},
                                        "budget": {"finetune_depth": 2.5, "findings": 0.5}}))
    minutes = {s.name: s.minutes for s in study_stages(study, tmp_path / "out")}
    assert minutes["finetune_depth_mim"] == 2.5 and minutes["finetune_depth_sup"] == 7.5
    assert minutes["findings"] == 0.5 and minutes["weights_mim"] == 0.0
    wrong = load_study(write(tmp_path, {"models": models, "budget": {"pretrain_simmim": 3}}))
    with pytest.raises(MimlensError, match="budget.pretrain_simmim: no stage of this study has that kind"):
        study_stages(wrong, tmp_path / "out")
