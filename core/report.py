"""A study's report: study.json, results.csv, report.md and figures/, written from its runs.

    write_study(study, runs, folder, meta) -> study.json's content
    machine() -> where it ran (CPU, cores, torch and its threads, the GPU if any)
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

from core.runs import write_bytes_atomic, write_json_atomic

__all__ = ["machine", "write_figures", "write_study"]


def machine() -> dict:
    """Where the study ran: CPU model and cores, torch and its threads, the GPU if any."""
    import torch

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "python": platform.python_version(), "platform": platform.platform(),
            "host": platform.node(), "load_average": [round(v, 2) for v in os.getloadavg()]}


# ---------------------------------------------------------------------------------------------------
# Writing the study


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown_table(rows: list[dict]) -> str:
    head = ("| loss | latent | seed | MLP acc | MLP CE | linear acc | linear CE | k-NN acc (k) | k-NN CE | "
            "val recon | val KL | active units | train s |")
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for r in rows:
        mlp = f"{_fmt(r['mlp_acc'])} ± {_fmt(r['mlp_acc_std'])}" if r["mlp_acc"] is not None else "–"
        mlp_ce = f"{_fmt(r['mlp_ce'])} ± {_fmt(r['mlp_ce_std'])}" if r["mlp_ce"] is not None else "–"
        knn = f"{_fmt(r['knn_acc'])} ({r['knn_k']})" if r["knn_acc"] is not None else "–"
        lines.append(f"| {r['loss_label']} | {r['latent_dim']} | {r['seed']} | {mlp} | {mlp_ce} | "
                     f"{_fmt(r['linear_acc'])} | {_fmt(r['linear_ce'])} | {knn} | {_fmt(r['knn_ce'])} | "
                     f"{_fmt(r['val_recon'], 1)} | {_fmt(r['val_kl'], 1)} | {_fmt(r['active_units'])} | "
                     f"{_fmt(r['train_s'], 0)} |")
    return "\n".join(lines)


def write_figures(runs: list, rows: list[dict], folder: Path) -> list[tuple[str, str]]:
    """Write the study's figures into `folder`; returns (file name, caption) pairs."""
    from core import compare

    folder.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, str]] = []

    def put(name: str, data: str | bytes, caption: str) -> None:
        write_bytes_atomic(folder / name, data.encode("utf-8") if isinstance(data, str) else data)
        written.append((name, caption))

    dims = sorted({r["latent_dim"] for r in rows})
    for metric, name in (("mlp_acc", "accuracy.svg"), ("mlp_ce", "cross_entropy.svg")):
        bars = [b for b in compare.aggregate(rows, metric) if b["latent_dim"] == dims[-1]] if dims else []
        if bars:
            title, _ = compare.METRICS[metric]
            svg = compare.bar_chart_svg([b["loss_label"] for b in bars], [b["mean"] for b in bars],
                                        [b["error"] for b in bars], [compare.loss_colour(b["loss"]) for b in bars],
                                        title=f"{title}, latent {dims[-1]}", ylabel=title.split(" (")[0],
                                        ymax=1.0 if metric.endswith("acc") else None)
            put(name, svg, f"{title} by loss (latent {dims[-1]}); error bars: {bars[0]['error_over']}")
    if len(dims) > 1:
        svg = compare.line_chart_svg(compare.sweep(rows, "mlp_acc"), title="MLP probe accuracy against latent size",
                                     xlabel="latent size", ylabel="accuracy")
        put("sweep.svg", svg, "MLP probe accuracy against latent size, per loss")
    finished = [r for r in runs if r.status().get("state") == "finished" and r.has_embeddings]
    shown = [r for r in finished if r.config["latent_dim"] == dims[-1]] if dims else []
    if shown:
        objectives = compare.load_objectives(shown)
        rec = compare.reconstructions(shown, n=10, objectives=objectives)
        if rec["runs"]:
            grid = [("original", rec["originals"])] + [(r["loss_label"], r["images"]) for r in rec["runs"]]
            put("reconstructions.png", compare.image_grid_png(grid),
                "the same validation images (one per class) and their reconstructions decoder(μ) under each loss")
        samples = compare.prior_samples(shown, n=10, objectives=objectives)
        if samples:
            put("samples.png", compare.image_grid_png([(s["loss_label"], s["images"]) for s in samples]),
                "decoder(z) for the same z ~ N(0, I) under each loss")
        for run in shown:
            maps = compare.adaptive_maps(run, objectives.get(run.path))
            if maps is None:
                continue
            lo, hi = maps["alpha_bounds"]
            panels = [(f"learned alpha (bounds {lo:g} to {hi:g})", maps["alpha"].mean(axis=0), *maps["alpha_range"]),
                      ("learned scale c", maps["scale"].mean(axis=0), *maps["scale_range"])]
            put("adaptive.png", compare.heatmap_png(panels),
                f"the adaptive loss's learned α (mean {maps['alpha_mean']:.3f}) and c (mean {maps['scale_mean']:.4f}) "
                f"per pixel")
            break
    return written


def write_study(study: str, runs: list, folder: Path, meta: dict, *, figures: bool = True) -> dict:
    """Write study.json, results.csv, figures/ and report.md for `runs` into `folder`."""
    from core import compare

    folder.mkdir(parents=True, exist_ok=True)
    rows = compare.results_table(runs)
    write_bytes_atomic(folder / "results.csv", compare.table_csv(rows).encode("utf-8"))
    written = write_figures(runs, rows, folder / "figures") if figures else []
    train_s = sum(r["train_s"] or 0.0 for r in rows)
    probe_s = sum(r["probe_s"] or 0.0 for r in rows)
    # Earlier invocations (a study continued after an interruption, or re-reported) keep their times.
    previous = []
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads((folder / "study.json").read_text(encoding="utf-8")).get("invocations", [])
    invocations = [*previous, {k: meta.get(k) for k in ("started", "finished", "wall_seconds", "trained_now",
                                                          "skipped", "command")}]
    summary = {"format": "robust-loss-lab/study", "version": 1, "study": study, **meta, "invocations": invocations,
               "runs": [r["run_id"] for r in rows], "training_seconds": round(train_s, 1),
               "probe_seconds": round(probe_s, 1), "figures": [name for name, _ in written]}
    write_json_atomic(folder / "study.json", summary)

    m = meta.get("machine", {})
    where = f"{m.get('cpu')} ({m.get('cores')} cores, torch {m.get('torch')}, {m.get('torch_threads')} threads"
    where += f"; load average {m['load_average'][0]} when written)" if m.get("load_average") else ")"
    if m.get("gpu"):
        where += f", GPU {m['gpu']}"
    settings = meta.get("settings", {})
    probe = meta.get("probe_settings", {})
    lines = [
        f"# Study `{study}`",
        "",
        f"Command: `{meta.get('command', '')}`",
        "",
        f"VAEs trained on **{settings.get('dataset')}** with each reconstruction loss (+ β·KL, β = "
        f"{settings.get('beta') or 1}), latent size(s) {', '.join(map(str, settings.get('latent_dims', [])))}, "
        f"{settings.get('epochs')} epochs on {settings.get('limit_train') or 'all'} training images, seed(s) "
        f"{', '.join(map(str, settings.get('seeds', [])))}; general loss at α = {settings.get('loss_alpha')}.",
        "",
        f"Probes (core.probes) are fitted on the latents of the first {probe.get('probe_train') or 'all'} images of "
        f"the **train** split and scored on {probe.get('probe_test') or 'all'} images of the **test** split (never "
        f"the same images). MLP: one hidden layer of {', '.join(map(str, probe.get('hidden', [])))} on "
        f"z = μ + σ·ε, mean ± std over {len(probe.get('seeds', []))} probe seeds; linear: logistic regression on "
        f"μ; k-NN: cosine on μ, best of k ∈ {{{', '.join(map(str, probe.get('ks', [])))}}}. Cross-entropy in nats.",
        "",
        _markdown_table(rows),
        "",
    ]
    for name, caption in written:
        lines += [f"![{caption}](figures/{name})", "", f"*{caption}*", ""]
    lines += [
        "## Machine and time",
        "",
        f"- Machine: {where}.",
        f"- Training: {train_s:.0f} s summed over the runs (their own epoch clocks); probing: {probe_s:.0f} s "
        f"(encoding the splits and fitting the three probes).",
        f"- This invocation: {meta.get('wall_seconds', 0):.0f} s wall clock, started {meta.get('started')}; "
        f"runs trained now: {meta.get('trained_now', 0)}, skipped as finished: {meta.get('skipped', 0)}.",
        *[f"- Earlier invocation: {inv.get('wall_seconds') or 0:.0f} s wall clock, started {inv.get('started')}; "
          f"runs trained: {inv.get('trained_now')}." for inv in invocations[:-1] if inv.get("trained_now")],
        "",
    ]
    failed = [r for r in rows if r["state"] != "finished"]
    if failed:
        lines += ["Not finished: " + ", ".join(f"{r['run_id']} ({r['state']})" for r in failed), ""]
    write_bytes_atomic(folder / "report.md", "\n".join(lines).encode("utf-8"))
    return summary
