"""Broker URLs: checked before anything connects, and masked in every message.

A URL can carry a secret in its user-info (`user:password@`, `:password@`, or a bare
`password@`), in a query parameter (`?password=...`), or in a fragment; and a password
with an unencoded `/`, `?`, `#`, `@` or `&` fools every parser into cutting the URL in
the wrong place, so that a piece of it lands in the host, the port, the database or an
option's name. So masking does not trust a parser, and shows a part only when it is
plainly what its place says: everything up to the last `@` after the scheme is
user-info, and only the scheme, a hostname or IP address, a port or database number and
the name of an option a Redis client reads are shown; everything else is ***.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from core.errors import BadInput

SCHEMES = ("redis", "rediss")
EXAMPLE = "redis://[:password@]host[:port][/db]"
# What a rediss:// URL may say about its certificates, as redis-py and kombu read it (and
# Celery requires ssl_cert_reqs on a rediss:// result backend). Nothing else is taken:
# ladder sets every other option itself, and redis-py would pass an unknown one on as a
# keyword argument and fail.
TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
# The options a Redis client reads from a URL (redis-py's URL_QUERY_ARGUMENT_PARSERS, its
# credentials, kombu's TLS ones): a name among them is plainly an option, and is named in
# messages; any other name may be the piece of a password after an unencoded `&`.
KNOWN_OPTIONS = (
    *TLS_OPTIONS,
    "db",
    "password",
    "username",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_read_size",
    "socket_keepalive",
    "retry_on_timeout",
    "retry_on_error",
    "max_connections",
    "health_check_interval",
    "ssl_check_hostname",
    "ssl_min_version",
    "timeout",
    "protocol",
)
CERT_REQS = ("required", "optional", "none", "CERT_REQUIRED", "CERT_OPTIONAL", "CERT_NONE")
MAX_DB = 15  # Redis's default number of databases is 16
SHOWN_CHARACTERS = 200
MASK = "***"
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*\.?")
_NUMBER = re.compile(r"[0-9]{1,5}")  # a port, or a database


@dataclass(frozen=True)
class UrlParts:
    """A URL cut where a secret may begin; None where the URL has no such part."""

    scheme: str
    userinfo: str | None
    host: str
    port: str | None
    db: str | None
    query: str | None
    fragment: str | None


def split_url(url: str) -> UrlParts | None:
    """The parts of scheme://[userinfo@]host[:port][/db][?query][#fragment], cut with no
    parser (see the module's docstring); None if url does not even start with a scheme."""
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    userinfo, at, rest = rest.rpartition("@")
    rest, hash_, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    authority, slash, db = rest.partition("/")
    if authority.startswith("[") and "]" in authority:
        host, _, after = authority.partition("]")
        host += "]"
        # Anything but :port after the brackets makes the whole authority one odd host.
        if after and not after.startswith(":"):
            host, after = authority, ""
        port: str | None = after[1:] if after else None
    else:
        host, colon, port = authority.partition(":")
        port = port if colon else None
    return UrlParts(
        scheme=scheme,
        userinfo=userinfo if at else None,
        host=host,
        port=port,
        db=db if slash else None,
        query=query if question else None,
        fragment=fragment if hash_ else None,
    )


def plain_host(host: str) -> bool:
    """Whether host is plainly a hostname, an IPv4 address or a bracketed IPv6 one."""
    if host.startswith("[") and host.endswith("]"):
        # A zone (`%25eth0`) may be any text: not plainly an address.
        if "%" in host:
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None


def mask_url(url: str) -> str:
    """The URL with every part that may hold a secret replaced by ***; the scheme, host,
    port and database stay where they are plainly such, so that the message still says
    where."""
    parts = split_url(url)
    if parts is None:
        return "<not a URL>"
    shown = f"{parts.scheme}://"
    if parts.userinfo is not None:
        user, colon, password = parts.userinfo.partition(":")
        # The user is shown only beside a password: alone (`word@`, `word:@`), the word
        # may be the password, put in the user's place.
        if user and password:
            shown += f"{user}:{MASK}@"
        else:
            shown += f":{MASK}@" if colon and not user else f"{MASK}@"
    shown += parts.host if not parts.host or plain_host(parts.host) else MASK
    if parts.port is not None:
        shown += ":" + _number_or_mask(parts.port)
    if parts.db is not None:
        shown += "/" + _number_or_mask(parts.db)
    if parts.query is not None:
        names = [part.partition("=")[0] for part in parts.query.split("&") if part]
        shown += "?" + "&".join(f"{_option_or_mask(name)}={MASK}" for name in names)
    if parts.fragment is not None:
        shown += f"#{MASK}"
    shown = printable(shown)
    if len(shown) > SHOWN_CHARACTERS:
        shown = shown[:SHOWN_CHARACTERS] + "..."
    return shown


def _number_or_mask(text: str) -> str:
    return text if not text or _NUMBER.fullmatch(text) else MASK


def _option_or_mask(name: str) -> str:
    return name if name in KNOWN_OPTIONS else MASK


def printable(text: str) -> str:
    """text with every character that is not printable ASCII (a newline too) shown as ?."""
    return _UNPRINTABLE.sub("?", text)


def has_password(url: str) -> bool:
    """Whether the URL carries a secret anywhere mask_url would hide it."""
    return mask_url(url) != url


def check_url(url: str, what: str = "broker URL") -> str:
    """Raise BadInput, in one line that shows no secret, unless url is a redis:// or
    rediss:// URL that every client here parses alike; return it."""
    shown = mask_url(url)
    bad = f"{what} must look like {EXAMPLE} (got {shown})"
    scheme, sep, rest = url.partition("://")
    if scheme not in SCHEMES or not sep:
        raise BadInput(bad)
    if "@" in rest.partition("@")[2] or re.search(r"[/?#]", rest.rpartition("@")[0]):
        raise BadInput(
            f"{what}: a password must be percent-encoded "
            f"(/ ? # @ % as %2F %3F %23 %40 %25) (got {shown})"
        )
    if _UNPRINTABLE.search(url):
        raise BadInput(f"{what} holds a space or a character that is not printable ASCII")
    try:
        parts = urlsplit(url)
        port = parts.port
        unquote(parts.password or "", errors="strict")
    except ValueError:
        raise BadInput(bad) from None
    cut = split_url(url)
    if not parts.hostname or port == 0 or cut is None:
        raise BadInput(bad)
    if not plain_host(cut.host):
        raise BadInput(f"{what}: the host must be a hostname or an IP address (got {shown})")
    db = parts.path.removeprefix("/")
    if db and not (re.fullmatch(r"[0-9]{1,2}", db) and int(db) <= MAX_DB):
        raise BadInput(f"{what}: the database must be a number from 0 to {MAX_DB} (got {shown})")
    if parts.fragment:
        raise BadInput(f"{what} cannot have a #fragment (got {shown})")
    if parts.query:
        check_options(parts.scheme, parts.query, what, shown)
    return url


def check_options(scheme: str, query: str, what: str, shown: str) -> None:
    """Only the TLS options of a rediss:// URL are taken (see TLS_OPTIONS)."""
    allowed = TLS_OPTIONS if scheme == "rediss" else ()
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name not in allowed:
            where = f"on rediss:// only {', '.join(TLS_OPTIONS)}" if allowed else "none on redis://"
            option = f"option {name!r}" if name in KNOWN_OPTIONS else "an option of unknown name"
            raise BadInput(f"{what}: {option} is not taken ({where}) (got {shown})")
        if name == "ssl_cert_reqs" and value not in CERT_REQS:
            raise BadInput(f"{what}: ssl_cert_reqs must be one of: {', '.join(CERT_REQS[:3])}")
