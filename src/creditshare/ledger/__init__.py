"""The verifiable query log: an RFC 6962 Merkle log with Ed25519-signed tree heads.

Every query the coordinator lets through is appended here first and travels
with its ``Receipt``; data nodes track the heads they have seen
(``TrustedHeadTracker``) and refuse one that forks; enterprises list their
entries and check each inclusion; operators audit the whole store
(``verify_log``). Storage is a Protocol with memory and SQL backends. What a
leaf holds is a ``QueryRecord`` (canonical JSON, ``parse_record``); the log
itself treats leaves as opaque bytes.
"""

from creditshare.ledger._audit import LogReport, verify_log, verify_subject
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
from creditshare.ledger._records import MAX_REASON, MAX_RECORD_BYTES, QueryRecord, parse_record
from creditshare.ledger._sql import LedgerHeadRow, LedgerLeafRow, SqlLedgerStorage
from creditshare.ledger._storage import BuildHead, LedgerStorage, MemoryLedgerStorage, StoredLeaf
from creditshare.ledger._tracker import TrustedHeadTracker
from creditshare.ledger._tree_head import SIGNATURE_SIZE, LogSigner, SignedTreeHead, key_id_for

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_REASON",
    "MAX_RECORD_BYTES",
    "SIGNATURE_SIZE",
    "BuildHead",
    "EmptyLogError",
    "Frontier",
    "Ledger",
    "LedgerHeadRow",
    "LedgerLeafRow",
    "LedgerStorage",
    "LogReport",
    "LogSigner",
    "MemoryLedgerStorage",
    "QueryRecord",
    "Receipt",
    "SignedTreeHead",
    "SqlLedgerStorage",
    "StaleTreeHeadError",
    "StoredLeaf",
    "TrustedHeadTracker",
    "consistency_proof",
    "inclusion_proof",
    "key_id_for",
    "leaf_hash",
    "node_hash",
    "parse_record",
    "root",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "verify_subject",
]
