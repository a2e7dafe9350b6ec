"""How each cost grows at provincial scale: nodes, PSI, ledger, fan-out.

    python bench/scale.py [--quick] [--json PATH] [--only nodes,psi,ledger,fanout]
                          [--work DIR]

Each section measures one growth law on real processes (coordinator under uvicorn,
nodes as gRPC servers, the bureau's and the bank's SDK) at a small and a large size
in the same run, and states its target as a ratio between the two (or as a limit,
for rates and memory):

* ``nodes``: query p50 of a tax node holding 5x10^6 enterprises against the demo's
  tax node (139 enterprises in one chain); the import's rows/s and its peak memory
  against a file a tenth the size (quick: 2x10^5 rows against 2x10^4);
* ``psi``: a bureau's 10^6 labelled ids against a node's 10^7, every party's peak
  memory and ids/s (quick: 10^4 against 10^5);
* ``ledger``: proof time (the worse of an entry's receipt and a consistency proof,
  p50 over HTTP) and the coordinator's resident memory at 10^7 entries against 10^3
  (quick: 10^5), and appends/s of two coordinator replicas on one PostgreSQL (that
  row needs ``CREDITSHARE_TEST_POSTGRES_URL`` or a run under ``scripts/postgres.sh
  run --``; without it the row is skipped with a note);
* ``fanout``: query p50 at 45 nodes (3 chains x 15 departments) against 9 (quick:
  15 against 9), and at 9 against 25 ms, with each process's CPU per query.

``--quick`` runs every section at CI-sized scales (a few minutes); each target it
could not measure at the full size carries a caveat. ``--json`` writes every row and
target. The run ends with the targets not met and exits 0 either way: it reports,
it does not gate.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from _scale_report import Section, cpu_count

SECTIONS = ("nodes", "psi", "ledger", "fanout")


def run_section(name: str, quick: bool, work: Path) -> Section:
    module = importlib.import_module(f"_scale_{name}")
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    section: Section = module.measure(quick=quick, work=folder)
    return section


def report(section: Section, seconds: float) -> None:
    print(f"\n== {section.name} ({seconds:.0f} s)")
    if section.rows:
        print(f"{'metric':44}{'size':>14}{'value':>14}  unit")
        for row in section.rows:
            print(f"{row.metric:44}{row.size:>14,}{row.value:>14,.2f}  {row.unit}")
    for target in section.targets:
        verdict = "met" if target.met else "NOT met"
        line = (
            f"target: {target.name}: {target.measured:,.2f} {target.unit} "
            f"(limit {target.comparison} {target.limit:,.2f}) {verdict}"
        )
        print(line + (f" [{target.caveat}]" if target.caveat else ""))
    for note in section.notes:
        print(f"note: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI-sized scales")
    parser.add_argument("--json", type=Path, help="write every row and target here")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
    )
    parser.add_argument(
        "--work", type=Path, help="where data files and databases go (default: a temp dir)"
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    print(
        f"creditshare scale bench ({'quick' if args.quick else 'full'}): "
        f"{cpu_count()} cores, {platform.python_version()}"
    )
    results: dict[str, object] = {"quick": args.quick, "cores": cpu_count(), "sections": {}}
    with tempfile.TemporaryDirectory(prefix="creditshare-scale-", dir=args.work) as tmp:
        for name in chosen:
            started = time.perf_counter()
            section = run_section(name, args.quick, Path(tmp))
            seconds = time.perf_counter() - started
            report(section, seconds)
            results["sections"][name] = {"seconds": seconds, **section.to_json()}  # type: ignore[index]
            if args.json:  # written after each section, so a long run keeps what it has
                args.json.write_text(json.dumps(results, indent=2))
    missed = [
        f"{name}: {t['name']}"
        for name, data in results["sections"].items()  # type: ignore[attr-defined]
        for t in data["targets"]
        if not t["met"]
    ]
    print("\nall targets met" if not missed else "\ntargets not met:\n  " + "\n  ".join(missed))
    sys.exit(0)


if __name__ == "__main__":
    main()
