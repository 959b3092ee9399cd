"""Output convention shared by the benchmark scripts: a table, and ``--json`` as the last line."""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser that already knows ``--json``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object last")
    return p


def stats_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """mean / p50 / p95 / max of durations given in seconds, in milliseconds."""
    a = np.asarray(samples_s, dtype=float) * 1e3
    if a.size == 0:
        return {"mean": float("nan"), "p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    return {
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }


def machine() -> dict[str, Any]:
    """What ran the benchmark (numbers mean little without it)."""
    import os

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table: floats with 3 significant decimals, everything else as str."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def emit_json(enabled: bool, payload: dict[str, Any]) -> None:
    """Print ``payload`` as the last stdout line when ``--json`` was given."""
    if enabled:
        print(json.dumps({"machine": machine(), **payload}, sort_keys=True))
