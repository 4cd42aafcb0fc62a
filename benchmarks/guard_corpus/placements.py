"""The ten places a credential sits in a notebook project (issue 13), as contents-API models.

Each placement builds the model a client would send to ``PUT /api/contents/<path>``:
a notebook for the cell and output placements, a text file for ``.py``, ``.env`` and
YAML. Outputs are written the way a kernel produces them (a stream chunked in two,
the ``repr`` of a string, a pandas-like HTML table, an ANSI-coloured traceback) and
the cell that produced them does not hold the value, so only the output can leak it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .formats import FORMATS, Format, Sample


@dataclass
class Case:
    format: str
    family: str
    provider: str
    placement: str
    path: str
    model: dict[str, Any]
    #: Strings that must not be on disk after the save (the secret, its halves when split).
    needles: tuple[str, ...]


def notebook(cells: list[dict[str, Any]]) -> dict[str, Any]:
    for i, c in enumerate(cells):
        c.setdefault("id", f"c{i}")
        c.setdefault("metadata", {})
        if c["cell_type"] == "code":
            c.setdefault("execution_count", i or None)
            c.setdefault("outputs", [])
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python", "version": "3.12.3"},
        },
        "cells": [
            {
                "cell_type": "markdown",
                "source": "# Running the experiment\n\nSet up the client, then submit the circuit.",
            },
            *cells,
        ],
    }


def code(source: str, outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"cell_type": "code", "source": source, "outputs": outputs or []}


def stream(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


_RUN = "import os, qlab\nclient = qlab.connect(os.environ[{name!r}])\n"
_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(provider: str) -> str:
    return _SLUG.sub("_", provider.lower()).strip("_")


def _yaml_key(name: str) -> str:
    """API_KEY -> api_key, APP_ID -> app_id, ACCESS_TOKEN -> access_token, TOKEN -> token."""
    parts = name.lower().split("_")
    last_two = parts[-1] in ("key", "id", "secret", "token") and len(parts) > 2
    return "_".join(parts[-2:] if last_two else parts[-1:])


def _quoted_py(s: Sample) -> str:
    return f'"""\n{s.text}\n"""' if s.multiline else f'"{s.text}"'


# --- the ten placements ------------------------------------------------------------------------
def code_cell(f: Format, s: Sample) -> tuple[str, dict[str, Any]]:
    if f.keyword or s.multiline:
        # Only the vendor's variable name identifies a value of no distinctive shape.
        src = f"{f.name} = {_quoted_py(s)}\nclient = qlab.connect({f.name})\n"
    else:
        src = f"client = qlab.connect({_quoted_py(s)})\n"
    return "analysis.ipynb", notebook([code("import qlab\n"), code(src)])


def markdown_cell(f: Format, s: Sample) -> tuple[str, dict[str, Any]]:
    if f.keyword and not s.multiline:
        md = f"Set it once in a terminal:\n\n```bash\nexport {f.name}={s.text}\n```\n"
    else:
        md = f"For the {f.provider} examples below we use this one:\n\n```\n{s.text}\n```\n"
    return "README.ipynb", notebook(
        [{"cell_type": "markdown", "source": md}, code("import qlab\n")]
    )


def py_file(f: Format, s: Sample) -> tuple[str, dict[str, Any]]:
    text = f'"""Lab settings."""\nREGION = "eu-de"\n{f.name} = {_quoted_py(s)}\nSHOTS = 4096\n'
    return "lab_settings.py", {"type": "file", "format": "text", "content": text}


def env_file(f: Format, s: Sample) -> tuple[str, dict[str, Any]]:
    value = f'"{s.text}"' if s.multiline else s.text
    text = f"# local settings\nQLAB_REGION=eu-de\n{f.name}={value}\nQLAB_SHOTS=4096\n"
    return ".env", {"type": "file", "format": "text", "content": text}


def yaml_file(f: Format, s: Sample) -> tuple[str, dict[str, Any]]:
    key = _yaml_key(f.name)
    if s.multiline:
        value = "|\n" + "".join(f"    {line}\n" for line in s.text.splitlines())
    else:
        value = f'"{s.text}"\n'
    text = f"experiment:\n  shots: 4096\n{_slug(f.provider)}:\n  region: eu-de\n  {key}: {value}"
    return "config.yaml", {"type": "file", "format": "text", "content": text}


def stdout_stream(f: Format, s: Sample) -> tuple[str, dict[str, Any]]:
    out = stream(f"connecting with credential {s.text}\nconnected.\n")
    return "run.ipynb", notebook([code(_RUN.format(name=f.name), [out])])


def split_stream(f: Format, s: Sample) -> tuple[str, dict[str, Any]]:
    text = f"connecting with credential {s.text}\nconnected.\n"
    secret = s.secrets[0]
    cut = text.index(secret) + len(secret) // 2
    outs = [stream(text[:cut]), stream(text[cut:])]
    return "run.ipynb", notebook([code(_RUN.format(name=f.name), outs)])


def repr_result(f: Format, s: Sample) -> tuple[str, dict[str, Any]]:
    out = {
        "output_type": "execute_result",
        "execution_count": 2,
        "metadata": {},
        "data": {"text/plain": repr(s.text)},
    }
    src = f"import os\nos.environ[{f.name!r}]\n"
    return "inspect.ipynb", notebook([code(src, [out])])


def html_table(f: Format, s: Sample) -> tuple[str, dict[str, Any]]:
    cell = html.escape(s.text)  # pandas keeps line breaks inside a cell as they are
    table = (
        '<div>\n<table border="1" class="dataframe">\n  <thead>\n    <tr style="text-align: right;">\n'
        "      <th></th>\n      <th>service</th>\n      <th>region</th>\n      <th>value</th>\n"
        "    </tr>\n  </thead>\n  <tbody>\n    <tr>\n      <th>0</th>\n"
        f"      <td>{html.escape(f.provider)}</td>\n      <td>eu-de</td>\n      <td>{cell}</td>\n"
        "    </tr>\n  </tbody>\n</table>\n</div>"
    )
    out = {
        "output_type": "execute_result",
        "execution_count": 3,
        "metadata": {},
        "data": {
            "text/html": table,
            "text/plain": "   service region  value\n0  ...     eu-de  ...",
        },
    }
    return "accounts.ipynb", notebook(
        [code("import pandas as pd\npd.DataFrame(qlab.accounts())\n", [out])]
    )


def traceback(f: Format, s: Sample) -> tuple[str, dict[str, Any]]:
    shown = repr(s.text)
    out = {
        "output_type": "error",
        "ename": "AuthenticationError",
        "evalue": f"401 Unauthorized: credential {shown} was rejected",
        "traceback": [
            "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
            "\x1b[0;31mAuthenticationError\x1b[0m                       Traceback (most recent call last)",
            "Cell \x1b[0;32mIn[4], line 2\x1b[0m\n\x1b[1;32m      1\x1b[0m \x1b[38;5;28;01mimport\x1b[39;00m \x1b[38;5;21;01mqlab\x1b[39;00m\n"
            "\x1b[0;32m----> 2\x1b[0m client \x1b[38;5;241m=\x1b[39m qlab\x1b[38;5;241m.\x1b[39mconnect(key_file)\n",
            f"\x1b[0;31mAuthenticationError\x1b[0m: 401 Unauthorized: credential {shown} was rejected",
        ],
    }
    src = "import qlab\nclient = qlab.connect(key_file)\n"
    return "debug.ipynb", notebook([code(src, [out])])


PLACEMENTS: dict[str, Callable[[Format, Sample], tuple[str, dict[str, Any]]]] = {
    "code-cell": code_cell,
    "markdown-cell": markdown_cell,
    "py-file": py_file,
    "env-file": env_file,
    "yaml-file": yaml_file,
    "stdout-stream": stdout_stream,
    "split-stream": split_stream,
    "repr-result": repr_result,
    "html-table": html_table,
    "traceback": traceback,
}


def build(f: Format, placement: str, variant: int = 0) -> Case:
    s = f.sample(variant)
    path, content = PLACEMENTS[placement](f, s)
    model = content if content.get("type") == "file" else {"type": "notebook", "content": content}
    needles = list(s.secrets)
    if placement == "split-stream":
        half = len(s.secrets[0]) // 2
        needles += [s.secrets[0][:half], s.secrets[0][half:]]
    if placement in ("repr-result", "traceback"):
        # repr() escapes backslashes and quotes: look for the value as shown.
        needles = [repr(n)[1:-1] for n in needles]
    if placement == "html-table":
        needles = [html.escape(n) for n in needles]
    return Case(
        f.id, f.family, f.provider, placement, path, model, tuple(n for n in needles if len(n) >= 6)
    )


def cases(
    formats: list[Format] | None = None, placements: list[str] | None = None
) -> Iterator[Case]:
    """Every (format, placement) case, freshly built (the guard redacts models in place)."""
    for f in formats or FORMATS:
        for p in placements or list(PLACEMENTS):
            yield build(f, p)


def strings(obj: Any) -> Iterator[str]:
    """Every string (keys too) in a JSON-like value."""
    stack = [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def leaked(case: Case, saved: Any) -> bool:
    """Whether any needle survives in ``saved`` (a model's content, a notebook or text)."""
    texts = list(strings(saved))
    return any(n in t for n in case.needles for t in texts)
