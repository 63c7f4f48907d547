"""Block features and cka_matrix on tiny random timm ViT, Swin and SwinV2 models; JSON and heat map."""

import json

import pytest
import torch

from mimlens.analysis.cka import CKAResult, MinibatchCKA, cka_matrix, feature_cka
from mimlens.analysis.features import BlockFeatures, block_names, block_samples, image_batches
from mimlens.analysis.inputs import model_transform
from mimlens.errors import MimlensError

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(1)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=3,
                             embed_dim=32, num_heads=2, num_classes=0, reg_tokens=2).eval()


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(2)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, embed_dim=16,
                             depths=(2, 1), num_heads=(1, 2), window_size=4, num_classes=0).eval()


@pytest.fixture(scope="module")
def swinv2():
    torch.manual_seed(3)
    return timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=32, embed_dim=16,
                             depths=(1, 2), num_heads=(1, 2), window_size=4, num_classes=0).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(22, 3, 32, 32, generator=torch.Generator().manual_seed(4))


def captured(model, x, **kwargs):
    with torch.no_grad(), BlockFeatures(model, **kwargs) as features:
        model(x)
        return features.pop()


# -- block features -----------------------------------------------------------------------------------------------


def test_block_names_follow_forward_order(vit, swin):
    assert block_names(vit) == ["blocks.0", "blocks.1", "blocks.2"]
    assert block_names(swin) == ["layers.0.blocks.0", "layers.0.blocks.1", "layers.1.blocks.0"]
    with pytest.raises(MimlensError, match="no transformer blocks"):
        block_names(torch.nn.Linear(2, 2))


def test_vit_units_and_prefix_policies_against_forward_intermediates(vit, images):
    x = images[:4]
    with torch.no_grad():
        reference = vit.forward_intermediates(x, intermediates_only=True, output_fmt="NLC",
                                              return_prefix_tokens=True)
    patches, prefix = reference[1]  # (4, 16, 32) patch tokens, (4, 3, 32) CLS + 2 registers
    assert prefix.shape[1] == 3
    renorm = captured(vit, x)["blocks.1"]
    torch.testing.assert_close(renorm, patches.flatten(1))
    torch.testing.assert_close(captured(vit, x, prefix_policy="drop")["blocks.1"], renorm)
    kept = torch.cat([prefix, patches], 1)
    torch.testing.assert_close(captured(vit, x, prefix_policy="keep")["blocks.1"], kept.flatten(1))
    torch.testing.assert_close(captured(vit, x, unit="pooled")["blocks.1"], patches.mean(1))
    torch.testing.assert_close(captured(vit, x, unit="pooled", prefix_policy="keep")["blocks.1"], kept.mean(1))
    torch.testing.assert_close(captured(vit, x, unit="pooled", pooled="cls")["blocks.1"], prefix[:, 0])
    torch.testing.assert_close(captured(vit, x, unit="token")["blocks.1"], patches.reshape(64, 32))


@pytest.mark.parametrize("name", ["swin", "swinv2"])
def test_swin_blocks_are_channels_last(name, request, images):
    model = request.getfixturevalue(name)
    x = images[:3]
    with torch.no_grad():
        stages = model.forward_intermediates(x, intermediates_only=True)  # NCHW, output of each stage
    features = captured(model, x, unit="token")
    last = [n for n in block_names(model) if n.startswith("layers.0.")][-1]
    torch.testing.assert_close(features[last], stages[0].permute(0, 2, 3, 1).reshape(-1, stages[0].shape[1]))
    pooled = captured(model, x, unit="pooled")
    torch.testing.assert_close(pooled["layers.1.blocks.0" if name == "swin" else "layers.1.blocks.1"],
                               stages[1].mean((2, 3)))
    with pytest.raises(MimlensError, match="CLS"):
        captured(model, x, unit="pooled", pooled="cls")


def test_hooks_are_removed_on_exit_even_after_an_error(vit, images):
    with pytest.raises(RuntimeError), torch.no_grad(), BlockFeatures(vit):
        vit(images[:2, :2])  # wrong channel count
    assert all(not m._forward_hooks for m in vit.modules())


def test_block_samples_rejects_other_shapes():
    with pytest.raises(MimlensError, match=r"expected \(B, T, D\)"):
        block_samples(torch.zeros(2, 3))
    with pytest.raises(MimlensError, match="num_prefix_tokens = 0"):
        block_samples(torch.zeros(2, 4, 3), unit="pooled", pooled="cls")
    with pytest.raises(MimlensError, match="unit='pixel'"):
        BlockFeatures(torch.nn.Sequential(), unit="pixel")


# -- batching and preprocessing -----------------------------------------------------------------------------------


def test_image_batches_rechunk_and_merge_a_tiny_tail():
    stream = [torch.zeros(5, 3, 2, 2), (torch.zeros(7, 3, 2, 2), "labels"), {"image": torch.zeros(10, 3, 2, 2)}]
    assert [len(b) for b in image_batches(stream, 8)] == [8, 8, 6]  # a tail of 6 >= 4 stays a batch
    assert [len(b) for b in image_batches(torch.zeros(19, 3, 2, 2), 8)] == [8, 11]  # tail of 3 joins
    assert [len(b) for b in image_batches(torch.zeros(3, 3, 2, 2), 8)] == [3]
    with pytest.raises(MimlensError, match="'image' key"):
        list(image_batches([{"img": torch.zeros(2, 3, 2, 2)}], 8))
    with pytest.raises(MimlensError, match="batch_size=2"):
        list(image_batches(torch.zeros(8, 3, 2, 2), 2))


def test_default_transform_resizes_and_normalises_with_the_data_config(vit, swin):
    raw = torch.rand(2, 3, 48, 48)
    out = model_transform(vit)(raw)
    assert out.shape == (2, 3, 32, 32)
    config = timm.data.resolve_model_data_config(vit)
    resized = torch.nn.functional.interpolate(raw, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
    mean, std = torch.tensor(config["mean"]).view(1, 3, 1, 1), torch.tensor(config["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (resized - mean) / std)
    with pytest.raises(MimlensError, match=r"raw RGB in \[0, 1\]"):
        model_transform(swin)(torch.randn(2, 3, 32, 32))


# -- cka_matrix ---------------------------------------------------------------------------------------------------


def test_within_model_matrix_equals_direct_cka_of_captured_features(vit, images):
    result = cka_matrix(vit, images, batch_size=32)  # one batch of 22: minibatch CKA = full debiased CKA
    assert result.layers_a == result.layers_b == ["blocks.0", "blocks.1", "blocks.2"]
    assert result.matrix.shape == (3, 3) and result.num_images == 22 and result.within
    torch.testing.assert_close(result.matrix.diagonal(), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(result.matrix, result.matrix.T)
    features = captured(vit, model_transform(vit)(images))
    expected = torch.tensor([[feature_cka(features[a], features[b], debiased=True) for b in result.layers_b]
                             for a in result.layers_a], dtype=torch.float64)
    torch.testing.assert_close(result.matrix, expected, rtol=0, atol=1e-10)
    assert "unbiased HSIC" in result.estimator and result.unit == "image" and result.notes == []


def test_batches_match_the_accumulator_fed_by_hand(vit, images):
    transform = model_transform(vit)
    accumulator = MinibatchCKA(block_names(vit), form="features")
    for batch in (images[:8], images[8:16], images[16:]):
        accumulator.update(captured(vit, transform(batch), unit="token"))
    result = cka_matrix(vit, images, unit="token", batch_size=8)
    torch.testing.assert_close(result.matrix, accumulator.compute(), rtol=0, atol=1e-12)
    assert "feature space" in result.estimator


def test_across_models_with_their_own_preprocessing(vit, swin, images):
    raw = torch.nn.functional.interpolate(images, size=(40, 40), mode="bilinear").clamp(0, 1)
    result = cka_matrix(vit, raw, swin, unit="pooled", batch_size=32)
    assert result.matrix.shape == (3, 3) and not result.within
    assert result.layers_b == block_names(swin) and result.model_b == "swin_tiny_patch4_window7_224"

    def by_hand(model):  # resize to 32 px, then the model's own mean and std (ViT 0.5, Swin ImageNet)
        config = timm.data.resolve_model_data_config(model)
        x = torch.nn.functional.interpolate(raw, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
        return (x - torch.tensor(config["mean"]).view(1, 3, 1, 1)) / torch.tensor(config["std"]).view(1, 3, 1, 1)

    a, b = captured(vit, by_hand(vit), unit="pooled"), captured(swin, by_hand(swin), unit="pooled")
    expected = torch.tensor([[feature_cka(a[i], b[j], debiased=True) for j in result.layers_b]
                             for i in result.layers_a], dtype=torch.float64)
    torch.testing.assert_close(result.matrix, expected, rtol=0, atol=1e-10)


def test_model_against_itself_across_is_the_within_matrix(swinv2, images):
    within = cka_matrix(swinv2, images, batch_size=8)
    across = cka_matrix(swinv2, images, swinv2, batch_size=8)
    torch.testing.assert_close(across.matrix, within.matrix, rtol=0, atol=1e-12)


def test_passes_add_reshuffled_estimates_and_a_spread(swin, images):
    result = cka_matrix(swin, images, batch_size=8, passes=3)
    assert result.spread is not None and result.spread.shape == result.matrix.shape
    assert result.spread.diagonal().abs().max() < 1e-12  # self-similarity is exactly 1 in every pass
    assert result.spread.max() > 0 and "3 reshuffled passes" in result.estimator


def test_argument_errors(vit, images):
    with pytest.raises(MimlensError, match="full-data"):
        cka_matrix(vit, images, kernel="rbf", batch_size=8)
    with pytest.raises(MimlensError, match="unit='token' needs kernel='linear'"):
        cka_matrix(vit, images, unit="token", kernel="rbf")
    with pytest.raises(MimlensError, match="passes > 1"):
        cka_matrix(vit, [images], passes=2)
    with pytest.raises(MimlensError, match=r"raw RGB in \[0, 1\]"):
        cka_matrix(vit, images * 4 - 2)
    assert all(not m._forward_hooks for m in vit.modules())


def test_eval_mode_is_restored(images):
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              embed_dim=16, num_heads=2, num_classes=0, drop_path_rate=0.5).train()
    first = cka_matrix(model, images[:8]).matrix
    assert model.training and all(m.training for m in model.modules())
    torch.testing.assert_close(cka_matrix(model, images[:8]).matrix, first)  # drop path off while measuring


def test_rbf_single_batch_and_a_dead_layer_note(swin, images):
    result = cka_matrix(swin, images, kernel="rbf", batch_size=32)
    torch.testing.assert_close(result.matrix.diagonal(), torch.ones(3, dtype=torch.float64))
    assert result.estimator.startswith("RBF CKA")
    tiny = cka_matrix(swin, images[:3], batch_size=8)
    assert tiny.matrix.isnan().all() and any("fewer than 4" in n for n in tiny.notes)


# -- JSON and heat map --------------------------------------------------------------------------------------------


def test_json_round_trip_with_nan_cells(vit, swin, images):
    result = cka_matrix(vit, images, swin, batch_size=8, passes=2)
    result.matrix[0, 1] = float("nan")
    data = result.to_json()
    text = json.dumps(data, allow_nan=False)  # NaN became null: strict JSON
    assert {"estimator", "unit", "num_images", "layers_a", "layers_b", "matrix"} <= set(data)
    assert data["matrix"][0][1] is None and data["model_b"] == "swin_tiny_patch4_window7_224"
    back = CKAResult.from_json(json.loads(text))
    torch.testing.assert_close(back.matrix, result.matrix, equal_nan=True)
    torch.testing.assert_close(back.spread, result.spread)
    assert (back.layers_a, back.estimator, back.passes) == (result.layers_a, result.estimator, 2)
    with pytest.raises(MimlensError, match="missing the keys"):
        CKAResult.from_json({"matrix": []})


def test_heat_maps_are_written(vit, swin, images, tmp_path):
    from mimlens.report.figures_cka import plot_cka

    within = cka_matrix(vit, images, batch_size=8)
    across = cka_matrix(vit, images, swin, batch_size=8)
    across.matrix[1, 1] = float("nan")
    for result, name in ((within, "cka_within.png"), (across.to_json(), "cka_across.png")):
        path = plot_cka(result, tmp_path / name)
        assert path == tmp_path / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


# -- optional oracle ------------------------------------------------------------------------------------------------


def test_agrees_with_torch_cka(images):
    torch_cka = pytest.importorskip("torch_cka")
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(5)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=3,
                              embed_dim=32, num_heads=2, num_classes=0).eval()
    x = model_transform(model)(images[:16])
    layers = block_names(model)
    oracle = torch_cka.CKA(model, model, "a", "b", model1_layers=layers, model2_layers=layers)  # hooks stay
    loader = DataLoader(TensorDataset(x), batch_size=8)
    oracle.compare(loader, loader)
    # torch-cka flattens the whole block output, prefix tokens included, and weights equal batches equally
    ours = cka_matrix(model, x, batch_size=8, prefix_policy="keep", transform_a=torch.nn.Identity())
    torch.testing.assert_close(ours.matrix.float(), oracle.export()["CKA"].float(), rtol=0, atol=2e-3)
