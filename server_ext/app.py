"""The jupyter-server extension that runs in every user's notebook server."""

from __future__ import annotations

import gc
import os

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool

from .contents import GuardedContents, guard_manager
from .guard import SaveGuard
from .handlers import HANDLERS, body_reader, harden_contents_handler
from .notices import NOTICE_HANDLERS
from .qpu_handlers import QPU_HANDLERS
from .secret_handlers import SECRET_HANDLERS
from .secret_store import start_secrets
from .session import start_backstop
from .watcher import FileWatcher

#: Set by the image's launcher (images/singleuser.py) while the collector is paused.
PAUSED = "QUSTODY_GC_PAUSED"


class QustodyApp(ExtensionApp):
    """Guards saves against credentials and serves the Qustody REST API."""

    name = "qustody"
    description = "Qustody: keep credentials out of saved notebooks and files."
    load_other_extensions = True

    trust_notebooks = Bool(
        False,
        config=True,
        help="""Whether notebooks may be trusted (their outputs' scripts run when opened).
        Off: every user's server is served from the hub's origin, and staff and admins open
        other users' servers, so a notebook its owner trusted would run the owner's script
        in their browser (server_ext/trust.py).""",
    )

    def initialize_settings(self) -> None:
        serverapp = self.serverapp
        assert serverapp is not None  # set by jupyter-server before settings are initialised
        # Time limits of the hardened container (no-op outside one), whatever the guard does.
        start_backstop(serverapp, self.log)
        manager = serverapp.contents_manager
        guard_manager(manager)
        assert isinstance(manager, GuardedContents)
        manager.qustody_trust = bool(self.trust_notebooks)
        # Refuse saves until the guard is ready, and for good if it cannot start.
        manager.qustody_install(None, "the Qustody credential guard is starting")
        try:
            guard = SaveGuard(config=serverapp.config, log=self.log)
        except Exception as e:
            reason = f"the Qustody credential guard could not start ({type(e).__name__}: {e})"
            self.log.error(
                "%s; every save will be refused until the configuration is fixed", reason
            )
            manager.qustody_install(None, reason + ". Ask an admin to fix the server configuration")
            return
        manager.qustody_install(guard)
        self.settings["qustody_guard"] = guard
        self.watcher = FileWatcher(serverapp.root_dir, guard, config=serverapp.config, log=self.log,
                                   runtime_dir=serverapp.runtime_dir)
        manager.qustody_watch(self.watcher)
        self.settings["qustody_watcher"] = self.watcher
        # Claim this server's secrets only now: the guard must know their values first.
        self.settings["qustody_secrets"] = start_secrets(serverapp, guard, self.log)
        if not harden_contents_handler(serverapp.web_app):
            self.log.warning(
                "Qustody: contents API handler not found; request bodies use the default parser"
            )
        elif body_reader() != "msgspec":
            self.log.warning(
                "Qustody: msgspec is not installed; request bodies are read by json.loads "
                "(the same values, each save about 0.4 ms slower)"
            )
        if not guard.enabled:
            self.log.warning("Qustody credential guard is DISABLED (SaveGuard.enabled = False)")
        else:
            self.log.info(
                "Qustody credential guard on %s: %d detectors, default mode %s",
                type(manager).__name__,
                len(set(guard.detectors) - set(guard.disabled_detectors)),
                guard.default_mode,
            )

    async def _start_jupyter_server_extension(self, serverapp: object) -> None:
        watcher: FileWatcher | None = getattr(self, "watcher", None)
        if watcher is not None:
            watcher.start()
            if not watcher.enabled:
                self.log.warning(
                    "Qustody file watcher is off (FileWatcher.enabled = False): files written "
                    "by kernels and terminals are not checked"
                )
        # After the watcher: a speed step must never keep a check from starting.
        try:
            frozen = resume_collector()
        except Exception as e:  # the collector stays as it was; the server runs on
            self.log.error("Qustody: could not resume the garbage collector (%s)",
                           type(e).__name__)
            return
        if frozen is not None:
            self.log.info("Qustody: garbage collector resumed after start-up (%d objects frozen)",
                          frozen)

    async def stop_extension(self) -> None:
        watcher: FileWatcher | None = getattr(self, "watcher", None)
        if watcher is not None:
            await watcher.stop()

    def initialize_handlers(self) -> None:
        self.handlers.extend(HANDLERS)
        self.handlers.extend(SECRET_HANDLERS)
        self.handlers.extend(QPU_HANDLERS)
        self.handlers.extend(NOTICE_HANDLERS)


def resume_collector() -> int | None:
    """Turn the cyclic garbage collector back on if the image's launcher paused it for the
    start (images/singleuser.py), now that every extension is loaded. What the start built
    is frozen first (``gc.freeze``): it lives as long as the server, and later collections
    need not traverse it. It is not collected first: the start leaves ~2,500 objects of
    garbage in cycles (well under 1 MB) and a full collection would cost ~85 ms of the
    start; an object alive now that later ends in a cycle is not collected either (the
    frozen set is the start's, small and bounded). The variable is taken out of the
    environment, so that kernels and terminals never inherit it. Returns the number of
    objects frozen, or None when the collector was not paused by the launcher."""
    try:
        # pop without a default: the launcher's fallback timer may take it at the same time
        paused = os.environ.pop(PAUSED) == "1"
    except KeyError:
        return None
    if not paused:
        return None
    gc.freeze()
    gc.enable()
    return gc.get_freeze_count()
