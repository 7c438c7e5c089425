"""The provider registers itself the Airflow way and its connection form is what the UI shows."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import airflow
import jsonschema
import pytest

from memories_provider.get_provider_info import get_provider_info

AIRFLOW_3 = airflow.__version__.startswith("3.")


def test_provider_info_validates_against_airflows_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_and_every_listed_module_import():
    eps = metadata.entry_points(group="apache_airflow_provider")
    ours = [ep for ep in eps if ep.value.startswith("memories_provider.")]
    assert len(ours) == 1
    info = ours[0].load()()
    modules = [
        m
        for kind in ("hooks", "operators", "sensors", "triggers")
        for e in info[kind]
        for m in e["python-modules"]
    ]
    for module in modules:
        __import__(module)
    hook_class = info["connection-types"][0]["hook-class-name"]
    module, _, name = hook_class.rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name).conn_type == "memories"


def test_providers_manager_knows_the_connection_type_and_form():
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert "airflow-provider-memories" in pm.providers
    try:  # Airflow 3.3+: tasks find hooks through the task SDK (ProvidersManager.hooks is deprecated)
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:
        hooks = pm.hooks
    else:
        hooks = ProvidersManagerTaskRuntime().hooks
    assert hooks["memories"].hook_class_name == "memories_provider.hooks.memories.MemoriesHook"
    widgets = pm.connection_form_widgets
    names = (
        "v2_host",
        "timeout",
        "upload_timeout",
        "max_retries",
        "unique_id",
        "blob_download_api",
        "ca_bundle",
    )
    for name in names:
        assert f"extra__memories__{name}" in widgets
    behaviour = pm.field_behaviours["memories"]
    assert {"login", "schema"} <= set(behaviour["hidden_fields"])
    assert behaviour["relabeling"]["password"] == "API key"


@pytest.mark.skipif(AIRFLOW_3, reason="Airflow 3 reads the form from provider info (conn-fields)")
def test_airflow2_form_widgets_build():
    from memories_provider.hooks.memories import MemoriesHook

    widgets = MemoriesHook.get_connection_form_widgets()
    assert set(widgets) == {
        "v2_host",
        "timeout",
        "upload_timeout",
        "max_retries",
        "unique_id",
        "blob_download_api",
        "ca_bundle",
    }


def test_airflow_providers_list_shows_it():
    out = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "providers", "list", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    ).stdout
    listing = next(line for line in out.splitlines() if line.startswith("[{"))  # logs may precede it
    names = {p["package_name"] for p in json.loads(listing)}
    assert "airflow-provider-memories" in names
