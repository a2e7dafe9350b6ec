"""A credit bureau training a model across data nodes from its own process.

The bureau keeps its labels and its Paillier private key here; through the
coordinator it runs PSI with each node, tells the nodes the intersection, sends a
node whose features are WOE-binned the encrypted labels of the fit rows (it answers
masked level sums: ``federated._woe``), then drives vertical logistic regression
(``creditshare.federated``) with each node reached over HTTP. Progress and the
validation curve are reported to the job.
"""

from __future__ import annotations

import base64
import contextlib
import math
import secrets
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from creditshare.client._client import CreditShareClient
from creditshare.client._http import segment
from creditshare.client._psi import align_ids
from creditshare.client._signing import sign_job
from creditshare.crypto import Ciphertext, PooledEncryptor, PublicKey, SlotLayout
from creditshare.errors import ClientError, CreditShareError
from creditshare.federated import (
    MIN_BATCH_ROWS,
    BureauParty,
    EpochReport,
    TrainingConfig,
    auc,
    evaluation_scores,
    ks,
    share_level_sums,
    train,
)
from creditshare.trees import TreeConfig

if TYPE_CHECKING:
    from creditshare.trees import TreeModel, TreeReport

__all__ = ["RemoteHost", "TrainedModel", "train_model"]

#: Fewer aligned rows than this cannot give a meaningful model or evaluation.
MIN_ALIGNED_ROWS = 30
#: Rows per forward call: ~2.8 MB of ciphertext text at 2048 bits.
_CHUNK = 4096


def _b64(items: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(i).decode("ascii") for i in items]


def _unb64(items: Sequence[str]) -> list[bytes]:
    return [base64.b64decode(i.encode("ascii"), validate=True) for i in items]


class RemoteHost:
    """A data node in a training job, reached through the coordinator (HostEndpoint).

    Rows are named by their position in the aligned list, never by id: the
    coordinator in between must not learn which enterprises a bureau trains on.
    """

    def __init__(
        self,
        client: CreditShareClient,
        job_id: str,
        node: str,
        key: PublicKey,
        aligned: Sequence[str],
    ) -> None:
        self._client = client
        self._path = f"/v1/training-jobs/{segment(job_id)}"
        self.node = node
        self._key = key
        self._position = {identifier: k for k, identifier in enumerate(aligned)}

    def _rows(self, ids: Sequence[str]) -> list[int]:
        return [self._position[i] for i in ids]

    @property
    def name(self) -> str:
        return self.node

    def _ciphertexts(self, body: dict[str, Any]) -> list[Ciphertext]:
        return [Ciphertext.from_bytes(self._key, b) for b in _unb64(body["ciphertexts"])]

    def forward(self, ids: Sequence[str]) -> list[Ciphertext]:
        """In chunks, so evaluating a large split never makes one oversized message."""
        out: list[Ciphertext] = []
        rows = self._rows(ids)
        for start in range(0, len(rows), _CHUNK):
            body = self._client.post(
                f"{self._path}/forward", {"node": self.node, "rows": rows[start : start + _CHUNK]}
            )
            out.extend(self._ciphertexts(body))
        return out

    def forward_packed(
        self, ids: Sequence[str], slot_bits: int, additions: int
    ) -> list[Ciphertext]:
        """Packed evaluation scores; chunks are whole ciphertexts, so slots line up."""
        slots = SlotLayout.for_key(self._key, slot_bits, additions).slots
        chunk = slots * max(1, _CHUNK // slots)
        out: list[Ciphertext] = []
        rows = self._rows(ids)
        for start in range(0, len(rows), chunk):
            body = self._client.post(
                f"{self._path}/forward",
                {
                    "node": self.node,
                    "rows": rows[start : start + chunk],
                    "slot_bits": slot_bits,
                    "additions": additions,
                },
            )
            out.extend(self._ciphertexts(body))
        return out

    def masked_gradient(
        self, ids: Sequence[str], residuals: Sequence[Ciphertext]
    ) -> list[Ciphertext]:
        payload = {
            "node": self.node,
            "rows": self._rows(ids),
            "residuals": _b64([r.to_bytes() for r in residuals]),
        }
        return self._ciphertexts(self._client.post(f"{self._path}/gradient", payload))

    def level_sums(
        self, ids: Sequence[str], labels: Sequence[Ciphertext], total: int, final: bool
    ) -> list[Ciphertext]:
        """A chunk of the fit rows' Enc(y) out; after the final one, masked level sums
        back (WOE-binned features)."""
        payload = {
            "node": self.node,
            "rows": self._rows(ids),
            "labels": _b64([c.to_bytes() for c in labels]),
            "total": total,
            "final": final,
        }
        return self._ciphertexts(self._client.post(f"{self._path}/level-sums", payload))

    def apply_level_sums(self, masked_plain: Sequence[int], proofs: Sequence[int]) -> None:
        self._client.post(
            f"{self._path}/apply-level-sums",
            {
                "node": self.node,
                "values": [str(v) for v in masked_plain],
                "randomness": _b64(
                    [r.to_bytes((r.bit_length() + 7) // 8 or 1, "big") for r in proofs]
                ),
            },
        )

    def apply_gradient(
        self, masked_plain: Sequence[int], proofs: Sequence[int], batch_size: int, rate: float
    ) -> None:
        self._client.post(
            f"{self._path}/apply",
            {
                "node": self.node,
                "values": [str(v) for v in masked_plain],
                "randomness": _b64(
                    [r.to_bytes((r.bit_length() + 7) // 8 or 1, "big") for r in proofs]
                ),
                "batch_size": batch_size,
                "rate": rate,
            },
        )


@dataclass(frozen=True, slots=True)
class TrainedModel:
    job_id: str
    model_id: str
    aligned_rows: int
    test_auc: float
    test_ks: float
    epochs: list[EpochReport]
    intercept: float
    #: The held-out enterprises (aligned ids) the published metrics were computed on.
    test_ids: tuple[str, ...] = ()
    #: The published model's score of each of ``test_ids`` (same order), as a bank's
    #: query decrypts it (a logistic model's linear score, a tree model's margin):
    #: with the labels, the ROC and KS curves the published AUC and KS summarise.
    test_scores: tuple[float, ...] = ()
    #: A gbdt model: what it published (base score = ``intercept``) and one report per
    #: tree (``epochs`` is then empty).
    tree_model: TreeModel | None = None
    trees: tuple[TreeReport, ...] = ()


def _align(
    client: CreditShareClient, job_id: str, labels: Mapping[str, int], nodes: Sequence[str]
) -> tuple[list[str], dict[str, dict[str, bytes]]]:
    """ECDH-PSI with every node (``client._psi``, in bounded chunks): the ids all hold,
    and each node's blinded point per id.

    The node's own blinded points are how the bureau names the intersection to
    it, so ids never cross the coordinator in clear.
    """
    domain = f"creditshare/training/{job_id}/{secrets.token_hex(8)}"
    return align_ids(client, job_id, list(labels), nodes, domain)


def _stratified_split(
    ids: Sequence[str], labels: Mapping[str, int], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    held: list[str] = []
    kept: list[str] = []
    for cls in (0, 1):
        members = [i for i in ids if labels[i] == cls]
        order = rng.permutation(len(members))
        cut = round(len(members) * fraction)
        held += [members[k] for k in order[:cut]]
        kept += [members[k] for k in order[cut:]]
    return kept, held


def _test_split(
    aligned: Sequence[str],
    labels: Mapping[str, int],
    config: TrainingConfig | TreeConfig,
    test_ids: Collection[str] | None,
) -> tuple[list[str], list[str]]:
    """(fit and validation, test): the named test ids that aligned, or a stratified
    ``config.test_fraction`` drawn with ``config.seed``."""
    if test_ids is None:
        return _stratified_split(aligned, labels, config.test_fraction, config.seed)
    held = set(test_ids)
    test = [i for i in aligned if i in held]
    rest = [i for i in aligned if i not in held]
    if len({labels[i] for i in test}) < 2:
        raise ClientError(
            f"the held-out ids that align with every node ({len(test)}) hold fewer than two "
            "classes of label: no test AUC can be computed"
        )
    return rest, test


def train_model(
    client: CreditShareClient,
    labels: Mapping[str, int],
    nodes: Sequence[str],
    model_id: str,
    config: TrainingConfig | TreeConfig | None = None,
    description: str = "",
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    workers: int = 1,
    test_ids: Collection[str] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> TrainedModel:
    """PSI with every node, train, evaluate on a held-out split, publish ``model_id``.

    The test split is ``test_ids`` (those of them that align with every node; each
    must be among ``labels``), or a stratified ``config.test_fraction`` of the
    aligned ids drawn with ``config.seed``. The published ``test_auc``/``test_ks``
    are computed from the scores the published model gives those enterprises: the
    nodes' kept shards (preprocessing and weights) plus the intercept, as banks get
    them. ``on_start`` gets the job id as soon as the coordinator accepted the job.
    ``workers`` processes make encryption obfuscators ahead while this one decrypts.

    A ``TreeConfig`` trains gradient-boosted trees instead (``client._tree_training``):
    the same job, alignment, splits, progress, cancelling and publishing.
    """
    if isinstance(config, TreeConfig):
        from creditshare.client._tree_training import train_tree_model

        return train_tree_model(
            client,
            labels,
            nodes,
            model_id,
            config,
            description,
            on_progress,
            workers,
            test_ids,
            on_start,
        )
    config = config or TrainingConfig()
    check_labels(labels, test_ids)
    key = client.private_key
    job_id = start_job(client, model_id, description, nodes, config.to_document())
    if on_start:
        on_start(job_id)
    report = reporter(client, job_id, on_progress)
    pool: PooledEncryptor | None = None

    def close() -> None:
        if pool is not None:
            pool.close()

    with driving(client, job_id, close):
        aligned, opened = align_and_open(client, job_id, labels, nodes)
        woe_nodes = [node for node in nodes if opened[node].get("label_sums_needed")]
        fit, valid, test = splits(aligned, labels, config, test_ids)
        if len(fit) < MIN_BATCH_ROWS:
            raise ClientError(
                f"the fit split holds {len(fit)} rows ({len(aligned)} aligned, less "
                f"{len(test)} for the test and {len(valid)} for validation); nodes compute a "
                f"gradient over at least {MIN_BATCH_ROWS} rows: label more enterprises or "
                "lower --test-share / --validation-share"
            )
        hosts = [RemoteHost(client, job_id, node, key.public_key, aligned) for node in nodes]
        pool = PooledEncryptor(
            key.public_key, workers=workers, buffer=max(256, min(8192, 2 * len(aligned)))
        )
        for host in hosts:
            if host.node in woe_nodes:
                # WOE-binned features: the node sums labels of the fit rows only, masked.
                share_level_sums(host, fit, labels, key, pool)
        bureau = BureauParty(labels, key, config, encryptor=pool)
        batches = (len(fit) + config.batch_size - 1) // config.batch_size
        result = train(
            bureau,
            hosts,
            fit,
            valid,
            config,
            on_epoch=lambda e: report(
                {
                    "epoch": e.epoch,
                    "batch": e.batches,
                    "batches": e.batches,
                    "validation_loss": e.validation_loss,
                    "validation_auc": None if math.isnan(e.validation_auc) else e.validation_auc,
                    "seconds": e.seconds,
                }
            ),
            on_batch=lambda epoch, b: report({"epoch": epoch, "batch": b + 1, "batches": batches}),
        )
        scores = evaluation_scores(bureau, hosts, test, config)
        metrics = published_metrics(bureau.labels(test), scores, len(aligned))
        client.post(
            f"/v1/training-jobs/{segment(job_id)}/finish",
            {"intercept": bureau.intercept, "metrics": metrics},
        )
    return TrainedModel(
        job_id,
        model_id,
        len(aligned),
        metrics["test_auc"],
        metrics["test_ks"],
        result.epochs,
        bureau.intercept,
        tuple(test),
        tuple(float(s) for s in scores),
    )


# -- what both model types share (client._tree_training uses these too) ---------------


def check_labels(labels: Mapping[str, int], test_ids: Collection[str] | None) -> None:
    if not labels:
        raise ClientError("no labels to train on")
    if test_ids is not None:
        unknown = [i for i in test_ids if i not in labels]
        if unknown:
            raise ClientError(
                f"{len(unknown)} held-out id(s) have no label (e.g. {sorted(unknown)[0]}): "
                "test ids must be among the labelled ids"
            )


def start_job(
    client: CreditShareClient,
    model_id: str,
    description: str,
    nodes: Sequence[str],
    config: dict[str, Any],
) -> str:
    """Sign and create the job (its config document's digest is signed); its id."""
    body: dict[str, Any] = {
        "model_id": model_id,
        "description": description,
        "nodes": list(nodes),
        "key_fingerprint": client.ensure_paillier_key(),
        "config": config,
    }
    # The job id is chosen (and signed) here, before anything is sent: an interrupt at
    # any moment after this line can name the job it cancels.
    signed = sign_job(client.identity, body)
    job_id: str = signed["job_id"]
    client.signed_post("/v1/training-jobs", body, lambda _identity, _body: signed)
    return job_id


def reporter(
    client: CreditShareClient,
    job_id: str,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> Callable[[dict[str, Any]], None]:
    """Report progress (and a curve point) to the job, then to ``on_progress``."""

    def report(payload: dict[str, Any]) -> None:
        client.post(f"/v1/training-jobs/{segment(job_id)}/progress", payload)
        if on_progress:
            on_progress(payload)

    return report


@contextlib.contextmanager
def driving(client: CreditShareClient, job_id: str, close: Callable[[], None]) -> Iterator[None]:
    """Drive a job: Ctrl-C (or SIGTERM turned into one by the CLI) cancels it, a failure
    fails it with its reason; ``close`` stops the bureau's workers either way."""
    try:
        yield
    except KeyboardInterrupt as exc:
        # Stop the workers first (the coordinator call may take a moment), then cancel,
        # so the nodes drop the job and the model id is free again at once.
        close()
        try:
            client.post(
                f"/v1/training-jobs/{segment(job_id)}/cancel",
                {"reason": "the bureau was interrupted"},
            )
        except CreditShareError as problem:
            exc.add_note(f"training job {job_id} could not be cancelled: {problem}")
        else:
            exc.add_note(f"training job {job_id} cancelled")
        raise
    except (CreditShareError, ValueError) as exc:
        # The job may already be failed by the coordinator (a node went away).
        with contextlib.suppress(CreditShareError):
            client.post(f"/v1/training-jobs/{segment(job_id)}/fail", {"reason": str(exc)[:2000]})
        if isinstance(exc, ClientError):
            raise
        raise ClientError(f"training job {job_id} failed: {exc}") from exc
    finally:
        close()


def align_and_open(
    client: CreditShareClient, job_id: str, labels: Mapping[str, int], nodes: Sequence[str]
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """PSI with every node, then open the job on each: the aligned ids (row positions
    are indices into them) and each node's answer to open."""
    aligned, points = _align(client, job_id, labels, nodes)
    if len(aligned) < MIN_ALIGNED_ROWS:
        raise ClientError(
            f"only {len(aligned)} of {len(labels)} labelled ids are held by every node "
            f"({', '.join(nodes)}); at least {MIN_ALIGNED_ROWS} are needed"
        )
    if len({labels[i] for i in aligned}) < 2:
        raise ClientError("the aligned rows hold only one class of label")
    opened = {
        node: client.post(
            f"/v1/training-jobs/{segment(job_id)}/open",
            {"node": node, "points": _b64([points[node][i] for i in aligned])},
        )
        for node in nodes
    }
    return aligned, opened


def splits(
    aligned: Sequence[str],
    labels: Mapping[str, int],
    config: TrainingConfig | TreeConfig,
    test_ids: Collection[str] | None,
) -> tuple[list[str], list[str], list[str]]:
    """(fit, validation, test): the test split (see ``train_model``), then a stratified
    ``validation_fraction`` of the rest drawn with ``seed + 1``."""
    fit_and_valid, test = _test_split(aligned, labels, config, test_ids)
    fit, valid = _stratified_split(
        fit_and_valid, labels, config.validation_fraction, config.seed + 1
    )
    return fit, valid, test


def published_metrics(y: Any, scores: Any, aligned: int) -> dict[str, float]:
    """The published test metrics, from the scores the published model gives."""
    test = len(y)
    return {
        "test_auc": auc(y, scores),
        "test_ks": ks(y, scores),
        "aligned_rows": float(aligned),
        "test_rows": float(test),
        "test_share": test / aligned,
    }
