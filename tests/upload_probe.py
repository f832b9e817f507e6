"""Measure what importing each given zip costs, in a fresh process: `python tests/upload_probe.py ROOT ZIP...`.

For each zip (its bytes read first, as the Train page holds an upload), one JSON line: whether
`import_run` refused it and why, the peak resident memory above the level before the call (Linux
VmHWM, reset between zips through /proc/self/clear_refs), the peak of Python's own allocations
(tracemalloc), the bytes the process wrote (wchar in /proc/self/io), the seconds taken, and every path
left under ROOT. `--module NAME` imports `import_run` from another module (to measure an older copy).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _status_kb(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def _written() -> int:
    match = re.search(r"^wchar: (\d+)", Path("/proc/self/io").read_text(), re.M)
    return int(match.group(1)) if match else 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current resident size
        return True
    except OSError:
        return False


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("root", type=Path)
    p.add_argument("zips", nargs="+", type=Path)
    p.add_argument("--module", default="core.run_archive")
    args = p.parse_args()

    import importlib

    import torch

    torch.set_num_threads(1)
    archive = importlib.import_module(args.module)
    # What an import touches on its way, imported before measuring so that it is not counted.
    import core.config
    import core.datasets
    import core.families
    import core.losses
    import core.run_check

    config = core.config.make_config()
    with torch.device("meta"):
        core.families.family_of(config).build(config)
    for zip_path in args.zips:
        data = zip_path.read_bytes()
        reset = _reset_peak()
        rss_before, written_before = _status_kb("VmRSS"), _written()
        tracemalloc.start()
        started = time.perf_counter()
        try:
            archive.import_run(data, args.root)
            error = None
        except archive.ArchiveError as exc:
            error = f"ArchiveError: {exc}"
        except BaseException as exc:  # what escapes is the finding
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
        seconds = time.perf_counter() - started
        python_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        written = _written() - written_before
        peak = _status_kb("VmHWM")
        left = sorted(str(q.relative_to(args.root)) for q in args.root.rglob("*")) if args.root.exists() else []
        print(json.dumps({"zip": zip_path.name, "zip_bytes": len(data), "error": error, "peak_reset": reset,
                          "rss_peak_mb": max(0, peak - rss_before) / 1024, "python_peak_mb": python_peak / 2**20,
                          "written_mb": written / 2**20, "seconds": seconds, "left": left}), flush=True)
        del data
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
