"""SimMIM (Xie et al., CVPR 2022, arXiv 2111.09886) around an unmodified timm ViT, Swin or SwinV2.

- masking: :func:`mimlens.pretrain.masking.random_block_mask`, exactly ``ceil(ratio × blocks)`` blocks of
  ``mask_patch`` pixels, on the backbone's patch-embedding grid (``True`` = masked);
- mask token: one learnable vector replaces the masked patch embeddings at the output of
  ``encoder.patch_embed`` — in a ViT that is before the CLS token and the position embedding are added,
  in Swin/SwinV2 after the patch-embedding norm (timm's Swin is NHWC there); done with a forward hook, so
  the backbone's own ``forward_features`` runs and its keys stay timm-native under ``encoder.``;
- decoder: the encoder's last patch-token map (stride ``s``) → 1×1 conv to ``s² · 3`` channels →
  ``PixelShuffle(s)``;
- loss: L1 between prediction and the normalised input, averaged over masked pixels (and channels) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from timm.layers import trunc_normal_
from torch import nn

from mimlens.data.transforms import train_transform
from mimlens.errors import MimlensError
from mimlens.pretrain.augment import denormalize, mean_std
from mimlens.pretrain.masking import random_block_mask
from mimlens.report.style import save_png


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the masked pixels of ``(B, C, H, W)`` images; ``mask`` is ``(B, h, w)`` tokens.

    The token mask is upsampled by ``H // h`` to pixels; visible pixels do not contribute at all.
    """
    scale = target.shape[-1] // mask.shape[-1]
    pixels = mask.repeat_interleave(scale, 1).repeat_interleave(scale, 2).unsqueeze(1).to(torch.float32)
    error = (prediction.float() - target.float()).abs() * pixels
    return error.sum() / (pixels.sum() * target.shape[1]).clamp_min(1)


class SimMIM(nn.Module):
    """Masked image modeling with a linear pixel decoder; ``forward({"image", "mask"}) -> {"loss"}``."""

    def __init__(self, encoder: nn.Module, *, mask_ratio: float = 0.6, mask_patch: int = 32):
        super().__init__()
        if getattr(encoder, "patch_embed", None) is None or not hasattr(encoder, "forward_features"):
            raise MimlensError(f"SimMIM needs a timm ViT/Swin backbone with a patch_embed, "
                               f"got {type(encoder).__name__}")
        self.encoder = encoder
        self.mask_ratio = float(mask_ratio)
        self.mask_patch = int(mask_patch)
        self.token_size = int(encoder.patch_embed.patch_size[0])
        self.stride = int(encoder.feature_info[-1]["reduction"])
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.patch_embed.proj.out_channels))
        trunc_normal_(self.mask_token, std=0.02)
        self.decoder = nn.Sequential(
            nn.Conv2d(encoder.num_features, self.stride**2 * 3, kernel_size=1),
            nn.PixelShuffle(self.stride),
        )
        self._mask: torch.Tensor | None = None
        encoder.patch_embed.register_forward_hook(self._insert_mask_tokens)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def _insert_mask_tokens(self, module, inputs, tokens: torch.Tensor) -> torch.Tensor:
        """Blend: ``tokens · (1 − m) + mask_token · m`` (ViT: ``(B, N, C)``; Swin: ``(B, H, W, C)``)."""
        if self._mask is None:
            return tokens
        weight = self._mask.reshape(*tokens.shape[:-1], 1).to(tokens.dtype)
        return tokens * (1 - weight) + self.mask_token.to(tokens.dtype) * weight

    def encode(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The encoder's last feature map ``(B, C, H / stride, W / stride)`` with masked patches replaced."""
        self._mask = mask
        try:
            features = self.encoder.forward_features(image)
        finally:
            self._mask = None
        if features.ndim == 4:  # NHWC (Swin, SwinV2)
            return features.permute(0, 3, 1, 2)
        tokens = features[:, getattr(self.encoder, "num_prefix_tokens", 0):]
        height, width = image.shape[-2] // self.stride, image.shape[-1] // self.stride
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted normalised pixels ``(B, 3, H, W)``."""
        return self.decoder(self.encode(image, mask))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image, mask = batch["image"], batch["mask"]
        return {"loss": masked_l1(self.reconstruct(image, mask), image, mask)}

    def transform(self, img_size: int, crop_scale: Sequence[float] = (0.67, 1.0)) -> SimMIMTransform:
        """The per-sample transform: crop + flip + normalise the image, draw a mask."""
        return SimMIMTransform(img_size, crop_scale, self.mask_patch, self.token_size, self.mask_ratio,
                               *mean_std(self.encoder))


class SimMIMTransform:
    """``item["image"]`` → ``{"image": normalised crop, "mask": bool (H / token, W / token)}``."""

    def __init__(self, img_size: int, crop_scale, mask_patch: int, token_size: int, ratio: float, mean, std):
        self.augment = train_transform(img_size, scale=tuple(crop_scale), mean=mean, std=std)
        self.mask_args = (img_size, mask_patch, token_size, ratio)
        random_block_mask(*self.mask_args)  # checks the sizes now, not in a data-loader worker

    def __call__(self, item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"image": self.augment(item["image"]), "mask": random_block_mask(*self.mask_args)}


@torch.no_grad()
def save_reconstruction_figure(model: SimMIM, image: torch.Tensor, mask: torch.Tensor, path: str | Path) -> Path:
    """One row per image: input, masked input, prediction and target on the masked pixels (the loss's), de-normalised.

    The prediction on visible pixels is left out: the loss never sees it, so it carries no meaning."""
    from matplotlib.figure import Figure

    training = model.training
    model.eval()
    prediction = model.reconstruct(image, mask).float()
    model.train(training)
    scale = image.shape[-1] // mask.shape[-1]
    pixels = mask.repeat_interleave(scale, 1).repeat_interleave(scale, 2).unsqueeze(1).to(image.dtype).cpu()
    mean, std = mean_std(model.encoder)
    shown = denormalize(image.cpu(), mean, std)
    grey = torch.full_like(shown, 0.5)
    columns = {
        "input": shown,
        "masked input": shown * (1 - pixels) + grey * pixels,
        "prediction (masked pixels)": denormalize(prediction.cpu(), mean, std) * pixels + grey * (1 - pixels),
        "target (masked pixels)": shown * pixels + grey * (1 - pixels),
    }
    rows = image.shape[0]
    fig = Figure(figsize=(8, 2 * rows))
    axes = fig.subplots(rows, 4, squeeze=False)
    for c, (title, images) in enumerate(columns.items()):
        for r in range(rows):
            axes[r, c].imshow(images[r].permute(1, 2, 0).numpy())
            axes[r, c].set_axis_off()
        axes[0, c].set_title(title, fontsize=9)
    fig.suptitle(f"SimMIM reconstruction (mask ratio {model.mask_ratio}, mask patch {model.mask_patch} px)",
                 fontsize=10)
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


def scaled_mask_patch(img_size: int, token_size: int) -> int:
    """SimMIM's 32 px mask patch at 224 px, scaled to ``img_size``: the multiple of the token size nearest to
    ``32 × img_size / 224`` that divides the image side (224 px → 32; 64 px → 8; 192 px, tokens of 4 → 24).

    The official 192 px Swin recipes keep 32 px; recipes set ``simmim.mask_patch`` explicitly."""
    target = 32 * img_size / 224
    candidates = [p for p in range(token_size, img_size + 1, token_size) if img_size % p == 0]
    return min(candidates, key=lambda p: (abs(p - target), -p))


def resolve(cfg: dict, encoder: nn.Module, dataset) -> None:
    """``simmim.mask_patch`` None: SimMIM's 32 px at 224, scaled to the backbone's input (:func:`scaled_mask_patch`)."""
    if cfg["simmim"]["mask_patch"] is None:
        img_size = int(encoder.patch_embed.img_size[0])
        cfg["simmim"]["mask_patch"] = scaled_mask_patch(img_size, int(encoder.patch_embed.patch_size[0]))


def build(encoder: nn.Module, cfg: dict) -> SimMIM:
    section = cfg["simmim"]
    return SimMIM(encoder, mask_ratio=section["mask_ratio"], mask_patch=section["mask_patch"])


def finish(objective: SimMIM, dataset, transform, cfg: dict, run_dir: Path) -> None:
    """``figures/simmim_reconstruction.png`` of the first four training images."""
    from mimlens.engine import SeededTransform

    samples = SeededTransform(dataset, transform, int(cfg["train"]["seed"]))
    batch = [samples[(0, i)] for i in range(min(4, len(dataset)))]
    device = next(objective.parameters()).device
    images = torch.stack([b["image"] for b in batch]).to(device)
    masks = torch.stack([b["mask"] for b in batch]).to(device)
    save_reconstruction_figure(objective, images, masks, Path(run_dir) / "figures" / "simmim_reconstruction.png")
