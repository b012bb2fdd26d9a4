"""Callgrind profiles read by the benchmarks: the allocator's own instructions told apart."""

from __future__ import annotations

from pathlib import Path

from bench.harness import instructions
from bench.report import render as report
from bench.scenarios import flatness
from tests.bench.test_report import _results

# A profile as callgrind writes it: compressed names ("(2) name" once, then "(2)"), costs by
# line with relative positions, and each call followed by its inclusive cost line.
PROFILE = """\
version: 1
creator: callgrind-3.19.0
positions: line
events: Ir
summary: 1000

ob=(1) /usr/lib/x86_64-linux-gnu/libc.so.6
fl=(1) ./malloc/./malloc/malloc.c
fn=(1) _int_malloc
4091 100
+184 30

fn=(2) unlink_chunk.constprop.0
1500 7

fn=(3) malloc
3290 5
cfn=(1)
calls=1 4000
3300 130
+2 4

ob=(2) /usr/lib/libpython3.11.so.1.0
fl=(2) Modules/_sre/sre.c
fn=(4) sre_ucs1_match
10 500
cfn=(3)
calls=1 3290
12 139
* 20

fl=(3) Objects/obmalloc.c
fn=(5) _PyObject_Free
1900 11
"""


def test_allocator_instructions_are_the_allocator_functions_own(tmp_path: Path) -> None:
    """glibc's and pymalloc's functions count their own cost lines (any name suffix such as
    ``.constprop.0``); a call's inclusive cost and the callers' work are not theirs."""
    profile = tmp_path / "out.1.1"
    profile.write_text(PROFILE)
    # _int_malloc 100 + 30, unlink_chunk 7, malloc 5 + 4 (not the 130 of its call), _PyObject_Free 11
    assert instructions.allocator_instructions(str(profile)) == 157


def test_flatness_ratio_without_the_allocator() -> None:
    """The allocator's instructions come out of each side before the overhead is taken."""
    bare = {"10/last": (1_000.0, 100.0), "1000/last": (10_000.0, 1_000.0)}
    observed = {"10/last": (1_500.0, 150.0), "1000/last": (10_800.0, 1_250.0)}
    figures = flatness.ratios(bare, observed)
    assert figures["overhead"] == [500.0, 800.0]
    assert figures["ratio"] == 1.6
    assert figures["overhead_without_allocator"] == [450.0, 550.0]
    assert figures["ratio_without_allocator"] == 550.0 / 450.0


def test_route_table_shows_the_ratio_without_the_allocator_beside_the_counted_one() -> None:
    """A run that counted the allocator apart shows both ratios in the route table's instruction column."""
    results = _results(beacon_at_1000=260.0)  # overhead 200,000 at 10 routes, 260,000 at 1,000: 1.30x
    results["instructions"]["routes_allocator"] = {
        "fastapi/bare": {"10/last": 20_000.0, "1000/last": 1_000_000.0},
        # the same app's routing paid 60 more instructions per route in the observed process's heap
        "fastapi/beacon": {"10/last": 30_000.0, "1000/last": 1_070_000.0},
    }
    row = next(line for line in report.render(results).splitlines() if line.startswith("| beacon-otel under"))
    assert "| 1.30x (1.00x) |" in row
    plain = next(
        line for line in report.render(_results(260.0)).splitlines() if line.startswith("| beacon-otel under")
    )
    assert "| 1.30x |" in plain
