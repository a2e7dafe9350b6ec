"""A regulator's cohort statistics on the coordinator: catalogue, query, budget.

A room of its own (REVIEW: the coordinator is one flat room near its module limit). The
coordinator here is a courier and an adder, never a reader: it checks the regulator's
signed ``CohortQuery`` against the catalogue the nodes publish, records it in the
ledger (kind ``statistics``) before any node is asked, hands the record's receipt to
every node of the department in the chains asked, checks each answer's shape (exactly
``Layout.ciphertexts`` valid ciphertexts under the regulator's key) and multiplies them
per index. It holds no private key, sees no figure, and what it receives depends on the
query and the catalogue alone, never on the data. The nodes add the noise, suppress
small cells and keep the privacy budget; a query every node refused for budget is a 403
after a ``refusal`` record. Modules:

- ``_bodies``: the HTTP request and response bodies;
- ``_catalogues``: the nodes' ``Catalogue`` answers, checked, cached, agreed per department;
- ``_fan_out``: the ``Cohort`` calls, each answer's checks, the sums;
- ``_service``: the POST path (validate, record, fan out, refuse) and the budget read;
- ``_routes``: HTTP (the app includes its router; not imported here).
"""

from creditshare.coordinator.statistics._catalogues import DepartmentCatalogue, StatisticsCatalogues
from creditshare.coordinator.statistics._fan_out import CohortOutcome, CohortResult, cohort_fan_out

__all__ = [
    "CohortOutcome",
    "CohortResult",
    "DepartmentCatalogue",
    "StatisticsCatalogues",
    "cohort_fan_out",
]
