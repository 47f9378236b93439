"""Write the demo capture bundled with wirepeek (tui/data/demo.pcap) and the small capture of
terminal escape sequences used by the UI's escaping tests (tests/data/pcaps/escapes.pcap).

    python scripts/make_demo_capture.py            # or: python -m scripts.make_demo_capture
    python scripts/make_demo_capture.py --demo OUT.pcap --escapes OUT2.pcap

The demo is about 30 seconds of a workstation (10.0.0.15, fd00::15) talking to a few servers:
REST calls on a keep-alive connection, a chunked gzip page, a 404, a slow CSV report, a pipelined
pair, a websocket, a TLS session, a reset, a refused connection, and a request carrying terminal
escape sequences. tui/data/README.md lists the connections. Every frame is built with
tests/synth.py, so checksums, sequence numbers and ACKs are right, and timestamps follow a
plausible round trip per server, as seen by a capture on the client host.

The output is deterministic: the same bytes on every run and every machine. Nothing here reads the
wall clock or an unseeded random source, and the gzip body is stored compressed (below) rather than
compressed here, because zlib builds (zlib, zlib-ng) compress the same input to different bytes.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import random
import struct
import sys
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.synth import Packet, TcpConversation, tcp_options, write_pcap  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO_PATH = ROOT / "tui" / "data" / "demo.pcap"
ESCAPES_PATH = ROOT / "tests" / "data" / "pcaps" / "escapes.pcap"

CAPTURE_START = 1_718_611_200.0  # Mon, 17 Jun 2024 08:00:00 UTC
SEED = 20240617

WORKSTATION = "10.0.0.15"
WORKSTATION_V6 = "fd00::15"
API = "10.0.0.80"  # nginx in front of the shop's API
API_V6 = "fd00::80"
REPORTS = "10.0.0.81"  # gunicorn, no proxy
LEGACY = "10.0.0.82"  # an admin service that is down
WEB = "198.51.100.20"  # www.example.com
TLS_SERVER = "192.0.2.44"  # api.example.com

LAN_RTT = 0.00045
WEB_RTT = 0.0182
TLS_RTT = 0.0243
STEP = 0.000012  # between back-to-back segments of one side
TURNAROUND = 0.00004  # a kernel answering at once (ACK, FIN after the application closes)

NGINX = "nginx/1.24.0"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
CURL = "curl/8.5.0"
REQUESTS = "python-requests/2.32.3"

# What curl -A $'evil\e]0;pwned\aagent' sends: an OSC sequence that would retitle a terminal.
EVIL_AGENT = "evil\x1b]0;pwned\x07agent"
# A body that would clear the screen and print in red if written to a terminal raw.
EVIL_COMMENT = (
    b"Great tea!\x1b[2J\x1b[H\x1b[1;31mYOUR TERMINAL IS MINE\x1b[0m\n"
    b"(harmless: wirepeek must show these bytes escaped)\n"
)

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

PAGE_HTML = b"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Example Tea Co. - Loose leaf tea, shipped fresh</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <link rel="stylesheet" href="/static/site.css">
</head>
<body>
  <header>
    <h1>Example Tea Co.</h1>
    <nav><a href="/">Home</a> <a href="/shop">Shop</a> <a href="/about">About us</a></nav>
  </header>
  <main>
    <h2>This week's teas</h2>
    <ul class="products">
      <li><a href="/shop/earl-grey">Earl Grey, 100 g</a> <span class="price">7.50 EUR</span></li>
      <li><a href="/shop/sencha">Sencha, 100 g</a> <span class="price">9.20 EUR</span></li>
      <li><a href="/shop/assam">Assam second flush, 250 g</a> <span class="price">12.00 EUR</span></li>
      <li><a href="/shop/rooibos">Rooibos vanilla, 100 g</a> <span class="price">6.80 EUR</span></li>
      <li><a href="/shop/oolong">Milk oolong, 50 g</a> <span class="price">11.40 EUR</span></li>
    </ul>
    <p>Orders placed before 14:00 ship the same day. Free shipping from 40 EUR.</p>
  </main>
  <footer>
    <p>&copy; 2024 Example Tea Co. &middot; <a href="/privacy">Privacy</a> &middot; <a href="/contact">Contact</a></p>
  </footer>
</body>
</html>
"""

# gzip.compress(PAGE_HTML, compresslevel=9, mtime=0) with zlib 1.2.13, stored so that the capture
# does not depend on the zlib build. After editing PAGE_HTML, print the new value with
#   python -c "import base64, gzip, scripts.make_demo_capture as m; \
#              print(base64.b64encode(gzip.compress(m.PAGE_HTML, 9, mtime=0)).decode())"
PAGE_GZIP = base64.b64decode(
    "H4sIAAAAAAACA5VUwW7bMAy99ys4HbpLYsdBu3WrLWDosu2woUXXHXZkbCYWIkuGJKfL35eymnYLuha9WJRoPT4S76l8"
    "8/ny4ub31QLa0Gl5VMYFNJp1JciIeEDYyCOAsqOAULfoPIVKDGE1PRNjIqigSS7+YNdrghtCuLAZTOG7tZ5AE64gEE7A"
    "t6rvqYGVI9+Webr2gGywo0psFd321gUBtTWBDFe6VU1oq4a2qqbpuJmAMioo1FNfo6aqSDy0MhtwpCvhw05zDSLGaR2t"
    "KpH7gEHVuVeBstr72FmeWiuXttmNAHFPLoZxUxy2xBeK+6TBrSxxjy3kN9tRmaOEx0Pf2l7In/w9SODSDkHIT3GBwcds"
    "mUfASCF/5FB2qMyezFzetMrDLdHmrY/j5Ht8mLKDhlqj95XonW2GOniRMuNQ5L+cckKnp2tHOyEXHMJXDidQzGawTkx9"
    "j+YRkKcu5PvsdAaLX9dlHpPMl2H/X8GTYZ1w8+P6EvaHbP4KbL6JHU8vLuCJVcKC0oNnUcxPnytTzLPZK+o4a9XS8iCv"
    "UwBbNErrF7t5l529ooq12pq1kD+U3kDaTOD5Nors5OkCZT7o+6iXl45V5KHXWLPjlrSyjqA4+cjcow0htAQ8QYIGdxl8"
    "cUTJnsqs2Z+2g1SENd8nXe7FWK6sDQ8m6eVxbfvdOcxn8xM4fAKOO9U0Npz/JX7uYos1S+8qBWOfT/wX3Y812+QiBckl"
    "91z2FMo8WZetMD5ed9Y09LfNBAAA"
)

NOT_FOUND_HTML = (
    b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    b"<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


# --- HTTP messages -------------------------------------------------------------------------------


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def request(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A request as sent: the headers in the given order; Content-Length added for a body."""
    if body:
        headers = [*headers, ("Content-Length", str(len(body)))]
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + b"\r\n" + body


def response(status: int, reason: str, headers: list[tuple[str, str]], body: bytes = b"",
             *, length: bool = True) -> bytes:
    """A response as sent; Content-Length added unless `length` is False (chunked, 101, HEAD)."""
    if length:
        headers = [*headers, ("Content-Length", str(len(body)))]
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + b"\r\n" + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def pretty_json(value: object) -> bytes:
    return json.dumps(value, indent=2).encode() + b"\n"


# --- websocket and TLS framing -------------------------------------------------------------------


def websocket_accept(key: str) -> str:
    """RFC 6455 4.2.2: the Sec-WebSocket-Accept answer to a Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode() + WEBSOCKET_GUID).digest()).decode()


def websocket_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame (RFC 6455 5.2); clients must mask, servers must not."""
    mask_bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, mask_bit | size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, mask_bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([0x80 | opcode, mask_bit | 127]) + struct.pack("!Q", size)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _vector(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def _extension(kind: int, data: bytes) -> bytes:
    return struct.pack("!H", kind) + _vector(2, data)


def tls_record(content_type: int, payload: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", content_type, version, len(payload)) + payload


def client_hello(rng: random.Random, sni: bytes, alpn: list[bytes]) -> bytes:
    """A TLS 1.3 ClientHello record laid out as Firefox sends it (RFC 8446 4.1.2)."""
    suites = [0x1301, 0x1303, 0x1302, 0xC02B, 0xC02F, 0xCCA9, 0xCCA8, 0xC02C, 0xC030, 0xC00A,
              0xC009, 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
    extensions = b"".join([
        _extension(0, _vector(2, b"\x00" + _vector(2, sni))),  # server_name: host_name
        _extension(23, b""),  # extended_master_secret
        _extension(0xFF01, b"\x00"),  # renegotiation_info
        _extension(10, _vector(2, struct.pack("!6H", 0x001D, 0x0017, 0x0018, 0x0019, 0x0100,
                                              0x0101))),  # supported_groups
        _extension(11, _vector(1, b"\x00")),  # ec_point_formats: uncompressed
        _extension(35, b""),  # session_ticket
        _extension(16, _vector(2, b"".join(_vector(1, p) for p in alpn))),  # ALPN
        _extension(5, b"\x01\x00\x00\x00\x00"),  # status_request: OCSP
        _extension(51, _vector(2, struct.pack("!H", 0x001D) + _vector(2, rng.randbytes(32)))),
        _extension(43, _vector(1, struct.pack("!2H", 0x0304, 0x0303))),  # supported_versions
        _extension(13, _vector(2, struct.pack("!11H", 0x0403, 0x0503, 0x0603, 0x0804, 0x0805,
                                              0x0806, 0x0401, 0x0501, 0x0601, 0x0203, 0x0201))),
        _extension(45, _vector(1, b"\x01")),  # psk_key_exchange_modes: psk_dhe_ke
        _extension(28, struct.pack("!H", 0x4001)),  # record_size_limit
    ])
    body = (struct.pack("!H", 0x0303) + rng.randbytes(32) + _vector(1, rng.randbytes(32))
            + _vector(2, struct.pack(f"!{len(suites)}H", *suites)) + _vector(1, b"\x00")
            + _vector(2, extensions))
    return tls_record(0x16, b"\x01" + _vector(3, body), version=0x0301)


def server_hello(rng: random.Random, session_id: bytes) -> bytes:
    """The TLS 1.3 ServerHello record choosing TLS_AES_128_GCM_SHA256 and x25519."""
    extensions = (_extension(43, struct.pack("!H", 0x0304))
                  + _extension(51, struct.pack("!H", 0x001D) + _vector(2, rng.randbytes(32))))
    body = (struct.pack("!H", 0x0303) + rng.randbytes(32) + _vector(1, session_id)
            + struct.pack("!HB", 0x1301, 0) + _vector(2, extensions))
    return tls_record(0x16, b"\x02" + _vector(3, body))


def server_hello_tls12(rng: random.Random, alpn: bytes) -> bytes:
    """A TLS 1.2 ServerHello record choosing ECDHE-RSA-AES128-GCM-SHA256 and the ALPN `alpn`,
    then the rest of the server's flight (Certificate, ServerKeyExchange, ServerHelloDone)."""
    extensions = (_extension(0xFF01, b"\x00") + _extension(23, b"")
                  + _extension(16, _vector(2, _vector(1, alpn))))
    body = (struct.pack("!H", 0x0303) + rng.randbytes(32) + _vector(1, rng.randbytes(32))
            + struct.pack("!HB", 0xC02F, 0) + _vector(2, extensions))
    rest = (b"\x0b" + _vector(3, _vector(3, _vector(3, rng.randbytes(900))))  # one certificate
            + b"\x0c" + _vector(3, b"\x03\x00\x1d" + _vector(1, rng.randbytes(32))
                                + b"\x08\x04" + _vector(2, rng.randbytes(256)))
            + b"\x0e" + _vector(3, b""))
    return tls_record(0x16, b"\x02" + _vector(3, body) + rest)


CHANGE_CIPHER_SPEC = tls_record(0x14, b"\x01")


def application_data(rng: random.Random, size: int) -> bytes:
    """An encrypted record: `size` bytes of ciphertext (AEAD tag included) look random."""
    return tls_record(0x17, rng.randbytes(size))


# --- connections seen from the client host -------------------------------------------------------


@dataclass
class Session:
    """A TCP connection as a capture on the client host sees it: the client's segments leave at
    once, the server's arrive one round trip (plus the server's own time) after what they answer."""

    conversation: TcpConversation
    rtt: float

    @classmethod
    def start(cls, rng: random.Random, client: str, server: tuple[str, int], at: float,
              rtt: float) -> Session:
        conversation = TcpConversation(
            client=(client, rng.randrange(32768, 61000)),
            server=server,
            client_isn=rng.getrandbits(32),
            server_isn=rng.getrandbits(32),
            mss=1440 if ":" in client else 1460,
            start=CAPTURE_START + at,
            step=STEP,
            auto_ack=False,
            window=64240,
        )
        return cls(conversation, rtt)

    @property
    def now(self) -> float:
        return self.conversation.now()

    @property
    def packets(self) -> list[Packet]:
        return self.conversation.packets

    def wait(self, seconds: float) -> None:
        self.conversation.idle(seconds)

    def syn_options(self) -> bytes:
        return tcp_options(mss=self.conversation.mss, sack_permitted=True)

    def connect(self) -> None:
        c = self.conversation
        c.send_segment(True, "S", options=self.syn_options())
        c.idle(self.rtt)
        c.send_segment(False, "SA", options=self.syn_options())
        c.idle(TURNAROUND)
        c.send_segment(True, "A")

    def send(self, data: bytes) -> None:
        """The client sends `data` (PSH on its last segment); nothing is acknowledged yet."""
        self.conversation.client_send(data, ack=False)

    def server_ack(self) -> None:
        """The server's bare ACK of what the client sent, one round trip later."""
        self.conversation.idle(self.rtt)
        self.conversation.server_ack()

    def reply(self, data: bytes, think: float = 0.0, *, after_ack: bool = False) -> None:
        """The server answers `think` seconds after the request reached it; the client ACKs.
        With `after_ack` the clock is already one round trip on (the server ACKed first)."""
        self.conversation.idle(think if after_ack else self.rtt + think)
        self.conversation.server_send(data, ack=False)
        self.conversation.idle(TURNAROUND)
        self.conversation.client_ack()

    def push(self, data: bytes, *, ack: bool = True) -> None:
        """The server sends unprompted (a websocket message); the client ACKs at once."""
        self.conversation.server_send(data, ack=False)
        if ack:
            self.conversation.idle(TURNAROUND)
            self.conversation.client_ack()

    def close_from_client(self) -> None:
        c = self.conversation
        c.client_fin(ack=False)
        c.idle(self.rtt)
        c.server_fin(ack=False)
        c.idle(TURNAROUND)
        c.client_ack()

    def close_from_server(self) -> None:
        """The server closes (its FIN arrives now); the client ACKs it with its own FIN."""
        c = self.conversation
        c.server_fin(ack=False)
        c.idle(TURNAROUND)
        c.client_fin(ack=False)
        c.idle(self.rtt)
        c.server_ack()


def nginx_headers(ts: float, content_type: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Server", NGINX), ("Date", http_date(ts)), ("Content-Type", content_type), *extra]


# --- the demo's connections, in the order they open ----------------------------------------------


ORDERS = [
    {"id": 39, "customer_id": 1021, "status": "shipped", "total": "23.40", "currency": "EUR",
     "created_at": "2024-06-16T17:02:11Z"},
    {"id": 40, "customer_id": 877, "status": "paid", "total": "12.00", "currency": "EUR",
     "created_at": "2024-06-16T19:45:03Z"},
    {"id": 41, "customer_id": 1187, "status": "pending", "total": "7.50", "currency": "EUR",
     "created_at": "2024-06-17T07:58:40Z"},
]
NEW_ORDER = {
    "customer_id": 1187,
    "items": [{"sku": "TEA-EARLGREY-100", "quantity": 2}, {"sku": "TEA-SENCHA-100", "quantity": 1}],
    "shipping": {"method": "standard", "country": "NL"},
    "note": "Please leave the parcel at the door",
}
CREATED_ORDER = {
    "id": 42,
    "customer_id": 1187,
    "status": "pending",
    "items": [
        {"sku": "TEA-EARLGREY-100", "quantity": 2, "unit_price": "7.50"},
        {"sku": "TEA-SENCHA-100", "quantity": 1, "unit_price": "9.20"},
    ],
    "total": "24.20",
    "currency": "EUR",
    "created_at": "2024-06-17T08:00:03Z",
}


def rest_calls(rng: random.Random) -> Session:
    """python-requests on one keep-alive connection: list, create, fetch an order."""
    s = Session.start(rng, WORKSTATION, (API, 80), 0.30, LAN_RTT)
    common = [("Host", "api.internal"), ("User-Agent", REQUESTS),
              ("Accept-Encoding", "gzip, deflate"), ("Accept", "*/*"), ("Connection", "keep-alive"),
              ("Authorization", "Bearer demo-token-3f9a2c")]
    s.connect()
    s.wait(0.0011)
    s.send(request("GET", "/api/v1/orders?limit=3", common))
    s.reply(response(200, "OK", nginx_headers(s.now, "application/json",
                                              ("Connection", "keep-alive"),
                                              ("X-Total-Count", "41")),
                     pretty_json(ORDERS)), think=0.0123)
    s.wait(2.91)
    s.send(request("POST", "/api/v1/orders", [*common, ("Content-Type", "application/json")],
                   json.dumps(NEW_ORDER).encode()))
    s.reply(response(201, "Created", nginx_headers(s.now, "application/json",
                                                   ("Connection", "keep-alive"),
                                                   ("Location", "/api/v1/orders/42")),
                     pretty_json(CREATED_ORDER)), think=0.0347)
    s.wait(3.14)
    s.send(request("GET", "/api/v1/orders/42", common))
    s.reply(response(200, "OK", nginx_headers(s.now, "application/json",
                                              ("Connection", "keep-alive"),
                                              ("ETag", '"a41c-42-1718611203"')),
                     pretty_json(CREATED_ORDER)), think=0.0081)
    s.wait(0.21)
    s.close_from_client()
    return s


def firefox_headers(accept: str, dest: str, mode: str,
                    *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        ("Host", "www.example.com"),
        ("User-Agent", FIREFOX),
        ("Accept", accept),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Connection", "keep-alive"),
        *extra,
        ("Sec-Fetch-Dest", dest),
        ("Sec-Fetch-Mode", mode),
    ]


def gzip_page(rng: random.Random) -> Session:
    """Firefox loads www.example.com: a chunked, gzip-compressed page sent in three flushes."""
    s = Session.start(rng, WORKSTATION, (WEB, 80), 2.00, WEB_RTT)
    s.connect()
    s.send(request("GET", "/", firefox_headers(
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
        "document", "navigate", ("Upgrade-Insecure-Requests", "1"), ("Priority", "u=0, i"))))
    head = response(200, "OK", nginx_headers(s.now, "text/html; charset=utf-8",
                                             ("Transfer-Encoding", "chunked"),
                                             ("Connection", "keep-alive"),
                                             ("Vary", "Accept-Encoding"),
                                             ("Content-Encoding", "gzip")), length=False)
    pieces = [PAGE_GZIP[:200], PAGE_GZIP[200:420], PAGE_GZIP[420:]]
    s.reply(head + chunk(pieces[0]), think=0.0042)
    s.wait(0.0315)
    s.push(chunk(pieces[1]), ack=False)
    s.wait(0.0228)
    s.push(chunk(pieces[2]) + b"0\r\n\r\n")
    s.wait(12.0)  # nginx keepalive_timeout: the server closes the idle connection
    s.close_from_server()
    return s


def favicon(rng: random.Random, at: float) -> Session:
    """Firefox asks for /favicon.ico on a second connection: 404."""
    s = Session.start(rng, WORKSTATION, (WEB, 80), at, WEB_RTT)
    s.connect()
    s.send(request("GET", "/favicon.ico", firefox_headers(
        "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
        "image", "no-cors", ("Referer", "http://www.example.com/"), ("Priority", "u=6"))))
    s.reply(response(404, "Not Found", nginx_headers(s.now, "text/html",
                                                     ("Connection", "keep-alive")),
                     NOT_FOUND_HTML), think=0.0007)
    s.wait(12.0)
    s.close_from_server()
    return s


def monthly_report_csv(rng: random.Random) -> bytes:
    rows = ["date,region,orders,revenue_eur"]
    for day in range(1, 32):
        for region in ("north", "south"):
            orders = rng.randrange(8, 60)
            revenue = orders * rng.randrange(900, 2400) / 100
            rows.append(f"2024-05-{day:02d},{region},{orders},{revenue:.2f}")
    return ("\n".join(rows) + "\n").encode()


def slow_report(rng: random.Random) -> Session:
    """curl fetches a CSV report from gunicorn, which thinks for 2.5 s, then closes."""
    s = Session.start(rng, WORKSTATION, (REPORTS, 8000), 4.50, LAN_RTT)
    s.connect()
    s.send(request("GET", "/reports/monthly.csv", [
        ("Host", "reports.internal:8000"), ("User-Agent", CURL), ("Accept", "*/*")]))
    s.server_ack()
    body = monthly_report_csv(rng)
    s.reply(response(200, "OK", [
        ("Server", "gunicorn"), ("Date", http_date(s.now + 2.5)), ("Connection", "close"),
        ("Content-Type", "text/csv; charset=utf-8"),
        ("Content-Disposition", 'attachment; filename="monthly-2024-05.csv"')], body),
        think=2.5, after_ack=True)
    s.close_from_server()
    return s


def tls_session(rng: random.Random) -> Session:
    """An HTTPS (h2) session with api.example.com: handshake in clear, then ciphertext."""
    s = Session.start(rng, WORKSTATION, (TLS_SERVER, 443), 6.00, TLS_RTT)
    s.connect()
    hello = client_hello(rng, b"api.example.com", [b"h2", b"http/1.1"])
    s.send(hello)
    session_id = hello[5 + 4 + 2 + 32 + 1 : 5 + 4 + 2 + 32 + 1 + 32]
    # ServerHello, then EncryptedExtensions, Certificate, CertificateVerify and Finished encrypted.
    s.reply(server_hello(rng, session_id) + CHANGE_CIPHER_SPEC + application_data(rng, 2877),
            think=0.0031)
    s.send(CHANGE_CIPHER_SPEC + application_data(rng, 53)  # Finished
           + application_data(rng, 162))  # HTTP/2 preface, SETTINGS, HEADERS
    s.reply(application_data(rng, 239) + application_data(rng, 239)  # two session tickets
            + application_data(rng, 46) + application_data(rng, 512), think=0.0089)
    for gap, request_size, response_size in ((3.21, 97, 1386), (4.66, 121, 388)):
        s.wait(gap)
        s.send(application_data(rng, request_size))
        s.reply(application_data(rng, response_size), think=0.0154)
    s.wait(1.18)
    s.send(application_data(rng, 19))  # close_notify alert
    s.close_from_client()
    return s


def pipelined_pair(rng: random.Random) -> Session:
    """A status poller sends two GETs back to back over IPv6, then reads both answers."""
    s = Session.start(rng, WORKSTATION_V6, (API_V6, 80), 8.00, LAN_RTT)
    common = [("Host", "api.internal"), ("User-Agent", "statuspoller/0.9"),
              ("Accept", "application/json")]
    s.connect()
    s.send(request("GET", "/api/v1/health", common))
    s.send(request("GET", "/api/v1/version", common))
    s.conversation.idle(s.rtt + 0.0012)
    s.push(response(200, "OK", nginx_headers(s.now, "application/json",
                                             ("Connection", "keep-alive")),
                    pretty_json({"status": "ok", "database": "ok", "queue_depth": 3})), ack=False)
    s.wait(0.0004)
    s.push(response(200, "OK", nginx_headers(s.now, "application/json",
                                             ("Connection", "keep-alive")),
                    pretty_json({"version": "3.8.1", "commit": "9c2e4f1", "built": "2024-06-12"})))
    s.wait(0.0003)
    s.close_from_client()
    return s


def reset_by_server(rng: random.Random) -> Session:
    """curl asks the admin service on 8080 for metrics; its process is gone: RST."""
    s = Session.start(rng, WORKSTATION, (LEGACY, 8080), 10.50, LAN_RTT)
    s.connect()
    s.send(request("GET", "/admin/metrics", [
        ("Host", "10.0.0.82:8080"), ("User-Agent", CURL), ("Accept", "*/*")]))
    s.wait(s.rtt)
    s.conversation.rst(from_client=False)
    return s


def refused(rng: random.Random) -> Session:
    """curl tries port 9090, where nothing listens: SYN, RST-ACK."""
    s = Session.start(rng, WORKSTATION, (LEGACY, 9090), 11.20, LAN_RTT)
    s.conversation.send_segment(True, "S", options=s.syn_options())
    s.wait(s.rtt)
    s.conversation.send_segment(False, "RA", seq=0)
    return s


def websocket(rng: random.Random) -> Session:
    """Firefox opens a websocket (IPv6) for live order notifications; it stays open ~18 s."""
    s = Session.start(rng, WORKSTATION_V6, (API_V6, 80), 13.00, LAN_RTT)
    key = base64.b64encode(rng.randbytes(16)).decode()
    s.connect()
    s.send(request("GET", "/ws/orders", [
        ("Host", "api.internal"), ("User-Agent", FIREFOX), ("Accept", "*/*"),
        ("Accept-Language", "en-US,en;q=0.5"), ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Sec-WebSocket-Version", "13"), ("Origin", "http://api.internal"),
        ("Sec-WebSocket-Key", key), ("Connection", "keep-alive, Upgrade"),
        ("Sec-Fetch-Dest", "empty"), ("Sec-Fetch-Mode", "websocket"),
        ("Sec-Fetch-Site", "same-origin"), ("Pragma", "no-cache"), ("Cache-Control", "no-cache"),
        ("Upgrade", "websocket")]))
    s.reply(response(101, "Switching Protocols", [
        ("Server", NGINX), ("Date", http_date(s.now)), ("Connection", "upgrade"),
        ("Upgrade", "websocket"), ("Sec-WebSocket-Accept", websocket_accept(key))],
        length=False), think=0.0009)

    def client_message(opcode: int, payload: bytes) -> None:
        s.send(websocket_frame(opcode, payload, rng.randbytes(4)))

    def server_message(opcode: int, payload: bytes) -> None:
        s.push(websocket_frame(opcode, payload))

    s.wait(0.0213)
    client_message(1, b'{"type":"subscribe","channel":"orders"}')
    s.reply(websocket_frame(1, b'{"type":"subscribed","channel":"orders"}'), think=0.0004)
    for gap, order_id, total in ((3.84, 43, "18.90"), (4.17, 44, "7.50")):
        s.wait(gap)
        server_message(1, json.dumps({"type": "order.created", "id": order_id,
                                      "total": total, "currency": "EUR"}).encode())
    s.wait(2.95)
    server_message(9, b"keepalive")  # ping
    s.wait(0.0002)
    client_message(10, b"keepalive")  # pong
    s.server_ack()
    s.wait(3.62)
    server_message(1, json.dumps({"type": "order.updated", "id": 42, "status": "paid"}).encode())
    s.wait(2.9)
    client_message(8, struct.pack("!H", 1000))  # the tab is closed: close, 1000 normal
    s.reply(websocket_frame(8, struct.pack("!H", 1000)), think=0.0003)
    s.close_from_server()  # RFC 6455 7.1.1: the server closes the TCP connection first
    return s


def escape_sequences(rng: random.Random) -> Session:
    """curl posts a comment whose User-Agent and body hold terminal escape sequences."""
    s = Session.start(rng, WORKSTATION, (API, 80), 17.50, LAN_RTT)
    s.connect()
    s.send(request("POST", "/api/v1/comments", [
        ("Host", "api.internal"), ("User-Agent", EVIL_AGENT), ("Accept", "*/*"),
        ("Content-Type", "text/plain; charset=utf-8")], EVIL_COMMENT))
    s.reply(response(202, "Accepted", nginx_headers(s.now, "application/json",
                                                    ("Connection", "close")),
                     pretty_json({"id": 7, "status": "queued for moderation"})), think=0.0061)
    s.close_from_server()
    return s


def head_request(rng: random.Random) -> Session:
    """curl -I: a HEAD whose answer announces a length but carries no body."""
    s = Session.start(rng, WORKSTATION, (API, 80), 24.20, LAN_RTT)
    s.connect()
    s.send(request("HEAD", "/api/v1/orders/42", [
        ("Host", "api.internal"), ("User-Agent", CURL), ("Accept", "*/*")]))
    size = len(pretty_json(CREATED_ORDER))
    s.reply(response(200, "OK", nginx_headers(s.now, "application/json",
                                              ("Content-Length", str(size)),
                                              ("Connection", "keep-alive"),
                                              ("ETag", '"a41c-42-1718611203"')), length=False),
            think=0.0052)
    s.wait(0.0006)
    s.close_from_client()
    return s


def pending_orders(rng: random.Random) -> Session:
    """python-requests polls for pending orders on a fresh connection near the end."""
    s = Session.start(rng, WORKSTATION, (API, 80), 27.60, LAN_RTT)
    s.connect()
    s.wait(0.0009)
    s.send(request("GET", "/api/v1/orders?status=pending", [
        ("Host", "api.internal"), ("User-Agent", REQUESTS), ("Accept-Encoding", "gzip, deflate"),
        ("Accept", "*/*"), ("Connection", "keep-alive"),
        ("Authorization", "Bearer demo-token-3f9a2c")]))
    pending = [{"id": 43, "customer_id": 655, "status": "pending", "total": "18.90",
                "currency": "EUR", "created_at": "2024-06-17T08:00:20Z"},
               {"id": 44, "customer_id": 1302, "status": "pending", "total": "7.50",
                "currency": "EUR", "created_at": "2024-06-17T08:00:24Z"}]
    s.reply(response(200, "OK", nginx_headers(s.now, "application/json",
                                              ("Connection", "keep-alive"),
                                              ("X-Total-Count", "2")),
                     pretty_json(pending)), think=0.0094)
    s.wait(0.18)
    s.close_from_client()
    return s


def demo_sessions() -> list[Session]:
    rng = random.Random(SEED)
    sessions = [rest_calls(rng)]
    page = gzip_page(rng)
    sessions.append(page)
    # Firefox asks for the icon as soon as the page's head has arrived.
    sessions.append(favicon(rng, page.packets[4][0] - CAPTURE_START + 0.0021))
    sessions += [slow_report(rng), tls_session(rng), pipelined_pair(rng), reset_by_server(rng),
                 refused(rng), websocket(rng), escape_sequences(rng), head_request(rng),
                 pending_orders(rng)]
    return sessions


def merge(sessions: list[Session]) -> list[Packet]:
    """All frames in time order; a tie keeps the order of `sessions` (the sort is stable)."""
    return sorted((p for s in sessions for p in s.packets), key=lambda p: p[0])


def demo_packets() -> list[Packet]:
    return merge(demo_sessions())


# --- escapes.pcap: escape sequences in each part of a request ------------------------------------


# A server name and an application protocol with ESC, CR, NUL, a C1 control (0x9b, CSI to some
# terminals), a Latin-1 letter and a backslash typed before "x1b": shown escaped once, the
# backslash doubled, so the typed "\x1b" reads differently from the escaped ESC.
EVIL_SNI = b"ev\x1bil\r\x00\x9b\xe9\\x1b.test"
EVIL_ALPN = b"h\x1b\r\x00\xe9\\2"


def escape_packets() -> list[Packet]:
    """Three requests with a raw OSC sequence (ESC ] 2 ; title BEL) in the request target (which
    h11 refuses), in a header value, and in a body; the answers carry some too. Then a TLS 1.2
    handshake whose SNI and ALPN (offered, and selected by the server) hold control bytes."""
    rng = random.Random(SEED + 1)
    osc = "\x1b]2;title\x07"
    base = [("Host", "victim.internal"), ("User-Agent", CURL), ("Accept", "*/*")]
    exchanges = [
        (request("GET", f"/{osc}", base),
         response(400, "Bad Request", nginx_headers(CAPTURE_START, "text/html",
                                                    ("Connection", "close")),
                  b"<html><body><h1>400 Bad Request</h1></body></html>\r\n")),
        (request("GET", "/profile", [*base, ("X-Comment", f"hello {osc}world"),
                                     ("Cookie", "theme=\x1b[31mred\x1b[0m")]),
         response(200, "OK", nginx_headers(CAPTURE_START + 1, "text/plain",
                                           ("X-Reply", f"ok{osc}"), ("Connection", "close")),
                  b"profile\n")),
        (request("POST", "/submit", [*base, ("Content-Type", "text/plain")],
                 f"clear:\x1b[2J\x1b[H title:{osc} bell:\x07 done\n".encode()),
         response(200, "OK", nginx_headers(CAPTURE_START + 2, "text/plain",
                                           ("Connection", "close")),
                  b"echo: \x1b[1;31mred\x1b[0m \x1b]0;pwned\x07\n")),
    ]
    sessions = []
    for i, (req, resp) in enumerate(exchanges):
        s = Session.start(rng, WORKSTATION, (API, 80), float(i), LAN_RTT)
        s.connect()
        s.send(req)
        s.reply(resp, think=0.001)
        s.close_from_server()
        sessions.append(s)
    s = Session.start(rng, WORKSTATION, (TLS_SERVER, 443), 3.0, TLS_RTT)
    s.connect()
    s.send(client_hello(rng, EVIL_SNI, [b"h2", EVIL_ALPN]))
    s.reply(server_hello_tls12(rng, EVIL_ALPN), think=0.0031)
    s.send(application_data(rng, 40))  # ClientKeyExchange and Finished, as far as we can tell
    s.reply(application_data(rng, 51), think=0.001)
    s.close_from_client()
    sessions.append(s)
    return merge(sessions)


# --- command line --------------------------------------------------------------------------------


def write_demo(path: str | Path) -> int:
    return write_pcap(path, demo_packets())


def write_escapes(path: str | Path) -> int:
    return write_pcap(path, escape_packets())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default=str(DEMO_PATH), help="where to write the demo capture")
    parser.add_argument("--escapes", default=str(ESCAPES_PATH),
                        help="where to write the escape-sequence capture")
    args = parser.parse_args(argv)
    if gzip.decompress(PAGE_GZIP) != PAGE_HTML:
        parser.error("PAGE_GZIP no longer holds PAGE_HTML: regenerate it (see its comment)")
    packets = demo_packets()
    Path(args.demo).parent.mkdir(parents=True, exist_ok=True)
    write_pcap(args.demo, packets)
    duration = packets[-1][0] - packets[0][0]
    print(f"{args.demo}: {len(packets)} packets, {duration:.1f} s")
    count = write_escapes(args.escapes)
    print(f"{args.escapes}: {count} packets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
