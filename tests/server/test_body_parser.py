"""The contents API's body parser (``parse_json_body``) reads every body as ``json.loads``
does: its fast reader (msgspec) only where it gives the very same values, ``json.loads``
for the rest, and a worded 400 for what neither reads."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest
from qtest import code_cell, notebook
from tornado import web

from server_ext.handlers import parse_json_body


def _same(a: object, b: object) -> bool:
    """Equal values of equal types, floats bit for bit (``-0.0``, NaN), keys in order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _reference(body: bytes) -> object:
    return json.loads(body.strip().decode("utf-8"))


def _number(rng: random.Random) -> str:
    sign = rng.choice(["", "-"])
    digits = "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 2, 15, 16, 17, 18,
                                                                              19, 20, 21, 40])))
    digits = digits.lstrip("0") or "0"
    form = rng.randrange(4)
    if form == 0:
        return sign + digits  # an integer, of any size
    if form == 1:
        return f"{sign}{digits}.{rng.randrange(10**rng.randrange(1, 20))}"
    exponent = rng.choice(["e", "E"]) + rng.choice(["", "+", "-"]) + str(rng.randrange(0, 330))
    if form == 2:
        return sign + digits + exponent
    return f"{sign}{digits}.{rng.randrange(10**6)}{exponent}"


_ESCAPES = ['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u00e9", "\\u0000",
            "\\ud83d\\ude00", "\\u2028"]


def _string(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randrange(12)):
        pick = rng.randrange(4)
        if pick == 0:
            parts.append(rng.choice(_ESCAPES))
        elif pick == 1:
            parts.append(chr(rng.choice([0xE9, 0x3C0, 0x4E2D, 0x1F600, 0x10FFFF])))
        else:
            parts.append("".join(rng.choice("abcXYZ019 _-+/=:") for _ in range(rng.randrange(9))))
    return '"' + "".join(parts) + '"'


def _value(rng: random.Random, depth: int = 0) -> str:
    pick = rng.randrange(8 if depth < 5 else 5)
    if pick == 0:
        return _number(rng)
    if pick == 1:
        return rng.choice(["true", "false", "null"])
    if pick in (2, 3, 4):
        return _string(rng)
    ws = rng.choice(["", " ", "\n ", "\t", "\r\n"])
    if pick == 5:
        return "[" + ws + ("," + ws).join(_value(rng, depth + 1) for _ in range(rng.randrange(5))) + "]"
    keys = [_string(rng) for _ in range(rng.randrange(4))]
    keys += rng.sample(keys, len(keys) // 2)  # repeated keys: the last value counts
    return "{" + ws + ",".join(f"{k}{ws}:{ws}{_value(rng, depth + 1)}" for k in keys) + "}"


def test_reads_random_json_as_json_loads_does():
    rng = random.Random(20261206)
    for _ in range(4000):
        body = (rng.choice(["", " ", "\n"]) + _value(rng) + rng.choice(["", " \n"])).encode()
        assert _same(parse_json_body(body), _reference(body)), body


def test_numbers_keep_their_type_and_value():
    # msgspec decides most of these; the rest fall back to json.loads. Either way, nothing
    # is rounded: an integer over 64 bits stays an int (orjson would give a float).
    rng = random.Random(7)
    bodies = [_number(rng).encode() for _ in range(20000)]
    bodies += [b"18446744073709551616", b"-9223372036854775809", b"1" * 400, b"-0", b"-0.0",
               b"5e-324", b"2.2250738585072011e-308", b"1.7976931348623157e308", b"1e400",
               b"-1e400", b"9007199254740993.0", b"123.456e-789",
               b"1.00000000000000011102230246251565404236316680908203125"]
    for body in bodies:
        assert _same(parse_json_body(body), _reference(body)), body


@pytest.mark.parametrize(
    "body",
    [
        b"NaN", b"[Infinity, -Infinity]", b'"\\ud800"', b'{"\\udc00": 1}', b"\x0b{}\x0c",
        b'{"a": 1, "a": 2, "b": 3, "a": 4}', b'"\\u0000"',
    ],
)
def test_what_the_fast_reader_refuses_is_read_by_json_loads(body):
    assert _same(parse_json_body(body), _reference(body))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"type": "notebook", "content": {', "Invalid JSON in body of request; nothing was saved."),
        (b"[1,]", "Invalid JSON in body of request; nothing was saved."),
        (b"\xef\xbb\xbf{}", "Invalid JSON in body of request; nothing was saved."),
        (b"[" * 100_000 + b"]" * 100_000, "Invalid JSON in body of request; nothing was saved."),
        (b'"\x01"', "Invalid JSON in body of request; nothing was saved."),
        (b'{"content": "\xff\xfe"}', "The request body is not UTF-8 text; nothing was saved."),
        (b'"\xed\xa0\x80"', "The request body is not UTF-8 text; nothing was saved."),
    ],
)
def test_what_neither_reads_is_a_worded_400(body, message):
    with pytest.raises(web.HTTPError) as refused:
        parse_json_body(body)
    assert refused.value.status_code == 400
    assert refused.value.log_message == message


def test_nesting_is_read_as_deep_as_json_loads_reads_it():
    value = parse_json_body(b"[" * 500 + b"]" * 500)
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    assert depth == 500


def test_empty_body_is_no_model():
    assert parse_json_body(b"") is None


async def test_a_saved_notebook_keeps_large_integers_and_nan(api, jp_root_dir):
    # Through the real server: what the request held is what the file holds.
    cell = code_cell("x = 1")
    cell["metadata"] = {"big": 123456789012345678901234567890, "tiny": 5e-324, "count": -0.0}
    code, _ = await api.save_notebook("numbers.ipynb", notebook(cell))
    assert code in (200, 201)
    saved = json.loads((jp_root_dir / "numbers.ipynb").read_text())
    metadata = saved["cells"][0]["metadata"]
    assert _same(metadata, {"big": 123456789012345678901234567890, "count": -0.0, "tiny": 5e-324})


def test_without_msgspec_json_loads_reads_every_body(monkeypatch):
    import server_ext.handlers as handlers

    monkeypatch.setattr(handlers, "_DECODER", None)
    assert handlers.body_reader() == "json"
    rng = random.Random(11)
    for _ in range(300):
        body = _value(rng).encode()
        assert _same(parse_json_body(body), _reference(body)), body
    with pytest.raises(web.HTTPError):
        parse_json_body(b"[1,]")


async def test_a_scan_of_a_model_nested_too_deep_is_a_400(api):
    # copy.deepcopy recurses about three frames a level: 700 levels parse, and do not copy
    pad = b"[" * 700 + b"]" * 700
    raw = b'{"path": "a.ipynb", "type": "file", "content": "x", "pad": ' + pad + b"}"
    code, body = await api.call("POST", "qustody", "api", "scan", raw=raw)
    assert code == 400
    assert body["message"] == "The model nests JSON too deep to check; nothing was scanned."
