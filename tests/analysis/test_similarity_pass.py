"""similarity_matrix over a stream of images: streamed sums equal all images at once, every cell equals the
reference formula on brute-force pooled features, the JSON round trip, the image cap, and the registry entry
through analyze and compare."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from similarity_reference import REFERENCES
from torch import nn

from mimlens.analysis.choices import SIMILARITY_MEASURES
from mimlens.analysis.cka import batch_draws, percentile_interval
from mimlens.analysis.passes import similarity_block_series
from mimlens.analysis.similarity import FullData, Spectrum, centred_scatter
from mimlens.analysis.similarity_calibration import half_replicates, p_values, permutation_null
from mimlens.analysis.similarity_pass import FULL_DATA, MomentSums, SimilarityResult, similarity_matrix
from mimlens.cli import main
from mimlens.errors import MimlensError
from mimlens.report.analysis_sections import similarity_calibration_rows

# The Procrustes angle on the diagonal is arccos(1 - rounding) ≈ sqrt(2 x 1e-16): 1e-7 there.
TOLERANCE = {"mutual_knn": 1e-12, "cknna": 1e-9, "rsa": 1e-9, "procrustes": 1e-7, "svcca": 1e-7, "pwcca": 1e-7}


class TokenMixer(nn.Module):
    """A tiny ViT-shaped model (patchify, then ``blocks.<i>`` of different widths), no residual connections and no
    LayerNorm (whose outputs have a null direction, which the reference's unregularised CCA cannot invert)."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.patch = nn.Conv2d(3, 12, kernel_size=4, stride=4)
        widths = [12, 10, 14, 8]
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Linear(a, b), nn.Tanh())
                                      for a, b in zip(widths, widths[1:], strict=False)])

    def forward(self, x):
        return self.blocks(self.patch(x).flatten(2).transpose(1, 2))


def images(n=48, seed=1):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def pooled_features(model, x):
    """Brute force: every image at once, each block's output kept, the mean token per image."""
    outputs = []
    hooks = [block.register_forward_hook(lambda m, a, out: outputs.append(out.mean(1).double().numpy()))
             for block in model.blocks]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return outputs


def run(model_a, x, model_b=None, **kwargs):
    identity = nn.Identity()
    return similarity_matrix(model_a, x, model_b, transform_a=identity, transform_b=identity, k=5, **kwargs)


@pytest.mark.parametrize("across", [False, True])
def test_every_cell_equals_the_reference_on_brute_force_features(across):
    x = images()
    model_a, model_b = TokenMixer(0), TokenMixer(7) if across else None
    result = run(model_a, x, model_b, batch_size=8)
    feats_a = pooled_features(model_a, x)
    feats_b = pooled_features(model_b, x) if across else feats_a
    assert list(result.matrices) == list(SIMILARITY_MEASURES) and result.num_images == 48
    for name, matrix in result.matrices.items():
        kwargs = {"topk": 5} if name in ("mutual_knn", "cknna") else {"epsilon": 0.0} if name == "svcca" else {}
        expected = [[REFERENCES[name](fa, fb, **kwargs) for fb in feats_b] for fa in feats_a]
        np.testing.assert_allclose(matrix.numpy(), expected, atol=TOLERANCE[name], rtol=0, err_msg=name)
    off = ~np.eye(3, dtype=bool) if not across else np.ones((3, 3), dtype=bool)
    assert (result.matrices["procrustes"].numpy()[off] > 0.1).all()  # the blocks differ: not a trivial answer



@pytest.mark.parametrize("across", [False, True])
def test_the_calibration_is_drawn_from_the_seed_and_the_images_alone(across):
    x = images()
    model_a, model_b = TokenMixer(0), TokenMixer(7) if across else None
    result = run(model_a, x, model_b, batch_size=8, replicates=6, permutations=9, seed=3)
    rows_a = [torch.tensor(f) for f in pooled_features(model_a, x)]
    rows_b = [torch.tensor(f) for f in pooled_features(model_b, x)] if across else None
    halves, perms = batch_draws(3, 0, 48, 6, 9)  # the one batch of all images, whatever the batch size
    replicates = half_replicates(rows_a, rows_b, FULL_DATA, 5, halves)
    data_a = [FullData.of(f, 5) for f in rows_a]
    null = permutation_null(data_a, [FullData.of(f, 5) for f in rows_b] if across else data_a, FULL_DATA, perms)
    assert list(result.interval) == list(result.p_value) == list(FULL_DATA)
    for name in FULL_DATA:
        low, high = percentile_interval(replicates[name])
        torch.testing.assert_close(result.interval[name][0], low, rtol=0, atol=1e-9)
        torch.testing.assert_close(result.interval[name][1], high, rtol=0, atol=1e-9)
        torch.testing.assert_close(result.null_mean[name], null[name].mean(0), rtol=0, atol=1e-9)
        torch.testing.assert_close(result.p_value[name], p_values(null[name], result.matrices[name]))
    assert (result.replicates, result.permutations, result.seed) == (6, 9, 3)
    assert "6 replicates" in result.estimator and "9 permutations" in result.estimator
    # the moment sums a replicate would copy: n, Σz and ZᵀZ of the blocks side by side (widths 10 + 14 + 8),
    # across two models also Σz_b and each block's own XᵀX
    floats = 1 + 32 + 32 * 32 + (32 + 2 * (10**2 + 14**2 + 8**2) if across else 0)
    assert f"({floats * 8 / 1e6:.3g} MB per replicate here)" in next(
        note for note in result.notes if note.startswith("svcca, pwcca, procrustes: no interval or null"))
    assert any(note.startswith("mutual_knn, cknna: the interval is of the measure on halves of 24") for note in
               result.notes)


def test_the_calibration_turns_off_and_needs_halves_above_k_neighbours():
    model = TokenMixer(0)
    off = run(model, images(24), replicates=0, permutations=0)
    assert not off.interval and not off.p_value and "interval" not in off.estimator
    assert not any("no interval or null" in note for note in off.notes)
    small = run(model, images(12), replicates=5, permutations=5, measures=["rsa"])
    assert not small.interval and list(small.p_value) == ["rsa"] and small.replicates == 0
    assert "no interval: k = 5 neighbours need halves of more than 6 images, and 12 images give halves of 6" in \
        small.notes


def test_batches_equal_one_batch_and_iterables_equal_tensors():
    x = images()
    model = TokenMixer(0)
    whole = run(model, x, batch_size=64)
    for other in (run(model, x, batch_size=8), run(model, [x[:20], x[20:31], x[31:]], batch_size=16)):
        for name in SIMILARITY_MEASURES:
            torch.testing.assert_close(other.matrices[name], whole.matrices[name], rtol=0, atol=TOLERANCE[name])


def test_moment_sums_streamed_and_merged_equal_all_at_once():
    rng = np.random.default_rng(0)
    a = [torch.tensor(rng.normal(size=(30, d))) for d in (3, 5)]
    b = [torch.tensor(rng.normal(size=(30, d))) for d in (4, 2, 6)]
    whole = MomentSums([3, 5], [4, 2, 6]).update(a, b)
    first = MomentSums([3, 5], [4, 2, 6]).update([x[:7] for x in a], [y[:7] for y in b])
    second = MomentSums([3, 5], [4, 2, 6])
    for s in (slice(7, 19), slice(19, 30)):
        second.update([x[s] for x in a], [y[s] for y in b])
    merged = first.merge(second)  # what the all-reduce of two processes adds
    spectra_a, spectra_b, cross = merged.compute()
    for i, x in enumerate(a):
        xc = x - x.mean(0)
        torch.testing.assert_close(spectra_a[i].values, torch.linalg.eigvalsh(xc.T @ xc).flip(0), atol=1e-10, rtol=0)
        for j, y in enumerate(b):
            torch.testing.assert_close(cross[i][j], xc.T @ (y - y.mean(0)), atol=1e-10, rtol=0)
    for name, value in whole.sums.items():
        torch.testing.assert_close(merged.sums[name], value, atol=1e-10, rtol=0)


def test_spectrum_keeps_99_percent_of_the_variance():
    values = torch.tensor([50.0, 30.0, 15.0, 4.0, 0.9, 0.1])
    spectrum = Spectrum.of(torch.diag(values))
    assert spectrum.svcca_dims() == 4  # 99 % of 100 is reached with the fourth direction
    assert spectrum.svcca_dims(0.5) == 1 and spectrum.rank == 6
    assert centred_scatter(2, torch.ones(1), torch.ones(1), torch.ones(1, 1)).item() == 0.5


def test_json_round_trip_keeps_nan_cells_and_the_calibration():
    result = run(TokenMixer(0), images(24), measures=["svcca", "rsa"], batch_size=8, replicates=4, permutations=5)
    result.matrices["rsa"][0, 1] = math.nan
    result.p_value["rsa"][0, 1] = math.nan
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["measures"]["rsa"][0][1] is None and doc["p_value"]["rsa"][0][1] is None
    assert set(doc["interval"]["rsa"]) == {"low", "high"} and doc["null_mean"]["rsa"][0][0] is not None
    assert (doc["replicates"], doc["permutations"], doc["seed"]) == (4, 5, 0)
    back = SimilarityResult.from_json(doc)
    assert back.to_json() == doc and math.isnan(back.matrices["rsa"][0, 1])
    torch.testing.assert_close(back.interval["rsa"][1], result.interval["rsa"][1], rtol=0, atol=0)
    assert list(back.matrices) == ["svcca", "rsa"] and back.svcca_dims_a == result.svcca_dims_a
    with pytest.raises(MimlensError, match=r"missing the keys \['measures'\]"):
        SimilarityResult.from_json({k: v for k, v in doc.items() if k != "measures"})


def test_the_image_cap_is_checked_up_front_and_while_streaming():
    model = TokenMixer(0)
    with pytest.raises(MimlensError, match="48 images exceed similarity.max_images=40"):
        run(model, images(), max_images=40)
    stream = iter([images(16), images(16, seed=2), images(16, seed=3)])
    with pytest.raises(MimlensError, match="exceed similarity.max_images=40"):
        run(model, stream, max_images=40, batch_size=16)
    assert run(model, images(), max_images=40, measures=["pwcca"]).num_images == 48  # moments only: no cap


def test_block_series_is_each_block_with_the_last():
    result = run(TokenMixer(0), images(24), measures=["svcca", "procrustes"], batch_size=8)
    series = similarity_block_series(result.to_json())
    assert list(series) == ["svcca with the last block", "procrustes with the last block"]
    np.testing.assert_allclose(series["svcca with the last block"], result.matrices["svcca"][:, -1].numpy())
    assert series["procrustes with the last block"][-1] == pytest.approx(0.0, abs=1e-6)


def test_registry_entry_in_analyze_and_compare(tmp_path, capsys):
    config = tmp_path / "similarity.yaml"
    config.write_text(yaml.safe_dump({"analysis": {"similarity": {"measures": ["mutual_knn", "svcca"], "k": 4,
                                                                        "replicates": 5, "permutations": 7}}}))
    one = tmp_path / "one"
    assert main(["analyze", "vit-micro-32", "--analyses", "similarity", "--config", str(config), "--num-images",
                 "12", "--batch-size", "6", "--out", str(one), "--no-progress"]) == 0
    doc = json.loads((one / "similarity.json").read_text())
    assert list(doc["measures"]) == ["mutual_knn", "svcca"] and doc["k"] == 4 and doc["model_b"] is None
    assert (one / "figures" / "similarity_within.png").is_file()
    assert (doc["replicates"], doc["permutations"]) == (5, 7) and list(doc["interval"]) == ["mutual_knn"]
    report = (one / "report.html").read_text()
    assert "Similarity between blocks" in report and "Mutual k-NN, CKNNA and RSA at (first block, last block)" in report
    assert "mutual_knn: mean between different blocks" in capsys.readouterr().out

    two = tmp_path / "two"
    assert main(["compare", str(one), "vit-micro-32", "--seed", "3", "--analyses", "similarity", "--config",
                 str(config), "--num-images", "12", "--batch-size", "6", "--out", str(two), "--no-progress"]) == 0
    pair = json.loads((two / "similarity_across.json").read_text())["pairs"][0]
    assert (pair["model_a"], pair["model_b"]) == ("one", "vit-micro-32") and len(pair["measures"]["svcca"]) == 3
    assert (two / "figures" / "similarity_across.png").is_file()
    assert "Similarity between models" in (two / "report.html").read_text()
    assert "Mutual k-NN, CKNNA and RSA at (last, last)" in (two / "report.html").read_text()


def test_the_report_rows_read_the_calibrated_corner_cell():
    doc = {"measures": {"rsa": [[1.0, 0.4], [0.4, 1.0]], "svcca": [[1.0, 0.5], [0.5, 1.0]]},
           "interval": {"rsa": {"low": [[1.0, 0.3], [0.2, 1.0]], "high": [[1.0, 0.6], [0.7, 1.0]]}},
           "null_mean": {"rsa": [[0.0, 0.01], [0.02, 0.0]]}, "p_value": {"rsa": [[0.1, 0.2], [0.3, 0.4]]}}
    assert similarity_calibration_rows(doc, across=False) == [["RSA (Spearman)", 0.4, "[0.300, 0.600]", 0.01, 0.2]]
    assert similarity_calibration_rows(doc, across=True) == [["RSA (Spearman)", 1.0, "[1.000, 1.000]", 0.0, 0.4]]
    assert similarity_calibration_rows({"measures": doc["measures"]}, across=True) == []


def test_bad_settings_and_too_many_images_are_refused_before_anything_runs(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"analysis": {"similarity": {"k": 0}}}))
    out = tmp_path / "x"
    assert main(["analyze", "vit-micro-32", "--analyses", "similarity", "--config", str(config), "--out",
                 str(out)]) == 2
    assert "analysis.similarity.k=0: expected a positive integer" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({"analysis": {"similarity": {"max_images": 10}}}))
    assert main(["analyze", "vit-micro-32", "--analyses", "similarity", "--config", str(config), "--num-images",
                 "11", "--out", str(out)]) == 2
    assert "11 images exceed analysis.similarity.max_images=10" in capsys.readouterr().err
    assert not out.exists()
