"""The save guard's policy: what to scan, and whether a finding refuses, redacts or warns.

Pure traitlets and the scanner; the contents-manager glue lives in ``contents.py``.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import posixpath
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath
from typing import Any

from traitlets import Bool, Dict, Float, Int, List, Unicode, observe, validate
from traitlets.config import LoggingConfigurable

from .scanner import rules
from .scanner.clean_cells import CleanCells
from .scanner.documents import (
    Located,
    RepeatedKey,
    is_utf8,
    kind_for,
    notebook_json,
    redact_segments,
    redact_text,
    scan_file,
    scan_notebook,
    scan_repeated,
)
from .scanner.engine import AllowList, Engine, Finding, SegmentKind
from .scanner.fingerprint import Fingerprinter
from .scanner.known import DETECTOR_ID as KNOWN_ID
from .scanner.known import known_detectors
from .scanner.notebook import NotebookError, Segment, Zone

MODES = ("block", "redact", "warn")


class SaveRefused(Exception):
    """The save must not happen. ``message`` is safe to show: it never holds a value."""

    def __init__(self, status: int, message: str, findings: list[Located] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.findings = findings or []


@dataclass
class GuardReport:
    """What the guard did to a save that went ahead."""

    mode: str
    redacted: int = 0
    findings: list[Located] = field(default_factory=list)
    #: With ``check(..., keep_later=True)``: keeps the notebook's clean cells for the next
    #: save of its path; the caller runs it once the save is written.
    keep: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: Cells of a notebook not scanned again: equal to ones found clean when the same
    #: path was last saved or opened (``unchanged_cells_cache``).
    unchanged: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "redacted": self.redacted,
            "findings": [f.public() for f in self.findings],
        }


class SaveGuard(LoggingConfigurable):
    """Checks every file and notebook saved through the contents API for credentials."""

    enabled = Bool(
        True,
        config=True,
        help="""Check saves for credentials. Turning this off lets keys reach disk; it
        exists for break-glass recovery and is reported at start-up.""",
    )
    detectors = List(
        Unicode(),
        default_value=list(rules.DEFAULT_IDS),
        config=True,
        help="""Ids of the detectors to run (see ``qustody scan --list-detectors``).
        Defaults to every detector except those that do not find credentials
        (``public-ip``). Unknown ids stop the server at start-up.""",
    )
    disabled_detectors = List(
        Unicode(),
        config=True,
        help="Detector ids to switch off, applied after ``detectors`` (for one noisy detector).",
    )
    keyword_entropy = Float(
        rules.generic.KEYWORD_ENTROPY,
        config=True,
        help="""Minimum Shannon entropy (bits per character) of a quoted value assigned to a
        secret-named variable (``password = "..."``) for it to be a finding. Bare
        (unquoted) values need 0.5 more.""",
    )
    base64_entropy = Float(
        rules.generic.BASE64_ENTROPY,
        config=True,
        help="Minimum entropy of a quoted base64 string to be a finding (detect-secrets: 4.5).",
    )
    hex_entropy = Float(
        rules.generic.HEX_ENTROPY,
        config=True,
        help="Minimum entropy of a quoted hex string to be a finding (detect-secrets: 3.0).",
    )
    allowed_values = List(
        Unicode(),
        config=True,
        help="""Exact values that are never findings (public demo keys, test fixtures).
        Prefer an inline ``# pragma: allowlist secret`` next to the value.""",
    )
    allowed_patterns = List(
        Unicode(),
        config=True,
        help="Python regular expressions; a value any of them matches is never a finding.",
    )
    default_mode = Unicode(
        "block",
        config=True,
        help="""What a finding does to a save: ``block`` refuses a save whose sources,
        metadata or file content hold a credential and redacts outputs; ``redact``
        replaces every credential with ``[REDACTED:<detector>]`` and saves;
        ``warn`` saves unchanged and reports the findings.""",
    )
    path_modes = Dict(
        value_trait=Unicode(),
        config=True,
        help="""Per-path modes: glob (matched against the API path, e.g.
        ``scratch/**``) to ``block``, ``redact`` or ``warn``. The first matching
        glob wins; unmatched paths use ``default_mode``.""",
    )
    max_file_size = Int(
        100 * 1024 * 1024,
        config=True,
        help="""Largest file or notebook (bytes of text) the guard checks. A larger save is
        refused with a message saying so: it is never written unchecked.""",
    )
    max_nesting_depth = Int(
        64,
        config=True,
        help="Deepest JSON nesting accepted in a notebook; deeper documents are refused.",
    )
    unchanged_cells_cache = Int(
        32 * 1024 * 1024,
        config=True,
        help="""Characters the guard keeps from cells a save found clean (their text,
        1,024 per cell and 256 per output for their objects), over all notebooks, so
        that the next save of the same notebook (an autosave) does not scan its unchanged
        cells again. A kept cell is compared whole with the saved one; cells with a
        finding, a JSON output, large metadata or keys nbformat does not define are never
        kept, nor any cell while pre-save hooks are registered; new known values
        forget them all. 0 turns it off. See docs/guard.md.""",
    )
    fingerprint_key = Unicode(
        "",
        config=True,
        help="""Key for finding fingerprints. Empty (default) uses a random key per server,
        so a fingerprint in a log cannot be used to test password guesses.""",
    )

    @validate("default_mode")
    def _valid_mode(self, proposal: Any) -> str:
        return _check_mode(proposal["value"], "SaveGuard.default_mode")

    @validate("path_modes")
    def _valid_path_modes(self, proposal: Any) -> dict[str, str]:
        for glob, mode in proposal["value"].items():
            _check_mode(mode, f"SaveGuard.path_modes[{glob!r}]")
        return dict(proposal["value"])

    @validate("detectors", "disabled_detectors")
    def _valid_ids(self, proposal: Any) -> list[str]:
        unknown = sorted(set(proposal["value"]) - set(rules.BY_ID))
        if unknown:
            raise ValueError(
                f"SaveGuard.{proposal['trait'].name}: unknown detector ids {unknown}; "
                f"known ids: {', '.join(sorted(rules.BY_ID))}"
            )
        return list(proposal["value"])

    @validate("allowed_patterns")
    def _valid_patterns(self, proposal: Any) -> list[str]:
        for i, pattern in enumerate(proposal["value"]):
            try:
                re.compile(pattern)
            except re.error as e:
                # The index, not the pattern: an allow-list may be built from a real value.
                raise ValueError(
                    f"SaveGuard.allowed_patterns[{i}] is not a valid regex: {e.msg}"
                ) from None
        return list(proposal["value"])

    @validate("max_file_size", "max_nesting_depth")
    def _positive(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise ValueError(f"SaveGuard.{proposal['trait'].name} must be at least 1")
        return int(proposal["value"])

    @observe("unchanged_cells_cache", "max_nesting_depth")
    def _cache_settings_changed(self, change: Any) -> None:
        # cells kept under the old settings were not checked against the new ones
        if hasattr(self, "_clean"):
            self._clean = CleanCells(self.unchanged_cells_cache)

    @validate("unchanged_cells_cache")
    def _not_negative(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise ValueError("SaveGuard.unchanged_cells_cache must be 0 (off) or more")
        return int(proposal["value"])

    @validate("keyword_entropy", "base64_entropy", "hex_entropy")
    def _entropy_range(self, proposal: Any) -> float:
        if not 0.0 <= proposal["value"] <= 8.0:
            raise ValueError(f"SaveGuard.{proposal['trait'].name} must be between 0 and 8 bits")
        return float(proposal["value"])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._known: frozenset[str] = frozenset()
        self._clean = CleanCells(self.unchanged_cells_cache)
        self._engine: Future[Engine] = self._compile(*self._engine_inputs())

    @property
    def ready(self) -> bool:
        """Whether the engine is compiled (a scan would not wait for it)."""
        return self._engine.done()

    @property
    def engine(self) -> Engine:
        """The scanning engine. Compiling its hyperscan databases takes 0.3-0.5 s of CPU,
        so it is done in a thread (hyperscan releases the GIL) while the server starts;
        the first scan waits for it, never for less than the current known values."""
        return self._engine.result()

    def set_known_values(self, values: Any) -> None:
        """Also find these exact values (and their encodings) everywhere, whatever the
        detectors say: outputs holding one are redacted, sources refused (in ``block``).
        Values are added to those already known, so a rotated-out value stays covered.
        Every scan after this returns uses an engine that knows them."""
        known = self._known | frozenset(str(v) for v in values)
        if known != self._known:
            self._known = known
            self._clean.forget()  # found clean without these values
            # swapped whole: scans in flight keep theirs, later ones wait for this one
            self._engine = self._compile(*self._engine_inputs())

    @staticmethod
    def _compile(detectors: list[Any], allow: AllowList, fingerprinter: Fingerprinter
                 ) -> Future[Engine]:
        future: Future[Engine] = Future()

        def run() -> None:
            try:
                future.set_result(Engine(detectors, allow, fingerprinter))
            except BaseException as e:  # the first scan raises it: saves are refused
                future.set_exception(e)

        threading.Thread(target=run, name="qustody-guard-compile", daemon=True).start()
        return future

    def _engine_inputs(self) -> tuple[list[Any], AllowList, Fingerprinter]:
        """What the engine is built from; settings errors are raised here, at start-up."""
        wanted = set(self.detectors) - set(self.disabled_detectors)
        catalogue = rules.catalogue(self.keyword_entropy, self.base64_entropy, self.hex_entropy)
        allow = AllowList(
            values=frozenset(v.encode() for v in self.allowed_values),
            patterns=tuple(re.compile(p.encode()) for p in self.allowed_patterns),
        )
        key = self.fingerprint_key.encode() or None
        detectors = [d for d in catalogue if d.id in wanted]
        detectors += known_detectors(getattr(self, "_known", ()))
        return detectors, allow, Fingerprinter(key)

    def mode_for(self, path: str) -> str:
        # As jupyter-server reads the path: "scratch/../work/a.py" is work/a.py.
        path = posixpath.normpath("/" + path).lstrip("/")
        for glob, mode in self.path_modes.items():
            if fnmatch.fnmatchcase(path, glob):
                return str(mode)
        return str(self.default_mode)

    # -- checking -------------------------------------------------------------------

    def check(
        self, model: dict[str, Any], path: str, remember: bool = False, keep_later: bool = False
    ) -> GuardReport | None:
        """Check (and maybe redact, in place) a contents-API model about to be saved.

        Returns None when there was nothing to check; raises SaveRefused to stop the save.
        With ``remember``, a notebook's cells found clean are kept (``unchanged_cells_cache``)
        and the next remembered check of ``path`` skips them while they are unchanged: the
        caller promises that nothing changes ``model`` in place after the check but the
        guard's own redaction (the contents manager's save of a freshly parsed request).
        With ``keep_later`` too, the cells are kept only when the caller runs the report's
        ``keep``, once the save is written (a failed save keeps nothing): an async contents
        manager runs it after the answer is sent, so the answer does not wait for it.
        """
        if not self.enabled or model.get("content") is None:
            return None
        mode = self.mode_for(path)
        kind = model.get("type")
        if kind == "notebook":
            return self._check_notebook(model, path, mode, remember, keep_later)
        if kind == "file":
            return self._check_file(model, path, mode)
        return None

    def remember_opened(self, content: Any, path: str) -> int:
        """Scan a notebook as the contents API served it and keep its clean cells, as a
        save of it would (``unchanged_cells_cache``): its first save in this server then
        scans only the cells changed since it was opened. The contents manager calls this
        once the GET is answered, on the answer's own objects, which nothing else holds
        then. Nothing is refused or redacted here: what a cell holds is found, and
        reported, when it is saved. Returns how many cells are kept for ``path``."""
        clean = self._clean
        if not self.enabled or not clean.max_chars:
            return 0
        engine = self.engine
        recheck = clean.recheck(engine, path)
        try:
            scan = scan_notebook(engine, content, self.max_nesting_depth, recheck)
        except NotebookError:
            return 0  # its save is refused as not a notebook: nothing to keep
        clean.remember(engine, path, content, scan, recheck)
        return clean.cells_kept(path)

    def _check_notebook(
        self, model: dict[str, Any], path: str, mode: str, remember: bool, keep_later: bool
    ) -> GuardReport:
        engine = self.engine
        clean = self._clean
        recheck = clean.recheck(engine, path) if remember and clean.max_chars else None
        try:
            scan = scan_notebook(engine, model["content"], self.max_nesting_depth, recheck)
        except NotebookError as e:
            raise SaveRefused(
                400, f"{path} was not saved: it is not a valid notebook ({e})."
            ) from None
        self._check_size(scan.size() + (recheck.skipped_chars if recheck else 0), path)
        report = GuardReport(mode, unchanged=len(recheck.skipped) if recheck else 0)
        if recheck is not None:
            keep = partial(clean.remember, engine, path, model["content"], scan, recheck)
            if keep_later:
                report.keep = keep
            else:
                keep()
        blocking: list[Located] = []
        to_redact: list[tuple[Segment, list[Finding]]] = []
        for segment, found in zip(scan.segments, scan.findings, strict=True):
            if not found:
                continue
            located = Located.all_in(segment, found)
            seg_mode = _known_mode(mode, found)
            if seg_mode == "warn":
                report.findings.extend(located)
            elif seg_mode == "block" and segment.zone is not Zone.OUTPUT:
                blocking.extend(located)
            else:
                to_redact.append((segment, found))
                report.findings.extend(located)
        if blocking:
            raise SaveRefused(422, refusal_message(path, blocking), blocking)
        report.redacted += redact_segments(to_redact)
        return report

    def _check_file(self, model: dict[str, Any], path: str, mode: str) -> GuardReport:
        content = model["content"]
        fmt = model.get("format") or "text"
        if not isinstance(content, str):
            raise SaveRefused(400, f"{path} was not saved: file content must be a string.")
        if fmt == "base64":
            try:
                data = base64.b64decode(content.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                raise SaveRefused(
                    400, f"{path} was not saved: its base64 content is malformed."
                ) from None
        elif fmt == "text":
            data = content.encode("utf-8", "surrogatepass")
        else:
            raise SaveRefused(400, f"{path} was not saved: unknown format {fmt!r}.")
        self._check_size(len(data), path)
        repeated = False
        if PurePosixPath(path).suffix == ".ipynb":
            try:
                as_notebook = _notebook_in(data)
            except RepeatedKey:
                as_notebook, repeated = None, True
            if as_notebook is not None:
                # An uploaded notebook gets the notebook policy (outputs redacted, not refused).
                nb_model = {"type": "notebook", "content": as_notebook}
                report = self._check_notebook(nb_model, path, mode, False, False)
                if report.redacted:
                    text = json.dumps(nb_model["content"], indent=1, ensure_ascii=False) + "\n"
                    model["content"], model["format"] = text, "text"
                return report
        located = (scan_repeated(self.engine, path, data, self.max_nesting_depth) if repeated
                   else scan_file(self.engine, path, data))
        report = GuardReport(mode)
        if not located:
            return report
        mode = _known_mode(mode, [loc.finding for loc in located])
        if mode == "block":
            raise SaveRefused(422, refusal_message(path, located), located)
        report.findings = located
        if mode == "redact":
            if kind_for(path, data) is SegmentKind.BINARY or not is_utf8(data) or repeated:
                # not text that can be rewritten as it was written: refused, not redacted
                raise SaveRefused(422, refusal_message(path, located, binary=True), located)
            text, spans = redact_text(data.decode("utf-8"), [loc.finding for loc in located])
            report.redacted = len(spans)
            encoded = text.encode("utf-8")
            model["content"] = (
                base64.b64encode(encoded).decode("ascii") if fmt == "base64" else text
            )
        return report

    def _check_size(self, size: int, path: str) -> None:
        if size > self.max_file_size:
            raise SaveRefused(
                413,
                f"{path} was not saved: it is {size:,} bytes, larger than the "
                f"{self.max_file_size:,} bytes the credential guard checks "
                "(SaveGuard.max_file_size). Nothing was written.",
            )


def _known_mode(mode: str, found: list[Any]) -> str:
    """A value delivered to this server is never saved, even where the mode is ``warn``."""
    if mode == "warn" and any(f.detector == KNOWN_ID for f in found):
        return "block"
    return mode


def _check_mode(mode: str, name: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{name} is {mode!r}; use one of {', '.join(MODES)}")
    return mode


def _notebook_in(data: bytes) -> dict[str, Any] | None:
    """The notebook a file's text holds (nbformat 4's ``cells`` or 3's ``worksheets``), or
    None: then its text is scanned as it is. RepeatedKey for a key given twice: a parsed
    view sees only the last value, while the text written holds both."""
    try:
        nb = notebook_json(data)
    except RepeatedKey:
        raise
    except (ValueError, RecursionError):
        return None
    if isinstance(nb, dict) and (isinstance(nb.get("cells"), list) or "worksheets" in nb):
        return nb
    return None


def refusal_message(path: str, found: list[Located], binary: bool = False) -> str:
    count = len(found)
    noun = "credential" if count == 1 else "credentials"
    lines = [
        f"Save refused: {path} contains {count} {noun}. Nothing was written.",
        "Keep keys out of notebooks: read them at run time (os.environ, qustody secrets) "
        "or mark a false positive with '# pragma: allowlist secret' on its line.",
    ]
    if binary:
        lines.append("The file is binary (or text that is not UTF-8), so it cannot be "
                     "redacted.")
    lines.extend(f"- {loc.describe()}" for loc in found[:50])
    if count > 50:
        lines.append(f"- ... and {count - 50} more")
    return "\n".join(lines)
