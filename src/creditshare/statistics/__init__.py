"""Regulator cohort statistics: counts, sums, means and distributions over a department's
enterprises, with differential privacy added on every node.

The room knows no HTTP, gRPC or SQL: the node builds ``Cube``s and calls ``release``,
the coordinator only adds ciphertexts laid out by ``Layout``, the regulator's client
calls ``decode``. A query (``CohortQuery``, signed as ``signed.SignedCohortQuery``) names
its department's ``Catalogue`` by digest, so every party computes the same layout.
"""

from creditshare.statistics._bounds import noise_bound, tail_bound
from creditshare.statistics._catalogue import (
    CHAIN_LEVELS,
    REGION_LEVELS,
    Catalogue,
    Dimension,
    SumColumn,
)
from creditshare.statistics._cube import Cube, CubeBuilder, region_of
from creditshare.statistics._decode import CohortCell, CohortResult, Figure, decode
from creditshare.statistics._layout import (
    LATEST,
    MAX_ADDITIONS,
    MAX_NODE_RECORDS,
    CellKey,
    Layout,
    cell_values,
    withheld_cell,
)
from creditshare.statistics._noise import noise_scales, release_epsilon, sensitivities
from creditshare.statistics._query import (
    EARLIEST_DATE,
    LATEST_DATE,
    MAX_DATES,
    MAX_EPSILON,
    MAX_GROUP_BY,
    MAX_MEASURES,
    MAX_MIN_CELL,
    PERIODS,
    CohortQuery,
    format_epsilon,
    period_of,
)
from creditshare.statistics._release import release

__all__ = [
    "CHAIN_LEVELS",
    "EARLIEST_DATE",
    "LATEST",
    "LATEST_DATE",
    "MAX_ADDITIONS",
    "MAX_DATES",
    "MAX_EPSILON",
    "MAX_GROUP_BY",
    "MAX_MEASURES",
    "MAX_MIN_CELL",
    "MAX_NODE_RECORDS",
    "PERIODS",
    "REGION_LEVELS",
    "Catalogue",
    "CellKey",
    "CohortCell",
    "CohortQuery",
    "CohortResult",
    "Cube",
    "CubeBuilder",
    "Dimension",
    "Figure",
    "Layout",
    "SumColumn",
    "cell_values",
    "decode",
    "format_epsilon",
    "noise_bound",
    "noise_scales",
    "period_of",
    "region_of",
    "release",
    "release_epsilon",
    "sensitivities",
    "tail_bound",
    "withheld_cell",
]
