"""The node's PSI runs in its job store: once per job, bounded in number, dropped when
idle, and a chunk for a run that does not exist is the caller's error."""

from __future__ import annotations

import pytest

from creditshare.errors import CapacityError, InvalidInputError, NotFoundError
from creditshare.federated import NodeRun, id_array
from creditshare.node._receipts import ReceiptRefusedError
from creditshare.node._training_jobs import Job, JobStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run() -> NodeRun:
    return NodeRun(b"job-store", id_array([["91000000000000000001", "91000000000000000002"]]))


def test_a_job_runs_psi_once() -> None:
    store = JobStore("n1")
    first = run()
    store.start_psi("job-1", first)
    assert store.psi("job-1") is first
    with pytest.raises(ReceiptRefusedError, match="already aligned"):
        store.start_psi("job-1", run())
    with pytest.raises(ReceiptRefusedError, match="already aligned"):
        store.check_new("job-1")


def test_a_chunk_without_a_run_is_the_callers_error() -> None:
    store = JobStore("n1")
    with pytest.raises(InvalidInputError, match="a chunk at offset 0 starts one"):
        store.psi("job-2")
    with pytest.raises(NotFoundError, match="no PSI answer"):
        store.points("job-2")


def test_an_opened_job_takes_no_more_chunks() -> None:
    store = JobStore("n1")
    store.start_psi("job-3", run())
    store.open("job-3", Job(None, [], None))
    with pytest.raises(InvalidInputError, match="aligned and open here already"):
        store.psi("job-3")


def test_runs_are_bounded_and_a_refused_first_chunk_frees_its_slot() -> None:
    store = JobStore("n1", most=2)
    runs = [run(), run()]
    store.start_psi("a", runs[0])
    store.start_psi("b", runs[1])
    with pytest.raises(CapacityError, match="at most 2"):
        store.start_psi("c", run())
    store.drop_psi("b", run())  # another run: not dropped
    assert store.psi("b") is runs[1]
    store.drop_psi("b", runs[1])
    store.start_psi("b", run())  # dropped before answering anything: may start again
    with pytest.raises(CapacityError, match="at most 2"):
        store.start_psi("c", run())


def test_idle_runs_expire_and_chunks_keep_them_alive() -> None:
    clock = Clock()
    store = JobStore("n1", clock=clock, idle_seconds=60)
    store.start_psi("kept", run())
    store.start_psi("idle", run())
    clock.now += 50
    store.psi("kept")
    clock.now += 20
    store.sweep()
    assert store.psi("kept")
    with pytest.raises(InvalidInputError, match="no PSI run"):
        store.psi("idle")


def test_a_first_chunk_takes_its_slot_before_the_run_is_built() -> None:
    """Reading a node's ids for a run takes seconds and memory: while one first chunk
    builds its run, the same job's first chunk again (replayed by the relay, or sent
    twice) is refused at once, and reservations count against the bound."""
    store = JobStore("n1", most=2)
    store.reserve_psi("a")
    with pytest.raises(ReceiptRefusedError, match="already aligned"):
        store.reserve_psi("a")
    with pytest.raises(ReceiptRefusedError, match="already aligned"):
        store.check_new("a")
    store.reserve_psi("b")
    with pytest.raises(CapacityError, match="at most 2"):
        store.reserve_psi("c")
    with pytest.raises(CapacityError, match="at most 2"):
        store.start_psi("c", run())  # unreserved: no slot either
    first = run()
    store.start_psi("a", first)  # fills its own slot
    assert store.psi("a") is first
    store.release_psi("b")  # its run could not be built: the slot is free again
    store.reserve_psi("c")
    with pytest.raises(ReceiptRefusedError, match="already aligned"):
        store.reserve_psi("a")


def test_calls_at_a_finished_run_do_not_keep_it_alive() -> None:
    """Once every point is paged only OpenJob is left: refused chunks or pages (all a
    finished run can take) must not hold its slot and memory past the idle limit."""
    clock = Clock()
    store = JobStore("n1", clock=clock, idle_seconds=60)
    finished = run()
    store.start_psi("finished", finished)
    finished.reblind(0, [], False)
    assert finished.page(0, 10)[1] and finished.done
    for _ in range(3):
        clock.now += 40
        with pytest.raises(InvalidInputError, match="paged out already"):
            store.psi("finished").page(2, 10)
    store.sweep()
    with pytest.raises(InvalidInputError, match="no PSI run"):
        store.psi("finished")
