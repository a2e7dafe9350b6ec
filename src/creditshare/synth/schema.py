"""File layout and column names of the synthetic data set.

These are the contract between the generator and everything that imports its
output (node importers, demos, tests), so they live apart from the generator and
carry no logic: importing them must not pull in the sampling code.
"""

from __future__ import annotations

from creditshare.identity.chains import Chain

__all__ = [
    "DEPARTMENTS",
    "DEPARTMENT_COLUMNS",
    "ENTERPRISES_COLUMNS",
    "ENTERPRISES_FILE",
    "INDUSTRY_DEPARTMENTS",
    "LABELS_COLUMNS",
    "LABELS_FILE",
    "department_file",
]

DEPARTMENTS: tuple[str, ...] = ("tax", "market", "social", "court", "utility")

DEPARTMENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "tax": ("annual_tax_paid", "tax_credit_grade", "months_in_arrears", "industry"),
    "market": (
        "registered_capital",
        "years_operating",
        "administrative_penalties",
        "abnormal_operations",
        "industry",
    ),
    "social": ("insured_headcount", "months_in_arrears"),
    "court": ("judgments_as_defendant", "dishonest_debtor"),
    "utility": ("electricity_kwh_trend", "late_payments"),
}
"""Department id -> its columns, *excluding* the leading ``uscc`` column."""

#: Departments whose files carry the enterprise's ``industry`` (the same in every file).
INDUSTRY_DEPARTMENTS: tuple[str, ...] = ("tax", "market")

ENTERPRISES_FILE = "enterprises.csv"
ENTERPRISES_COLUMNS: tuple[str, ...] = ("uscc", "name", "division", "home_chain", "record_chains")

LABELS_FILE = "bureau/labels.csv"
LABELS_COLUMNS: tuple[str, ...] = ("uscc", "default")


def department_file(chain: Chain, department: str) -> str:
    """Relative POSIX path of one chain's department file, e.g. ``yrd/tax.csv``.

    A string rather than a ``Path`` because it is also the key in the manifest,
    which must read the same on every platform.
    """
    if department not in DEPARTMENT_COLUMNS:
        raise ValueError(f"unknown department {department!r}; expected one of {DEPARTMENTS}")
    return f"{chain.value}/{department}.csv"
