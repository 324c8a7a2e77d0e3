"""Samplers against their definitions: shuffle, replacement (chi-square), full."""

from __future__ import annotations

from collections import Counter

import pytest
from scipy import stats

from tests.builtin_helpers import built


def epochs_of(sampler, k):
    return [[i for batch in sampler for i in batch] for _ in range(k)]


def test_shuffle_visits_each_index_exactly_once_per_epoch():
    b = built({"problem": "linreg", "sampler": "shuffle"}, batch_size=32)
    n = b.ctx.n
    seen = epochs_of(b.sampler, 3)
    for epoch in seen:
        assert sorted(epoch) == list(range(n))
    assert seen[0] != seen[1]  # a fresh permutation each epoch
    assert len(list(b.sampler)) == -(-n // 32)


def test_replacement_draws_pass_chi_square_uniformity():
    b = built({"problem": "linreg", "sampler": "replacement"}, batch_size=32)
    n = b.ctx.n
    draws = [i for epoch in epochs_of(b.sampler, 50) for i in epoch]
    assert len(draws) == 50 * n  # n draws per epoch
    counts = Counter(draws)
    observed = [counts.get(i, 0) for i in range(n)]
    result = stats.chisquare(observed)
    assert result.pvalue > 0.01, result
    # with replacement, one epoch repeats some indices and misses others
    first = epochs_of(b.sampler, 1)[0]
    assert len(set(first)) < n


def test_full_yields_one_batch_of_all_n():
    b = built({"problem": "linreg", "sampler": "full"}, batch_size=4)
    batches = list(b.sampler)
    assert len(batches) == 1 and sorted(batches[0]) == list(range(b.ctx.n))
    assert b.ctx.steps_per_epoch == 1


@pytest.mark.parametrize("name", ["shuffle", "replacement"])
def test_drop_last_drops_the_incomplete_batch(name):
    n = 800  # linreg's training set
    keep = built({"sampler": name}, {"sampler.drop_last": False}, batch_size=300).sampler
    drop = built({"sampler": name}, {"sampler.drop_last": True}, batch_size=300).sampler
    assert [len(x) for x in keep] == [300, 300, n - 600]
    assert [len(x) for x in drop] == [300, 300]
