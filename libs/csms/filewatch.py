"""Files read again when they change: TLS material from a Kubernetes Secret (renamed in place when it is renewed),
checked every few seconds by modification time, size and inode -- the gateway's (services/gateway/tls.py) and the
file intake's (services/diagnostics/tls.py)."""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence

log = logging.getLogger("csms.filewatch")

Stamp = tuple[tuple[str, int, int, int], ...]


def reload_or_keep(load: Callable[[], object], errors: type[Exception], what: str, why: str,
                   logger: logging.Logger) -> bool:
    """``load()`` again; when it raises ``errors`` the material loaded before stays in use (logged). True when the
    new material is in use."""
    try:
        load()
    except errors as exc:
        logger.error("%s not reloaded (%s), the previous one stays in use: %s", what, why, exc)
        return False
    logger.info("%s reloaded (%s)", what, why)
    return True


def stamp(paths: Sequence[str]) -> Stamp:
    """What the files look like now (a missing file has its own stamp)."""
    entries = []
    for path in paths:
        try:
            st = os.stat(path)
            entries.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            entries.append((path, -1, -1, -1))
    return tuple(entries)


class FileWatch:
    """Calls ``reload(why)`` on a worker thread when ``paths()`` changed since :meth:`mark`, every ``interval``
    seconds."""

    def __init__(self, paths: Callable[[], Sequence[str]], interval: float, reload: Callable[[str], object],
                 what: str):
        self.paths = paths
        self.interval = interval
        self.reload = reload
        self.what = what
        self._stamp: Stamp | None = None
        self._task: asyncio.Task | None = None

    def mark(self, taken: Stamp | None = None) -> None:
        """The files were loaded as ``taken`` shows them (the stamp taken before reading them: a change while they
        were read is seen next time), or as they are now."""
        self._stamp = taken if taken is not None else stamp(self.paths())

    def changed(self) -> bool:
        return self._stamp is not None and stamp(self.paths()) != self._stamp

    def start(self) -> None:
        if self.paths() and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self.changed():
                    await asyncio.to_thread(self.reload, "the files changed")
            except Exception:  # noqa: BLE001 - the watch must outlive any one failure
                log.exception("checking the %s files failed", self.what)
