"""Packing variable-length examples into fixed-shape rows with exact segment masks.

One row layout serves training and scoring. For a row of length L holding several examples:

  tokens_L       input token ids (0 on padding)
  targets_L      targets_L[t] = tokens_L[t + 1] when t + 1 belongs to the same example, else 0
  loss_mask_L    True where targets_L[t] is a token to train on / score
  segment_ids_L  1, 2, ... per example in the row; 0 on padding (attention never crosses segments)
  positions_L    position within its own example (rotary embeddings restart per example)

An example is a pair (ids_T, mask_T): mask_T[t] says whether token t is scored, i.e. predicted
from tokens < t. mask_T[0] is ignored: the first token has no context.
"""

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """A batch of packed rows, all [R, L], plus where each example went."""

    tokens: np.ndarray  # int32 [R, L]
    targets: np.ndarray  # int32 [R, L]
    loss_mask: np.ndarray  # bool [R, L]
    segment_ids: np.ndarray  # int32 [R, L]
    positions: np.ndarray  # int32 [R, L]
    example_index: np.ndarray  # int32 [R, S]: example index held by (row, segment - 1), -1 if none

    @property
    def num_real_tokens(self) -> int:
        return int((self.segment_ids > 0).sum())


def first_fit_decreasing(lengths: Sequence[int], row_length: int, max_segments: int) -> list[list[int]]:
    """Assigns example indices to rows of capacity `row_length`: longest first, each into the first
    row with room (and fewer than `max_segments` examples). O(N log N) through a max-tree over rows.

    Returns rows as lists of example indices. Raises ValueError for an example longer than a row.
    Deterministic: ties keep input order.
    """
    n_items = len(lengths)
    order = sorted(range(n_items), key=lambda i: (-int(lengths[i]), i))
    size = 1
    while size < max(n_items, 1):
        size *= 2
    tree = [row_length] * (2 * size)  # tree[node] = most free space of any row below node
    rows: list[list[int]] = []
    for i in order:
        n = int(lengths[i])
        if n > row_length:
            raise ValueError(f"example {i} has {n} tokens, more than the row length {row_length}")
        node = 1
        while node < size:
            node = 2 * node if tree[2 * node] >= n else 2 * node + 1
        r = node - size
        if r == len(rows):
            rows.append([])
        rows[r].append(i)
        tree[node] -= n
        if len(rows[r]) >= max_segments:
            tree[node] = -1
        node //= 2
        while node:
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
            node //= 2
    return rows


def materialize_rows(
    examples: Sequence[tuple[np.ndarray, np.ndarray]],
    rows: Sequence[Sequence[int]],
    row_length: int,
    max_segments: int,
    num_rows: int | None = None,
) -> PackedRows:
    """Builds the fixed-shape arrays for `rows` (lists of indices into `examples`).

    num_rows pads the batch with empty rows up to a static count (None: len(rows)).
    """
    num_rows = len(rows) if num_rows is None else num_rows
    if len(rows) > num_rows:
        raise ValueError(f"{len(rows)} rows do not fit a batch of {num_rows}")
    shape = (num_rows, row_length)
    tokens = np.zeros(shape, np.int32)
    targets = np.zeros(shape, np.int32)
    loss_mask = np.zeros(shape, bool)
    segment_ids = np.zeros(shape, np.int32)
    positions = np.zeros(shape, np.int32)
    example_index = np.full((num_rows, max_segments), -1, np.int32)
    for r, members in enumerate(rows):
        if len(members) > max_segments:
            raise ValueError(f"row {r} holds {len(members)} examples, more than {max_segments}")
        start = 0
        for s, e in enumerate(members):
            ids_T, mask_T = examples[e]
            n = len(ids_T)
            end = start + n
            tokens[r, start:end] = ids_T
            targets[r, start : end - 1] = ids_T[1:]
            loss_mask[r, start : end - 1] = np.asarray(mask_T[1:], bool)
            segment_ids[r, start:end] = s + 1
            positions[r, start:end] = np.arange(n)
            example_index[r, s] = e
            start = end
    return PackedRows(tokens, targets, loss_mask, segment_ids, positions, example_index)
