#!/opt/qustody/venv/bin/python
"""The Qustody single-user image's command: jupyterhub-singleuser, with Python's cyclic
garbage collector paused while the server starts.

A server's start is almost all imports (about 1,300 modules: jupyter-server, JupyterLab,
and the hub's ORM, SQLAlchemy and Alembic that jupyterhub.singleuser imports). They
allocate objects the collector traverses again and again, though none of them is garbage:
about 10% of the start's CPU, which ten servers starting at once on two cores all wait for
(docs/containers.md, "Start-up time").

The Qustody server extension turns the collector back on once every extension is loaded,
and moves what the start built out of its sight (``gc.freeze``): it takes
``QUSTODY_GC_PAUSED`` out of the environment, so kernels and terminals never inherit it.
Should the extension never do so (not loaded), a timer does the same after 120 s.
"""

import gc
import os
import sys
import threading

PAUSED = "QUSTODY_GC_PAUSED"


def _resume_if_still_paused() -> None:
    try:
        os.environ.pop(PAUSED)
    except KeyError:  # the extension resumed the collector (and may pause it for a scan)
        return
    gc.enable()


gc.disable()
os.environ[PAUSED] = "1"
_fallback = threading.Timer(120, _resume_if_still_paused)
_fallback.daemon = True
_fallback.start()

from jupyterhub.singleuser import main  # noqa: E402 - imported with the collector paused

sys.argv[0] = "jupyterhub-singleuser"
sys.exit(main())
