"""Run by ``torchrun --nproc_per_node=2`` from test_engine_ddp.py: a tiny SimMIM run, weights saved by rank 0."""

import sys

import torch
from engine_toys import ToyImages, base_cfg, tiny_vit

from mimlens import distributed
from mimlens.engine import train
from mimlens.pretrain import SimMIM


def run(out: str) -> SimMIM:
    torch.manual_seed(0)
    model = SimMIM(tiny_vit(), mask_patch=8)
    cfg = base_cfg()
    cfg["train"]["steps"] = 3
    train(model, ToyImages(16), model.transform(32), cfg, out)
    return model


if __name__ == "__main__":
    model = run(sys.argv[1])
    if distributed.is_main():
        torch.save(model.state_dict(), f"{sys.argv[1]}/final.pt")
    distributed.shutdown()
