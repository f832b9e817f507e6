"""Server time of a Loss Explorer redraw after a slider move, against an empty page, in one process.

    .venv/bin/python benchmarks/app.py [--repeats 30]

Each redraw is one `AppTest.run()` of pages/loss_explorer.py after moving a widget: Streamlit reruns
the whole script on every move. Two clocks:
- script: the time Streamlit's script thread spends executing the script, i.e. the server's time for the
  redraw (read by wrapping the function Streamlit runs the script with; benchmark-only instrumentation),
  and cpu, the CPU time of that thread over the same span, which other work on a shared machine does
  not inflate;
- wall: the whole `AppTest.run()`, which adds the test harness (thread start, parsing every element).
The baseline is an empty page through the same harness and clocks, in the same process, so the ratio
says how much a redraw costs over a page that draws nothing. A breakdown times the page's two halves
outside Streamlit: the numbers (core.explorer over core.losses) and the plotly figures. A last row runs
the same α moves through app.py (menu, page config, sidebar footer) on the script clock, counting the
final execution of each run only: AppTest restarts Streamlit's legacy pages/ mode on every run, so each
run through app.py first executes the page bare and reruns (see pages/chrome.py), which a real server
does once per process at most.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import streamlit.runtime.scriptrunner.script_runner as script_runner  # noqa: E402
import torch  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

torch.set_num_threads(1)

# The script clocks: script_runner calls this name to execute the page's code on each rerun, in the
# script thread, so time.thread_time() there is the CPU time the redraw itself used.
SCRIPT_SECONDS: list[float] = []
SCRIPT_CPU_SECONDS: list[float] = []
_exec = script_runner.exec_func_with_error_handling


def _timed_exec(func, ctx):  # type: ignore[no-untyped-def]
    start, start_cpu = time.perf_counter(), time.thread_time()
    try:
        return _exec(func, ctx)
    finally:
        SCRIPT_SECONDS.append(time.perf_counter() - start)
        SCRIPT_CPU_SECONDS.append(time.thread_time() - start_cpu)


script_runner.exec_func_with_error_handling = _timed_exec

EXPLORER = "pages/loss_explorer.py"
TARGET_MS = 100.0


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in seconds)
    return {"median": statistics.median(ms), "p90": ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))], "min": ms[0]}


def _summary(name: str, seconds: list[float]) -> dict[str, float]:
    row = _stats(seconds)
    print(f"{name:<44} median {row['median']:7.1f} ms   p90 {row['p90']:7.1f} ms   min {row['min']:7.1f} ms")
    return row


def _timed_runs(
    name: str, at: AppTest, moves: list, repeats: int, wall_clock: bool = True
) -> dict[str, dict[str, float]]:
    """Run `repeats` moves; print and return the script (last execution of each run) and wall clocks."""
    wall, script, cpu = [], [], []
    for i in range(repeats):
        move = moves[i % len(moves)]
        SCRIPT_SECONDS.clear()
        SCRIPT_CPU_SECONDS.clear()
        start = time.perf_counter()
        move(at).run()
        wall.append(time.perf_counter() - start)
        script.append(SCRIPT_SECONDS[-1])
        cpu.append(SCRIPT_CPU_SECONDS[-1])
        if at.exception:
            raise RuntimeError(f"the page raised: {at.exception[0].message}")
    rows = {"script": _summary(f"{name}: script", script), "cpu": _summary(f"{name}: script cpu", cpu)}
    if wall_clock:
        rows["wall"] = _summary(f"{name}: wall", wall)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, torch {torch.__version__}, "
          f"1 thread; load average {os.getloadavg()[0]:.2f}")

    # Baseline: an empty page through the same harness (thread start, message queue, element tree).
    empty = AppTest.from_string("import streamlit as st\nst.empty()", default_timeout=60)
    empty.run()
    baseline = _timed_runs("baseline, empty page", empty, [lambda a: a], args.repeats)

    at = AppTest.from_file(str(REPO / EXPLORER), default_timeout=120)
    start = time.perf_counter()
    at.run()  # first view: imports, fits the demo data (cached afterwards)
    print(f"first view of the explorer (imports, fit): {time.perf_counter() - start:.2f} s")
    at.run()  # warm

    alpha = [lambda a, v=v: a.select_slider(key="explorer_alpha").set_value(v) for v in (1.1, 1.2, 0.0, -2.0)]
    inf = [lambda a, v=v: a.select_slider(key="explorer_alpha").set_value(v) for v in (float("inf"), float("-inf"))]
    scale = [lambda a, v=v: a.slider(key="explorer_scale").set_value(v) for v in (1.5, 0.5)]
    presets = [lambda a, v=v: a.pills(key="explorer_preset").set_value(v) for v in ("cauchy", "welsch", "l2")]
    rows = {
        "alpha": _timed_runs("α move (finite)", at, alpha, args.repeats),
        "inf": _timed_runs("α move to ±∞", at, inf, args.repeats),
        "scale": _timed_runs("c move", at, scale, args.repeats),
        "preset": _timed_runs("preset click", at, presets, args.repeats),
    }
    shell = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    shell.run()
    shell.switch_page(EXPLORER).run()
    rows["shell"] = _timed_runs("α move through app.py", shell, alpha, args.repeats, wall_clock=False)

    # Where the page's time goes, outside Streamlit.
    from core import explorer as ex
    from pages.chrome import fast_figure

    def numbers() -> None:
        ex.curve_table(1.1, 1.0, 6.0)
        ex.reference_tables(1.0, 6.0)
        ex.nll_curves(ex.TRADEOFF_ALPHAS, 1.0, 6.0)
        ex.tradeoff_costs(1.0)

    tables = [ex.curve_table(1.1, 1.0, 6.0), *ex.reference_tables(1.0, 6.0).values()]

    def figures() -> None:
        import plotly.io
        import plotly.tools

        for quantity in ("rho", "psi", "weight", "nll", "density", "nll", "nll"):
            data = [{"type": "scatter", "mode": "lines", "x": t.x, "y": getattr(t, quantity)} for t in tables]
            figure = fast_figure(data, {"height": 300})
            plotly.io.to_json(plotly.tools.return_figure_from_figure_or_data(figure, True), validate=False)

    for name, func in (("  the numbers (core.explorer)", numbers),
                       ("  7 six-trace figures built and serialised", figures)):
        func()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            func()
            times.append(time.perf_counter() - start)
        _summary(name, times)

    print()
    for clock in ("script", "cpu", "wall"):
        base = baseline[clock]["median"]
        keys = (("alpha", "α move"), ("inf", "α → ±∞"), ("scale", "c move"), ("preset", "preset"),
                ("shell", "α move, app.py"))
        for key, label in keys:
            if clock not in rows[key]:
                continue
            med = rows[key][clock]["median"]
            verdict = "under" if med < TARGET_MS else "OVER"
            print(f"{clock:<6} {label:<15} redraw median {med:6.1f} ms = {med / base:5.1f}× the empty page "
                  f"({base:.1f} ms); {verdict} the {TARGET_MS:.0f} ms goal")
    print(f"load average after the run: {os.getloadavg()[0]:.2f} (2 cores shared with other work)")


if __name__ == "__main__":
    main()
