"""Streamlit custom components of the lab: each a static frontend folder and its Python wrapper."""
