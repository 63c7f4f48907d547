"""One input contract: ``attention_stats`` and ``cka_matrix`` take raw RGB in [0, 1] and apply each model's own
preprocessing (resize to its input size, normalise with its mean and std)."""

import pytest
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from mimlens.analysis.attention import attention_stats
from mimlens.analysis.cka import cka_matrix
from mimlens.errors import MimlensError
from mimlens.models import build_model

IDENTITY = torch.nn.Identity()


def by_hand(raw: torch.Tensor, side: int, mean, std) -> torch.Tensor:
    """Resize the whole image to side x side (bicubic, antialiased), then normalise per channel."""
    x = F.interpolate(raw, size=(side, side), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def models():
    """vit-micro-32 (ImageNet mean and std, 32 px) and a timm ViT (mean and std 0.5, 48 px)."""
    torch.manual_seed(0)
    imagenet = build_model("vit-micro-32").eval()
    half = build_model("timm:vit_tiny_patch16_224", img_size=48, patch_size=8, depth=2, embed_dim=48,
                       num_heads=3).eval()
    return imagenet, half


@pytest.fixture(scope="module")
def raw():
    return torch.rand(8, 3, 40, 40, generator=torch.Generator().manual_seed(3))


def test_attention_on_raw_images_equals_attention_on_images_preprocessed_by_hand(models, raw):
    imagenet, _ = models
    stats = attention_stats(imagenet, raw, batch_size=3)
    expected = attention_stats(imagenet, by_hand(raw, 32, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
                               transform=IDENTITY)
    assert stats.image_size == (32, 32)
    for a, b in zip(stats.distance_px + stats.entropy + stats.head_kl, expected.distance_px + expected.entropy
                    + expected.head_kl, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_cka_across_models_preprocesses_each_model_its_own_way(models, raw):
    imagenet, half = models
    result = cka_matrix(imagenet, raw, half, batch_size=4)
    expected = cka_matrix(imagenet, raw, half, batch_size=4,
                          transform_a=lambda x: by_hand(x, 32, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
                          transform_b=lambda x: by_hand(x, 48, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    torch.testing.assert_close(result.matrix, expected.matrix, rtol=0, atol=1e-6)
    # The same normalisation for both would be a different measurement: the contract is visible in the numbers.
    wrong = cka_matrix(imagenet, raw, half, batch_size=4,
                       transform_b=lambda x: by_hand(x, 48, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    assert not torch.allclose(result.matrix, wrong.matrix, atol=1e-4)


def test_preprocessed_images_are_refused_where_raw_ones_are_expected(models, raw):
    imagenet, half = models
    preprocessed = by_hand(raw, 32, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    with pytest.raises(MimlensError, match=r"expect raw RGB in \[0, 1\].*torch.nn.Identity"):
        attention_stats(imagenet, preprocessed)
    with pytest.raises(MimlensError, match=r"expect raw RGB in \[0, 1\].*torch.nn.Identity"):
        cka_matrix(imagenet, preprocessed, half, batch_size=4)
