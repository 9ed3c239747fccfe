"""Tests for the chdb-backed ClickHouse HTTP server, over real HTTP on a free port."""

import concurrent.futures
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import lz4.block
import lz4.frame
from clickhouse_cityhash.cityhash import CityHash128

HERE = os.path.dirname(os.path.abspath(__file__))


def _test_ports():
    """Ports from 10000 up to the kernel's first ephemeral port, starting at
    an offset drawn from the pid so that parallel runs stay apart."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    low = 10000
    high = max(ephemeral, low + 1000)
    start = os.getpid() * 7919 % (high - low)
    for i in range(high - low):
        yield low + (start + i) % (high - low)


_PORTS = _test_ports()


def free_port():
    """A port nothing listens on, below the ephemeral range.

    Not bind(0): that port is ephemeral, so while the server starts, a poll
    of it may connect to itself (its local port chosen equal to the one
    polled), or another connection may take it, and the server's bind fails.
    """
    for port in _PORTS:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def native_lz4(raw):
    """Compresses like the clickhouse crate does for `decompress=1` inserts."""
    compressed = lz4.block.compress(raw, store_size=False)
    block = bytes([0x82]) + struct.pack("<II", len(compressed) + 9, len(raw)) + compressed
    h = CityHash128(block)
    return struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF) + block


class ServerTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="chdb-http-test-")
        self.start()

    def start(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server.py"), "--port", str(self.port), "--path", self.dir],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.request("/ping")[1] == b"Ok.\n":
                    return
            except OSError:
                time.sleep(0.2)
        self.fail("server did not start")

    def tearDown(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def request(self, path, body=None, headers=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def query(self, sql, **params):
        params = urllib.parse.urlencode(params)
        return self.request("/?" + params, sql.encode())

    def test_query_in_body_and_url(self):
        self.assertEqual(self.query("SELECT 1 + 1")[1], b"2\n")
        status, body, _ = self.request("/?query=" + urllib.parse.quote("SELECT 40 + 2"))
        self.assertEqual((status, body), (200, b"42\n"))

    def test_error_format(self):
        status, body, headers = self.query("SELECT * FROM no_such_table")
        self.assertEqual(status, 500)
        self.assertEqual(headers["X-ClickHouse-Exception-Code"], "60")
        self.assertTrue(body.startswith(b"Code: 60. DB::Exception:"), body)

    def test_database_format_settings_and_params(self):
        self.query("CREATE DATABASE d")
        self.query("CREATE TABLE d.t (s String) ENGINE = MergeTree ORDER BY s")
        self.query("INSERT INTO t VALUES ('x')", database="d")
        self.assertEqual(self.query("SELECT count() FROM t", database="d")[1], b"1\n")
        self.assertEqual(self.query("SELECT 'a'", default_format="JSONEachRow")[1], b'{"\'a\'":"a"}\n')
        self.assertEqual(self.query("SELECT getSetting('max_threads')", max_threads="3")[1], b"3\n")
        # a setting applies to its own request only
        self.assertNotEqual(self.query("SELECT getSetting('max_threads')")[1], b"3\n")
        inj = "x'); DROP TABLE d.t; --"
        self.assertEqual(self.query("SELECT {v:String}", param_v=inj)[1].decode(), inj.replace("'", "\\'") + "\n")
        self.assertEqual(self.query("SELECT count() FROM d.t")[1], b"1\n")

    def test_rowbinary_insert_compressed_and_lz4_response(self):
        self.query("CREATE TABLE t (id UInt64, name String) ENGINE = MergeTree ORDER BY id")
        rows = b"".join(struct.pack("<Q", i) + bytes([len(n)]) + n for i, n in [(1, b"a"), (2, b"bb")])
        q = urllib.parse.urlencode({"query": "INSERT INTO t(id,name) FORMAT RowBinary", "decompress": "1"})
        status, body, _ = self.request("/?" + q, native_lz4(rows))
        self.assertEqual(status, 200, body)
        status, body, headers = self.request(
            "/?default_format=RowBinaryWithNamesAndTypes", b"SELECT id, name FROM t ORDER BY id",
            {"Accept-Encoding": "lz4"},
        )
        self.assertEqual(headers.get("Content-Encoding"), "lz4")
        raw = lz4.frame.decompress(body)
        self.assertTrue(raw.endswith(rows), raw)

    def test_corrupt_block_is_rejected(self):
        self.query("CREATE TABLE t (id UInt64) ENGINE = MergeTree ORDER BY id")
        block = bytearray(native_lz4(struct.pack("<Q", 7)))
        block[-1] ^= 0xFF
        q = urllib.parse.urlencode({"query": "INSERT INTO t FORMAT RowBinary", "decompress": "1"})
        status, body, headers = self.request("/?" + q, bytes(block))
        self.assertEqual((status, headers["X-ClickHouse-Exception-Code"]), (500, "40"))
        self.assertEqual(self.query("SELECT count() FROM t")[1], b"0\n")

    def test_concurrent_requests_and_persistence(self):
        self.query("CREATE TABLE t (id UInt64) ENGINE = MergeTree ORDER BY id")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: self.query(f"INSERT INTO t VALUES ({i})")[0], range(64)))
        self.assertEqual(set(results), {200})
        self.proc.kill()
        self.proc.wait()
        self.start()
        self.assertEqual(self.query("SELECT count(), sum(id) FROM t")[1], b"64\t2016\n")


if __name__ == "__main__":
    unittest.main()
