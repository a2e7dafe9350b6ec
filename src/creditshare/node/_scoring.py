"""A node's encrypted share of a credit profile.

Everything returned is encrypted under the requester's key, and the node does
exactly the same work whether or not it holds a record (a record-less answer is
a set of fresh encryptions of zero), so neither the coordinator nor a timing
observer learns where an enterprise has records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from creditshare.crypto import Ciphertext, FixedPointEncoding, PackedEncoding, PublicKey, SlotLayout
from creditshare.departments import Department, IndicatorSpec
from creditshare.errors import InvalidInputError, NotFoundError, StaleShardError
from creditshare.federated import ModelShard
from creditshare.node._encryptors import EncryptorCache
from creditshare.node._storage import RecordStore, ShardStore
from creditshare.trees import TreeShard, alone, first, refine, weigh

__all__ = ["EncryptedShare", "ScoreEngine"]


@dataclass(frozen=True, slots=True)
class EncryptedShare:
    partial_score: Ciphertext
    presence: Ciphertext
    indicators: tuple[tuple[str, Ciphertext], ...]


_NO_SHARD = ModelShard({})
#: How long a tree-scoring step waits for the requester key's encryption table: its
#: hundreds of encryptions cost ~13x more in stock encryption than with the table,
#: whose build (~0.2 s) is worth waiting for unless it is stuck or failed (then: stock).
_TABLE_WAIT_SECONDS = 5.0


class ScoreEngine:
    def __init__(
        self,
        department: Department,
        store: RecordStore,
        models: Mapping[str, Mapping[str, float]],
        shards: ShardStore | None = None,
        encryptors: EncryptorCache | None = None,
    ) -> None:
        self._encryptors = encryptors or EncryptorCache(enabled=False)
        self._department = department
        self._store = store
        #: Configured models (node settings) weigh the raw features: identity preprocessing.
        self._configured = {model_id: ModelShard(dict(w)) for model_id, w in models.items()}
        self._shards = shards
        self._models = dict(self._configured)
        self._trees: dict[str, TreeShard] = {}
        #: Models whose stored shard this node cannot score with, and why (logged at load).
        self._refused: dict[str, str] = {}
        self.reload()

    def reload(self) -> None:
        """Pick up shards trained since start-up (configured ones take precedence).

        A stored shard the schema no longer derives the same way (or cannot read) is
        not scored with: its model's queries are refused (``_shard``)."""
        trained, refused = self._shards.usable(self._department) if self._shards else ({}, {})
        trees, trees_refused = (
            self._shards.usable_trees(self._department) if self._shards else ({}, {})
        )
        self._models = {**trained, **self._configured}
        self._trees = {m: t for m, t in trees.items() if m not in self._configured}
        refused = {**refused, **trees_refused}
        self._refused = {m: why for m, why in refused.items() if m not in self._configured}

    @property
    def model_ids(self) -> tuple[str, ...]:
        """Every model this node holds a shard of: linear ones, then tree ones."""
        return (*self._models, *self._trees)

    def model_features(self, model_id: str) -> tuple[str, ...]:
        """The features a model's shard uses here (a tree shard: those its rules split on)."""
        tree = self._trees.get(model_id)
        if tree is not None:
            return tree.features
        return tuple(self._models.get(model_id, _NO_SHARD).weights)

    def _shard(self, model_id: str) -> ModelShard:
        """This node's shard of the model; none (a zero share) if it was trained elsewhere.

        Every node in scope is asked, whatever the model, so that the coordinator does
        not learn where records are; a node outside a model's training adds nothing
        to the score but still answers its presence flag and indicators.

        A model whose stored shard was trained on a different schema is refused, not
        answered as if this node held no shard of it: that would change its scores.
        """
        refused = self._refused.get(model_id)
        if refused is not None:
            raise StaleShardError(refused)
        # A tree model has no linear share: its score comes from the TreeScore chain.
        return self._models.get(model_id, _NO_SHARD)

    def tree_shard(self, model_id: str, indicators: int, weights: int) -> TreeShard:
        """The model's tree shard here, for a step with these many indicators and weights
        (each none, or one per leaf); refused, unknown or mismatched: an error saying so."""
        refused = self._refused.get(model_id)
        if refused is not None:
            raise StaleShardError(refused)
        shard = self._trees.get(model_id)
        if shard is None:
            raise NotFoundError(f"this node holds no tree shard of model {model_id!r}")
        leaves = shard.leaf_count
        for what, given in (("indicators", indicators), ("weights", weights)):
            if given and given != leaves:
                raise InvalidInputError(
                    f"{given} {what} for model {model_id!r}, whose trees have {leaves} leaves"
                )
        return shard

    def tree_score(
        self,
        uscc: str,
        model_id: str,
        key: PublicKey,
        indicators: Sequence[Ciphertext],
        weights: Sequence[int],
    ) -> list[Ciphertext] | Ciphertext:
        """This node's step of the private tree-scoring chain (``trees._private``); blocking.

        The step follows from the request's shape: no indicators = the first node
        (with weights: the only one), indicators = a later node (with weights: the
        last). The leaf bits come from this node's record, or from each split's default
        direction when it holds none, and the work is the same either way.
        """
        shard = self.tree_shard(model_id, len(indicators), len(weights))
        record = self._store.get(uscc)
        values = None if record is None else self._department.feature_values(record)
        bits = shard.leaf_bits(values)
        encryptor = self._encryptors.get(key, wait=_TABLE_WAIT_SECONDS)
        if not indicators:
            if weights:
                return alone(bits, weights, encryptor)
            return first(bits, encryptor)
        if weights:
            return weigh(indicators, bits, weights, encryptor)
        return refine(indicators, bits, encryptor)

    def _plain(
        self, uscc: str, model_id: str, in_scope: Callable[[str], bool]
    ) -> tuple[float, float, dict[str, float], list[IndicatorSpec]]:
        """This node's share in plaintext; it never leaves this method unencrypted."""
        shard = self._shard(model_id)
        specs = [spec for spec in self._department.indicators if in_scope(spec.name)]
        record = self._store.get(uscc)
        if record is None:
            partial, presence = 0.0, 0.0
            indicator_values = {spec.name: 0.0 for spec in specs}
        else:
            # The shard's preprocessing, then its weights: what training evaluated.
            partial = shard.partial_score(self._department.feature_values(record))
            presence = 1.0
            indicator_values = {spec.name: float(spec.derive(record)) for spec in specs}
        return partial, presence, indicator_values, specs

    def score_packed(
        self,
        uscc: str,
        model_id: str,
        key: PublicKey,
        encoding: FixedPointEncoding,
        layout: SlotLayout,
        first_slot: int,
        in_scope: Callable[[str], bool] = lambda name: True,
    ) -> list[tuple[int, Ciphertext]]:
        """The share as packed ciphertexts: partial in slot 0, own slots from ``first_slot``.

        One encryption per ciphertext touched (at most two) instead of one per value.
        """
        partial, presence, indicator_values, specs = self._plain(uscc, model_id, in_scope)
        values = {0: partial, first_slot: presence}
        for k, spec in enumerate(specs, start=1):
            values[first_slot + k] = indicator_values[spec.name]
        per_index: dict[int, list[float]] = {}
        for slot, value in values.items():
            index, position = divmod(slot, layout.slots)
            vector = per_index.setdefault(index, [0.0] * layout.slots)
            vector[position] = value
        packed = PackedEncoding(layout, encoding)
        encryptor = self._encryptors.get(key)
        return [
            (index, encryptor.encrypt_encoded(packed.encode(vector, key)))
            for index, vector in sorted(per_index.items())
        ]

    def partial_score(
        self, uscc: str, model_id: str, key: PublicKey, encoding: FixedPointEncoding
    ) -> Ciphertext:
        """Only the encrypted partial score (monitoring's score_change): one encryption,
        of zero when no record is held, with the same work either way; blocking."""
        partial, _, _, _ = self._plain(uscc, model_id, lambda name: False)
        return self._encryptors.get(key).encrypt(partial, encoding)

    def score(
        self,
        uscc: str,
        model_id: str,
        key: PublicKey,
        encoding: FixedPointEncoding,
        offset: Ciphertext | None = None,
        in_scope: Callable[[str], bool] = lambda name: True,
    ) -> EncryptedShare:
        """Compute and encrypt; blocking (database + modular exponentiations).

        Indicators outside ``in_scope`` (the consent's scope) are never computed.
        """
        partial, presence, indicator_values, specs = self._plain(uscc, model_id, in_scope)
        encryptor = self._encryptors.get(key)
        encrypted_partial = encryptor.encrypt(partial, encoding)
        if offset is not None:
            encrypted_partial = encrypted_partial + offset
        return EncryptedShare(
            partial_score=encrypted_partial,
            presence=encryptor.encrypt(presence, encoding),
            indicators=tuple(
                (spec.name, encryptor.encrypt(indicator_values[spec.name], encoding))
                for spec in specs
            ),
        )
