"""fetch / extract_images / download_div2k against a real local HTTP server."""

from __future__ import annotations

import hashlib
import io
import random
import socket
import stat
import struct
import threading
import time
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from srcore.data.download import RemoteFile, download_div2k, extract_images, fetch
from srcore.errors import SrcoreError


class _Handler(BaseHTTPRequestHandler):
    state: SimpleNamespace  # set per server by the fixture

    def do_GET(self):
        state = self.state
        state.requests.append((self.path, self.headers.get("Range")))
        path = state.root / self.path.lstrip("/")
        if state.not_found or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, rng = 0, self.headers.get("Range")
        if rng and state.honour_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.cut_after is not None:  # promise the full rest, then hang up early
            body = body[:state.cut_after]
            self.close_connection = True
        self.wfile.write(body)
        if state.stall:  # keep the connection open without sending the rest
            self.wfile.flush()
            time.sleep(state.stall)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    state = SimpleNamespace(root=root, requests=[], cut_after=None, stall=0, not_found=False,
                            honour_range=True)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"state": state}))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def publish(name: str, data: bytes) -> RemoteFile:
        (root / name).write_bytes(data)
        return RemoteFile(f"http://127.0.0.1:{httpd.server_port}/{name}", len(data), _sha(data))

    state.publish = publish
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _png(value: int) -> bytes:
    """A valid 1x1 grey PNG."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes([0, value]))) + chunk(b"IEND", b""))


def _zip(entries: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)  # name may be a ZipInfo
    return buf.getvalue()


def test_good_zips_are_fetched_and_images_extracted_flat(server, tmp_path):
    train = server.publish("DIV2K_train_HR.zip", _zip({
        "DIV2K_train_HR/": b"",
        "DIV2K_train_HR/0002.png": _png(2),
        "DIV2K_train_HR/0001.png": _png(1),
        "DIV2K_train_HR/readme.txt": b"not an image",
        "DIV2K_train_HR/nested/0003.PNG": _png(3),
    }))
    valid = server.publish("DIV2K_valid_HR.zip", _zip({"DIV2K_valid_HR/0801.png": _png(8)}))
    downloads, hr = tmp_path / "downloads", tmp_path / "hr"

    names = download_div2k(downloads, hr, files=(train, valid))

    assert names == ["0001.png", "0002.png", "0003.PNG", "0801.png"]
    assert sorted(p.name for p in hr.iterdir()) == names
    assert (hr / "0003.PNG").read_bytes() == _png(3)
    assert sorted(p.name for p in downloads.iterdir()) == ["DIV2K_train_HR.zip", "DIV2K_valid_HR.zip"]


def test_cut_short_download_is_kept_and_resumed_with_range(server, tmp_path):
    data = random.Random(0).randbytes(5000)
    remote = server.publish("a.zip", data)
    server.cut_after = 1000

    with pytest.raises(SrcoreError, match="cut short at 1000 of 5000 bytes") as err:
        fetch(remote, tmp_path, chunk_size=256)
    assert remote.url in str(err.value) and "resume" in str(err.value)
    assert (tmp_path / "a.zip.part").stat().st_size == 1000

    server.cut_after = None
    path = fetch(remote, tmp_path, chunk_size=256)
    assert server.requests[-1] == ("/a.zip", "bytes=1000-")
    assert path == tmp_path / "a.zip" and _sha(path.read_bytes()) == remote.sha256
    assert not (tmp_path / "a.zip.part").exists()


def test_stalled_transfer_times_out_and_keeps_the_part(server, tmp_path):
    remote = server.publish("a.zip", b"x" * 2000)
    server.cut_after, server.stall = 700, 5  # far past the timeout on a loaded machine too

    with pytest.raises(SrcoreError, match=r"cut short at 700 of 2000 bytes \(timed out\)") as err:
        fetch(remote, tmp_path, timeout=0.2, chunk_size=100)
    assert remote.url in str(err.value)
    assert (tmp_path / "a.zip.part").stat().st_size == 700


def test_unwritable_downloads_dir_is_reported(server, tmp_path):
    remote = server.publish("a.zip", b"data")
    blocker = tmp_path / "downloads"
    blocker.write_text("a file where the folder should be")

    with pytest.raises(SrcoreError, match="Free disk space or check permissions") as err:
        fetch(remote, blocker)
    assert str(blocker) in str(err.value) and server.requests == []


def test_server_ignoring_range_restarts_from_scratch(server, tmp_path):
    data = random.Random(1).randbytes(3000)
    remote = server.publish("a.zip", data)
    (tmp_path / "a.zip.part").write_bytes(b"x" * 500)  # wrong bytes: only a restart can fix them
    server.honour_range = False

    assert fetch(remote, tmp_path).read_bytes() == data
    assert server.requests == [("/a.zip", "bytes=500-")]


@pytest.mark.parametrize("bad", ["sha", "size"])
def test_checksum_mismatch_deletes_the_download(server, tmp_path, bad):
    good = server.publish("a.zip", b"payload" * 100)
    remote = (RemoteFile(good.url, good.size, "0" * 64) if bad == "sha"
              else RemoteFile(good.url, good.size - 10, good.sha256))

    with pytest.raises(SrcoreError) as err:
        fetch(remote, tmp_path)
    msg = str(err.value)
    assert remote.url in msg and remote.sha256 in msg and f"got {good.size} bytes" in msg
    if bad == "sha":
        assert good.sha256 in msg
    assert list(tmp_path.glob("a.zip*")) == []


@pytest.mark.parametrize("kind", ["dotdot", "nested-dotdot", "absolute", "symlink"])
def test_unsafe_zip_entries_are_refused_before_writing(tmp_path, kind):
    outside = tmp_path / "evil.png"
    name = {"dotdot": "../evil.png", "nested-dotdot": "a/../../evil.png",
            "absolute": str(outside), "symlink": "link.png"}[kind]
    entry = zipfile.ZipInfo(name)
    if kind == "symlink":
        entry.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = tmp_path / "bad.zip"
    zip_path.write_bytes(_zip({"0001.png": _png(1), entry: b"/etc/passwd"}))
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(SrcoreError) as err:
        extract_images(zip_path, dest)
    assert repr(name) in str(err.value) and str(zip_path) in str(err.value)
    assert list(dest.iterdir()) == [] and not outside.exists()


def test_duplicate_basenames_are_refused(tmp_path):
    zip_path = tmp_path / "dup.zip"
    zip_path.write_bytes(_zip({"a/0001.png": _png(1), "b/0001.png": _png(2)}))
    with pytest.raises(SrcoreError, match="0001.png") as err:
        extract_images(zip_path, tmp_path / "dest")
    assert str(zip_path) in str(err.value)
    assert not (tmp_path / "dest").exists()


def test_unreachable_host_and_404_name_url_and_remedy(server, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = RemoteFile(f"http://127.0.0.1:{port}/DIV2K_valid_HR.zip", 10, "0" * 64)
    missing = server.publish("DIV2K_valid_HR.zip", b"data")
    server.not_found = True

    for remote in (closed, missing):
        with pytest.raises(SrcoreError) as err:
            fetch(remote, tmp_path, timeout=5)
        msg = str(err.value)
        assert remote.url in msg and f"place them in {tmp_path}/" in msg
        assert not (tmp_path / "DIV2K_valid_HR.zip.part").exists()
    assert "404" in msg


def test_hand_placed_file_is_used_without_a_request(server, tmp_path):
    data = b"zip bytes" * 50
    remote = server.publish("a.zip", data)
    (tmp_path / "a.zip").write_bytes(data)

    assert fetch(remote, tmp_path) == tmp_path / "a.zip"
    assert server.requests == []


@pytest.mark.parametrize("placed", [b"short", b"X" * 450])  # wrong size; right size, wrong sha
def test_wrong_hand_placed_file_is_reported_and_kept(server, tmp_path, placed):
    remote = server.publish("a.zip", b"zip bytes" * 50)
    (tmp_path / "a.zip").write_bytes(placed)

    with pytest.raises(SrcoreError, match="expected") as err:
        fetch(remote, tmp_path)
    assert str(tmp_path / "a.zip") in str(err.value) and "Delete it" in str(err.value)
    assert (tmp_path / "a.zip").read_bytes() == placed and server.requests == []


def test_corrupt_zip_is_fetched_but_refused_by_extract(server, tmp_path):
    remote = server.publish("junk.zip", random.Random(2).randbytes(2000))
    zip_path = fetch(remote, tmp_path / "downloads")

    with pytest.raises(SrcoreError, match="download it again") as err:
        extract_images(zip_path, tmp_path / "dest")
    assert str(zip_path) in str(err.value)


def test_crc_error_names_the_entry(tmp_path):
    payload = b"A" * 100
    data = bytearray(_zip({"x/0001.png": payload}, zipfile.ZIP_STORED))
    data[data.index(payload)] ^= 1
    zip_path = tmp_path / "crc.zip"
    zip_path.write_bytes(bytes(data))

    with pytest.raises(SrcoreError, match="'x/0001.png'") as err:
        extract_images(zip_path, tmp_path / "dest")
    assert str(zip_path) in str(err.value)


def test_the_stage_uses_the_projects_downloads_from_a_queued_experiments_copy(
        tmp_path, monkeypatch):
    """`dvc queue start` runs an experiment in a copy of the project (.dvc/tmp/exps/...), which
    has no data/downloads (git ignores it): the zips placed in the project, or fetched by the
    experiment before, were not seen, so each DIV2K experiment downloaded 4 GB again, and
    offline it failed. DVC_ROOT names the project, as for the MLflow store."""
    import srcore.data.download
    from stages.download import _div2k

    project, copy = tmp_path / "project", tmp_path / "project/.dvc/tmp/exps/run/x"
    data = _zip({"DIV2K_valid_HR/0801.png": _png(8)})
    (project / "data/downloads").mkdir(parents=True)
    (project / "data/downloads/DIV2K_valid_HR.zip").write_bytes(data)
    unreachable = RemoteFile("http://127.0.0.1:9/DIV2K_valid_HR.zip", len(data), _sha(data))
    monkeypatch.setattr(srcore.data.download, "DIV2K_FILES", (unreachable,))
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(project))

    images = _div2k(copy / "data/raw")
    assert [(i["name"], i["width"], i["height"]) for i in images] == [("0801", 1, 1)]
    assert not (copy / "data/downloads").exists()


def test_the_stage_names_a_downloads_folder_it_cannot_write(tmp_path, monkeypatch):
    """The lock in data/downloads is the stage's first write there: where it cannot be made,
    the error names it, not the data/raw folder the stage was writing."""
    from stages.download import _div2k

    (tmp_path / "data").mkdir()
    (tmp_path / "data/downloads").write_text("a file where the folder should be")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    with pytest.raises(SrcoreError) as err:
        _div2k(tmp_path / "data/raw")
    assert str(err.value).startswith(f"could not write {tmp_path}/data/downloads/.lock: ")
    assert f"that {tmp_path}/data/downloads is writable, then re-run." in str(err.value)
