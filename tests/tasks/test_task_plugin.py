"""A new downstream task is one registry entry: this file alone defines one (the mean brightness of an image,
regressed from the backbone) with its fine-tuning and its frozen probe; ``finetune``, ``probe`` and ``report``
then run it end to end — nothing else in mimlens names it."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mimlens import distributed
from mimlens.cli import main
from mimlens.tasks.datasets import classification_set
from mimlens.tasks.images import normalize
from mimlens.tasks.objective import TaskObjective
from mimlens.tasks.probes.layerwise import Baseline, ProbeContext, RidgeTask, ridge_section
from mimlens.tasks.registry import TASKS, Task, register
from mimlens.tasks.setups import TaskSetup, eval_loader, square, synthetic_sizes


def brightness(items) -> torch.Tensor:
    return torch.stack([item["image"].double().mean() for item in items])


class SquaredError:
    """The probe's scorer: per-image squared error of the predicted brightness."""

    def __init__(self):
        self.items = []

    def update(self, pred, items, indices):
        self.add(pred.flatten(1).mean(1).cpu(), items, indices)

    def add(self, values, items, indices):
        self.items += ((torch.as_tensor(values).double() - brightness(items)) ** 2).tolist()

    def compute(self):
        values = distributed.gather_sharded(self.items)
        return {"mse": sum(values) / len(values)}, values


def probe_brightness(ctx: ProbeContext):
    sets = [classification_set(ctx.data, split, ctx.size, ctx.seed, n, ctx.difficulty, "fine_label")
            for split, n in (("train", ctx.num_train), ("val", ctx.num_eval))]

    def targets(items, grid):
        return brightness(items)[:, None, None], torch.ones(len(items), 1, dtype=torch.bool)

    def baseline():
        mean = float(brightness([sets[0][i] for i in range(len(sets[0]))]).mean())
        return Baseline("training mean", "the training images' mean brightness",
                        lambda indices, items: torch.full((len(items),), mean))

    task = RidgeTask("brightness", *sets, 1, True, targets, SquaredError, "mse", False,
                     "ridge on the mean patch token; squared error of the mean pixel value", baseline)
    return ridge_section(task, ctx)


class Regressor(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(encoder.num_features, 1)

    def forward(self, image):
        return self.head(self.encoder.forward_features(image).mean(1))[:, 0]


def setup_brightness(cfg, encoder, prep, run_dir):
    size, (num, num_eval) = square(prep["img_size"]), synthetic_sizes(cfg, 16)
    source, seed, difficulty = str(cfg["data"]["source"]), int(cfg["train"]["seed"]), cfg["data"]["synthetic"]
    train_set, eval_set = (classification_set(source, split, size, seed, n, difficulty, "fine_label")
                           for split, n in (("train", num), ("val", num_eval)))
    model = Regressor(encoder)

    def transform(item):
        return {"image": normalize(item["image"], prep["mean"], prep["std"]), "target": item["image"].mean()}

    def loss(model, batch):
        return {"loss": F.mse_loss(model(batch["image"]), batch["target"].float())}

    evidence = {}

    @torch.no_grad()
    def evaluate():
        errors = []
        for batch in eval_loader(eval_set, transform, cfg):
            errors += ((model(batch["image"]).double() - batch["target"].double()) ** 2).tolist()
        errors = distributed.gather_sharded(errors)
        evidence.update(unit="image", ids=list(range(len(errors))), per_item={"mse": errors}, baselines={})
        return {"mse": sum(errors) / len(errors)}, {"metric": "mean squared error of the mean pixel value"}

    return TaskSetup(TaskObjective(model, loss), train_set, transform, evaluate, evidence=evidence)


@pytest.fixture
def brightness_task():
    register(Task("brightness", "test-only: regress the mean pixel value", "semantic", "mse", False,
                  setup_brightness, probe=probe_brightness, title="brightness", columns=("mse",)))
    yield
    del TASKS["brightness"]


def test_a_registered_task_fine_tunes_probes_and_reports(brightness_task, tmp_path, capsys):
    run = tmp_path / "finetune"
    assert main(["finetune", "brightness", "--init", "vit-micro-32", "--data", "synthetic:16", "--num-eval", "8",
                 "--steps", "2", "--batch-size", "8", "--out", str(run), "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "brightness" and metrics["primary"]["name"] == "mse" and metrics["metrics"]["mse"] >= 0
    probe = tmp_path / "probe"
    assert main(["probe", "vit-micro-32", "--task", "brightness", "--data", "synthetic:16", "--num-eval", "8",
                 "--out", str(probe), "--no-progress"]) == 0
    doc = json.loads((probe / "probe.json").read_text())
    rows = doc["tasks"]["brightness"]["rows"]
    assert [r["block"] for r in rows] == list(range(len(doc["blocks"]))) and all(r["mse"] >= 0 for r in rows)
    assert "training mean" in doc["tasks"]["brightness"]["baselines"]
    assert "brightness" in capsys.readouterr().out
    assert main(["report", str(run)]) == 0 and (run / "report.html").exists()


def test_an_unregistered_task_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "brightness", "--init", "vit-micro-32"])
    assert "invalid choice: 'brightness'" in capsys.readouterr().err
