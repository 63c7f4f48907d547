"""``attention_stats`` on tiny random timm models against a slow, loop-based reference.

The reference takes the explicit attention maps straight from the model (its own hooks, fused attention
off), rebuilds Swin's full-map attention from the windows with timm's own roll, pad and partition, and
applies the definitions of docs/attention.md query by query in plain Python. Models run in float64 so the
comparison is tight.
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.beit import Beit
from timm.models.deit import VisionTransformerDistilled
from timm.models.swin_transformer import SwinTransformer, window_partition
from timm.models.swin_transformer_v2 import SwinTransformerV2
from timm.models.vision_transformer import VisionTransformer

from mimlens.analysis.attention import KL_FLOOR, AttentionAccumulator, attention_stats
from mimlens.analysis.capture import AttentionCall

IDENTITY = torch.nn.Identity()  # the reference sees the same (already preprocessed) inputs at their own sizes

POLICIES = ("renorm", "drop", "keep")


def sharpen(model, factor=4.0):
    """Scale the q/k projections so random-init attention is far from uniform and heads differ."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("qkv.weight"):
                parameter.mul_(factor)
    return model.double().eval()


def query_stats(keys, policy):
    """The definitions for one query. keys: (probability, distance or None for a prefix/padding key) per allowed key."""
    patch = [(a, d) for a, d in keys if d is not None]
    if policy == "renorm":
        mass = sum(a for a, _ in patch)
        if mass == 0:
            return None
        used = [(a / mass, d) for a, d in patch]
    elif policy == "drop":
        used = patch
    else:
        used = [(a, 0.0 if d is None else d) for a, d in keys]
    distance = sum(a * d for a, d in used)
    entropy = -sum(a * math.log(a) for a, _ in used if a > 0)
    n = len(used)
    return {"probs": [a for a, _ in used], "distance": distance, "entropy": entropy, "log_n": math.log(n)}


def reference(per_query, num_heads):
    """Means over queries and images of per-query stats; per_query[h] is a list aligned across heads."""
    out = {"distance": [], "entropy": [], "entropy_norm": []}
    for h in range(num_heads):
        valid = [s for s in per_query[h] if s is not None]
        out["distance"].append(sum(s["distance"] for s in valid) / len(valid))
        out["entropy"].append(sum(s["entropy"] for s in valid) / len(valid))
        normed = [s["entropy"] / s["log_n"] for s in valid if s["log_n"] > 0]
        out["entropy_norm"].append(sum(normed) / len(normed))
    kl = torch.zeros(num_heads, num_heads, dtype=torch.float64)
    for h, g in itertools.permutations(range(num_heads), 2):
        terms = []
        for sh, sg in zip(per_query[h], per_query[g], strict=True):
            if sh is None or sg is None:
                continue
            pairs = zip(sh["probs"], sg["probs"], strict=True)
            terms.append(sum(a * (math.log(a) - math.log(max(b, KL_FLOOR))) for a, b in pairs if a > 0))
        kl[h, g] = sum(terms) / len(terms)
    out["head_kl"] = kl
    return out


def assert_matches(stats, layer, expected):
    for key in ("distance", "entropy", "entropy_norm"):
        got = getattr(stats, "distance_px" if key == "distance" else key)[layer]
        torch.testing.assert_close(got, torch.tensor(expected[key], dtype=torch.float64), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(stats.head_kl[layer], expected["head_kl"], rtol=1e-9, atol=1e-9)


def record_maps(model, images, attn_modules, extra_hooks=()):
    """Run the model once with explicit attention and return every attention module's probabilities."""
    maps, handles = [], []
    for module in attn_modules:
        module.fused_attn = False
        handles.append(module.attn_drop.register_forward_hook(lambda m, a, out: maps.append(out.detach().clone())))
    for module, hook in extra_hooks:
        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return maps


def vit_reference(model, images, policy):
    grid = model.patch_embed.dynamic_feat_size(images.shape[-2:])
    stride = model.patch_embed.patch_size
    prefix = model.num_prefix_tokens
    centres = [(stride[0] * (r + 0.5), stride[1] * (c + 0.5)) for r in range(grid[0]) for c in range(grid[1])]
    results = []
    for probs in record_maps(model, images, [b.attn for b in model.blocks]):
        heads = probs.shape[1]
        per_query = [[] for _ in range(heads)]
        batch, probs = probs.shape[0], probs.tolist()
        for b, h, q in itertools.product(range(batch), range(heads), range(len(centres))):
            row = probs[b][h][prefix + q]
            keys = [(row[k], None) for k in range(prefix)]
            keys += [(row[prefix + k], math.dist(centres[q], centres[k])) for k in range(len(centres))]
            per_query[h].append(query_stats(keys, policy))
        results.append(reference(per_query, heads))
    return results


TINY = {"img_size": (24, 32), "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}
VIT_MODELS = {
    "cls": lambda: VisionTransformer(**{**TINY, "num_heads": 4}),
    "registers": lambda: VisionTransformer(**TINY, reg_tokens=2, no_embed_class=True),
    "distilled": lambda: VisionTransformerDistilled(**TINY),
    "beit": lambda: Beit(**TINY, use_abs_pos_emb=False, use_rel_pos_bias=True),
}


@pytest.mark.parametrize("name", list(VIT_MODELS))
@pytest.mark.parametrize("policy", POLICIES)
def test_vit_family_matches_loop_reference(name, policy):
    model = sharpen(VIT_MODELS[name]())
    images = torch.randn(3, 3, 24, 32, dtype=torch.float64)
    stats = attention_stats(model, images, prefix_policy=policy, batch_size=2, transform=IDENTITY)
    expected = vit_reference(model, images, policy)
    assert stats.layer_names == ["blocks.0", "blocks.1"]
    assert stats.num_images == 3
    assert stats.layers[0].grid == (3, 4) and stats.layers[0].stride_px == (8, 8)
    assert stats.layers[0].num_prefix == model.num_prefix_tokens
    for layer in range(2):
        assert_matches(stats, layer, expected[layer])


def test_vit_dynamic_image_size_reads_the_grid_from_the_input():
    model = sharpen(VisionTransformer(**{**TINY, "depth": 1}, dynamic_img_size=True))
    images = torch.randn(2, 3, 16, 40, dtype=torch.float64)
    stats = attention_stats(model, images, transform=IDENTITY)
    assert stats.layers[0].grid == (2, 5) and stats.image_size == (16, 40)
    assert_matches(stats, 0, vit_reference(model, images, "renorm")[0])


def swin_model(cls, **kwargs):
    model = cls(
        img_size=(36, 28), patch_size=4, window_size=4, embed_dim=16, depths=(2, 2, 2), num_heads=(2, 2, 2), **kwargs
    )
    return sharpen(model)


def timm_slot_tokens(grid, window, shift):
    """Map token held by every window slot (−1 for padding), from timm's own roll, pad and partition."""
    h, w = grid
    index = torch.arange(h * w, dtype=torch.float64).view(1, h, w, 1)
    index = torch.roll(index, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    hp, wp = -(-h // window[0]) * window[0], -(-w // window[1]) * window[1]
    index = F.pad(index, (0, 0, 0, wp - w, 0, hp - h), value=-1)
    return window_partition(index, window).reshape(-1, window[0] * window[1]).long().tolist()


def swin_reference(model, images, policy):
    blocks = [(i, b) for i, stage in enumerate(model.layers) for b in stage.blocks]
    grids, masks = [], []

    def grid_hook(module, args, kwargs):
        grids.append(tuple(args[0].shape[1:3]))

    def mask_hook(module, args, kwargs):
        masks.append(kwargs.get("mask"))

    hooks = [(b, grid_hook) for _, b in blocks] + [(b.attn, mask_hook) for _, b in blocks]
    maps = record_maps(model, images, [b.attn for _, b in blocks], hooks)
    results = []
    for (stage, block), probs, grid, mask in zip(blocks, maps, grids, masks, strict=True):
        stride = 4 * 2**stage
        slots = timm_slot_tokens(grid, block.window_size, block.shift_size)
        n_windows, heads = len(slots), probs.shape[1]
        centre = [(stride * (t // grid[1] + 0.5), stride * (t % grid[1] + 0.5)) for t in range(grid[0] * grid[1])]
        per_query = [[] for _ in range(heads)]
        probs, allowed = probs.tolist(), None if mask is None else (mask == 0).tolist()
        for b, h in itertools.product(range(images.shape[0]), range(heads)):
            # Rebuild every map token's row: its keys are the allowed slots of its window.
            rows = {}
            for w, slot_tokens in enumerate(slots):
                for i, t in enumerate(slot_tokens):
                    if t < 0:
                        continue  # padding is never a query
                    keys = []
                    for j, k in enumerate(slot_tokens):
                        if allowed is not None and not allowed[w][i][j]:
                            continue  # masked pair: structural zero
                        a = probs[b * n_windows + w][h][i][j]
                        keys.append((a, None if k < 0 else math.dist(centre[t], centre[k])))
                    rows[t] = keys
            per_query[h].extend(query_stats(rows[t], policy) for t in range(len(centre)))
        results.append(reference(per_query, heads))
    return results


@pytest.mark.parametrize("cls, kwargs", [(SwinTransformer, {}), (SwinTransformerV2, {"strict_img_size": False})])
@pytest.mark.parametrize("policy", POLICIES)
def test_swin_matches_full_map_reference(cls, kwargs, policy):
    """9x7 and 5x4 maps in 4x4 windows: padding, shifted blocks, a one-axis shift; 3x2 clamps the window."""
    model = swin_model(cls, **kwargs)
    images = torch.randn(2, 3, 36, 28, dtype=torch.float64)
    stats = attention_stats(model, images, prefix_policy=policy, batch_size=1, transform=IDENTITY)
    expected = swin_reference(model, images, policy)
    assert len(expected) == len(stats.layers) == 6
    for layer in range(6):
        assert_matches(stats, layer, expected[layer])


def test_swin_layer_metadata_is_read_at_run_time():
    model = swin_model(SwinTransformer)
    stats = attention_stats(model, torch.randn(1, 3, 36, 28, dtype=torch.float64), transform=IDENTITY)
    assert stats.layer_names == [f"layers.{i}.blocks.{j}" for i in range(3) for j in range(2)]
    assert [info.stage for info in stats.layers] == [0, 0, 1, 1, 2, 2]
    assert [info.grid for info in stats.layers] == [(9, 7)] * 2 + [(5, 4)] * 2 + [(3, 2)] * 2
    assert [info.stride_px for info in stats.layers] == [(4, 4)] * 2 + [(8, 8)] * 2 + [(16, 16)] * 2
    assert [info.window for info in stats.layers] == [(4, 4)] * 4 + [(3, 2)] * 2
    assert [info.shift for info in stats.layers] == [(0, 0), (2, 2), (0, 0), (2, 0), (0, 0), (0, 0)]
    assert [q.tolist() for q in stats.queries] == [[63.0] * 2] * 2 + [[20.0] * 2] * 2 + [[6.0] * 2] * 2


def test_top_left_token_of_a_shifted_block_attends_only_inside_its_region():
    """8x8 map, 4x4 windows, shift 2: token (0, 0) shares its window with tokens from the far side of the map."""
    model = sharpen(
        SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2,), num_heads=(2,))
    )
    block = model.layers[0].blocks[1]
    masks = []
    maps = record_maps(
        model,
        torch.randn(1, 3, 32, 32, dtype=torch.float64),
        [block.attn],
        [(block.attn, lambda m, a, kw: masks.append(kw["mask"]))],
    )
    slots = timm_slot_tokens((8, 8), (4, 4), (2, 2))
    w, i = next((w, s.index(0)) for w, s in enumerate(slots) if 0 in s)
    window_tokens = slots[w]
    attended = {window_tokens[j] for j in range(16) if maps[0][w, :, i, j].min().item() > 1e-30}
    assert attended == {0, 1, 8, 9}  # rows 0-1, columns 0-1 of the map
    assert len(set(window_tokens)) == 16 and set(window_tokens) > attended
    assert (masks[0][w, i] == 0).sum().item() == 4

    # The same query through the accumulator: a row spread over all 16 slots counts only the 4 allowed keys.
    probs = torch.eye(16).repeat(len(slots), 2, 1, 1)
    probs[w, :, i] = 1 / 16
    accumulator = AttentionAccumulator()
    accumulator.update(AttentionCall(0, "b", 0, probs, (32, 32), (8, 8), (4, 4), 0, (4, 4), (2, 2), masks[0]))
    stats = accumulator.compute()
    assert stats.entropy[0].tolist() == pytest.approx([math.log(4) / 64] * 2, rel=1e-6)
    assert stats.distance_px[0].tolist() == pytest.approx([(4 + 4 + 4 * math.sqrt(2)) / 4 / 64] * 2, rel=1e-6)
