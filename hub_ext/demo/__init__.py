"""``make demo``: the launcher (``python -m hub_ext.demo``), the demo's identity provider
and the process that runs the repository's OpenID provider (``tests/idp``).

Demo code only: it runs from a checkout (it starts ``tests/idp/provider.mjs``) and is left
out of the wheel (pyproject.toml).
"""

from .launcher import QPU_EXAMPLE, main

__all__ = ["QPU_EXAMPLE", "main"]
