"""A study's inputs in the field's real layouts, at test size: checkpoints in the official release layouts (SimMIM
ViT, DeiT, MoCo v3) and small data sets (an ImageFolder tree, a BTS depth list, COCO person keypoints, LaSOT)."""

import argparse
from pathlib import Path

import torch
from PIL import Image

from mimlens.data.export import export_coco_keypoints, export_depth_pairs, export_lasot
from mimlens.data.synthetic import SyntheticScenes, SyntheticSequences
from mimlens.models import build_model


def official_checkpoints(root: Path) -> dict[str, Path]:
    """SimMIM's pre-training checkpoint (encoder., mask token, decoder), DeiT's (model + args) and MoCo v3's
    (module.base_encoder / momentum_encoder) around tiny random backbones."""
    simmim = build_model("simmim-vit-micro-32", seed=1).state_dict()
    weights = {f"encoder.{k}": v for k, v in simmim.items()}
    weights.update({"encoder.mask_token": torch.zeros(1, 1, 48), "decoder.0.weight": torch.randn(192, 48, 1, 1),
                    "decoder.0.bias": torch.randn(192)})
    torch.save({"model": weights, "epoch": 99}, root / "simmim_pretrain__vit_micro.pth")
    torch.save({"model": build_model("vit-micro-32", seed=2).state_dict(), "epoch": 299,
                "args": argparse.Namespace(model="deit_micro_patch8")}, root / "deit_micro.pth")
    moco = {}
    for name, seed in (("base_encoder", 3), ("momentum_encoder", 4)):
        moco.update({f"module.{name}.{k}": v for k, v in build_model("vit-micro-32", seed=seed).state_dict().items()})
    torch.save({"epoch": 300, "arch": "vit_micro", "state_dict": moco}, root / "vit-micro-300ep.pth.tar")
    return {"simmim": root / "simmim_pretrain__vit_micro.pth", "deit": root / "deit_micro.pth",
            "moco": root / "vit-micro-300ep.pth.tar"}


def real_layouts(root: Path) -> None:
    """ImageFolder images (val split), BTS-style depth lists, COCO keypoints and LaSOT folders (train, val)."""
    for split, seed in (("val", 5),):
        scenes = SyntheticScenes(8, 32, seed, split=split)
        for i in range(len(scenes)):
            item = scenes[i]
            folder = root / "images" / split / f"class{int(item['label'])}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((item["image"].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(
                folder / f"{i:03d}.png")
    for split, count in (("train", 8), ("val", 4)):
        scenes = SyntheticScenes(count, 32, 0, split=split)
        export_depth_pairs(scenes, root / "nyu" / f"pairs_{split}")
        lines = [f"pairs_{split}/rgb/{i:06d}.png pairs_{split}/depth/{i:06d}.png 518.8579" for i in range(count)]
        (root / "nyu" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        export_coco_keypoints(scenes, root / "coco", split=split)
        export_lasot(SyntheticSequences(2, 6, 32, 0, split=split), root / "lasot" / split)


def start_a_process() -> None:
    """What a data loader with workers does in a stage: start a process (a daemonic worker could not)."""
    import multiprocessing
    import time

    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    process.start()
    process.join()
