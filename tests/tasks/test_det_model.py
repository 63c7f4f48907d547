"""Feature pyramids, anchors and RoI pooler matched to them, and the detector as a training objective."""

import pytest
import torch

from mimlens.errors import MimlensError
from mimlens.models import build_model, drop_last_blocks, preprocessing
from mimlens.tasks.detection import (
    LOSS_NAMES,
    DetectionObjective,
    SimpleFeaturePyramid,
    StagePyramid,
    build_detector,
    feature_pyramid,
)


def _vit(**kwargs):
    return build_model("vit-micro-32", img_size=64, **kwargs)  # patch 8, width 48: an 8x8 token grid


@pytest.mark.parametrize("scales, strides", [
    ((4.0, 2.0, 1.0, 0.5), {"0": 2, "1": 4, "2": 8, "3": 16, "pool": 32}),
    ((2.0, 1.0, 0.5), {"0": 4, "1": 8, "2": 16, "pool": 32}),
])
def test_simple_pyramid_on_a_vit_gives_vitdet_strides_and_channels(scales, strides):
    pyramid = feature_pyramid(_vit(), 64, out_channels=24, scales=scales)
    assert isinstance(pyramid, SimpleFeaturePyramid)
    assert pyramid.strides == strides
    assert pyramid.roi_levels == [name for name in strides if name != "pool"]
    maps = pyramid(torch.rand(2, 3, 64, 64))
    assert list(maps) == list(strides)
    for name, fmap in maps.items():
        assert fmap.shape == (2, 24, 64 // strides[name], 64 // strides[name])


@pytest.mark.parametrize("preset", ["swin-tiny-64", "swinv2-tiny-64"])
def test_stage_pyramid_on_swin_uses_every_stage(preset):
    pyramid = feature_pyramid(build_model(preset), 64, out_channels=32)
    assert isinstance(pyramid, StagePyramid)
    assert pyramid.strides == {"0": 4, "1": 8, "2": 16, "pool": 32}  # patch 4, three stages, one pooled level
    assert [norm.normalized_shape[0] for norm in pyramid.norms] == [48, 96, 192]
    maps = pyramid(torch.rand(1, 3, 64, 64))
    assert [tuple(m.shape) for m in maps.values()] == [(1, 32, 16, 16), (1, 32, 8, 8), (1, 32, 4, 4), (1, 32, 2, 2)]


def test_pyramid_follows_dropped_blocks():
    vit = drop_last_blocks(_vit(), 2)
    assert len(vit.blocks) == 1 and feature_pyramid(vit, 64).strides["2"] == 8
    swin = drop_last_blocks(build_model("swin-tiny-64"), 6)  # the whole last stage
    assert feature_pyramid(swin, 64, out_channels=16).strides == {"0": 4, "1": 8, "pool": 16}


def test_strides_that_are_not_powers_of_two_are_refused():
    vit = build_model("vit-micro-32", img_size=48, patch_size=6)  # stride 6: RoIAlign would round it to 8
    with pytest.raises(MimlensError, match="power-of-two strides"):
        feature_pyramid(vit, 48)


def test_anchors_and_pooler_are_matched_to_the_pyramid():
    backbone = _vit()
    prep = preprocessing(backbone)
    detector = build_detector(backbone, 8, 64, prep["mean"], prep["std"], out_channels=16, anchor_scale=3.0)
    generator = detector.rpn.anchor_generator
    assert [s[0] for s in generator.sizes] == [6.0, 12.0, 24.0, 48.0, 96.0]
    assert detector.rpn.head.cls_logits.out_channels == 3  # aspect ratios per location
    assert detector.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2", "3"]
    assert detector.roi_heads.box_predictor.cls_score.out_features == 9  # 8 categories + background
    maps = detector.backbone(torch.rand(1, 3, 64, 64))
    anchors_per_level = [3 * m.shape[-2] * m.shape[-1] for m in maps.values()]
    from torchvision.models.detection.image_list import ImageList

    anchors = generator(ImageList(torch.rand(1, 3, 64, 64), [(64, 64)]), list(maps.values()))
    assert anchors[0].shape == (sum(anchors_per_level), 4)
    centres = (anchors[0][:, :2] + anchors[0][:, 2:]) / 2
    level0 = centres[: anchors_per_level[0]]
    assert level0[:, 0].unique().tolist() == [float(2 * i) for i in range(32)]  # one row of cells, stride 2


def test_eval_mode_gives_at_most_the_configured_detections_in_input_pixels():
    backbone = _vit()
    prep = preprocessing(backbone)
    detector = build_detector(backbone, 3, 64, prep["mean"], prep["std"], out_channels=16, score_thresh=0.0,
                              detections_per_img=7).eval()
    with torch.no_grad():
        (out,) = detector([torch.rand(3, 64, 64)])
    assert len(out["boxes"]) <= 7 and set(out) == {"boxes", "labels", "scores"}
    assert out["boxes"].min() >= 0 and out["boxes"].max() <= 64
    assert set(out["labels"].tolist()) <= {1, 2, 3}


def _batch():
    boxes = torch.zeros(2, 5, 4)
    labels = torch.zeros(2, 5, dtype=torch.int64)
    boxes[0, :2] = torch.tensor([[4.0, 6.0, 30.0, 28.0], [36.0, 40.0, 60.0, 62.0]])
    labels[0, :2] = torch.tensor([1, 2])
    boxes[1, 0] = torch.tensor([10.0, 10.0, 50.0, 40.0])
    labels[1, 0] = 2
    return {"image": torch.rand(2, 3, 64, 64), "boxes": boxes, "labels": labels}


def test_objective_returns_every_loss_and_ignores_empty_slots():
    backbone = _vit()
    prep = preprocessing(backbone)
    detector = build_detector(backbone, 2, 64, prep["mean"], prep["std"], out_channels=16, rois_per_image=32)
    objective = DetectionObjective(detector).train()
    batch = _batch()
    torch.manual_seed(1)
    out = objective(batch)
    assert set(out) == {"loss", *LOSS_NAMES}
    assert out["loss"].item() == pytest.approx(sum(out[name].item() for name in LOSS_NAMES))
    targets = [{"boxes": batch["boxes"][0, :2], "labels": batch["labels"][0, :2]},
               {"boxes": batch["boxes"][1, :1], "labels": batch["labels"][1, :1]}]
    torch.manual_seed(1)
    direct = detector(list(batch["image"]), targets)
    for name in LOSS_NAMES:
        assert out[name].item() == pytest.approx(direct[name].item(), rel=1e-6), name
    out["loss"].backward()
    assert objective.encoder.patch_embed.proj.weight.grad.abs().sum() > 0


def test_param_groups_cover_every_parameter_once_with_layer_decay_on_the_backbone_only():
    backbone = _vit()
    prep = preprocessing(backbone)
    objective = DetectionObjective(build_detector(backbone, 2, 64, prep["mean"], prep["std"], out_channels=16))
    groups = objective.param_groups(weight_decay=0.05, layer_decay=0.5)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len(list(objective.parameters()))
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    encoder_ids = {id(p) for p in objective.encoder.parameters()}
    assert all(scale[id(p)] == 1.0 for p in objective.parameters() if id(p) not in encoder_ids)
    assert scale[id(objective.encoder.patch_embed.proj.weight)] == pytest.approx(0.5**4)  # 3 blocks + embedding


def test_under_autocast_only_backbone_and_pyramid_run_in_bfloat16():
    backbone = _vit()
    prep = preprocessing(backbone)
    detector = build_detector(backbone, 2, 64, prep["mean"], prep["std"], out_channels=16, scales=(1.0, 0.5),
                              rois_per_image=16)
    objective = DetectionObjective(detector).train()
    seen = {}

    def record(name, pick):
        def hook(module, inputs, output):
            seen[name] = pick(output).dtype

        return hook

    backbone.blocks[0].mlp.fc1.register_forward_hook(record("block", lambda o: o))
    detector.rpn.head.register_forward_hook(record("rpn", lambda o: o[1][0]))  # box deltas of the first level
    detector.roi_heads.box_predictor.register_forward_hook(record("roi", lambda o: o[1]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = objective(_batch())
    assert seen == {"block": torch.bfloat16, "rpn": torch.float32, "roi": torch.float32}
    assert all(v.dtype == torch.float32 for v in out.values())
    assert detector.backbone.amp_dtype is None  # evaluation afterwards runs in float32
