#!/opt/qustody/venv/bin/python
"""The Qustody single-user image's command: jupyterhub-singleuser, with Python's cyclic
garbage collector paused while the server starts.

A server's start is almost all imports (about 1,300 modules: jupyter-server, JupyterLab,
and the hub's ORM, SQLAlchemy and Alembic that jupyterhub.singleuser imports). They
allocate objects the collector traverses again and again, though none of them is garbage:
about 15% of the start's CPU, which ten servers starting at once on two cores all wait for
(docs/containers.md, "Start-up time").

The Qustody server extension turns the collector back on once every extension is loaded,
and moves what the start built out of its sight (``gc.freeze``): it sees
``QUSTODY_GC_PAUSED`` and removes it, so kernels never inherit it. Should the extension
not load, a timer turns the collector back on anyway.
"""

import gc
import os
import sys
import threading

gc.disable()
os.environ["QUSTODY_GC_PAUSED"] = "1"
_fallback = threading.Timer(120, gc.enable)
_fallback.daemon = True
_fallback.start()

from jupyterhub.singleuser import main  # noqa: E402 - imported with the collector paused

sys.argv[0] = "jupyterhub-singleuser"
sys.exit(main())
