"""The verifiable query log: an RFC 6962 Merkle log with Ed25519-signed tree heads.

Every query the coordinator lets through is appended here first and travels
with its ``Receipt``; data nodes track the heads they have seen
(``TrustedHeadTracker``) and refuse one that forks; enterprises list their
entries and check each inclusion; operators audit the whole store
(``verify_log``). Storage is a Protocol with memory and SQL backends. What a
leaf holds is a ``QueryRecord`` (canonical JSON, ``parse_record``); the log
itself treats leaves as opaque bytes. Heads are also published as C2SP
checkpoints, with the cosignatures of the data nodes that accepted them
(``WitnessKey``, ``cosign``, ``verify_cosignature``, ``checkpoint_note``). The JSON
forms of entries and proofs served over HTTP (``entry_document``/``parse_entry``,
``proof_document``/``parse_proof``) live here too, so server and client agree on them.
"""

from creditshare.ledger._audit import LogReport, verify_log, verify_subject
from creditshare.ledger._checkpoint import (
    COSIGNATURE_TYPE,
    LOG_ORIGIN_PREFIX,
    Checkpoint,
    Cosignature,
    WitnessKey,
    checkpoint_body,
    checkpoint_note,
    cosign,
    cosignature_message,
    log_origin,
    parse_checkpoint,
    parse_checkpoint_body,
    verify_cosignature,
)
from creditshare.ledger._errors import EmptyLogError, StaleTreeHeadError
from creditshare.ledger._log import Ledger, Receipt
from creditshare.ledger._merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from creditshare.ledger._note import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    NoteSignature,
    SignedNote,
    note_key_id,
    parse_note,
)
from creditshare.ledger._records import (
    MAX_REASON,
    MAX_RECORD_BYTES,
    RECORD_KINDS,
    QueryRecord,
    parse_record,
)
from creditshare.ledger._sql import LedgerHeadRow, LedgerLeafRow, LedgerNodeRow, SqlLedgerStorage
from creditshare.ledger._storage import BuildBatch, LedgerStorage, MemoryLedgerStorage, StoredLeaf
from creditshare.ledger._tracker import TrustedHeadTracker
from creditshare.ledger._tree_head import SIGNATURE_SIZE, LogSigner, SignedTreeHead, key_id_for
from creditshare.ledger._wire import (
    MAX_PROOF_HASHES,
    entry_document,
    parse_entry,
    parse_proof,
    proof_document,
)

__all__ = [
    "COSIGNATURE_TYPE",
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LOG_ORIGIN_PREFIX",
    "MAX_NOTE_BYTES",
    "MAX_PROOF_HASHES",
    "MAX_REASON",
    "MAX_RECORD_BYTES",
    "MAX_SIGNATURES",
    "RECORD_KINDS",
    "SIGNATURE_SIZE",
    "BuildBatch",
    "Checkpoint",
    "Cosignature",
    "EmptyLogError",
    "Frontier",
    "Ledger",
    "LedgerHeadRow",
    "LedgerLeafRow",
    "LedgerNodeRow",
    "LedgerStorage",
    "LogReport",
    "LogSigner",
    "MemoryLedgerStorage",
    "NoteSignature",
    "QueryRecord",
    "Receipt",
    "SignedNote",
    "SignedTreeHead",
    "SqlLedgerStorage",
    "StaleTreeHeadError",
    "StoredLeaf",
    "TrustedHeadTracker",
    "WitnessKey",
    "checkpoint_body",
    "checkpoint_note",
    "consistency_proof",
    "cosign",
    "cosignature_message",
    "entry_document",
    "inclusion_proof",
    "key_id_for",
    "leaf_hash",
    "log_origin",
    "node_hash",
    "note_key_id",
    "parse_checkpoint",
    "parse_checkpoint_body",
    "parse_entry",
    "parse_note",
    "parse_proof",
    "parse_record",
    "proof_document",
    "root",
    "verify_consistency",
    "verify_cosignature",
    "verify_inclusion",
    "verify_log",
    "verify_subject",
]
