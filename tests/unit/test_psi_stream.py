"""ECDH-PSI in bounded chunks: the same intersection as the one-shot protocol at every
chunk boundary, and every out-of-order, repeated or malformed chunk refused by name."""

from __future__ import annotations

import os

import numpy as np
import pytest

from creditshare.errors import CapacityError, InvalidInputError, OutOfOrderError
from creditshare.federated import _psi_stream
from creditshare.federated._psi import PsiParty, bureau_intersect, bureau_request, node_answer
from creditshare.federated._psi_stream import (
    MAX_PSI_CHUNK,
    BureauRun,
    NodeRun,
    id_array,
    run_in_process,
)

DOMAIN = b"job-0002/streamed"


def ids(start: int, stop: int) -> list[str]:
    return [f"91{i:016d}" for i in range(start, stop)]


def one_shot(bureau_ids: list[str], node_ids: list[str]) -> list[str]:
    bureau, node = PsiParty(DOMAIN), PsiParty(DOMAIN)
    response = node_answer(node, node_ids, bureau_request(bureau, bureau_ids))
    return bureau_intersect(bureau, bureau_ids, response)


def streamed(
    bureau_ids: list[str], node_ids: list[str], chunk: int
) -> tuple[NodeRun, dict[str, bytes]]:
    """Both sides, chunk by chunk: the node (to check its index) and the bureau's result."""
    node = NodeRun(DOMAIN, id_array([node_ids]))
    bureau = BureauRun(DOMAIN, bureau_ids)
    for part in bureau.chunks(chunk):
        assert len(part.blinded) <= chunk
        bureau.answered(part.offset, node.reblind(part.offset, part.blinded, part.more), node.size)
    offset, last = 0, False
    while not last:
        page, last = node.page(offset, chunk)
        assert len(page) <= chunk
        bureau.match(offset, page, node.size)
        offset += len(page)
    assert node.done and bureau.complete
    return node, bureau.result()


# (bureau ids, node ids, chunk): empty sets, exact multiples of the chunk, one over and
# one under, a chunk of one, a chunk larger than both sets.
BOUNDARIES = [
    ((0, 0), (0, 0), 4),
    ((0, 0), (0, 12), 4),
    ((0, 12), (0, 0), 4),
    ((0, 12), (6, 18), 4),
    ((0, 13), (6, 19), 4),
    ((0, 11), (6, 17), 4),
    ((0, 12), (0, 12), 12),
    ((0, 13), (0, 13), 12),
    ((0, 9), (3, 40), 1),
    ((0, 50), (25, 60), 1000),
    ((0, 40), (100, 140), 8),
]


@pytest.mark.parametrize(("bureau", "node", "chunk"), BOUNDARIES)
def test_the_streamed_intersection_equals_the_one_shot(
    bureau: tuple[int, int], node: tuple[int, int], chunk: int
) -> None:
    bureau_ids, node_ids = ids(*bureau), ids(*node)
    run, found = streamed(bureau_ids, node_ids, chunk)
    expected = [x for x in bureau_ids if x in set(node_ids)]
    assert list(found) == expected == one_shot(bureau_ids, node_ids)
    # The points the bureau keeps are the node's own: they name exactly those ids to it.
    if found:
        assert run.ids_of(list(found.values())) == list(found)


def test_in_process_driver_matches_at_the_default_chunk() -> None:
    bureau_ids, node_ids = ids(0, 300), ids(150, 700)
    assert list(run_in_process(DOMAIN, bureau_ids, node_ids)) == ids(150, 300)


def test_no_message_exceeds_the_cap_whatever_the_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cap of 16 points a message, sets of 200 and 300: the run still completes, and no
    chunk or page over the cap is accepted by either side."""
    monkeypatch.setattr(_psi_stream, "MAX_PSI_CHUNK", 16)
    _, found = streamed(ids(0, 200), ids(100, 400), 16)
    assert list(found) == ids(100, 200)
    with pytest.raises(InvalidInputError, match="at most 16"):
        NodeRun(DOMAIN, id_array([ids(0, 40)])).reblind(0, [bytes(32)] * 17, True)
    with pytest.raises(InvalidInputError, match="between 1 and 16"):
        streamed(ids(0, 5), ids(0, 40), 17)
    with pytest.raises(InvalidInputError, match="limit must be between 1 and 16"):
        answered_node().page(0, 17)


def test_the_node_pages_its_ids_in_a_fresh_random_order() -> None:
    node_ids = ids(0, 200)
    orders = []
    for _ in range(2):
        run = NodeRun(DOMAIN, id_array([node_ids]))
        run.reblind(0, [], False)
        page, last = run.page(0, 200)
        assert last
        orders.append(run.ids_of(page))
    assert sorted(orders[0]) == node_ids
    # 1/200! chance each of a false failure.
    assert orders[0] != node_ids and orders[0] != orders[1]


def test_the_page_order_comes_from_the_os_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not from a seeded statistical generator (numpy's are not cryptographic: the
    bureau sees where shared ids land, and must not be able to rebuild the order)."""
    node_ids = ids(0, 50)
    drawn: list[int] = []

    def token_bytes(count: int) -> bytes:
        drawn.append(count)
        if count != 8 * len(node_ids):  # the run's scalar
            return os.urandom(count)
        return np.arange(len(node_ids), 0, -1, dtype=np.uint64).tobytes()  # ids reversed

    monkeypatch.setattr("creditshare.federated._psi_stream.secrets.token_bytes", token_bytes)
    run = NodeRun(DOMAIN, id_array([node_ids]))
    run.reblind(0, [], False)
    page, _ = run.page(0, 50)
    assert 8 * 50 in drawn
    assert run.ids_of(page) == node_ids[::-1]


def test_points_ending_in_zero_bytes_survive_the_arrays() -> None:
    """Fixed-width numpy bytes drop trailing NULs on element access: the buffers do not."""
    points = [b"\x01" * 31 + b"\x00", b"\x00" * 32, b"\x02" * 30 + b"\x00\x00"]
    assert _psi_stream._as_list(_psi_stream._as_array(points)) == points


# --------------------------------------------------------------------------- the node


def answered_node(count: int = 10) -> NodeRun:
    run = NodeRun(DOMAIN, id_array([ids(0, count)]))
    bureau = PsiParty(DOMAIN)
    run.reblind(0, bureau.blind_ids(ids(0, 4)), False)
    return run


def test_a_chunk_out_of_order_is_refused_by_offset() -> None:
    run = NodeRun(DOMAIN, id_array([ids(0, 10)]))
    blinded = PsiParty(DOMAIN).blind_ids(ids(0, 6))
    with pytest.raises(InvalidInputError, match="starts at offset 3, but 0 values came"):
        run.reblind(3, blinded[3:], False)
    run.reblind(0, blinded[:3], True)  # more follow
    with pytest.raises(InvalidInputError, match="starts at offset 0, but 3 values came"):
        run.reblind(0, blinded[:3], True)  # the same chunk again


def test_chunks_after_the_last_and_pages_before_it_are_refused() -> None:
    run = NodeRun(DOMAIN, id_array([ids(0, 10)]))
    with pytest.raises(InvalidInputError, match="after the bureau's last chunk"):
        run.page(0, 5)
    blinded = PsiParty(DOMAIN).blind_ids(ids(0, 3))
    run.reblind(0, blinded, False)
    with pytest.raises(InvalidInputError, match="last chunk came already"):
        run.reblind(3, blinded, False)


def test_pages_out_of_order_and_past_the_end_are_refused() -> None:
    run = answered_node(10)
    first, last = run.page(0, 6)
    assert len(first) == 6 and not last
    with pytest.raises(InvalidInputError, match="starts at offset 0, but 6 values came"):
        run.page(0, 6)
    with pytest.raises(InvalidInputError, match="starts at offset 7"):
        run.page(7, 6)
    rest, last = run.page(6, 6)
    assert len(rest) == 4 and last
    with pytest.raises(InvalidInputError, match="paged out already"):
        run.page(10, 6)


@pytest.mark.parametrize("limit", [0, -1, MAX_PSI_CHUNK + 1])
def test_page_limits_are_bounded(limit: int) -> None:
    with pytest.raises(InvalidInputError, match="limit must be between"):
        answered_node().page(0, limit)


def test_a_wrong_size_point_is_named_by_its_index_in_the_whole_set() -> None:
    run = NodeRun(DOMAIN, id_array([ids(0, 10)]))
    blinded = PsiParty(DOMAIN).blind_ids(ids(0, 6))
    run.reblind(0, blinded[:3], True)
    with pytest.raises(InvalidInputError, match=r"blinded\[4\] is not a 32-byte value"):
        run.reblind(3, [blinded[3], blinded[4][:31], blinded[5]], False)
    # Refused chunks move nothing: the right one is still accepted at offset 3.
    assert len(run.reblind(3, blinded[3:], False)) == 3


def test_empty_chunks_only_end_an_empty_set() -> None:
    run = NodeRun(DOMAIN, id_array([ids(0, 10)]))
    with pytest.raises(InvalidInputError, match="chunk is empty"):
        run.reblind(0, [], True)
    run.reblind(0, PsiParty(DOMAIN).blind_ids(ids(0, 2)), True)
    with pytest.raises(InvalidInputError, match="chunk is empty"):
        run.reblind(2, [], False)


def test_the_index_answers_only_finished_runs_and_its_own_points() -> None:
    run = answered_node(10)
    page, _ = run.page(0, 5)
    with pytest.raises(OutOfOrderError, match="not finished"):
        run.ids_of(page)
    rest, last = run.page(5, 5)
    assert last
    assert sorted(run.ids_of(page + rest)) == ids(0, 10)
    with pytest.raises(InvalidInputError, match="point 1 is not one this node answered"):
        run.ids_of([page[0], bytes(32)])
    with pytest.raises(InvalidInputError, match=r"points\[0\] is not a 32-byte value"):
        run.ids_of([page[0][:31]])


def test_one_call_at_a_time_per_run() -> None:
    run = answered_node()
    run._busy.acquire()
    try:
        with pytest.raises(CapacityError, match="another PSI call"):
            run.page(0, 5)
    finally:
        run._busy.release()
    assert run.page(0, 5)[0]


def test_node_ids_must_be_distinct_strings() -> None:
    with pytest.raises(InvalidInputError, match="duplicate"):
        id_array([ids(0, 3), ids(2, 4)])
    with pytest.raises(InvalidInputError, match="NUL"):
        id_array([["a\x00"]])
    with pytest.raises(InvalidInputError, match="must be str"):
        id_array([[b"a"]])  # type: ignore[list-item]


# --------------------------------------------------------------------------- the bureau


def bureau_and_node(bureau_ids: list[str], node_ids: list[str]) -> tuple[BureauRun, NodeRun]:
    node = NodeRun(DOMAIN, id_array([node_ids]))
    bureau = BureauRun(DOMAIN, bureau_ids)
    for part in bureau.chunks(4):
        bureau.answered(part.offset, node.reblind(part.offset, part.blinded, part.more), node.size)
    return bureau, node


def test_the_bureau_refuses_pages_before_every_answer() -> None:
    node = NodeRun(DOMAIN, id_array([ids(0, 8)]))
    bureau = BureauRun(DOMAIN, ids(0, 8))
    part = next(bureau.chunks(4))
    bureau.answered(0, node.reblind(0, part.blinded, True), node.size)
    with pytest.raises(InvalidInputError, match="after every chunk was answered"):
        bureau.match(0, [], 8)


def test_the_bureau_refuses_a_point_sent_twice_and_a_changing_size() -> None:
    bureau, node = bureau_and_node(ids(0, 8), ids(0, 8))
    page, _ = node.page(0, 8)
    with pytest.raises(InvalidInputError, match="size changed from 8 to 9"):
        bureau.match(0, page[:2], 9)
    bureau.match(0, page[:2], 8)
    with pytest.raises(InvalidInputError, match=r"two points of one id \(node_blinded\[2\]\)"):
        bureau.match(2, page[:1], 8)


def test_the_bureau_refuses_more_points_than_the_node_announced() -> None:
    bureau, node = bureau_and_node(ids(0, 8), ids(0, 8))
    page, _ = node.page(0, 8)
    with pytest.raises(InvalidInputError, match="more points than its set's 8"):
        bureau.match(0, page + page[:1], 8)


def test_the_bureau_refuses_an_unfinished_run_and_an_answer_out_of_order() -> None:
    bureau, node = bureau_and_node(ids(0, 8), ids(4, 12))
    page, _ = node.page(0, 5)
    bureau.match(0, page, 8)
    with pytest.raises(InvalidInputError, match="5 of the node's 8 points came"):
        bureau.result()
    with pytest.raises(InvalidInputError, match="starts at offset 6, but 5 values came"):
        bureau.match(6, page[:1], 8)
    fresh = BureauRun(DOMAIN, ids(0, 8))
    with pytest.raises(InvalidInputError, match="answer out of order"):
        fresh.answered(4, [bytes(32)] * 4, 8)
    with pytest.raises(InvalidInputError, match=r"double_blinded\[1\] is not a 32-byte"):
        fresh.answered(0, [bytes(32), bytes(31)], 8)


def test_the_bureau_refuses_duplicate_ids() -> None:
    with pytest.raises(InvalidInputError, match="duplicate"):
        BureauRun(DOMAIN, ["a", "b", "a"])
