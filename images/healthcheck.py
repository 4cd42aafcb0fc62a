"""Docker HEALTHCHECK of the Qustody single-user image.

Asks the server's unauthenticated version endpoint, without counting as activity,
at the URL the hub gave the server (JUPYTERHUB_SERVICE_URL). Exit 0 when it answers.
"""

import os
import sys
import urllib.request
from urllib.parse import urlsplit

# The check only ever talks to this container's own server: on its loopback, at the port
# and path of JUPYTERHUB_SERVICE_URL (which names 0.0.0.0 on a Docker network).
service = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL") or "http://127.0.0.1:8888/")
port = service.port or 8888
url = f"http://127.0.0.1:{port}{service.path.rstrip('/')}/api?no_track_activity=1"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as e:
    print(f"unhealthy: {type(e).__name__}", file=sys.stderr)
    sys.exit(1)
