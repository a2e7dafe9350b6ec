"""Private tree scoring: the arithmetic of the chain over a model's owning nodes.

A bank's score from a tree model is Σ over trees of the weight of the one leaf every
owning node's splits agree on (plus the base score). The nodes are asked in a chain,
all ciphertexts under the BANK's key, so no node, nor the coordinator between them,
learns another node's decisions or the leaf reached:

* the first node encrypts, per leaf (``TreeModel.leaf_weights`` order), its own 0/1
  "consistent with my splits" (``first``): fresh encryptions;
* each middle node multiplies each indicator by its own bit (``refine``): a 1 keeps
  the ciphertext, a 0 takes one Enc(0) made for the call, and EVERY leaf's choice is
  then re-randomised. Every output is a fresh encryption of its plaintext, so the node
  that receives it next (or the coordinator) cannot link it to what came in, nor tell
  which bits were 0;
* the last node applies the leaf weights to the indicators consistent with its own
  splits and sums them (``weigh``): every leaf's base is raised to its (public)
  weight — its indicator where the bit is 1, one Enc(0) made for the call where it is
  0 — and the product re-randomised: one ciphertext.

Both do the same modular work whatever the bits: the same number of re-randomisations
(``refine``), and the same exponents over real ciphertexts (``weigh``: exponentiation
skips a zero exponent, and could shortcut a base of 1, so neither an exponent nor a
base ever depends on a bit). A time-measuring coordinator therefore learns nothing of
how many leaves a node's splits allow. Reusing one Enc(0) for every unselected leaf is
safe: it enters only products that are re-randomised before they leave the node.
* a model one node owns entirely needs no chain: that node encrypts the sum of its
  consistent leaves' weights once (``alone``).

Weights are fixed point at the query's scale and shifted per tree so that every one
is non-negative (``shifted_weights``): the last node's inner product then uses small
non-negative exponents (Pippenger-friendly, no inversion), and the coordinator adds
the public constant base − Σ shifts. The leaf weights are known to the coordinator
(which holds the model) and to the chain's last node (which receives them with each
query), the parties the shifts concern; ``/v1/models`` does not list them.

A node that holds no record of the enterprise uses each split's default direction
(``TreeShard.leaf_bits(None)``) and does exactly the same work.
"""

from __future__ import annotations

from collections.abc import Sequence

from creditshare.crypto import Ciphertext, Encryptor, FixedPointEncoding, dot
from creditshare.errors import EncodingOverflowError, InvalidInputError
from creditshare.trees._model import PublicTree, TreeModel

__all__ = [
    "MAX_LEAF_SPAN",
    "MAX_WEIGHT",
    "alone",
    "check_leaf_spans",
    "first",
    "max_shifted_weight",
    "refine",
    "shifted_weights",
    "weigh",
]

#: Largest shifted fixed-point leaf weight (the wire carries uint64).
MAX_WEIGHT = 2**64 - 1
#: Largest span (largest − smallest leaf weight) of one tree, in log-odds. Real leaf
#: weights are a few tenths; the bound caps what a relay can make the last node
#: multiply. The coordinator refuses a model over it (``/finish``, configured models),
#: the last node refuses weights over it (``max_shifted_weight``); and since
#: MAX_LEAF_SPAN·MAX_SCALE (10^15) is far below MAX_WEIGHT, a model within it always
#: fits the wire at every scale the coordinator may use.
MAX_LEAF_SPAN = 1000


def max_shifted_weight(scale: int) -> int:
    """The largest shifted weight a tree within ``MAX_LEAF_SPAN`` gives at ``scale``:
    the span at scale, plus slack for the two roundings (largest and smallest leaf)."""
    return MAX_LEAF_SPAN * scale + 2


def _span(tree: PublicTree) -> float:
    weights = [tree.weights[leaf] for leaf in tree.leaves]
    return max(weights) - min(weights)


def check_leaf_spans(model: TreeModel) -> None:
    """InvalidInputError naming the first tree whose leaf weights span more than
    ``MAX_LEAF_SPAN``: no node would score such a model."""
    for number, tree in enumerate(model.trees):
        span = _span(tree)
        if not span <= MAX_LEAF_SPAN:
            raise InvalidInputError(
                f"tree {number}: its leaf weights span {span:g} log-odds, more than the "
                f"{MAX_LEAF_SPAN} a node scores with"
            )


def shifted_weights(model: TreeModel, scale: int) -> tuple[list[int], int]:
    """Per leaf (indicator order), its weight at ``scale`` shifted to be non-negative
    (the tree's smallest leaf becomes 0); and the signed integer the coordinator adds:
    round(base_score·scale) − Σ shifts. Σ chosen weights + that integer is the margin
    at ``scale`` (each term rounded once, as ``FixedPointEncoding`` does)."""
    encoding = FixedPointEncoding(scale)
    weights: list[int] = []
    constant = encoding.to_integer(model.base_score)
    bound = min(max_shifted_weight(scale), MAX_WEIGHT)
    for number, tree in enumerate(model.trees):
        fixed = [encoding.to_integer(tree.weights[leaf]) for leaf in tree.leaves]
        shift = -min(fixed)
        shifted = [w + shift for w in fixed]
        if max(shifted) > bound:
            raise EncodingOverflowError(
                f"tree {number}: its leaf weights span more than {MAX_LEAF_SPAN} log-odds "
                f"({bound} at scale {scale}), more than a node scores with"
            )
        weights.extend(shifted)
        constant -= shift
    return weights, constant


def _bits(bits: Sequence[int], count: int, what: str) -> None:
    if len(bits) != count:
        raise InvalidInputError(f"{len(bits)} bits for {count} {what}")
    if any(b not in (0, 1) for b in bits):
        raise InvalidInputError("a leaf bit must be 0 or 1")


def _keyed(indicators: Sequence[Ciphertext], encryptor: Encryptor) -> None:
    if not indicators:
        raise InvalidInputError("no indicators: a chain's later node needs the earlier's")
    key = encryptor.public_key
    if any(c.public_key != key for c in indicators):
        raise InvalidInputError("an indicator was made under another key than the query's")


def first(bits: Sequence[int], encryptor: Encryptor) -> list[Ciphertext]:
    """The first node: a fresh Enc(bit) per leaf."""
    _bits(bits, len(bits), "leaves")
    if not bits:
        raise InvalidInputError("a tree model has at least one leaf")
    return [encryptor.encrypt_encoded(b) for b in bits]


def refine(
    indicators: Sequence[Ciphertext], bits: Sequence[int], encryptor: Encryptor
) -> list[Ciphertext]:
    """A middle node: Enc(indicator·bit) per leaf, every output a fresh encryption:
    the indicator (bit 1) or one Enc(0) (bit 0), re-randomised either way."""
    _keyed(indicators, encryptor)
    _bits(bits, len(indicators), "indicators")
    zero = encryptor.zero()
    return [encryptor.rerandomize(c if b else zero) for c, b in zip(indicators, bits, strict=True)]


def weigh(
    indicators: Sequence[Ciphertext],
    bits: Sequence[int],
    weights: Sequence[int],
    encryptor: Encryptor,
) -> Ciphertext:
    """The last node: Enc(Σ_{bit = 1} weight·indicator), re-randomised (``dot`` alone is
    a deterministic function of its inputs, which would let whoever sent them test a
    guess of the bits). Every weight is used as an exponent whatever the bits; a
    0 bit selects the base Enc(0) instead of the indicator (module docstring)."""
    _keyed(indicators, encryptor)
    _bits(bits, len(indicators), "indicators")
    _weights(weights, len(indicators))
    zero = encryptor.zero()
    bases = [c if b else zero for c, b in zip(indicators, bits, strict=True)]
    return encryptor.rerandomize(dot(bases, list(weights)))


def alone(bits: Sequence[int], weights: Sequence[int], encryptor: Encryptor) -> Ciphertext:
    """A model one node owns: Enc(Σ_{bit = 1} weight), one fresh encryption."""
    if not bits:
        raise InvalidInputError("a tree model has at least one leaf")
    _bits(bits, len(bits), "leaves")
    _weights(weights, len(bits))
    total = sum(w for w, b in zip(weights, bits, strict=True) if b)
    if total >= encryptor.public_key.max_plaintext:
        raise EncodingOverflowError("the weights' sum does not fit the key's plaintext")
    return encryptor.encrypt_encoded(total)


def _weights(weights: Sequence[int], count: int) -> None:
    if len(weights) != count:
        raise InvalidInputError(f"{len(weights)} weights for {count} leaves")
    if any(
        isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= MAX_WEIGHT for w in weights
    ):
        raise InvalidInputError(f"a leaf weight must be an integer within 0..{MAX_WEIGHT}")
