"""Docker HEALTHCHECK of the Qustody single-user image.

Asks the server's unauthenticated version endpoint, without counting as activity,
at the URL the hub gave the server (JUPYTERHUB_SERVICE_URL). Exit 0 when it answers.
"""

import os
import sys
import urllib.request

base = os.environ.get("JUPYTERHUB_SERVICE_URL") or "http://127.0.0.1:8888/"
url = base.rstrip("/") + "/api?no_track_activity=1"
if not url.startswith(("http://127.", "http://localhost", "http://[::1]", "https://")):
    # The check only ever talks to this container's own server.
    url = "http://127.0.0.1:8888/api?no_track_activity=1"
try:
    with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed scheme
        sys.exit(0 if response.status == 200 else 1)
except Exception as e:
    print(f"unhealthy: {type(e).__name__}", file=sys.stderr)
    sys.exit(1)
