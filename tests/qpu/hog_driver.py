"""A test backend that misbehaves inside the sandbox: it allocates past its memory cap
(the address-space limit must stop it, not Aer's own check) or kills its own process
(13 shots). A hand-written driver, since real Aer is polite about both."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

from hub_ext.qpu.backends import AerDriver, Execution

MB = 1024 * 1024


class HogDriver(AerDriver):
    kind = "hog"

    def simulate(self, circuits: Sequence[Any], shots: int, options: Mapping[str, Any],
                 memory_mb: int) -> Execution:
        if shots == 13:
            os.kill(os.getpid(), signal.SIGKILL)
        if shots == 7:  # within the cap: the ordinary path
            return super().simulate(circuits, shots, options, memory_mb)
        hog = bytearray((memory_mb + 64) * MB)  # touches every page
        return Execution({"results": [], "allocated": len(hog)}, 0.0)
