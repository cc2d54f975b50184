"""A TCP proxy the test controls, in front of a real server (moto's S3): it forwards, cuts
(drops every open connection and closes each new one at once, as a network partition seen from
the client), or goes silent (accepts and never answers, as a hung store). Why by hand: no
installed package offers a fault-injecting proxy, and forty lines of sockets are enough."""

from __future__ import annotations

import socket
import threading
from typing import Literal

Mode = Literal["forward", "cut", "silent"]


class TcpProxy:
    """127.0.0.1:<port> -> `upstream_port`; `endpoint` is its URL; `mode` switches at once."""

    def __init__(self, upstream_port: int | None = None, mode: Mode = "forward"):
        self.upstream_port = upstream_port
        self.mode: Mode = mode
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: Mode) -> None:
        self.mode = mode
        if mode != "forward":
            with self._lock:
                for sock in self._open:
                    _close(sock)
                self._open.clear()

    def close(self) -> None:
        self._closed = True
        self.set("cut")
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "cut":
                _close(client)
                continue
            with self._lock:
                self._open.append(client)
            if self.mode == "silent":
                continue  # kept open, never answered
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.append(upstream)
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _close(src)
        _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
