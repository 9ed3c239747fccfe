#!/usr/bin/env python3
"""ClickHouse HTTP interface served on top of chdb (the ClickHouse engine from PyPI).

Why this exists: these machines have no Docker and Debian's clickhouse-server is
from 2018, but `chdb-core` embeds a current ClickHouse engine without a server.
This file puts the parts of the HTTP protocol that the `clickhouse` Rust crate
uses in front of one chdb session, so weir talks to it exactly as it would talk
to a real server. Its limits are listed in README.md beside it.

Usage: server.py --host 127.0.0.1 --port 8123 --path DATA_DIR
"""

import argparse
import email.parser
import email.policy
import gzip
import http.server
import os
import re
import struct
import sys
import tempfile
import threading
import urllib.parse
import zlib

import chdb
import lz4.block
import lz4.frame
from chdb import session as chdb_session

try:  # the checksum ClickHouse puts in front of every compressed block
    from clickhouse_cityhash.cityhash import CityHash128
except ImportError:  # pragma: no cover - only when the optional wheel is missing
    CityHash128 = None

# URL parameters that are part of the protocol rather than ClickHouse settings.
PROTOCOL_PARAMS = {
    "query", "database", "default_format", "compress", "decompress", "user",
    "password", "query_id", "session_id", "session_timeout", "session_check",
    "role", "client_protocol_version", "enable_http_compression",
    "wait_end_of_query", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
}

INSERT_RE = re.compile(
    rb"^\s*INSERT\s+INTO\s+(?P<table>[`\"\w.]+)\s*(?:\((?P<cols>[^)]*)\))?\s*"
    rb"(?:SETTINGS\s+(?P<settings>.*?)\s+)?FORMAT\s+(?P<format>\w+)[ \t]*\r?\n?",
    re.IGNORECASE | re.DOTALL,
)
ERROR_CODE_RE = re.compile(r"Code:\s*(\d+)")

COMPRESSION_METHODS = {0x02: "none", 0x82: "lz4", 0x90: "zstd"}


class ClickHouseError(Exception):
    """An error answered in ClickHouse's own format."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def decompress_native(body):
    """Decodes ClickHouse's native compressed block stream (the `decompress=1` body)."""
    out = bytearray()
    pos = 0
    while pos < len(body):
        if len(body) - pos < 25:
            raise ClickHouseError(432, "Code: 432. DB::Exception: truncated compressed block header. (UNKNOWN_CODEC)")
        checksum = body[pos:pos + 16]
        method = body[pos + 16]
        compressed_size, raw_size = struct.unpack_from("<II", body, pos + 17)
        block = body[pos + 16:pos + 16 + compressed_size]
        if len(block) != compressed_size:
            raise ClickHouseError(432, "Code: 432. DB::Exception: truncated compressed block. (UNKNOWN_CODEC)")
        if CityHash128 is not None:
            value = CityHash128(bytes(block))
            expected = struct.pack("<QQ", value >> 64, value & 0xFFFFFFFFFFFFFFFF)
            if expected != checksum:
                raise ClickHouseError(40, "Code: 40. DB::Exception: Checksum doesn't match: corrupted data. (CHECKSUM_DOESNT_MATCH)")
        payload = block[9:]
        kind = COMPRESSION_METHODS.get(method)
        if kind == "lz4":
            out += lz4.block.decompress(bytes(payload), uncompressed_size=raw_size)
        elif kind == "none":
            out += payload
        else:
            raise ClickHouseError(89, f"Code: 89. DB::Exception: Unknown compression method: {method:#x}. (UNKNOWN_COMPRESSION_METHOD)")
        pos += 16 + compressed_size
    return bytes(out)


def parse_multipart(content_type, body):
    """Returns the form fields of a multipart body (the crate sends query parameters so)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = part.get_payload(decode=True).decode()
    return fields


class Engine:
    """One chdb session, shared by every request thread behind a lock.

    chdb sessions are not thread-safe and `USE`/`SET` are session state, so each
    request runs whole under the lock, and restores the settings it changed.
    """

    def __init__(self, path):
        self.session = chdb_session.Session(path)
        self.lock = threading.Lock()
        self.tmpdir = tempfile.mkdtemp(prefix="chdb-http-")

    def execute(self, sql, data, database, fmt, settings, params):
        with self.lock:
            self._run(f"USE {quote_ident(database)}")
            applied = []
            try:
                for name, value in settings.items():
                    self._run(f"SET {quote_ident(name)} = {quote_literal(value)}")
                    applied.append(name)
                return self._dispatch(sql, data, fmt, params)
            finally:
                for name in applied:
                    self._run(f"SET {quote_ident(name)} = DEFAULT")

    def _dispatch(self, sql, data, fmt, params):
        insert = INSERT_RE.match(sql)
        if insert and insert.group("format").upper() != "VALUES":
            return self._insert(insert, sql[insert.end():] + data)
        text = (sql + data).decode("utf-8")
        return self._run(text, fmt, params)

    def _insert(self, match, payload):
        """Runs `INSERT ... FORMAT F <data>` by handing the data to chdb as a file."""
        table = match.group("table").decode()
        columns = describe(self, table)
        if match.group("cols"):
            wanted = [c.strip().strip("`\"") for c in match.group("cols").decode().split(",") if c.strip()]
            unknown = [c for c in wanted if c not in columns]
            if unknown:
                raise ClickHouseError(16, f"Code: 16. DB::Exception: No such column {unknown[0]} in table {table}. (NO_SUCH_COLUMN_IN_TABLE)")
        else:
            wanted = list(columns)
        structure = ", ".join(f"{quote_ident(c)} {columns[c]}" for c in wanted)
        settings = f" SETTINGS {match.group('settings').decode()}" if match.group("settings") else ""
        fd, path = tempfile.mkstemp(dir=self.tmpdir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            cols = ", ".join(quote_ident(c) for c in wanted)
            self._run(
                f"INSERT INTO {table} ({cols}){settings} SELECT * FROM "
                f"file({quote_literal(path)}, {quote_literal(match.group('format').decode())}, {quote_literal(structure)})"
            )
        finally:
            os.unlink(path)
        return b""

    def _run(self, sql, fmt="TabSeparated", params=None):
        try:
            return self.session.query(sql, fmt, params=params or None).bytes()
        except chdb.ChdbError as e:
            message = str(e).strip()
            code = ERROR_CODE_RE.search(message)
            raise ClickHouseError(int(code.group(1)) if code else 1000, message) from None


def describe(engine, table):
    """Maps column name to type for an INSERT target, skipping computed columns."""
    out = engine._run(f"DESCRIBE TABLE {table}", "TabSeparated")
    columns = {}
    for line in out.decode().splitlines():
        name, ctype, default_kind, *_ = line.split("\t") + ["", ""]
        if default_kind in ("MATERIALIZED", "ALIAS", "EPHEMERAL"):
            continue
        columns[name] = ctype.replace("\\'", "'")
    return columns


def quote_ident(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_literal(value):
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "weir-chdb-http"
    engine = None

    def log_message(self, fmt, *args):
        if os.environ.get("CHDB_HTTP_LOG"):
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.handle_query()

    def do_POST(self):
        self.handle_query()

    def handle_query(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("/ping", "/replicas_status"):
            return self.reply(200, b"Ok.\n", "text/plain; charset=UTF-8")
        if url.path not in ("/", ""):
            return self.reply(404, b"There is no handle " + url.path.encode() + b"\n", "text/plain")
        try:
            params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            body = self.read_body(params)
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("multipart/form-data"):
                params.update(parse_multipart(content_type, body))
                body = b""
            sql = params.get("query", "").encode()
            if not sql:
                sql, body = body, b""
            if not sql.strip():
                raise ClickHouseError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
            query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            settings = {k: v for k, v in params.items()
                        if k not in PROTOCOL_PARAMS and not k.startswith("param_")}
            fmt = params.get("default_format", "TabSeparated")
            out = self.engine.execute(sql, body, params.get("database", "default"), fmt, settings, query_params)
            self.reply(200, out, "application/octet-stream", fmt, params)
        except ClickHouseError as e:
            self.reply_error(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - every failure must become a ClickHouse error
            self.reply_error(1001, f"Code: 1001. DB::Exception: {type(e).__name__}: {e}. (STD_EXCEPTION)")

    def read_body(self, params):
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self.read_chunked()
        else:
            body = self.rfile.read(length) if length else b""
        encoding = self.headers.get("Content-Encoding", "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "lz4":
            body = lz4.frame.decompress(body)
        elif encoding not in ("", "identity"):
            raise ClickHouseError(89, f"Code: 89. DB::Exception: Unknown Content-Encoding: {encoding}. (UNKNOWN_COMPRESSION_METHOD)")
        if params.get("decompress") == "1":
            body = decompress_native(body)
        return body

    def read_chunked(self):
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def reply(self, status, body, content_type, fmt=None, params=None):
        accept = self.headers.get("Accept-Encoding", "").lower()
        encoding = None
        if params is not None and params.get("enable_http_compression", "1") != "0":
            if "lz4" in accept:
                body, encoding = lz4.frame.compress(body), "lz4"
            elif "gzip" in accept:
                body, encoding = gzip.compress(body), "gzip"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        if fmt:
            self.send_header("X-ClickHouse-Format", fmt)
        self.send_header("X-ClickHouse-Summary", '{"read_rows":"0","read_bytes":"0","written_rows":"0","written_bytes":"0","total_rows_to_read":"0"}')
        self.end_headers()
        self.wfile.write(body)

    def reply_error(self, code, message):
        body = (message + "\n").encode()
        self.send_response(500)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Exception-Code", str(code))
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--path", required=True, help="data directory")
    args = parser.parse_args()
    os.makedirs(args.path, exist_ok=True)
    Handler.engine = Engine(args.path)
    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"chdb-http listening on {args.host}:{args.port}, data in {args.path}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
