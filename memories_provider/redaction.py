"""The one rule for every text built from a request or a response: redact every secret, then cut.

A server may echo the request in an error body (the ``Authorization`` header included), a library
may quote a URL with its ``user:password@``. Whatever text we turn into an error message, a log
line or a trigger event goes through a :class:`Redactor` that knows the secrets in play:

1. every secret is removed, in each form it can be echoed in (as sent, URL-encoded with upper- or
   lower-case hex, JSON-escaped (``\\/`` and HTML-safe ``\\u003c`` escapes included) or
   Python-escaped, HTML-escaped, inside base64), in any ASCII letter case (a server or a log
   pipeline that upper- or lower-cases what it quotes) — and so is every run of
   :data:`MIN_FRAGMENT` or more characters of one (a server that truncated its own echo);
2. credentials in URLs are removed whatever they are: ``scheme://user:password@``, and the value
   of a query parameter named like one (``X-Amz-Signature=``, ``sig=``, ``token=``, ``api_key=``:
   :data:`CREDENTIAL_PARAM`), e.g. a presigned URL the service redirected a download to;
3. only then is the text cut, and a cut never ends in the first :data:`MIN_EDGE` or more
   characters of a secret (``...Authorization: sk-SE`` would survive every masker, which look
   for whole secrets).

Airflow's secret masker still runs over task logs on a worker; this rule does not depend on it,
because the same client runs in the triggerer, in ``dag.test()``, in scripts and in users' code.

A leaf module (standard library only): the client, the hooks' connection parsing (imported during
provider discovery) and the storage glue all use it.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, urlsplit

#: What a redacted secret (or URL credential) is replaced with.
MASK = "***"
#: Any run of this many characters of a secret is redacted wherever it appears.
MIN_FRAGMENT = 8
#: A cut text never ends in this many (or more) leading characters of a secret.
MIN_EDGE = 4

# ``scheme://user:password@`` (or just ``user@``) in free text: the user-info is dropped.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#'\"<>]*@")
#: Names of query parameters that carry credentials: X-Amz-Signature/-Credential/-Security-Token,
#: X-Goog-Signature, an Azure SAS ``sig``, ``token``, ``api_key``, ``password``...
CREDENTIAL_PARAM = re.compile(r"(?i)sig|token|key|secret|credential|password|auth")
# ``?name=value`` / ``&name=value`` in free text (a URL in a log line or an error).
_QUERY_PARAM = re.compile(r"([?&])([^=&?#\s'\"<>]+)=([^&#\s'\"<>]*)")


def _mask_param(match: re.Match[str]) -> str:
    if not match.group(3) or not CREDENTIAL_PARAM.search(match.group(2)):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}={MASK}"


def _base64_cores(secret: bytes) -> set[str]:
    """The characters of ``base64(prefix + secret + suffix)`` that depend on ``secret`` alone.

    A secret inside a base64 text (``Basic`` auth, an encoded header dump) starts at one of three
    byte offsets modulo 3; for each, the 4-character groups made only of secret bytes are fixed.
    """
    cores = set()
    for shift in range(3):
        total = shift + len(secret)
        encoded = base64.b64encode(b"\0" * shift + secret).decode("ascii")
        core = encoded[4 if shift else 0 : (total // 3) * 4]
        if len(core) >= MIN_FRAGMENT:  # shorter cores would match ordinary words
            cores.add(core)
            cores.add(core.replace("+", "-").replace("/", "_"))  # URL-safe alphabet
    return cores


#: Characters JSON encoders escape as ``\\u00XX`` to be safe inside HTML: Go's ``<``, ``>``, ``&``;
#: Gson's also ``=`` and ``'``.
_HTML_SAFE_JSON = ({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}, {"=": "\\u003d", "'": "\\u0027"})
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")
#: ASCII letters to lower case, nothing else: a folded text keeps its length, so what is found in
#: the folded text is cut out of the text at the same place.
_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(text: str) -> str:
    return text.translate(_FOLD)


def secret_forms(secret: str) -> set[str]:
    """``secret`` as sent and in every encoding a server or a library may echo it in."""
    escaped = json.dumps(secret)[1:-1]
    go_json = gson = escaped
    for char, code in _HTML_SAFE_JSON[0].items():
        go_json = gson = go_json.replace(char, code)
    for char, code in _HTML_SAFE_JSON[1].items():
        gson = gson.replace(char, code)
    url_forms = {quote(secret, safe=""), quote(secret, safe="/"), quote_plus(secret)}
    forms = {
        secret,
        *url_forms,
        # Lower-case hex digits (.NET's UrlEncode, some proxies): the same bytes.
        *(_PERCENT_ESCAPE.sub(lambda m: m.group(0).lower(), form) for form in url_forms),
        escaped,
        escaped.replace("/", "\\/"),  # PHP's json_encode escapes every "/"
        go_json,
        gson,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        html.escape(secret),
    }
    forms |= _base64_cores(secret.encode("utf-8"))
    return {form for form in forms if len(form) >= MIN_EDGE or form == secret}


class Redactor:
    """Removes known secrets (and URL credentials) from text, and cuts text safely.

    :param secrets: the secrets in play (the API key, storage passwords); empty and ``None``
        entries are ignored. Never shown by ``repr``.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = tuple(dict.fromkeys(s for s in secrets if s))
        forms: set[str] = set()
        for secret in self._secrets:
            forms |= secret_forms(secret)
        # Longest first, so a form containing a shorter one is replaced whole.
        self._forms = sorted((f for f in forms if f), key=len, reverse=True)
        self._short = [f for f in self._forms if len(f) < MIN_FRAGMENT]
        self._short_re = (
            re.compile("|".join(map(re.escape, self._short)), re.IGNORECASE | re.ASCII)
            if self._short
            else None
        )
        self._folded_forms = sorted({_fold(f) for f in self._forms}, key=len, reverse=True)
        # Matched in the case-folded text: an echo in upper or lower case is the secret too.
        self._grams = {
            form[i : i + MIN_FRAGMENT]
            for form in self._folded_forms
            if len(form) >= MIN_FRAGMENT
            for i in range(len(form) - MIN_FRAGMENT + 1)
        }
        self._longest = max((len(f) for f in self._forms), default=0)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secret(s))"

    def with_secrets(self, *secrets: str | None) -> Redactor:
        """A redactor for these secrets as well as this one's."""
        return Redactor((*self._secrets, *secrets))

    def redact(self, text: str) -> str:
        """``text`` with every secret (whole, encoded, or any run of 8+ characters of one) and
        every URL credential (``user:password@``, a credential query parameter's value) replaced
        by ``***``."""
        text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
        if "=" in text:
            text = _QUERY_PARAM.sub(_mask_param, text)
        if not self._forms:
            return text
        text = self._redact_fragments(text)
        if self._short_re is not None:
            text = self._short_re.sub(MASK, text)
        return text

    def reveals(self, text: str | bytes) -> bool:
        """Whether ``text`` holds a known secret: whole, in an echoed form, or a run of
        :data:`MIN_FRAGMENT` or more of its characters (URL credentials alone do not count).

        Bytes are decoded as UTF-8 (undecodable bytes replaced), as :meth:`excerpt` does. A secret
        shorter than :data:`MIN_EDGE` characters counts only inside a longer form of it: on its
        own it would turn up in any binary body by chance (it is still redacted everywhere).
        """
        if not self._forms:
            return False
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        folded = _fold(text)
        if any(len(form) >= MIN_EDGE and _fold(form) in folded for form in self._short):
            return True
        return self._redact_fragments(text) != text

    def _redact_fragments(self, text: str) -> str:
        if not self._grams or len(text) < MIN_FRAGMENT:
            return text
        folded = _fold(text)
        pieces: list[str] = []
        start = i = 0
        end = len(text) - MIN_FRAGMENT
        while i <= end:
            if folded[i : i + MIN_FRAGMENT] not in self._grams:
                i += 1
                continue
            stop = i + MIN_FRAGMENT
            while (
                stop - MIN_FRAGMENT + 1 <= end and folded[stop - MIN_FRAGMENT + 1 : stop + 1] in self._grams
            ):
                stop += 1
            pieces += [text[start:i], MASK]
            start = i = stop
        pieces.append(text[start:])
        return "".join(pieces)

    def excerpt(self, text: str | bytes, limit: int) -> str:
        """At most ``limit`` characters of ``text`` (plus ``...`` when cut), redacted *before* the cut.

        Bytes are decoded as UTF-8 (undecodable bytes replaced); only the first ``limit``
        characters and enough beyond them to recognise a secret crossing the cut are looked at, so
        a huge body costs no more than a short one. The result never ends in the first
        :data:`MIN_EDGE` or more characters of a secret.
        """
        window = limit + self._longest + MIN_FRAGMENT
        if isinstance(text, bytes):
            cut_bytes = len(text) > 4 * window
            text = text[: 4 * window].decode("utf-8", errors="replace")
        else:
            cut_bytes = False
        cut = cut_bytes or len(text) > window
        shown = self.redact(text[:window])
        if len(shown) > limit:
            shown, cut = shown[:limit], True
        shown = self._drop_partial_tail(shown)
        return shown + "..." if cut else shown

    def _drop_partial_tail(self, text: str) -> str:
        """``text`` without a trailing beginning (``MIN_EDGE`` or more characters) of a secret."""
        for size in range(min(len(text), self._longest - 1), MIN_EDGE - 1, -1):
            tail = _fold(text[-size:])
            if any(form.startswith(tail) for form in self._folded_forms):
                return text[:-size] + MASK
        return text

    def quoted(self, text: str | bytes, limit: int) -> str:
        """:meth:`excerpt` as a quoted, printable literal (``repr``), for error messages."""
        return self.redact(repr(self.excerpt(text, limit)))


def url_secrets(url: str) -> tuple[str, ...]:
    """What of ``url`` may be a credential: its query and fragment (a presigned URL's signature, a
    token, SAS ``sig``), each of their values of :data:`MIN_FRAGMENT`
    or more characters as sent and decoded, and a ``user:password@`` password. A server that
    could not fetch the URL may quote it in its error."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return ()
    found: list[str] = [parts.query, parts.fragment, password or ""]
    for piece in (parts.query, parts.fragment):
        for pair in piece.split("&"):
            value = pair.partition("=")[2]
            found += [value, unquote(value), unquote(value.replace("+", " "))]
    return tuple(dict.fromkeys(s for s in found if len(s) >= MIN_FRAGMENT))


#: Redacts URL credentials only: for text where no other secret is known.
NO_SECRETS = Redactor()

__all__ = [
    "CREDENTIAL_PARAM",
    "MASK",
    "MIN_EDGE",
    "MIN_FRAGMENT",
    "NO_SECRETS",
    "Redactor",
    "secret_forms",
    "url_secrets",
]
