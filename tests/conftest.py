"""Fixtures shared by every test directory."""

pytest_plugins = ["pytest_jupyter.jupyter_server"]
