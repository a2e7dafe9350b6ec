"""A tree host holds the bureau to the protocol's shape: one split per tree node, over
the rows the node holds, only in the current tree (trees/_hostcore.py)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from creditshare.errors import InvalidInputError
from creditshare.trees import PlainTreeHost, TreeConfig

ROWS = 64  # values 0..7, eight rows each: bin k holds value k
FIT = list(range(48))
OTHERS = list(range(48, 64))


def host(floor: int = 4) -> PlainTreeHost:
    values = (np.arange(ROWS) % 8).astype(float).reshape(ROWS, 1)
    config = TreeConfig(trees=3, max_depth=3, min_child_rows=floor)
    out = PlainTreeHost("n1", values, ["a"], values, config)
    out.gradients(0, FIT, np.ones(len(FIT)), np.ones(len(FIT)))
    return out


def rows_where(bits: list[bool], rows: list[int], left: bool) -> list[int]:
    return [r for r, b in zip(rows, bits, strict=True) if b == left]


def test_a_position_is_split_once_and_a_retry_must_be_identical() -> None:
    h = host()
    h.histograms(0, [(0, FIT)])
    bits = h.split(0, 0, 0, 3, FIT, OTHERS)
    assert h.split(0, 0, 0, 3, FIT, OTHERS) == bits
    with pytest.raises(InvalidInputError, match="already split; a retry must repeat"):
        h.split(0, 0, 0, 3, FIT, OTHERS[:8])  # the same rule over other rows
    with pytest.raises(InvalidInputError, match="already split; a retry must repeat"):
        h.split(0, 0, 0, 5, FIT, OTHERS)
    assert h.splits_recorded == 1


def test_a_refused_split_records_nothing_and_the_next_candidate_is_taken() -> None:
    h = host(floor=7)
    h.histograms(0, [(0, FIT)])
    with pytest.raises(InvalidInputError, match="floor of 7"):
        h.split(0, 0, 0, 0, FIT, OTHERS)  # six fit rows in bin 0
    assert h.splits_recorded == 0
    h.split(0, 0, 0, 2, FIT, OTHERS)
    assert h.splits_recorded == 1


def test_a_split_under_an_unsplit_parent_is_refused() -> None:
    h = host()
    with pytest.raises(InvalidInputError, match="the root's histograms were not asked"):
        h.split(0, 0, 0, 3, FIT, [])
    h.histograms(0, [(0, FIT)])
    with pytest.raises(InvalidInputError, match="parent position 0 was not split"):
        h.split(0, 1, 0, 1, FIT[:24], [])
    bits = h.split(0, 0, 0, 3, FIT, OTHERS)
    left = rows_where(bits[: len(FIT)], FIT, True)
    right = rows_where(bits[: len(FIT)], FIT, False)
    with pytest.raises(InvalidInputError, match="parent position 1 was not split"):
        h.split(0, 3, 0, 1, left, [])
    with pytest.raises(InvalidInputError, match="position 3, its parent, holds no known rows"):
        h.histograms(0, [(7, left[:8])])
    # the children of its own split hold exactly the rows it sent there
    with pytest.raises(InvalidInputError, match="differ from the rows this tree node holds"):
        h.histograms(0, [(1, FIT[:24])])
    h.histograms(0, [(1, left)])
    with pytest.raises(InvalidInputError, match="not the rows this tree node holds"):
        h.split(0, 2, 0, 5, FIT, [])
    other_right = rows_where(bits[len(FIT) :], OTHERS, False)
    with pytest.raises(InvalidInputError, match="other rows are not the ones"):
        h.split(0, 2, 0, 5, right, OTHERS)
    h.split(0, 2, 0, 5, right, other_right)  # the sibling of an asked child


def test_rows_of_another_nodes_split_follow_the_histogram_requests() -> None:
    h = host()
    h.histograms(0, [(0, FIT)])  # the root is split by another node
    with pytest.raises(InvalidInputError, match="not a child of position 0's rows"):
        h.histograms(0, [(1, FIT)])  # a "child" holding every row
    h.histograms(0, [(1, FIT[:20])])
    with pytest.raises(InvalidInputError, match="not the rows this tree node holds"):
        h.split(0, 1, 0, 3, FIT[:24], OTHERS[:4])
    h.split(0, 1, 0, 3, FIT[:20], OTHERS[:4])
    with pytest.raises(InvalidInputError, match="not the rows this tree node holds"):
        h.split(0, 2, 0, 3, FIT, OTHERS[4:])
    with pytest.raises(InvalidInputError, match="already split at another position of this"):
        h.split(0, 2, 0, 3, FIT[20:], OTHERS[2:])  # other rows overlap position 1's
    h.split(0, 2, 0, 3, FIT[20:], OTHERS[4:])


def test_a_split_in_an_earlier_tree_is_refused() -> None:
    h = host()
    h.histograms(0, [(0, FIT)])
    h.split(0, 0, 0, 3, FIT, [])
    h.gradients(1, FIT, np.ones(len(FIT)), np.ones(len(FIT)))
    with pytest.raises(InvalidInputError, match="tree 0 has no complete gradients here"):
        h.split(0, 1, 0, 1, FIT, [])
    with pytest.raises(InvalidInputError, match="the root's histograms were not asked"):
        h.split(1, 0, 0, 1, FIT, [])  # a new tree starts from its root again


def attack(h: PlainTreeHost, tree: int) -> dict[int, list[bool]]:
    """The reviewer's bureau: one split per bin at positions 0–6, each over every row
    (asking each position's histogram over every row first), answers per row."""
    if tree:
        h.gradients(tree, FIT, np.ones(len(FIT)), np.ones(len(FIT)))
    answers: dict[int, list[bool]] = {r: [] for r in FIT + OTHERS}
    for position in range(7):
        with contextlib.suppress(InvalidInputError):
            h.histograms(tree, [(position, FIT)])
        try:
            bits = h.split(tree, position, 0, position, FIT, OTHERS)
        except InvalidInputError:
            continue
        for r, b in zip(FIT + OTHERS, bits, strict=True):
            answers[r].append(b)
    return answers


def test_one_split_per_bin_across_positions_no_longer_recovers_bins() -> None:
    h = host()
    answers: dict[int, list[bool]] = {r: [] for r in FIT + OTHERS}
    for tree in range(3):
        for r, bits in attack(h, tree).items():
            answers[r].extend(bits)
    groups = {tuple(bits) for bits in answers.values()}
    # Before the fix every bin gave its own answer pattern (8 groups); now only each
    # tree's root split answers (over all rows), at most 2 patterns per tree.
    assert h.splits_recorded == 3
    assert len(groups) <= 4 < 8
    # and per tree, each row meets at most one split per level
    assert all(len(bits) <= 3 for bits in answers.values())
