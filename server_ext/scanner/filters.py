"""Yes/no filters that turn a regex match into "not a finding".

Each filter answers one question about a candidate and is listed in ``FILTERS``
under a stable name, so a report can say which filter let a value through and
tests can exercise each one in isolation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .entropy import has_digit_and_letter, is_hex, shannon, word_share

INLINE_PRAGMAS = (b"pragma: allowlist secret", b"gitleaks:allow")
NEXTLINE_PRAGMA = b"pragma: allowlist nextline secret"


@dataclass(frozen=True)
class Candidate:
    """A confirmed match waiting for the filters."""

    secret: bytes
    line: bytes
    previous_line: bytes
    quoted: bool
    #: The segment is program source, where an unquoted value is an expression.
    in_code: bool = False
    #: The value was found on the right of an assignment (keyword and vendor detectors),
    #: so it may be code rather than a literal; format detectors never set this.
    assigned: bool = False
    #: The value has a documented format of its own (``ghp_...``, ``AKIA...``).
    documented: bool = False
    #: ``line`` is a window that starts inside its line (a minified page's line is
    #: megabytes long): quotes counted from its start pair the right way about half the
    #: time.
    cut: bool = False


_TEMPLATE = re.compile(
    rb"^(?:<[^<>]*>|\$\{[^{}]*\}|\{\{.*\}\}|\{[A-Za-z_][A-Za-z0-9_]*\}|%\([^)]*\)s|"
    rb"\$[A-Za-z_][A-Za-z0-9_]*|%[A-Z_]+%|\[[A-Z_ ]+\])$"
)
_PLACEHOLDER_WORDS = re.compile(
    rb"(?i)(?:x{4,}|\*{3,}|\.{3,}|#{4,}|your[_-]?|my[_-]?(?:api|token|key|secret|pass)|"
    rb"insert|replace[_-]?me|changeme|change[_-]me|example|sample|dummy|placeholder|"
    rb"redacted|\bfake|\btodo\b|here\b|\bnone\b|\bnull\b|<[a-z_ -]+>|set[_-]?me|fill[_-]?in|"
    rb"^(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key)$|"
    # The NAME of a credential where its value belongs: token="MY_IBM_QUANTUM_TOKEN", also
    # read from somewhere (``password = env.PERKEEP_TEST_PASSWORD``).
    rb"(?-i:^(?:[a-z_][a-z0-9_]*\.)*[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_"
    rb"(?:TOKEN|KEY|SECRET|PASSWORD|PASSWD|PWD)$))"
)
_CODE_EXPRESSION = re.compile(
    rb"(?:os\.environ|os\.getenv|getenv\(|getpass|environ\[|secrets?\.(?:get|read)|"
    rb"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\(.*\)?|\[.*\]?)?$|"
    rb"^(?:true|false|none|null|nil|undefined)$)",
    re.IGNORECASE,
)

# Text in which every string that opens also closes: runs outside quotes, and quoted strings
# with their backslash escapes. Possessive, so an unclosed string costs one pass, not a
# backtracking search; the match stops at the quote that opens the unclosed string.
_CLOSED_STRINGS = re.compile(
    rb"""(?:[^"'`]++|"(?:[^"\\]++|\\.)*+"|'(?:[^'\\]++|\\.)*+'|`(?:[^`\\]++|\\.)*+`)*+""",
    re.DOTALL,
)


def has_pragma(c: Candidate) -> bool:
    """The line carries ``pragma: allowlist secret`` / ``gitleaks:allow`` (or the line above
    carries ``pragma: allowlist nextline secret``), the pragmas users know from
    detect-secrets and gitleaks."""
    return any(p in c.line for p in INLINE_PRAGMAS) or NEXTLINE_PRAGMA in c.previous_line


def is_templated(c: Candidate) -> bool:
    """``<YOUR_TOKEN>``, ``${TOKEN}``, ``{{ token }}``, ``%(token)s``, ``$TOKEN``."""
    return bool(_TEMPLATE.match(c.secret))


# In a value of a documented format only unmistakable markers count: a random 36-character
# token contains "here" or "todo" by chance about once in 2,500, and must not pass.
_FORMAT_PLACEHOLDER = re.compile(rb"EXAMPLE|[xX]{6,}|\*{4,}|\.{3,}|0{8,}")


def is_placeholder(c: Candidate) -> bool:
    """``xxxx``, ``****``, ``your_api_key``, ``changeme``, documentation examples
    (for a documented token format, only ``EXAMPLE``, runs of x, * or . and zeros)."""
    if not c.assigned:
        return bool(_FORMAT_PLACEHOLDER.search(c.secret))
    return bool(_PLACEHOLDER_WORDS.search(c.secret))


def _inside_string_literal(c: Candidate) -> bool:
    """The value starts inside a quoted string on its line (``"Bearer X"``, ``"...;ApiKey=X"``).

    Only the line is seen, so a triple-quoted block opened on an earlier line is not known."""
    end = c.line.find(c.secret)
    if end < 0:
        return False
    closed = _CLOSED_STRINGS.match(c.line, 0, end)
    return closed is not None and closed.end() < end


#: A run of digits with a letter after it: inside a name part (``yfi45upwc``), where
#: names seldom have digits; names put them at a part's end (``conv1_bn1``, ``layer4``).
_INNER_DIGITS = re.compile(rb"[0-9]+[A-Za-z]")


def _random_name(s: bytes) -> bool:
    """A bare word no one names a variable: letters and digits mixed at random, as in a
    ``.pypirc`` kept in a triple-quoted string (``password = bMgOhM9s1voFoufU3D0W``,
    ``token = Z1VuI6jJ_fwA4MxLF4sFz7d``). A lower-case token's letters form long
    pronounceable runs, so there the digits inside its parts tell (``f6ameo8gaperc4j4g``,
    not ``layer4`` or ``conv1_bn1``)."""
    if b"." in s:  # a token with a dot in it (``rh83qVzJ...Y8.LdWOFn1s...``)
        return any(_random_name(part) for part in s.split(b"."))
    if len(s) < 16 or not s.replace(b"_", b"").isalnum() or not has_digit_and_letter(s):
        return False
    # Hex has 16 symbols, so its entropy tops out lower (the hex gate elsewhere: 3.0).
    if shannon(s) < (3.0 if is_hex(s) else 3.5):
        return False
    inner = len(_INNER_DIGITS.findall(s))
    if inner >= 4 and inner * 12 >= len(s):
        return True
    if b"_" in s:
        # Names join parts with "_" (resnet50_fp16_bs64_lr3e4); a token that has one
        # changes case at random around it.
        return s.lower() != s and s.upper() != s and word_share(s) < 0.3
    return word_share(s) < 0.3


def is_code_expression(c: Candidate) -> bool:
    """An unquoted value that is code, not a literal: ``os.environ[...]``, ``getpass()``,
    ``settings.token``. Only in program source: in ``.env`` or YAML a bare word is a literal,
    and so is one inside a string (``"Bearer X"``, ``"Server=db;Password=X"``) or a random
    one (the line may sit in a triple-quoted string opened lines above)."""
    return (
        c.assigned
        and c.in_code
        and not c.quoted
        and bool(_CODE_EXPRESSION.search(c.secret))
        and not _inside_string_literal(c)
        and not _random_name(c.secret)
    )


# The value names what it stands for (a form label, a CSS selector, a message key):
# ``this.addPassword = "#add-password"``, ``passwordLabel: "Password:"``. Labels are words
# and separators; a value with a digit or other punctuation (``SuperSecret!2024x``,
# ``tokenA8fK2mQ9``) is a credential that happens to contain the word.
_NAMES_ITSELF = re.compile(rb"(?i)pass(?:word|wd|phrase)|secret|token|credential|api[_-]?key")
_LABEL = re.compile(rb"^[A-Za-z_ .#:/-]+$")
# A reference to where something is, not the thing: an AWS resource name, a CSS selector
# (words: ``#add-password``, ``.btn-primary``, not ``#Kx9fQ2mZ``), a file path, a URL without
# a password (``url-password`` looks inside URLs), a path below a variable
# (``FORGOT_PASSWORD=$BASE_URL/#/forgot_password``).
_REFERENCE = re.compile(
    rb"^(?:arn:(?:aws|aws-cn|aws-us-gov):|~?/[\w.-]+/|"
    rb"[A-Za-z][A-Za-z0-9+.-]{1,20}://[^@\s]*$|"
    # Only an environment variable's name: ``$Kx9/fQ2m...`` is a password that starts so.
    rb"\$(?:\{[A-Za-z_][A-Za-z0-9_]*\}|\([A-Za-z_][A-Za-z0-9_]*\)|[A-Z_][A-Z0-9_]{2,})/)"
)
_SELECTOR = re.compile(rb"^[#.][a-z]+(?:[A-Z][a-z0-9]*)*(?:[-_][A-Za-z0-9]+)*$")


def is_label_or_reference(c: Candidate) -> bool:
    """A value assigned to a secret-named variable that is a label, selector, resource name,
    path or URL: ``"#add-password"``, ``"Password:"``, ``"arn:aws:iam::aws:policy/..."``.
    Format detectors never ask: a documented token is a token whatever it contains."""
    if not c.assigned:
        return False
    s = c.secret
    if s.endswith(b":") or _REFERENCE.match(s) or _SELECTOR.match(s):
        return True
    return bool(_LABEL.match(s) and _NAMES_ITSELF.search(s))


_HEX_OR_DIGITS = re.compile(rb"^[0-9a-fA-F]+$")
_CUT_OFF = (b"...", "\u2026".encode())


#: An ellipsis after a longer value ends a sentence ("Logging in with token X..."): the
#: value is whole, so only a short one reads as cut off.
_CUT_OFF_MAX = 12


def is_fragment(c: Candidate) -> bool:
    """A truncated value, as logs and docs show them: at most 10 hex digits
    (``?token=dd852649``) or a short value followed by an ellipsis (``ghp_abc...``)."""
    if not c.assigned:
        return False
    if len(c.secret) <= 10 and _HEX_OR_DIGITS.match(c.secret):
        return True
    if len(c.secret) > _CUT_OFF_MAX:
        return False
    at = c.line.find(c.secret)
    return at >= 0 and c.line.startswith(_CUT_OFF, at + len(c.secret))


#: What code between two strings holds and a token does not: separators, brackets, blanks.
_CODE_BETWEEN = frozenset(b",;:(){}[] \t<>?|")


def _one_quoted_token(line: bytes, quote_at: int, value: bytes) -> bool:
    """``value``, which starts after the quote at ``quote_at``, is closed by the same quote
    and holds nothing of code between two strings: no separator, bracket or blank, and no
    ``+`` at either end (``"q8ZkP3vT9xLm2Rw..."``, not ``",usernameLabel:"`` nor
    ``"+n.accessToken+"``)."""
    end = quote_at + 1 + len(value)
    return (
        line[end : end + 1] == line[quote_at : quote_at + 1]
        and _CODE_BETWEEN.isdisjoint(value)
        and not (value.startswith(b"+") or value.endswith(b"+"))
    )


def closes_a_string(c: Candidate) -> bool:
    """The quote before a quoted value closes a string opened earlier on the line, so the
    "value" is the code between two strings: ``{passwordLabel:"Password:",user:"x"}``.
    Outside program source an apostrophe is mostly prose ("don't"), so it opens nothing.

    A quoted token of a documented format, or one named as a credential in a window of a
    long line (``Candidate.cut``), is the string it reads as: there the window's quotes
    pair the right way about half the time (a key in a minified page's config was left
    on disk as often as not), and a script's regex literals hold quotes too. A value
    only its entropy marks keeps the pairing (quoted hashes in bundled scripts)."""
    if not c.quoted:
        return False
    quote_at = c.line.find(c.secret) - 1
    if quote_at < 0:
        return False
    # An escaped quote (``\"``) closes nothing: the value is inside the string it is in,
    # as in ``body = "{\"password\": \"X\"}"``.
    backslashes = quote_at - len(c.line[:quote_at].rstrip(b"\\"))
    if backslashes % 2:
        return False
    if (c.documented or (c.cut and c.assigned)) and _one_quoted_token(c.line, quote_at, c.secret):
        return False
    closed = _CLOSED_STRINGS.match(c.line, 0, quote_at)
    if closed is None or closed.end() >= quote_at:
        return False
    opener = c.line[closed.end()]
    return opener == c.line[quote_at] and (c.in_code or opener != ord("'"))


def is_repetitive(c: Candidate) -> bool:
    """One character repeated, or runs like ``abcdef...``/``123456...``, also joined into an
    alphabet constant (``A..Za..z0..9+/``): at most one step in ten leaves the run."""
    s = c.secret
    if len(set(s)) <= 2:
        return True
    steps = [s[i + 1] - s[i] for i in range(len(s) - 1)]
    return max(steps.count(1), steps.count(-1)) * 10 >= len(steps) * 9


FILTERS: tuple[tuple[str, Callable[[Candidate], bool]], ...] = (
    ("pragma", has_pragma),
    ("templated", is_templated),
    ("placeholder", is_placeholder),
    ("code-expression", is_code_expression),
    ("label-or-reference", is_label_or_reference),
    ("fragment", is_fragment),
    ("between-strings", closes_a_string),
    ("repetitive", is_repetitive),
)


def filtered_by(c: Candidate) -> str | None:
    """The name of the first filter that lets ``c`` through, or None for a finding."""
    for name, check in FILTERS:
        if check(c):
            return name
    return None
