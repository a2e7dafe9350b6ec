"""Federated gradient-boosted trees (SecureBoost-style) and private tree scoring.

The bureau holds labels and the Paillier key; nodes hold features, bin them, sum
encrypted gradients into histograms and keep their split thresholds; the coordinator
publishes a ``TreeModel`` that names no feature and no threshold. Transport-free, like
``creditshare.federated``: the same code runs in one process (tests, benchmarks) and
across the coordinator and data nodes.
"""

from creditshare.trees._binning import FeatureBins
from creditshare.trees._bitmap import pack_bits, unpack_bits
from creditshare.trees._bureau import CHUNK_ROWS, TreeHostEndpoint, train_trees
from creditshare.trees._config import MAX_DEPTH, MAX_TREES, MIN_CHILD_ROWS, TreeConfig
from creditshare.trees._driver import TreeReport, TreeTrainingResult
from creditshare.trees._host import TreeHost
from creditshare.trees._model import (
    PublicTree,
    SplitRule,
    TreeModel,
    TreeShard,
    check_shape,
    leaf_path,
    leaves_of,
)
from creditshare.trees._plain import PlainTreeHost, train_trees_plain
from creditshare.trees._private import (
    MAX_LEAF_SPAN,
    MAX_WEIGHT,
    alone,
    check_leaf_spans,
    first,
    max_shifted_weight,
    refine,
    shifted_weights,
    weigh,
)
from creditshare.trees._split import SplitCandidate, best_split, leaf_weight, rank_splits

__all__ = [
    "CHUNK_ROWS",
    "MAX_DEPTH",
    "MAX_LEAF_SPAN",
    "MAX_TREES",
    "MAX_WEIGHT",
    "MIN_CHILD_ROWS",
    "FeatureBins",
    "PlainTreeHost",
    "PublicTree",
    "SplitCandidate",
    "SplitRule",
    "TreeConfig",
    "TreeHost",
    "TreeHostEndpoint",
    "TreeModel",
    "TreeReport",
    "TreeShard",
    "TreeTrainingResult",
    "alone",
    "best_split",
    "check_leaf_spans",
    "check_shape",
    "first",
    "leaf_path",
    "leaf_weight",
    "leaves_of",
    "max_shifted_weight",
    "pack_bits",
    "rank_splits",
    "refine",
    "shifted_weights",
    "train_trees",
    "train_trees_plain",
    "unpack_bits",
    "weigh",
]
