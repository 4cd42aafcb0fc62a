"""Checks on a submission before it reaches policy: format, size and shape.

Every refusal is an ``Invalid`` with an HTTP status and a message naming the limit and
its value. QPY payloads are checked in two steps: the file and circuit headers are read
with ``struct`` first (so a payload claiming 10^9 qubits or instructions is refused
before Qiskit allocates anything), then the circuit is loaded and measured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qiskit import QuantumCircuit, qasm3, qpy  # type: ignore[import-untyped]
from qiskit.exceptions import ExperimentalWarning  # type: ignore[import-untyped]
from qiskit.qpy import formats  # type: ignore[import-untyped]
from qiskit.qpy.common import QPY_COMPATIBILITY_VERSION, QPY_VERSION  # type: ignore[import-untyped]

from .errors import Invalid

# Keys the gateway sets itself; a client sending them is ignored (and told so).
RESERVED_TAGS = frozenset({"owner", "user", "server", "time", "submitted_at", "circuit_hashes"})
TAG_KEYS = frozenset({"project", "purpose", "sensitivity", "labels", "priority"})
#: Longest project, purpose, sensitivity or priority name a submission may give: the
#: policy's names are short, and a refusal quotes what was sent back to the user and
#: into its audit record.
MAX_TAG_LENGTH = 128
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
BODY_KEYS = frozenset({"backend", "circuits", "shots", "options", "tags", "client", "context"})
OPTION_KEYS = frozenset({"seed_simulator", "memory", "transpile_seed"})
CONTEXT_KEYS = frozenset({"notebook_path", "notebook_hash", "kernel_id", "server_name"})
MAX_CONTEXT_VALUE = 1024


def _quiet_loaders() -> None:
    """Silence the loaders' warnings (a payload written by a newer Qiskit, OpenQASM 3
    being experimental) once for the process. ``warnings.catch_warnings`` around each
    call would swap the process-wide filters, which is unsafe from several threads and
    used to need a global lock that the event loop then waited on behind a large
    payload decoded in a thread."""
    warnings.filterwarnings("ignore", module=r"qiskit\.qpy(\.|$)")
    warnings.filterwarnings("ignore", module=re.escape(__name__) + "$")
    warnings.filterwarnings("ignore", category=ExperimentalWarning)


_quiet_loaders()


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int
    max_circuits: int
    max_qubits: int
    max_depth: int
    max_instructions: int
    max_shots: int


@dataclass
class Submission:
    backend: str
    circuits: list[QuantumCircuit]
    raw: list[dict[str, str]]
    hashes: list[str]
    shots: int
    options: dict[str, Any]
    tags: dict[str, Any]
    ignored: list[str] = field(default_factory=list)
    client: dict[str, str] = field(default_factory=dict)
    context: dict[str, str] = field(default_factory=dict)

    @property
    def total_shots(self) -> int:
        return self.shots * len(self.circuits)


def _bad(code: str, message: str, status: int = 422) -> Invalid:
    return Invalid(status, code, message)


def check_qpy_header(data: bytes, limits: Limits) -> None:
    """Refuse a QPY payload whose headers exceed the limits, without loading it."""
    try:
        head = formats.FILE_HEADER_V10._make(
            struct.unpack_from(formats.FILE_HEADER_V10_PACK, data, 0)
        )
    except struct.error:
        raise _bad("MALFORMED_QPY", "malformed QPY: shorter than a QPY file header") from None
    if head.preface != b"QISKIT":
        raise _bad("MALFORMED_QPY", "malformed QPY: the payload does not start with 'QISKIT'")
    if not QPY_COMPATIBILITY_VERSION <= head.qpy_version <= QPY_VERSION:
        raise _bad(
            "QPY_VERSION",
            f"QPY version {head.qpy_version} is not accepted; accepted versions are "
            f"{QPY_COMPATIBILITY_VERSION} to {QPY_VERSION} (qpy.dump(..., version=N))",
        )
    if head.num_programs != 1:
        raise _bad(
            "MALFORMED_QPY",
            f"each QPY payload must hold exactly 1 circuit, this one claims {head.num_programs}",
        )
    offset = formats.FILE_HEADER_V10_SIZE + 1  # the program type key
    try:
        if data[offset - 1 : offset] != b"q":
            raise _bad("MALFORMED_QPY", "malformed QPY: the program is not a circuit")
        if head.qpy_version >= 16:
            (offset,) = struct.unpack_from(formats.CIRCUIT_TABLE_ENTRY_PACK, data, offset)
        header = formats.CIRCUIT_HEADER_V12._make(
            struct.unpack_from(formats.CIRCUIT_HEADER_V12_PACK, data, offset)
        )
    except struct.error:
        raise _bad("MALFORMED_QPY", "malformed QPY: truncated circuit header") from None
    if header.num_qubits > limits.max_qubits:
        raise _bad(
            "TOO_MANY_QUBITS",
            f"a circuit has {header.num_qubits} qubits; the limit is {limits.max_qubits}",
        )
    if header.num_clbits > 4 * limits.max_qubits + 64:
        raise _bad(
            "TOO_MANY_CLBITS",
            f"a circuit has {header.num_clbits} classical bits; the limit is "
            f"{4 * limits.max_qubits + 64}",
        )
    if header.num_instructions > limits.max_instructions:
        raise _bad(
            "TOO_MANY_INSTRUCTIONS",
            f"a circuit has {header.num_instructions} instructions; the limit is "
            f"{limits.max_instructions}",
        )
    if header.metadata_size + header.name_size > len(data):
        raise _bad("MALFORMED_QPY", "malformed QPY: a header claims more bytes than were sent")


def load_qpy(data: bytes, limits: Limits) -> QuantumCircuit:
    check_qpy_header(data, limits)
    try:
        circuits = qpy.load(io.BytesIO(data))
    except Exception as e:  # qpy raises many types on hostile input
        raise _bad("MALFORMED_QPY", f"malformed QPY: {type(e).__name__}") from None
    if len(circuits) != 1 or not isinstance(circuits[0], QuantumCircuit):
        raise _bad("MALFORMED_QPY", "each QPY payload must hold exactly one circuit")
    return circuits[0]


#: Comments, which may sit anywhere between tokens (``qubit/**/[9]``).
_QASM_COMMENT = re.compile(r"//[^\n]*|/\*.*?(?:\*/|\Z)", re.S)
#: Every ``qubit``/``bit`` type (``qubit[N] q``, ``bit[N] c = "…"``, ``input bit[N] c``;
#: a plain ``qubit q`` is one qubit) and the OpenQASM 2 ``qreg q[N]``/``creg c[N]``,
#: whatever follows and whatever the letters of its name (Greek ones too) are:
#: counting a keyword the program uses otherwise (a subroutine's ``qubit`` parameter)
#: only over-counts by one.
_QASM_REGISTER = re.compile(
    r"\b(?:(qubit|bit)\b\s*(?:\[([^\]]*)\])?"
    r"|(qreg|creg)\s+[^\W\d]\w*\s*(?:\[([^\]]*)\])?)"
)
_DECIMAL = re.compile(r"[0-9][0-9_]*")


def check_qasm3_registers(text: str, limits: Limits) -> None:
    """Refuse registers beyond the limits before the importer builds them: it allocates a
    circuit's qubits and bits first, so ``qubit[100000000] q;`` (30 bytes) would take
    gigabytes before the qubit limit is checked on the circuit. A register size must be a
    decimal number (the importer cannot evaluate an expression there either)."""
    qubits = bits = 0
    for m in _QASM_REGISTER.finditer(_QASM_COMMENT.sub(" ", text)):
        kind = m.group(1) or m.group(3)
        size_text = m.group(2) if m.group(1) else m.group(4)
        if size_text is None:
            size = 1
        elif _DECIMAL.fullmatch(size_text.strip()):
            size = int(size_text.strip().replace("_", ""))
        else:
            raise _bad("MALFORMED_QASM3", f"invalid OpenQASM 3: the size of a {kind} register "
                       f"must be a decimal number, not {size_text.strip()[:40]!r}")
        if kind in ("qubit", "qreg"):
            qubits += size
        else:
            bits += size
        if qubits > limits.max_qubits:
            raise _bad("TOO_MANY_QUBITS", f"the circuit declares more than {limits.max_qubits} "
                       f"qubits; the limit is {limits.max_qubits}")
        if bits > limits.max_instructions:
            raise _bad("TOO_MANY_INSTRUCTIONS",
                       f"the circuit declares more than {limits.max_instructions} bits, more "
                       f"than its instruction limit ({limits.max_instructions}) can use")


def load_qasm3(text: str, limits: Limits) -> QuantumCircuit:
    check_qasm3_registers(text, limits)
    try:
        circuit: QuantumCircuit = qasm3.loads_experimental(text)
        return circuit
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # a Rust panic in the importer is a BaseException
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise _bad("MALFORMED_QASM3", f"invalid OpenQASM 3: {first}") from None


def _int(value: Any, name: str, low: int, high: int, code: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad("BAD_FIELD", f"{name} must be an integer", 400)
    if value < low or value > high:
        raise _bad(code, f"{name} = {value} is outside the allowed range {low}..{high}")
    return value


def _strings(value: Any, name: str, keys: frozenset[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad("BAD_FIELD", f"{name} must be an object", 400)
    unknown = sorted(set(value) - keys)
    if unknown:
        raise _bad("BAD_FIELD", f"{name}: unknown keys {unknown}; allowed: {sorted(keys)}", 400)
    out = {}
    for k, v in value.items():
        if not isinstance(v, str) or len(v) > MAX_CONTEXT_VALUE:
            raise _bad("BAD_FIELD", f"{name}.{k} must be a string of at most 1024 characters", 400)
        out[k] = v
    return out


def parse_submission(body: Mapping[str, Any], limits: Limits, backend_shots: int) -> Submission:
    """Check a decoded JSON submission. ``backend_shots`` is the backend's shot limit."""
    unknown = sorted(set(body) - BODY_KEYS - {"owner"})
    if unknown:
        raise _bad("BAD_FIELD", f"unknown fields {unknown}; allowed: {sorted(BODY_KEYS)}", 400)
    ignored = ["owner"] if "owner" in body else []
    backend = body.get("backend")
    if not isinstance(backend, str) or not backend:
        raise _bad("BAD_FIELD", "backend must be a name (GET /api/backends lists them)", 400)

    circuits_in = body.get("circuits")
    if not isinstance(circuits_in, list) or not circuits_in:
        raise _bad("BAD_FIELD", "circuits must be a non-empty list", 400)
    if len(circuits_in) > limits.max_circuits:
        raise _bad(
            "TOO_MANY_CIRCUITS",
            f"the job has {len(circuits_in)} circuits; the limit is {limits.max_circuits} "
            "per job (split it into several jobs)",
        )
    shot_cap = min(limits.max_shots, backend_shots)
    shots = _int(body.get("shots", 1024), "shots", 1, shot_cap, "TOO_MANY_SHOTS")

    circuits: list[QuantumCircuit] = []
    raw: list[dict[str, str]] = []
    hashes: list[str] = []
    for i, item in enumerate(circuits_in):
        if not isinstance(item, dict) or len(item) != 1 or not ({"qpy", "qasm3"} & set(item)):
            raise _bad("BAD_FIELD", f"circuits[{i}] must be {{'qpy': base64}} or {{'qasm3': text}}",
                       400)
        if "qpy" in item:
            if not isinstance(item["qpy"], str):
                raise _bad("MALFORMED_QPY", f"circuits[{i}].qpy must be a base64 string")
            try:
                data = base64.b64decode(item["qpy"], validate=True)
            except (binascii.Error, ValueError):
                raise _bad("MALFORMED_QPY", f"circuits[{i}].qpy is not valid base64") from None
            circuit = load_qpy(data, limits)
            hashes.append(hashlib.sha256(data).hexdigest())
            raw.append({"qpy": item["qpy"]})
        else:
            text = item["qasm3"]
            if not isinstance(text, str):
                raise _bad("MALFORMED_QASM3", f"circuits[{i}].qasm3 must be a string")
            circuit = load_qasm3(text, limits)
            hashes.append(hashlib.sha256(text.encode()).hexdigest())
            raw.append({"qasm3": text})
        if circuit.num_qubits > limits.max_qubits:
            raise _bad(
                "TOO_MANY_QUBITS",
                f"circuits[{i}] has {circuit.num_qubits} qubits; the limit is {limits.max_qubits}",
            )
        if len(circuit.data) > limits.max_instructions:
            raise _bad(
                "TOO_MANY_INSTRUCTIONS",
                f"circuits[{i}] has {len(circuit.data)} instructions; the limit is "
                f"{limits.max_instructions}",
            )
        # depth <= instruction count: only a long circuit can be too deep (depth() walks
        # the whole circuit, a tenth of a millisecond even for a Bell pair)
        depth = circuit.depth() if len(circuit.data) > limits.max_depth else 0
        if depth > limits.max_depth:
            raise _bad(
                "TOO_DEEP",
                f"circuits[{i}] has depth {depth}; the limit is {limits.max_depth}",
            )
        circuits.append(circuit)

    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise _bad("BAD_FIELD", "options must be an object", 400)
    bad_opts = sorted(set(options) - OPTION_KEYS)
    if bad_opts:
        raise _bad("BAD_OPTION", f"unsupported run options {bad_opts}; supported: "
                   f"{sorted(OPTION_KEYS)}", 400)
    clean_opts: dict[str, Any] = {}
    for key in ("seed_simulator", "transpile_seed"):
        if options.get(key) is not None:
            clean_opts[key] = _int(options[key], f"options.{key}", 0, 2**63 - 1, "BAD_OPTION")
    if "memory" in options:
        if not isinstance(options["memory"], bool):
            raise _bad("BAD_OPTION", "options.memory must be true or false", 400)
        clean_opts["memory"] = options["memory"]

    tags_in = body.get("tags") or {}
    if not isinstance(tags_in, dict):
        raise _bad("BAD_FIELD", "tags must be an object", 400)
    tags: dict[str, Any] = {}
    for key, value in tags_in.items():
        if key in RESERVED_TAGS:
            ignored.append(f"tags.{key}")
            continue
        if key not in TAG_KEYS:
            raise _bad(
                "BAD_TAG",
                f"unknown tag {key!r}; tags are {sorted(TAG_KEYS)} (put anything else in labels)",
                400,
            )
        if key == "labels":
            if not isinstance(value, dict):
                raise _bad("BAD_TAG", "tags.labels must be an object of strings", 400)
            tags["labels"] = dict(value)
        else:
            if not isinstance(value, str) or not value or len(value) > MAX_TAG_LENGTH:
                raise _bad("BAD_TAG", f"tags.{key} must be a non-empty string of at most "
                           f"{MAX_TAG_LENGTH} characters", 400)
            if _CONTROL.search(value):  # they reach messages, audit records and pages
                raise _bad("BAD_TAG", f"tags.{key} must not hold control characters "
                           "(newlines, tabs, escapes)", 400)
            tags[key] = value

    return Submission(
        backend=backend,
        circuits=circuits,
        raw=raw,
        hashes=hashes,
        shots=shots,
        options=clean_opts,
        tags=tags,
        ignored=ignored,
        client=_client(body.get("client")),
        context=_strings(body.get("context"), "context", CONTEXT_KEYS),
    )


def _client(value: Any) -> dict[str, str]:
    """Client-reported SDK versions: kept as reported, bounded, never trusted for policy."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 16:
        raise _bad("BAD_FIELD", "client must be an object of at most 16 name: version pairs", 400)
    out = {}
    for k, v in value.items():
        if not (isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 64):
            raise _bad("BAD_FIELD", "client entries must be short strings (name: version)", 400)
        out[k] = v
    return out


def check_labels(labels: Mapping[str, Any], max_labels: int, max_length: int) -> dict[str, str]:
    if len(labels) > max_labels:
        raise _bad("BAD_TAG", f"{len(labels)} labels; the limit is {max_labels}", 400)
    out = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not LABEL_KEY.fullmatch(k):
            raise _bad("BAD_TAG", f"label key {k[:64]!r} must match {LABEL_KEY.pattern}", 400)
        if not isinstance(v, str) or len(v) > max_length:
            raise _bad("BAD_TAG", f"label {k!r} must be a string of at most {max_length} "
                       "characters", 400)
        if _CONTROL.search(v):  # they reach audit records and the pages that show them
            raise _bad("BAD_TAG", f"label {k!r} must not hold control characters (newlines, "
                       "tabs, escapes)", 400)
        out[k] = v
    return out
