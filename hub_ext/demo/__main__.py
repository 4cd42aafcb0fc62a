"""``python -m hub_ext.demo`` (``make demo``)."""

from .launcher import main

raise SystemExit(main())
