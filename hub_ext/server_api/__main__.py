"""``python -m hub_ext.server_api --config=FILE``: the hub's ``qustody`` service."""

from .app import main

main()
