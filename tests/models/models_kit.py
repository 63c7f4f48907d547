"""Tiny models and helpers shared by the models tests."""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager

import torch

from mimlens.models import build_model

# Tiny architectures as (arch, overrides) pairs, usable with build_model and load_model(path, arch, **overrides).
VIT = ("vit-micro-32", {})
BEIT_SHARED = ("timm:beit_base_patch16_224", dict(
    img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, use_abs_pos_emb=False, use_rel_pos_bias=False,
    use_shared_rel_pos_bias=True, init_values=0.1, global_pool="token"))
BEIT_PER_BLOCK = ("timm:beit_base_patch16_224", dict(
    img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, use_abs_pos_emb=False, use_rel_pos_bias=True,
    use_shared_rel_pos_bias=False, init_values=0.1, global_pool="token"))
SWIN = ("timm:swin_tiny_patch4_window7_224", dict(
    img_size=32, window_size=4, embed_dim=16, depths=(2, 2, 2), num_heads=(2, 4, 8)))
SWINV2 = ("timm:swinv2_tiny_window8_256", dict(
    img_size=32, window_size=4, embed_dim=16, depths=(2, 2, 2), num_heads=(2, 4, 8)))
DEIT_DISTILLED = ("timm:deit_tiny_distilled_patch16_224", dict(
    img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3))


def tiny(spec: tuple[str, dict], seed: int = 1, **kwargs) -> torch.nn.Module:
    """A tiny model with every trainable parameter drawn at random (so that any mis-mapped tensor changes the
    output); fixed ones (a sin-cos position embedding) are kept."""
    arch, overrides = spec
    model = build_model(arch, **{**overrides, **kwargs})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in filter(lambda p: p.requires_grad, model.parameters()):
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


def features(model: torch.nn.Module, size: int = 32) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return model.eval()(x) if model.num_classes else model.eval().forward_features(x)


@contextmanager
def fake_yacs():
    """A ``yacs.config.CfgNode`` look-alike, present only while a test *writes* a SimMIM-style checkpoint.

    Like yacs it is a dict subclass keeping its flags in ``__dict__``; it pickles as ``yacs.config.CfgNode``.
    """

    class CfgNode(dict):
        def __init__(self, init_dict=None, new_allowed=False):
            super().__init__(init_dict or {})
            self.__dict__["__immutable__"] = False
            self.__dict__["__deprecated_keys__"] = set()
            self.__dict__["__renamed_keys__"] = {}
            self.__dict__["__new_allowed__"] = new_allowed

    config = types.ModuleType("yacs.config")
    package = types.ModuleType("yacs")
    package.config = config
    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config.CfgNode = CfgNode
    saved = {name: sys.modules.get(name) for name in ("yacs", "yacs.config")}
    sys.modules.update({"yacs": package, "yacs.config": config})
    try:
        yield CfgNode
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module

