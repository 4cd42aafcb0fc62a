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


def _minified(pairs: list[str], at: int, inserted: str) -> str:
    """One line of a page's inlined config: ``"name":"value"`` pairs, megabytes in real
    pages (plotly, folium), far longer than the window the filters read."""
    return "var cfg={" + ",".join([*pairs[:at], inserted, *pairs[at:]]) + "};"


_NAMES = ["color", "width", "onClick", "layout", "x"] * 120
_VALUES = ["#ff0", "a b", "10px", "it's", "?"] * 120
PAIRS = [f'"{n}_{i}":"{v}"' for i, (n, v) in enumerate(zip(_NAMES, _VALUES, strict=True))]


@pytest.mark.parametrize("at", range(0, 600, 23))
@pytest.mark.parametrize(
    "key",
    [
        "ghp_Xk29aQ7LmP0vB3nR5tY8Wq2ZXk29aQ7LmP0v",
        "AKIAZ7Q2L9XK4VB3NM5T",
        "AIzaSyXk29aQ7LmP0vB3nR5tY8Wq2ZXk29aQ7Lm",
    ],
)
def test_a_key_quoted_in_a_long_minified_line_is_found_wherever_it_sits(at, key):
    """The filters read a window of a long line; a key's quote is paired with the quotes
    of the line's real start, not of the window's (which left about half of them on disk
    as "code between two strings")."""
    line = _minified(PAIRS, at, f'"apiKey":"{key}"')
    assert len(line) > 2 * 4096
    found = ENGINE.scan_one(line.encode(), SegmentKind.TEXT)
    assert key.encode() in {f.secret for f in found}


@pytest.mark.parametrize("at", range(0, 600, 37))
@pytest.mark.parametrize(
    "pair",
    ['"apiKey":"q8ZkP3vT9xLm2RwY7nB4cJ6hF1sD5gA0"', '"password":"Kx9fQ2mZ7pLwRt5Yb8Vn"'],
)
def test_a_random_value_named_as_a_credential_in_a_long_minified_line_is_found(at, pair):
    """The same for a value only its name and its randomness tell: in a window whose
    quotes cannot be paired, a quoted value that holds nothing of code between two
    strings is the string it reads as."""
    line = _minified(PAIRS, at, pair)
    value = pair.split(":")[1].strip('"').encode()
    found = ENGINE.scan_one(line.encode(), SegmentKind.TEXT)
    assert value in {f.secret for f in found}


@pytest.mark.parametrize("at", range(0, 600, 61))
def test_a_value_between_two_strings_of_a_long_minified_line_is_still_code(at):
    """What the pairing is for holds in a long line too: a label between two strings."""
    line = _minified(PAIRS, at, 'passwordLabel:"Password:",usernameLabel:"Username:"')
    assert len(line) > 2 * 4096
    assert ENGINE.scan_one(line.encode(), SegmentKind.CODE) == []


@pytest.mark.parametrize(
    "line",
    [
        'cmd = "mysql --password=" + password + " -u root"\n',
        'cmd="mysql --password="+e.password+" -u root";\n',
        "cmd = 'mysql --password=' + db_pass + ' -u root'\n",
    ],
)
def test_a_password_flag_built_by_concatenation_is_code(line):
    """A documented shape whose value is any quoted text (``--password="..."``) is still
    paired: what sits between two strings there is code."""
    assert ENGINE.scan_one(line.encode(), SegmentKind.CODE) == []


@pytest.mark.parametrize("before", [4095, 4096, 4097, 9000])
def test_concatenation_after_a_credential_name_in_a_long_line_is_code(before):
    """``"token="+n.accessToken+"&x"`` deep in a minified line is code between two
    strings however the window falls, also when the line starts exactly where the window
    does (``before``: bytes of the line before the value, after a short first line)."""
    tail = 'q="token="+n.accessToken+"&x"'
    filler = ('a.b("x"),' * 2000)[: before - len('q="token="')]
    text = f"x=1\n{filler}{tail}\n"
    assert text.index("+n.access") - text.index("\n") - 1 == before
    for kind in (SegmentKind.CODE, SegmentKind.TEXT):
        assert ENGINE.scan_one(text.encode(), kind) == []
