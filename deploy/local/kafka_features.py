#!/usr/bin/env python3
"""Sets a finalized feature level on a Kafka broker with the UpdateFeatures
API (key 57, v1), which librdkafka and the Kafka clients weir's stack has
do not offer:

    kafka_features.py HOST:PORT FEATURE LEVEL

part.sh runs it once on a new crabka-broker: a self-bootstrapped crabka
cluster finalizes transaction.version=2 (KIP-890), and its coordinator then
bumps the producer epoch on every EndTxn whatever the request version, which
librdkafka's transactional producer (transactions v1) takes for fencing.
Level 0 removes the feature (the broker falls back to classic
transactions); it is sent as a safe downgrade. Exits 0 when the broker
accepted it, or when it had no such feature finalized to remove.
Standard library only, so it runs on any python3.
"""

import socket
import struct
import sys

API_KEY, API_VERSION = 57, 1
SAFE_DOWNGRADE = 2
FEATURE_NOT_FOUND = 95  # removing a feature that is not finalized


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def compact_string(s: str) -> bytes:
    b = s.encode()
    return uvarint(len(b) + 1) + b


class Reader:
    def __init__(self, buf: bytes):
        self.buf, self.at = buf, 0

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self.buf, self.at)
        self.at += struct.calcsize(fmt)
        return values

    def uvarint(self) -> int:
        shift = n = 0
        while True:
            byte = self.buf[self.at]
            self.at += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return n

    def compact_nullable_string(self):
        n = self.uvarint()
        if n == 0:
            return None
        s = self.buf[self.at:self.at + n - 1].decode()
        self.at += n - 1
        return s


def request(feature: str, level: int) -> bytes:
    client_id = b"weir-kafka-features"
    # Request header v2: the client id is a classic (int16-length) string.
    header = struct.pack(">hhih", API_KEY, API_VERSION, 1, len(client_id)) + client_id + b"\x00"
    update = compact_string(feature) + struct.pack(">hb", level, SAFE_DOWNGRADE) + b"\x00"
    # timeout_ms, feature_updates (a compact array of one), validate_only, tags
    body = struct.pack(">i", 30_000) + uvarint(2) + update + b"\x00" + b"\x00"
    message = header + body
    return struct.pack(">i", len(message)) + message


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit("kafka_features: the broker closed the connection")
        data += chunk
    return data


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    address, feature, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request(feature, level))
        (size,) = struct.unpack(">i", recv_exact(sock, 4))
        r = Reader(recv_exact(sock, size))
    r.take(">i")  # correlation id
    r.uvarint()  # response header tags
    _throttle, error = r.take(">ih")
    message = r.compact_nullable_string()
    ok = error == 0
    if not ok:
        print(f"kafka_features: {address}: error {error}: {message}", file=sys.stderr)
    for _ in range(max(r.uvarint() - 1, 0)):
        name = r.compact_nullable_string()
        (f_error,) = r.take(">h")
        f_message = r.compact_nullable_string()
        r.uvarint()
        absent = level == 0 and f_error == FEATURE_NOT_FOUND
        if f_error and not absent:
            print(f"kafka_features: {name}: error {f_error}: {f_message}", file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
