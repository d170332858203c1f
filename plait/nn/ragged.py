"""A right-padded batch of very unequal lengths, run through an encoder in a few groups of
similar length.

A batch of short texts with one long one is padded to the long one, and every row then pays
for the padding in every layer: tiny Shakespeare's speeches have a median of about 20 pieces,
but one in nine reaches 128, so a batch of 64 padded to 128 is mostly padding. Sorting the
rows by length and cutting them into runs, each padded only to its own longest, does the same
work on a fraction of the positions. On 2 CPU cores the speaker task's fine-tuning step runs
twice as fast, and sentence embeddings of mixed-length texts 2.4 times as fast. Where padding
cannot change a real token's state (an attention mask over the keys, positions counted from
the left), the states are those of one call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# what one more group costs, in padded positions: launching every layer's kernels once more
GROUP_OVERHEAD = 128


def length_groups(lengths: list[int], overhead: int = GROUP_OVERHEAD) -> list[list[int]]:
    """Row indices cut into groups of similar length that minimise the positions computed,
    sum over groups of rows x longest, plus ``overhead`` per group. The rows sorted by length,
    the best cut points by dynamic programming (O(n^2), n the rows). Shortest group first."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    size = [lengths[i] for i in order]
    n = len(size)
    best = [0.0] + [float("inf")] * n  # best[j]: the cheapest cut of the j shortest rows
    start = [0] * (n + 1)  # where the last group of that cut begins
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + (j - i) * size[j - 1] + overhead
            if cost < best[j]:
                best[j], start[j] = cost, i
    groups, j = [], n
    while j:
        groups.append(order[start[j]:j])
        j = start[j]
    return groups[::-1]


def by_length(encoder: Callable[[Tensor, Tensor], Tensor], input_ids: Tensor,
              attention_mask: Tensor, overhead: int = GROUP_OVERHEAD) -> Tensor:
    """``encoder(ids, mask)`` -> (B, T, C) hidden states of a right-padded batch, computed in
    :func:`length_groups`. Padding holds what the encoder gives there within a group and
    zeros beyond its longest row: read only the real tokens. One group (nothing to save) is
    one plain call."""
    if not bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()):  # not right-padded
        return encoder(input_ids, attention_mask)
    lengths = [int(n) for n in attention_mask.sum(1).tolist()]
    groups = length_groups(lengths, overhead)
    if len(groups) == 1:
        return encoder(input_ids, attention_mask)
    B, T = input_ids.shape
    parts = []
    for rows in groups:
        index = torch.tensor(rows, device=input_ids.device)
        n = max(lengths[i] for i in rows)
        parts.append((index, encoder(input_ids[index, :n], attention_mask[index, :n])))
    first = parts[0][1]
    hidden = first.new_zeros(B, T, first.shape[-1])
    for index, h in parts:
        hidden[index, :h.shape[1]] = h
    return hidden
