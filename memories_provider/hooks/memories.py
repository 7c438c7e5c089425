"""MemoriesHook: the ``memories`` connection turned into memories.ai API clients."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook, mask_secret

from memories_provider.client import (
    AsyncMemoriesClient,
    DownloadResponse,
    MemoriesAuthError,
    MemoriesClient,
    MemoriesConnectionError,
    MemoriesError,
    MemoriesInvalidArgumentError,
    MemoriesProxyError,
    Redactor,
    RetryPolicy,
    Transcript,
    TranscriptKind,
    UploadMetadata,
    UploadResult,
    Video,
    VideoPage,
)
from memories_provider.client.upload import VideoUpload, upload_arguments, with_parameters_of
from memories_provider.hooks.connection import (
    CONN_FIELDS,
    DEFAULT_CONN_ID,
    DEFAULT_V2_HOST,
    MAX_FORM_RETRIES,
    MIN_FORM_TIMEOUT,
    UI_FIELD_BEHAVIOUR,
    MemoriesConnectionConfig,
    MemoriesConnectionConfigError,
    config_from_connection,
    connection_label,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection


class MemoriesHook(BaseHook):
    """Talks to memories.ai through the ``memories`` connection.

    The connection holds the API key in *API key* (``password``), the v1 origin in ``host``
    (default ``https://api.memories.ai``) and the extras ``v2_host``, ``timeout``, ``upload_timeout``
    (how long an upload's answer may take, default 600 s), ``max_retries``, ``unique_id``,
    ``blob_download_api`` and ``ca_bundle`` (PEM certificates to verify an https host with). The
    key is registered with Airflow's secret masker as soon as it is read.

    One pooled synchronous client is built per hook (``get_conn()``); async callers (triggers)
    get a fresh :class:`AsyncMemoriesClient` from :meth:`get_async_client` and close it themselves.

    :param memories_conn_id: id of the ``memories`` connection to use.
    """

    conn_name_attr = "memories_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "memories"
    hook_name = "memories.ai"

    def __init__(self, memories_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.memories_conn_id = memories_conn_id

    def __repr__(self) -> str:
        return f"MemoriesHook(memories_conn_id={self.memories_conn_id!r})"

    # ------------------------------------------------------------------ connection form

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form (Airflow 2; Airflow 3 reads ``conn-fields``).

        Their validators refuse what can never work (the same rules as ``conn-fields``).
        """
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, StringField
        from wtforms.validators import AnyOf, Length, NumberRange, Optional, Regexp, ValidationError

        def text(name: str, *validators: Any, field: Any = StringField) -> Any:
            schema = CONN_FIELDS[name]["schema"]
            return field(
                lazy_gettext(CONN_FIELDS[name]["label"]),
                validators=[Optional(), *validators],
                widget=BS3TextFieldWidget(),
                description=str(CONN_FIELDS[name]["description"]),
                default=schema.get("default"),
            )

        def seconds(form: Any, field: Any) -> None:  # Airflow 2 forms take no FloatField
            try:
                value = float(field.data)
            except (TypeError, ValueError):
                value = math.nan
            if not (math.isfinite(value) and value >= MIN_FORM_TIMEOUT):
                raise ValidationError(f"a number of seconds, at least {MIN_FORM_TIMEOUT}")

        return {
            "v2_host": text(
                "v2_host",
                Regexp(
                    CONN_FIELDS["v2_host"]["schema"]["pattern"],
                    message=f"an http(s) URL, e.g. {DEFAULT_V2_HOST}",
                ),
            ),
            "timeout": text("timeout", seconds),
            "upload_timeout": text("upload_timeout", seconds),
            "max_retries": text("max_retries", NumberRange(min=0, max=MAX_FORM_RETRIES), field=IntegerField),
            "unique_id": text("unique_id", Length(min=1)),
            "blob_download_api": text("blob_download_api", AnyOf(["v1", "v2"])),
            "ca_bundle": text("ca_bundle", Length(min=1)),
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden and relabelled standard fields of the connection form (Airflow 2)."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    # ------------------------------------------------------------------ configuration

    def _config_from(self, conn: Connection, extra: dict[str, Any]) -> MemoriesConnectionConfig:
        return config_from_connection(
            conn_id=self.memories_conn_id,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            extra=extra,
            schema=conn.schema,
        )

    def _check_extra_json(self, conn: Connection) -> None:
        """Refuse extras that are not JSON, naming the field; Airflow would log a traceback and
        hand over ``{}``, and every setting in them would be dropped unseen."""
        raw = conn.extra
        if not isinstance(raw, str) or not raw.strip():
            return
        try:
            json.loads(raw)
        except ValueError as err:
            where = (
                f" ({err.msg} at line {err.lineno}, column {err.colno})"
                if isinstance(err, json.JSONDecodeError)
                else ""
            )
            # The text itself is not quoted: it may hold a key pasted into the wrong field.
            raise MemoriesConnectionConfigError(
                f"{connection_label(self.memories_conn_id)}: field 'extra' is not valid JSON{where}; "
                'it must be a JSON object such as {"unique_id": "team-a"}'
            ) from None

    def _undefined(self) -> MemoriesConnectionConfigError:
        """The error for a ``memories_conn_id`` that names no connection, saying how to define it."""
        conn_id = self.memories_conn_id
        return MemoriesConnectionConfigError(
            f"{connection_label(conn_id)} is not defined (parameter `memories_conn_id`): create it in "
            f"Admin > Connections with type memories.ai, or set AIRFLOW_CONN_{conn_id.upper()}"
        )

    @cached_property
    def config(self) -> MemoriesConnectionConfig:
        """Validated settings of the connection (looked up once per hook)."""
        try:
            conn = self.get_connection(self.memories_conn_id)
        except AirflowNotFoundException:
            raise self._undefined() from None
        if conn.password:  # masked before validation, so no error path can show it
            mask_secret(conn.password)
        self._check_extra_json(conn)
        config = self._config_from(conn, conn.extra_dejson)
        mask_secret(config.api_key)
        return config

    async def aget_config(self) -> MemoriesConnectionConfig:
        """Like :attr:`config`, without blocking the event loop (for triggers)."""
        if "config" in self.__dict__:
            return self.config
        from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

        try:
            conn = await get_async_connection(self.memories_conn_id, hook=self)
        except AirflowNotFoundException:
            raise self._undefined() from None
        if conn.password:
            await _amask_secret(conn.password)
        self._check_extra_json(conn)
        config = self._config_from(conn, await get_async_extra_dejson(conn))
        await _amask_secret(config.api_key)
        self.__dict__["config"] = config
        return config

    def edited(self) -> MemoriesHook | None:
        """A new hook of this connection if it now holds other settings than this hook read (its
        key rotated since, say); ``None`` when they are the same, or it cannot be read any more.

        For a long wait whose requests meet a refused key: the refusal of a key the connection no
        longer holds says nothing about the one it holds now.
        """
        fresh = type(self)(memories_conn_id=self.memories_conn_id)
        try:
            config = fresh.config
        except Exception as err:  # deleted or broken meanwhile: the refusal stands
            self.log.warning("Could not read connection %r again: %s", self.memories_conn_id, err)
            return None
        return fresh if config != self.config else None

    @staticmethod
    def retry_policy(config: MemoriesConnectionConfig) -> RetryPolicy:
        """The retry policy the connection asks for (its ``max_retries``)."""
        return RetryPolicy(max_retries=config.max_retries)

    def _client_kwargs(self, config: MemoriesConnectionConfig) -> dict[str, Any]:
        return {
            "base_url": config.base_url,
            "v2_base_url": config.v2_base_url,
            "timeout": config.timeout,
            "upload_timeout": config.upload_timeout,
            "retry": self.retry_policy(config),
            "ca_bundle": config.ca_bundle,
        }

    @cached_property
    def client(self) -> MemoriesClient:
        """The hook's pooled synchronous client (built on first use)."""
        config = self.config
        return MemoriesClient(config.api_key, **self._client_kwargs(config))

    def new_client(self, *, retry: RetryPolicy | None = None) -> MemoriesClient:
        """A new synchronous client (the caller closes it), optionally with its own retry policy."""
        config = self.config
        kwargs = self._client_kwargs(config)
        if retry is not None:
            kwargs["retry"] = retry
        return MemoriesClient(config.api_key, **kwargs)

    def get_conn(self) -> MemoriesClient:
        """Return the hook's pooled synchronous :class:`MemoriesClient`."""
        return self.client

    async def get_async_client(self, *, retry: RetryPolicy | None = None) -> AsyncMemoriesClient:
        """A new :class:`AsyncMemoriesClient`; use it as ``async with await hook.get_async_client() as c``.

        :param retry: a retry policy of its own instead of the connection's.
        """
        config = await self.aget_config()
        kwargs = self._client_kwargs(config)
        if retry is not None:
            kwargs["retry"] = retry
        return AsyncMemoriesClient(config.api_key, **kwargs)

    def close(self) -> None:
        """Close the pooled session, if one was opened."""
        client = self.__dict__.pop("client", None)
        if client is not None:
            client.close()

    def _scope(self, unique_id: str | None) -> str:
        return unique_id if unique_id else self.config.unique_id

    # ------------------------------------------------------------------ operations

    @with_parameters_of(upload_arguments)
    def upload_video(self, *args: Any, **kwargs: Any) -> UploadResult:
        """Upload a video, streamed (see :meth:`MemoriesClient.upload_video`); ``unique_id`` defaults
        to the connection's. The parameters are :func:`~memories_provider.client.upload.upload_arguments`'.
        """
        return self.upload(upload_arguments(*args, **kwargs))

    def upload(self, upload: VideoUpload) -> UploadResult:
        """Send one :class:`~memories_provider.client.upload.VideoUpload`, scoped to the connection's
        ``unique_id`` unless it names its own."""
        return self.client.upload(replace(upload, metadata=self.scoped(upload.metadata)))

    def upload_video_from_url(
        self, url: str, *, metadata: UploadMetadata | None = None, **fields: Any
    ) -> UploadResult:
        """Have the service fetch ``url`` itself (``upload_url``); metadata as for :meth:`upload_video`."""
        scoped = self.scoped(UploadMetadata.merged(metadata, fields))
        return self.client.upload_video_from_url(url, metadata=scoped)

    def scoped(self, metadata: UploadMetadata) -> UploadMetadata:
        """``metadata`` with ``unique_id`` defaulting to the connection's."""
        return replace(metadata, unique_id=self._scope(metadata.unique_id))

    def get_video(self, video_no: str, *, unique_id: str | None = None) -> Video:
        """Metadata and status of one video."""
        return self.client.get_video(video_no, unique_id=self._scope(unique_id))

    def list_videos(self, *, unique_id: str | None = None, **filters: Any) -> VideoPage:
        """One page of videos (filters as in :meth:`MemoriesClient.list_videos`)."""
        return self.client.list_videos(unique_id=self._scope(unique_id), **filters)

    @contextmanager
    def status_lister(self) -> Iterator[Callable[..., VideoPage]]:
        """:meth:`list_videos` for the one check a deferrable wait makes on the worker before it
        hands the wait to the trigger: a rate limit (``0429``) is raised at once, as the transient
        error it is (the check says "not yet" and the task defers), not slept out in the worker
        slot the deferral is meant to free, up to ``max_retries`` ``Retry-After`` s long. The
        trigger's pacer, shared by every wait of the connection, paces rate limits instead. Other
        transient errors are retried as the connection says.
        """
        policy = replace(self.retry_policy(self.config), retry_rate_limits=False)
        with self.new_client(retry=policy) as client:

            def list_videos(*, unique_id: str | None = None, **filters: Any) -> VideoPage:
                return client.list_videos(unique_id=self._scope(unique_id), **filters)

            yield list_videos

    def iter_videos(
        self, *, unique_id: str | None = None, page_size: int = 100, **filters: Any
    ) -> Iterator[Video]:
        """Every video matching the filters, across pages.

        :raises MemoriesPagingError: when the pages cannot be read whole (the service ignores
            ``page``, or its pages end before ``total_count``): never take such a listing for all.
        """
        return self.client.iter_videos(page_size=page_size, unique_id=self._scope(unique_id), **filters)

    def list_unique_ids(self) -> list[str]:
        """All ``unique_id`` namespaces of the account."""
        return self.client.list_unique_ids()

    def delete_videos(self, video_nos: Iterable[str], *, unique_id: str | None = None) -> None:
        """Delete videos (sent in chunks of at most 100 ids)."""
        self.client.delete_videos(video_nos, unique_id=self._scope(unique_id))

    def get_transcript(
        self, video_no: str, kind: TranscriptKind, *, unique_id: str | None = None
    ) -> Transcript:
        """One index output of a ``PARSE`` video: ``"visual"`` captions or the ``"audio"`` transcription."""
        return self.client.get_transcript(video_no, kind, unique_id=self._scope(unique_id))

    def get_video_caption(self, video_no: str, *, unique_id: str | None = None) -> Transcript:
        """Visual captions (scene descriptions), segment by segment (none before ``PARSE``)."""
        return self.get_transcript(video_no, "visual", unique_id=unique_id)

    def get_audio_transcription(self, video_no: str, *, unique_id: str | None = None) -> Transcript:
        """The audio transcription, segment by segment (none without an audio track or before ``PARSE``)."""
        return self.get_transcript(video_no, "audio", unique_id=unique_id)

    async def aget_transcript(
        self, video_no: str, kind: TranscriptKind, *, unique_id: str | None = None
    ) -> Transcript:
        """Async :meth:`get_transcript` (a client of its own, closed on return; for triggers)."""
        scope = unique_id or (await self.aget_config()).unique_id
        async with await self.get_async_client() as client:
            return await client.get_transcript(video_no, kind, unique_id=scope)

    async def aget_video_caption(self, video_no: str, *, unique_id: str | None = None) -> Transcript:
        """Async :meth:`get_video_caption`."""
        return await self.aget_transcript(video_no, "visual", unique_id=unique_id)

    async def aget_audio_transcription(self, video_no: str, *, unique_id: str | None = None) -> Transcript:
        """Async :meth:`get_audio_transcription`."""
        return await self.aget_transcript(video_no, "audio", unique_id=unique_id)

    def download_video(self, video_no: str, *, unique_id: str | None = None) -> DownloadResponse:
        """Open a streamed download of a video by ``video_no``; use it as a context manager."""
        return self.client.download_video(video_no, unique_id=self._scope(unique_id))

    def download_blob(
        self, bucket: str, blob: str, *, api: Literal["v1", "v2"] | None = None
    ) -> DownloadResponse:
        """Open a streamed download by ``bucket`` and ``blob`` (endpoint from ``blob_download_api``)."""
        return self.client.download_blob(bucket, blob, api=api or self.config.blob_download_api)

    def download_asset(self, asset_id: str) -> DownloadResponse:
        """Open a streamed download of an asset by ``asset_id`` (v2)."""
        return self.client.download_asset(asset_id)

    def test_connection(self) -> tuple[bool, str]:
        """Make one cheap authenticated call (``list_unique_ids``) and say how it went.

        Never raises: any failure (a misconfigured connection included) is ``(False, message)``,
        one short sentence naming the connection (or "this connection" for the Test button's
        unsaved copy) and the cause; the message never holds the key, not even a piece of it.
        """
        label = connection_label(self.memories_conn_id)
        password: str | None = None
        origin = "the service"
        try:
            try:
                password = self.get_connection(self.memories_conn_id).password
            except AirflowNotFoundException:
                raise self._undefined() from None
            config = self.config
            origin = _origin_of(config.base_url)
            client = MemoriesClient(
                config.api_key, **{**self._client_kwargs(config), "retry": RetryPolicy(max_retries=0)}
            )
            with client:
                ids = client.list_unique_ids()
        except MemoriesConnectionConfigError as err:
            message = str(err)
        except MemoriesAuthError as err:
            reason = err.code or err.http_status
            message = f"Authentication failed: {origin} refused the API key ({reason}: {err.message})"
        except MemoriesProxyError as err:  # the proxy's 407 or 403, not 'connection failed'
            message = f"{label}: cannot reach {origin}: {err.message}"
        except MemoriesConnectionError as err:
            message = f"{label}: cannot reach {origin} ({transport_cause(err)})"
        except MemoriesInvalidArgumentError as err:  # refused here, before sending (a CA bundle)
            message = f"{label}: {err}"
        except MemoriesError as err:
            message = f"{label}: {origin} answered with an error: {err}"
        except Exception as err:  # shown in the UI: say why, whatever it is
            message = f"{label}: test failed: {err}"
        else:
            return True, f"Connected to {config.base_url}; the key sees {len(ids)} unique_id namespace(s)."
        return False, Redactor([password]).redact(message)


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def transport_cause(error: BaseException) -> str:
    """A transport failure in a few words: ``connection refused``, ``host name not found``,
    ``timed out``, ``TLS handshake failed``, ``connection reset`` (else ``connection failed``).

    Looks through the chain of causes (requests wraps urllib3, which wraps the socket's error).
    """
    seen: set[int] = set()
    stack: list[Any] = [error]
    found: list[BaseException] = []
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        found.append(item)
        stack.extend([getattr(item, "reason", None), item.__cause__, item.__context__, *item.args])
    names = {cls.__name__ for item in found for cls in type(item).__mro__}
    if any(isinstance(item, ConnectionRefusedError) for item in found):
        return "connection refused"
    if "NameResolutionError" in names or any(isinstance(item, socket.gaierror) for item in found):
        return "host name not found"
    if any(isinstance(item, ssl.SSLError) for item in found) or "SSLError" in names:
        return "TLS handshake failed"
    if any(isinstance(item, TimeoutError) for item in found) or any("Timeout" in name for name in names):
        return "timed out"
    if any(isinstance(item, ConnectionResetError) for item in found):
        return "connection reset"
    if "RemoteDisconnected" in names:
        return "closed without an answer"
    return "connection failed"


async def _amask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's secret masker from the event loop without blocking it."""
    try:
        from airflow.sdk.log import amask_secret  # Airflow >= 3.3.2
    except ImportError:
        # Older Airflow 3 sends the secret to the supervisor synchronously (unsafe on the loop), so
        # run it in a worker thread as common-compat does for extra_dejson; on 2.11 it is local only.
        await asyncio.to_thread(mask_secret, secret)
        return
    await amask_secret(secret)
