"""Memory bounds of the engine, set by configuration rather than by the traffic.

Every structure that grows with traffic is capped by one of these numbers. When a cap is hit the
engine evicts (oldest idle connections first, oldest kept payload first), counts what it evicted,
and reports it in its statistics; it never grows past the budget to keep data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MiB: Final = 1024 * 1024

# What one tracked connection costs beyond its payload: the Connection and its two HalfStreams
# (slotted objects), two table entries and the small strings made for them. On a SYN flood
# tracemalloc counts 900 bytes each, and the process grows by about 1.6 KB each once the
# allocator's own overhead is in: the budget uses the larger figure.
CONNECTION_COST: Final = 1600
# What a stream consumer attached to a connection costs while it is in the table (closed ones
# linger for `closed_linger`): an HTTP parser holds a mirrored pair of h11 buffers and queues of
# pending messages, about 4 KB by tracemalloc on 27,000 one-request connections (which counted
# 65 MiB without this for 227 MiB held). Other consumers cost less; all are counted so.
CONSUMER_COST: Final = 4096
# What a closed connection's kept follow-view entries cost beyond the entries themselves while
# they are archived (Bounds.keep_after_close): the entries object and its two arrays, the
# archive's tuple and ordered-dict entry. tracemalloc on 79,100 one-request connections read
# with a spool: 632 bytes each, of which the counted entries were 24.
ARCHIVED_COST: Final = 600


@dataclass(frozen=True, slots=True)
class Bounds:
    max_connections: int = 250_000
    """Connections tracked at once; the least recently active is evicted past it."""
    max_ooo_bytes: int = 4 * MiB
    """Out-of-order bytes buffered per direction of a connection before the hole is declared a gap."""
    keep_stream_bytes: int = 16 * MiB
    """Reassembled bytes kept per connection for the follow view (oldest dropped first); 0 keeps none.
    Enough for a download of several MiB to be read from its request line on; what all
    connections keep together is still bounded by `memory_budget`, which evicts kept bytes first.
    The headless outputs (--json, --follow) keep far less (tui.cli)."""
    spool_bytes: int = 0
    """Disk for the follow view's entries (engine.spool: a ring file in the temporary directory,
    unlinked at once): with it, kept bytes cost 12 bytes of memory an entry and the ring's size
    bounds what is kept of all connections together; 0 keeps them in memory (the headless modes)."""
    keep_after_close: bool = False
    """Keep those bytes after the connection leaves the table, until the memory budget needs them."""
    memory_budget: int = 512 * MiB
    """Global: connection overhead + out-of-order + kept stream bytes + IP fragments. The headless
    modes give it the whole of --memory; the interactive app gives it 1/4, the rest going to its
    packet ring, its store of connections and exchanges, and headroom (tui.memory)."""
    idle_timeout: float = 300.0
    """Seconds of packet time without a packet before a connection is expired."""
    reorder_window: float = 0.5
    """Seconds of packet time one direction may be captured late against the other (the order
    between directions in a capture is not causal: multi-queue NICs, the `any` device, merged
    captures). An HTTP answer waits twice as long for the request it answers; a hole the peer
    acknowledged once waits this long for its bytes (a second acknowledgment ends the wait)."""
    closed_linger: float = 30.0
    """Seconds a closed or reset connection stays in the table for late retransmissions."""
    max_fragment_bytes: int = 8 * MiB
    """IP fragments waiting for reassembly, all datagrams together."""
    fragment_timeout: float = 30.0
