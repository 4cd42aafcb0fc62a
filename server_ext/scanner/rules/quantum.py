"""Credentials of the quantum providers our users hold accounts with.

IBM Quantum tokens are passed to ``QiskitRuntimeService(token=...)`` (and to the
older ``IBMQ.save_account``); D-Wave Leap tokens have a ``XXX-<40 hex>`` shape;
the others are API keys or passwords recognisable by the vendor's name nearby.
AWS keys used for Amazon Braket are caught by the AWS detectors.
"""

from __future__ import annotations

from ..detector import Detector, Kind, rx
from ._common import ASSIGN, literal_gate, vendor

_IBM_CALLS = (
    r"QiskitRuntimeService|IBMProvider|IBMQ\.(?:save|enable)_account|save_account|"
    r"QISKIT_IBM_TOKEN|QE_TOKEN"
)

DETECTORS = (
    Detector(
        id="ibm-quantum-token",
        title="IBM Quantum token (QiskitRuntimeService / IBMQ accounts)",
        anchor=rf"(?:{_IBM_CALLS})".encode(),
        value=rx(
            rf"(?:{_IBM_CALLS})(?:"
            r"[\s\S]{0,200}?\btoken\s{0,4}=\s{0,4}[rRbBuUfF]{0,2}[\"'](?P<secret>[A-Za-z0-9_-]{40,200})[\"']"
            r"|\(\s{0,8}[rRbBuUfF]{0,2}[\"'](?P<secret2>[A-Za-z0-9_-]{40,200})[\"']"
            rf"|{ASSIGN}[\"']?(?P<secret3>[A-Za-z0-9_-]{{40,200}}))"
        ),
        kind=Kind.VENDOR,
        window=700,
        min_entropy=3.0,
    ),
    Detector(
        id="dwave-leap-token",
        title="D-Wave Leap API token",
        anchor=rb"\b[A-Z]{2,4}-[0-9a-f]{40}",
        # "SHA-<40 hex>" is a digest label, not a Leap token.
        value=rx(r"(?!SHA-)(?P<secret>[A-Z]{2,4}-[0-9a-f]{40})(?![0-9A-Za-z])"),
        public_prefix=4,
        min_entropy=3.0,
        in_markup=False,  # no literal: hyperscan would run it over all of a drawing
    ),
    vendor("ionq-api-key", "IonQ API key", r"ionq", r"api[_-]?key|key|token", r"[A-Za-z0-9]", 20),
    vendor(
        "quantinuum-credential",
        "Quantinuum / Nexus password or token",
        r"quantinuum|qnexus|\bhqs|\bqnx",
        r"password|pwd|token|api[_-]?key|secret",
    ),
    vendor(
        "rigetti-qcs-token",
        "Rigetti QCS access or refresh token",
        r"\bqcs|rigetti|token_payload",
        r"refresh_token|access_token",
        r"[A-Za-z0-9._~+/=-]",
        20,
    ),
    vendor(
        "pasqal-credential",
        "Pasqal cloud password or token",
        r"pasqal",
        r"password|pwd|token|api[_-]?key",
    ),
    vendor("iqm-token", "IQM Resonance token", r"\biqm", r"token|api[_-]?key"),
    Detector(
        id="azure-quantum-connection-string",
        title="Azure Quantum workspace connection string (ApiKey=)",
        anchor=rb";ApiKey=",
        value=rx(r"(?i);ApiKey=(?P<secret>[A-Za-z0-9+/=_-]{20,200})"),
        kind=Kind.VENDOR,
        caseless=True,
        validate=literal_gate(3.0, 3.0),
    ),
)
