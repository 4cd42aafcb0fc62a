"""Hard negatives: text that looks like a credential and is not one.

Placeholders, documentation values, truncated fragments, identifiers named after
passwords, resource names (ARNs, CRNs), hashes and ids. A guard that refuses a
notebook holding one of these teaches users to switch it off. Each is placed in a
code cell, a markdown cell and a stdout stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .placements import code, notebook, stream

#: (id, text). Written for this corpus; the kinds follow issue 13's list.
SNIPPETS: tuple[tuple[str, str], ...] = (
    ("placeholder-x", 'QISKIT_IBM_TOKEN = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"'),
    (
        "placeholder-angle",
        'service = QiskitRuntimeService(channel="ibm_quantum_platform", token="<your-token>")',
    ),
    ("placeholder-angle-env", "export IONQ_API_KEY=<your-ionq-api-key>"),
    ("placeholder-braces", 'api_key = "{API_KEY}"'),
    ("placeholder-dollar", "password: ${DB_PASSWORD}"),
    ("placeholder-your", 'DWAVE_API_TOKEN = "YOUR_DWAVE_TOKEN_HERE"'),
    ("placeholder-changeme", "POSTGRES_PASSWORD=changeme"),
    ("placeholder-stars", 'token = "****************************************"'),
    ("placeholder-dots", "ghp_... (a personal access token)"),
    ("example-aws", 'aws_access_key_id = "AKIAIOSFODNN7EXAMPLE"'),
    ("example-aws-secret", 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"'),
    ("example-url", "postgresql://user:password@localhost:5432/mydb"),
    (
        "example-url-placeholder",
        "mongodb+srv://<username>:<password>@cluster0.example.mongodb.net/",
    ),
    ("truncated-token-query", "GET /api/kernels?token=dd852649 200 OK"),
    ("truncated-fragment", "Your token starts with ghp_4f2a and ends with 9c1b."),
    ("truncated-jupyter-url", "http://127.0.0.1:8888/lab?token=3f9a...c2e7"),
    ("identifier-add-password", 'this.addPassword = "#add-password";'),
    (
        "identifier-password-label",
        'const labels = {passwordLabel:"Password:", userLabel:"User name:"};',
    ),
    ("identifier-password-field", 'password_field = "password_confirmation"'),
    ("identifier-token-type", 'token_type = "Bearer"'),
    ("identifier-secret-name", 'secret_name = "qlab-prod-db-credentials"'),
    ("identifier-tokenizer", 'tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")'),
    ("identifier-password-env", 'password = os.environ["DB_PASSWORD"]'),
    ("identifier-getpass", 'token = getpass.getpass("IBM Quantum token: ")'),
    (
        "identifier-kwarg",
        "service = QiskitRuntimeService(channel=channel, token=token, instance=instance)",
    ),
    ("arn-iam-policy", 'IAMUserChangePassword = "arn:aws:iam::aws:policy/IAMUserChangePassword"'),
    ("arn-braket-device", 'device = AwsDevice("arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1")'),
    (
        "arn-secretsmanager",
        "secret_arn = arn:aws:secretsmanager:us-east-1:123456789012:secret:qlab/ibm-token-AbCdEf",
    ),
    (
        "crn-ibm-instance",
        'instance = "crn:v1:bluemix:public:quantum-computing:us-east:a/1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d:7e8f9a0b-1c2d-3e4f-5a6b-7c8d9e0f1a2b::"',
    ),
    ("git-sha", "commit 3f786850e387550fdab836ed7e6dc881de23001b (HEAD -> main)"),
    ("sha256-digest", "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
    ("uuid-job-id", "Job id: 4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f  status: DONE"),
    ("ibm-job-id", "job_id = 'cw4r9k2sxpz00081gtn0'"),
    (
        "docker-image-digest",
        "image: jupyter/scipy-notebook@sha256:6f5a7e8c9d0b1a2f3e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69",
    ),
    (
        "pip-hash",
        "numpy==2.1.0 --hash=sha256:0f0d2b3c4a5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a",
    ),
    (
        "base64-figure-alt",
        'alt="iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="',
    ),
    (
        "latex",
        r"$$\langle \psi | H | \psi \rangle = \sum_{i} c_i \langle \phi_i | H | \phi_i \rangle$$",
    ),
    ("qasm", 'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; h q[0]; cx q[0], q[1];'),
    (
        "public-key",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc8YUxR7B4dIeG2kqJ3z1zV3k2QnN5lU8mA2p9fT0sW ada@qlab",
    ),
    (
        "pem-header-prose",
        "The file starts with -----BEGIN RSA PRIVATE KEY----- and must never be committed.",
    ),
    ("password-prose", "Enter your password: then press Enter to continue."),
    ("bearer-prose", "Send the token as Authorization: Bearer <token> on every request."),
    ("test-key-doc", 'stripe.api_key = "sk_test_EXAMPLE_EXAMPLE_EXAMPLE_EXAMP"'),
    ("version-string", 'qiskit_version = "qiskit-ibm-runtime==0.29.0+g3f2a1b4c"'),
)


@dataclass
class Negative:
    id: str
    placement: str
    path: str
    model: dict[str, Any]


def negatives() -> Iterator[Negative]:
    for nid, text in SNIPPETS:
        yield Negative(
            nid,
            "code-cell",
            "neg.ipynb",
            {"type": "notebook", "content": notebook([code(text + "\n")])},
        )
        yield Negative(
            nid,
            "markdown-cell",
            "neg.ipynb",
            {
                "type": "notebook",
                "content": notebook(
                    [{"cell_type": "markdown", "source": f"Note:\n\n    {text}\n"}]
                ),
            },
        )
        yield Negative(
            nid,
            "stdout-stream",
            "neg.ipynb",
            {"type": "notebook", "content": notebook([code("run()\n", [stream(text + "\n")])])},
        )
