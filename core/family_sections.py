"""The Compare page's sections that the later families and studies bring, registered with
`core.compare_view.register_section` (the page draws their blocks like any other section):

- "elbo": Barron's VAE experiment (a VAE whose distortion is a normalised likelihood on pixels, DCT or
  wavelets): the ELBO table beside Barron's, the learned per-coefficient maps in the representation's
  layout, reconstructions and prior samples side by side (core.barron);
- "representation": what a representation holds, for any run with the evaluations core.analyses cached:
  the anomaly ROC curves of the runs on one chart, the most anomalous images and the nearest/farthest
  neighbour grid of the run with the best AUC (core.representation_views: VICReg's study, and any VAE);
- "class_penalty": the class-penalised autoencoder's λ curves (accuracy and reconstruction error
  against λ, per bottleneck, λ chosen on validation; core.class_penalty).

Only what is cached with the runs is drawn here (the page never trains or fits); each section says the
command that computes what is missing.
"""

from __future__ import annotations

from typing import Any

from core.compare_view import Caption, Chart, Comparison, Note, Picture, Section, Table, register_section

__all__ = ["class_penalty_figures", "class_penalty_scores"]


def _png(array: Any) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------
# Barron's experiment


def _has_elbo(c: Comparison) -> bool:
    return any(r.get("val_elbo") is not None for r in c.rows)


def _elbo_blocks(c: Comparison, choices: dict) -> list:
    from core import barron

    runs = c.finished()
    table = barron.elbo_table(runs)
    if not table.get("cells"):
        return [Note("info", "No finished run of the likelihood grid yet.")]
    rows = barron.elbo_rows(table)
    columns = list(rows[0]) if rows else []
    blocks: list = [Chart(barron.elbo_figure(table), f"{c.name}-elbo",
                          "Validation ELBO = −(rate + distortion), nats per image (bits per dimension in the "
                          "table): continuous densities of [0, 1] pixels, so they can be large positive numbers. "
                          "Barron's (Celeb-A 64×64×3, per dimension) beside ours; the orders compare, the values "
                          "do not (dataset, size, architecture, prior).")]
    blocks.append(Table(rows, columns, {k: k.replace("_", " ") for k in columns}, {}, _csv(rows, columns),
                        f"{c.name}-elbo"))
    best = max((r for r in runs if r.config.get("distribution") == "general"),
               key=lambda r: ((r.history("epoch") or [{}])[-1].get("val_elbo") or float("-inf")), default=None)
    if best is not None and (maps := barron.coefficient_maps(best)) is not None:
        blocks.append(Picture(barron.coefficient_maps_png(maps), f"{best.run_id}-coefficients",
                              f"{best.run_id}: the learned α and scale of every coefficient, in the "
                              f"{maps['representation']} layout (ranges in the panel titles)."))
    view = barron.gallery(runs)
    if view.get("runs"):
        blocks.append(Picture(barron.gallery_png(view), f"{c.name}-gallery",
                              "Each run's reconstructions of the same validation images, then samples from its "
                              "prior N(0, I)."))
    return blocks


def _csv(rows: list[dict], columns: list[str]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------
# Representation analyses (VICReg's study; any run)


def _cached_anomaly(c: Comparison) -> dict[str, Any]:
    from core import representation_views as rv

    views = {}
    for run in c.finished():
        if run.evaluation("anomaly") is not None:
            view = rv.anomaly_view(run)
            if view is not None and view.auc is not None:
                views[run.run_id] = view
    return views


def _has_analyses(c: Comparison) -> bool:
    return any(run.evaluation("anomaly") is not None or run.evaluation("neighbour-grid") is not None
               for run in c.finished())


def _representation_blocks(c: Comparison, choices: dict) -> list:
    from core import representation_views as rv

    blocks: list = []
    views = _cached_anomaly(c)
    labels = {row["run_id"]: f"{row['model']} · {row['loss_label']}" for row in c.rows}
    if views:
        blocks.append(Chart(rv.roc_figure({labels.get(k, k): v for k, v in views.items()}), f"{c.name}-roc",
                            "Anomaly score: the mean distance to the 2 nearest training representations. A "
                            "near-saturated AUC does not tell models apart; the held-out-class AUC in the table "
                            "below does."))
        rows = [{"run": labels.get(k, k), "AUC": v.auc, "held-out class AUC (mean)": v.class_auc_mean,
                 "pairing": v.pairing} for k, v in views.items()]
        cols = list(rows[0])
        blocks.append(Table(rows, cols, {k: k for k in cols}, {"AUC": "%.3f", "held-out class AUC (mean)": "%.3f"},
                            _csv(rows, cols), f"{c.name}-anomaly"))
        best_id = max(views, key=lambda k: views[k].auc or 0.0)
        if (mosaic := rv.gallery_mosaic(views[best_id])) is not None:
            blocks.append(Picture(_png(mosaic), f"{best_id}-anomalous",
                                  f"{labels.get(best_id, best_id)}: the most anomalous images, most anomalous first."))
    else:
        best_id = next((run.run_id for run in c.finished() if run.evaluation("neighbour-grid") is not None), None)
    run = next((r for r in c.finished() if r.run_id == best_id), None)
    if run is not None and (grid := rv.neighbour_grid(run)) is not None:
        blocks.append(Picture(_png(rv.grid_mosaic(grid)), f"{run.run_id}-neighbours",
                              f"{labels.get(run.run_id, run.run_id)}: one test image per class, its 5 nearest and 5 "
                              f"farthest training images in representation space ({grid.near_same_class:.0%} of "
                              f"the nearest share the query's class)."))
    blocks.append(Caption("Computed by `.venv/bin/python -m core.analyses RUN_DIR ...` and cached with each run."))
    return blocks


# ---------------------------------------------------------------------------------------------------
# The class penalty


def _has_class_penalty(c: Comparison) -> bool:
    return any(r["family"] == "class_ae" and r["state"] == "finished" for r in c.rows)


def class_penalty_scores(c: Comparison) -> list[dict]:
    """The cached class-penalty evaluations of the comparison's runs (core.class_penalty.evaluate_run)."""
    from core.class_penalty import EVALUATION

    out = []
    for run in c.finished():
        if run.config.get("family") == "class_ae" and (hit := run.evaluation(EVALUATION)) is not None:
            out.append(hit[0])
    return out


def class_penalty_figures(scores: list[dict]) -> list[Any]:
    """Test accuracy against λ and test MSE against λ, a line per bottleneck, λ chosen on validation
    starred (λ = 0 is the unsupervised autoencoder)."""
    from core import charts
    from core.class_penalty import choose_lambda

    chosen = {row["run_id"] for row in choose_lambda(scores).values()}
    series = {f"bottleneck {b}": [s for s in scores if s["bottleneck"] == b]
              for b in sorted({s["bottleneck"] for s in scores})}
    subtitle = "test split · ★ λ chosen on the validation split"
    return [charts.lambda_lines(series, "test_accuracy", "Classifier accuracy against λ", ylabel="accuracy",
                                subtitle=subtitle, chosen=chosen,
                                reference=(0.9242, "the study's peak (KMNIST) 0.9242")),
            charts.lambda_lines(series, "test_mse", "Reconstruction error against λ", ylabel="test MSE",
                                subtitle=subtitle, chosen=chosen)]


def _class_penalty_blocks(c: Comparison, choices: dict) -> list:
    scores = class_penalty_scores(c)
    if not scores:
        paths = " ".join(str(run.path) for run in c.finished() if run.config.get("family") == "class_ae")
        return [Note("info", "The classifier has not been fitted on these runs' latents yet. The study command "
                             "does it; for runs trained alone:",
                     f".venv/bin/python -c \"import sys; from core.runs import open_run; from core.class_penalty "
                     f"import evaluate_run; [evaluate_run(open_run(p)) for p in sys.argv[1:]]\" {paths}")]
    figures = class_penalty_figures(scores)
    return [Chart(figures[0], f"{c.name}-lambda-accuracy"), Chart(figures[1], f"{c.name}-lambda-mse"),
            Caption("λ > 0 uses the labels: those accuracies are not an unsupervised measure. The study "
                    "(KMNIST, bottleneck 10) reached 0.6438 at λ = 0.001 and a peak of 0.9242.")]


for _section in (
    Section("elbo", "Barron's likelihoods: the ELBO", _has_elbo, _elbo_blocks),
    Section("representation", "What the representation holds: anomalies and neighbours", _has_analyses,
            _representation_blocks),
    Section("class_penalty", "The class penalty: λ against accuracy and reconstruction", _has_class_penalty,
            _class_penalty_blocks, side_by_side=True),
):
    register_section(_section, before="reconstructions")
