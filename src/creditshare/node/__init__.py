"""The data node: keeps a department's records on site and answers only in ciphertext."""

from creditshare.node._importer import ImportSummary, check_files, import_files
from creditshare.node._records import SnapshotChanges
from creditshare.node._scoring import EncryptedShare, ScoreEngine
from creditshare.node._server import (
    SERVICE_NAME,
    access_log_entries,
    build_server,
    import_history,
    import_into_node,
    privacy_spend_entries,
    refusal_log_entries,
    serve,
)
from creditshare.node._settings import ModelShardSettings, NodeSettings
from creditshare.node._storage import RecordStore, make_engine, make_read_only_engine
from creditshare.node._witness import NodeWitness, generate_witness_key, load_witness_key

__all__ = [
    "SERVICE_NAME",
    "EncryptedShare",
    "ImportSummary",
    "ModelShardSettings",
    "NodeSettings",
    "NodeWitness",
    "RecordStore",
    "ScoreEngine",
    "SnapshotChanges",
    "access_log_entries",
    "build_server",
    "check_files",
    "generate_witness_key",
    "import_files",
    "import_history",
    "import_into_node",
    "load_witness_key",
    "make_engine",
    "make_read_only_engine",
    "privacy_spend_entries",
    "refusal_log_entries",
    "serve",
]
