"""The one scheme table: every family has a probe, and the writers' scheme sets come from it."""

from __future__ import annotations

import pytest

from memories_provider.storage import probes
from memories_provider.storage.credentials import ALLOWED_KEYS
from memories_provider.storage.destinations import OBJECT_STORE_SCHEMES, SFTP_SCHEMES, SUPPORTED_SCHEMES
from memories_provider.storage.uris import LOGIN_SCHEMES, SCHEME_FAMILY, scheme_family


def test_every_family_has_a_probe_and_transport_keys():
    families = set(SCHEME_FAMILY.values())
    assert set(probes._PROBES) == families == set(ALLOWED_KEYS)


def test_scheme_sets_are_read_from_the_table():
    assert SFTP_SCHEMES == LOGIN_SCHEMES == {"sftp", "ssh", "scp"}
    assert {"s3", "s3a", "s3n", "gs", "gcs", "azure"} == OBJECT_STORE_SCHEMES  # no s3u: smart-open has none
    assert OBJECT_STORE_SCHEMES | SFTP_SCHEMES | {"", "file"} == SUPPORTED_SCHEMES


def test_local_probe_sizes_regular_files_only(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"abc")
    assert probes.stored_size(str(tmp_path / "a.mp4"), {}) == 3
    assert probes.stored_size((tmp_path / "a.mp4").as_uri(), {}) == 3
    assert probes.stored_size(str(tmp_path / "none.mp4"), {}) is None
    assert probes.stored_size(str(tmp_path), {}) is None


def test_unknown_schemes_are_refused_by_name():
    with pytest.raises(ValueError, match="unsupported URI scheme 'ftp'"):
        probes.stored_size("ftp://u:secret@host/a.mp4", {})
    with pytest.raises(ValueError, match=r"'ftp://\*\*\*@host/a\.mp4'"):
        scheme_family("ftp://u:secret@host/a.mp4")
