"""The local object store behind the durable broker: S3 semantics Tansu relies on, and files that persist."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streamguard.local.broker_storage import running_storage
from streamguard.local.object_store import serve
from streamguard.local.processes import free_port


@contextmanager
def store(root: Path) -> Iterator[str]:
    server = serve(root, free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/bucket"
    finally:
        server.shutdown()
        server.server_close()


def call(method: str, url: str, body: bytes | None = None, **headers: str) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - a local test server
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_put_get_head_range_and_delete(tmp_path):
    with store(tmp_path) as url:
        status, _, headers = call("PUT", f"{url}/a/b.batch", b"0123456789")
        assert status == 200 and headers["ETag"].startswith('"')
        assert call("GET", f"{url}/a/b.batch")[1] == b"0123456789"
        assert call("GET", f"{url}/a/b.batch", Range="bytes=2-4")[:2] == (206, b"234")
        assert call("GET", f"{url}/a/b.batch", Range="bytes=-3")[1] == b"789"
        assert call("HEAD", f"{url}/a/b.batch")[2]["Content-Length"] == "10"
        assert call("DELETE", f"{url}/a/b.batch")[0] == 204
        assert call("GET", f"{url}/a/b.batch")[0] == 404


def test_conditional_puts_are_what_tansu_metadata_updates_rely_on(tmp_path):
    with store(tmp_path) as url:
        assert call("PUT", f"{url}/meta.json", b"v1", **{"If-None-Match": "*"})[0] == 200
        assert call("PUT", f"{url}/meta.json", b"v2", **{"If-None-Match": "*"})[0] == 412
        etag = call("HEAD", f"{url}/meta.json")[2]["ETag"]
        assert call("PUT", f"{url}/meta.json", b"v2", **{"If-Match": '"stale"'})[0] == 412
        assert call("PUT", f"{url}/meta.json", b"v2", **{"If-Match": etag})[0] == 200
        assert call("GET", f"{url}/meta.json")[1] == b"v2"


def test_listing_with_prefix_delimiter_and_pages(tmp_path):
    with store(tmp_path) as url:
        for i in range(5):
            call("PUT", f"{url}/t/p0/records/{i:05d}.batch", b"x" * i)
        call("PUT", f"{url}/t/p1/records/00000.batch", b"y")
        call("PUT", f"{url}/t/watermark.json", b"{}")
        body = call("GET", f"{url}?list-type=2&prefix=t/p0/records/&max-keys=2")[1].decode()
        assert body.count("<Contents>") == 2 and "<IsTruncated>true" in body
        token = body.split("<NextContinuationToken>")[1].split("<")[0]
        rest = call("GET", f"{url}?list-type=2&prefix=t/p0/records/&continuation-token={token}")[1].decode()
        assert rest.count("<Contents>") == 3 and "00004.batch" in rest and "00001.batch" not in rest
        call("PUT", f"{url}/t/p0/records/00005.batch", b"new")  # a cached listing must not hide it
        fresh = call("GET", f"{url}?list-type=2&prefix=t/p0/records/&continuation-token={token}")[1].decode()
        assert fresh.count("<Contents>") == 4 and "00005.batch" in fresh
        tree = call("GET", f"{url}?list-type=2&prefix=t/&delimiter=/")[1].decode()
        assert tree.count("<CommonPrefixes>") == 2 and "<Key>t/watermark.json</Key>" in tree


def test_objects_survive_a_restart_of_the_store(tmp_path):
    with store(tmp_path) as url:
        call("PUT", f"{url}/k/one", b"kept")
    (tmp_path / "bucket" / "k" / ".one.obj.123.tmp").write_bytes(b"half a write")
    with store(tmp_path) as url:
        assert call("GET", f"{url}/k/one")[1] == b"kept"
        listing = call("GET", f"{url}?list-type=2&prefix=k/")[1].decode()
        assert listing.count("<Contents>") == 1
    assert not (tmp_path / "bucket" / "k" / ".one.obj.123.tmp").exists()


@pytest.mark.parametrize("key", ["../escape", "a//b", "a/./b"])
def test_keys_that_would_leave_the_folder_are_refused(tmp_path, key):
    with store(tmp_path / "root") as url:
        assert call("PUT", f"{url}/{key}", b"x")[0] == 400
    assert not (tmp_path / "escape.obj").exists()


def test_the_storage_a_broker_runs_with_is_read_from_its_command_line():
    assert running_storage(["tansu", "broker", "--storage-engine", "memory://tansu/"]) == "memory"
    assert running_storage(["tansu", "broker", "--storage-engine", "s3://tansu/"]) == "disk"
    assert running_storage(["tansu", "broker"]) is None
