"""The observer state machine and Zeek's conn_state, table-driven."""

from __future__ import annotations

import pytest

from engine.tcpstate import Signal, State, conn_state, next_state
from tests.feeding import feed, handshake

G, S = Signal, State


@pytest.mark.parametrize(
    "signals,expected",
    [
        ([G.SYN], S.SYN_SENT),
        ([G.SYN, G.SYN], S.SYN_SENT),
        ([G.SYN, G.SYN_ACK], S.SYN_RECEIVED),
        ([G.SYN, G.SYN_ACK, G.ACK], S.ESTABLISHED),
        ([G.SYN, G.ACK], S.ESTABLISHED),
        ([G.SYN_ACK], S.SYN_RECEIVED),
        ([G.ACK], S.MIDSTREAM),
        ([G.ACK, G.FIN], S.FIN_WAIT),
        ([G.SYN, G.SYN_ACK, G.ACK, G.FIN, G.FIN_OTHER], S.CLOSING),
        ([G.SYN, G.SYN_ACK, G.ACK, G.FIN, G.FIN_OTHER, G.FINAL_ACK], S.CLOSED),
        ([G.SYN, G.SYN_ACK, G.ACK, G.FIN, G.FIN_OTHER, G.FINAL_ACK, G.RST], S.CLOSED),
        ([G.SYN, G.RST], S.RESET),
        ([G.SYN, G.SYN_ACK, G.ACK, G.RST, G.ACK, G.FIN], S.RESET),
        ([G.SYN, G.SYN_ACK, G.ACK, G.FINAL_ACK], S.ESTABLISHED),
    ],
)
def test_transitions(signals, expected):
    state = None
    for signal in signals:
        state = next_state(state, signal)
    assert state is expected


@pytest.mark.parametrize(
    "orig_syn,resp_syn_ack,orig_fin,resp_fin,first_rst,expected",
    [
        (True, False, False, False, None, "S0"),
        (True, True, False, False, None, "S1"),
        (True, True, True, True, None, "SF"),
        (True, False, False, False, "resp", "REJ"),
        (True, True, True, False, None, "S2"),
        (True, True, False, True, None, "S3"),
        (True, True, False, False, "orig", "RSTO"),
        (True, True, False, False, "resp", "RSTR"),
        (True, False, False, False, "orig", "RSTOS0"),
        (False, True, False, False, "resp", "RSTRH"),
        (True, False, True, False, None, "SH"),
        (False, True, False, True, None, "SHR"),
        (False, False, True, True, None, "OTH"),
        (False, True, False, False, None, "OTH"),
    ],
)
def test_conn_state(orig_syn, resp_syn_ack, orig_fin, resp_fin, first_rst, expected):
    assert conn_state(orig_syn, resp_syn_ack, orig_fin, resp_fin, first_rst) == expected


def test_fin_close_from_segments():
    fed = feed(handshake() + [
        (True, "FA", 1001, 5001, b""),
        (False, "FA", 5001, 1002, b""),
        (True, "A", 1002, 5002, b""),
    ], finish=False)
    conn = fed.table.connection(0)
    assert conn is not None and conn.state is State.CLOSED and conn.conn_state() == "SF"


def test_retransmitted_fin_does_not_close():
    fed = feed(handshake() + [(True, "FA", 1001, 5001, b""), (True, "FA", 1001, 5001, b"")], finish=False)
    conn = fed.table.connection(0)
    assert conn is not None and conn.state is State.FIN_WAIT and conn.conn_state() == "S2"
