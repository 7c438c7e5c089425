"""Destination helpers that need no service: name sanitising, URI handling, local atomic writes."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from memories_provider.storage.destinations import (
    LOCAL_TEMP_GRACE,
    UNLOCKED_TEMP_GRACE,
    atomic_writer,
    basename_of,
    canonical_uri,
    check_destination,
    destination_exists,
    is_folder,
    join_folder,
    local_path,
    resolve_transport,
    sanitize_filename,
    scheme_of,
)


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        ("../../x", "x"),
        ("../../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("/abs/dir/", "fallback.mp4"),
        ("..\\..\\win.mp4", "win.mp4"),
        ("C:\\Windows\\evil.mp4", "evil.mp4"),
        ("..", "fallback.mp4"),
        (".", "fallback.mp4"),
        ("", "fallback.mp4"),
        (None, "fallback.mp4"),
        ("   ", "fallback.mp4"),
        (".hidden", "hidden"),
        ("a\x00b\nc\r\td.mp4", "abcd.mp4"),
        ("x\u202egnp.mp4", "xgnp.mp4"),  # right-to-left override
        ("what?is#this%.mp4", "what_is_this_.mp4"),
        ("vidéo 東京.mp4", "vidéo 東京.mp4"),
        ("\udcffclip.mp4", "clip.mp4"),  # a lone surrogate (a byte decoded with surrogateescape)
        ("\udcff", "fallback.mp4"),
    ],
)
def test_sanitize_filename_keeps_a_single_safe_component(hostile: str | None, expected: str) -> None:
    name = sanitize_filename(hostile, "fallback.mp4")
    assert name == expected
    assert "/" not in name and "\\" not in name and name not in {"", ".", ".."}


def test_sanitize_filename_bad_fallback_still_gives_a_name() -> None:
    assert sanitize_filename("../", "../..") == "download"


def test_sanitize_filename_truncates_long_names_keeping_the_extension() -> None:
    name = sanitize_filename("a" * 1000 + ".mp4", "f")
    assert name.endswith(".mp4")
    assert len(name.encode()) <= 200
    multibyte = sanitize_filename("é" * 500, "f")
    assert len(multibyte.encode()) <= 200
    multibyte.encode().decode("utf-8")  # never cut inside a character


def test_sanitised_name_never_escapes_the_folder(tmp_path: Path) -> None:
    folder = str(tmp_path / "out") + "/"
    for hostile in ["../../x", "/etc/passwd", "..", "", "a/../../b", "\\..\\..\\c"]:
        uri = join_folder(folder, sanitize_filename(hostile, "VI1.mp4"))
        path = Path(local_path(uri) or "")
        assert path.parent == tmp_path / "out"


def test_join_folder_refuses_unsafe_names() -> None:
    for bad in ["a/b", "..", ".", "", "a\\b"]:
        with pytest.raises(ValueError):
            join_folder("s3://b/prefix/", bad)
    with pytest.raises(ValueError, match="folder"):
        join_folder("s3://b/prefix", "x")
    assert join_folder("s3://b/prefix/", "x.mp4") == "s3://b/prefix/x.mp4"


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("/tmp/x", ""),
        ("rel/x", ""),
        ("file:///tmp/x", "file"),
        ("S3://b/k", "s3"),
        ("gs://b/k", "gs"),
        ("azure://c/b", "azure"),
        ("sftp://u@h:22/p", "sftp"),
        ("dir/with://odd", ""),
    ],
)
def test_scheme_of(uri: str, scheme: str) -> None:
    assert scheme_of(uri) == scheme


def test_check_destination_rejects_unknown_schemes_and_empty() -> None:
    with pytest.raises(ValueError, match="not supported"):
        check_destination("ftp://host/x")
    with pytest.raises(ValueError, match="non-empty"):
        check_destination(" ")
    check_destination("s3://bucket/key")


@pytest.mark.parametrize(
    ("uri", "cut"),
    [
        ("file:///data/take#2.mp4", "'#'"),
        ("file:///data/what?.mp4", "'?'"),
        ("sftp://bob@host/data/take#2.mp4", "'#'"),
        ("ssh://bob@host/data/a?b#c.mp4", "'?' and '#'"),
        ("sftp://bob@host/data/what?/", "'?'"),
        ("azure://container/what?.mp4", "'?'"),
    ],
)
def test_check_destination_refuses_what_would_end_a_uris_path(uri: str, cut: str) -> None:
    # smart-open (and a file:// URI's path) end the path there: 'file:///data/take#2.mp4' was written
    # to /data/take, and reported as written to take#2.mp4.
    with pytest.raises(ValueError, match=f"holds {re.escape(cut)}, which ends the path"):
        check_destination(uri)


@pytest.mark.parametrize(
    ("uri", "written_to"),
    [
        ("file://data/out.mp4", "/out.mp4"),
        ("file://nas/share/videos/", "/share/videos"),
        ("FILE://x/y", "/y"),
    ],
)
def test_check_destination_refuses_a_file_uri_naming_a_host(uri: str, written_to: str) -> None:
    # 'file://data/out.mp4' (two slashes, meaning data/out.mp4) was written to /out.mp4.
    with pytest.raises(
        ValueError, match=f"names the host .* would be written to '{written_to}' on this worker"
    ):
        check_destination(uri)
    check_destination("file:///data/out.mp4")
    check_destination("file://localhost/data/out.mp4")


@pytest.mark.parametrize(
    "uri",
    [
        "/data/take#2.mp4",  # a plain path: no URI parsing
        "file:///data/take%232.mp4",
        "sftp://bob@host/data/what%3F.mp4",
        "s3://bucket/take#2?.mp4",  # smart-open keeps them in an S3 or GCS key
        "gs://bucket/take#2?.mp4",
        "azure://container/take#2.mp4",  # ... and '#' in an Azure blob name
    ],
)
def test_check_destination_takes_what_the_writer_keeps(uri: str) -> None:
    check_destination(uri)


@pytest.mark.parametrize("key", ["x/../y.mp4", "./w.mp4", "in/./", "in/.."])
def test_check_destination_refuses_dot_segments_in_an_azure_blob_name(key: str) -> None:
    # In the blob's URL they are resolved: Azurite refused the request as badly signed (a failure
    # its retries repeated), a server that resolves them would name another blob.
    with pytest.raises(ValueError, match=r"has a '\.' or '\.\.' segment in its blob name"):
        check_destination(f"azure://container/{key}")
    check_destination(f"azure://container/{key.replace('.', 'dot')}")
    check_destination(f"s3://bucket/{key}")  # S3 keys are taken as they are


def test_local_uri_helpers(tmp_path: Path) -> None:
    assert local_path(f"file://{tmp_path}/a.mp4") == f"{tmp_path}/a.mp4"
    assert canonical_uri(f"{tmp_path}/a.mp4") == f"file://{tmp_path}/a.mp4"
    assert canonical_uri("s3://b/k") == "s3://b/k"
    assert basename_of("s3://b/dir/k.mp4") == "k.mp4"
    assert basename_of(f"{tmp_path}/a.mp4") == "a.mp4"
    assert is_folder("s3://b/dir/") and not is_folder("s3://b/dir")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_local_atomic_writer_renames_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "v.mp4"
    with atomic_writer(str(target)) as out:
        out.write(b"hello ")
        # Nothing visible under the final name while writing.
        assert not target.exists()
        out.write(b"world")
    assert target.read_bytes() == b"hello world"
    assert _leftovers(tmp_path / "sub") == ["v.mp4"]
    assert destination_exists(str(target)) == 11
    assert destination_exists(f"file://{target}") == 11
    assert destination_exists(str(tmp_path / "missing")) is None


def test_local_atomic_writer_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError, match="boom"), atomic_writer(f"file://{target}") as out:
        out.write(b"partial")
        raise RuntimeError("boom")
    assert _leftovers(tmp_path) == []


def test_local_atomic_writer_keeps_previous_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "v.mp4"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(str(target)) as out:
        out.write(b"new partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    with atomic_writer(str(target)) as out:
        out.write(b"new")
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == ["v.mp4"]


def test_atomic_writer_refuses_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="folder"), atomic_writer(str(tmp_path) + "/"):
        pass
    assert os.listdir(tmp_path) == []


def test_sftp_temp_name_sits_beside_the_target() -> None:
    from memories_provider.storage.destinations import _sftp_paths

    path, tmp_path, tmp_uri = _sftp_paths("sftp://me@127.0.0.1:2222/data/in/v.mp4")
    assert path == "/data/in/v.mp4"
    assert tmp_path.startswith("/data/in/.v.mp4.") and tmp_path.endswith(".part")
    assert tmp_uri == "sftp://me@127.0.0.1:2222" + tmp_path


# ---------------------------------------------------------------------------- leftovers of killed writers


def _aged(path: Path, seconds: float, data: bytes = b"left over") -> Path:
    path.write_bytes(data)
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def test_local_writer_removes_only_abandoned_temp_files_of_its_target(tmp_path: Path) -> None:
    old = 3 * UNLOCKED_TEMP_GRACE
    abandoned = _aged(tmp_path / ".v.mp4.0123456789ab.part", old)
    kept = [
        _aged(tmp_path / ".w.mp4.0123456789ab.part", old),  # another target's
        _aged(tmp_path / ".v.mp4.0123456789ab.part.keep", old),  # not exactly our pattern
        _aged(tmp_path / ".v.mp4.0123456789AB.part", old),
        _aged(tmp_path / "v.mp4.0123456789ab.part", old),
        _aged(tmp_path / ".v.mp4.0123456789ab.part.0123456789ab.part", old),
        _aged(tmp_path / ".v.mp4.fedcba987654.part", LOCAL_TEMP_GRACE / 4),  # a writer about to lock it
    ]
    outside = _aged(tmp_path / "elsewhere", old)
    link = tmp_path / ".v.mp4.aaaaaaaaaaaa.part"
    link.symlink_to(outside)
    kept.append(link)
    with atomic_writer(str(tmp_path / "v.mp4")) as out:
        assert not abandoned.exists()  # removed before any byte is written
        out.write(b"new")
    assert (tmp_path / "v.mp4").read_bytes() == b"new"
    assert all(os.path.lexists(p) for p in kept)
    assert outside.read_bytes() == b"left over"


def test_local_writer_keeps_a_locked_temp_file_however_old(tmp_path: Path) -> None:
    target = tmp_path / "v.mp4"
    with atomic_writer(str(target)) as live:  # a concurrent writer, idle for hours but alive
        live.write(b"live")
        (live_temp,) = tmp_path.glob(".v.mp4.*.part")
        _aged(live_temp, 3 * UNLOCKED_TEMP_GRACE, b"live")
        with atomic_writer(str(target)) as other:
            other.write(b"other")
        assert live_temp.read_bytes() == b"live"
        live.write(b" and done")
    assert target.read_bytes() == b"live and done"
    assert _leftovers(tmp_path) == ["v.mp4"]


def test_resolve_transport_validates_once_and_writers_reuse_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`transport_params` key 'bogus'"):
        resolve_transport(str(tmp_path) + "/", transport_params={"bogus": 1})
    # A connection means nothing for a local path: ignored (not even looked up), as for sources.
    assert resolve_transport(str(tmp_path / "v.mp4"), conn_id="no_such_conn").params == {}
    with pytest.raises(ValueError, match=r"`destination_conn_id`='nope' is not a defined Airflow connection"):
        resolve_transport("sftp://127.0.0.1/v.mp4", conn_id="nope")
    transport = resolve_transport(str(tmp_path) + "/")
    target = tmp_path / "v.mp4"
    with atomic_writer(str(target), transport=transport) as out:
        out.write(b"abc")
    assert destination_exists(str(target), transport=transport) == 3
    with pytest.raises(TypeError, match="either"):
        destination_exists(str(target), transport=transport, conn_id="x")


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("served", "expected"),
    [
        ("CON", "_CON"),
        ("con.mp4", "_con.mp4"),
        ("nul.mp4", "_nul.mp4"),
        ("Aux", "_Aux"),
        ("COM1.tar.gz", "_COM1.tar.gz"),
        ("lpt9.mp4", "_lpt9.mp4"),
        ("COM\u00b9.mp4", "_COM\u00b9.mp4"),
        ("CONSOLE.mp4", "CONSOLE.mp4"),  # only the exact device names
        ("clip.mp4.", "clip.mp4"),  # Windows drops trailing dots and spaces
        ("clip.mp4 . ", "clip.mp4"),
        ("...", "fallback.mp4"),
    ],
)
def test_sanitize_filename_avoids_windows_device_names(served: str, expected: str) -> None:
    assert sanitize_filename(served, "fallback.mp4") == expected


def test_prefixed_name_keeps_the_prefix_and_the_extension() -> None:
    from memories_provider.storage.destinations import prefixed_name

    assert prefixed_name("VI1.", "clip.mp4") == "VI1.clip.mp4"
    long = prefixed_name("VI568102998803353600.", "é" * 300 + ".mp4")
    assert long.startswith("VI568102998803353600.") and long.endswith(".mp4")
    assert len(long.encode()) <= 200
    long.encode().decode("utf-8")
    with pytest.raises(ValueError, match="no room"):
        prefixed_name("x" * 190, "a.mp4")


# ---------------------------------------------------------------------------- records


def test_provenance_round_trips_through_metadata_and_sidecars() -> None:
    from memories_provider.storage.provenance import Provenance

    record = Provenance("video/VI1", "size=3;create_time=7", size=3, sha256="ab" * 32)
    assert Provenance.from_metadata(record.to_metadata()) == record
    azure_style = {k.replace("-", "_").upper(): v for k, v in record.to_metadata().items()}
    assert Provenance.from_metadata(azure_style) == record
    assert Provenance.from_sidecar(record.to_sidecar({"size": 3, "ino": 9})) == (
        record,
        {"size": 3, "ino": 9},
    )
    assert Provenance.from_metadata({"other": "x"}) is None
    for junk in (b"", b"\xff\xfe", b"[]", b'{"version": 2}', b'{"version": 1, "memories-source": "x"}'):
        assert Provenance.from_sidecar(junk) is None


def test_local_writer_records_the_file_and_refuses_to_clobber(tmp_path: Path) -> None:
    import json

    from memories_provider.storage.destinations import DestinationTaken
    from memories_provider.storage.provenance import Provenance

    target = tmp_path / "v.mp4"
    record = Provenance("asset/re_1", size=None)
    with atomic_writer(str(target), provenance=record, replace=False) as out:
        out.write(b"abc")
        record.size, record.sha256 = 3, "00" * 32  # completed inside the block, read at commit
    side = json.loads((tmp_path / ".v.mp4.memories.json").read_text())
    info = target.stat()
    assert side["memories-source"] == "asset/re_1" and side["memories-size"] == "3"
    assert side["stat"] == {"size": 3, "mtime_ns": info.st_mtime_ns, "ino": info.st_ino}
    with pytest.raises(DestinationTaken), atomic_writer(str(target), replace=False) as out:
        out.write(b"other")
    assert target.read_bytes() == b"abc"
    assert _leftovers(tmp_path) == [".v.mp4.memories.json", "v.mp4"]
    with atomic_writer(str(target)) as out:  # replace, without a record: the old record goes
        out.write(b"new")
    assert _leftovers(tmp_path) == ["v.mp4"]


def test_survey_of_a_local_folder_lists_only_the_prefix_and_judges_records(tmp_path: Path) -> None:
    from memories_provider.storage.provenance import Provenance
    from memories_provider.storage.survey import survey

    folder = str(tmp_path) + "/"
    transport = resolve_transport(folder)
    for name in ("VI1.a.mp4", "VI1.b.mp4", "VI12.a.mp4", "other.mp4"):
        with atomic_writer(folder + name, provenance=Provenance(f"video/{name[:4]}", size=1)) as out:
            out.write(b"x")
    (tmp_path / "VI1.c.mp4").write_bytes(b"y")  # no record
    os.utime(tmp_path / "VI1.b.mp4", ns=(1, 1))  # touched since: the record's stat no longer matches
    found = {Path(e.uri).name: e for e in survey(folder, transport=transport, prefix="VI1.")}
    assert sorted(found) == ["VI1.a.mp4", "VI1.b.mp4", "VI1.c.mp4"]
    assert found["VI1.a.mp4"].intact and found["VI1.a.mp4"].provenance is not None
    assert not found["VI1.b.mp4"].intact and found["VI1.b.mp4"].provenance is not None
    assert found["VI1.c.mp4"].provenance is None
    assert survey(folder, transport=transport) == []  # no prefix: only the writability check
    assert sorted(p.name for p in tmp_path.iterdir() if "probe" in p.name) == []


def test_a_destination_error_quoting_a_library_error_shows_no_password() -> None:
    # The preflight's errors quote what paramiko/boto/azure said; that text is redacted too.
    from memories_provider.storage.survey import _cannot

    error = _cannot(
        "sftp://alice:pw%2FSECRET-77@host/x.mp4",
        "cannot be written over SFTP: auth failed for alice:pw/SECRET-77 (pw%2FSECRET-77)",
    )
    assert "SECRET" not in str(error)
    assert str(error).startswith("`destination` 'sftp://alice:***@host/x.mp4' cannot be written over SFTP")
