"""SimMIM: mask-token placement in ViT / Swin / SwinV2, the masked L1 loss, decoder shape, training signal."""

import pytest
import torch

from mimlens.pretrain import SimMIM, masked_l1, save_reconstruction_figure
from mimlens.pretrain.masking import random_block_masks

ARCHS = ["vit", "swin", "swinv2"]


def _masks(model, n=4, ratio=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return random_block_masks(n, 32, model.mask_patch, model.token_size, ratio, g)


@pytest.mark.parametrize("arch", ARCHS)
def test_mask_tokens_replace_exactly_the_masked_patch_embeddings(tiny, images, arch):
    model = SimMIM(tiny[arch](), mask_patch=8)
    seen = []
    model.encoder.patch_embed.register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
    mask = _masks(model)
    model.encode(images, mask)
    blended = seen[-1]
    raw = model.encoder.patch_embed(images)  # no mask set: the hook passes the embedding through
    assert blended.shape == raw.shape
    tokens = mask.reshape(*blended.shape[:-1])
    assert torch.equal(blended[~tokens], raw.detach()[~tokens])
    assert torch.equal(blended[tokens], model.mask_token.detach().reshape(1, -1).expand(int(tokens.sum()), -1))


def test_vit_mask_token_enters_before_the_cls_token_and_position_embedding(tiny, images):
    model = SimMIM(tiny["vit"](), mask_patch=8)
    entering = []
    model.encoder.blocks[0].register_forward_pre_hook(lambda m, args: entering.append(args[0].detach()))
    model.encode(images, torch.ones(4, 4, 4, dtype=torch.bool))
    encoder = model.encoder
    expected_patches = model.mask_token.detach() + encoder.pos_embed.detach()[:, 1:]
    expected_cls = encoder.cls_token.detach() + encoder.pos_embed.detach()[:, :1]
    torch.testing.assert_close(entering[0][:, 1:], expected_patches.expand(4, -1, -1))
    torch.testing.assert_close(entering[0][:, :1], expected_cls.expand(4, -1, -1))


@pytest.mark.parametrize("arch", ["swin", "swinv2"])
def test_swin_mask_token_enters_after_the_patch_norm(tiny, images, arch):
    model = SimMIM(tiny[arch](), mask_patch=8)
    entering = []
    model.encoder.layers[0].register_forward_pre_hook(lambda m, args: entering.append(args[0].detach()))
    model.encode(images, torch.ones(4, 8, 8, dtype=torch.bool))
    assert entering[0].shape == (4, 8, 8, 48)  # NHWC
    assert torch.equal(entering[0], model.mask_token.detach().reshape(1, 1, 1, 48).expand(4, 8, 8, 48))


@pytest.mark.parametrize("arch", ARCHS)
def test_prediction_has_the_image_shape_and_loss_is_finite(tiny, images, arch):
    model = SimMIM(tiny[arch](), mask_patch=8)
    assert model.stride == 8  # ViT: patch 8; Swin: patch 4 × 2 (two stages)
    mask = _masks(model)
    assert model.reconstruct(images, mask).shape == images.shape
    out = model({"image": images, "mask": mask})
    assert set(out) == {"loss"} and torch.isfinite(out["loss"])


def test_masked_l1_is_zero_for_a_perfect_prediction_and_ignores_visible_pixels(images):
    mask = random_block_masks(4, 32, 8, 8, 0.5, torch.Generator().manual_seed(1))
    assert masked_l1(images, images, mask) == 0
    pixels = mask.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None].expand_as(images)
    changed_visible = torch.where(pixels, images, torch.randn_like(images))
    assert masked_l1(changed_visible, images, mask) == 0
    assert masked_l1(images + 1.0, images, mask) == pytest.approx(1.0)


def test_masked_l1_equals_a_loop_over_masked_pixels():
    g = torch.Generator().manual_seed(2)
    prediction, target = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
    mask = random_block_masks(2, 16, 8, 4, 0.5, g)  # (2, 4, 4) tokens of 4 px
    total, count = 0.0, 0
    for b in range(2):
        for y in range(16):
            for x in range(16):
                if mask[b, y // 4, x // 4]:
                    for c in range(3):
                        total += abs(float(prediction[b, c, y, x] - target[b, c, y, x]))
                        count += 1
    assert masked_l1(prediction, target, mask).item() == pytest.approx(total / count, rel=1e-6)


def test_transform_gives_a_normalised_crop_and_an_exact_block_mask(tiny):
    model = SimMIM(tiny["vit"](), mask_ratio=0.6, mask_patch=16)
    transform = model.transform(32)
    torch.manual_seed(0)
    out = transform({"image": torch.full((3, 40, 40), 0.5), "label": torch.tensor(1)})
    assert set(out) == {"image", "mask"} and out["image"].shape == (3, 32, 32)
    assert out["mask"].shape == (4, 4) and out["mask"].dtype == torch.bool
    assert int(out["mask"].sum()) == 3 * 4  # ceil(0.6 × 4 blocks) = 3 blocks of 2 × 2 tokens
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out["image"][:, 0, 0], expected)


def test_a_few_steps_lower_the_loss(tiny, images, fit):
    torch.manual_seed(0)
    model = SimMIM(tiny["vit"](), mask_patch=8)
    batch = {"image": (images - 0.5) / 0.25, "mask": _masks(model)}
    losses = fit(model, batch)
    assert losses[-1] < 0.9 * losses[0]


def test_reconstruction_figure_is_a_png(tmp_path, tiny, images):
    model = SimMIM(tiny["swin"](), mask_patch=8)
    path = save_reconstruction_figure(model, images[:2], _masks(model, n=2), tmp_path / "figures" / "rec.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
