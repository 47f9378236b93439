"""Real TLS sessions for the decryption tests, made in memory by Python's ssl module (OpenSSL):
a client and a server joined by memory buffers (no sockets, no root), the client writing its key
log as curl or a browser would. What each side wrote, in the order written, becomes a capture
with tests.synth; the key log is what `--keylog` would read.

Each session is made in a process of its own (`python -m tests.tls_sessions`, its arguments as
JSON on its standard input): Python's ssl
cannot choose a TLS 1.3 suite, but OpenSSL reads one from its configuration file
(OPENSSL_CONF), which only a new process takes. The server's certificate is made there too,
with the `cryptography` package (ECDSA P-256, or RSA 2048 for the suites that want RSA).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from tests.synth import TcpConversation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Session:
    flights: list[tuple[bool, bytes]]  # (from the client, what it wrote), in order
    keylog: str
    version: str  # as ssl says: "TLSv1.3"
    cipher: str  # OpenSSL's name of the suite
    requests: list[bytes]
    responses: list[bytes]
    resumed: bool = False  # the session resumes an earlier one (an abbreviated handshake)

    def packets(self, mss: int = 1460, extra: list[tuple[bool, bytes]] = (),  # type: ignore[assignment]
                close: bool = True, **conversation: object) -> list[tuple[float, bytes]]:
        """The session on the wire: a handshake, each flight (and `extra` ones) in segments, a
        close (unless not)."""
        conv = TcpConversation(server=("10.0.0.2", 443), mss=mss, **conversation)  # type: ignore[arg-type]
        packets = conv.handshake()
        for from_client, data in [*self.flights, *extra]:
            packets += conv.client_send(data) if from_client else conv.server_send(data)
        return packets + (conv.close() if close else [])


def session(version: str, cipher: str | None = None, exchanges: list[tuple[bytes, bytes]] | None = None,
            encrypt_then_mac: bool = True, resume: bool = False) -> Session:  # fmt: skip
    """A session of `version` ("TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1") using `cipher` (an
    OpenSSL suite name; for TLS 1.3 one of TLS_AES_128_GCM_SHA256 ...), carrying `exchanges`
    (request, response) one after the other. With `resume`, the session is a second one that
    resumes the first's (by session ticket or id; a TLS 1.3 PSK), the key log having both."""
    exchanges = exchanges or [(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n",
                               b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")]  # fmt: skip
    args = {"version": version, "cipher": cipher, "etm": encrypt_then_mac, "resume": resume,
            "exchanges": [[q.hex(), r.hex()] for q, r in exchanges]}  # fmt: skip
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if version == "TLSv1.3" and cipher:
            conf = os.path.join(tmp, "openssl.cnf")
            with open(conf, "w") as f:
                f.write("openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\n"
                        "system_default = defaults\n[defaults]\n"
                        f"Ciphersuites = {cipher}\n")  # fmt: skip
            env["OPENSSL_CONF"] = conf
        if version in ("TLSv1", "TLSv1.1"):  # OpenSSL 3 allows them only at security level 0
            args["seclevel0"] = True
        out = subprocess.run([sys.executable, "-m", "tests.tls_sessions"], input=json.dumps(args),
                             cwd=ROOT, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"the TLS session could not be made: {out.stderr.strip()[-400:]}")
    made = json.loads(out.stdout)
    return Session([(fc, bytes.fromhex(d)) for fc, d in made["flights"]], made["keylog"],
                   made["version"], made["cipher"], [q for q, _ in exchanges],
                   [r for _, r in exchanges], made["resumed"])  # fmt: skip


# --- the worker, in its own process --------------------------------------------------------------


def _certificate(directory: str, rsa: bool) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys
    from cryptography.x509.oid import NameOID

    key = (rsa_keys.generate_private_key(public_exponent=65537, key_size=2048) if rsa
           else ec.generate_private_key(ec.SECP256R1()))  # fmt: skip
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test.local")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))  # fmt: skip
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def _make(args: dict) -> dict:
    import ssl

    version = getattr(ssl.TLSVersion, args["version"].replace(".", "_"))
    cipher = args["cipher"]
    with tempfile.TemporaryDirectory() as tmp:
        rsa = bool(cipher) and "ECDSA" not in cipher and args["version"] != "TLSv1.3"
        cert, key = _certificate(tmp, rsa)
        keylog = os.path.join(tmp, "keys.log")
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert, key)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        for ctx in (server, client):
            ctx.minimum_version = ctx.maximum_version = version
            if args.get("seclevel0"):
                ctx.set_ciphers((cipher or "DEFAULT") + ":@SECLEVEL=0")
            elif cipher and args["version"] != "TLSv1.3":
                ctx.set_ciphers(cipher)
            if not args["etm"]:
                ctx.options |= 0x00080000  # SSL_OP_NO_ENCRYPT_THEN_MAC
        client.keylog_filename = keylog

        def connect(session: object = None) -> tuple[list[list[object]], ssl.SSLObject]:
            c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
            c = client.wrap_bio(c_in, c_out, server_side=False, server_hostname="test.local",
                                session=session)  # type: ignore[arg-type]
            s = server.wrap_bio(s_in, s_out, server_side=True)
            flights: list[list[object]] = []

            def pump() -> None:
                moved = True
                while moved:
                    moved = False
                    for out, into, from_client in ((c_out, s_in, True), (s_out, c_in, False)):
                        data = out.read()
                        if data:
                            flights.append([from_client, data.hex()])
                            into.write(data)
                            moved = True

            for _ in range(20):
                done = True
                for end in (c, s):
                    try:
                        end.do_handshake()
                    except ssl.SSLWantReadError:
                        done = False
                pump()
                if done:
                    break

            def read_all(end: ssl.SSLObject, size: int) -> bytes:
                got = b""
                while len(got) < size:
                    try:
                        got += end.read(size - len(got))
                    except ssl.SSLWantReadError:
                        pump()
                return got

            for request_hex, response_hex in args["exchanges"]:
                request, response = bytes.fromhex(request_hex), bytes.fromhex(response_hex)
                c.write(request)
                pump()
                assert read_all(s, len(request)) == request
                s.write(response)
                pump()
                assert read_all(c, len(response)) == response
            pump()
            return flights, c

        flights, c = connect()
        resumed = False
        if args.get("resume"):  # a second connection resuming the first one's session
            flights, c = connect(c.session)
            resumed = c.session_reused
        with open(keylog) as f:
            log = f.read()
        return {"flights": flights, "keylog": log, "version": c.version(),
                "cipher": c.cipher()[0], "resumed": resumed}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(_make(json.loads(sys.stdin.read()))))
