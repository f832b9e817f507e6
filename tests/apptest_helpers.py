"""Driving one page through streamlit.testing.v1.AppTest, shared by the page tests."""

from __future__ import annotations

from typing import Any

from streamlit.testing.v1 import AppTest


def run_page(page: str, timeout: float = 120, **state: Any) -> AppTest:
    """Run the page file once with `state` preset in session_state; fail on any exception it raised."""
    at = AppTest.from_file(page, default_timeout=timeout)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at
