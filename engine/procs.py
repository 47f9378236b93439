"""Which local process owns each end of a connection captured on this host.

The kernel's socket tables (read by psutil from /proc/net/tcp{,6} and each process's open
descriptors) say which process holds the socket of an address pair. They are read again at most
once every MIN_INTERVAL seconds, and only when a connection is asked about that the last reading
did not know: a table walk costs milliseconds, and a busy host opens connections faster than
that. A connection accepted by a server and gone before the next reading is still attributed to
the process listening on its port; a client socket closed before it is never seen (it is
reported as unknown, not guessed).

Only for a live capture on this host: the sockets of a capture file or another host's are not
this host's. Without the privileges to read other users' descriptors, only the own user's
processes are found.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import psutil

MIN_INTERVAL = 1.0
PATIENCE = 3.0  # how long after it opened a connection is looked for in new readings
_MAPPED = "::ffff:"


class Owner(NamedTuple):
    pid: int
    name: str
    user: str | None


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _plain(ip: str) -> str:
    """An IPv4 address written as IPv6 by a dual-stack socket, as IPv4."""
    return ip[len(_MAPPED) :] if ip.startswith(_MAPPED) else ip


class SocketOwners:
    def __init__(
        self,
        min_interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval = min_interval
        self.clock = clock
        self.read_at = -min_interval
        self.readings = 0
        self.sockets: dict[tuple[str, int, str, int], Owner] = {}
        self.listeners: dict[tuple[str, int], Owner] = {}
        self._owners: dict[int, Owner | None] = {}  # by pid, for one reading

    def _owner(self, pid: int) -> Owner | None:
        if pid not in self._owners:
            try:
                process = psutil.Process(pid)
                name = process.name()
                try:
                    user: str | None = process.username()
                except (KeyError, psutil.Error):
                    user = None
                self._owners[pid] = Owner(pid, name, user)
            except psutil.Error:
                self._owners[pid] = None
        return self._owners[pid]

    def refresh(self) -> bool:
        """Read the socket tables again, unless that was done less than min_interval ago."""
        now = self.clock()
        if now - self.read_at < self.min_interval:
            return False
        self.read_at = now
        self.readings += 1
        self._owners = {}
        sockets: dict[tuple[str, int, str, int], Owner] = {}
        listeners: dict[tuple[str, int], Owner] = {}
        try:
            found = psutil.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            found = []
        for c in found:
            if c.pid is None or not c.laddr:
                continue
            owner = self._owner(c.pid)
            if owner is None:
                continue
            local = (_plain(c.laddr.ip), c.laddr.port)
            if c.status == psutil.CONN_LISTEN:
                listeners[local] = owner
            elif c.raddr:
                sockets[(*local, _plain(c.raddr.ip), c.raddr.port)] = owner
        self.sockets, self.listeners = sockets, listeners
        return True

    def _find(self, local: tuple[str, int], remote: tuple[str, int]) -> Owner | None:
        owner = self.sockets.get((*local, *remote))
        if owner is not None:
            return owner
        ip, port = local
        for address in (ip, "0.0.0.0", "::"):
            owner = self.listeners.get((address, port))
            if owner is not None:
                return owner
        return None

    def lookup(self, client: str, server: str) -> tuple[Owner | None, Owner | None]:
        """The processes holding the client's and the server's socket ("addr:port" as the
        records write them), None for an end that is not found here; the tables are read again
        first when an end is not known (at most once every min_interval seconds)."""
        c, s = _endpoint(client), _endpoint(server)
        found = self.sockets.get((*c, *s)), self._find(s, c)
        if None in found and self.refresh():
            found = self.sockets.get((*c, *s)), self._find(s, c)
        return found


class Attribution:
    """Connections of a live capture given their processes: looked up as they open, and again
    at each reading of the tables for PATIENCE seconds while an end is still unknown."""

    def __init__(self, owners: SocketOwners | None = None) -> None:
        self.owners = owners or SocketOwners()
        self.pending: dict[int, tuple[str, str, float]] = {}  # id -> client, server, until
        self.found: dict[int, tuple[Owner | None, Owner | None]] = {}
        self.changed: set[int] = set()  # found since the last take_changed
        self.readings = -1

    def opened(self, conn_id: int, client: str, server: str) -> None:
        self.pending[conn_id] = (client, server, self.owners.clock() + PATIENCE)
        self._look(conn_id)

    def _look(self, conn_id: int) -> None:
        client, server, until = self.pending[conn_id]
        found = self.owners.lookup(client, server)
        if None not in found or self.owners.clock() >= until:
            del self.pending[conn_id]
        if found != (None, None) and self.found.get(conn_id) != found:
            self.found[conn_id] = found
            self.changed.add(conn_id)

    def poll(self) -> list[int]:
        """Look again for the connections still missing an end once the tables were read again
        (read them if due); the ids whose processes changed."""
        if self.pending and self.owners.readings == self.readings:
            self.owners.refresh()
        if self.owners.readings == self.readings:
            return []
        self.readings = self.owners.readings
        before = {i: self.found.get(i) for i in self.pending}
        for conn_id in list(self.pending):
            self._look(conn_id)
        return [i for i, was in before.items() if self.found.get(i) != was]

    def take_changed(self) -> dict[int, tuple[Owner | None, Owner | None]]:
        """What was found since the last call."""
        changed, self.changed = self.changed, set()
        return {i: self.found[i] for i in changed if i in self.found}

    def take(self, conn_id: int) -> tuple[Owner | None, Owner | None]:
        """What was found for a connection that is gone (it is forgotten here)."""
        self.pending.pop(conn_id, None)
        self.changed.discard(conn_id)
        return self.found.pop(conn_id, (None, None))


def owners_text(owners: tuple[Owner | None, Owner | None]) -> str:
    """For a column: "curl(812)→nginx(77)", or the one end found ("→nginx(77)", "curl(812)→")."""
    client, server = (f"{o.name}({o.pid})" if o is not None else "" for o in owners)
    return f"{client}→{server}"


def owner_record(owner: Owner | None) -> dict[str, object] | None:
    return None if owner is None else {"pid": owner.pid, "name": owner.name, "user": owner.user}
