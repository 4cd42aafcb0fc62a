"""A provider driver for the credential tests: Aer behind a "provider" that needs a key.

Like a careless provider SDK, it puts the key it was given into its error messages and
into the result's metadata, so the tests show the gateway removes it wherever it goes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from hub_ext.qpu.backends import AerDriver, Execution, ExecutionError


class KeyedDriver(AerDriver):
    kind = "keyed-provider"
    sandboxed = False  # a provider: execute() in the gateway, with its credentials

    def execute(self, circuits: Sequence[Any], shots: int, options: Mapping[str, Any],
                cancel: threading.Event) -> Execution:
        key = self.credentials().get("api_key", "")
        if not key.startswith("qk-"):
            raise ExecutionError("the provider refused the request: no valid API key")
        if shots == 13:
            raise ExecutionError(f"provider error 401 for key {key}: unlucky shot count")
        execution = super().execute(circuits, shots, options, cancel)
        execution.result["header"] = {"provider_echo": f"authorised with {key}"}
        return execution
