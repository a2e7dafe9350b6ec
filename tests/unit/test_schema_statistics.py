"""``[statistics]`` in department schemas and the optional ``industry`` column: what a
regulator may group by and sum, and every way an entry is refused (file, entry and key
named, like every schema error)."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest

from creditshare.departments import (
    DEPARTMENTS,
    Record,
    SchemaError,
    get_department,
    parse_schema,
)
from creditshare.errors import ImportRejectedError
from creditshare.identity import Chain, make_uscc
from creditshare.node._importer import parse_file
from creditshare.statistics import Catalogue, CubeBuilder
from creditshare.synth import DEPARTMENTS as SYNTH_DEPARTMENTS
from creditshare.synth import SynthManifest, department_file

BASE = textwrap.dedent(
    """
    id = "probe"
    display_name = "Probe"

    [[columns]]
    name = "amount"
    type = "number"
    min = 0

    [[columns]]
    name = "grade"
    type = "category"
    levels = ["A", "B", "C"]

    [[columns]]
    name = "listed"
    type = "boolean"

    [[columns]]
    name = "since"
    type = "date"

    [[columns]]
    name = "sector"
    type = "category"
    levels = ["farm", "factory", "shop", "unknown"]
    missing = "default"
    default = "unknown"

    [[indicators]]
    name = "amount_band"
    column = "amount"
    bounds = [100, 1000]
    bands = ["small", "medium", "large"]
    """
)

USCC = make_uscc("9", "1", "310101", "MA1FL0QX").code

GOOD = textwrap.dedent(
    """
    [[statistics.dimensions]]
    name = "grade"
    column = "grade"

    [[statistics.dimensions]]
    name = "size"
    indicator = "amount_band"

    [[statistics.dimensions]]
    name = "listed"
    column = "listed"

    [[statistics.sums]]
    column = "amount"
    lower = 0
    upper = 5000
    unit = 10
    """
)


def test_a_statistics_section_becomes_the_catalogue() -> None:
    department = parse_schema(BASE + GOOD, "probe.toml")
    spec = department.statistics
    assert [(d.name, d.levels) for d in spec.dimensions] == [
        ("grade", ("A", "B", "C")),
        ("size", ("small", "medium", "large")),
        ("listed", ("no", "yes")),
    ]
    record: Record = {"amount": 500.0, "grade": "C", "listed": 1, "since": "2020-01-01"}
    assert [d.derive(record) for d in spec.dimensions] == [2, 1, 1]
    catalogue = Catalogue.of(department)
    assert [d.name for d in catalogue.dimensions] == ["chain", "region", "grade", "size", "listed"]
    assert catalogue.sum_column("amount").sensitivity == 500
    # A schema without the section: counts by chain and region only.
    bare = Catalogue.of(parse_schema(BASE, "bare.toml"))
    assert [d.name for d in bare.dimensions] == ["chain", "region"] and bare.sums == ()


@pytest.mark.parametrize(
    ("section", "where", "reason"),
    [
        (
            '[[statistics.dimensions]]\nname = "grade"\ncolum = "grade"\n',
            'statistics.dimensions[0] (name "grade").colum',
            "unknown key",
        ),
        (
            '[[statistics.dimensions]]\nname = "g"\ncolumn = "grade"\nindicator = "amount_band"\n',
            'statistics.dimensions[0] (name "g")',
            "either column (a category or boolean) or indicator",
        ),
        (
            '[[statistics.dimensions]]\nname = "amount"\ncolumn = "amount"\n',
            'statistics.dimensions[0] (name "amount").column',
            "'amount' is a number column: group by a category or boolean column",
        ),
        (
            '[[statistics.dimensions]]\nname = "g"\ncolumn = "colour"\n',
            'statistics.dimensions[0] (name "g").column',
            "no column 'colour'",
        ),
        (
            '[[statistics.dimensions]]\nname = "g"\nindicator = "grade_band"\n',
            'statistics.dimensions[0] (name "g").indicator',
            "no indicator 'grade_band' (indicators: amount_band)",
        ),
        (
            '[[statistics.dimensions]]\nname = "region"\ncolumn = "grade"\n',
            'statistics.dimensions[0] (name "region").name',
            "'region' is implicit in every catalogue",
        ),
        (
            '[[statistics.dimensions]]\nname = "level"\ncolumn = "grade"\n',
            'statistics.dimensions[0] (name "level").name',
            "'level' names a column of every result table",
        ),
        (
            '[[statistics.dimensions]]\nname = "g"\ncolumn = "grade"\n'
            '[[statistics.dimensions]]\nname = "g"\ncolumn = "listed"\n',
            'statistics.dimensions[1] (name "g").name',
            "declared twice (first at statistics.dimensions[0])",
        ),
        (
            '[[statistics.sums]]\ncolumn = "grade"\nlower = 0\nupper = 1\n',
            'statistics.sums[0] (column "grade").column',
            "only number, integer and boolean columns are summed",
        ),
        (
            '[[statistics.sums]]\ncolumn = "amount"\nlower = 0\nupper = 1005\nunit = 10\n',
            'statistics.sums[0] (column "amount").upper',
            "1005 is not a whole number of units (10)",
        ),
        (
            '[[statistics.sums]]\ncolumn = "amount"\nlower = 0\nupper = 10\nunit = 0\n',
            'statistics.sums[0] (column "amount").unit',
            "must be above 0",
        ),
        (
            '[[statistics.sums]]\ncolumn = "amount"\nlower = 10\nupper = 10\n',
            'statistics.sums[0] (column "amount")',
            "lower must be below upper",
        ),
        (
            '[[statistics.sums]]\ncolumn = "amount"\nlower = "0"\nupper = 10\n',
            'statistics.sums[0] (column "amount").lower',
            "must be a number, not the string '0'",
        ),
        (
            '[[statistics.sums]]\ncolumn = "amount"\nlower = 0\nupper = 1e15\n',
            'statistics.sums[0] (column "amount").upper',
            "use a larger unit",
        ),
        (
            '[[statistics.sums]]\ncolumn = "amount"\nupper = 10\n',
            "statistics.sums[0].lower",
            "this key is required",
        ),
    ],
)
def test_statistics_errors_name_the_entry_and_key(section: str, where: str, reason: str) -> None:
    with pytest.raises(SchemaError) as error:
        parse_schema(BASE + section, "probe.toml")
    message = str(error.value)
    assert message.startswith(f"probe.toml: {where}: "), message
    assert reason in message


def test_too_many_finest_cells_are_refused() -> None:
    levels = ", ".join(f'"l{i}"' for i in range(200))
    wide = BASE.replace('levels = ["A", "B", "C"]', f"levels = [{levels}]")
    section = "".join(
        f'[[statistics.dimensions]]\nname = "d{k}"\ncolumn = "grade"\n' for k in range(2)
    )
    with pytest.raises(SchemaError, match=r"statistics\.dimensions: 360000 finest cells"):
        parse_schema(wide + section, "probe.toml")


@pytest.mark.parametrize("department_id", list(DEPARTMENTS))
def test_every_builtin_department_has_a_catalogue(department_id: str) -> None:
    department = get_department(department_id)
    catalogue = Catalogue.of(department)
    assert catalogue.department == department_id
    assert len(catalogue.dimensions) > 2 and catalogue.sums


@pytest.mark.parametrize("department_id", ["tax", "market"])
def test_industry_is_optional_in_an_import_file(department_id: str, tmp_path: Path) -> None:
    department = get_department(department_id)
    industry = next(f for f in department.fields if f.name == "industry")
    assert industry.missing == "default" and industry.default == "unknown"
    columns = [c for c in department.columns if c != "industry"]
    samples = {
        "annual_tax_paid": "1000",
        "tax_credit_grade": "A",
        "months_in_arrears": "0",
        "registered_capital": "50000",
        "years_operating": "3.5",
        "administrative_penalties": "0",
        "abnormal_operations": "0",
    }
    path = tmp_path / "file.csv"
    path.write_text(
        ",".join(columns)
        + "\n"
        + ",".join(USCC if c == "uscc" else samples[c] for c in columns)
        + "\n",
        encoding="utf-8",
    )
    ((uscc, values, line),) = list(parse_file(path, department))
    assert "industry" not in values and line == 2
    builder = CubeBuilder(Catalogue.of(department), department)
    builder.add(uscc, values)  # reads as "unknown"
    cube = builder.finish()
    axis = [d.name for d in Catalogue.of(department).own_dimensions].index("industry")
    unknown = Catalogue.of(department).dimension("industry").levels.index("unknown")
    assert (
        cube.counts.sum(axis=tuple(i for i in range(cube.counts.ndim) if i != axis + 1))[unknown]
        == 1
    )
    # A required column is still required; the message says industry may be added.
    path.write_text(",".join(columns[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(ImportRejectedError) as error:
        list(parse_file(path, department))
    assert f"missing column(s) {columns[-1]}" in str(error.value)
    assert "optionally also industry" in str(error.value)


def test_synthetic_industry_is_consistent_and_gives_non_trivial_cells(
    synth_data: SynthManifest,
) -> None:
    seen: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for chain in Chain:
        for department in ("tax", "market"):
            assert department in SYNTH_DEPARTMENTS
            with (synth_data.out_dir / department_file(chain, department)).open(
                encoding="utf-8", newline=""
            ) as handle:
                for row in csv.DictReader(handle):
                    seen.setdefault(row["uscc"], set()).add(row["industry"])
                    if department == "market":
                        counts[row["industry"]] = counts.get(row["industry"], 0) + 1
    assert seen and all(len(values) == 1 for values in seen.values())
    levels = get_department("tax").statistics.dimensions[0].levels
    assert set(counts) - {""} <= set(levels)
    # Non-trivial: several industries, the largest under half of all enterprises.
    assert len(counts) >= 5 and max(counts.values()) < 0.5 * sum(counts.values())
