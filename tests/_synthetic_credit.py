"""A synthetic credit data set with categorical attributes, split across three departments.

Each department is defined only by a schema file written here (no code knows it):
``registry`` (industry and region categories, founding date, an abnormal-operations
flag), ``finance`` (revenue in CNY, debt ratio, late payments: a count whose empty
cells mean 0) and ``bureau`` (the bureau's own features: inquiries, a credit
grade mapped to a risk number, a prior-default flag). The label comes from a known
logistic model of those attributes, so a good federated model must find it.
Enterprises have valid USCCs; ``finance`` misses a few of them, so PSI has to align.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from creditshare.datasets import uscc_for

__all__ = ["DEPARTMENTS", "SCHEMAS", "SyntheticCredit", "generate"]

INDUSTRIES = ("manufacturing", "retail", "construction", "services", "agriculture")
REGIONS = ("east", "north", "south", "west")
GRADES = ("A", "B", "C", "D")

SCHEMAS: dict[str, str] = {
    "registry": """
id = "registry"
display_name = "Enterprise registry"
description = "Industry, region, founding date and abnormal-operations listing"

[[columns]]
name = "industry"
type = "category"
levels = ["manufacturing", "retail", "construction", "services", "agriculture"]
description = "main industry"

[[columns]]
name = "region"
type = "category"
levels = ["east", "north", "south", "west"]
description = "registered region"

[[columns]]
name = "founded"
type = "date"
min = 1980-01-01
max = 2025-12-31
description = "date of registration"

[[columns]]
name = "abnormal"
type = "boolean"
description = "listed for abnormal operations"

[[features]]
name = "industry"
column = "industry"
encoding = "one_hot"

[[features]]
name = "region"
column = "region"
encoding = "one_hot"

[[features]]
name = "founded_year"
column = "founded"
transform = "year"
description = "year of registration (decimal)"

[[features]]
name = "abnormal"
column = "abnormal"
encoding = "unclipped"

[[indicators]]
name = "industry"
column = "industry"

[[indicators]]
name = "abnormal"
column = "abnormal"
bands = ["not listed", "listed"]

[[indicators]]
name = "founded_band"
column = "founded"
bounds = [2000.0, 2015.0]
bands = ["before 2000", "2000-2014", "2015 or later"]
""",
    "finance": """
id = "finance"
display_name = "Finance records"
description = "Revenue, leverage and late payments"

[[columns]]
name = "revenue"
type = "number"
unit = "CNY"
min = 0
max = 1e12
description = "revenue in the last 12 months"

[[columns]]
name = "debt_ratio"
type = "number"
min = 0
max = 10
description = "liabilities over assets"

[[columns]]
name = "late_payments"
type = "integer"
min = 0
max = 1000
missing = "default"
default = 0
description = "late payments in the last 24 months (empty: none reported)"

[[features]]
name = "revenue_log10"
column = "revenue"
transform = "log10p1"
description = "log10(1 + revenue)"

[[features]]
name = "debt_ratio"
column = "debt_ratio"
cap = 3

[[features]]
name = "late_payments"
column = "late_payments"

[[indicators]]
name = "revenue_band"
column = "revenue"
bounds = [1e6, 1e7, 1e8]
bands = ["under 1M", "1M-10M", "10M-100M", "100M or more"]

[[indicators]]
name = "late_payment_band"
column = "late_payments"
bounds = [1, 3]
bands = ["none", "1-2", "3 or more"]
""",
    "bureau": """
id = "bureau"
display_name = "The bureau's own records"
description = "Credit inquiries, the bureau's grade and prior defaults"

[[columns]]
name = "inquiries"
type = "integer"
min = 0
max = 100
description = "credit inquiries in the last 6 months"

[[columns]]
name = "grade"
type = "category"
levels = ["A", "B", "C", "D"]
description = "the bureau's credit grade"

[[columns]]
name = "prior_default"
type = "boolean"
description = "defaulted before"

[[features]]
name = "inquiries"
column = "inquiries"

[[features]]
name = "grade_risk"
column = "grade"
encoding = "map"
values = { A = 0, B = 1, C = 2, D = 4 }

[[features]]
name = "prior_default"
column = "prior_default"
encoding = "unclipped"

[[indicators]]
name = "grade"
column = "grade"
""",
}

DEPARTMENTS = tuple(SCHEMAS)


@dataclass(frozen=True, slots=True)
class SyntheticCredit:
    """Raw CSV rows per department (cells as text, as a department exports them) and labels."""

    rows: dict[str, list[dict[str, str]]]
    labels: dict[str, int]

    def write(self, root: Path, chain: str = "yrd") -> dict[str, Path]:
        """``root/schemas/<id>.toml``, ``root/data/<chain>/<id>.csv``, ``root/labels.csv``;
        the schema paths by department id."""
        (root / "schemas").mkdir(parents=True, exist_ok=True)
        (root / "data" / chain).mkdir(parents=True, exist_ok=True)
        schemas = {}
        for department, rows in self.rows.items():
            schemas[department] = root / "schemas" / f"{department}.toml"
            schemas[department].write_text(SCHEMAS[department].lstrip(), encoding="utf-8")
            with (root / "data" / chain / f"{department}.csv").open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
        with (root / "labels.csv").open("w", newline="") as handle:
            labels = csv.writer(handle, lineterminator="\n")
            labels.writerow(("uscc", "default"))
            labels.writerows(sorted(self.labels.items()))
        return schemas


def _year(day: date) -> float:
    start = date(day.year, 1, 1)
    length = (date(day.year + 1, 1, 1) - start).days
    return day.year + (day - start).days / length


def generate(enterprises: int = 600, seed: int = 12) -> SyntheticCredit:
    """``enterprises`` enterprises; ``finance`` holds all but about 3 % of them."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict[str, str]]] = {d: [] for d in DEPARTMENTS}
    labels: dict[str, int] = {}
    industry_risk = dict(zip(INDUSTRIES, (-0.3, 0.2, 0.7, -0.1, 0.4), strict=True))
    region_risk = dict(zip(REGIONS, (-0.4, 0.0, 0.3, 0.2), strict=True))
    grade_risk = dict(zip(GRADES, (0.0, 1.0, 2.0, 4.0), strict=True))
    for k in range(enterprises):
        uscc = uscc_for(500_000 + k)
        industry = INDUSTRIES[rng.integers(len(INDUSTRIES))]
        region = REGIONS[rng.choice(len(REGIONS), p=[0.4, 0.25, 0.2, 0.15])]
        founded = date(1985, 1, 1) + timedelta(days=int(rng.integers(0, 14_600)))
        abnormal = int(rng.random() < 0.12)
        revenue = float(np.round(10 ** rng.normal(7.0, 1.0), 2))
        debt_ratio = float(np.round(rng.gamma(2.0, 0.3), 4))
        late = int(rng.poisson(1.2))
        inquiries = int(rng.poisson(3.0))
        grade = GRADES[rng.choice(len(GRADES), p=[0.35, 0.35, 0.2, 0.1])]
        prior = int(rng.random() < 0.15)
        z = (
            -1.4
            + industry_risk[industry]
            + region_risk[region]
            - 0.04 * (_year(founded) - 2005.0)
            + 0.9 * abnormal
            - 0.5 * (math.log10(1 + revenue) - 7.0)
            + 0.6 * (min(debt_ratio, 3.0) - 0.6)
            + 0.3 * (late - 1.2)
            + 0.12 * (inquiries - 3.0)
            + 0.35 * grade_risk[grade]
            + 0.8 * prior
        )
        labels[uscc] = int(rng.random() < 1.0 / (1.0 + math.exp(-z)))
        rows["registry"].append(
            {
                "uscc": uscc,
                # Categories as departments export them: case varies, the schema canonicalises.
                "industry": industry.upper() if k % 7 == 0 else industry,
                "region": region,
                "founded": founded.isoformat(),
                "abnormal": str(abnormal),
            }
        )
        if rng.random() >= 0.03:
            rows["finance"].append(
                {
                    "uscc": uscc,
                    "revenue": f"{revenue:.2f}",
                    "debt_ratio": f"{debt_ratio:.4f}",
                    # An empty cell means none reported (the schema's missing rule).
                    "late_payments": "" if late == 0 and k % 3 == 0 else str(late),
                }
            )
        rows["bureau"].append(
            {
                "uscc": uscc,
                "inquiries": str(inquiries),
                "grade": grade,
                "prior_default": str(prior),
            }
        )
    return SyntheticCredit(rows, labels)
