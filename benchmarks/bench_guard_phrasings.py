"""Recall of the save guard over more samples and more ways an output shows a credential.

    python benchmarks/bench_guard_phrasings.py [--variants 5]

``bench_guard_corpus.py`` places one sample of each format in ten placements, printed one
way (``connecting with credential X``). Held-out corpora print them in many ways, so this
script measures, on the same formats (``benchmarks/guard_corpus``):

- the ten placements with ``--variants`` random samples of each format instead of one;
- a stdout stream with other wordings (``Using token: X``, ``INFO ... key X``, a dict or
  JSON line, ``Authorization: Bearer X``, a Markdown table with a key column, a pandas
  Series, a URL query, ...);
- ``interleaved``: a value printed across two stdout chunks with a stderr warning between.

A case is protected when the save is refused or no needle (the value, or either half of a
split value) is left in what would be written, as in ``bench_guard_corpus.py``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.guard_corpus import FORMATS, PLACEMENTS
from benchmarks.guard_corpus.formats import Format, Sample
from benchmarks.guard_corpus.placements import Case, build, code, leaked, notebook, stream
from server_ext.guard import SaveGuard, SaveRefused

#: How a program prints a credential to stdout ({v}: the value, {name}: its variable).
PHRASINGS = {
    "token-colon": "Using token: {v}\n",
    "api-key-equals": "api key = {v}\n",
    "secret-is": "Your secret is {v}, keep it safe.\n",
    "log-line": "INFO:qlab:authenticated with key {v}\n",
    "bearer-header": "Authorization: Bearer {v}\n",
    "password-equals": "password={v}\n",
    "env-line": "{name}={v}\n",
    "dict-repr": "{{'api_key': '{v}', 'region': 'eu-de'}}\n",
    "json-line": '{{"token": "{v}", "expires": 3600}}\n',
    "markdown-table": "| service | key |\n|---|---|\n| qlab | {v} |\n",
    "series-padded": "service                  qlab\napi_key                  {v}\nName: 0, dtype: object\n",
    "url-query": "GET https://api.qlab.org/v1/jobs?api_key={v}&limit=10\n",
}


def protected(guard: SaveGuard, case: Case) -> bool:
    model = copy.deepcopy(case.model)
    try:
        guard.check(model, case.path)
    except SaveRefused:
        return True
    return not leaked(case, model["content"])


def stdout_case(f: Format, sample: Sample, placement: str, outputs: list[dict[str, Any]]) -> Case:
    secret = sample.secrets[0]
    needles = [*sample.secrets]
    if placement == "interleaved":
        needles += [secret[: len(secret) // 2], secret[len(secret) // 2 :]]
    nb = notebook([code("import qlab\nqlab.run()\n", outputs)])
    return Case(
        f.id,
        f.family,
        f.provider,
        placement,
        "run.ipynb",
        {"type": "notebook", "content": nb},
        tuple(n for n in needles if len(n) >= 6),
    )


def cases(variants: int) -> Iterator[Case]:
    for f in FORMATS:
        for v in range(variants):
            for p in PLACEMENTS:
                yield build(f, p, v)
            s = f.sample(v)
            if not s.multiline:
                for name, template in PHRASINGS.items():
                    text = template.format(v=s.text, name=f.name)
                    yield stdout_case(f, s, name, [stream(text)])
            text = f"connecting with credential {s.text}\nconnected.\n"
            cut = text.index(s.secrets[0]) + len(s.secrets[0]) // 2
            warning = {"output_type": "stream", "name": "stderr", "text": "WARNING: slow\n"}
            yield stdout_case(
                f, s, "interleaved", [stream(text[:cut]), warning, stream(text[cut:])]
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--variants", type=int, default=5, help="samples of each format")
    args = parser.parse_args()
    guard = SaveGuard()
    total: Counter[str] = Counter()
    good: Counter[str] = Counter()
    missed: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for case in cases(args.variants):
        total[case.placement] += 1
        if protected(guard, case):
            good[case.placement] += 1
        else:
            missed[case.placement][case.format] += 1
    print(f"{len(FORMATS)} formats x {args.variants} samples")
    print(f"{'placement':<17}{'n':>6}  protected  most missed")
    for p in total:
        worst = " ".join(f"{k}:{n}" for k, n in missed[p].most_common(4))
        print(f"{p:<17}{total[p]:>6}  {100 * good[p] / total[p]:8.1f}%  {worst}")
    n, g = sum(total.values()), sum(good.values())
    print(f"{'all':<17}{n:>6}  {100 * g / n:8.1f}%")


if __name__ == "__main__":
    main()
