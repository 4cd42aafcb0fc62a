"""``python -m hub_ext.qpu``: run the gateway (``--help-all`` lists every setting)."""

from .server import main

main()
