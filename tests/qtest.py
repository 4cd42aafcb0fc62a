"""Test helpers: fake credentials and notebook builders.

Credentials are generated, never real: each has the documented shape of its
provider so the detectors find it, and a deterministic random body.
"""

from __future__ import annotations

import random
import string


def fake(
    prefix: str, length: int, alphabet: str = string.ascii_letters + string.digits, seed: int = 7
) -> str:
    rng = random.Random(f"{prefix}{length}{seed}")
    return prefix + "".join(rng.choice(alphabet) for _ in range(length))


GITHUB_TOKEN = fake("ghp_", 36)
AWS_KEY_ID = fake("AKIA", 16, string.ascii_uppercase + string.digits)
IBM_QUANTUM_TOKEN = fake("", 128, "0123456789abcdef")


def code_cell(source: str, outputs: list[dict] | None = None, cell_id: str = "c0") -> dict:
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": {},
        "source": source,
        "execution_count": 1 if outputs else None,
        "outputs": outputs or [],
    }


def markdown_cell(source: str, cell_id: str = "m0") -> dict:
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": source}


def notebook(*cells: dict, metadata: dict | None = None) -> dict:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": metadata
        or {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": list(cells),
    }


def stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def execute_result(data: dict) -> dict:
    return {"output_type": "execute_result", "execution_count": 1, "data": data, "metadata": {}}
