"""A button's feedback (pages.chrome.act / feedback) in a real Streamlit script run under AppTest."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _script() -> None:
    import time

    import streamlit as st

    from pages import chrome

    chrome.FEEDBACK_S = 0.5

    def slow() -> tuple[str]:
        return ("done",)

    st.button("Go", key="go", on_click=chrome.act, args=("here", slow, "It is {}.", "Failed"))
    time.sleep(1.0)  # a rerun slower than the feedback's time, before the feedback is drawn
    chrome.feedback("here")


def test_feedback_is_seen_after_a_slow_rerun_and_then_goes():
    at = AppTest.from_function(_script, default_timeout=30)
    at.run()
    assert not at.exception and not at.success
    at.button(key="go").click().run()
    assert [s.value for s in at.success] == ["It is done."]  # its time starts when it is first drawn
    at.run()  # over half a second since it was first drawn: gone
    assert not at.success
