"""Train: start a run of any model family, watch it learn, stop, resume or delete it, and load runs.

Draws what core.train_view and core.progress compute and hands actions to core.jobs (the command-line
trainer as its own process) and core.run_archive (zip export and safe import). Every rerun reads the run
folders, so a reload or a second window shows the same runs.
"""

from __future__ import annotations

from functools import partial

import streamlit as st

from core import jobs, progress
from core import train_view as view
from core.families import FAMILIES, family_of
from core.run_archive import ArchiveError, archive_name, export_run, import_run
from core.runs import RunFormatError, runs_root
from pages.chrome import act, chart_grid, feedback, page_header

K = "train_"
SELECTED, CONFIRM, UPLOADS, LIVE, RERUN = (K + k for k in ("selected", "confirm_delete", "upload_generation",
                                                          "live_ids", "rerun_app"))
STOPPING = "Stopping {}: it finishes its step, saves a checkpoint and stops."
# Each button's callback: its action, and how it went kept for `feedback` beside the button.
_act = partial(act, errors=(jobs.JobError, ArchiveError, RunFormatError, ValueError, FileExistsError, OSError))


def _form(family: str) -> view.FormResult:
    return view.read_form(family, st.session_state, datasets_found=found, cuda=jobs.cuda_available(),
                          dataset_fixes=fixes)


def _start(family: str) -> tuple[str]:
    if not (form := _form(family)).ok:  # what is on screen now is wrong: start nothing, say why
        raise ValueError("; ".join(e.message for e in form.errors))
    run = jobs.start(form.config)
    st.session_state[SELECTED], st.session_state[RERUN] = str(run.path), True
    return (run.run_id,)


def _import(key: str) -> tuple[str, str]:
    if st.session_state.get(key) is None:
        raise ValueError("choose a .zip file first")
    run = import_run(st.session_state[key].getvalue())
    st.session_state[UPLOADS] += 1  # a fresh uploader: the imported file is not offered again
    st.session_state[SELECTED] = str(run.path)
    return run.run_id, str(run.path.parent)


def _set(key: str, value) -> None:
    st.session_state[key] = value


def _widget(w: view.FormWidget, error: view.FieldError | None) -> None:
    common = {"key": w.key, "help": w.help, "persist_state": "session"}
    if w.kind == "select":
        st.selectbox(w.label, w.options, format_func=w.title_of, **common)
    elif w.kind == "check":
        st.checkbox(w.label, **common)
    else:  # typed: what is read is exactly what is shown
        st.text_input(w.label, placeholder=w.placeholder, live="400ms", **common)
    if error is not None:
        st.caption(f":red[{error.message}]")


def _state(run, p: progress.Progress) -> None:
    """A run's state: the overall bar, the phase's own bar, the family's warning, the message."""
    st.progress(p.fraction, text=view.status_line(p))
    if phase := view.phase_bar(p):
        st.progress(phase[1], text=phase[0])
    if p.warning:
        st.warning(view.humanise(p.warning), icon=":material/warning:")
    prose, command = view.message_parts(p, family_of(run.config))
    if prose:
        (st.error if p.state in ("failed", "launch failed") else st.caption)(prose)
    if command:
        st.code(command, language="bash", wrap_lines=True)


def _numbers(run, p: progress.Progress, key: str) -> None:
    for col, (label, value) in zip(st.columns(len(numbers := view.metrics(run, p))), numbers, strict=True):
        col.metric(label, value)
    chart_grid(view.curve_figures(run), key)


page_header("Train", ":material/model_training:",
            "Train a model (" + ", ".join(f.title for f in FAMILIES.values()) + ") with the loss of your choice and "
            "watch it learn. Each run trains in its own process and writes everything to its folder, so closing this "
            "tab, reloading or a second window loses nothing.")
found, fixes = view.data_on_disk()
st.session_state.setdefault(UPLOADS, 0)


@st.fragment
def new_run() -> None:
    """The form, from the fields' declarations; Start is off while any value on screen is wrong."""
    if st.session_state.pop(RERUN, False):
        st.rerun(scope="app")  # a run was started: the run list below must show it
    st.subheader("New run")
    pick, summary = st.columns([1, 3], vertical_alignment="bottom")
    family = pick.selectbox("Model family", view.family_choices(), key=view.FAMILY_KEY, persist_state="session",
                            format_func=lambda name: FAMILIES[name].title)
    summary.caption(FAMILIES[family].summary)
    for key, value in view.default_values(family).items():
        st.session_state.setdefault(key, value)
    form = _form(family)
    errors = {e.field: e for e in form.errors}
    for group in view.form_groups(family, st.session_state, datasets_found=found):
        with st.expander(group.title) if group.advanced else st.container():
            if not group.advanced:
                st.markdown(f"**{group.title}**")
            for start in range(0, len(group.widgets), 4):
                for col, w in zip(st.columns(4), group.widgets[start:start + 4], strict=False):
                    with col:
                        _widget(w, errors.get(w.field.name))
            if group.caption:
                st.caption(group.caption)
    button, note = st.columns([1, 4], vertical_alignment="center")
    button.button("Start training", type="primary", icon=":material/play_arrow:", key=K + "start", disabled=not form.ok,
                  on_click=_act, args=("start", _start, "Started {}. It trains in its own process: closing this tab "
                                       "does not stop it.", "Not started", family))
    with note:
        feedback("start")
        if form.errors:
            st.error("Start is off until this is fixed:\n" + "\n".join(f"- {e.message}" for e in form.errors))
            for command in (c for e in form.errors for c in e.commands):
                st.code(command, language="bash", wrap_lines=True)
        else:
            st.caption(f"Will train a {form.summary}. Runs are written to `{runs_root()}`.")


new_run()
st.session_state[LIVE] = [str(run.path) for run in jobs.active_runs()]


@st.fragment(run_every=2.0 if st.session_state[LIVE] else 5.0)
def runs() -> None:
    """Everything about the runs, from one reading of their folders, redrawn together on a timer."""
    rows = progress.run_table()
    active = [r for r in rows if r["progress"] is not None and r["state"] in jobs.ACTIVE_STATES and not r["shipped"]]
    if [r["path"] for r in active] != st.session_state.get(LIVE):
        st.rerun(scope="app")  # one started or ended: the refresh rate changes with the whole page
    st.subheader("Training now")
    feedback("live")  # here, not in the run's panel: a run that stops at once takes its panel with it
    if not active:
        st.caption("Nothing is training. Runs started from the command line show up here too.")
    for row in active:
        run, p = row["open"], row["progress"]
        with st.container(border=True):
            head, stop = st.columns([5, 1])
            head.markdown(f"**{run.run_id}**  \n{view.run_caption(run, p)}")
            stop.button("Stop", key=f"{K}live_stop_{run.run_id}", icon=":material/stop:",
                        disabled=p.state == "stopping",
                        on_click=_act, args=("live", view.stop_run, STOPPING, "Not stopped", str(run.path)),
                        help="Finish the current step, save a checkpoint and stop. Resume continues exactly.")
            _state(run, p)
            if p.state != "starting":
                _numbers(run, p, f"{K}live_{run.run_id}")
    st.subheader("Runs")
    if not rows:
        st.caption("No runs yet, in the runs folder or in `checkpoints/`.")
        return
    st.dataframe(view.table_rows(rows), hide_index=True, key=K + "table",
                 column_config={"Run": st.column_config.TextColumn(width="medium")})
    by_path = {row["path"]: row for row in rows}  # a shipped run may share its id with one in runs/
    if st.session_state.get(SELECTED) not in by_path:
        st.session_state[SELECTED] = rows[0]["path"]
    path = st.selectbox("Manage run", list(by_path), key=SELECTED, format_func=lambda path: by_path[path]["run"]
                        + (" (shipped)" if by_path[path]["shipped"] else ""))
    row, place = by_path[path], "manage"
    with st.container(border=True):
        feedback(place)
        if row["progress"] is None:
            st.error(f"This run cannot be read: {row['error']}")
            return
        run, p = row["open"], row["progress"]
        st.markdown(f"**{run.run_id}**  \n{view.run_caption(run, p)} · {row['where']} · made {view.ago(row['age'])}")
        _state(run, p)
        actions = st.columns(4)
        if p.state in jobs.ACTIVE_STATES:
            actions[0].button("Stop", key=K + "stop", icon=":material/stop:", disabled=p.state == "stopping",
                              on_click=_act, args=(place, view.stop_run, STOPPING, "Not stopped", path))
        elif p.state in jobs.RESUMABLE_STATES and not run.shipped:
            actions[0].button("Start" if p.state == "created" else "Resume", key=K + "resume",
                              icon=":material/play_arrow:", help="Continue from the last checkpoint, exactly.",
                              on_click=_act, args=(place, view.resume_run, "Resuming {} from its last checkpoint.",
                                                   "Not resumed", path))
        actions[1].download_button("Download zip", data=lambda: export_run(path), key=K + "download",
                                   file_name=archive_name(run), mime="application/zip", icon=":material/download:")
        if run.shipped:
            actions[2].caption("Shipped with the app (checkpoints/): read-only.")
        elif p.state not in jobs.ACTIVE_STATES:
            actions[2].button("Delete…", key=K + "delete", icon=":material/delete:", on_click=_set,
                              args=(CONFIRM, run.run_id))
        if st.session_state.get(CONFIRM) == run.run_id and not run.shipped:
            st.warning(f"Delete **{run.run_id}** and all its files (weights, history, embeddings)? This cannot be "
                       "undone.")
            yes, no, _ = st.columns([1, 1, 4])
            yes.button("Yes, delete", type="primary", key=K + "delete_yes", on_click=_act,
                       args=(place, view.delete_run, "Deleted {}.", "Not deleted", path))
            no.button("Cancel", key=K + "delete_no", on_click=_set, args=(CONFIRM, None))
        if p.state in jobs.ACTIVE_STATES:
            st.caption("Its live numbers and curves are under **Training now**, above.")
        elif run.history():
            _numbers(run, p, f"{K}run")
        if log := jobs.log_tail(run, 30):
            with st.expander("Trainer output (train.log)"):
                st.code(log, language="text", wrap_lines=True)


runs()

st.subheader("Load a run")
st.caption("Every run under the runs folder and `checkpoints/` is listed above. To add one from elsewhere, upload "
           "the zip its Download button made. Archives with unsafe paths, pickled files (.pt, .pkl, …) or anything "
           "that is not a run are refused, and then nothing is written.")
upload_key = f"{K}upload_{st.session_state[UPLOADS]}"
st.file_uploader("Run archive (.zip)", type=["zip"], key=upload_key, max_upload_size=200)
st.button("Import run", key=K + "import", icon=":material/upload:", on_click=_act,
          args=("import", _import, "Imported {} into {}.", "Upload refused", upload_key))
feedback("import")
