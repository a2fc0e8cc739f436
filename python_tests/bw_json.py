"""Raw JSON over a socket in the test suites: a stream parser (pipelined values, split UTF-8), a raw
connection (`Conn`), one-shot requests, and the checks of a BLD Remote answer.

Importable in every runtime (venv Python, Blender's Python): standard library only.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from bw_net import HOST, connect

__all__ = [
    "Conn",
    "assert_error",
    "assert_success",
    "blocking_code",
    "execute",
    "parse_all",
    "parse_one",
    "parse_values",
    "read_json",
    "read_until_eof",
    "read_values",
    "request",
    "stdout_of",
]

_DECODER = json.JSONDecoder()
_WHITE = " \t\n\r\x0b\x0c"  # what bytes.lstrip() skips


def parse_values(buf, limit: int) -> tuple[list, int]:
    """(values, bytes consumed): up to `limit` consecutive JSON values at the start of `buf`, white
    space before each skipped. An incomplete last value (or UTF-8 character) is left unconsumed."""
    try:
        text = bytes(buf).decode("utf-8")
    except UnicodeDecodeError as e:
        # A UTF-8 character split at the end of the buffer: parse the complete prefix.
        text = bytes(buf[: e.start]).decode("utf-8")
    values, pos, end = [], 0, 0
    while len(values) < limit:
        while pos < len(text) and text[pos] in _WHITE:
            pos += 1
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        values.append(value)
        end = pos
    return values, len(text[:end].encode("utf-8"))


def parse_one(buf, whole: bool = False):
    """(value, bytes consumed) if `buf` holds one complete JSON value, else None.

    whole=False: the value at the start of `buf` (after white space); what follows it is left for
    the next value (pipelined answers). whole=True: all of `buf` must be exactly one JSON value
    (json.loads), as a client that sends one request and reads one answer checks."""
    if whole:
        try:
            return json.loads(buf), len(buf)
        except ValueError:  # incomplete JSON, or a UTF-8 character split across reads
            return None
    values, used = parse_values(buf, 1)
    return (values[0], used) if values else None


def _recv_more(sock: socket.socket, data: bytearray, deadline: float | None, recv_size: int) -> None:
    """One recv appended to `data`. deadline None: the socket's own timeout applies. TimeoutError
    when nothing came in time, ConnectionError on EOF (both with what was received)."""
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete JSON response; received so far: {bytes(data[:500])!r}")
        sock.settimeout(left)
    try:
        chunk = sock.recv(recv_size)
    except TimeoutError:
        raise TimeoutError(f"no complete JSON response; received so far: {bytes(data[:500])!r}") from None
    if not chunk:
        raise ConnectionError(f"connection closed by the server; received: {bytes(data[:500])!r}")
    data += chunk


def read_json(
    sock: socket.socket,
    buf=b"",
    *,
    whole: bool = False,
    timeout: float | None = None,
    recv_size: int = 65536,
    ends_with: bytes | None = None,
):
    """Read from `sock` (after the bytes already in `buf`) until the bytes parse as one JSON value
    (`parse_one(.., whole)`). Returns (value, bytes it took, all bytes read): the caller keeps
    `all[used:]` for the next value.

    timeout: None, each recv waits as long as the socket's own timeout; else one deadline for the
    whole read. TimeoutError when no complete value came in time; ConnectionError on EOF.
    recv_size: the size of each recv. ends_with: try a parse only when the bytes so far (right-
    stripped) end with it, a cheap check for big answers (the benches' 10 MB read)."""
    data = bytearray(buf)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if data and (ends_with is None or data.rstrip().endswith(ends_with)):
            parsed = parse_one(data, whole)
            if parsed is not None:
                return parsed[0], parsed[1], data
        _recv_more(sock, data, deadline, recv_size)


def read_values(
    sock: socket.socket, n: int, buf=b"", *, timeout: float | None = None, recv_size: int = 65536
) -> tuple[list, bytes]:
    """The next `n` JSON values (pipelined answers) after the bytes in `buf`, and the bytes left
    over; each byte is parsed once however many answers come in one read. timeout as read_json."""
    data = bytearray(buf)
    deadline = None if timeout is None else time.monotonic() + timeout
    out: list = []
    while True:
        if data:
            values, used = parse_values(data, n - len(out))
            out += values
            del data[:used]
        if len(out) >= n:
            return out, bytes(data)
        _recv_more(sock, data, deadline, recv_size)


def read_until_eof(sock: socket.socket, timeout: float | None = None) -> tuple[bytes, bool]:
    """(bytes received, closed): everything the peer sends until it closes (EOF or reset).

    timeout=None: each recv waits as long as the socket's own timeout, and a TimeoutError
    propagates. Else each recv waits up to `timeout`, no recv starts after `timeout` has passed,
    and a timeout returns closed=False."""
    data = b""
    if timeout is None:
        deadline = None
    else:
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
    try:
        while deadline is None or time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except TimeoutError:
        if deadline is None:
            raise
        return data, False
    except (ConnectionResetError, BrokenPipeError):
        return data, True
    return data, False


def parse_all(data: bytes, lenient: bool = False) -> list:
    """Every JSON value in `data` (white space between them skipped).

    lenient=False: bytes that are not UTF-8 or not JSON raise. lenient=True (the soak's count of
    answers): bad UTF-8 is replaced, and anything unparsable makes the answer []."""
    text = data.decode("utf-8", "replace" if lenient else "strict")
    out, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            if lenient:
                return []
            raise
        out.append(value)


class Conn:
    """One raw TCP connection; `read()` accumulates bytes until they parse as one JSON value."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 60.0):
        self.sock = connect(port, host, timeout)
        self.timeout = timeout
        self.buf = b""

    def send(self, message) -> None:
        data = message if isinstance(message, (bytes, bytearray)) else json.dumps(message).encode("utf-8")
        self.sock.sendall(data)

    def send_pieces(self, data: bytes, sizes) -> None:
        """Send `data` in separate writes of the given sizes (the rest in one last write)."""
        pos = 0
        for n in sizes:
            self.sock.sendall(data[pos : pos + n])
            pos += n
        if pos < len(data):
            self.sock.sendall(data[pos:])

    def read(self, timeout: float | None = None) -> Any:
        """The next JSON value from the server. Raises TimeoutError, or ConnectionError on EOF."""
        return self.read_many(1, timeout)[0]

    def read_many(self, n: int, timeout: float | None = None, recv_size: int = 65536) -> list:
        """The next `n` JSON values (pipelined answers), all within one deadline `timeout`."""
        values, self.buf = read_values(
            self.sock, n, self.buf, timeout=self.timeout if timeout is None else timeout, recv_size=recv_size
        )
        return values

    def request(self, message, timeout: float | None = None) -> Any:
        self.send(message)
        return self.read(timeout)

    def at_eof(self, timeout: float) -> bool:
        """True if the server closes this connection (EOF or reset) within `timeout`."""
        data, closed = read_until_eof(self.sock, timeout)
        self.buf += data
        return closed

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request(port: int, type_: str, params: dict | None = None, host: str = HOST, timeout: float = 60.0) -> Any:
    """One-shot: connect, send one request, read one response, close."""
    with Conn(port, host, timeout) as c:
        return c.request({"type": type_, "params": params or {}})


def execute(port: int, code: str, host: str = HOST, timeout: float = 60.0, **params) -> Any:
    return request(port, "execute_code", {"code": code, **params}, host=host, timeout=timeout)


def assert_success(resp) -> Any:
    assert isinstance(resp, dict), resp
    assert resp.get("status") == "success", resp
    return resp["result"]


def assert_error(resp, error_code: str | None = None) -> dict:
    assert isinstance(resp, dict), resp
    assert resp.get("status") == "error", resp
    assert isinstance(resp.get("message"), str) and resp["message"].strip(), resp
    if error_code is not None:
        assert resp.get("error_code") == error_code, resp
    return resp


def stdout_of(result: dict) -> str:
    """The captured stdout of an execute_code result (plain or base64)."""
    import base64

    out = result["result"]
    if result.get("result_is_base64"):
        out = base64.b64decode(out).decode("utf-8")
    return out


def blocking_code(started: str, release: str, limit: float = 120.0) -> str:
    """execute_code source that occupies Blender's main thread until the file `release` exists.

    It creates `started` first, so a test knows the job is running (and so is first in line)."""
    return (
        "import os, time\n"
        f"open({started!r}, 'w').close()\n"
        f"deadline = time.monotonic() + {limit}\n"
        f"while not os.path.exists({release!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.005)\n"
        "print('released')\n"
    )
