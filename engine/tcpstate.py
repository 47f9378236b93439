"""The observer's view of a TCP connection's state: states, signals, and the transition table.

Rules this module keeps:
- The observer sees both directions from outside, so its states are not an endpoint's states:
  SYN_SENT (a SYN, no answer yet), SYN_RECEIVED (SYN-ACK seen), ESTABLISHED, FIN_WAIT (one side
  sent FIN), CLOSING (both sent FIN, last ACK not seen), CLOSED, RESET, and MIDSTREAM (capture
  started after the handshake).
- A packet is first reduced to one `Signal`; the table says where each (state, signal) goes.
  A pair that is not in the table leaves the state as it is. `next_state` is the only place that
  decides a state.
- Zeek's conn_state is derived from what was seen (`conn_state`), not from the live state, so
  it can be compared with Zeek's conn.log.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    # Members are singletons compared by identity: hashed by it too, in C (Enum's own hash is
    # an interpreted function, and every state change looks two members up in TRANSITIONS).
    __hash__ = object.__hash__

    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT = "FIN_WAIT"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    RESET = "RESET"
    MIDSTREAM = "MIDSTREAM"


class Signal(enum.Enum):
    __hash__ = object.__hash__  # as State's

    SYN = "SYN"  # SYN without ACK
    SYN_ACK = "SYN_ACK"
    ACK = "ACK"  # anything else without SYN, FIN or RST
    FIN = "FIN"  # the first FIN of the connection
    FIN_OTHER = "FIN_OTHER"  # a FIN from the side that had not sent one, after the other had
    FINAL_ACK = "FINAL_ACK"  # an ACK that acknowledges the second FIN
    RST = "RST"


S, G = State, Signal
TRANSITIONS: dict[tuple[State | None, Signal], State] = {
    # The first packet seen decides how the observer starts.
    (None, G.SYN): S.SYN_SENT,
    (None, G.SYN_ACK): S.SYN_RECEIVED,
    (None, G.ACK): S.MIDSTREAM,
    (None, G.FIN): S.FIN_WAIT,
    (None, G.RST): S.RESET,
    (S.SYN_SENT, G.SYN_ACK): S.SYN_RECEIVED,
    (S.SYN_SENT, G.ACK): S.ESTABLISHED,  # the SYN-ACK was not captured
    (S.SYN_SENT, G.FIN): S.FIN_WAIT,
    (S.SYN_SENT, G.RST): S.RESET,
    (S.SYN_RECEIVED, G.ACK): S.ESTABLISHED,
    (S.SYN_RECEIVED, G.FIN): S.FIN_WAIT,
    (S.SYN_RECEIVED, G.RST): S.RESET,
    (S.ESTABLISHED, G.FIN): S.FIN_WAIT,
    (S.ESTABLISHED, G.RST): S.RESET,
    (S.MIDSTREAM, G.FIN): S.FIN_WAIT,
    (S.MIDSTREAM, G.RST): S.RESET,
    (S.FIN_WAIT, G.FIN_OTHER): S.CLOSING,
    (S.FIN_WAIT, G.RST): S.RESET,
    (S.CLOSING, G.FINAL_ACK): S.CLOSED,
    (S.CLOSING, G.RST): S.RESET,
}
del S, G

FINISHED = frozenset({State.CLOSED, State.RESET})


def next_state(state: State | None, signal: Signal) -> State | None:
    return TRANSITIONS.get((state, signal), state)


def conn_state(
    orig_syn: bool, resp_syn_ack: bool, orig_fin: bool, resp_fin: bool, first_rst: str | None
) -> str:
    """Zeek's conn.log conn_state from what was seen, from the client's (originator's) side.

    first_rst is "orig", "resp" or None: which side sent the first RST.
    """
    if first_rst == "resp":
        if orig_syn and not resp_syn_ack:
            return "REJ"
        if resp_syn_ack and not orig_syn:
            return "RSTRH"
        return "RSTR"
    if first_rst == "orig":
        if orig_syn and not resp_syn_ack:
            return "RSTOS0"
        return "RSTO"
    if orig_syn and not resp_syn_ack:
        return "SH" if orig_fin else "S0"
    if resp_syn_ack and not orig_syn:
        return "SHR" if resp_fin else "OTH"
    if not orig_syn:
        return "OTH"
    if orig_fin and resp_fin:
        return "SF"
    if orig_fin:
        return "S2"
    if resp_fin:
        return "S3"
    return "S1"
