"""What someone else left at a download's destination name: symlinks (dangling or pointing out of the
folder) and FIFOs. Nothing is written through them, and a name that is taken is refused before the
(billed) download request, not after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from downloads import run_download as run

from memories_provider.storage.destinations import DestinationTaken, atomic_writer, resolve_transport
from memories_provider.storage.survey import survey

VIDEO = os.urandom(300_000)


def _planted_link(folder: Path, name: str) -> tuple[Path, Path]:
    """A symlink ``folder/name`` to a file that does not exist (outside ``folder``)."""
    nowhere = folder.parent / f"{folder.name}-nowhere.mp4"
    link = folder / name
    link.symlink_to(nowhere)
    return link, nowhere


@pytest.mark.parametrize("store", ["local", "sftp"])
def test_a_dangling_symlink_at_the_name_is_refused_before_the_download(
    emu: Any, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    # Before: nothing was seen there, the video was downloaded (and billed), then the no-clobber commit
    # refused the name the link holds: locally "created meanwhile by another writer", over SFTP a bare
    # OSError 'Failure' that the task's retries downloaded (and billed) again, each time.
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    extra: dict[str, Any] = {}
    if store == "sftp":
        sshd = request.getfixturevalue("sshd")
        folder = Path(sshd.root) / "dangling"
        folder.mkdir()
        uri = lambda path: sshd.uri(str(path))  # noqa: E731
        extra = {"destination_conn_id": sshd.conn_id}
    else:
        folder = tmp_path / "out"
        folder.mkdir()
        uri = str
    link, nowhere = _planted_link(folder, "a.mp4")
    with pytest.raises(
        AirflowFailException,
        match=r"a\.mp4 already exists \(a symlink to nothing\) .* nothing was downloaded",
    ):
        run(asset_id=asset["asset_id"], destination=uri(link), **extra)
    assert emu.control.count("v2_download") == 0
    assert link.is_symlink() and not nowhere.exists()
    # overwrite=True replaces the link itself; nothing is written where it pointed.
    run(asset_id=asset["asset_id"], destination=uri(link), overwrite=True, **extra)
    assert not link.is_symlink() and link.read_bytes() == VIDEO
    assert not nowhere.exists()


def test_a_dangling_symlink_with_the_folder_files_name_is_refused_before_the_download(
    emu: Any, tmp_path: Path
) -> None:
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    folder = tmp_path / "in"
    folder.mkdir()
    link, nowhere = _planted_link(folder, f"{asset['asset_id']}.a.mp4")
    with pytest.raises(
        AirflowFailException,
        match=r"a\.mp4 already exists \(a symlink to nothing\) .* nothing was downloaded",
    ):
        run(asset_id=asset["asset_id"], destination=f"{folder}/")
    assert emu.control.count("v2_download") == 0
    assert link.is_symlink() and not nowhere.exists()


def test_a_dangling_symlink_planted_while_an_sftp_download_writes_is_a_taken_name(sshd: Any) -> None:
    # The no-clobber commit's rename fails; that failure was taken for the name being free (stat
    # follows the link) and raised as a bare OSError 'Failure', which a retry downloads again for.
    folder = Path(sshd.root) / "planted-meanwhile"
    folder.mkdir()
    target = folder / "a.mp4"
    with (
        pytest.raises(DestinationTaken),
        atomic_writer(sshd.uri(str(target)), conn_id=sshd.conn_id, replace=False) as out,
    ):
        out.write(VIDEO)
        _planted_link(folder, "a.mp4")
    assert target.is_symlink()
    assert sorted(p.name for p in folder.iterdir()) == ["a.mp4"]  # no temporary file left


@pytest.mark.parametrize(
    ("store", "kind"), [("local", "folder"), ("sftp", "folder"), ("sftp", "link"), ("sftp", "dangling")]
)
def test_anything_with_the_folder_files_name_is_refused_before_the_download(
    emu: Any, tmp_path: Path, store: str, kind: str, request: pytest.FixtureRequest
) -> None:
    # Before: a folder there (locally or over SFTP), or over SFTP a symlink of any kind (the listing's
    # modes are lstat's, and only regular files were looked at), was not seen; the video was downloaded
    # (billed) and the commit failed: 'is an existing folder' or 'No such file', both retried, each
    # retry billed again; a symlink to another file failed as 'created meanwhile by another writer'.
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    extra: dict[str, Any] = {}
    if store == "sftp":
        sshd = request.getfixturevalue("sshd")
        folder = Path(sshd.root) / f"entry-{kind}"
        destination = sshd.uri(str(folder)) + "/"
        extra = {"destination_conn_id": sshd.conn_id}
    else:
        folder = tmp_path / "in"
        destination = f"{folder}/"
    folder.mkdir()
    name = f"{asset['asset_id']}.a.mp4"
    other = tmp_path / "other.mp4"
    other.write_bytes(b"other bytes")
    if kind == "folder":
        (folder / name).mkdir()
        expected = r"already exists \(a folder\) .* remove it or choose another destination"
    elif kind == "link":
        (folder / name).symlink_to(other)
        expected = r"already exists \(11 bytes\) with no record"
    else:
        _planted_link(folder, name)
        expected = r"already exists \(a symlink to nothing\) with no record"
    with pytest.raises(AirflowFailException, match=expected):
        run(asset_id=asset["asset_id"], destination=destination, **extra)
    assert emu.control.count("v2_download") == 0
    assert sorted(p.name for p in folder.iterdir()) == [name]
    assert other.read_bytes() == b"other bytes"


@pytest.mark.parametrize("around", ["\n", " ", "\r\n", "\t"])
def test_a_rendered_destination_is_taken_without_the_whitespace_around_it(
    emu: Any, tmp_path: Path, around: str
) -> None:
    # A template's trailing newline ("{{ var.value.out }}\n", a Variable saved with one) made
    # 'out/\n' a file named '\n' in 'out', not a download into the folder 'out/'.
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    folder = tmp_path / "out"
    result = run(asset_id=asset["asset_id"], destination=f"{folder}/{around}")
    name = f"{asset['asset_id']}.a.mp4"
    assert result["uri"] == f"{folder}/{name}"
    assert sorted(p.name for p in folder.iterdir()) == [f".{name}.memories.json", name]
    again = run(asset_id=asset["asset_id"], destination=f"{folder}/{around}")
    assert again["skipped"] is True


_LIMITED_WORKER = """
import json, resource, sys
from memories_provider.operators.download import MemoriesDownloadOperator
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail EFBIG
try:
    MemoriesDownloadOperator(task_id="limited", **json.loads(sys.argv[1])).execute(context={})
    print(json.dumps({"error": None}))
except Exception as err:
    print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
"""


@pytest.mark.parametrize("into_folder", [False, True])
def test_a_write_refused_mid_file_names_the_destination_and_leaves_nothing(
    emu: Any, tmp_path: Path, into_folder: bool
) -> None:
    # A worker whose file size limit (RLIMIT_FSIZE; ENOSPC or a quota mid-write fail the same way) is
    # met half-way. Before: the task failed with a bare "[Errno 27] File too large", naming no file.
    big = os.urandom(5 * 1024 * 1024 + 7)
    asset = emu.control.add_asset(big, "a.mp4", "video/mp4")
    folder = tmp_path / "out"
    folder.mkdir()
    destination = f"{folder}/" if into_folder else str(folder / "a.mp4")
    written = folder / (f"{asset['asset_id']}.a.mp4" if into_folder else "a.mp4")
    kwargs = {"asset_id": asset["asset_id"], "destination": destination}
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED_WORKER, json.dumps(kwargs), str(2 * 1024 * 1024 + 5)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    error = json.loads(proc.stdout.strip().splitlines()[-1])["error"]
    assert error == (
        f"AirflowException: asset {asset['asset_id']}: writing {written} failed: File too large; nothing "
        "was left there (free some space or lift the limit, or choose another destination)"
    )
    assert list(folder.iterdir()) == []  # no temporary file, no record


@pytest.mark.parametrize("store", ["local", "sftp"])
def test_a_fifo_at_the_name_is_named_and_never_opened(
    emu: Any, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    # It was taken for an empty file ('already exists (0 bytes)'), and where its bytes were compared
    # (a FIFO planted while the download wrote, its commit refused) opened for reading, which blocks
    # until someone writes to it: the task hung until its execution_timeout.
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    extra: dict[str, Any] = {}
    if store == "sftp":
        sshd = request.getfixturevalue("sshd")
        folder = Path(sshd.root) / "fifo"
        folder.mkdir()
        destination = sshd.uri(str(folder / "a.mp4"))
        extra = {"destination_conn_id": sshd.conn_id}
    else:
        folder = tmp_path
        destination = str(folder / "a.mp4")
    os.mkfifo(folder / "a.mp4")
    with pytest.raises(AirflowFailException, match=r"a\.mp4 already exists \(a FIFO\) with no record"):
        run(asset_id=asset["asset_id"], destination=destination, **extra)
    assert emu.control.count("v2_download") == 0
    found = survey(
        destination, transport=resolve_transport(destination, conn_id=extra.get("destination_conn_id"))
    )
    assert [(e.kind, e.provenance) for e in found] == [("FIFO", None)]


@pytest.mark.parametrize("store", ["local", "sftp"])
def test_overwrite_into_a_folder_whose_file_name_is_a_folder_fails_at_once(
    emu: Any, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    # overwrite=True looks nothing up before the request, and the file's name comes with the answer.
    # Before: the whole body was written, then the rename onto the folder failed (IsADirectoryError
    # locally, 'Failure' over SFTP), an error Airflow retried, each retry downloading it again.
    asset = emu.control.add_asset(VIDEO, "a.mp4", "video/mp4")
    extra: dict[str, Any] = {}
    if store == "sftp":
        sshd = request.getfixturevalue("sshd")
        folder = Path(sshd.root) / "overwrite-folder"
        folder.mkdir()
        destination = sshd.uri(str(folder)) + "/"
        extra = {"destination_conn_id": sshd.conn_id}
    else:
        folder = tmp_path
        destination = f"{folder}/"
    name = f"{asset['asset_id']}.a.mp4"
    (folder / name).mkdir()
    with pytest.raises(
        AirflowFailException, match=f"{name} is an existing folder, which the file cannot replace"
    ):
        run(asset_id=asset["asset_id"], destination=destination, overwrite=True, **extra)
    assert sorted(p.name for p in folder.iterdir()) == [name]
    assert list((folder / name).iterdir()) == []
