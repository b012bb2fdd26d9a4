"""Is an observer's cost flat in the app's size? Both ways of counting it, bare and observed in one run.

``python -m bench.scenarios.flatness [FRAMEWORK] [VARIANT] [N]`` (defaults: fastapi, beacon, 20) counts the
last route of the 10- and 1,000-route apps as ``bench.scenarios.app_size count`` does, for the bare app and
for VARIANT side by side (same ``PYTHONHASHSEED``), and prints the overhead at each size and
its ratio twice: with every instruction, and without the allocator's own (``bench.harness.instructions.
ALLOCATOR_FUNCTIONS``).

Why both: the app's own routing tries each route's regex, and CPython's ``re`` takes at least
1 KiB from glibc's malloc on every match, whose cost per call depends on which free chunks the
heap holds. Two processes running the same routing with heaps shaped differently (another
import, a thread, one block kept alive) differ by up to about 100 instructions per route,
which at 1,000 routes is a fifth of an observer's whole overhead, in either direction. Without
the allocator, the ratio says whether the observer itself does work that grows with the app.
``make bench`` counts the route cells the same way (``routes_allocator`` in its results) and its
route tables show both ratios.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from bench.harness import instructions, services

CELLS = ("10/last", "1000/last")


def count(
    framework: str, variant: str, n: int, ingest: str, sink: str, hash_seed: str | None = "0"
) -> dict[str, tuple[float, float]]:
    """Per counted cell: (instructions, the allocator's own instructions) per request.

    ``hash_seed`` is the child's ``PYTHONHASHSEED`` (None: inherited), the same for every variant.
    """
    env = {**os.environ, "PYTHONHASHSEED": hash_seed} if hash_seed is not None else None
    dumps, answer = instructions.run_module_split(
        "bench.scenarios.app_size", ["count", framework, variant, ingest, sink, str(n)], env=env
    )
    return {
        cell: (total / n, allocator / n)
        for cell, (total, allocator) in zip(answer["cells"], dumps, strict=True)
    }


def ratios(
    bare: dict[str, tuple[float, float]], observed: dict[str, tuple[float, float]]
) -> dict[str, object]:
    """Overhead above bare at 10 and 1,000 routes and ratio: every instruction, then without the allocator."""
    every = [observed[cell][0] - bare[cell][0] for cell in CELLS]
    without = [(observed[cell][0] - observed[cell][1]) - (bare[cell][0] - bare[cell][1]) for cell in CELLS]
    return {
        "overhead": every,
        "ratio": every[1] / every[0],
        "overhead_without_allocator": without,
        "ratio_without_allocator": without[1] / without[0],
    }


def main(argv: list[str]) -> None:
    framework = argv[0] if argv else "fastapi"
    variant = argv[1] if len(argv) > 1 else "beacon"
    n = int(argv[2]) if len(argv) > 2 else 20
    with (
        services.running(services.dev_ingest(), services.sink()) as (ingest, sink),
        ThreadPoolExecutor(2) as pool,
    ):
        bare, observed = pool.map(
            lambda v: count(framework, v, n, ingest.base_url, sink.base_url), ["bare", variant]
        )
    print(json.dumps({"bare": bare, variant: observed, **ratios(bare, observed)}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
