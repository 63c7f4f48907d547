"""A Hugging Face hub cache laid out by the tests (no network): what timm's pretrained loader reads offline."""

import torch
from safetensors.torch import save_file


def fill_hub_cache(hub, repo_id: str, weights: dict[str, torch.Tensor]) -> None:
    """huggingface_hub's layout: models--ORG--NAME/{refs/main, snapshots/<commit>/model.safetensors}."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(weights, repo / "snapshots" / commit / "model.safetensors")
