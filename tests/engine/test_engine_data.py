"""Data order and per-sample randomness depend on (seed, epoch, index) only."""

import random

import numpy as np
import torch

from mimlens.engine.loader import EpochSampler, SeededTransform, build_loader


def test_two_ranks_split_each_global_batch_of_one_process(toy_images):
    data = toy_images(20)
    one = list(EpochSampler(data, num_replicas=1, rank=0, seed=3))
    ranks = [list(EpochSampler(data, num_replicas=2, rank=r, seed=3)) for r in range(2)]
    assert all(epoch == 0 for epoch, _ in one)
    for b in range(5):  # global batch 4 = 2 ranks × 2
        assert sorted(one[4 * b : 4 * b + 4]) == sorted(ranks[0][2 * b : 2 * b + 2] + ranks[1][2 * b : 2 * b + 2])


def test_start_skips_the_first_samples_of_the_epoch(toy_images):
    sampler = EpochSampler(toy_images(20), num_replicas=1, rank=0, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=7)
    assert list(sampler) == full[7:] and len(sampler) == 13
    assert {e for e, _ in full} == {2}
    sampler.set_epoch(3)
    assert [i for _, i in sampler] != [i for _, i in full]


def test_seeded_transform_is_a_function_of_the_key_and_leaves_global_rngs_alone(toy_images):
    data = SeededTransform(toy_images(4), lambda item: torch.rand(3) + item["image"].mean(), seed=0)
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = data[(0, 1)]
    assert torch.equal(data[(0, 1)], first)
    assert not torch.equal(data[(1, 1)], first) and not torch.equal(data[(0, 2)], first)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]


def test_worker_processes_give_the_same_batches(toy_images):
    def batches(workers):
        loader, sampler = build_loader(toy_images(12), lambda item: {"x": torch.rand(2) + item["label"]},
                                       batch_size=4, num_replicas=1, rank=0, seed=1, num_workers=workers)
        sampler.set_epoch(1, start=4)
        return [b["x"] for b in loader]

    main, workers = batches(0), batches(1)
    assert len(main) == 2 and all(torch.equal(a, b) for a, b in zip(main, workers, strict=True))
