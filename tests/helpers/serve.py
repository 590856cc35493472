"""A real HTTP server on 127.0.0.1 in the test process, serving files and misbehaving on purpose.

    with ImageServer() as server:
        server.files["/a.png"] = png_bytes
        url = server.url("/a.png")

It speaks HTTP/1.1 and keeps connections open between requests (`connections` counts those made), over TLS when
given a certificate (`ImageServer(tls=self_signed(folder))`: https URLs). A request naming a whole URL (as a client
asks a proxy) is answered for its path, and counted in `proxied`.

Besides `files` (path -> bytes, 404 for any other path) it has routes that fail the way the web does:
- `/flaky/N/<path>`: 503 (Retry-After: 0) for the first N requests of that URL, then the file;
- `/busy/<path>`: 429 with Retry-After: 0 once, then the file;
- `/slow/<seconds>/<path>`: waits, then the file;
- `/cut/<path>`: announces the whole length, sends half, closes;
- `/moved/<path>`: 302 to the file;
- `/nolength/<path>`: the file without Content-Length (read to the close);
- `/trickle/<bytes>/<seconds>/<path>`: the file's length announced, then `bytes` of it every `seconds` (`trickling`
  is set once the first piece is sent: a test's pause point);
- `/ftp/<path>`: 302 to ftp://127.0.0.1/<path>;
- `/to/<location>`: 302 to `location`, percent-decoded (`/to/file%3A%2F%2F%2Fetc%2Fpasswd`);
- `/loop/<n>`: 302 to `/loop/<n + 1>`, for ever.
`hits[path]` counts the requests of each path as asked, so a test can tell a refetch from a resume.
"""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from urllib.parse import unquote, urlsplit


class ImageServer:
    def __init__(self, tls: tuple[str, str] | None = None):
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.connections = 0
        self.proxied: list[str] = []
        self.trickling = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60  # an idle kept connection ends after this

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path
                if "://" in path:  # asked as a proxy is
                    server.proxied.append(path)
                    parts = urlsplit(path)
                    path = parts.path + (f"?{parts.query}" if parts.query else "")
                with server._lock:
                    server.hits[path] += 1
                    count = server.hits[path]
                try:
                    server._answer(self, path, count)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (a size cap): fine
                    self.close_connection = True

        context = None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):  # on the connection's own thread
                raw = request
                with server._lock:
                    server.connections += 1
                    server._open.add(raw)
                # as web servers do on kept connections: a response's body is not held back (Nagle) until the
                # client acknowledges its headers, which it may delay by 40 ms
                request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    if context is not None:
                        request = context.wrap_socket(request, server_side=True)
                    super().finish_request(request, client_address)
                except (OSError, ssl.SSLError):  # a client that gave up (or refused our certificate)
                    pass
                finally:
                    with server._lock:
                        server._open.discard(raw)

        self.scheme = "https" if tls else "http"
        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_port}{path}"

    def close_idle(self) -> None:
        """Closes every connection clients keep open, as a server does after its keep-alive time."""
        with self._lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler, path: str, count: int) -> None:
        parts = path.split("/")
        if path.startswith("/flaky/") and count <= int(parts[2]):
            return _status(handler, 503, {"Retry-After": "0"})
        if path.startswith("/flaky/"):
            return self._answer(handler, "/" + "/".join(parts[3:]), count)
        if path.startswith("/busy/") and count == 1:
            return _status(handler, 429, {"Retry-After": "0"})
        if path.startswith("/busy/"):
            return self._answer(handler, "/" + "/".join(parts[2:]), count)
        if path.startswith("/slow/"):
            handler.close_connection = True  # a client that gave up waiting has gone
            time.sleep(float(parts[2]))
            return self._answer(handler, "/" + "/".join(parts[3:]), count)
        if path.startswith("/moved/"):
            return _status(handler, 302, {"Location": "/" + "/".join(parts[2:])})
        if path.startswith("/to/"):
            return _status(handler, 302, {"Location": unquote(path[len("/to/") :])})
        if path.startswith("/loop/"):
            return _status(handler, 302, {"Location": f"/loop/{int(parts[2]) + 1}"})
        if path.startswith("/ftp/"):
            return _status(handler, 302, {"Location": "ftp://127.0.0.1/" + "/".join(parts[2:])})
        if path.startswith("/trickle/"):
            body = self.files.get("/" + "/".join(parts[4:]))
            if body is None:
                return _status(handler, 404)
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.close_connection = True
            step, pause = int(parts[2]), float(parts[3])
            for start in range(0, len(body), step):
                handler.wfile.write(body[start : start + step])
                handler.wfile.flush()
                self.trickling.set()
                time.sleep(pause)
            return None
        if path.startswith("/cut/"):
            body = self.files.get("/" + "/".join(parts[2:]))
            if body is None:
                return _status(handler, 404)
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            handler.close_connection = True
            return None
        if path.startswith("/nolength/"):
            body = self.files.get("/" + "/".join(parts[2:]))
            if body is None:
                return _status(handler, 404)
            handler.send_response(200)
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(body)
            handler.close_connection = True
            return None
        body = self.files.get(path)
        if body is None:
            return _status(handler, 404)
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        handler.wfile.write(body)
        return None


def _status(handler, code: int, headers: dict[str, str] | None = None) -> None:
    handler.send_response(code)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def self_signed(folder: str) -> tuple[str, str]:
    """(certificate, key) files for 127.0.0.1, self-signed, written into `folder`: with `cryptography` where it is
    installed, else with the `openssl` command."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    try:
        from cryptography import x509
    except ImportError:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert, key
    import datetime
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(private, hashes.SHA256())
    )
    with open(cert, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert, key
