"""Tiny data, model and config shared by the engine tests and the torchrun worker (no pytest import)."""

import copy

import torch
from torch import nn
from torch.utils.data import Dataset

from mimlens.models import build_model


class ToyImages(Dataset):
    """Deterministic 32 px images: item i depends on i only; label i % 4 brightens one half of one channel."""

    num_classes = 4

    def __init__(self, n: int, size: int = 32):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        image = torch.rand(3, self.size, self.size, generator=g) * 0.4
        label = i % self.num_classes
        image[label % 3, : self.size // 2] += 0.5
        return {"image": image.clamp(0, 1), "label": torch.tensor(label)}


BASE_CFG = {
    "optim": {"base_lr": 2e-3, "batch_size": 8, "accum_steps": 1, "weight_decay": 0.05, "warmup_steps": 2,
              "warmup_lr": 1e-6, "min_lr": 1e-5, "clip_grad": 5.0},
    "train": {"steps": 6, "seed": 0, "amp": "auto", "log_every": 1, "checkpoint_every": 0},
    "run": {"device": "cpu", "progress": False, "tensorboard": False, "num_workers": 0},
}


def base_cfg() -> dict:
    return copy.deepcopy(BASE_CFG)


def tiny_vit(**kwargs):
    """vit-micro-32 cut to depth 2 (32 px, patch 8, width 48)."""
    return build_model("vit-micro-32", depth=2, **kwargs)


class Regression(nn.Module):
    """Least squares of the label on the image's channel means; the loss turns NaN from update ``bad_step`` on."""

    def __init__(self, bad_step: int | None = None):
        super().__init__()
        self.encoder = nn.Linear(3, 1)
        self.bad_step, self.step = bad_step, 0

    def on_step(self, step, total_steps):
        self.step = step

    def forward(self, batch):
        x = batch["image"].mean(dim=(2, 3))
        loss = ((self.encoder(x).squeeze(1) - batch["label"].float()) ** 2).mean()
        if self.bad_step is not None and self.step >= self.bad_step:
            loss = loss * float("nan")
        return {"loss": loss}


def identity(item):
    return item
