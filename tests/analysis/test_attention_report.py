"""``AttentionStats`` outputs (JSON contract, tidy CSV, uniform reference) and the attention figures."""

import csv
import json
import math

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from mimlens.analysis.attention import AttentionStats, attention_stats
from mimlens.errors import MimlensError
from mimlens.report.figures_attention import (
    plot_attention_distance,
    plot_attention_entropy,
    plot_head_kl,
    save_attention_figures,
)

CONTRACT = {"model", "num_images", "image_size", "prefix_policy", "dtype", "layers"}
LAYER_CONTRACT = {"name", "stage", "grid", "stride_px", "window", "num_keys", "distance_px", "distance_frac",
                  "entropy", "entropy_norm", "head_kl", "head_kl_mean", "uniform"}  # fmt: skip


@pytest.fixture(scope="module")
def vit_stats():
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2, reg_tokens=1)
    return attention_stats(model, torch.rand(3, 3, 32, 32), prefix_policy="keep")


@pytest.fixture(scope="module")
def swin_stats():
    model = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2))
    return attention_stats(model, torch.rand(2, 3, 32, 32))


def test_json_follows_the_contract_and_round_trips(vit_stats, swin_stats):
    for stats in (vit_stats, swin_stats):
        doc = json.loads(json.dumps(stats.to_json("timm:tiny"), allow_nan=False))
        assert CONTRACT <= set(doc) and doc["model"] == "timm:tiny" and doc["num_images"] == stats.num_images
        assert doc["prefix_policy"] == stats.prefix_policy and doc["dtype"] == "float32"
        for layer, info in zip(doc["layers"], stats.layers, strict=True):
            assert LAYER_CONTRACT <= set(layer)
            assert len(layer["entropy"]) == info.num_heads and len(layer["head_kl"]) == info.num_heads
        back = AttentionStats.from_json(doc)
        assert back.layers == stats.layers and back.image_size == stats.image_size
        for key in ("distance_px", "distance_frac", "entropy", "entropy_norm", "head_kl", "queries"):
            for a, b in zip(getattr(back, key), getattr(stats, key), strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    layer = swin_stats.to_json()["layers"][1]
    assert layer["window"] == [4, 4] and layer["shift"] == [2, 2] and layer["stride_px"] == [4, 4]
    assert swin_stats.to_json()["layers"][0]["head_kl_mean"] is None  # one head: no pairs


def test_csv_rows_are_tidy_and_save_writes_the_run_files(vit_stats, tmp_path):
    rows = vit_stats.to_csv_rows()
    distance = {(layer, head): value for layer, head, metric, value in rows if metric == "distance_px"}
    assert distance[("blocks.2", 1)] == vit_stats.distance_px[2][1].item()
    kl = {(layer, head): value for layer, head, metric, value in rows if metric == "head_kl"}
    assert kl[("blocks.0", 0)] == pytest.approx(vit_stats.head_kl[0][0, 1].item())
    paths = vit_stats.save(tmp_path, model="timm:tiny")
    with open(paths["csv"]) as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) and set(written[0]) == {"layer", "head", "metric", "value"}
    assert json.loads(paths["json"].read_text())["model"] == "timm:tiny"


def test_uniform_reference_has_the_uniform_values_and_no_head_diversity(vit_stats):
    reference = vit_stats.uniform_reference()
    n = 16 + 2  # keep policy: patches, CLS and one register token are all keys
    assert reference.entropy[0].tolist() == pytest.approx([math.log(n)] * 2, rel=1e-12)
    assert reference.entropy_norm[0].tolist() == pytest.approx([1.0, 1.0], rel=1e-12)
    assert torch.equal(reference.head_kl[1], torch.zeros(2, 2, dtype=torch.float64))
    assert reference.layer_names == vit_stats.layer_names and reference.model.startswith("uniform attention")


def is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_for_one_and_several_models(vit_stats, swin_stats, tmp_path):
    paths = save_attention_figures(vit_stats, tmp_path / "one", title="tiny ViT")
    assert set(paths) == {"attention_distance", "attention_entropy", "head_kl"}
    assert all(is_png(p) and p.parent == tmp_path / "one" for p in paths.values())
    (tmp_path / "swin.json").write_text(json.dumps(swin_stats.to_json()))
    several = [vit_stats, swin_stats.to_json(), tmp_path / "swin.json"]
    labels = ["vit", "swin", "swin again"]
    assert is_png(plot_attention_distance(several, tmp_path / "d.png", labels, unit="frac", layout="side"))
    assert is_png(plot_attention_entropy(several, tmp_path / "e.png", labels, normalised=True))
    assert is_png(plot_head_kl(several, tmp_path / "k.png", labels))


def test_figure_arguments_are_checked(vit_stats, tmp_path):
    with pytest.raises(MimlensError, match="2 labels for 1 models"):
        plot_head_kl(vit_stats, tmp_path / "k.png", labels=["a", "b"])
    with pytest.raises(MimlensError, match="unit 'mm'"):
        plot_attention_distance(vit_stats, tmp_path / "d.png", unit="mm")
    with pytest.raises(MimlensError, match="layout 'grid'"):
        plot_head_kl(vit_stats, tmp_path / "k.png", layout="grid")
    with pytest.raises(MimlensError, match="cannot read attention statistics from"):
        plot_head_kl(tmp_path / "missing.json", tmp_path / "k.png")
    with pytest.raises(MimlensError, match="malformed field"):
        plot_head_kl({"layers": [{}]}, tmp_path / "k.png")


def test_swin_blocks_are_grouped_by_stage_on_the_x_axis(vit_stats, swin_stats):
    from mimlens.report.figures_attention import _positions

    assert _positions(swin_stats) == ([0.0, 1.0, 2.8, 3.8], ["0.0", "0.1", "1.0", "1.1"], [pytest.approx(1.9)])
    assert _positions(vit_stats) == ([0.0, 1.0, 2.0], ["0", "1", "2"], [])


def test_near_uniform_heads_are_drawn_flat_on_an_axis_around_the_uniform_line(vit_stats, tmp_path, monkeypatch):
    from mimlens.report import figures_attention

    drawn = []
    monkeypatch.setattr(figures_attention, "save_png", lambda figure, path: drawn.append(figure) or path)
    doc = vit_stats.to_json("flat")
    for layer in doc["layers"]:  # every head within 0.03 px / 0.003 nats of uniform attention
        layer["distance_px"] = [layer["uniform"]["distance_px"] + d for d in (-0.03, 0.03)]
        layer["entropy"] = [layer["uniform"]["entropy"] - d for d in (0.001, 0.003)]
    plot_attention_distance(doc, tmp_path / "d.png")
    plot_attention_entropy(doc, tmp_path / "e.png")
    for figure, key in zip(drawn, ("distance_px", "entropy"), strict=True):
        uniform = [layer["uniform"][key] for layer in doc["layers"]]
        low, high = figure.axes[0].get_ylim()
        assert low <= 0.9 * min(uniform) + 1e-9 and high >= 1.1 * max(uniform) - 1e-9, key
    spread = torch.tensor([[5.0, 30.0]] * 3)  # far from uniform: the data sets the limits, not the margin
    doc["layers"] = [{**layer, "distance_px": row.tolist()} for layer, row in zip(doc["layers"], spread, strict=True)]
    plot_attention_distance(doc, tmp_path / "d2.png")
    low, high = drawn[-1].axes[0].get_ylim()
    assert low < 5.0 and high > 30.0
