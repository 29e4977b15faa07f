"""Cold start: a fresh interpreter importing ``function_app`` against one importing ``azure.functions``.

``azure.functions`` is the floor: the Functions host's Python worker needs it before it can index
any app. Runs are interleaved (floor, app, app + indexing, floor, ...) so drift in machine load hits
all three alike; one untimed run of each first warms the file cache. The app's own modules run without
bytecode caches, as on Flex Consumption: the package is mounted read-only and ``.funcignore`` leaves
``__pycache__`` out, so a new instance compiles them (installed packages come precompiled by pip). Then
one ``-X importtime`` run names what labguard's own import chain adds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.endpoint import REPO

FLOOR = "import azure.functions"
APP = "import function_app"
INDEXED = "from function_app import app; app.get_functions()"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABGUARD_", "PYTHON"))}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the app's modules compile on every start, as on a new instance
    return env


def drop_app_bytecode() -> None:
    """Remove bytecode caches of the app's own modules (what the deployed package never has)."""
    import shutil

    for root in (REPO, REPO / "handlers", REPO / "shared"):
        for cache in [root / "__pycache__"] if root == REPO else root.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)


def _timed(code: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=_env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def import_breakdown(top: int = 8) -> list[tuple[str, float, float]]:
    """Modules ``import function_app`` loads beyond ``import azure.functions``: (name, self ms, cumulative ms)."""

    def modules(code: str) -> dict[str, tuple[float, float]]:
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            cwd=REPO,
            env=_env(),
            check=True,
            capture_output=True,
            text=True,
        ).stderr
        result: dict[str, tuple[float, float]] = {}
        for line in out.splitlines():
            if not line.startswith("import time:"):
                continue
            self_us, cumulative_us, name = line[len("import time:") :].split("|")
            if self_us.strip().isdigit():
                result[name.strip()] = (int(self_us) / 1000, int(cumulative_us) / 1000)
        return result

    floor = modules(FLOOR)
    extra = [(name, own, cum) for name, (own, cum) in modules(APP).items() if name not in floor]
    return sorted(extra, key=lambda item: -item[2])[:top]


def measure(runs: int = 10) -> dict[str, Any]:
    drop_app_bytecode()
    for code in (FLOOR, APP, INDEXED):
        _timed(code)  # the file cache
    samples: dict[str, list[float]] = {"floor": [], "app": [], "indexed": []}
    for _ in range(runs):
        samples["floor"].append(_timed(FLOOR))
        samples["app"].append(_timed(APP))
        samples["indexed"].append(_timed(INDEXED))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "runs": runs,
        "samples": samples,
        "median_s": medians,
        "added_s": medians["app"] - medians["floor"],
        "added_indexed_s": medians["indexed"] - medians["floor"],
        "breakdown_ms": import_breakdown(),
    }
