"""Train: start a VAE run, watch it learn, stop, resume or delete it, and load runs (upload a zip).

A thin view over core.jobs (launch/watch/stop/resume the command-line trainer as its own process) and
core.run_archive (zip export and safe import). Nothing about a run lives in session_state: every
rerun reads the run directories, so a reload, a closed tab or a second window shows the same runs.
session_state only holds this page's widgets, the run picked in the manager and one-shot messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from core import jobs
from core.config import ALPHA_LOSSES, DEFAULTS, UNSCALED_LOSSES, ConfigError
from core.datasets import DATASET_NAMES, dataset_status
from core.losses import LOSSES
from core.run_archive import ArchiveError, archive_name, export_run, import_run
from core.runs import RunFormatError, open_run, runs_root
from pages.chrome import fast_figure, page_header

LIVE_REFRESH_S = 2.0  # how often the live panel rereads status.json while something trains
IDLE_REFRESH_S = 5.0  # ...and while nothing does (to notice runs started elsewhere)
CHART_HEIGHT = 240

# Session-state keys (prefixed: other pages have widgets too).
K = "train_"
DATASET_KEY, LOSS_KEY, ALPHA_KEY, NU_KEY = K + "dataset", K + "loss", K + "alpha", K + "nu"
SCALE_KEY = K + "scale"  # + "_<loss>": each loss keeps its own c
LO_KEY, HI_KEY, LATENT_KEY = K + "alpha_lo", K + "alpha_hi", K + "latent"
EPOCHS_KEY, BATCH_KEY, LR_KEY, BETA_KEY = K + "epochs", K + "batch", K + "lr", K + "beta"
DEVICE_KEY, SEED_KEY, LIMIT_KEY = K + "device", K + "seed", K + "limit"
SELECTED_KEY = K + "selected"  # the path of the run shown in the manager
CONFIRM_KEY = K + "confirm_delete"  # the run whose deletion awaits confirmation
FLASH_KEY = K + "flash"  # (kind, text) shown once, after an action
UPLOAD_KEY = K + "upload"
UPLOAD_GEN_KEY = K + "upload_generation"  # bumped to clear the uploader after an import
LIVE_IDS_KEY = K + "live_ids"  # the active runs when the page was last drawn (a change reruns all of it)

FORM_DEFAULTS: dict[str, Any] = {
    DATASET_KEY: DEFAULTS["dataset"],
    LOSS_KEY: DEFAULTS["loss"],
    ALPHA_KEY: 1.0,
    NU_KEY: 2.0,
    LO_KEY: float(DEFAULTS["adaptive_alpha_lo"]),
    HI_KEY: float(DEFAULTS["adaptive_alpha_hi"]),
    LATENT_KEY: int(DEFAULTS["latent_dim"]),
    EPOCHS_KEY: int(DEFAULTS["epochs"]),
    BATCH_KEY: int(DEFAULTS["batch_size"]),
    LR_KEY: float(DEFAULTS["lr"]),
    BETA_KEY: float(DEFAULTS["beta"]),
    DEVICE_KEY: DEFAULTS["device"],
    SEED_KEY: int(DEFAULTS["seed"]),
    LIMIT_KEY: 0,
}
STATE_ICONS = {"starting": "⏳", "running": "▶️", "stopping": "⏹️", "finished": "✅", "stopped": "⏸️",
               "interrupted": "⚠️", "failed": "❌", "launch failed": "❌", "created": "🆕", "broken": "🚫"}

for _key, _value in FORM_DEFAULTS.items():
    st.session_state.setdefault(_key, _value)
st.session_state.setdefault(UPLOAD_GEN_KEY, 0)


def _flash(kind: str, text: str) -> None:
    st.session_state[FLASH_KEY] = (kind, text)


def _takes_scale(loss: str) -> bool:
    """Whether the form offers c: not for a loss without one, nor for one that learns its own (adaptive)."""
    return loss not in UNSCALED_LOSSES and not LOSSES[loss].learnable


def _form_config() -> dict[str, Any]:
    """The training config the form describes (core.config's field names)."""
    s = st.session_state
    loss = s[LOSS_KEY]
    config: dict[str, Any] = {
        "dataset": s[DATASET_KEY], "loss": loss, "latent_dim": int(s[LATENT_KEY]), "epochs": int(s[EPOCHS_KEY]),
        "batch_size": int(s[BATCH_KEY]), "lr": float(s[LR_KEY]), "beta": float(s[BETA_KEY]),
        "device": s[DEVICE_KEY], "seed": int(s[SEED_KEY]),
    }
    if loss in ALPHA_LOSSES:  # the form's input for it: ν for Student's t, α for the general loss
        config["loss_alpha"] = float(s[NU_KEY if loss == "students_t" else ALPHA_KEY])
    elif loss == "adaptive":
        config["adaptive_alpha_lo"], config["adaptive_alpha_hi"] = float(s[LO_KEY]), float(s[HI_KEY])
    if _takes_scale(loss):
        scale = s.get(SCALE_KEY + "_" + loss)
        if scale is not None and abs(float(scale) - LOSSES[loss].default_scale) > 1e-12:
            config["loss_scale"] = float(scale)
    if int(s[LIMIT_KEY]) > 0:
        config["limit_train"] = int(s[LIMIT_KEY])
    return config


# ---------------------------------------------------------------------------------------------------
# Actions (button callbacks: they run before the page redraws, so the page shows their result)


def _start_run() -> None:
    try:
        run = jobs.start(_form_config())
    except (ConfigError, jobs.JobError, ValueError, FileExistsError) as exc:
        _flash("error", f"Not started: {exc}")
        return
    st.session_state[SELECTED_KEY] = str(run.path)
    _flash("success", f"Started {run.run_id}. It trains in its own process: closing this tab does not stop it.")


def _stop_run(path: str) -> None:
    try:
        sent = jobs.stop(path)
    except (jobs.JobError, RunFormatError) as exc:
        _flash("error", f"Not stopped: {exc}")
        return
    name = Path(path).name
    _flash("info", f"Stopping {name}: it finishes its step, saves a checkpoint and stops." if sent
           else f"{name} was not training.")


def _resume_run(path: str) -> None:
    try:
        jobs.resume(path)
    except (jobs.JobError, RunFormatError) as exc:
        _flash("error", f"Not resumed: {exc}")
        return
    _flash("success", f"Resuming {Path(path).name} from its last checkpoint.")


def _ask_delete(run_id: str) -> None:
    st.session_state[CONFIRM_KEY] = run_id


def _cancel_delete() -> None:
    st.session_state[CONFIRM_KEY] = None


def _delete_run(path: str, run_id: str) -> None:
    st.session_state[CONFIRM_KEY] = None
    try:
        jobs.delete(path)
    except (jobs.JobError, RunFormatError) as exc:
        _flash("error", f"Not deleted: {exc}")
        return
    if st.session_state.get(SELECTED_KEY) == path:
        st.session_state[SELECTED_KEY] = None
    _flash("success", f"Deleted {run_id}.")


def _import_upload() -> None:
    key = f"{UPLOAD_KEY}_{st.session_state[UPLOAD_GEN_KEY]}"
    uploaded = st.session_state.get(key)
    if uploaded is None:
        _flash("error", "Choose a .zip file first.")
        return
    try:
        run = import_run(uploaded.getvalue())
    except ArchiveError as exc:
        _flash("error", f"Upload refused: {exc}")
        return
    st.session_state[UPLOAD_GEN_KEY] += 1  # a fresh uploader: the imported file is not offered again
    st.session_state[SELECTED_KEY] = str(run.path)
    _flash("success", f"Imported {run.run_id} into {run.path.parent}.")


# ---------------------------------------------------------------------------------------------------
# Drawing


def _curve_figures(run: Any) -> list[tuple[str, Any]]:
    """(key suffix, figure) for the run's loss, KL and (adaptive loss) α/c curves."""
    c = jobs.curves(run)
    base = {"height": CHART_HEIGHT, "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
            "legend": {"orientation": "h", "y": -0.15}}
    figures = [
        ("loss", fast_figure(
            [{"type": "scatter", "mode": "lines", "name": "train", "x": c["step_x"], "y": c["loss"]},
             {"type": "scatter", "mode": "lines+markers", "name": "validation", "x": c["epoch_x"],
              "y": c["val_loss"]}],
            {**base, "title": {"text": "Loss per image (recon + β·KL) by epoch"}})),
        ("kl", fast_figure(
            [{"type": "scatter", "mode": "lines", "name": "train", "x": c["step_x"], "y": c["kl"]},
             {"type": "scatter", "mode": "lines+markers", "name": "validation", "x": c["epoch_x"],
              "y": c["val_kl"]}],
            {**base, "title": {"text": "KL per image by epoch"}})),
    ]
    if run.config.get("loss") == "adaptive":
        figures.append(("alpha", fast_figure(
            [{"type": "scatter", "mode": "lines+markers", "name": "mean α", "x": c["epoch_x"], "y": c["alpha_mean"]},
             {"type": "scatter", "mode": "lines+markers", "name": "mean c", "x": c["epoch_x"],
              "y": c["scale_mean"], "yaxis": "y2"}],
            {**base, "title": {"text": "Learned α and c (means) by epoch"}, "yaxis": {"title": {"text": "α"}},
             "yaxis2": {"title": {"text": "c"}, "overlaying": "y", "side": "right"}})))
    return figures


def _progress_text(p: jobs.Progress) -> str:
    parts = [f"{STATE_ICONS.get(p.state, '')} {p.state}", p.epoch_label]
    if p.total_steps:
        parts.append(f"step {p.step}/{p.total_steps}")
    if p.state in ("running", "stopping"):
        parts.append(f"ETA {jobs.format_eta(p.eta_s)}")
    if p.images_per_s:
        parts.append(f"{p.images_per_s:,.0f} img/s")
    return " · ".join(parts)


def _metrics(p: jobs.Progress) -> None:
    cols = st.columns(4)
    cols[0].metric("Train loss", "—" if p.loss is None else f"{p.loss:.4g}")
    cols[1].metric("KL", "—" if p.kl is None else f"{p.kl:.3g}")
    cols[2].metric("Val loss", "—" if p.val_loss is None else f"{p.val_loss:.4g}")
    if p.alpha_mean is not None:
        cols[3].metric("Mean α / c", f"{p.alpha_mean:.3g} / {p.scale_mean:.3g}")
    else:
        cols[3].metric("Active units", "—" if p.active_units is None else str(p.active_units))


def _charts(run: Any, key: str) -> None:
    figures = _curve_figures(run)
    for col, (name, figure) in zip(st.columns(len(figures)), figures, strict=True):
        col.plotly_chart(figure, key=f"{key}_{name}")


def _live_run(run: Any) -> None:
    p = jobs.progress(run)
    with st.container(border=True):
        head, button = st.columns([5, 1])
        head.markdown(f"**{run.run_id}**  \n{run.config['dataset']} · {jobs.loss_label(run.config)} · "
                      f"latent {run.config['latent_dim']} · {p.device or run.config.get('device')}")
        button.button("Stop", key=f"{K}live_stop_{run.run_id}", on_click=_stop_run, args=(str(run.path),),
                      icon=":material/stop:", disabled=p.state == "stopping",
                      help="Finish the current step, save a checkpoint, and stop. Resume continues exactly.")
        st.progress(p.fraction, text=_progress_text(p))
        if p.message:
            st.caption(p.message)
        if p.state != "starting":
            _metrics(p)
            _charts(run, f"{K}live_{run.run_id}")


def _show_flash() -> None:
    flash = st.session_state.pop(FLASH_KEY, None)
    if flash:
        kind, text = flash
        {"success": st.success, "error": st.error, "info": st.info}.get(kind, st.info)(text)


# ---------------------------------------------------------------------------------------------------
# The page

page_header(
    "Train",
    ":material/model_training:",
    "Train a VAE with the reconstruction loss of your choice and watch it learn. Each run trains in its own "
    "process and writes everything to its folder under the runs folder, so closing this tab, reloading, or a "
    "second window loses nothing.",
)
_show_flash()

active_now = jobs.active_runs()
st.session_state[LIVE_IDS_KEY] = [str(run.path) for run in active_now]


@st.fragment(run_every=LIVE_REFRESH_S if active_now else IDLE_REFRESH_S)
def live_panel() -> None:
    """Progress of every run being trained, reread from the run folders on a timer."""
    _show_flash()  # a Stop clicked in here reruns only this fragment: say so here
    active = jobs.active_runs()
    if [str(run.path) for run in active] != st.session_state.get(LIVE_IDS_KEY):
        # A run started or ended since the page was drawn: redraw all of it (run list, manager, refresh
        # rate). On a full page run the two lists agree, so this happens on a timer tick only.
        st.rerun(scope="app")
    st.subheader("Training now")
    if not active:
        st.caption("Nothing is training. Start a run below; runs started from the command line "
                   "(`python -m core.train`) show up here too.")
    for run in active:
        _live_run(run)


live_panel()

# -- a new run ----------------------------------------------------------------------------------------
st.subheader("New run")
statuses = {entry["name"]: entry for entry in dataset_status()}
with st.container(border=True):
    top = st.columns(3)
    top[0].selectbox(
        "Dataset", DATASET_NAMES, key=DATASET_KEY,
        format_func=lambda n: statuses[n]["title"] + ("" if statuses[n]["found"] else " — not on disk"),
    )
    top[1].selectbox("Loss", list(LOSSES), key=LOSS_KEY, format_func=lambda n: LOSSES[n].title)
    dataset, loss = st.session_state[DATASET_KEY], st.session_state[LOSS_KEY]
    with top[2]:
        if loss == "general":
            st.number_input("α (shape)", min_value=-100.0, max_value=100.0, step=0.5, key=ALPHA_KEY,
                            help="2 = MSE, 1 = Charbonnier, 0 = Cauchy, −2 = Geman-McClure; very negative → Welsch.")
        elif loss == "students_t":
            st.number_input("ν (degrees of freedom)", min_value=0.01, max_value=1000.0, step=0.5, key=NU_KEY)
        elif loss == "adaptive":
            lo, hi = st.columns(2)
            lo.number_input("lowest α", min_value=-10.0, max_value=10.0, step=0.5, key=LO_KEY,
                            help="α is learned per pixel inside [lowest, highest]; the likelihood needs α ≥ 0.")
            hi.number_input("highest α", min_value=-10.0, max_value=10.0, step=0.5, key=HI_KEY)
        if _takes_scale(loss):
            st.number_input("scale c", min_value=1e-4, max_value=100.0, value=LOSSES[loss].default_scale,
                            step=0.01, format="%.4g", key=f"{SCALE_KEY}_{loss}",
                            help="Residuals are measured in units of c (pixels are in [0, 1]).")
    st.caption(LOSSES[loss].description)

    row = st.columns(4)
    row[0].number_input("Latent size", min_value=1, max_value=4096, step=1, key=LATENT_KEY)
    row[1].number_input("Epochs", min_value=1, max_value=100_000, step=1, key=EPOCHS_KEY)
    row[2].number_input("Batch size", min_value=1, max_value=65_536, step=16, key=BATCH_KEY)
    row[3].number_input("Learning rate", min_value=1e-7, max_value=1.0, step=1e-4, format="%.1e", key=LR_KEY)
    row = st.columns(4)
    row[0].number_input("β (KL weight)", min_value=0.0, max_value=1000.0, step=0.1, key=BETA_KEY)
    cuda = jobs.cuda_available()
    row[1].selectbox("Device", ["auto", "cpu", "cuda"], key=DEVICE_KEY,
                     help="auto: the GPU if PyTorch sees one, else the CPU."
                     + ("" if cuda else " No GPU is visible here."))
    row[2].number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key=SEED_KEY)
    row[3].number_input("Training images (0 = all)", min_value=0, max_value=10_000_000, step=256, key=LIMIT_KEY,
                        help="Train on the first N images of the training split: for quick tries.")

    data_ok = statuses[dataset]["found"]
    if not data_ok:
        st.warning(f"**{statuses[dataset]['title']} is not on disk**, so it cannot be trained on yet. To get it:",
                   icon=":material/download:")
        st.code(statuses[dataset]["fix"], language="bash")
    if st.session_state[DEVICE_KEY] == "cuda" and not cuda:
        st.warning("PyTorch sees no GPU here: choose cpu or auto.")
    st.caption(f"Runs are written to `{runs_root()}`. The defaults train `digits` on a CPU in well under a minute.")
    st.button("Start training", type="primary", icon=":material/play_arrow:", key=K + "start", on_click=_start_run,
              disabled=not data_ok or (st.session_state[DEVICE_KEY] == "cuda" and not cuda))

# -- every run ----------------------------------------------------------------------------------------
st.subheader("Runs")
rows = jobs.run_table()
if not rows:
    st.caption("No runs yet, in the runs folder or in `checkpoints/`.")
else:
    shown = ["run", "state", "dataset", "loss", "latent", "epoch", "val loss", "age", "where"]
    st.dataframe([{k: row[k] for k in shown} for row in rows], hide_index=True, key=K + "table",
                 column_config={"val loss": st.column_config.NumberColumn(format="%.4g")})
    by_path = {row["path"]: row for row in rows}  # a shipped run may share its id with one in runs/
    if st.session_state.get(SELECTED_KEY) not in by_path:
        st.session_state[SELECTED_KEY] = rows[0]["path"]
    picked = st.selectbox(
        "Manage run", list(by_path), key=SELECTED_KEY,
        format_func=lambda path: by_path[path]["run"] + (" (shipped)" if by_path[path]["shipped"] else ""),
    )
    row = by_path[picked]
    with st.container(border=True):
        if row["error"]:
            st.error(f"This run cannot be read: {row['error']}")
        else:
            run = open_run(row["path"])
            p = jobs.progress(run)
            st.markdown(f"**{run.run_id}** · {row['dataset']} · {row['loss']} · latent {row['latent']} · "
                        f"{row['where']} · age {row['age']}")
            st.progress(p.fraction, text=_progress_text(p))
            if p.message:
                (st.error if p.state in ("failed", "launch failed") else st.caption)(p.message)
            if p.state not in jobs.ACTIVE_STATES:
                _metrics(p)
            actions = st.columns(4)
            if p.state in jobs.ACTIVE_STATES:
                actions[0].button("Stop", key=K + "stop", icon=":material/stop:", on_click=_stop_run,
                                  args=(str(run.path),), disabled=p.state == "stopping")
            elif p.state in jobs.RESUMABLE_STATES and not run.shipped:
                actions[0].button("Start" if p.state == "created" else "Resume", key=K + "resume",
                                  icon=":material/play_arrow:", on_click=_resume_run, args=(str(run.path),),
                                  help="Continue from the last checkpoint (exactly where it stopped).")
            actions[1].download_button("Download zip", data=lambda path=str(run.path): export_run(path),
                                       file_name=archive_name(run), mime="application/zip", key=K + "download",
                                       icon=":material/download:")
            if run.shipped:
                actions[2].caption("Shipped with the app (checkpoints/): read-only.")
            elif p.state not in jobs.ACTIVE_STATES:
                actions[2].button("Delete…", key=K + "delete", icon=":material/delete:", on_click=_ask_delete,
                                  args=(run.run_id,))
            if st.session_state.get(CONFIRM_KEY) == run.run_id and not run.shipped:
                st.warning(f"Delete **{run.run_id}** and all its files (weights, history, embeddings)? "
                           f"This cannot be undone.")
                yes, no, _ = st.columns([1, 1, 4])
                yes.button("Yes, delete", type="primary", key=K + "delete_yes", on_click=_delete_run,
                           args=(str(run.path), run.run_id))
                no.button("Cancel", key=K + "delete_no", on_click=_cancel_delete)
            if p.state in jobs.ACTIVE_STATES:
                st.caption("Its live curves are under **Training now**, at the top of the page.")
            elif run.history():
                _charts(run, f"{K}run")
            log = jobs.log_tail(run, 30)
            if log:
                with st.expander("Trainer output (train.log)"):
                    st.code(log, language="text")

# -- load a run ---------------------------------------------------------------------------------------
st.subheader("Load a run")
st.caption("Every run under the runs folder and `checkpoints/` is listed above. To add one from elsewhere, "
           "upload the zip its Download button made. Archives with unsafe paths, pickled files (.pt, .pkl, ...) "
           "or anything that is not a run are refused, and then nothing is written.")
st.file_uploader("Run archive (.zip)", type=["zip"], key=f"{UPLOAD_KEY}_{st.session_state[UPLOAD_GEN_KEY]}",
                 max_upload_size=200)
st.button("Import run", key=K + "import", icon=":material/upload:", on_click=_import_upload)
