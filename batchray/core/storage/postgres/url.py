"""Names in a PostgreSQL store: its URL, the schema it lives in, global transaction ids, lock keys;
and the one redaction of connection secrets.

A store URL is ``postgresql://user@host/db?schema=NAME``: the ``schema`` parameter is
batchray's and is taken off the URL before connecting (default ``batchray``). A transaction
prepared at a participant is named ``batchray:<schema>:<participant>:<txn>``; every part is
validated here, so a global id can be written into SQL as a literal.

:func:`redact` takes every password out of a text, in each form libpq accepts: the user-info of
a URL of any scheme (``postgresql://u:pw@h``, ``postgres://:pw@h``, a misspelled
``postgresq://u:pw@h``), a query parameter (``?password=``, ``&sslpassword=``, any case) and a
key=value connection string (``host=h password=pw``, ``password='a b'``). Importing this module
installs it as the redaction of :meth:`batchray.errors.BatchrayError.to_dict`, so every
structured error (a tool's answer, the MCP server's and the CLI's) goes through it; the MCP
server and the CLI import it for that. ``PGPASSWORD`` stays in the environment and is never read.
"""
from __future__ import annotations

import re
import zlib
from typing import Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from batchray.core.txn.chunks import check_txn_id
from batchray.errors import ValidationError, install_secret_redaction

DEFAULT_SCHEMA = "batchray"
GID_PREFIX = "batchray"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
PARTICIPANT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def parse_pg_url(url: str) -> tuple[str, str]:
    """``(dsn for psycopg, schema)`` from ``postgresql://...[?schema=NAME]``.

    The ``schema`` parameter is taken off the query; every other parameter stays exactly as it
    was written, for libpq to read (it decodes ``%XX`` and nothing else: a ``+`` is a plus
    sign, not a space, so the query is not decoded and encoded again here). ``schema`` is read
    the same way (``%XX`` decoded); given twice, the last one counts, as libpq does with its own
    parameters."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed IPv6 bracket
        raise ValidationError(f"invalid PostgreSQL store URL {redact(url)!r}: {exc}", field="store") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValidationError(f"not a PostgreSQL URL: {redact(url)!r}", field="store")
    schema = DEFAULT_SCHEMA
    kept = []
    for piece in parts.query.split("&") if parts.query else []:
        key, _, value = piece.partition("=")
        if unquote(key) == "schema":
            schema = unquote(value)
        else:
            kept.append(piece)
    if not _SCHEMA_NAME.match(schema):
        raise ValidationError(
            f"store schema {schema!r} must be 1-40 lower-case letters, digits or '_' (not first a digit)",
            field="store",
        )
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), parts.fragment))
    return dsn, schema


_MASK = "***"
_SECRET_CHAR = r"(?:[^\s'\"\\&#]+|\\.|['\"](?=\w))"
"""A run of characters of an unquoted secret: not a space, nor a quote that ends a quoted text (a quote
followed by a letter, as in ``it's``, belongs to the secret)."""
_AFTER_SCHEME = re.compile(r"://((?:[^\s'\"]+|['\"](?=\w))*)")
"""What follows ``scheme://`` up to a space or a closing quote: user-info, host, path, query."""
_QUERY = re.compile(rf"(?i)([?&](?:ssl)?password=){_SECRET_CHAR}*")
"""``?password=...`` / ``&sslpassword=...`` in a URL's query."""
_KEY_VALUE = re.compile(rf"(?i)(?<![\w.?&])((?:pg|ssl)?password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|(?:{_SECRET_CHAR}|[&#])*)")
"""``password=pw``, ``password = 'a b'`` (libpq's key=value strings), ``PGPASSWORD=pw``."""
# every pattern above runs in time linear in the text: each can match where it starts, so a
# failed attempt never rescans what follows (texts here may be long and hostile)


def redact(text: str) -> str:
    """``text`` with every password in it replaced by ``***`` (see the module docstring)."""
    if not isinstance(text, str) or ("://" not in text and "assword" not in text.lower()):
        return text
    text = _AFTER_SCHEME.sub(_redact_user_info, text)
    text = _QUERY.sub(rf"\1{_MASK}", text)
    return _KEY_VALUE.sub(rf"\1{_MASK}", text)


def _redact_user_info(match: "re.Match[str]") -> str:
    """``user:password@`` -> ``user:***@``; the password runs to the last ``@`` (an ``@`` in it
    leaves nothing behind; an ``@`` later in a query hides a little more than needed)."""
    rest = match.group(1)
    at = rest.rfind("@")
    colon = rest.find(":", 0, at) if at > 0 else -1
    if colon < 0 or "/" in rest[:colon]:
        return match.group(0)
    return f"://{rest[:colon]}:{_MASK}{rest[at:]}"


install_secret_redaction(redact)


def store_identity(url: str) -> str:
    """A name for a store that is the same for every spelling of its URL's credentials:
    ``postgresql://host:port/db?schema=NAME`` (no user, no password)."""
    dsn, schema = parse_pg_url(url)
    parts = urlsplit(dsn)
    hosts = ",".join(_host_and_port(spec, url) for spec in parts.netloc.rpartition("@")[2].split(","))
    return f"postgresql://{hosts}{parts.path}?schema={schema}"


def _host_and_port(spec: str, url: str) -> str:
    """``host:port`` of one host of a URL's list of hosts (libpq takes ``h1:5432,h2``), the
    port 5432 when none is given; a port that is not a number up to 65535 is a
    :class:`ValidationError`."""
    try:
        host = urlsplit(f"//{spec}")
        return f"{host.hostname or ''}:{host.port or 5432}"
    except ValueError as exc:
        raise ValidationError(f"invalid host or port {spec!r} in PostgreSQL store URL {redact(url)!r}: {exc}",
                              field="store") from None


def gid_for(schema: str, participant: str, txn: str) -> str:
    """The global id of one transaction at one participant: ``batchray:<schema>:<participant>:<txn>``
    (validated, so it can be written into SQL as a literal; at most 200 characters)."""
    check_txn_id(txn)
    if not _SCHEMA_NAME.match(schema) or not PARTICIPANT_NAME.match(participant):
        raise ValidationError(f"invalid schema or participant name {schema!r}/{participant!r}")
    gid = f"{GID_PREFIX}:{schema}:{participant}:{txn}"
    if len(gid) >= 200:
        raise ValidationError(f"global id too long ({len(gid)} characters)", field="transactionId")
    return gid


def parse_gid(gid: str) -> Optional[tuple[str, str, str]]:
    """``(schema, participant, txn)`` of a batchray global id, or None."""
    parts = gid.split(":", 3)
    if len(parts) != 4 or parts[0] != GID_PREFIX:
        return None
    return parts[1], parts[2], parts[3]


def advisory_key(text: str) -> int:
    """A stable 31-bit advisory-lock key (non-negative, so pg_locks shows it as given)."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF

