"""A test backend that misbehaves inside the sandbox: it allocates past its memory cap
(the address-space limit must stop it, not Aer's own check), kills its own process
(13 shots) or runs past its time limit (11 shots) however small its circuit. A
hand-written driver: real Aer is polite about the first two, and a real circuit that
runs long is estimated as long and refused at admission."""

from __future__ import annotations

import os
import signal
import time
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
        if shots == 11:
            time.sleep(600)  # the sandbox's time limit ends it
        if shots == 7:  # within the cap: the ordinary path
            return super().simulate(circuits, shots, options, memory_mb)
        hog = bytearray((memory_mb + 64) * MB)  # touches every page
        return Execution({"results": [], "allocated": len(hog)}, 0.0)
