"""The one redaction rule, as a pure function: redact every secret (in every echoed form), then cut."""

from __future__ import annotations

import base64
import html
import json
import re
from urllib.parse import quote, quote_plus

import pytest
from leaks import chain_leaks, leaks

from memories_provider.client import protocol
from memories_provider.redaction import MIN_EDGE, NO_SECRETS, Redactor

KEY = "sk-SECRET-ABC123"


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_cut_at_any_offset_never_leaves_a_piece_of_the_key(as_bytes):
    # The first case: the key near character 190 of a body cut at 200. Every offset
    # from "well before" to "well after" the cut, twice in the body, and a multi-byte prefix.
    redactor = Redactor([KEY])
    limit = protocol.ERROR_BODY_QUOTE
    for offset in range(limit - 3 * len(KEY), limit + 2):
        for prefix_char in ("x", "é"):
            text = prefix_char * offset + f"Authorization: {KEY}\nX-Echo: {KEY} end"
            shown = redactor.excerpt(text.encode() if as_bytes else text, limit)
            assert leaks(shown, KEY) == [], (offset, prefix_char, shown[-40:])
            assert len(shown) <= limit + 3


def test_the_client_quote_of_a_body_is_redacted_before_it_is_cut():
    # Before the fix: body[:200] then redact -> "...Authorization: sk-SECRET-" survived.
    body = (b"x" * 175) + f"Authorization: {KEY}".encode() + b" " * 100
    quoted = protocol.quote_body(body, Redactor([KEY]))
    assert leaks(quoted, KEY) == [] and "Authorization: ***" in quoted
    assert "sk-SECRET-" in protocol.quote_body(body)  # what a quote without the key's redactor shows


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


#: A key with characters that every encoding changes.
ODD_KEY = KEY + "/+&=<\"'\\"


@pytest.mark.parametrize(
    "encode",
    [
        lambda k: quote(k, safe=""),
        lambda k: quote(k, safe="/"),
        lambda k: quote_plus(k),
        lambda k: json.dumps(k),
        lambda k: json.dumps(k, ensure_ascii=False),
        lambda k: html.escape(k),
        lambda k: repr(k),
        lambda k: _lower_hex(quote(k, safe="")),
        lambda k: _lower_hex(quote_plus(k)),
        lambda k: json.dumps(k).replace("/", "\\/"),
        lambda k: json.dumps(k).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
        lambda k: json.dumps(k).replace("&", "\\u0026").replace("=", "\\u003d").replace("'", "\\u0027"),
    ],
    ids=[
        "quote",
        "quote-path",
        "quote_plus",
        "json",
        "json-utf8",
        "html",
        "repr",
        "quote-lower-hex",  # .NET's HttpUtility.UrlEncode
        "quote_plus-lower-hex",
        "json-php",  # json_encode escapes "/"
        "json-go",  # encoding/json escapes <, >, & for HTML
        "json-gson",  # and = and ' too
    ],
)
def test_an_echoed_key_is_found_in_every_text_encoding(encode):
    echo = encode(ODD_KEY)
    shown = Redactor([ODD_KEY]).redact(f'{{"headers": {{"Authorization": {echo}}}}} :end')
    assert shown.startswith('{"headers": {"Authorization": ') and shown.endswith("}} :end")
    assert "***" in shown and leaks(shown, echo.strip("'\"")) == []


@pytest.mark.parametrize(
    "encode",
    [lambda k: json.dumps(k).replace("/", "\\/"), lambda k: _lower_hex(quote(k, safe=""))],
    ids=["json-php", "quote-lower-hex"],
)
def test_a_base64_like_key_echoed_by_php_or_dotnet_is_redacted_whole(encode):
    # "/" every few characters: no run of 8 characters of the key survives these encodings, so
    # only knowing the form itself finds it (before: 'x "***\\/dE+f9\\/Gh==" y').
    key = "sk-mavi-Ab3/dE+f9/Gh=="
    echo = encode(key)
    shown = Redactor([key]).redact(f"x {echo} y")
    assert shown in ('x "***" y', "x *** y"), shown


@pytest.mark.parametrize("user", ["", "a:", "al:", "alice:"])  # the three base64 alignments and more
@pytest.mark.parametrize("urlsafe", [False, True])
def test_an_echoed_key_is_found_inside_base64(user, urlsafe):
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    echo = encode(f"{user}{ODD_KEY}".encode()).decode()
    shown = Redactor([ODD_KEY]).redact(f"Authorization: Basic {echo}")
    assert "***" in shown
    # What is left of the base64 text cannot decode to 4 characters of the key, at any alignment.
    for piece in shown.removeprefix("Authorization: Basic ").split("***"):
        for start in range(4):
            chunk = piece[start:]
            chunk = chunk[: len(chunk) // 4 * 4]
            decoded = base64.b64decode(chunk.replace("-", "+").replace("_", "/") or b"", validate=False)
            text = decoded.decode("latin-1")
            assert not any(ODD_KEY[i : i + MIN_EDGE] in text for i in range(len(ODD_KEY) - 3)), (piece, text)


def test_a_truncated_echo_is_redacted_anywhere_and_at_the_end():
    redactor = Redactor([KEY])
    # A server that cut its own echo: 8+ characters anywhere, 4+ at the very end.
    assert redactor.redact("a sk-SECRET-AB b") == "a *** b"
    assert redactor.excerpt("token sk-SEC", 200) == "token ***"
    assert redactor.excerpt("its end T-ABC123 here", 200) == "its end *** here"  # 8 chars of its end
    assert redactor.excerpt("ends with sk-", 200) == "ends with sk-"  # 3 characters say nothing


def test_short_secrets_are_redacted_whole_and_never_left_at_the_cut():
    short = "pw9Zk6"  # shorter than MIN_FRAGMENT
    redactor = Redactor([short])
    assert redactor.redact("user=alice&password=pw9Zk6&x=pw9Zk6") == "user=alice&password=***&x=***"
    for offset in range(0, 20):
        shown = redactor.excerpt("y" * offset + short + "zzz", 12)
        assert short not in shown and not shown.removesuffix("...").endswith(short[:4]), shown
    tiny = Redactor(["ab1"])  # shorter than MIN_EDGE: still redacted whole
    assert tiny.redact("key ab1 is ab1") == "key *** is ***"


def test_a_case_changed_echo_is_redacted_whole_in_pieces_and_at_the_cut():
    redactor = Redactor([KEY, "pw9Zk6"])
    for form in (KEY.upper(), KEY.lower(), KEY.swapcase()):
        assert redactor.redact(f"a {form} b") == "a *** b", form
        assert redactor.reveals(f"a {form} b")
        assert redactor.excerpt(f"token {form[:6]}", 200) == "token ***"  # a cut prefix, in its case
    assert redactor.redact("PW9ZK6 and pw9zk6") == "*** and ***"  # a short secret too
    assert redactor.redact("Video VI0001 was not found") == "Video VI0001 was not found"


def test_credential_query_parameters_are_masked_whatever_their_value():
    text = (
        "GET https://b.s3.amazonaws.com/v.mp4?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc123 ; "
        "https://acct.blob.core.windows.net/c/v.mp4?sv=2024&sig=Zm9v%3D and "
        "/x?api_key=sk-1&video_no=VI1&page=2"
    )
    assert NO_SECRETS.redact(text) == (
        "GET https://b.s3.amazonaws.com/v.mp4?X-Amz-Credential=***&X-Amz-Signature=*** ; "
        "https://acct.blob.core.windows.net/c/v.mp4?sv=2024&sig=*** and "
        "/x?api_key=***&video_no=VI1&page=2"
    )


def test_several_secrets_and_url_credentials():
    redactor = Redactor([KEY, None, "", "HUNTER2pw"]).with_secrets("an0ther-s3cret")
    text = (
        f"Authorization: {KEY}; sftp://alice:HUNTER2pw@host:22/x; "
        "https://tok3n@proxy.example/p; an0ther-s3cret"
    )
    assert redactor.redact(text) == (
        "Authorization: ***; sftp://***@host:22/x; https://***@proxy.example/p; ***"
    )
    # URL user-info goes whatever the secrets: a password we were never told about.
    assert NO_SECRETS.redact("failed: http://bob:n3wPass@10.0.0.1:3128") == "failed: http://***@10.0.0.1:3128"
    assert NO_SECRETS.redact("sftp://alice:p@ss@host/x") == "sftp://***@host/x"
    assert (
        NO_SECRETS.redact("a user@example.com and http://host/a@b")
        == "a user@example.com and http://host/a@b"
    )


def test_the_redactor_never_shows_its_secrets():
    redactor = Redactor([KEY])
    assert KEY not in repr(redactor) and KEY not in str(redactor)


def test_an_excerpt_of_a_huge_body_looks_at_a_window_only():
    # 32 MiB of body after the key: the excerpt reads the start only (memory and time bounded).
    body = f"Authorization: {KEY} ".encode() + b"z" * (32 * 1024 * 1024)
    shown = Redactor([KEY]).excerpt(body, 50)
    assert shown == "Authorization: *** " + "z" * 31 + "..."


def test_errors_from_envelopes_and_spring_bodies_are_redacted_then_cut():
    redactor = Redactor([KEY])
    msg = "Request has exceeded the limit. " + "x" * (protocol.ERROR_MESSAGE_QUOTE - 40) + f" {KEY} " * 3
    body = json.dumps({"code": "0429", "msg": msg, "data": None}).encode()
    with pytest.raises(protocol.MemoriesRateLimitError) as info:
        protocol.parse_envelope(protocol.Answer(200, {}, body, endpoint="list_videos", redactor=redactor))
    assert leaks(str(info.value), KEY) == [] and leaks(repr(info.value), KEY) == []
    assert all(leaks(str(arg), KEY) == [] for arg in info.value.args)
    assert len(info.value.message) <= protocol.ERROR_MESSAGE_QUOTE + 3

    spring = json.dumps(
        {"status": 500, "error": "Internal Server Error", "message": f"bad header Authorization={KEY}"}
    ).encode()
    with pytest.raises(protocol.MemoriesServerError) as info:
        protocol.parse_envelope(protocol.Answer(500, {}, spring, endpoint="get_metadata", redactor=redactor))
    assert leaks(str(info.value), KEY) == [] and "Authorization=***" in str(info.value)

    # A success envelope whose data the reader rejects: the reader's complaint is server text too.
    bad = json.dumps({"code": "0000", "data": {"videoNo": None, "videoName": KEY}}).encode()
    with pytest.raises(protocol.MemoriesResponseError) as info:
        protocol.read_response(
            protocol.Answer(200, {}, bad, endpoint="upload", redactor=redactor), read=protocol.read_upload
        )
    assert leaks(str(info.value), KEY) == []


def test_an_undocumented_code_echoing_the_key_is_redacted():
    body = json.dumps({"code": f"E-{KEY}", "msg": "odd", "data": None}).encode()
    with pytest.raises(protocol.MemoriesResponseError) as info:
        protocol.parse_envelope(
            protocol.Answer(200, {}, body, endpoint="list_videos", redactor=Redactor([KEY]))
        )
    assert "undocumented error code 'E-***'" in str(info.value) and leaks(str(info.value), KEY) == []


def test_an_answer_echoing_the_key_does_not_show_it_in_its_repr():
    echoed = json.dumps({"headers": {"Authorization": KEY}}).encode()
    answer = protocol.Answer(200, {"X-Echo": KEY}, echoed, "list_videos", Redactor([KEY]))
    assert leaks(repr(answer), KEY) == [] and "list_videos" in repr(answer)


def test_a_readers_complaint_quoting_the_key_is_not_kept_as_the_errors_context():
    # The reader's ValueError quotes the answer ("the answer is for video 'VI-sk-...'"): the error
    # quotes it redacted, and must not keep the raw one as __context__ (suppressed by "from None"
    # in a traceback, still there for a debugger or an error tracker).
    body = json.dumps({"code": "0000", "data": {"video_no": f"VI-{KEY}", "transcriptions": []}}).encode()
    answer = protocol.Answer(200, {}, body, endpoint="get_video_caption", redactor=Redactor([KEY]))
    with pytest.raises(protocol.MemoriesResponseError) as info:
        protocol.read_response(answer, read=protocol.transcript_reader("visual", "VI000000000000000001"))
    assert "the answer is for video" in str(info.value)
    assert chain_leaks(info.value, KEY) == []
