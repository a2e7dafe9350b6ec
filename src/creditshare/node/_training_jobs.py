"""The node's training-job store: PSI states, open jobs, capacity, expiry.

Job state lives in memory: a node that restarts mid-job answers NOT_FOUND for
that job and the bureau's job fails with that reason. A job (or PSI state)
nobody touches for ``idle_seconds`` is dropped by a background sweep (not only
when another job opens), stopping its worker processes: a bureau that was killed
cannot hold a node's job slots or cores. The training RPCs only validate, load
from here, and compute.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from creditshare.crypto import PooledEncryptor, PublicKey
from creditshare.errors import CapacityError, InvalidInputError, NotFoundError, OutOfOrderError
from creditshare.federated import HostParty, NodeRun, Preprocessing
from creditshare.node._receipts import ReceiptRefusedError
from creditshare.node._woe import WoePending
from creditshare.trees import TreeHost

__all__ = ["JOB_IDLE_SECONDS", "MAX_JOBS", "Job", "JobStore"]

log = logging.getLogger("creditshare.node")
MAX_JOBS = 8
#: A job (or PSI state) untouched this long is dropped, so abandoned jobs cannot
#: hold the node's job slots (the default of NodeSettings.training_job_idle_seconds).
JOB_IDLE_SECONDS = 3600.0


@dataclass(slots=True)
class Job:
    #: None until the job's WOE tables are set (``woe``): then ``set_woe`` builds it.
    host: HostParty | None
    ids: list[str]
    #: What the host's rows went through: kept with the shard at CloseJob.
    preprocessing: Preprocessing | None
    touched: float = 0.0
    #: Obfuscator workers (daemon processes: they also end with the node's process).
    encryptor: PooledEncryptor | None = None
    #: WOE-binned features waiting for their level sums.
    woe: WoePending | None = None
    #: A gradient-boosted-tree job's host (``node._tree_training``; ``host`` is None).
    tree: TreeHost | None = None
    #: The bureau's key (tree jobs: their gradients arrive as bytes under it).
    key: PublicKey | None = None

    def ready(self) -> HostParty:
        """The job's host, once it can compute (its WOE tables set, if it has any)."""
        if self.tree is not None:
            raise OutOfOrderError(
                "this job trains gradient-boosted trees: Forward, MaskedGradient, "
                "ApplyGradient and the level sums are for logistic jobs"
            )
        if self.host is None:
            raise OutOfOrderError(
                "this job's WOE tables are not set: LevelSums, then ApplyLevelSums, come "
                "before Forward, MaskedGradient, ApplyGradient or keeping the model"
            )
        return self.host

    def pending(self) -> WoePending:
        """The job's WOE round, while it is still to be done."""
        if self.tree is not None:
            self.ready()  # refused: a tree job has no level sums
        if self.woe is None:
            raise OutOfOrderError("this job has no WOE features: no level sums to send")
        if self.host is not None:
            raise OutOfOrderError("this job's WOE tables are set already (once per job)")
        return self.woe

    def trees(self) -> TreeHost:
        """A tree job's host; a logistic job refuses the tree RPCs."""
        if self.tree is None:
            raise OutOfOrderError(
                "this job trains a logistic model: TreeGradients, TreeHistograms and "
                "TreeSplit are for jobs opened with tree_settings"
            )
        return self.tree

    @property
    def feature_names(self) -> list[str]:
        if self.host is not None:
            return list(self.host.feature_names)
        return list(self.woe.names) if self.woe is not None else []

    def close(self) -> None:
        if self.encryptor is not None:
            self.encryptor.close()
        if self.tree is not None:
            self.tree.close()

    def rows(self, positions: Sequence[int]) -> list[str]:
        try:
            return [self.ids[p] for p in positions]
        except IndexError:
            raise InvalidInputError(f"row positions must be below {len(self.ids)}") from None


@dataclass(slots=True)
class _PsiState:
    touched: float
    run: NodeRun


class JobStore:
    """Thread-safe; closing a dropped job's workers always happens outside the lock
    (stopping worker processes takes seconds)."""

    def __init__(
        self,
        node_id: str,
        clock: Callable[[], float] = time.monotonic,
        idle_seconds: float = JOB_IDLE_SECONDS,
        most: int = MAX_JOBS,
    ) -> None:
        self._node_id = node_id
        self._clock = clock
        self._idle = idle_seconds
        self._most = most
        self._jobs: dict[str, Job] = {}
        #: Per job: its PSI run (chunks answered, points paged, then the index from the
        #: node's blinded points to its ids) and when it was last touched.
        self._psi: dict[str, _PsiState] = {}
        #: Jobs whose first chunk is building their run (``reserve_psi``).
        self._starting: set[str] = set()
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None

    # -- PSI -------------------------------------------------------------------------

    def check_new(self, job_id: str) -> None:
        """A job aligns once per node: its receipt cannot be replayed for a second PSI."""
        with self._lock:
            self._refuse_known(job_id)

    def reserve_psi(self, job_id: str) -> None:
        """Take the job's run slot before the node reads its ids for it (tens of seconds
        and hundreds of MB at 10^7 ids): a concurrent or replayed first chunk of the job
        is refused at once instead of building a second run, and a full node refuses
        before reading anything. ``start_psi`` fills the slot, ``release_psi`` frees it."""
        self._close(self._expire())
        with self._lock:
            self._refuse_known(job_id)
            full = len(self._psi) + len(self._starting) >= self._most
            if not full:
                self._starting.add(job_id)
        if full:
            raise CapacityError(f"this node aligns at most {self._most} jobs at once")

    def release_psi(self, job_id: str) -> None:
        """Free a slot ``reserve_psi`` took whose run could not be built."""
        with self._lock:
            self._starting.discard(job_id)

    def start_psi(self, job_id: str, run: NodeRun) -> None:
        """Keep a new PSI run (its first chunk came with the job's receipt) until the job
        is opened, in the slot ``reserve_psi`` took (or a free one); refused if the job
        aligned here before or the node is full."""
        self._close(self._expire())
        with self._lock:
            reserved = job_id in self._starting
            self._starting.discard(job_id)
            if job_id in self._psi or job_id in self._jobs:
                raise ReceiptRefusedError(f"job {job_id!r} was already aligned here")
            full = not reserved and len(self._psi) + len(self._starting) >= self._most
            if not full:
                self._psi[job_id] = _PsiState(self._clock(), run)
        self.start_sweeping()
        if full:
            raise CapacityError(f"this node aligns at most {self._most} jobs at once")

    def psi(self, job_id: str) -> NodeRun:
        """The job's PSI run (touched: a long run of chunks keeps it alive; a finished
        one is not, since nothing but OpenJob is left for it, and a refused chunk or page
        at it must not hold the node's slot and memory past the idle limit)."""
        with self._lock:
            state = self._psi.get(job_id)
            if state is not None and not state.run.done:
                state.touched = self._clock()
            opened = job_id in self._jobs
        if state is None:
            if opened:
                raise InvalidInputError(f"job {job_id!r} is aligned and open here already")
            # The caller's error (422), not a lost job: a run starts with its first
            # chunk (offset 0), and the bureau is told so; a node that restarted has
            # lost its runs, and says the same.
            raise InvalidInputError(
                f"no PSI run for job {job_id!r} on this node: a chunk at offset 0 starts one"
            )
        return state.run

    def drop_psi(self, job_id: str, run: NodeRun) -> None:
        """Forget a run whose first chunk was refused: it answered nothing, so the job
        may start it again."""
        with self._lock:
            state = self._psi.get(job_id)
            if state is not None and state.run is run:
                del self._psi[job_id]

    def _refuse_known(self, job_id: str) -> None:
        """Under the lock: refuse a job that has (or is starting) a run, or is open."""
        if job_id in self._psi or job_id in self._jobs or job_id in self._starting:
            raise ReceiptRefusedError(f"job {job_id!r} was already aligned here")

    def points(self, job_id: str) -> NodeRun:
        """The job's finished PSI run, to map the intersection's points to ids."""
        with self._lock:
            state = self._psi.get(job_id)
        if state is None:
            raise NotFoundError(f"no PSI answer for job {job_id!r} on this node")
        return state.run

    # -- jobs ------------------------------------------------------------------------

    def check_room(self, job_id: str) -> None:
        self._close(self._expire())
        with self._lock:
            room = self._has_room(job_id)
        if not room:
            raise CapacityError(f"this node runs at most {self._most} jobs at once")

    def open(self, job_id: str, job: Job) -> None:
        """Make ``job`` the open job ``job_id``: checked again under the lock, since a
        concurrent open may have taken the last slot, and a CloseJob (the job was
        cancelled) may have dropped its PSI state while this open computed: then the
        job must not come back. The caller closes ``job`` if this raises."""
        with self._lock:
            if job_id not in self._psi:
                raise NotFoundError(f"training job {job_id!r} was closed while it was opened")
            if not self._has_room(job_id):
                raise CapacityError(f"this node runs at most {self._most} jobs at once")
            previous = self._jobs.get(job_id)
            job.touched = self._clock()
            self._jobs[job_id] = job
            self._psi.pop(job_id, None)
        if previous is not None:
            previous.close()
        self.start_sweeping()

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.touched = self._clock()
        if job is None:
            raise NotFoundError(f"no open training job {job_id!r} on node {self._node_id}")
        return job

    def pop(self, job_id: str) -> Job | None:
        """Forget the job and its PSI state; the caller closes the job it gets."""
        with self._lock:
            self._psi.pop(job_id, None)
            return self._jobs.pop(job_id, None)

    # -- expiry ----------------------------------------------------------------------

    def sweep(self) -> int:
        """Drop every job and PSI state idle too long, stopping their workers; how many
        jobs were dropped."""
        expired = self._expire()
        self._close(expired)
        return len(expired)

    def start_sweeping(self) -> None:
        """Start the periodic expiry once there is something to expire (a daemon thread
        that ends with the node, or when this store is gone)."""
        with self._lock:
            if self._sweeper is not None:
                return
            me = weakref.ref(self)
            interval = max(0.2, min(60.0, self._idle / 4))
            self._sweeper = threading.Thread(
                target=_sweep, args=(me, interval), name="training-expiry", daemon=True
            )
            self._sweeper.start()

    def _expire(self) -> list[Job]:
        cutoff = self._clock() - self._idle
        with self._lock:
            expired = []
            for job_id in [j for j, job in self._jobs.items() if job.touched < cutoff]:
                expired.append(self._jobs.pop(job_id))
                log.info("training job %r expired after %.0f s idle", job_id, self._idle)
            for job_id in [j for j, state in self._psi.items() if state.touched < cutoff]:
                del self._psi[job_id]
        return expired

    @staticmethod
    def _close(jobs: list[Job]) -> None:
        for job in jobs:
            job.close()

    def _has_room(self, job_id: str) -> bool:
        """Whether ``job_id`` may be opened now; call with the lock held."""
        return len(self._jobs) < self._most or job_id in self._jobs


def _sweep(store: weakref.ref[JobStore], interval: float) -> None:
    """The expiry loop: runs while the store exists (a weak reference, so a stopped
    test server's store can still be collected)."""
    while True:
        time.sleep(interval)
        current = store()
        if current is None:
            return
        try:
            current.sweep()
        except Exception as exc:  # never let one failed close end the sweeping
            log.warning("training job expiry failed (%s); retrying", type(exc).__name__)
        del current
