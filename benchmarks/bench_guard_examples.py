"""The save guard on another scanner's documented examples (a held-out corpus).

    python benchmarks/bench_guard_examples.py --rules DIR [--misses]
    python benchmarks/bench_guard_examples.py --gitleaks FILE [--per-rule N] [--misses]

``DIR`` is a directory of rule files in the YAML layout Kingfisher and Nosey Parker use
(``rules: [{id, name, pattern, examples, negative_examples}]``), from a checkout of
either project; nothing of it is copied here. Issue 13's second held-out corpus was such
a scanner's documented examples. Each example is put in four places a notebook holds
text (a code cell, a Markdown cell, a stdout stream, an ``execute_result`` repr) and
saved through ``SaveGuard.check``:

- an example is protected when the save is refused or its secret (the rule's last
  capture group that is not a host name, else the whole example) is no longer in what
  would be written;
- a negative example is flagged when the save is refused or anything is redacted.

``--gitleaks FILE`` reads gitleaks' default configuration (``config/gitleaks.toml`` from a
checkout), whose rules document no examples: for each rule it draws ``--per-rule``
strings that the rule's regex matches (``rstr``, seeded), with a secret of at least the
rule's entropy and outside its allowlists, the way issue 13's first held-out corpus put
"every rule of gitleaks' default set" in notebooks. The secret is the rule's
``secretGroup`` (else its first non-empty group), written as code assigns it to a name
made of the rule's id (``ADAFRUIT_API_KEY = "..."``) where the rule matches that; else
the drawn string itself, its odd blanks (vertical tab, form feed) made spaces. A rule's
regex is looser than its format (any character where a ``.`` stands, any ``ey...`` for a
JWT), so some drawn secrets are not the credential they stand for.

Many documented examples are placeholders on purpose (``abcdef1234567890...``,
``123e4567-e89b-...``), which the guard leaves alone by design (issue 13: documentation
values are not credentials), so the figures are printed for all examples and for those
whose secret does not read as a placeholder (no alphabet or digit run, no repeated
character, no placeholder word).
"""

from __future__ import annotations

import argparse
import copy
import random
import re
import string
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import rstr
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server_ext.guard import SaveGuard, SaveRefused
from server_ext.scanner.entropy import shannon

_FLAG_GROUP = re.compile(r"\(\?([imsx]+)\)")
_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_PLACEHOLDER = re.compile(
    r"(?i)abcde|bcdef|12345|23456|34567|45678|56789|67890|01234|zyxw|wxyz|qwerty|xxxx|"
    r"your_|example|sample|dummy|fake|test|here|placeholder|changeme|(.)\1{4}"
)


#: A host name with its port (``localhost``, ``db.example.com:5432``): never the secret.
_HOST = re.compile(r"^(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::[0-9]+)?$")


def compile_rust(pattern: str) -> re.Pattern[str] | None:
    """A Rust-regex rule pattern as Python ``re``: its inline flag groups (``(?x)`` then
    ``(?i)`` on the next line) become compile flags; None when ``re`` cannot read it."""
    flags = 0
    for group in _FLAG_GROUP.findall(pattern):
        for f in group:
            flags |= _FLAGS[f]
    try:
        return re.compile(_FLAG_GROUP.sub("", pattern).replace(r"\z", r"\Z"), flags)
    except re.error:
        return None


def examples(rules_dir: Path) -> Iterator[tuple[str, str, str | None, bool]]:
    """(rule id, example, secret or None, negative?) for every example of every rule."""
    for path in sorted(rules_dir.rglob("*.y*ml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for rule in data.get("rules", []) if isinstance(data, dict) else []:
            rx = compile_rust(rule.get("pattern", ""))
            for text in rule.get("examples") or []:
                secret = None
                m = rx.search(text) if rx is not None else None
                if m is not None:
                    # The secret comes last (``user:password``, an id then its secret),
                    # but a URL rule may capture the host after the password.
                    groups = [g for g in m.groups() if g]
                    secrets = [g for g in groups if not _HOST.match(g)] or groups
                    secret = secrets[-1] if secrets else m.group(0)
                yield rule["id"], text, secret, False
            for text in rule.get("negative_examples") or []:
                yield rule["id"], text, None, True


def gitleaks_examples(
    config: Path, per_rule: int, seed: int = 13
) -> Iterator[tuple[str, str, str | None, bool]]:
    """(rule id, generated text, its secret, False) for every rule of a gitleaks config
    that Python's ``re`` reads; a rule whose matches all fall under its entropy floor or
    allowlists in 40 tries per example gives fewer."""
    rules = tomllib.loads(config.read_text(encoding="utf-8")).get("rules", [])
    draw = _SortedRstr(random.Random(seed))
    for rule in rules:
        rx = compile_rust(rule.get("regex", ""))
        if rx is None:
            continue
        allow = _allowlist(rule)
        made = 0
        for _ in range(per_rule * 40):
            if made == per_rule:
                break
            try:
                text = draw.xeger(rx.pattern)
            except (ValueError, IndexError, OverflowError):
                break  # a construct rstr cannot draw from
            m = rx.search(text)
            if m is None:
                continue
            group = rule.get("secretGroup")
            if group is None:
                group = next((i for i, g in enumerate(m.groups(), 1) if g), 0)
            secret = m.group(group)
            if not secret or shannon(secret.encode()) < rule.get("entropy", 0) or allow(secret):
                continue
            if secret != secret.translate(_ODD_BLANKS):
                continue  # the text's odd blanks are made spaces below; the secret's too
            name = re.sub(r"\W", "_", rule["id"]).upper()
            assigned = f'{name} = "{secret}"'
            again = rx.search(assigned)
            if again is not None and secret in again.group(0):
                text = assigned
            else:
                text = text.translate(_ODD_BLANKS)
            made += 1
            yield rule["id"], text, secret, False


class _SortedRstr(rstr.Rstr):  # type: ignore[misc]
    """rstr draws a negated class (``[^"']``) from a set's order, which changes with
    Python's hash seed; sorted, the same seed draws the same corpus in every run."""

    def _handle_in(self, value: Any) -> Any:
        candidates = list(chain(*(self._handle_state(i) for i in value)))
        if candidates[0] is False:
            candidates = sorted(set(string.printable).difference(candidates[1:]))
        return self._random.choice(candidates)


_ODD_BLANKS = str.maketrans("\x0b\x0c\r", "   ")


def _allowlist(rule: dict[str, Any]) -> Any:
    """Whether a rule's own allowlists (regexes on the secret, stopwords) let a value go."""
    regexes, words = [], []
    for entry in rule.get("allowlists", []):
        if entry.get("regexTarget", "secret") == "secret":
            regexes += [r for r in map(compile_rust, entry.get("regexes", [])) if r]
        words += [w.lower() for w in entry.get("stopwords", [])]

    def allowed(secret: str) -> bool:
        low = secret.lower()
        return any(r.search(secret) for r in regexes) or any(w in low for w in words)

    return allowed


def cells(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    base = {"id": "c1", "metadata": {}}
    yield "code cell", {**base, "cell_type": "code", "source": text, "outputs": [],
                        "execution_count": 1}
    yield "markdown cell", {**base, "cell_type": "markdown", "source": text}
    yield "stdout stream", {
        **base, "cell_type": "code", "source": "run()", "execution_count": 1,
        "outputs": [{"output_type": "stream", "name": "stdout", "text": text + "\n"}],
    }
    yield "execute_result", {
        **base, "cell_type": "code", "source": "value", "execution_count": 1,
        "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                     "data": {"text/plain": repr(text)}}],
    }  # fmt: skip


def saved(guard: SaveGuard, cell: dict[str, Any]) -> tuple[bool, list[str], bool]:
    """(refused, the strings that would be written, anything redacted or found)."""
    model = {"type": "notebook", "content": {"nbformat": 4, "nbformat_minor": 5,
                                             "metadata": {}, "cells": [copy.deepcopy(cell)]}}
    try:
        report = guard.check(model, "bench.ipynb")
    except SaveRefused:
        return True, [], True
    touched = report is not None and bool(report.findings or report.redacted)
    return False, list(strings(model["content"])), touched


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        yield "".join(v for v in value if isinstance(v, str))  # a multi-line string
        for v in value:
            yield from strings(v)


def leaked(secret: str, written: list[str]) -> bool:
    """The secret is in a written string as it is, or as the repr of a string shows it."""
    forms = (secret, repr(secret)[1:-1])
    return any(form in text for text in written for form in forms)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--rules", type=Path, help="directory of YAML rule files")
    source.add_argument("--gitleaks", type=Path, help="gitleaks.toml (rules without examples)")
    p.add_argument("--per-rule", type=int, default=5, help="strings drawn per gitleaks rule")
    p.add_argument("--misses", action="store_true", help="list what each placement misses")
    args = p.parse_args()
    guard = SaveGuard()
    protected: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    flagged: Counter[str] = Counter()
    negatives = 0
    uncaptured = 0  # examples the rule's own pattern does not match in Python's re
    misses: list[tuple[str, str, str]] = []
    if args.rules is not None:
        found = list(examples(args.rules))
        origin = str(args.rules)
    else:
        found = list(gitleaks_examples(args.gitleaks, args.per_rule))
        origin = f"the rules of {args.gitleaks} ({args.per_rule} drawn per rule)"
    if not found:
        raise SystemExit(f"no rule examples in {args.rules or args.gitleaks}")
    for rule, text, secret, negative in found:
        negatives += negative
        uncaptured += not negative and secret is None
        needle = secret or text
        subset = "all" if _PLACEHOLDER.search(needle) else "not placeholders"
        for place, cell in cells(text):
            refused, written, touched = saved(guard, cell)
            if negative:
                flagged[place] += touched
                continue
            ok = refused or not leaked(needle, written)
            for group in ("all", subset) if subset != "all" else ("all",):
                total[(place, group)] += 1
                protected[(place, group)] += ok
            if not ok:
                misses.append((place, rule, text))
    print(f"{len(found) - negatives} examples and {negatives} negative examples "
          f"from {origin}; {uncaptured} examples whose rule Python's re cannot run "
          "are checked for their whole text")
    print(f"{'placement':16} {'all':>18} {'not placeholders':>22} {'negatives flagged':>19}")
    for place, _ in cells(""):
        a = protected[(place, "all")], total[(place, "all")]
        r = protected[(place, "not placeholders")], total[(place, "not placeholders")]
        print(f"{place:16} {a[0]:5}/{a[1]:<5} {a[0] / max(a[1], 1):6.1%}"
              f"   {r[0]:5}/{r[1]:<5} {r[0] / max(r[1], 1):6.1%}"
              f"   {flagged[place]:6}/{negatives}")
    if args.misses:
        for place, rule, text in misses:
            print(f"  miss {place}: {rule}: {text[:100]!r}")


if __name__ == "__main__":
    main()
