"""MemoriesUploadOperator's ``source`` when it is no plain, still file: special files, files that
change between their look-up and their last byte sent, hostile names."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from local_http import LocalServer, QuietHandler
from test_upload import VIDEO, Store, _TaskInstance, run

from memories_provider.client import MemoriesError
from memories_provider.client.multipart import SourceReadError, SourceSizeError
from memories_provider.operators.upload import MemoriesUploadOperator
from memories_provider.storage.files import SourceChangedError


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    bound: list[socket.socket] = []

    def bind(path: Path) -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        bound.append(sock)

    yield bind
    for sock in bound:
        sock.close()


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda path, _: os.mkfifo(path), "a FIFO (named pipe)"),
        (lambda path, bind: bind(path), "a socket"),
        (lambda path, _: path.symlink_to("/dev/zero"), "a character device"),
        (lambda path, _: path.symlink_to("/dev/null"), "a character device"),
        (
            lambda path, _: (os.mkfifo(path.with_name("pipe")), path.symlink_to(path.with_name("pipe"))),
            "a FIFO",
        ),
    ],
    ids=["fifo", "socket", "dev-zero", "dev-null", "link-to-fifo"],
)
def test_a_special_file_is_refused_as_not_a_regular_file(
    emu: Any, tmp_path: Path, unix_socket: Callable[[Path], None], make: Any, kind: str
) -> None:
    # It was refused as "does not exist" (the probe's None for anything but a regular file): a
    # FIFO the user can see with ls, named as missing. Only stat is used: opening a FIFO blocks.
    source = tmp_path / "clip.mp4"
    make(source, unix_socket)
    with pytest.raises(
        ValueError, match=re.escape(f"`source` '{source}' is {kind}") + ".*not a regular file"
    ):
        run(source=str(source))
    assert emu.control.request_log() == []


# ---------------------------------------------------------------------------- sources that change


MIB = 1024 * 1024


@pytest.fixture
def while_sending(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """``while_sending(action)``: run ``action`` (another process writing the source, say) once
    the upload has handed the first block of the source to the HTTP library, before the next."""
    from memories_provider.operators import upload

    def install(action: Callable[[], None]) -> None:
        done = [False]

        class Interrupted(upload.TransferProgress):
            def update(self, sent: int, *, final: bool = False) -> None:
                if not done[0] and sent > 0 and not final:
                    done[0] = True
                    action()
                super().update(sent, final=final)

        monkeypatch.setattr(upload, "TransferProgress", Interrupted)

    return install


def _context() -> dict[str, Any]:
    return {"ti": _TaskInstance(), "task_state_store": Store()}


def _run(context: dict[str, Any], **kwargs: Any) -> str:
    return MemoriesUploadOperator(task_id="upload", **kwargs).execute(context)


def test_a_source_that_grows_while_sent_is_not_accepted_and_its_record_is_dropped(
    emu: Any, tmp_path: Path, while_sending: Callable[[Callable[[], None]], None]
) -> None:
    # A file still being written by another process: the body sends the size looked up and stops
    # before its closing boundary when more follows, so the service cannot accept it. The record
    # of the attempt was kept ("unknown whether accepted"), as for a dropped answer, although
    # the body never ended: a retry with no version mark to compare (an http(s) source without
    # ETag or Last-Modified) went looking for a lost upload that cannot exist.
    source = tmp_path / "recording.mp4"
    source.write_bytes(VIDEO * 300)  # > 1 MiB: more than one block
    while_sending(lambda: source.open("ab").write(b"more frames"))
    context = _context()
    with pytest.raises(SourceSizeError, match="longer than its given size"):
        _run(context, source=str(source))
    assert emu.control.videos() == []
    assert context["task_state_store"] == {}


@pytest.fixture
def after_tag_lookup(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """``after_tag_lookup(action)``: run ``action`` once, when the upload has first looked its tag
    up (a real listing, after the source was looked up and before it is opened)."""
    from memories_provider.hooks.memories import MemoriesHook

    real = MemoriesHook.iter_videos

    def install(action: Callable[[], None]) -> None:
        pending = [action]

        def iter_videos(self: MemoriesHook, **kwargs: Any) -> Any:
            yield from real(self, **kwargs)
            if "tag" in kwargs and pending:
                pending.pop()()

        monkeypatch.setattr(MemoriesHook, "iter_videos", iter_videos)

    return install


def _replace(path: Path, data: bytes) -> None:
    """A new version lands as new versions usually do: written beside ``path``, renamed over it."""
    fresh = path.with_name(path.name + ".part")
    fresh.write_bytes(data)
    os.replace(fresh, path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_source_replaced_after_its_look_up_is_not_sent_as_the_file_looked_up(
    emu: Any, tmp_path: Path, after_tag_lookup: Callable[[Callable[[], None]], None]
) -> None:
    # Replaced by a file of the same size between the look-up (size and marks, recorded with the
    # upload) and the open: the new bytes went out under the old file's marks. A clear (or a retry
    # after a later failure) then saw marks other than the recorded ones, took the file for a new
    # version and uploaded — and paid for — the same bytes a second time.
    source = tmp_path / "clip.mp4"
    source.write_bytes(VIDEO)
    newer = VIDEO[::-1]
    after_tag_lookup(lambda: _replace(source, newer))
    context = _context()
    with pytest.raises(
        SourceChangedError, match=r"`source` '.*clip\.mp4' changed since it was looked up.*inode"
    ):
        _run(context, source=str(source))
    assert emu.control.videos() == [] and context["task_state_store"] == {}
    assert all(log["endpoint"] != "upload" for log in emu.control.request_log())
    # The retry, then a clear: one upload, of the new bytes.
    first, again = _run(context, source=str(source)), _run(context, source=str(source))
    [video] = emu.control.videos()
    assert first == again == video["video_no"] and video["sha256"] == _sha256(newer)


def test_a_source_rewritten_in_place_while_sent_is_not_accepted(
    emu: Any, tmp_path: Path, while_sending: Callable[[Callable[[], None]], None]
) -> None:
    # Same size, other bytes: a writer rewriting the file in place (a recorder finishing a
    # pre-allocated file, cp over it) while it is read. The upload ended and was billed with the
    # old head and the new tail. Now the end of the file is checked against the look-up (mtime)
    # before the body's closing boundary goes out.
    source = tmp_path / "clip.mp4"
    data = VIDEO * 300  # more than one block
    source.write_bytes(data)
    os.utime(source, ns=(10**18, 10**18))  # any later write moves it, however coarse the clock

    def rewrite() -> None:
        with source.open("r+b") as fh:
            fh.seek(len(data) - len(VIDEO))
            fh.write(VIDEO[::-1])

    while_sending(rewrite)
    context = _context()
    with pytest.raises(SourceChangedError, match=r"changed while it was being sent.*mtime_ns"):
        _run(context, source=str(source))
    assert emu.control.videos() == [] and context["task_state_store"] == {}


def test_a_fifo_put_in_place_of_the_source_after_its_look_up_does_not_block(
    emu: Any, tmp_path: Path, after_tag_lookup: Callable[[Callable[[], None]], None]
) -> None:
    # open() of a FIFO waits for a writer: the upload hung for good, its record saying "sent".
    source = tmp_path / "clip.mp4"
    source.write_bytes(VIDEO)

    def fifo() -> None:
        source.unlink()
        os.mkfifo(source)

    after_tag_lookup(fifo)
    context = _context()
    with pytest.raises(SourceChangedError, match=r"is a FIFO .* now, not the regular file"):
        _run(context, source=str(source))
    assert emu.control.videos() == [] and context["task_state_store"] == {}


def test_an_s3_source_overwritten_after_its_look_up_is_not_sent_as_the_object_looked_up(
    emu: Any, moto_s3_server: Any, s3_bucket: str, after_tag_lookup: Callable[[Callable[[], None]], None]
) -> None:
    # HeadObject sized it and gave its ETag (recorded with the upload); the GET that streams it
    # came later and read whatever was there then: an object of the same size written in between
    # went out under the old ETag, and a clear then paid for the same bytes again.
    s3 = moto_s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=VIDEO)
    newer = VIDEO[::-1]
    after_tag_lookup(lambda: s3.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=newer))
    source, conn = f"s3://{s3_bucket}/in/clip.mp4", moto_s3_server.conn_id
    context = _context()
    with pytest.raises(
        SourceChangedError, match=r"`source` 's3://.*/in/clip\.mp4' changed since it was looked up"
    ):
        _run(context, source=source, source_conn_id=conn)
    assert emu.control.videos() == [] and context["task_state_store"] == {}
    first, again = (
        _run(context, source=source, source_conn_id=conn),
        _run(context, source=source, source_conn_id=conn),
    )
    [video] = emu.control.videos()
    assert first == again == video["video_no"] and video["sha256"] == _sha256(newer)


def test_an_s3_source_in_a_versioned_bucket_is_sent_as_the_version_looked_up(
    emu: Any, moto_s3_server: Any, after_tag_lookup: Callable[[Callable[[], None]], None]
) -> None:
    # A versioned bucket keeps the version that was looked up readable: that one is sent, under
    # the marks recorded for it, however many versions are written meanwhile.
    s3, bucket = moto_s3_server.client(), f"versioned-sources-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        s3.put_object(Bucket=bucket, Key="clip.mp4", Body=VIDEO)
        after_tag_lookup(lambda: s3.put_object(Bucket=bucket, Key="clip.mp4", Body=VIDEO[::-1]))
        _run(_context(), source=f"s3://{bucket}/clip.mp4", source_conn_id=moto_s3_server.conn_id)
        [video] = emu.control.videos()
        assert video["sha256"] == _sha256(VIDEO)
    finally:
        for version in s3.list_object_versions(Bucket=bucket).get("Versions", []):
            s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        s3.delete_bucket(Bucket=bucket)


class _ReplacedBetweenHeadAndGet(QuietHandler):
    """An http(s) source replaced by a file of the same size between the look-up (HEAD: version
    "v1") and the GET that streams it (version "v2")."""

    def _answer(self, body: bytes, etag: str) -> None:
        self.send_response(200)
        for key, value in {
            "Content-Type": "video/mp4",
            "Content-Length": str(len(body)),
            "ETag": etag,
        }.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._answer(VIDEO, '"v1"')

    def do_GET(self) -> None:
        self._answer(VIDEO[::-1], '"v2"')


def test_an_http_source_replaced_after_its_look_up_is_not_sent_as_the_file_looked_up(emu: Any) -> None:
    # streamed through (stream_http=True): the GET's own ETag was never compared with the HEAD's,
    # so the new bytes went out under the old ETag recorded with the upload.
    context = _context()
    with (
        LocalServer(_ReplacedBetweenHeadAndGet) as server,
        pytest.raises(SourceChangedError, match=r"changed since it was looked up.*etag \"v1\" -> \"v2\""),
    ):
        _run(context, source=f"{server.url}/clip.mp4", stream_http=True)
    assert emu.control.videos() == [] and context["task_state_store"] == {}
    assert all(log["endpoint"] != "upload" for log in emu.control.request_log())


class _Compressing(QuietHandler):
    """Serves VIDEO gzip-compressed to whoever accepts gzip, as is to the others."""

    def _answer(self) -> None:
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
        body = gzip.compress(VIDEO) if gzipped else VIDEO
        self.send_response(200)
        headers = {"Content-Type": "video/mp4", "Content-Length": str(len(body))}
        for key, value in {**headers, **({"Content-Encoding": "gzip"} if gzipped else {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    do_HEAD = do_GET = _answer


def test_an_http_source_with_headers_of_its_own_is_streamed_uncompressed(emu: Any) -> None:
    # transport_params={"headers": ...} replaced smart-open's own {"Accept-Encoding": "identity"}:
    # the GET then accepted gzip (requests' default) and read the compressed bytes, of another
    # length than the look-up's (which asks for identity), failing the upload on every try.
    with LocalServer(_Compressing) as server:
        _run(
            _context(),
            source=f"{server.url}/clip.mp4",
            stream_http=True,
            transport_params={"headers": {"X-Trace": "upload-1"}},
        )
    [video] = emu.control.videos()
    assert video["sha256"] == _sha256(VIDEO)


class _EndsEarly(QuietHandler):
    """Announces the whole file (HEAD and GET), then closes the connection after 1.5 MB of it."""

    data = VIDEO * 300

    def _answer(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(self.data[:1_500_000])
            self.close_connection = True

    do_HEAD = do_GET = _answer


def test_an_http_source_whose_body_ends_early_fails_naming_the_source(emu: Any) -> None:
    # The read broke inside the upload's body and came out as the service's own failure:
    # "MemoriesConnectionError: connection failed: ('Connection broken: IncompleteRead(...)')
    # (endpoint=upload)", sending the user to look at memories.ai.
    signature = "c2VjcmV0LXNpZ25hdHVyZQ"
    context = _context()
    with LocalServer(_EndsEarly) as server:
        source = f"{server.url}/clip.mp4?X-Amz-Signature={signature}"
        with pytest.raises(
            SourceReadError, match=r"`source` 'http://.*/clip\.mp4.*' could not be read.*IncompleteRead"
        ) as info:
            _run(context, source=source, stream_http=True)
    assert not isinstance(info.value, MemoriesError)
    assert signature not in "".join(traceback.format_exception(info.value))
    assert emu.control.videos() == [] and context["task_state_store"] == {}


def test_an_sftp_source_replaced_after_its_look_up_is_not_sent_as_the_file_looked_up(
    emu: Any, sshd: Any, after_tag_lookup: Callable[[Callable[[], None]], None]
) -> None:
    # SFTP's stat sized it and gave its mtime (recorded with the upload); the open came after the
    # tag lookup and read whatever was at the path then, the new bytes going out under the old mtime.
    path = sshd.root / "clip.mp4"
    path.write_bytes(VIDEO)
    os.utime(path, (10**9, 10**9))  # seconds are all SFTP tells: the new file's differ for sure
    newer = VIDEO[::-1]
    after_tag_lookup(lambda: _replace(path, newer))
    context, source = _context(), sshd.uri(str(path))
    with pytest.raises(
        SourceChangedError, match=r"`source` 'sftp://.*clip\.mp4' changed since it was looked up.*mtime"
    ):
        _run(context, source=source, source_conn_id=sshd.conn_id)
    assert emu.control.videos() == [] and context["task_state_store"] == {}
    first, again = (
        _run(context, source=source, source_conn_id=sshd.conn_id),
        _run(context, source=source, source_conn_id=sshd.conn_id),
    )
    [video] = emu.control.videos()
    assert first == again == video["video_no"] and video["sha256"] == _sha256(newer)


def test_an_sftp_source_rewritten_in_place_while_sent_is_not_accepted(
    emu: Any, sshd: Any, while_sending: Callable[[Callable[[], None]], None]
) -> None:
    # Read through its open handle, an SFTP file rewritten in place (same size) mixed the old head
    # with the new tail, and the upload was billed. Its end is now checked against the look-up.
    path = sshd.root / "clip.mp4"
    data = VIDEO * 300  # more than one block
    path.write_bytes(data)
    os.utime(path, (10**9, 10**9))

    def rewrite() -> None:
        with path.open("r+b") as fh:
            fh.seek(len(data) - len(VIDEO))
            fh.write(VIDEO[::-1])

    while_sending(rewrite)
    context = _context()
    with pytest.raises(SourceChangedError, match=r"changed while it was being sent.*mtime"):
        _run(context, source=sshd.uri(str(path)), source_conn_id=sshd.conn_id)
    assert emu.control.videos() == [] and context["task_state_store"] == {}


def test_a_gcs_source_overwritten_after_its_look_up_is_not_sent_as_the_blob_looked_up(
    emu: Any, gcs_server: Any, gcs_bucket: str, after_tag_lookup: Callable[[Callable[[], None]], None]
) -> None:
    # The blob's size and generation were read (and recorded with the upload) before the tag
    # lookup; the open after it fetched the blob anew and read the generation current then.
    blob = gcs_server.client().bucket(gcs_bucket).blob("in/clip.mp4")
    blob.upload_from_string(VIDEO)
    newer = VIDEO[::-1]
    after_tag_lookup(lambda: blob.upload_from_string(newer))
    context, source = _context(), f"gs://{gcs_bucket}/in/clip.mp4"
    with pytest.raises(
        SourceChangedError, match=r"`source` 'gs://.*clip\.mp4' changed since it was looked up.*generation"
    ):
        _run(context, source=source)
    assert emu.control.videos() == [] and context["task_state_store"] == {}
    first, again = _run(context, source=source), _run(context, source=source)
    [video] = emu.control.videos()
    assert first == again == video["video_no"] and video["sha256"] == _sha256(newer)


def test_an_azure_source_overwritten_after_its_look_up_is_not_sent_as_the_blob_looked_up(
    emu: Any, azurite: Any, azure_container: str, after_tag_lookup: Callable[[Callable[[], None]], None]
) -> None:
    # The blob's size and ETag were read (and recorded with the upload) before the tag lookup;
    # smart-open's reader then downloaded whatever was there, and a blob of the same size written
    # in between went out under the old ETag (a clear then paid for the same bytes again).
    from azure.storage.blob import BlobServiceClient

    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        azure_container, "in/clip.mp4"
    )
    blob.upload_blob(VIDEO)
    newer = VIDEO[::-1]
    after_tag_lookup(lambda: blob.upload_blob(newer, overwrite=True))
    context, source = _context(), f"azure://{azure_container}/in/clip.mp4"
    with pytest.raises(
        SourceChangedError, match=r"`source` 'azure://.*clip\.mp4' changed since it was looked up.*etag"
    ):
        _run(context, source=source, source_conn_id=azurite.conn_id)
    assert emu.control.videos() == [] and context["task_state_store"] == {}
    first, again = (
        _run(context, source=source, source_conn_id=azurite.conn_id),
        _run(context, source=source, source_conn_id=azurite.conn_id),
    )
    [video] = emu.control.videos()
    assert first == again == video["video_no"] and video["sha256"] == _sha256(newer)


# ---------------------------------------------------------------------------- hostile names


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("take%201.mp4", "take%201.mp4"),  # was sent as "take 1.mp4"
        ("100%.mp4", "100%.mp4"),
        ("a%2Fb.mp4", "a%2Fb.mp4"),  # was sent as "b.mp4"
        ("q?#x.mp4", "q?#x.mp4"),
        ("été 😀.MKV", "été 😀.MKV"),
    ],
)
def test_a_local_file_name_is_sent_as_it_is_not_url_decoded(
    emu: Any, tmp_path: Path, name: str, sent: str
) -> None:
    # A plain path is no URL: percent signs in it are part of the name (file:// URIs are decoded).
    (tmp_path / name).write_bytes(VIDEO)
    _run(_context(), source=str(tmp_path / name))
    [video] = emu.control.videos()
    assert video["filename"] == sent


def test_a_source_that_cannot_be_read_is_refused_before_any_request(emu: Any, tmp_path: Path) -> None:
    # stat alone passed it: the tag lookup went out, the attempt was recorded, and the open then
    # failed with a bare "[Errno 13] Permission denied" naming no parameter, retried as if the
    # next try could read it. A sysfs file that is write-only even for root stands in for a
    # file without read permission (these tests may run as root, which reads anything else).
    unreadable = Path("/sys/bus/cpu/drivers_probe")
    try:
        unreadable.open("rb").close()
    except PermissionError:
        pass
    except OSError:
        pytest.skip(f"{unreadable} is not here")
    else:
        pytest.skip(f"{unreadable} can be read here")
    source = tmp_path / "clip.mp4"
    source.symlink_to(unreadable)
    with pytest.raises(ValueError, match=re.escape(f"`source` '{source}' cannot be read on this worker")):
        _run(_context(), source=str(source))
    assert emu.control.request_log() == []


@pytest.mark.parametrize("key", ["cam #3.mp4", "take%201.mp4", "what?.mp4", "été.mov"])
def test_an_object_key_is_announced_as_it_is_written(
    emu: Any, moto_s3_server: Any, s3_bucket: str, key: str
) -> None:
    # smart-open reads an s3:// (gs://, azure://) key as written: "#", "?" and "%" included. The
    # name sent was cut at "#" or "?" as if they began a URL's fragment or query ("cam " was then
    # refused for its extension) and percent-decoded ("take 1.mp4").
    moto_s3_server.client().put_object(Bucket=s3_bucket, Key=f"in/{key}", Body=VIDEO)
    _run(_context(), source=f"s3://{s3_bucket}/in/{key}", source_conn_id=moto_s3_server.conn_id)
    [video] = emu.control.videos()
    assert video["filename"] == key and video["sha256"] == _sha256(VIDEO)


def test_an_s3_version_named_in_the_uri_is_the_one_sized_and_sent(emu: Any, moto_s3_server: Any) -> None:
    # smart-open reads the version a URI names (?versionId=...); the look-up sized the latest one
    # instead: the upload announced the latest's size and marks over the named version's bytes
    # (here shorter: it failed on every try with "the file ended after ... bytes").
    s3, bucket = moto_s3_server.client(), f"versioned-uri-{os.getpid()}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        first = s3.put_object(Bucket=bucket, Key="clip.mp4", Body=VIDEO)["VersionId"]
        s3.put_object(Bucket=bucket, Key="clip.mp4", Body=VIDEO * 2)
        source = f"s3://{bucket}/clip.mp4?versionId={first}"
        _run(_context(), source=source, source_conn_id=moto_s3_server.conn_id)
        [video] = emu.control.videos()
        assert (video["filename"], video["sha256"]) == ("clip.mp4", _sha256(VIDEO))
    finally:
        for version in s3.list_object_versions(Bucket=bucket).get("Versions", []):
            s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        s3.delete_bucket(Bucket=bucket)


class _StallingProxy:
    """A TCP proxy to ``port`` on 127.0.0.1 that, once ``stall`` is set, stops passing on what the
    server sends (a server or network that hangs without closing the connection)."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.stall = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self._target))
                self._sockets += [client, server]
                for source, sink, stalls in ((client, server, False), (server, client, True)):
                    thread = threading.Thread(target=self._pump, args=(source, sink, stalls), daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, stalls: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if stalls and self.stall.is_set():
                    return  # held: nothing more reaches the client, and nothing closes
                sink.sendall(data)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join()


def test_an_sftp_source_that_stalls_mid_read_fails_instead_of_hanging(
    emu: Any, sshd: Any, monkeypatch: pytest.MonkeyPatch, while_sending: Callable[[Callable[[], None]], None]
) -> None:
    # paramiko waits for an SFTP answer forever: a server that stopped answering mid-read (its
    # host frozen, a firewall dropping the flow) held the upload until execution_timeout, if any.
    # The connection's timeout (60 s without one) now bounds each read as it bounds the connect.
    path = sshd.root / "stalls.mp4"
    path.write_bytes(VIDEO * 800)  # ~8 MB: many SFTP reads after the first block
    proxy = _StallingProxy(sshd.port)
    try:
        conn = {
            "conn_type": "ssh",
            "host": "127.0.0.1",
            "port": proxy.port,
            "login": sshd.user,
            "extra": {"key_file": sshd.key_file, "no_host_key_check": True, "timeout": 1},
        }
        monkeypatch.setenv("AIRFLOW_CONN_SFTP_STALLS", json.dumps(conn))
        while_sending(proxy.stall.set)
        context = _context()
        with pytest.raises(
            SourceReadError, match=r"`source` 'sftp://.*stalls\.mp4' could not be read while it was sent"
        ):
            _run(context, source=f"sftp://127.0.0.1{path}", source_conn_id="sftp_stalls")
        assert emu.control.videos() == [] and context["task_state_store"] == {}
    finally:
        proxy.close()


def test_a_send_stopped_by_a_change_keeps_what_the_earlier_video_holds(
    emu: Any, tmp_path: Path, while_sending: Callable[[Callable[[], None]], None]
) -> None:
    # The record outlives success and tells a clear which video holds which version of the file.
    # A clear after the file was rewritten uploads again, over the record; that upload stopped
    # short (the file changed again while sent: SourceChangedError) and the record was dropped,
    # earlier video and all. The next clear had no record, found the earlier video by its tag
    # (same size, the tag lookup compares nothing else) and reused it: success reported for the
    # first version's bytes. Now the earlier record is put back, and the next clear uploads.
    source = tmp_path / "clip.mp4"
    data = VIDEO * 300  # more than one block
    source.write_bytes(data)
    context = _context()
    first = _run(context, source=str(source))
    _replace(source, data[::-1])  # same size, other bytes (another inode)
    os.utime(source, ns=(10**18, 10**18))  # any later write moves it, however coarse the clock

    def rewrite() -> None:
        with source.open("r+b") as fh:
            fh.write(data[:MIB])

    while_sending(rewrite)
    with pytest.raises(SourceChangedError, match="changed while it was being sent"):
        _run(context, source=str(source))
    [kept] = emu.control.videos()
    assert kept["video_no"] == first and context["task_state_store"]["memories_video_no"]["video_no"] == first
    now = source.read_bytes()
    again = _run(context, source=str(source))
    assert again != first
    assert {v["video_no"]: v["sha256"] for v in emu.control.videos()} == {
        first: _sha256(data),
        again: _sha256(now),
    }


def _refusing_if_match(upstream: str) -> Any:
    """A proxy to the S3 server ``upstream`` that answers a GET carrying If-Match with 501
    NotImplemented, as S3-compatible stores without conditional reads do."""
    import http.client
    from urllib.parse import urlsplit

    target = urlsplit(upstream)

    class Proxy(QuietHandler):
        def _forward(self) -> None:
            if self.command == "GET" and self.headers.get("If-Match"):
                body = (
                    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code>'
                    b"<Message>A header you provided implies functionality that is not implemented"
                    b"</Message><Header>If-Match</Header></Error>"
                )
                self.send_body(501, {"Content-Type": "application/xml"}, body)
                return
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else None
            conn = http.client.HTTPConnection(target.hostname, target.port)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(self.command, self.path, body=data, headers=headers)
            answer = conn.getresponse()
            payload = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            told = answer.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", told or str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            conn.close()

        do_GET = do_HEAD = do_PUT = do_POST = _forward

    return Proxy


@pytest.fixture
def s3_without_if_match(moto_s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A connection id to ``moto_s3_server`` through a proxy refusing If-Match on GET."""
    with LocalServer(_refusing_if_match(moto_s3_server.endpoint_url)) as proxy:
        conn = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": proxy.url, "region_name": "us-east-1"},
        }
        monkeypatch.setenv("AIRFLOW_CONN_S3_NO_IF_MATCH", json.dumps(conn))
        yield "s3_no_if_match"


def test_an_s3_compatible_store_refusing_if_match_still_uploads_and_still_pins(
    emu: Any,
    moto_s3_server: Any,
    s3_bucket: str,
    s3_without_if_match: str,
    after_tag_lookup: Callable[[Callable[[], None]], None],
) -> None:
    # An unversioned object was read with If-Match on its ETag. A store that does not implement
    # conditional GETs answers 501 NotImplemented: every try of every upload from it failed, an
    # error Airflow retried. The GET's own ETag is now compared with the one looked up instead.
    s3 = moto_s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=VIDEO)
    source = f"s3://{s3_bucket}/in/clip.mp4"
    first = _run(_context(), source=source, source_conn_id=s3_without_if_match)
    [video] = emu.control.videos()
    assert video["video_no"] == first and video["sha256"] == _sha256(VIDEO)
    # ... and an object overwritten after its look-up is still not sent as the one looked up.
    newer = VIDEO[::-1]
    after_tag_lookup(lambda: s3.put_object(Bucket=s3_bucket, Key="in/clip.mp4", Body=newer))
    context = {"ti": _TaskInstance(), "task_state_store": Store()}
    context["ti"].run_id = "run-2"
    with pytest.raises(
        SourceChangedError, match=r"`source` 's3://.*/in/clip\.mp4' changed since it was looked up"
    ):
        _run(context, source=source, source_conn_id=s3_without_if_match)
    assert [v["video_no"] for v in emu.control.videos()] == [first]
