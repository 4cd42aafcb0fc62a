"""Qustody hub extensions: run in the JupyterHub process and hub-managed services."""
