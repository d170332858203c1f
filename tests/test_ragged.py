"""A padded batch run in groups of similar length: the cheapest cut, and the same states."""

import itertools
import random

import pytest
import torch

from plait.models import Bert, BertConfig
from plait.nn.ragged import by_length, length_groups


def cost(lengths, groups, overhead):
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def brute_force(lengths, overhead):
    """The cheapest cut of the sorted rows into contiguous runs, trying every cut."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = None
    for k in range(len(order)):
        for cuts in itertools.combinations(range(1, len(order)), k):
            bounds = (0, *cuts, len(order))
            groups = [order[a:b] for a, b in itertools.pairwise(bounds)]
            c = cost(lengths, groups, overhead)
            best = c if best is None else min(best, c)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_length_groups_is_the_cheapest_cut_and_keeps_every_row_once(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(2, 12), rng.randint(60, 128)]) for _ in range(9)]
    overhead = rng.choice([0, 16, 64, 400])
    groups = length_groups(lengths, overhead)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert cost(lengths, groups, overhead) == brute_force(lengths, overhead)
    longest = [max(lengths[i] for i in g) for g in groups]
    assert longest == sorted(longest)


def test_length_groups_splits_short_rows_from_a_long_one_and_not_equal_ones():
    assert length_groups([5, 5, 120, 5, 5, 5], overhead=16) == [[0, 1, 3, 4, 5], [2]]
    assert length_groups([30] * 8, overhead=0) == [list(range(8))]  # ties: one group


def bert(pos):
    torch.manual_seed(0)
    return Bert(BertConfig(vocab_size=50, n_layer=2, n_head=2, n_embd=16, n_inner=32,
                           block_size=64, pos_encoding=pos))


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_grouped_states_and_gradients_equal_one_padded_call(pos):
    model = bert(pos).eval()
    lengths = [3, 60, 4, 5, 58, 6, 2, 7]
    ids = torch.randint(5, 50, (len(lengths), 64))
    mask = (torch.arange(64) < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask
    assert len(length_groups(lengths, 16)) > 1  # the test runs several groups
    whole = model(ids, mask)
    grouped = by_length(model, ids, mask, overhead=16)
    real = mask.bool()
    torch.testing.assert_close(grouped[real], whole[real], atol=1e-5, rtol=1e-5)
    assert grouped[:, 8:][mask[:, 8:] == 0].abs().max() > 0  # some padding was computed
    assert grouped[0, 8:].abs().max() == 0  # a short row's group stops at its longest

    def grads(hidden_of):
        model.zero_grad()
        pooled = model.pool(hidden_of(), mask)
        (pooled * torch.linspace(-1, 1, 16)).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for a, b in zip(grads(lambda: model(ids, mask)),
                    grads(lambda: by_length(model, ids, mask, overhead=16)), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_one_group_is_one_plain_call():
    calls = []

    def encoder(ids, mask):
        calls.append(ids.shape)
        return torch.zeros(*ids.shape, 4)

    ids, mask = torch.ones(3, 10, dtype=torch.long), torch.ones(3, 10, dtype=torch.long)
    by_length(encoder, ids, mask)
    assert calls == [(3, 10)]


def test_a_left_padded_batch_is_one_plain_call():
    calls = []

    def encoder(ids, mask):
        calls.append(ids.shape)
        return torch.zeros(*ids.shape, 4)

    mask = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1]] * 6 + [[1] * 8])  # short rows padded left
    by_length(encoder, torch.ones_like(mask), mask, overhead=0)
    assert calls == [(7, 8)]
