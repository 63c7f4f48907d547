"""MinibatchCKA: sums of unbiased HSIC over batches divided once, all layer pairs at once, and guards that
explain every NaN cell."""

import math

import numpy as np
import pytest
import torch

from mimlens.analysis.cka import MinibatchCKA, feature_cka
from mimlens.errors import MimlensError


def song_hsic1(x, y):
    """Song et al. 2012 unbiased HSIC of two linear Grams, from its trace formula (a loop-free reference)."""
    k, l = x @ x.T, y @ y.T
    n = len(k)
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (np.trace(k @ l) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


def reference_minibatch(layers, batches):
    """Brute force: for every pair, sum n_b x HSIC1 over batches, then one ratio."""
    names = list(layers)
    out = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            num = sum(len(layers[a][s]) * song_hsic1(layers[a][s], layers[b][s]) for s in batches)
            den_a = sum(len(layers[a][s]) * song_hsic1(layers[a][s], layers[a][s]) for s in batches)
            den_b = sum(len(layers[b][s]) * song_hsic1(layers[b][s], layers[b][s]) for s in batches)
            out[i, j] = num / math.sqrt(den_a * den_b)
    return out


def make_layers(n=60, seed=0, dims=(5, 8, 3)):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 6))
    return {f"blocks.{i}": base @ rng.normal(size=(6, d)) + rng.normal(size=(n, d)) * (i + 1) * 0.5
            for i, d in enumerate(dims)}


def feed(acc, layers, batches, b=None):
    for s in batches:
        acc.update({k: torch.tensor(v[s]) for k, v in layers.items()},
                   None if b is None else {k: torch.tensor(v[s]) for k, v in b.items()})
    return acc


def slices(n, size):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@pytest.mark.parametrize("form", ["gram", "features"])
def test_one_batch_equals_full_debiased_cka(form):
    layers = make_layers()
    acc = feed(MinibatchCKA(list(layers), form=form), layers, [slice(0, 60)])
    expected = [[feature_cka(x, y, debiased=True) for y in layers.values()] for x in layers.values()]
    np.testing.assert_allclose(acc.compute().numpy(), expected, atol=1e-12)
    assert acc.notes() == []


@pytest.mark.parametrize("form", ["gram", "features"])
def test_batches_sum_hsic_then_divide_once_with_ragged_last_batch(form):
    layers = make_layers(n=58)
    batches = slices(58, 16)  # 16, 16, 16, 10: the last enters with its own n and weight
    acc = feed(MinibatchCKA(list(layers), form=form), layers, batches)
    expected = reference_minibatch(layers, batches)
    np.testing.assert_allclose(acc.compute().numpy(), expected, atol=1e-10)
    mean_of_ratios = np.mean([reference_minibatch(layers, [s]) for s in batches], axis=0)
    assert np.abs(acc.compute().numpy() - mean_of_ratios).max() > 1e-3


def test_feature_form_equals_gram_form_over_batches():
    layers = make_layers(n=40, dims=(30, 7))
    batches = slices(40, 8)
    gram = feed(MinibatchCKA(list(layers)), layers, batches).compute()
    features = feed(MinibatchCKA(list(layers), form="features"), layers, batches).compute()
    torch.testing.assert_close(features, gram, rtol=0, atol=1e-10)


def test_across_models_equals_the_matching_block_of_within():
    layers = make_layers()
    a = {k: layers[k] for k in ("blocks.0", "blocks.1")}
    b = {"other.0": layers["blocks.2"], "other.1": layers["blocks.0"]}
    batches = slices(60, 20)
    within = feed(MinibatchCKA(list(layers)), layers, batches).compute()
    for form in ("gram", "features"):
        across = feed(MinibatchCKA(list(a), list(b), form=form), a, batches, b).compute()
        torch.testing.assert_close(across, within[:2][:, [2, 0]], rtol=0, atol=1e-10)


def test_rbf_one_batch_equals_full_debiased_rbf_cka():
    layers = make_layers(n=30)
    acc = feed(MinibatchCKA(list(layers), kernel="rbf", threshold=0.7), layers, [slice(0, 30)])
    x, y = layers["blocks.0"], layers["blocks.2"]
    assert float(acc.compute()[0, 2]) == pytest.approx(feature_cka(x, y, kernel="rbf", debiased=True, threshold=0.7),
                                                       abs=1e-12)


def test_merge_and_state_dict_round_trip_equal_one_accumulator():
    layers = make_layers()
    batches = slices(60, 12)
    whole = feed(MinibatchCKA(list(layers)), layers, batches)
    first = feed(MinibatchCKA(list(layers)), layers, batches[:2])
    second = feed(MinibatchCKA(list(layers)), layers, batches[2:])
    restored = MinibatchCKA(list(layers)).load_state_dict(first.state_dict())
    restored.merge(second)
    torch.testing.assert_close(restored.compute(), whole.compute(), rtol=0, atol=1e-12)
    torch.testing.assert_close(whole.all_reduce_().compute(), restored.compute(), rtol=0, atol=1e-12)
    with pytest.raises(MimlensError, match="different set-ups"):
        whole.merge(MinibatchCKA(list(layers), kernel="rbf"))


def test_float32_features_with_huge_channels_match_float64():
    layers = make_layers(n=48, dims=(40, 24))
    layers["blocks.0"][:, :3] += 1000.0
    layers["blocks.1"][:, 7] += 1000.0
    batches = slices(48, 16)
    expected = reference_minibatch(layers, batches)
    single = {k: v.astype(np.float32) for k, v in layers.items()}
    for form in ("gram", "features"):
        got = feed(MinibatchCKA(list(layers), form=form), single, batches).compute().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)


# -- guards: every NaN explained, partial losses reported --------------------------------------------------------


def explained(acc):
    """True when every NaN cell's row or column layer, or the pair, is named in a note."""
    notes = " ".join(acc.notes())
    return all(f"'{acc.layers_a[i]}'" in notes or f"'{acc.layers_b[j]}'" in notes
               for i, j in acc.compute().isnan().nonzero().tolist())


def test_constant_layer_gives_a_nan_row_with_a_note():
    layers = make_layers()
    layers["blocks.1"] = np.full((60, 4), 3.7)
    acc = feed(MinibatchCKA(list(layers)), layers, slices(60, 20))
    m = acc.compute()
    assert m[1].isnan().all() and m[:, 1].isnan().all()
    assert not m[[0, 2]][:, [0, 2]].isnan().any()
    assert any("'blocks.1'" in n and "zero variance" in n for n in acc.notes())
    assert explained(acc)


def test_hook_that_never_fired_and_partially_missing_layers():
    layers = make_layers()
    batches = slices(60, 15)
    acc = MinibatchCKA([*layers, "blocks.3"])
    for index, s in enumerate(batches):
        values = {k: torch.tensor(v[s]) for k, v in layers.items()}
        if index == 0:
            del values["blocks.2"]
        acc.update(values)
    m = acc.compute()
    assert m[3].isnan().all()
    notes = acc.notes()
    assert any("'blocks.3'" in n and "never fired" in n for n in notes)
    assert any("'blocks.2'" in n and "1 without output" in n and "other 3" in n for n in notes)
    # blocks.2's cells use only the batches where it ran, for numerator and both denominators alike
    later = reference_minibatch(layers, batches[1:])
    assert float(m[0, 2]) == pytest.approx(later[0, 2], abs=1e-10)
    assert float(m[0, 1]) == pytest.approx(reference_minibatch(layers, batches)[0, 1], abs=1e-10)
    assert explained(acc)


def test_small_batches_are_skipped_and_counted():
    layers = make_layers(n=43)
    acc = feed(MinibatchCKA(list(layers)), layers, [slice(0, 20), slice(20, 40), slice(40, 43)])
    np.testing.assert_allclose(acc.compute().numpy(), reference_minibatch(layers, slices(40, 20)), atol=1e-10)
    assert any("1 batch(es) with fewer than 4 samples (3 samples) skipped" in n for n in acc.notes())


def test_only_small_batches_give_an_explained_nan_matrix():
    layers = make_layers(n=3)
    acc = feed(MinibatchCKA(list(layers)), layers, [slice(0, 3)])
    assert acc.compute().isnan().all()
    assert any("no batch of at least 4 samples" in n for n in acc.notes())


def test_non_finite_output_is_excluded_and_reported():
    layers = make_layers()
    batches = slices(60, 20)
    acc = MinibatchCKA(list(layers), ["other"])
    for index, s in enumerate(batches):
        other = layers["blocks.0"][s] * 2 + 1
        if index == 1:
            other = other.copy()
            other[0, 0] = np.nan
        acc.update({k: torch.tensor(v[s]) for k, v in layers.items()}, {"other": torch.tensor(other)})
    assert float(acc.compute()[0, 0]) == pytest.approx(1.0, abs=1e-12)
    assert any("model b layer 'other'" in n and "1 with non-finite values" in n for n in acc.notes())


def test_update_rejects_inconsistent_input():
    layers = make_layers()
    acc = MinibatchCKA(list(layers))
    with pytest.raises(MimlensError, match="update"):
        acc.update({"blocks.0": torch.zeros(8, 2)}, {"blocks.0": torch.zeros(8, 2)})
    with pytest.raises(MimlensError, match="not among"):
        acc.update({"head": torch.zeros(8, 2)})
    with pytest.raises(MimlensError, match="disagree on the number of samples"):
        acc.update({"blocks.0": torch.randn(8, 2), "blocks.1": torch.randn(6, 2)})
    with pytest.raises(MimlensError, match="linear kernel only"):
        MinibatchCKA(["a"], kernel="rbf", form="features")
