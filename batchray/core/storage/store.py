"""The embedded store: a directory of SQLite files.

Layout of a store directory (created on first use, readable by its owner only)::

    store.json          format version and shard count (fixed when the store is created)
    coordinator.sqlite  the decision log, batch registry, sequences and backups
    catalog.sqlite      the catalog participant: data contexts, components, globals
    shard-0000.sqlite   item shard participants; an item lives on shard ``id % shards``
    gate.lock           the commit gate (see :class:`CommitGate`)

Reads across shards hold the commit gate shared, and phase 2 holds it exclusive, so a reader
never sees a batch committed on one shard and not yet on another.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional
from urllib.parse import urlparse

import orjson
from pydantic import BaseModel

from batchray.core.model.arguments import MAX_COUNT
from batchray.core.txn.chunks import MAX_CONTEXTS, context_range
from batchray.core.txn.participant import ItemSource, Participant
from batchray.errors import InDoubtError, NotFoundError, SchemaError, StoreError, ValidationError
from batchray.core.model.components import Component
from batchray.core.model.schema import STORED, DataContext

FORMAT_VERSION = 1
DEFAULT_SHARDS = 2
CATALOG = "catalog"
ITEMS = "items"  # the commit gate's scope for item reads (see CommitGate)

META_FILE = "store.json"
"""The file a store directory's creation writes first: a directory without it holds no store."""


def create_private_dir(path: Path) -> None:
    """Make directory ``path`` (and missing parents) if it does not exist; one made here is
    readable by its owner only (0o700). The modes are set explicitly: the process umask is
    not touched, since changing it is not thread-safe (threads opening stores at once could
    leave it changed for the whole process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def create_private_file(path: Path) -> None:
    """Create an empty file readable by its owner only (0o600) unless it exists. SQLite opens
    an empty file as a new database and gives its -wal and -shm files the database's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # the mode given to open is filtered by the umask
    finally:
        os.close(fd)


def check_shards(shards: Optional[int]) -> None:
    """Refuse a shard count that is given and not a whole number from 1 to 256 (a
    :class:`ValidationError`), before a store is opened or created with it."""
    if shards is not None and (type(shards) is not int or not 1 <= shards <= 256):
        raise ValidationError(f"shards must be a whole number from 1 to 256, not {shards!r}", field="shards")


def shard_name(index: int) -> str:
    return f"shard-{index:04d}"


def parse_store_url(store: str | os.PathLike) -> tuple[str, str]:
    """``("sqlite", directory)`` or ``("postgresql", dsn)`` from a path or URL."""
    text = os.fspath(store)
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql", text
    if text.startswith("sqlite://"):
        parsed = urlparse(text)
        path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        if not path:
            raise ValidationError(f"store URL {text!r} names no directory", field="store")
        return "sqlite", path
    if "://" in text:
        raise ValidationError(f"unsupported store URL {text!r}: use a directory, sqlite:///DIR or postgresql://...", field="store")
    return "sqlite", text


def require_store(store: str | os.PathLike) -> None:
    """Raise :class:`~batchray.errors.NotFoundError` naming the path when ``store`` names a
    SQLite directory that holds no store (no :data:`META_FILE`, which a store's creation writes
    first): for what reads a store and must never create one, so that a mistyped path is an
    error, not a new empty store. A PostgreSQL store is not probed here (its schema is checked
    when it is opened)."""
    kind, location = parse_store_url(store)
    if kind == "sqlite" and not (Path(location).expanduser() / META_FILE).is_file():
        raise NotFoundError(f"no batchray store at {location} (a store is created by the first command "
                            f"that writes to it, such as 'batchray demo' or a tool call)", field="store")


class ShardNaming:
    """The participants of a store of ``shards`` shards: the catalog and ``shard-NNNN`` each,
    an item living on shard ``id % shards`` (every store's layout)."""

    shards: int

    @property
    def shard_names(self) -> list[str]:
        return [shard_name(i) for i in range(self.shards)]

    @property
    def participant_names(self) -> list[str]:
        return [CATALOG, *self.shard_names]

    def shard_of(self, item_id: int) -> str:
        return shard_name(item_id % self.shards)


class StoreLayout(ShardNaming):
    """Paths and fixed settings of one store directory."""

    def __init__(self, root: str | os.PathLike, shards: Optional[int] = None) -> None:
        """Open the store directory ``root``, creating it (and its :data:`META_FILE`, with
        ``shards``) on first use. Of openers racing to create one store, the first to publish
        its :data:`META_FILE` fixes the shard count for all. A path that is not a directory is
        a :class:`ValidationError`; a directory that cannot be made or read, or whose
        :data:`META_FILE` is damaged, a :class:`StoreError`."""
        check_shards(shards)
        try:
            self.root = Path(root).expanduser().resolve()
        except RuntimeError as exc:  # "~user/..." of a user this system does not know
            raise ValidationError(f"store path {os.fspath(root)!r}: {exc}", field="store") from None
        meta_path = self.root / META_FILE
        try:
            create_private_dir(self.root)
            if not self.root.is_dir():
                raise ValidationError(f"store {self.root} is not a directory", field="store")
            if not meta_path.exists():
                _publish_meta(meta_path, {"format": FORMAT_VERSION, "shards": shards or DEFAULT_SHARDS})
            stored = _read_meta(meta_path)
        except OSError as exc:
            raise StoreError(f"cannot open the store directory {self.root}: {exc}", path=str(self.root)) from None
        if shards is not None and shards != stored:
            raise ValidationError(f"store {self.root} was created with {stored} shards, not {shards}", field="shards")
        self.shards = stored

    def participant_path(self, name: str) -> Path:
        if name != CATALOG and name not in self.shard_names:
            raise NotFoundError(f"no participant {name!r} in store {self.root}")
        return self.root / f"{name}.sqlite"

    @property
    def log_path(self) -> Path:
        return self.root / "coordinator.sqlite"



def _publish_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write ``meta`` as the store's :data:`META_FILE` unless one exists: written whole to a
    file of this opener's own, then linked in place, which fails when another opener's is there
    (a replace would overwrite it, and openers racing would each keep their own shard count)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.unlink(missing_ok=True)
    create_private_file(tmp)
    try:
        tmp.write_text(json.dumps(meta))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # created meanwhile by another opener: its shard count holds
        except OSError:  # a file system without hard links: replaced, as the last resort
            if not path.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_meta(path: Path) -> int:
    """The shard count a store's :data:`META_FILE` fixes; :class:`StoreError` when it is not a
    store's of this format."""
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:
        raise StoreError(f"{path} is damaged (not JSON: {exc})", path=str(path)) from None
    if not isinstance(meta, dict):
        raise StoreError(f"{path} is damaged (not a JSON object)", path=str(path))
    if meta.get("format") != FORMAT_VERSION:
        raise StoreError(f"store {path.parent} has format {meta.get('format')!r}, expected {FORMAT_VERSION}",
                         path=str(path))
    shards = meta.get("shards")
    if type(shards) is not int or not 1 <= shards <= 256:
        raise StoreError(f"{path} is damaged (shards {shards!r}, not a count from 1 to 256)", path=str(path))
    return shards


class CommitGate:
    """Cross-process readers-writer locks (``flock``; released if the holder dies) that hold
    readers off while a batch's decision reaches its participants.

    There are two: one for items (``gate.lock``) and one for the catalog (``gate-catalog.lock``).
    Phase 2 holds exclusive the ones for what its batch touched (catalog first, then items);
    a reader holds one shared. So an item batch in phase 2 does not hold up a read of a schema
    (the next batch's planning), and a new data context does not hold up item reads.
    """

    def __init__(self, root: Path) -> None:
        self.paths = {ITEMS: root / "gate.lock", CATALOG: root / "gate-catalog.lock"}

    @contextlib.contextmanager
    def _held(self, scopes: list[str], mode: int) -> Iterator[None]:
        fds: list[int] = []
        try:
            for scope in scopes:
                fd = _open_lock_file(self.paths[scope])
                fds.append(fd)
                fcntl.flock(fd, mode)
            yield
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def exclusive(self, participants: Optional[Iterable[str]] = None):
        """Held by phase 2 for a batch that touched ``participants`` (default: everything)."""
        return self._held(gate_scopes(participants), fcntl.LOCK_EX)

    def shared(self, scope: str = ITEMS):
        """Held by a reader of items (default) or of the catalog (``scope=CATALOG``)."""
        return self._held([scope], fcntl.LOCK_SH)


def gate_scopes(participants: Optional[Iterable[str]]) -> list[str]:
    """The gates a batch touching ``participants`` (``None``: all) holds in phase 2, in the
    order every holder takes them (the catalog first)."""
    if participants is None:
        return [CATALOG, ITEMS]
    names = set(participants)
    return [scope for scope, needed in ((CATALOG, CATALOG in names), (ITEMS, bool(names - {CATALOG}))) if needed]


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        try:  # a read-only store (permissions, a read-only mount): flock needs no write access
            return os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise StoreError(f"cannot open the commit gate {path}: {exc}", path=str(path)) from exc


def context_key(name: str) -> str:
    return f"context/{name}"


def component_key(name: str) -> str:
    return f"component/{name}"


class Catalog:
    """Read access to the catalog participant's committed documents, under the commit gate
    (when given) so that a schema is never read while its batch is half through phase 2."""

    def __init__(self, catalog_participant: Participant, gate: Optional["CommitGate"] = None) -> None:
        self.participant = catalog_participant
        self.gate = gate

    def _docs(self, prefix: str) -> dict[str, str]:
        if self.gate is None:
            return self.participant.read_docs(prefix)
        with self.gate.shared(CATALOG):
            return self.participant.read_docs(prefix)

    def context(self, name: str) -> tuple[int, DataContext]:
        """``(context id, DataContext)`` or :class:`SchemaError`."""
        context_id, context, _ = self.read_context(name)
        return context_id, context

    def read_context(self, name: str) -> tuple[int, DataContext, str]:
        """:meth:`context` and the document's text as read (what a batch that rewrites it
        expects to find: :class:`~batchray.core.txn.chunks.PutDocs`'s ``expected``)."""
        docs = self._docs(context_key(name))
        doc = docs.get(context_key(name))
        if doc is None:
            raise SchemaError(f"data context {name!r} does not exist", field="dataContextName", context=name)
        data = orjson.loads(doc)
        return data["id"], DataContext.model_validate(data["context"], context=STORED), doc

    def names(self) -> set[str]:
        """The names of the committed data contexts, without reading their schemas: its cost
        does not grow with the size of the schemas, only (a key each) with their number."""
        return {key.split("/", 1)[1] for key in self._docs("context/")}

    def exists(self, name: str) -> bool:
        """Whether data context ``name`` is committed; reads its document only."""
        return context_key(name) in self._docs(context_key(name))

    def contexts(self) -> dict[str, tuple[int, DataContext]]:
        """Every committed data context with its schema (parses them all: use :meth:`names` or
        :meth:`exists` when the schemas are not needed)."""
        out = {}
        for key, doc in self._docs("context/").items():
            data = orjson.loads(doc)
            out[key.split("/", 1)[1]] = (data["id"], DataContext.model_validate(data["context"], context=STORED))
        return out

    def components(self) -> dict[str, Component]:
        return {name: component for name, (component, _) in self.read_components().items()}

    def read_components(self) -> dict[str, tuple[Component, str]]:
        """Every component with its document's text as read (see :meth:`read_context`)."""
        return {
            key.split("/", 1)[1]: (Component.model_validate_json(doc), doc)
            for key, doc in self._docs("component/").items()
        }

    def globals(self) -> dict[str, Any]:
        return {key.split("/", 1)[1]: orjson.loads(doc) for key, doc in self._docs("global/").items()}


def json_text(value: Any, what: str, **details: Any) -> str:
    """``value`` (JSON data or a pydantic model) as the JSON text a catalog document keeps, or
    :class:`SchemaError` when it has none: text that is not valid Unicode (an unpaired
    surrogate), an integer beyond 64 bits, nesting deeper than the encoder allows."""
    try:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        return orjson.dumps(value).decode()
    except (TypeError, ValueError, RecursionError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise SchemaError(f"{what} cannot be stored as JSON: {exc}", **details) from None


def context_doc(context_id: int, context: DataContext) -> str:
    if not 0 < context_id < MAX_CONTEXTS:
        raise StoreError(f"context id {context_id} out of range")
    what = f"data context {context.name!r}"
    try:
        data = context.model_dump(mode="json", exclude_defaults=True)
    except (ValueError, RecursionError) as exc:  # pydantic refuses nesting past its limit
        raise SchemaError(f"{what} cannot be stored as JSON: {exc}", context=context.name) from None
    return json_text({"id": context_id, "context": data}, what, context=context.name)


class ItemReader:
    """Committed items across shards, in id order, under the commit gate."""

    def __init__(self, shards: list[ItemSource], gate: Any, log: Any) -> None:
        self.shards = shards
        self.gate = gate
        self.log = log

    @contextlib.contextmanager
    def consistent(self) -> Iterator[None]:
        with self.gate.shared():
            _, decided = self.log.unfinished()
            # a catalog-only batch in phase 2 holds the catalog's gate, not this one
            decided = [(t, o) for t, o in decided if set(o) - {CATALOG}]
            if decided:
                raise InDoubtError(
                    f"{len(decided)} batch(es) are decided but not yet finished on every shard; "
                    "recovery finishes them (batchray recover)",
                    batches=[t for t, _ in decided][:10],
                )
            yield

    def items(
        self, context_id: int, where: Optional[str] = None, offset: int = 0, limit: Optional[int] = None,
        ids: Optional[list[int]] = None, after: Optional[int] = None,
    ) -> list[tuple[int, str]]:
        """Items in id order; ``after`` (an item id) starts after that item, so a long read can
        go page by page at the cost of each page (``offset`` re-reads what it skips). Each shard
        is asked for at most ``offset + limit`` rows, capped at the 64-bit count every store binds
        (no context holds more items), so offsets and limits near it read as on any store."""
        import heapq

        want = None if limit is None else min(offset + limit, MAX_COUNT)
        cursor = {} if after is None else {"after": after}
        with self.consistent():
            streams = [s.read_items(context_id, where, limit=want, ids=ids, **cursor) for s in self.shards]
            return _window(heapq.merge(*streams, key=lambda row: row[0]), offset, want)

    def count(self, context_id: int, where: Optional[str] = None) -> int:
        with self.consistent():
            return sum(s.count_items(context_id, where) for s in self.shards)

    def page(
        self, context_id: int, where: Optional[str] = None, offset: int = 0, limit: Optional[int] = None,
        after: Optional[int] = None,
    ) -> tuple[list[tuple[int, str]], int]:
        """:meth:`items` and the :meth:`count` of every item ``where`` matches, as of one moment:
        each shard reads both in one snapshot of its own, under one hold of the gate (so no
        batch's phase 2 lands between shards; a batch committed in one phase touches one shard,
        which reads it in both or in neither)."""
        import heapq

        want = None if limit is None else min(offset + limit, MAX_COUNT)
        with self.consistent():
            pages = [s.read_page(context_id, where, limit=want, after=after) for s in self.shards]
        merged = heapq.merge(*(rows for rows, _ in pages), key=lambda row: row[0])
        return _window(merged, offset, want), sum(total for _, total in pages)


def _window(merged: Iterator[tuple[int, str]], offset: int, want: Optional[int]) -> list[tuple[int, str]]:
    """Rows ``offset`` up to ``want`` of the shards' merged rows."""
    out = []
    for position, row in enumerate(merged):
        if want is not None and position >= want:
            break
        if position >= offset:
            out.append(row)
    return out


__all__ = [
    "CATALOG",
    "Catalog",
    "CommitGate",
    "ItemReader",
    "StoreLayout",
    "context_doc",
    "context_key",
    "context_range",
    "parse_store_url",
    "shard_name",
]
