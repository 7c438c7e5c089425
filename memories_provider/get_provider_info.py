"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

Kept free of heavy imports: Airflow calls it while discovering providers.
"""

from __future__ import annotations

from typing import Any

from memories_provider import __version__
from memories_provider.hooks.connection import CONN_FIELDS, UI_FIELD_BEHAVIOUR

_INTEGRATION = "memories.ai"


def get_provider_info() -> dict[str, Any]:
    """Return the provider description that Airflow validates against ``provider_info.schema.json``."""
    return {
        "package-name": "airflow-provider-memories",
        "name": "memories.ai",
        "description": (
            "Upload, index, wait for and download videos, and export their captions and transcripts,"
            " with the memories.ai API."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://api-tools.memories.ai/",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "memories_provider.operators.upload",
                    "memories_provider.operators.download",
                    "memories_provider.operators.export",
                ],
            }
        ],
        "sensors": [
            {"integration-name": _INTEGRATION, "python-modules": ["memories_provider.sensors.video_status"]}
        ],
        "hooks": [{"integration-name": _INTEGRATION, "python-modules": ["memories_provider.hooks.memories"]}],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "memories_provider.triggers.video_status",
                    "memories_provider.triggers.pause",
                ],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "memories_provider.hooks.memories.MemoriesHook",
                "hook-name": "memories.ai",
                "connection-type": "memories",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
