"""The hub's ``qustody`` service: the API user servers (and the QPU gateway) call.

``hub.server_api(c, ...)`` is its fragment for jupyterhub_config.py; ``app`` the service.
"""
