import pytest
import torch

from mimlens.errors import MimlensError
from mimlens.models import build_model, drop_last_blocks
from mimlens.tasks.backbone import feature_map, pooled_features
from mimlens.tasks.classification import Classifier, LinearProbe
from mimlens.tasks.depth import DepthModel
from mimlens.tasks.pose import PoseModel
from mimlens.tasks.tracking import OneStreamTracker

SMALL_SWIN = {"embed_dim": 16, "num_heads": (1, 2, 4)}  # swin-tiny-64's depths 2-2-6 and window 4, narrower

# (preset, image side, dropped blocks, expected last feature map (C, h, w))
BACKBONES = [
    ("vit-micro-32", 32, 0, (48, 4, 4)),
    ("vit-micro-32", 32, 2, (48, 4, 4)),
    ("swin-tiny-64", 64, 0, (64, 4, 4)),
    ("swin-tiny-64", 64, 1, (64, 4, 4)),
    ("swin-tiny-64", 64, 6, (32, 8, 8)),  # the whole last stage removed: stride 8, half the width
]


def _build(name):
    return build_model(name, **(SMALL_SWIN if name.startswith("swin") else {}))


@pytest.fixture(params=BACKBONES, ids=lambda b: f"{b[0]}-drop{b[2]}")
def backbone(request):
    name, size, k, fmap = request.param
    return drop_last_blocks(_build(name), k).eval(), size, fmap


def test_feature_map_shape(backbone):
    model, size, fmap = backbone
    assert feature_map(model, torch.randn(2, 3, size, size)).shape == (2, *fmap)


def test_depth_head_outputs_input_resolution_and_range(backbone):
    model, size, _ = backbone
    depth = DepthModel(model, (size, size), max_depth=10.0, channels=8).eval()
    out = depth(torch.randn(2, 3, size, size))
    assert out.shape == (2, size, size) and (out > 0).all() and (out < 10).all()
    assert depth(torch.randn(2, 3, size, size), size=(20, 30)).shape == (2, 20, 30)


def test_pose_head_heatmaps_are_four_times_the_feature_grid(backbone):
    model, size, (_, h, w) = backbone
    pose = PoseModel(model, num_keypoints=5, image_size=(size, size), channels=8).eval()
    assert pose.heatmap_size == (4 * h, 4 * w)
    assert pose(torch.randn(2, 3, size, size)).shape == (2, 5, 4 * h, 4 * w)


def test_classifier_and_probe_shapes(backbone):
    model, size, (c, _, _) = backbone
    images = torch.randn(2, 3, size, size)
    probe = LinearProbe(model, 7, c, pool="avg").eval()
    assert probe(images).shape == (2, 7)
    assert Classifier(model, 7).eval()(images).shape == (2, 7)


def test_vit_feature_map_is_the_patch_tokens_in_raster_order():
    model = build_model("vit-micro-32").eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(images)  # (B, 1 + 16, C), CLS first
    fmap = feature_map(model, images)
    for r, c in [(0, 0), (0, 3), (2, 1), (3, 3)]:
        assert torch.equal(fmap[:, :, r, c], tokens[:, 1 + 4 * r + c])


def test_pooled_features_of_an_intermediate_block_match_a_manual_forward():
    model = build_model("vit-micro-32").eval()
    images = torch.randn(3, 3, 32, 32)
    x = model.norm_pre(model._pos_embed(model.patch_embed(images)))
    for block in model.blocks[:2]:
        x = block(x)
    assert torch.allclose(pooled_features(model, images, block=1, pool="cls"), x[:, 0], atol=1e-6)
    assert torch.allclose(pooled_features(model, images, block=1, pool="avg"), x[:, 1:].mean(1), atol=1e-6)
    final = model.forward_features(images)
    assert torch.allclose(pooled_features(model, images, pool="cls"), final[:, 0])


def test_swin_pooling_and_cls_error():
    model = _build("swin-tiny-64").eval()
    images = torch.randn(2, 3, 64, 64)
    assert pooled_features(model, images, block=1, pool="avg").shape == (2, 16)  # block 1 of 10, in stage 0
    assert pooled_features(model, images, block=2, pool="avg").shape == (2, 32)  # block 2, first of stage 1
    assert pooled_features(model, images, pool="avg").shape == (2, 64)
    with pytest.raises(MimlensError, match="no CLS token"):
        pooled_features(model, images, pool="cls")


def test_tracker_with_dropped_blocks():
    model = drop_last_blocks(build_model("vit-micro-32", pos_embed="sincos"), 1)
    tracker = OneStreamTracker(model, template_size=16, search_size=32, head_channels=8).eval()
    out = tracker(torch.randn(1, 3, 16, 16), torch.randn(1, 3, 32, 32))
    assert out["score"].shape == (1, 4, 4) and out["offset"].shape == (1, 2, 4, 4)
