"""Tried and passed counts of the issue-26 probe groups, taken from the reliability suite.

Every test in ``tests/reliability/`` that reproduces a failure of the adversarial probe carries
``@pytest.mark.probe("<group>")``; this runs them (with ``--slow``, the memory and disk-full
cases too) and prints one Markdown row per group: tests tried, passed, failed, skipped. A
parametrised test counts once per case. Exits 1 when any failed.

    python tools/probe_counts.py [--slow]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict

import pytest


class _Tally:
    def __init__(self) -> None:
        self.group: dict[str, str] = {}
        self.outcome: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            marker = item.get_closest_marker("probe")
            if marker is not None:
                self.group[item.nodeid] = marker.args[0]

    def pytest_runtest_logreport(self, report) -> None:
        if report.nodeid not in self.group:
            return
        if report.failed:
            self.outcome[report.nodeid] = "failed"
        elif report.skipped:
            self.outcome.setdefault(report.nodeid, "skipped")
        elif report.when == "call":
            self.outcome.setdefault(report.nodeid, "passed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slow", action="store_true", help="also the slow (memory, disk-full) cases")
    args = parser.parse_args(argv)
    tally = _Tally()
    code = pytest.main(["tests/reliability", "-q", "-p", "no:cacheprovider", "-m",
                        "probe" if args.slow else "probe and not slow"], plugins=[tally])
    counts: dict[str, Counter] = defaultdict(Counter)
    for nodeid, group in tally.group.items():
        if nodeid in tally.outcome:
            counts[group]["tried"] += 1
            counts[group][tally.outcome[nodeid]] += 1
    print("\n| probe group | tried | passed | failed | skipped |\n|---|---|---|---|---|")
    for group in sorted(counts):
        c = counts[group]
        print(f"| {group} | {c['tried']} | {c['passed']} | {c['failed']} | {c['skipped']} |")
    total = sum(counts.values(), Counter())
    print(f"| all | {total['tried']} | {total['passed']} | {total['failed']} | {total['skipped']} |")
    return 1 if total["failed"] or code not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
