"""Course workspaces: a course is a file (``model``), a directory of them is the catalog
(``catalog``), and ``qustody course`` checks, applies and reports them (``cli``).

The hub (spawns after the term closes, the profile instructors may start) and the QPU
gateway (the course's budget) each read the catalog; neither needs a restart when a
file changes.
"""
