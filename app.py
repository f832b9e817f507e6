"""Robust Loss Lab: `streamlit run app.py`.

The app's frame: page configuration, the navigation menu over the pages in `pages/`, and the sidebar
footer every page shares. Each page is a thin view over `core/`.
"""

from __future__ import annotations

import streamlit as st

from pages.chrome import APP_ICON, APP_NAME, available_pages, sidebar_footer

# The menu, section by section. The pages themselves are listed in pages/chrome.py (LAB_PAGES) so the
# home page can link to them; a page whose file does not exist yet is left out, so the app never breaks.
PAGES = available_pages()

st.set_page_config(page_title=APP_NAME, page_icon=APP_ICON, layout="wide", initial_sidebar_state="expanded")

menu: dict[str, list[st.Page]] = {}
for page in PAGES:
    menu.setdefault(page.section, []).append(
        st.Page(
            page.path,
            title=page.title,
            icon=page.icon,
            url_path=page.url_path,
            default=page.default,
            help=page.summary,
        )
    )

current = st.navigation(menu, position="sidebar")
current.run()
sidebar_footer()
