"""``python -m hub_ext.qpu``: run the gateway (``--help-all`` lists every setting)."""

import os

# prometheus_client picks its value store when it is imported: with several workers their
# counts go to files here (metrics.py), and the folder must exist by then
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], mode=0o700, exist_ok=True)

from .server import main

main()
