"""A provider driver for the credential tests: Aer behind a "provider" that needs a key.

Like a careless provider SDK, it puts the key it was given into its error messages and
into the result's metadata, so the tests show the gateway removes it wherever it goes.
"""

from __future__ import annotations

import os
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


class KeyedTargetDriver(KeyedDriver):
    """A provider whose SDK needs the key to describe its device: built without
    credentials (as a parse worker would), it fails. It writes the pid of the process
    that checks a submission's circuits to the file ``trace`` (a parameter), so a test
    can tell whether a submission was decoded by a parse worker or by the gateway."""

    kind = "keyed-target-provider"
    stand_in_attrs = ("trace",)

    def __init__(self, name: str, params: Mapping[str, Any], credentials: Any) -> None:
        rest = dict(params)
        self.trace = str(rest.pop("trace", ""))
        super().__init__(name, rest, credentials)

    def build_target(self) -> Any:
        try:
            fields = dict(self.credentials())
        except ExecutionError:  # the gateway starts before the admin stores the key
            fields = {"api_key": "not stored yet"}
        if "api_key" not in fields:
            raise KeyError("api_key")  # as the SDK does, given no key
        return super().build_target()

    def check_circuits(self, circuits: Sequence[Any]) -> None:
        if self.trace:
            with open(self.trace, "a") as f:
                f.write(f"{os.getpid()}\n")
        super().check_circuits(circuits)
