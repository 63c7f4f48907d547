"""A new analysis is one registry entry: this file alone defines one (the mean norm of each block's patch tokens,
an accumulator over batches) and ``analyze``, ``analyze --every-checkpoint``, ``compare`` and ``report`` run it —
nothing else in mimlens names it. The numbers are checked against a brute-force pass over all images at once."""

import json
from dataclasses import dataclass

import pytest
import torch
import yaml

from mimlens.accumulate import SumAccumulator
from mimlens.analysis.features import BlockFeatures
from mimlens.analysis.inputs import model_transform
from mimlens.analysis.registry import ANALYSES, Analysis, register
from mimlens.cli import main
from mimlens.data import build_dataset
from mimlens.models import build_model, model_section
from mimlens.models.snapshots import save_snapshot
from mimlens.report.blocks import Section, table


class TokenNormSums(SumAccumulator):
    """Per block: the sum of the patch tokens' L2 norms and their count."""

    def __init__(self, layers: list[str]):
        super().__init__(norm=(len(layers),), tokens=(len(layers),))
        self.layers = layers

    def update(self, captured: dict[str, torch.Tensor]) -> None:
        for i, name in enumerate(self.layers):
            self.sums["norm"][i] += captured[name].double().norm(dim=1).sum().item()
            self.sums["tokens"][i] += captured[name].shape[0]

    def compute(self) -> "TokenNorm":
        return TokenNorm(self.layers, (self.sums["norm"] / self.sums["tokens"]).tolist())


@dataclass
class TokenNorm:
    layers: list[str]
    mean_norm: list[float]

    def to_json(self) -> dict:
        return {"layers": self.layers, "mean_norm": self.mean_norm}

    @classmethod
    def from_json(cls, doc: dict) -> "TokenNorm":
        return cls(list(doc["layers"]), list(doc["mean_norm"]))


def measure(ctx):
    prep = model_transform(ctx.model)
    with BlockFeatures(ctx.model, unit="token", prefix_policy="drop") as features, torch.no_grad():
        sums = TokenNormSums(features.layers)
        for images in ctx.shard():
            ctx.model(prep(images))
            sums.update(features.pop())
    return sums.all_reduce_().compute()


def section(run, assets, docs, labels):
    rows = [[label, *doc["mean_norm"]] for doc, label in zip(docs, labels, strict=True)]
    return [Section("Token norms by block", table(["model", *docs[0]["layers"]], rows))]


def summary(doc):
    return "token norm by block: " + ", ".join(f"{v:.4f}" for v in doc["mean_norm"])


@pytest.fixture
def token_norm():
    register(Analysis("token_norm", "test-only: mean L2 norm of each block's patch tokens", measure=measure,
                      load=TokenNorm.from_json, section=section, summary=summary))
    yield
    del ANALYSES["token_norm"]


def brute_force(model, num_images: int) -> list[float]:
    """Every image in one batch, every block's tokens kept: the mean norm directly."""
    dataset = build_dataset("synthetic", img_size=32)
    images = torch.stack([dataset[i]["image"] for i in range(num_images)])
    outputs = []
    hooks = [block.register_forward_hook(lambda m, a, out: outputs.append(out)) for block in model.blocks]
    with torch.no_grad():
        model(model_transform(model)(images))
    for hook in hooks:
        hook.remove()
    return [out[:, model.num_prefix_tokens:].double().norm(dim=-1).mean().item() for out in outputs]


def test_a_registered_analysis_runs_in_analyze_compare_every_checkpoint_and_report(token_norm, tmp_path, capsys):
    analysed = tmp_path / "one"
    assert main(["analyze", "vit-micro-32", "--analyses", "attention,token_norm", "--num-images", "6",
                 "--batch-size", "4", "--out", str(analysed), "--no-progress"]) == 0
    doc = json.loads((analysed / "token_norm.json").read_text())
    expected = brute_force(build_model("vit-micro-32", seed=0).eval(), 6)
    assert doc["mean_norm"] == pytest.approx(expected, rel=1e-6)
    assert json.loads((analysed / "analysis.json").read_text())["analyses"] == ["attention", "token_norm"]
    assert "token norm by block" in capsys.readouterr().out
    assert "Token norms by block" in (analysed / "report.html").read_text()

    compared = tmp_path / "two"
    assert main(["compare", str(analysed), "vit-micro-32", "--seed", "1", "--analyses", "token_norm",
                 "--num-images", "6", "--batch-size", "3", "--out", str(compared), "--no-progress"]) == 0
    meta = json.loads((compared / "compare.json").read_text())
    assert meta["analyses"] == ["token_norm"]
    assert meta["models"][0]["token_norm_from"].startswith("analysis run")  # reused, not measured again
    assert json.loads((compared / "token_norm" / "one.json").read_text()) == doc
    measured = json.loads((compared / "token_norm" / "vit-micro-32.json").read_text())
    assert measured["mean_norm"] == pytest.approx(brute_force(build_model("vit-micro-32", seed=1).eval(), 6), rel=1e-6)
    assert not (compared / "cka_across.json").exists()
    assert main(["report", str(compared), "--out", str(tmp_path / "page")]) == 0
    assert "Token norms by block" in (tmp_path / "page" / "report.html").read_text()

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": model_section("vit-micro-32")}))
    encoders = {step: build_model("vit-micro-32", seed=step) for step in (3, 7)}
    for step, encoder in encoders.items():
        save_snapshot(encoder, run, step)
    over = tmp_path / "over"
    assert main(["analyze", str(run), "--every-checkpoint", "--analyses", "token_norm", "--num-images", "6",
                 "--out", str(over), "--no-progress"]) == 0
    for step, encoder in encoders.items():
        step_doc = json.loads((over / "token_norm" / f"step_{step}.json").read_text())
        assert step_doc["mean_norm"] == pytest.approx(brute_force(encoder.eval(), 6), rel=1e-6)
    assert not (over / "attention_over_training.json").exists()


def test_an_unknown_analysis_is_refused_before_anything_runs(tmp_path, capsys):
    assert main(["analyze", "vit-micro-32", "--analyses", "attention,tokn_norm", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "tokn_norm" in err and "attention" in err and not (tmp_path / "x").exists()
