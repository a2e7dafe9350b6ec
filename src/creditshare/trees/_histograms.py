"""Encrypted gradient histograms on a node: Enc(Σ v_r) per (feature, bin) over a row set.

A node holds, per job row, the bureau's ciphertext of the row's packed (g, h) (see
``GradientPacking``) and, per feature, the row's bin. The histogram of a tree node's rows
is, for every feature f and bin b, the product mod n² of the ciphertexts of the rows with
bin b in f: Enc(Σ v_r) by Paillier's additive homomorphism. Each product modulo the
4096-bit n² costs ~5 µs through gmpy2, and a direct histogram needs one per row and
feature (21,000 rows × 13 features ≈ 273,000), so that count is what this module cuts.

Tricks, why they hold, and what they save
-----------------------------------------
* Sorted runs. Rows are ordered by bin once per feature (numpy ``argsort``) and each
  bin's product is one tight loop over a contiguous run of Python references to mpz
  values: no per-row bucket lookups in Python.
* Largest-bin complement. Let T = Π_r c_r over all the rows asked (the product of every
  bin of any one feature). For a feature f whose largest bin b* holds L_f rows,
  Enc(bin b*) = T · (Π_{b ≠ b*} Enc(bin b))^(−1) mod n²: the inverse exists because every
  ciphertext is a unit mod n², and the product of the other bins times bin b* is T. The
  product over the other bins costs the rows outside b* plus one product per bin, and
  the inverse one ``gmpy2.invert`` (worth ~8 products); so the trick saves
  L_f − B_f − 8 products for f and is used exactly when that is positive. T itself costs
  nothing extra: the first feature (the one with the smallest largest bin) is built
  directly and T is the product of its bins. Quantile bins of a continuous feature are
  ~1/32 of the rows each, so it saves ~3 % there; credit data is full of dominant values
  (a repayment status of "paid duly" for half the rows, zero balances: quantile cuts
  cannot split a tie) where it saves most of that feature's pass.
* Feature pairs binned jointly. For two features i, j (B_i·B_j cells), one pass over
  the rows builds every cell product C[a, b] = Enc(Σ over rows with bins (a, b)); then
  Enc(bin a of i) = Π_b C[a, b] and Enc(bin b of j) = Π_a C[a, b], because every row lies
  in exactly one cell (the same regrouping of one product as above). Two features then
  cost one pass (rows products) plus the non-empty cells once per feature, instead of
  two passes: at 21,000 rows and ~30 bins each, ~22,500 products instead of 42,000. A
  pair is only considered when it has at most rows/2 cells, and pairs are matched
  greedily by the products they save (the complement applies to a pair's largest cell
  too). Small row sets (deep tree nodes) have too few rows per cell and stay single.
* Worker processes (``workers`` > 0): features are split into one share per worker plus
  one for the calling process, computed at the same time; each worker keeps its
  features' bin columns for the job and receives each tree's ciphertexts once (10 MiB
  for 21,000 rows), then only row lists. Workers exit when ``close`` asks or when the
  parent process disappears.

Measured (2048-bit key, CPU time of one process, best of 3, this 2-core machine while
other work ran on it; ``bench/crypto.py`` prints wall times): default_credit's 13 guest
features over 21,000 rows, cut into at most 32 bins (343 bins): 1.39 s built directly,
1.11 s with the complement, 0.68 s with the complement and pairs; 13 uniform 32-bin
features (416 bins): 1.40 s directly, 0.80 s with pairs. A worker on a free second core
roughly halves the wall time again (it does not reduce the CPU spent).

Empty bins are the trivial product 1 = Enc(0) with randomness 1: harmless because
``GradientPacking.compress`` packs and re-randomises every bin before anything leaves the
node.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

import gmpy2
import numpy as np
from numpy.typing import NDArray

from creditshare.crypto import PublicKey
from creditshare.errors import InvalidInputError

__all__ = ["HistogramBuilder"]

#: A modular inverse at 4096 bits costs about this many products (measured; rounded up).
_INVERSE_COST = 8


def _runs(
    nsq: Any, cells: NDArray[np.int64], count: int, values: list[Any], skip: int
) -> list[Any]:
    """Π of ``values`` per cell index (``count`` cells; an empty cell is 1), by sorted runs.

    Cell ``skip`` (≥ 0) is not computed: its entry is None, for the complement.
    """
    one = gmpy2.mpz(1)
    sizes = np.bincount(cells, minlength=count).tolist()
    ordered = np.argsort(cells, kind="stable").tolist()
    out: list[Any] = []
    position = 0
    for cell, run in enumerate(sizes):
        if run == 0:
            out.append(one)
            continue
        if cell == skip:
            out.append(None)
            position += run
            continue
        acc = values[ordered[position]]
        for i in ordered[position + 1 : position + run]:
            acc = acc * values[i] % nsq
        out.append(acc)
        position += run
    return out


def _product(nsq: Any, values: Sequence[Any]) -> Any:
    acc = gmpy2.mpz(1)
    for value in values:
        if value is not None and value != 1:
            acc = acc * value % nsq
    return acc


class _Unit:
    """One feature, or two features binned jointly (cell = b_i·B_j + b_j), with its cost."""

    __slots__ = ("cells", "complement", "count", "features", "largest", "nonempty")

    def __init__(self, features: tuple[int, ...], cells: NDArray[np.int64], count: int) -> None:
        self.features = features
        self.cells = cells
        self.count = count
        sizes = np.bincount(cells, minlength=count)
        self.largest = int(sizes.max()) if cells.size else 0
        self.nonempty = int(np.count_nonzero(sizes))
        # Rows the complement spares, less the products and the inverse it adds.
        self.complement = self.largest - self.nonempty - _INVERSE_COST

    def cost(self, rows: int, with_total: bool) -> int:
        """Products to build this unit's bins over ``rows`` rows."""
        marginals = self.nonempty * len(self.features) if len(self.features) > 1 else 0
        saved = max(0, self.complement) if with_total else 0
        return rows - saved + marginals


def _plan(columns: NDArray[np.uint16], counts: Sequence[int], pairs: bool) -> list[_Unit]:
    """Units covering every feature once: pairs where a joint pass saves products.

    Greedy matching on the saving of each pair over its two features alone; a pair needs
    at most rows/2 cells, else its marginals cost more than the pass they save.
    """
    rows, k = columns.shape
    singles = [_Unit((j,), columns[:, j].astype(np.int64), counts[j]) for j in range(k)]
    if not pairs or k < 2:
        return singles
    candidates: list[tuple[int, int, int, _Unit]] = []
    for i in range(k):
        for j in range(i + 1, k):
            cells = counts[i] * counts[j]
            if cells > rows // 2:
                continue
            joint = columns[:, i].astype(np.int64) * counts[j] + columns[:, j]
            unit = _Unit((i, j), joint, cells)
            saving = (
                singles[i].cost(rows, True) + singles[j].cost(rows, True) - unit.cost(rows, True)
            )
            if saving > 0:
                candidates.append((saving, i, j, unit))
    candidates.sort(key=lambda c: -c[0])
    used: set[int] = set()
    units: list[_Unit] = []
    for _, i, j, unit in candidates:
        if i not in used and j not in used:
            used.update((i, j))
            units.append(unit)
    units.extend(singles[j] for j in range(k) if j not in used)
    return units


def _feature_sums(
    nsq: Any,
    columns: NDArray[np.uint16],
    counts: Sequence[int],
    values: list[Any],
    pairs: bool = True,
    complement: bool = True,
) -> list[Any]:
    """Enc(Σ) per (feature, bin) for the rows whose bins are ``columns`` (rows × k) and
    whose ciphertexts are ``values`` (same order); features in order, bins in order."""
    if not values:
        return [gmpy2.mpz(1)] * sum(counts)
    units = _plan(columns, counts, pairs)
    # The unit that gains least from the complement is built directly; its cells give T.
    units.sort(key=lambda u: u.complement)
    total: Any = None
    bins: dict[int, list[Any]] = {}
    one = gmpy2.mpz(1)
    for unit in units:
        skip = -1
        if complement and total is not None and unit.complement > 0:
            skip = int(np.argmax(np.bincount(unit.cells, minlength=unit.count)))
        cells = _runs(nsq, unit.cells, unit.count, values, skip)
        if total is None:
            total = _product(nsq, cells)
        elif skip >= 0:
            cells[skip] = total * gmpy2.invert(_product(nsq, cells), nsq) % nsq
        if len(unit.features) == 1:
            bins[unit.features[0]] = cells
            continue
        i, j = unit.features
        first: list[Any] = [one] * counts[i]
        second: list[Any] = [one] * counts[j]
        for cell, value in enumerate(cells):
            if value == 1:
                continue  # an empty cell (or an exact Enc(0) with r = 1: a no-op either way)
            a, b = divmod(cell, counts[j])
            first[a] = value if first[a] is one else first[a] * value % nsq
            second[b] = value if second[b] is one else second[b] * value % nsq
        bins[i] = first
        bins[j] = second
    return [acc for j in range(len(counts)) for acc in bins[j]]


def _serve(
    nsq: int,
    columns: NDArray[np.uint16],
    counts: list[int],
    options: tuple[bool, bool],
    conn: Any,
    parent: int,
) -> None:
    """Worker loop: ("gradients", rows, values) | ("histogram", rows) | None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    modulus = gmpy2.mpz(nsq)
    gradients: list[Any] = [None] * columns.shape[0]
    while True:
        if os.getppid() != parent:
            os._exit(0)  # the node is gone: never hold a core for it
        try:
            if not conn.poll(0.2):
                continue
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        if message[0] == "gradients":
            gradients = [None] * columns.shape[0]
            for row, value in zip(message[1], message[2], strict=True):
                gradients[row] = gmpy2.mpz(value)
            continue
        rows = message[1]
        values = [gradients[r] for r in rows]
        sums = _feature_sums(modulus, columns[rows], counts, values, *options)
        try:
            conn.send([int(v) for v in sums])
        except (BrokenPipeError, OSError):
            return


class HistogramBuilder:
    """Encrypted histograms over one job's binned features (node side).

    ``bins`` is rows × features (row = position in the job's rows), ``bin_counts`` the
    bins of each feature (every value below its count). ``set_gradients`` takes a tree's
    ciphertexts (ints mod n²); ``histogram`` answers Enc(Σ) per (feature, bin) over a row
    subset, features in order, bins in order. ``close`` stops the workers. ``pairs`` and
    ``complement`` switch the tricks of the module docstring off (benchmarks, tests):
    the answers are the same residues mod n² either way.
    """

    def __init__(
        self,
        key: PublicKey,
        bins: NDArray[np.uint16],
        bin_counts: Sequence[int],
        workers: int = 0,
        *,
        pairs: bool = True,
        complement: bool = True,
    ) -> None:
        if not isinstance(key, PublicKey):
            raise InvalidInputError("HistogramBuilder needs a creditshare PublicKey")
        matrix = np.asarray(bins)
        if matrix.ndim != 2 or matrix.dtype != np.uint16:
            raise InvalidInputError(
                f"bins must be a rows × features uint16 matrix; got {matrix.dtype} "
                f"with shape {matrix.shape}"
            )
        counts = [int(c) for c in bin_counts]
        if len(counts) != matrix.shape[1]:
            raise InvalidInputError(
                f"{len(counts)} bin counts for {matrix.shape[1]} features: lengths must match"
            )
        for feature, count in enumerate(counts):
            if not 1 <= count <= 65536:
                raise InvalidInputError(f"feature {feature} has {count} bins: must be 1..65536")
            if matrix.shape[0] and int(matrix[:, feature].max()) >= count:
                raise InvalidInputError(
                    f"feature {feature} has a bin index {int(matrix[:, feature].max())} "
                    f"outside its {count} bins"
                )
        if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 64:
            raise InvalidInputError("workers must be an integer within 0..64")
        self._key = key
        self._nsq = gmpy2.mpz(key.n_squared)
        self._bins = np.ascontiguousarray(matrix)
        self._counts = counts
        self._options = (pairs, complement)
        self._gradients: list[Any] = [None] * matrix.shape[0]
        self._lock = threading.Lock()
        # Features split into contiguous shares: ours first, then one per worker.
        features = matrix.shape[1]
        shares = max(1, min(workers + 1, features))
        bounds = [round(features * k / shares) for k in range(shares + 1)]
        self._shares = [(bounds[k], bounds[k + 1]) for k in range(shares)]
        self._conns: list[Any] = []
        self._processes: list[Any] = []
        context = multiprocessing.get_context("spawn")
        for k, (start, stop) in enumerate(self._shares[1:], start=1):
            ours, theirs = context.Pipe(duplex=True)
            process = context.Process(
                target=_serve,
                args=(
                    key.n_squared,
                    np.ascontiguousarray(matrix[:, start:stop]),
                    counts[start:stop],
                    self._options,
                    theirs,
                    os.getpid(),
                ),
                daemon=True,
                name=f"creditshare-histograms-{k}",
            )
            process.start()
            theirs.close()
            self._conns.append(ours)
            self._processes.append(process)

    @property
    def rows(self) -> int:
        return int(self._bins.shape[0])

    @property
    def bin_counts(self) -> list[int]:
        return list(self._counts)

    @property
    def workers(self) -> int:
        """Worker processes still serving (a dead one's share is computed here)."""
        return sum(conn is not None for conn in self._conns)

    def set_gradients(self, positions: Sequence[int], ciphertexts: Sequence[int]) -> None:
        """One tree's ciphertexts, per job row position; replaces the previous tree's."""
        if len(positions) != len(ciphertexts):
            raise InvalidInputError(
                f"{len(positions)} positions but {len(ciphertexts)} ciphertexts: lengths must match"
            )
        rows = self._check_rows(positions, "positions")
        nsq = self._key.n_squared
        values: list[Any] = [None] * self.rows
        for index, (row, value) in enumerate(zip(rows, ciphertexts, strict=True)):
            if not 0 < value < nsq:
                raise InvalidInputError(
                    f"ciphertext {index} (row {row}) is out of range: expected 0 < c < n²"
                )
            values[row] = gmpy2.mpz(value)
        ints = [int(v) for v in ciphertexts]
        with self._lock:
            self._gradients = values
            for conn in self._conns:
                if conn is None:
                    continue
                try:
                    conn.send(("gradients", rows, ints))
                except (OSError, ValueError):
                    self._drop(conn)

    def histogram(self, rows: Sequence[int]) -> list[int]:
        """Enc(Σ) per (feature, bin) over ``rows`` (distinct positions with gradients)."""
        subset = self._check_rows(rows, "rows")
        with self._lock:
            gradients = self._gradients
            missing = [r for r in subset if gradients[r] is None]
            if missing:
                raise InvalidInputError(
                    f"row {missing[0]} has no gradient for this tree ({len(missing)} rows lack one)"
                )
            values = [gradients[r] for r in subset]
            index = np.asarray(subset, dtype=np.int64)
            pending: list[Any] = []
            for conn in list(self._conns):
                if conn is None:
                    pending.append(None)
                    continue
                try:
                    conn.send(("histogram", index))
                    pending.append(conn)
                except (OSError, ValueError):
                    self._drop(conn)
                    pending.append(None)
            out = self._sums_here(index, values, *self._shares[0])
            for conn, (start, stop) in zip(pending, self._shares[1:], strict=True):
                answer: list[int] | None = None
                if conn is not None:
                    try:
                        answer = conn.recv()
                    except (EOFError, OSError):
                        self._drop(conn)
                expected = sum(self._counts[start:stop])
                if answer is None or len(answer) != expected:
                    answer = self._sums_here(index, values, start, stop)
                out.extend(answer)
        return out

    def _sums_here(
        self, index: NDArray[np.int64], values: list[Any], start: int, stop: int
    ) -> list[int]:
        """Features ``start``..``stop`` summed in this process (share 0, or a share
        whose worker died or answered the wrong length)."""
        return [
            int(v)
            for v in _feature_sums(
                self._nsq,
                self._bins[index, start:stop],
                self._counts[start:stop],
                values,
                *self._options,
            )
        ]

    def _check_rows(self, rows: Sequence[int], what: str) -> list[int]:
        array = np.asarray(rows)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise InvalidInputError(f"{what} must be a list of row positions (integers)")
        if array.size:
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= self.rows:
                bad = low if low < 0 else high
                raise InvalidInputError(f"{what}: row {bad} is outside the job's {self.rows} rows")
            if np.unique(array).size != array.size:
                raise InvalidInputError(f"{what} repeat a row: each row may appear once")
        return [int(r) for r in array.tolist()]

    def _drop(self, conn: Any) -> None:
        """Forget a worker that died; its share is computed here from then on."""
        index = self._conns.index(conn)
        self._conns[index] = None
        process = self._processes[index]
        with contextlib.suppress(OSError):
            conn.close()
        if process.is_alive():
            process.terminate()

    def close(self) -> None:
        """Stop the workers (idempotent); histograms keep working in-process."""
        with self._lock:
            for conn in self._conns:
                if conn is not None:
                    with contextlib.suppress(OSError, ValueError):
                        conn.send(None)
            for conn, process in zip(self._conns, self._processes, strict=True):
                process.join(timeout=2.0)
                if process.is_alive():
                    process.terminate()
                    process.join(timeout=2.0)
                if conn is not None:
                    with contextlib.suppress(OSError):
                        conn.close()
            self._conns = [None] * len(self._conns)
