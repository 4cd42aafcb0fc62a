"""The record format: HMAC-SHA256 exactly as the standard library computes it, and a frame
that verification reads by position."""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import pytest

from hub_ext.audit import chain
from hub_ext.audit.keys import key_id


@pytest.mark.parametrize("key_length", [32, 63, 64, 65, 200])
@pytest.mark.parametrize("message_length", [0, 1, 55, 64, 400, 5000])
def test_mac_is_standard_hmac_sha256(key_length, message_length):
    key, message = os.urandom(key_length), os.urandom(message_length)
    assert chain.Sealer(key).mac(message) == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_sealed_record_parses_back_and_checks():
    key = os.urandom(32)
    sealer = chain.Sealer(key)
    line = sealer.seal_record(
        41,
        "ab" * 32,
        "2025-03-01T12:00:00.000000Z",
        "login",
        1,
        "hub",
        '{"user":"a"}',
        ',"redacted":[]',
    )
    record = json.loads(line)
    assert list(record) == [
        "seq",
        "prev",
        "ts",
        "type",
        "v",
        "origin",
        "data",
        "redacted",
        "kid",
        "mac",
    ]
    parsed = chain.parse(line)
    assert (parsed.seq, parsed.prev, parsed.kid) == (41, b"ab" * 32, key_id(key))
    assert sealer.check(parsed.body, parsed.mac)
    assert (
        parsed.body
        == json.dumps(
            {k: v for k, v in record.items() if k != "mac"}, separators=(",", ":")
        ).encode()
    )
    assert not chain.Sealer(os.urandom(32)).check(parsed.body, parsed.mac)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json at all",
        b'{"seq":x,"prev":"'
        + b"0" * 64
        + b'","kid":"'
        + b"0" * 16
        + b'","mac":"'
        + b"0" * 64
        + b'"}',
        b'{"seq":01,"prev":"'
        + b"0" * 64
        + b'","kid":"'
        + b"0" * 16
        + b'","mac":"'
        + b"0" * 64
        + b'"}',
        b'{"seq":1,"prev":"'
        + b"0" * 64
        + b'","kid":"'
        + b"0" * 16
        + b'","mac":"'
        + b"0" * 63
        + b'"}',
        b'{"seq":1,"pre":"'
        + b"0" * 64
        + b'","kid":"'
        + b"0" * 16
        + b'","mac":"'
        + b"0" * 64
        + b'"}',
    ],
)
def test_malformed_frames_are_refused(line):
    with pytest.raises(chain.Malformed):
        chain.parse(line)


def test_key_id_names_a_key_without_revealing_it():
    a, b = os.urandom(32), os.urandom(32)
    assert key_id(a) == key_id(a) != key_id(b)
    assert len(key_id(a)) == 16 and key_id(a) not in a.hex()


def test_documents_are_sealed_like_records():
    sealer = chain.Sealer(os.urandom(32))
    text = sealer.seal_document('"seq":3,"hash":"x"').encode()
    body = chain.open_document(text, {sealer.kid: sealer})
    assert json.loads(body) == {"seq": 3, "hash": "x", "kid": sealer.kid}
    with pytest.raises(chain.Malformed, match="edited"):
        chain.open_document(text.replace(b'"seq":3', b'"seq":4'), {sealer.kid: sealer})
    with pytest.raises(chain.Malformed, match="wrong key file"):
        chain.open_document(text, {})
