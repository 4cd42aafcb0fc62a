"""``python -m hub_ext.qpu``: run the gateway (``--help-all`` lists every setting)."""

import os
from pathlib import Path

# prometheus_client picks its value store when it is imported, and reads the files it
# finds for its own pid: with several workers their counts go to files in this folder
# (metrics.py), which must exist by then and hold nothing of an earlier run
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    _folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for _stale in _folder.glob("*.db"):
        _stale.unlink(missing_ok=True)

from .server import main

main()
