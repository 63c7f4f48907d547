"""Diagnostics per block and head: attention NMI (Park et al. 2023), the high-frequency share of features and
high-norm tokens (Darcet et al. 2024), each checked against a numpy re-implementation of its reference formula and
against known answers; streaming, merging, JSON and the analysis entry."""

import json
import math

import numpy as np
import pytest
import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from mimlens.analysis.attention import attention_capture
from mimlens.analysis.capture import AttentionCall
from mimlens.analysis.diagnostics import Diagnostics, DiagnosticsAccumulator, diagnostics
from mimlens.analysis.geometry import window_token_index
from mimlens.analysis.nmi import attention_nmi, nmi, nmi_cut
from mimlens.analysis.registry import analysis
from mimlens.analysis.spectrum import high_frequency_share
from mimlens.cli import main
from mimlens.errors import MimlensError


def reference_nmi(attn: np.ndarray) -> np.ndarray:
    """Park et al.'s ``calculate_nmi`` in numpy: (B, H, Q, K) row-stochastic maps, p(q) = 1/Q."""
    q = attn.shape[-2]
    p_k = attn.mean(-2)
    mi = (attn / q * np.log(attn / p_k[..., None, :])).sum((-2, -1))
    return mi / np.sqrt(np.log(q) * -(p_k * np.log(p_k)).sum(-1))


def joint_nmi(weights: np.ndarray) -> float:
    """I(q; k) / √(H(q) H(k)) of the joint ∝ weights (Q, K), from the entropies, 0 ln 0 = 0."""
    joint = weights / weights.sum()

    def entropy(p):
        p = p[p > 0]
        return -(p * np.log(p)).sum()

    h_q, h_k = entropy(joint.sum(1)), entropy(joint.sum(0))
    return (h_q + h_k - entropy(joint.ravel())) / math.sqrt(h_q * h_k)


def softmax_maps(*shape, seed=0, scale=3.0):
    return torch.softmax(scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                                             dtype=torch.float64), -1)


def vit_call(probs, num_prefix=1, grid=(4, 4), layer=0):
    return AttentionCall(layer, f"blocks.{layer}", 0, probs, (32, 32), grid, (8, 8), num_prefix=num_prefix)


def test_nmi_known_answers():
    q = 9
    assert nmi(torch.full((q, q), 1.0 / q, dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-12)
    assert nmi(torch.eye(q, dtype=torch.float64)).item() == pytest.approx(1.0, abs=1e-12)
    assert nmi(torch.zeros(q, q, dtype=torch.float64).index_fill_(1, torch.tensor([2]), 1.0)).item() == 0.0


def test_nmi_matches_the_reference_code_on_random_maps():
    maps = softmax_maps(3, 2, 17, 17)
    patch = maps[..., 1:, 1:] / maps[..., 1:, 1:].sum(-1, keepdim=True)  # the reference drops CLS, renormalises
    expected = reference_nmi(patch.numpy())
    got = attention_nmi(maps, nmi_cut(vit_call(maps), "renorm"), renorm=True)[:, 0]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    smoothed = (patch + 1e-8) / (patch + 1e-8).sum(-1, keepdim=True)  # the reference's own smoothing
    np.testing.assert_allclose(got.numpy(), reference_nmi(smoothed.numpy()), atol=1e-6)


@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_nmi_prefix_policies_match_the_joint_of_the_counted_keys(policy):
    maps = softmax_maps(2, 3, 10, 10, seed=1)
    got = attention_nmi(maps, nmi_cut(vit_call(maps, num_prefix=1, grid=(3, 3)), policy), renorm=False)[:, 0]
    keys = slice(0, None) if policy == "keep" else slice(1, None)
    expected = [[joint_nmi(maps[b, h, 1:, keys].numpy()) for h in range(3)] for b in range(2)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def tiny_swin(img_size=24):
    return SwinTransformer(img_size=img_size, patch_size=4, window_size=4, embed_dim=16, depths=(2,),
                           num_heads=(2,)).eval()


@pytest.mark.parametrize("img_size", [24, 32])  # 6x6 map in 4x4 windows (padded) or 8x8 (mask regions split them)
def test_swin_nmi_is_per_window_over_real_tokens_and_allowed_keys(img_size):
    model = tiny_swin(img_size)
    calls = []
    with attention_capture(model, calls.append), torch.no_grad():
        model.forward_features(torch.randn(2, 3, img_size, img_size))
    assert calls[1].shift == (2, 2) and calls[1].window_mask is not None
    for call in calls:
        got = attention_nmi(call.probs.double(), nmi_cut(call, "renorm"), renorm=True)
        index = window_token_index(call.grid, call.window, call.shift)
        probs = call.probs.double().view(2, len(index), *call.probs.shape[1:]).numpy()
        for w, slots in enumerate(index.numpy()):
            real = slots >= 0
            allowed = np.ones((len(slots), len(slots)), bool) if call.window_mask is None else (
                call.window_mask[w].numpy() == 0)
            for b in range(2):
                for h in range(2):
                    weights = np.where(allowed & real[None, :], probs[b, w, h], 0.0)[real]
                    weights = weights / weights.sum(1, keepdims=True)
                    expected = joint_nmi(weights) if real.sum() >= 2 else math.nan
                    np.testing.assert_allclose(got[b, w, h].item(), expected, rtol=1e-7)


def reference_share(channel: np.ndarray, cutoff: float = 0.5) -> float:
    """Amplitude share of the bins with max(|ω_u|, |ω_v|) > cutoff·π, bin by bin."""
    h, w = channel.shape
    amplitude = np.abs(np.fft.fft2(channel))
    high = 0.0
    for u in range(h):
        for v in range(w):
            omega_u = 2 * math.pi * abs(u if u < h - u else u - h) / h
            omega_v = 2 * math.pi * abs(v if v < w - v else v - w) / w
            if max(omega_u, omega_v) > cutoff * math.pi:
                high += amplitude[u, v]
    return high / amplitude.sum()


def test_high_frequency_share_known_answers_and_brute_force():
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij")
    checkerboard = ((-1.0) ** (rows + cols)).double()
    maps = torch.stack([torch.full((6, 8), 2.5, dtype=torch.float64), checkerboard, torch.zeros(6, 8)])[None]
    share = high_frequency_share(maps)
    assert share[0, 0].item() == pytest.approx(0.0, abs=1e-12)
    assert share[0, 1].item() == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(share[0, 2].item())
    for grid, cutoff in (((7, 6), 0.5), ((7, 6), 0.3), ((8, 8), 0.5)):  # 8x8: bins on the band's edge are low
        random = torch.randn(2, 3, *grid, dtype=torch.float64)
        expected = [[reference_share(random[b, c].numpy(), cutoff) for c in range(3)] for b in range(2)]
        np.testing.assert_allclose(high_frequency_share(random, cutoff).numpy(), expected, rtol=1e-10)
    with pytest.raises(MimlensError, match="cutoff=1.5"):
        high_frequency_share(random, 1.5)
    with pytest.raises(MimlensError, match="cutoff=-0.1"):
        DiagnosticsAccumulator(cutoff=-0.1)


def feed(accumulator, outputs, num_prefix=1, grid=(4, 4)):
    """One fake ViT block: uniform attention, then the given (B, T, D) outputs."""
    n = num_prefix + grid[0] * grid[1]
    probs = torch.full((len(outputs), 2, n, n), 1 / n, dtype=torch.float64)
    accumulator.update_attention(vit_call(probs, num_prefix, grid))
    accumulator.update_output("blocks.0", outputs)


def test_planted_high_norm_tokens_are_found_at_their_positions():
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(8, 17, 6, generator=generator, dtype=torch.float64), dim=-1)
    tokens = directions * (2 + torch.rand(8, 17, 1, generator=generator, dtype=torch.float64))  # norms in [2, 3]
    planted = {(0, 5), (3, 5), (6, 12)}  # (image, patch position)
    for image, position in planted:
        tokens[image, 1 + position] *= 20
    tokens[:, 0] = 3.0  # the CLS token, reported apart
    accumulator = DiagnosticsAccumulator()
    feed(accumulator, tokens)
    result = accumulator.compute()
    assert result.high_norm_per_image[0] == pytest.approx(len(planted) / 8)
    positions = result.high_norm_positions[0].flatten()
    assert positions[5].item() == pytest.approx(2 / 8) and positions[12].item() == pytest.approx(1 / 8)
    assert positions.sum().item() == pytest.approx(3 / 8)
    assert result.prefix_norms[0] == pytest.approx([3.0 * math.sqrt(6)])

    norms = tokens[:, 1:].norm(dim=-1).numpy().ravel()  # brute force on the rounded norms
    rounded = 10.0 ** (-3 + (np.floor((np.log10(norms) + 3) * 32) + 0.5) / 32)
    ordered = np.sort(rounded)
    median = ordered[math.ceil(len(ordered) / 2) - 1]
    mad = np.sort(np.abs(rounded - median))[math.ceil(len(ordered) / 2) - 1]
    assert mad > median * (10 ** (1 / 32) - 1)  # above the floor of one bin
    assert result.norms[0]["median"] == pytest.approx(median) and result.norms[0]["mad"] == pytest.approx(mad)
    assert result.norms[0]["threshold"] == pytest.approx(median + 3.5 / 0.6745 * mad)
    assert result.norms[0]["mean"] == pytest.approx(norms.mean())
    assert result.norms[0]["max"] == pytest.approx(rounded.max())


def tiny_vit():
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=0,
                             reg_tokens=2).eval()


def test_streaming_over_batches_equals_all_at_once_and_merges():
    model, images = tiny_vit(), torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    whole = diagnostics(model, images, batch_size=5).to_json()
    one_by_one = diagnostics(model, images, batch_size=1).to_json()
    assert json.dumps(one_by_one)  # plain JSON
    for a, b in zip(whole["blocks"], one_by_one["blocks"], strict=True):
        assert a["nmi"] == pytest.approx(b["nmi"], rel=1e-9)
        assert a["high_frequency_share"] == pytest.approx(b["high_frequency_share"], rel=1e-9)
        assert a["norm"] == pytest.approx(b["norm"], rel=1e-9)
        assert a["high_norm_positions"] == b["high_norm_positions"]
        assert a["prefix_norms"] == pytest.approx(b["prefix_norms"], rel=1e-9) and len(a["prefix_norms"]) == 3
    parts = [DiagnosticsAccumulator(), DiagnosticsAccumulator()]
    for part, chunk in zip(parts, (images[:2], images[2:]), strict=True):
        _run(model, part, chunk)
    merged = parts[0].merge(parts[1]).compute().to_json()
    for a, b in zip(whole["blocks"], merged["blocks"], strict=True):
        assert a["nmi"] == pytest.approx(b["nmi"], rel=1e-9) and a["norm"] == pytest.approx(b["norm"], rel=1e-9)


def _run(model, accumulator, images):
    from mimlens.analysis.inputs import model_transform

    hooks = [block.register_forward_hook(lambda m, a, out, i=i: accumulator.update_output(f"blocks.{i}", out))
             for i, block in enumerate(model.blocks)]
    with attention_capture(model, accumulator.update_attention), torch.no_grad():
        model.forward_features(model_transform(model)(images))
    for hook in hooks:
        hook.remove()


def test_json_round_trip_and_block_series():
    result = diagnostics(tiny_vit(), torch.rand(2, 3, 32, 32), batch_size=2)
    doc = result.to_json(model="tiny")
    assert Diagnostics.from_json(json.loads(json.dumps(doc))).to_json() == doc
    series = analysis("diagnostics").function("block_series")(doc)
    assert set(series) == {"nmi", "high_frequency_share", "high_norm_tokens"}
    assert series["nmi"] == pytest.approx([float(v.mean()) for v in result.nmi])
    with pytest.raises(MimlensError, match="diagnostics JSON"):
        Diagnostics.from_json({"blocks": [{}]})


def test_swin_model_runs_with_a_uniform_reference_above_zero_in_shifted_blocks():
    # an 8x8 map in 4x4 windows: the shift mask splits the windows at the seam into regions of real tokens
    result = diagnostics(tiny_swin(32), torch.rand(2, 3, 32, 32), batch_size=1, transform=torch.nn.Identity())
    assert [b.name for b in result.blocks] == ["layers.0.blocks.0", "layers.0.blocks.1"]
    assert result.uniform_nmi[0] == pytest.approx(0.0, abs=1e-12) and result.uniform_nmi[1] > 0
    assert all(torch.isfinite(v).all() for v in result.nmi) and result.prefix_norms == [[], []]
    assert all(0 <= s <= 1 for s in result.high_frequency_share)


def test_analyze_writes_the_document_figures_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["analyze", "vit-micro-32", "--analyses", "diagnostics", "--num-images", "3", "--batch-size", "2",
                 "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "diagnostics.json").read_text())
    assert doc["model"] == "vit-micro-32" and doc["num_images"] == 3
    assert all((out / rel).is_file() for rel in analysis("diagnostics").files)
    assert "uniform NMI" in capsys.readouterr().out
    assert "Attention and feature diagnostics" in (out / "report.html").read_text()
