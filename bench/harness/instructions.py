"""Instructions counted by callgrind: figures that a loaded machine does not move.

Timings on a shared 2-core machine drift by 10% or more between rounds; the number of
instructions a request executes does not. The hardware counters are not available here
(``perf stat -e instructions`` reports "not supported" in this VM), so a child process runs
under ``valgrind --tool=callgrind`` with collection off, and turns it on only inside calls of
``operator.call``: a C function nothing else in these benchmarks calls, so the count is
exactly the work of ``operator.call(serve, n)`` on the calling thread (the delivery threads
and the exporters' threads are not counted: what is counted is what a request waits for).
``--dump-after`` writes one profile per call, so one child measures several cases in order.

Callgrind runs instrumented code about 50 times slower, and importing the frameworks and
OpenTelemetry under it costs minutes of CPU. So the child starts with instrumentation off
(``--instr-atstart=no``, a few times slower than native) and turns it on with callgrind's
client request ``CALLGRIND_START_INSTRUMENTATION`` once it is set up (``start()``, through a
ten-line C helper compiled on first use with the system's ``cc`` and valgrind's header). Counts
then use a few dozen requests per case, after a warm-up that fills every cache the code keeps.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import operator
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from bench.harness import child

MARKER = "_operator_call"
"""The C function of ``operator.call``: collection is on only inside it."""


_HELPER = """
#include <valgrind/callgrind.h>
void bench_start_instrumentation(void) { CALLGRIND_START_INSTRUMENTATION; }
"""


def available() -> bool:
    """True when valgrind, its callgrind header and a C compiler are installed (Debian packages)."""
    return (
        shutil.which("valgrind") is not None
        and shutil.which("cc") is not None
        and os.path.exists("/usr/include/valgrind/callgrind.h")
    )


@functools.cache
def _helper() -> ctypes.CDLL:
    directory = os.path.join(tempfile.gettempdir(), f"bench-callgrind-helper-{os.getuid()}")
    library = os.path.join(directory, "helper.so")
    if not os.path.exists(library):
        os.makedirs(directory, exist_ok=True)
        source = os.path.join(directory, f"helper-{os.getpid()}.c")
        with open(source, "w") as file:
            file.write(_HELPER)
        built = f"{library}.{os.getpid()}"
        subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", built, source], check=True)
        os.replace(built, library)  # atomic: parallel children never load half a file
    return ctypes.CDLL(library)


def start() -> None:
    """Turn callgrind's instrumentation on (set-up is done); a no-op when not under valgrind."""
    _helper().bench_start_instrumentation()


def measured(serve: Callable[[int], object], n: int) -> None:
    """Serve ``n`` requests inside the counted region; call once per case, in order."""
    operator.call(serve, n)


def run_module(
    module: str, args: list[str], env: Mapping[str, str] | None = None, timeout: float = 900
) -> tuple[list[int], Any]:
    """Run ``python -m module *args`` under callgrind; instructions per ``measured`` call, and its answer.

    The answer is the child's last stdout line as JSON, as for ``bench.harness.child.run_module``.
    """
    return _run(module, args, env, timeout, _dumped)


def run_module_split(
    module: str, args: list[str], env: Mapping[str, str] | None = None, timeout: float = 900
) -> tuple[list[tuple[int, int]], Any]:
    """As :func:`run_module`, each ``measured`` call's count as (all instructions, the allocator's own)."""
    return _run(module, args, env, timeout, _dumped_split)


def _run(
    module: str,
    args: list[str],
    env: Mapping[str, str] | None,
    timeout: float,
    read: Callable[[str], list[Any]],
) -> tuple[list[Any], Any]:
    directory = tempfile.mkdtemp(prefix="bench-callgrind-")
    try:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            f"--toggle-collect={MARKER}",
            f"--dump-after={MARKER}",
            f"--callgrind-out-file={directory}/out.%p",
            sys.executable,
            "-m",
            module,
            *args,
        ]
        out = subprocess.run(
            command,
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            timeout=timeout,
        ).stdout
        return read(directory), child.last_json_line(out)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _dumped(directory: str) -> list[int]:
    """The instruction total of each ``--dump-after`` profile, in the order they were written."""
    dumps = []
    for path in glob.glob(os.path.join(directory, "out.*.*")):
        number = int(path.rsplit(".", 1)[1])
        with open(path) as profile:
            for line in profile:
                if line.startswith("summary:"):
                    dumps.append((number, int(line.split()[1])))
                    break
    return [total for _, total in sorted(dumps)]


ALLOCATOR_FUNCTIONS = frozenset(
    {
        # glibc's malloc (malloc/malloc.c; arena.c's inlined parts carry the same names)
        "malloc", "free", "realloc", "calloc", "_int_malloc", "_int_free", "_int_realloc",
        "malloc_consolidate", "unlink_chunk", "sysmalloc", "tcache_get", "tcache_put",
        # CPython's pymalloc (Objects/obmalloc.c)
        "_PyObject_Malloc", "_PyObject_Calloc", "_PyObject_Realloc", "_PyObject_Free",
        "PyObject_Malloc", "PyObject_Calloc", "PyObject_Realloc", "PyObject_Free",
        "PyMem_Malloc", "PyMem_Calloc", "PyMem_Realloc", "PyMem_Free",
        "PyMem_RawMalloc", "PyMem_RawCalloc", "PyMem_RawRealloc", "PyMem_RawFree",
        "_PyMem_RawMalloc", "_PyMem_RawCalloc", "_PyMem_RawRealloc", "_PyMem_RawFree",
    }
)  # fmt: skip
"""Functions whose own instructions depend on the heap's history more than on the caller's work.

A block of more than 512 bytes comes from glibc, whose cost per call depends on the free chunks
it has to sort and search (one long-lived block allocated earlier moves it by 100 instructions
per call); pymalloc's depends on its pools' state. CPython's ``re`` allocates at least 1 KiB
from glibc on every ``match`` call, so an app's routing pays that on every route it tries.
"""


def allocator_instructions(path: str) -> int:
    """The allocator's own (exclusive) instructions in one callgrind profile, by function name."""
    names: dict[str, str] = {}
    current = ""
    total = 0
    after_call = False
    with open(path) as profile:
        for line in profile:
            if line.startswith("fn="):
                current = _function_name(line[3:].strip(), names)
            elif line.startswith("cfn="):
                _function_name(line[4:].strip(), names)  # defines a compressed name for later lines
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost: not this function's
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                elif current.split(".", 1)[0] in ALLOCATOR_FUNCTIONS:  # unlink_chunk.constprop.0
                    fields = line.split()
                    if len(fields) > 1:
                        total += int(fields[1])
    return total


def _function_name(spec: str, names: dict[str, str]) -> str:
    """``(7) name`` defines compressed name 7, ``(7)`` refers to it, ``name`` is uncompressed."""
    if spec.startswith("("):
        key, _, name = spec.partition(")")
        name = name.strip()
        if name:
            names[key] = name
        return names.get(key, "")
    return spec


def _dumped_split(directory: str) -> list[tuple[int, int]]:
    """Each ``--dump-after`` profile's (total, allocator) instructions, in the order they were written."""
    totals = _dumped(directory)
    paths = sorted(
        glob.glob(os.path.join(directory, "out.*.*")), key=lambda path: int(path.rsplit(".", 1)[1])
    )
    return [(total, allocator_instructions(path)) for total, path in zip(totals, paths, strict=True)]
