"""Broker URLs: checked before anything connects, and masked in every message.

A URL can carry a secret in its user-info (`user:password@`, `:password@`, or a bare
`password@`), in a query parameter (`?password=...`), or in a fragment; and a password
with an unencoded `/`, `?`, `#` or `@` fools every parser into cutting the URL in the
wrong place. So masking does not trust a parser: everything up to the last `@` after
the scheme is user-info, and every query value and fragment is hidden.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from ladder.errors import BadInput

SCHEMES = ("redis", "rediss")
EXAMPLE = "redis://[:password@]host[:port][/db]"
# What a rediss:// URL may say about its certificates, as redis-py and kombu read it (and
# Celery requires ssl_cert_reqs on a rediss:// result backend). Nothing else is taken:
# ladder sets every other option itself, and redis-py would pass an unknown one on as a
# keyword argument and fail.
TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = ("required", "optional", "none", "CERT_REQUIRED", "CERT_OPTIONAL", "CERT_NONE")
MAX_DB = 15  # Redis's default number of databases is 16
SHOWN_CHARACTERS = 200
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def mask_url(url: str) -> str:
    """The URL with every part that may hold a secret replaced by ***; the scheme, host,
    port and database stay, so that the message still says where."""
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return "<not a URL>"
    userinfo, at, rest = rest.rpartition("@")
    shown = f"{scheme}://"
    if at:
        user, colon, _ = userinfo.partition(":")
        # user:password keeps the user; a bare word could be a password in the user's place.
        shown += f"{user}:***@" if colon and user else ":***@" if colon else "***@"
    rest, hash_, _ = rest.partition("#")
    rest, question, query = rest.partition("?")
    shown += rest
    if question:
        names = [part.partition("=")[0] for part in query.split("&") if part]
        shown += "?" + "&".join(f"{name}=***" for name in names)
    if hash_:
        shown += "#***"
    shown = _UNPRINTABLE.sub("?", shown)
    if len(shown) > SHOWN_CHARACTERS:
        shown = shown[:SHOWN_CHARACTERS] + "..."
    return shown


def has_password(url: str) -> bool:
    """Whether the URL carries a secret anywhere mask_url would hide it."""
    return mask_url(url) != url


def check_url(url: str, what: str = "broker URL") -> str:
    """Raise BadInput, in one line that shows no secret, unless url is a redis:// or
    rediss:// URL that every client here parses alike; return it."""
    bad = f"{what} must look like {EXAMPLE} (got {mask_url(url)})"
    scheme, sep, rest = url.partition("://")
    if scheme not in SCHEMES or not sep:
        raise BadInput(bad)
    if "@" in rest.partition("@")[2] or re.search(r"[/?#]", rest.rpartition("@")[0]):
        raise BadInput(
            f"{what}: a password must be percent-encoded "
            f"(/ ? # @ % as %2F %3F %23 %40 %25) (got {mask_url(url)})"
        )
    if _UNPRINTABLE.search(url):
        raise BadInput(f"{what} holds a space or a character that is not printable ASCII")
    try:
        parts = urlsplit(url)
        port = parts.port
        unquote(parts.password or "", errors="strict")
    except ValueError:
        raise BadInput(bad) from None
    if not parts.hostname or port == 0:
        raise BadInput(bad)
    db = parts.path.removeprefix("/")
    if db and not (re.fullmatch(r"[0-9]{1,2}", db) and int(db) <= MAX_DB):
        raise BadInput(f"{what}: the database must be a number from 0 to {MAX_DB} (got {db!r:.20})")
    if parts.fragment:
        raise BadInput(f"{what} cannot have a #fragment (got {mask_url(url)})")
    if parts.query:
        check_options(parts.scheme, parts.query, what, mask_url(url))
    return url


def check_options(scheme: str, query: str, what: str, shown: str) -> None:
    """Only the TLS options of a rediss:// URL are taken (see TLS_OPTIONS)."""
    allowed = TLS_OPTIONS if scheme == "rediss" else ()
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name not in allowed:
            where = f"on rediss:// only {', '.join(TLS_OPTIONS)}" if allowed else "none on redis://"
            raise BadInput(f"{what}: option {name!r:.40} is not taken ({where}) (got {shown})")
        if name == "ssl_cert_reqs" and value not in CERT_REQS:
            raise BadInput(f"{what}: ssl_cert_reqs must be one of: {', '.join(CERT_REQS[:3])}")
