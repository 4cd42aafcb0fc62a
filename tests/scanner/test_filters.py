"""Filters must never let a real token through because of what it happens to contain."""

from __future__ import annotations

import pytest

from server_ext.scanner import rules
from server_ext.scanner.engine import Engine, SegmentKind

ENGINE = Engine([d for d in rules.ALL if d.id in rules.DEFAULT_IDS])


@pytest.mark.parametrize(
    "word", ["here", "your", "todo", "none", "null", "insert", "sample", "fake", "dummy"]
)
def test_placeholder_words_inside_a_format_token_do_not_hide_it(word):
    token = "ghp_" + ("Ab3" + word + "Zq9" * 12)[:36]
    found = ENGINE.scan_one(f"t = '{token}'".encode(), SegmentKind.CODE)
    assert [(f.detector, f.secret.decode()) for f in found] == [("github-token", token)]


@pytest.mark.parametrize(
    "value",
    [
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "ghp_************************************",
    ],
)
def test_documentation_markers_in_a_format_token_are_placeholders(value):
    assert ENGINE.scan_one(f"key = '{value}'".encode(), SegmentKind.CODE) == []


@pytest.mark.parametrize(
    "value",
    [
        "your_api_key_here",
        "<YOUR_TOKEN>",
        "changeme",
        "MY_IBM_QUANTUM_TOKEN",
        "env.DB2_PASSWORD",
        "cfg.S3_ACCESS_KEY",
    ],
)
def test_placeholder_words_in_assigned_values_are_not_findings(value):
    assert ENGINE.scan_one(f'api_key = "{value}"'.encode(), SegmentKind.CODE) == []


def test_digest_label_is_not_a_dwave_token():
    digest = "SHA-" + "0123456789abcdef" * 2 + "01234567"
    assert ENGINE.scan_one(f"checksum {digest}".encode()) == []


@pytest.mark.parametrize(
    "token",
    [
        "ghp_Xk29aQ7LmP0vB3nR5tY8Wq2ZXk29aQ7LmP0v",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJYazI5YVE3TG1QMHZCM25SIn0.Xk29aQ7LmP0vB3nR5tY8Wq2Z",
    ],
)
def test_a_token_between_escaped_quotes_is_inside_one_string(token):
    # The \" before the token does not close the string that opened at body = ".
    line = f'body = "{{\\"password\\": \\"{token}\\"}}"\n'
    found = ENGINE.scan_one(line.encode(), SegmentKind.CODE)
    assert [f.secret.decode() for f in found] == [token]


def test_a_value_between_two_strings_is_still_code():
    line = b'{passwordLabel:"Password:",usernameLabel:"Username:"}\n'
    assert ENGINE.scan_one(line, SegmentKind.CODE) == []
