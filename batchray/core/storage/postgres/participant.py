"""The PostgreSQL participant: a shard (or the catalog) of a store that prepares for real.

How :class:`PgParticipant` keeps the protocol of :mod:`batchray.core.txn.participant`:

* A transaction's work at one participant runs in **its own connection**, kept open across
  applies (each apply is one savepoint, so a failed chunk leaves the transaction as it was).
  The vote is ``PREPARE TRANSACTION 'batchray:<schema>:<participant>:<txn>'``; the decision is
  ``COMMIT PREPARED`` / ``ROLLBACK PREPARED`` from any connection. PostgreSQL keeps prepared
  transactions, their writes and their row locks across crashes of the participant and of the
  server; ``pg_prepared_xacts`` lists them for recovery.
* The outcome row ``finished(..., 'committed')`` is written inside the transaction before it is
  prepared, so the commit and its record are one atomic step: a repeated commit finds no global
  id and the outcome committed, and is done.
* A one-phase commit (``apply(..., commit=True)``: the transaction's only chunk) is a plain
  local ``COMMIT`` of the transaction's session, no ``PREPARE TRANSACTION``: the chunk's writes,
  ``finished(..., 'committed')`` (which ``outcome`` and ``resolve`` read) and the apply's answer
  in ``one_phase`` (for a repeated delivery) commit together.
* Before its first write the transaction is registered in ``txns`` (autocommit, with the
  connection's backend pid), so that a participant restarted after a crash finds the
  transactions that never voted: their sessions are gone (PostgreSQL rolled them back) or are
  terminated, and they are recorded aborted (presumed abort); a late apply is then refused.
* Locks are PostgreSQL's (row locks and advisory locks, kept by a prepared transaction),
  decided by wait-die (:mod:`~batchray.core.storage.postgres.locking`); every step holds the
  participant's epoch fence (:mod:`~batchray.core.storage.postgres.fence`), so steps of a
  replaced owner change nothing.
* Reads run in other sessions and so never see uncommitted (or prepared) writes (MVCC); a
  transaction's own reads go through its connection. Reads across participants hold
  :class:`~batchray.core.storage.postgres.gate.PgCommitGate` shared, phase 2 holds it exclusive.

The parts: locks (:mod:`~batchray.core.storage.postgres.locking`), the epoch fence
(:mod:`~batchray.core.storage.postgres.fence`), the chunk handlers
(:mod:`~batchray.core.storage.postgres.chunk_writer`; a create chunk's rows are validated
before the transaction's mutex is taken and written with COPY:
:mod:`~batchray.core.storage.postgres.copy_rows`), the applied records and backups
(:mod:`~batchray.core.storage.postgres.applied`).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from batchray.core.storage.participant_base import CHUNK_WORK_LINE, StoreParticipant, leftovers
from batchray.core.storage.postgres.applied import images_from_record, images_record, keep_backups
from batchray.core.storage.postgres.chunk_writer import PgChunkWriter, PgWork
from batchray.core.storage.postgres.connection import (
    close_quietly,
    in_open_transaction,
    psycopg_module,
    refusal,
    store_error,
    terminate,
)
from batchray.core.storage.postgres.copy_rows import ValidRows, validate_create
from batchray.core.storage.postgres.fence import PgFence
from batchray.core.storage.postgres.locking import PgLockView, PgLocking
from batchray.core.storage.postgres.reads import items_sql, read_page
from batchray.core.storage.postgres.store import PgStore
from batchray.core.storage.postgres.url import GID_PREFIX, gid_for, parse_gid
from batchray.core.txn import crashpoints
from batchray.core.txn.chunks import BeforeImages, Chunk, CreateItems, TxnRef, check_txn_id
from batchray.core.txn.participant import Leftovers, Step
from batchray.errors import (
    BatchrayError,
    InternalError,
    ParticipantUnavailable,
    StaleEpochError,
    StoreError,
    TransactionAborted,
)


@dataclass
class _Tx:
    """A transaction of this participant object: its connection while it is open."""

    txn: str
    ts: int
    backup: bool
    state: str = "new"  # new | active | prepared | done
    conn: Any = None
    chunks: int = 0
    mutex: threading.RLock = field(default_factory=threading.RLock)


class PgParticipant(StoreParticipant[PgWork]):
    """One participant (a shard, or the catalog) of a PostgreSQL store; see the module docstring.

    Thread-safe: each transaction has its own connection and mutex; decisions and recovery go
    through one control connection. ``apply_delay``: see
    :class:`~batchray.core.storage.participant_base.StoreParticipant` (tests and benchmarks only).
    """

    def __init__(self, store: PgStore, name: str, *, lock_timeout: float = 10.0, recover: bool = True,
                 apply_delay: float = 0.0) -> None:
        super().__init__(name, apply_delay=apply_delay)
        self.store = store
        self.s = store.s
        self.num = store.participant_num(name)
        self.lock_timeout = float(lock_timeout)
        self.gid_prefix = f"{GID_PREFIX}:{store.schema}:{name}:"
        self.locking = PgLocking(store, name, self.num)
        self.fence = PgFence(store, name, self.locking.context_class, self.lock_timeout)
        self.handlers = PgChunkWriter(self.locking).handlers()
        self._txns: dict[str, _Tx] = {}
        self._txns_mutex = threading.Lock()
        # transactions PostgreSQL refused to prepare (no slot left, a full disk), and why: a
        # late apply of one (the driver retrying a retryable refusal) hears that cause again
        self._refused: "OrderedDict[str, BatchrayError]" = OrderedDict()
        self._control_mutex = threading.RLock()
        self._control = None
        self._closed = False
        self.locks = PgLockView(self.pending, self.locking)
        try:
            self.in_doubt: list[dict[str, Any]] = self.recover() if recover else []
        except BaseException:
            self.close()  # its control session: nothing stays open
            raise

    # -- connections ------------------------------------------------------------------------
    def _conn(self):
        """A connection for a new transaction (lock_timeout set)."""
        conn = self.store.pool.get()
        conn.execute(f"SET lock_timeout = {max(1, int(self.lock_timeout * 1000))}")
        return conn

    @contextlib.contextmanager
    def _controlled(self, what: str) -> Iterator[Any]:
        """The control connection, for decisions, recovery and claims (one at a time)."""
        psycopg = psycopg_module()
        with self._control_mutex:
            if self._closed:
                raise StoreError(f"participant {self.name} is closed")
            if self._control is None or self._control.closed or self._control.broken:
                self._control = self.store.connect(lock_timeout=self.lock_timeout)
            try:
                yield self._control
            except psycopg.Error as exc:
                if self._control.broken or self._control.closed:
                    close_quietly(self._control)
                    self._control = None
                elif self._control.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    with contextlib.suppress(Exception):
                        self._control.execute("ROLLBACK")
                raise store_error(f"participant {self.name}: {what}", exc) from None

    def close(self) -> None:
        with self._txns_mutex:
            txns = list(self._txns.values())
            self._txns.clear()
        for tx in txns:  # an open connection ends its transaction: PostgreSQL rolls it back
            if tx.conn is not None:
                close_quietly(tx.conn)
        with self._control_mutex:
            self._closed = True
            if self._control is not None:
                close_quietly(self._control)
                self._control = None

    # -- epochs ----------------------------------------------------------------------------
    def claim(self, epoch: int) -> int:
        with self._controlled("claim") as conn:
            self.fence.hold_exclusive(conn)
            try:
                current = self._read_epoch(conn)
                if epoch < current:
                    raise StaleEpochError(f"participant {self.name} already claimed by epoch {current}", current=current)
                conn.execute(f"UPDATE {self.s}.participants SET epoch=%s WHERE name=%s", (epoch, self.name))
                crashpoints.durable_write(f"{self.name}:claim")
            finally:
                self.fence.release_exclusive(conn)
        return epoch

    def claim_next(self) -> int:
        """Claim the next epoch atomically (a new owner fences out every older one)."""
        with self._controlled("claim") as conn:
            self.fence.hold_exclusive(conn)
            try:
                epoch = conn.execute(
                    f"UPDATE {self.s}.participants SET epoch = epoch + 1 WHERE name=%s RETURNING epoch", (self.name,)
                ).fetchone()[0]
                crashpoints.durable_write(f"{self.name}:claim")
            finally:
                self.fence.release_exclusive(conn)
        return epoch

    @property
    def epoch(self) -> int:
        with self._controlled("epoch") as conn:
            return self._read_epoch(conn)

    def _read_epoch(self, conn) -> int:
        return conn.execute(f"SELECT epoch FROM {self.s}.participants WHERE name=%s", (self.name,)).fetchone()[0]

    def gid(self, txn: str) -> str:
        return gid_for(self.store.schema, self.name, txn)

    # -- apply ------------------------------------------------------------------------------
    def apply(self, ref: TxnRef, chunk: Chunk, prepare: bool = False, commit: bool = False) -> BeforeImages:
        """Apply one chunk; with ``prepare`` (the participant's last chunk) also vote:
        ``images.vote``; with ``commit`` (the transaction's only chunk) commit it when it
        applied cleanly (one-phase commit, ``vote`` True), else leave it open (``vote`` False)."""
        try:
            return self._apply(ref, chunk, prepare, commit)
        except TransactionAborted:
            replay = self._one_phase_answer(ref.txn, chunk.chunk_id) if commit else None
            if replay is None:
                raise
            return replay  # committed by an earlier delivery: answered as that one was

    def _apply(self, ref: TxnRef, chunk: Chunk, prepare: bool, commit: bool) -> BeforeImages:
        check_txn_id(ref.txn)
        # a create's rows are validated before its transaction's mutex is taken: this thread
        # validates while another one's COPY of the previous chunk is stored
        if isinstance(chunk, CreateItems):
            with CHUNK_WORK_LINE:  # validated by one thread at a time, outside the mutexes
                valid = validate_create(chunk)
        else:
            valid = None
        return self._apply_valid(ref, chunk, prepare, commit, valid)

    def _apply_valid(self, ref: TxnRef, chunk: Chunk, prepare: bool, commit: bool,
                     valid: Optional[ValidRows]) -> BeforeImages:
        with self._txns_mutex:
            tx = self._txns.get(ref.txn)
            if tx is None:
                tx = self._txns[ref.txn] = _Tx(ref.txn, ref.ts, ref.backup)
        with tx.mutex:
            if tx.state == "done" or self._txns.get(ref.txn) is not tx:
                return self._apply_valid(ref, chunk, prepare, commit, valid)  # it ended meanwhile: ask again
            if tx.state == "prepared":
                with self._controlled("apply") as conn:
                    self.fence.hold(conn, ref.epoch)  # a stale owner hears that first
                    self.fence.release(conn)
                raise InternalError(
                    f"apply after prepare for {ref.txn} on participant {self.name}: this should never happen",
                    shard=self.name,
                )
            images = self._apply_locked(tx, ref, chunk, valid)
            if commit:
                images.vote = not images.errors
                if images.vote:
                    self._commit_one_phase(tx, ref, chunk.chunk_id, images.affected)
        self._model_latency()
        if commit:
            return images
        return self._vote_after(images, ref) if prepare else images

    def _commit_one_phase(self, tx: _Tx, ref: TxnRef, chunk_id: int, affected: int) -> None:
        """Commit the open transaction ``tx`` whose only chunk was just applied: a local COMMIT,
        with its outcome and the apply's answer recorded in it (``tx.mutex`` held)."""
        psycopg = psycopg_module()
        conn = tx.conn
        s = self.s
        try:
            self.fence.hold(conn, ref.epoch)
            if tx.backup:
                keep_backups(conn, s, self.num, tx.txn)
            conn.execute(f"DELETE FROM {s}.applied WHERE part=%s AND txn=%s", (self.num, tx.txn))
            conn.execute(f"DELETE FROM {s}.txns WHERE part=%s AND txn=%s", (self.num, tx.txn))
            conn.execute(f"INSERT INTO {s}.finished(part, txn, outcome, at) VALUES(%s, %s, 'committed', %s)",
                         (self.num, tx.txn, time.time()))
            conn.execute(f"INSERT INTO {s}.one_phase(part, txn, chunk, affected) VALUES(%s, %s, %s, %s)",
                         (self.num, tx.txn, chunk_id, affected))
            crashpoints.durable_write(f"{self.name}:{Step.APPLY_COMMIT}")
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            # the session failed (maybe at COMMIT itself): whether it committed is the outcome
            # row's to say (``resolve``); an aborted one is recorded so
            self._lost(tx, exc)
            raise store_error(f"participant {self.name}: one-phase commit", exc) from None
        tx.conn = None
        try:
            self.fence.release(conn)
            self.store.pool.put(conn)
        except psycopg.Error:
            close_quietly(conn)
        self._forget_tx(tx)

    def _one_phase_answer(self, txn: str, chunk_id: int) -> Optional[BeforeImages]:
        """The answer of ``txn``'s one-phase commit of ``chunk_id``, if it committed so."""
        with self._controlled("one-phase answer") as conn:
            row = conn.execute(f"SELECT affected FROM {self.s}.one_phase WHERE part=%s AND txn=%s AND chunk=%s",
                               (self.num, txn, chunk_id)).fetchone()
        return None if row is None else BeforeImages(chunk_id, affected=row[0], vote=True)

    def _apply_locked(self, tx: _Tx, ref: TxnRef, chunk: Chunk, valid: Optional[ValidRows]) -> BeforeImages:
        psycopg = psycopg_module()
        fresh = tx.state == "new"
        if fresh:
            try:
                conn = self._conn()
            except BaseException:
                self._forget_tx(tx)
                raise
        else:
            conn = tx.conn
        try:
            # the chunk's version, and (a transaction already open here) whether it was applied
            # before, read with the epoch: a round trip each less per chunk
            ver, recorded = self.fence.hold(conn, ref.epoch, *self._first_reads(ref, chunk, fresh))
        except BaseException as exc:
            if fresh:
                self._forget_tx(tx)
                self._release_conn(conn)
            elif isinstance(exc, psycopg.Error):
                self._lost(tx, exc)
            if isinstance(exc, psycopg.Error):
                raise store_error(f"participant {self.name}: apply", exc) from None
            raise
        try:
            if fresh:
                self._start(tx, ref, conn)
            elif recorded is not None:
                return images_from_record(chunk.chunk_id, recorded)
            if isinstance(chunk, CreateItems):
                images = self._apply_chunk(tx, ref, chunk, ver, valid)  # one COPY: it fails whole or not at all
            else:
                conn.execute("SAVEPOINT batchray_chunk")
                try:
                    images = self._apply_chunk(tx, ref, chunk, ver, None)
                except BaseException:
                    with contextlib.suppress(psycopg.Error):  # the chunk leaves nothing behind
                        conn.execute("ROLLBACK TO SAVEPOINT batchray_chunk")
                        conn.execute("RELEASE SAVEPOINT batchray_chunk")
                    raise
                conn.execute("RELEASE SAVEPOINT batchray_chunk")
            tx.chunks += 1
            return images
        except (BatchrayError, psycopg.Error) as exc:
            if tx.state == "done":  # refused before it began: nothing of it here
                raise
            if not in_open_transaction(conn):
                # the transaction's session failed: PostgreSQL rolls it back; it votes no
                self._lost(tx, exc)
            elif tx.chunks == 0:
                self._drop(tx)  # nothing of it here yet: hold nothing (e.g. while it backs off)
            if isinstance(exc, psycopg.errors.UniqueViolation):
                raise InternalError(f"item id collision on participant {self.name}: {exc}") from None
            if isinstance(exc, psycopg.Error):
                raise store_error(f"participant {self.name}: apply", exc) from None
            raise
        finally:
            if tx.conn is conn:
                self.fence.release(conn)

    def _start(self, tx: _Tx, ref: TxnRef, conn) -> None:
        """Begin ``ref.txn`` here: refuse a finished or prepared one, register it, BEGIN."""
        s = self.s
        outcome, prepared, holder = conn.execute(
            f"SELECT (SELECT outcome FROM {s}.finished WHERE part=%s AND txn=%s), "
            "EXISTS(SELECT 1 FROM pg_prepared_xacts WHERE gid=%s AND database = current_database()), "
            f"(SELECT coalesce(pid, 0) FROM {s}.txns WHERE part=%s AND txn=%s)",
            (self.num, ref.txn, self.gid(ref.txn), self.num, ref.txn),
        ).fetchone()
        if outcome is None and not prepared and holder is not None:
            # opened by an owner that is gone or replaced (the fence let us in: we are the
            # current one); what it applied is lost to this session, so the transaction ends
            self._end_elsewhere(conn, ref.txn)
            outcome = "aborted"
        if outcome is not None:
            self._forget_tx(tx)
            self._release_conn(conn, unfence=True)
            refused = self._refused.get(ref.txn)
            if refused is not None:
                raise refused
            raise TransactionAborted(f"transaction {ref.txn} is already {outcome} on participant {self.name}",
                                     shard=self.name, outcome=outcome)
        if prepared:
            self._forget_tx(tx)
            self._release_conn(conn, unfence=True)
            raise InternalError(f"apply after prepare for {ref.txn} on participant {self.name}: this should never happen",
                                shard=self.name)
        conn.execute(
            f"INSERT INTO {s}.txns(part, txn, state, ts, epoch, backup, pid, backend_start, started) "
            "VALUES(%s, %s, 'active', %s, %s, %s, pg_backend_pid(), "
            "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), %s)",
            (self.num, ref.txn, ref.ts, ref.epoch, bool(ref.backup), time.time()),
        )
        conn.execute("BEGIN")
        tx.conn = conn
        tx.state = "active"

    def _forget_tx(self, tx: _Tx) -> None:
        tx.state = "done"
        with self._txns_mutex:
            if self._txns.get(tx.txn) is tx:
                del self._txns[tx.txn]

    def _release_conn(self, conn, unfence: bool = False) -> None:
        if unfence:
            self.fence.release(conn)
        self.store.pool.put(conn)

    def _drop(self, tx: _Tx) -> None:
        """End a transaction that applied nothing here: as if it never started."""
        conn = tx.conn
        tx.conn = None
        self._forget_tx(tx)
        try:
            conn.execute("ROLLBACK")
            conn.execute(f"DELETE FROM {self.s}.txns WHERE part=%s AND txn=%s", (self.num, tx.txn))
            self.fence.release(conn)
            self.store.pool.put(conn)
        except Exception:  # noqa: BLE001 - the session ends: its registration is cleaned by recovery
            close_quietly(conn)

    def _lost(self, tx: _Tx, exc: BaseException) -> None:
        """The transaction's session failed: roll it back, record it aborted (it votes no)."""
        conn = tx.conn
        tx.conn = None
        self._forget_tx(tx)
        if conn is not None:
            close_quietly(conn)  # PostgreSQL rolls back a transaction whose session ends
        with contextlib.suppress(BatchrayError):
            with self._controlled("abort lost transaction") as control:
                self._record(control, tx.txn, "aborted")

    def _first_reads(self, ref: TxnRef, chunk: Chunk, fresh: bool) -> tuple[str, tuple]:
        """What an apply reads with the epoch: a version for the chunk's writes (a sequence
        is not transactional: a value taken and not used is a gap, no more), and the chunk's
        applied record (None in a transaction that starts here)."""
        version = f", nextval('{self.store.schema}.wseq')"
        if fresh:
            return version + ", NULL", ()
        return (version + f", (SELECT images FROM {self.s}.applied WHERE part=%s AND txn=%s AND chunk=%s)",
                (self.num, ref.txn, chunk.chunk_id))

    def _apply_chunk(self, tx: _Tx, ref: TxnRef, chunk: Chunk, ver: int, valid: Optional[ValidRows]) -> BeforeImages:
        conn = tx.conn
        work = PgWork(conn, valid=valid)
        images = self.handlers.apply(work, ref, chunk, ver)
        conn.execute(
            f"INSERT INTO {self.s}.applied(part, txn, chunk, images) VALUES(%s, %s, %s, %s)",
            (self.num, ref.txn, chunk.chunk_id, images_record(images, work.vers, ver)),
        )
        crashpoints.durable_write(f"{self.name}:{Step.APPLY}")
        return images

    def chunks_applied(self, txn: str) -> int:
        tx = self._txns.get(txn)
        return 0 if tx is None else tx.chunks

    # -- voting and deciding ----------------------------------------------------------------
    def prepare(self, ref: TxnRef) -> bool:
        check_txn_id(ref.txn)
        tx = self._txns.get(ref.txn)
        if tx is not None:
            with tx.mutex:
                if tx.state == "active" and self._txns.get(ref.txn) is tx:
                    return self._prepare_open(tx, ref)
        with self._controlled("prepare") as conn:
            self.fence.hold(conn, ref.epoch)
            try:
                if self.gid(ref.txn) in self.store.prepared_gids(conn, self.name):
                    return True
                outcome = self._outcome(conn, ref.txn)
                if outcome is not None:
                    return False
                # never applied here, lost with its session, or open in a replaced owner's
                # session: vote no, and remember, so that a late apply is refused
                self._end_elsewhere(conn, ref.txn)
                return False
            finally:
                self.fence.release(conn)

    def _prepare_open(self, tx: _Tx, ref: TxnRef) -> bool:
        psycopg = psycopg_module()
        conn = tx.conn
        try:
            self.fence.hold(conn, ref.epoch)
        except psycopg.Error as exc:
            self._lost(tx, exc)
            return False
        s = self.s
        try:
            if tx.backup:
                keep_backups(conn, self.s, self.num, tx.txn)
            conn.execute(f"DELETE FROM {s}.applied WHERE part=%s AND txn=%s", (self.num, tx.txn))
            # the commit's own record: visible exactly when (and if) COMMIT PREPARED runs
            conn.execute(f"INSERT INTO {s}.finished(part, txn, outcome, at) VALUES(%s, %s, 'committed', %s)",
                         (self.num, tx.txn, time.time()))
            crashpoints.durable_write(f"{self.name}:{Step.PREPARE}")
            conn.execute(f"PREPARE TRANSACTION '{self.gid(tx.txn)}'")  # validated: no quote can appear
        except psycopg.Error as exc:
            # PostgreSQL rolled it back (e.g. a global id already in use): vote no; a refusal of
            # the server's (no prepared-transaction slot left, a full disk) says why
            self._lost(tx, exc)
            refused = refusal(f"participant {self.name}: prepare", exc)
            if refused is not None:
                self._refused[tx.txn] = refused
                while len(self._refused) > 256:
                    self._refused.popitem(last=False)
                raise refused from None
            return False
        try:
            conn.execute(f"UPDATE {s}.txns SET state='prepared', pid=NULL WHERE part=%s AND txn=%s",
                         (self.num, tx.txn))
            self.fence.release(conn)
            self.store.pool.put(conn)
        except psycopg.Error:
            close_quietly(conn)  # prepared all the same: the registry's state is only a hint
        tx.conn = None
        tx.state = "prepared"
        return True

    def resolve(self, ref: TxnRef) -> str:
        """Abort ``ref.txn`` unless it is finished here; return its outcome."""
        return self._finish(ref, "aborted", resolving=True)

    def _finish(self, ref: TxnRef, outcome: str, resolving: bool = False) -> str:
        psycopg = psycopg_module()
        check_txn_id(ref.txn)
        tx = self._txns.get(ref.txn)
        if tx is not None:
            with tx.mutex:
                if tx.state == "active" and self._txns.get(ref.txn) is tx:
                    try:
                        self._finish_open(tx, ref, outcome)
                        return outcome
                    except psycopg.Error as exc:
                        self._lost(tx, exc)
                        if outcome == "committed":
                            raise InternalError(
                                f"transaction {ref.txn} on participant {self.name} failed while committing "
                                f"without a vote: {exc}") from None
                        return outcome
        with self._controlled(outcome) as conn:
            self.fence.hold(conn, ref.epoch)
            try:
                gid = self.gid(ref.txn)
                if gid in self.store.prepared_gids(conn, self.name):
                    try:
                        conn.execute(f"{'COMMIT' if outcome == 'committed' else 'ROLLBACK'} PREPARED '{gid}'")
                    except psycopg.errors.UndefinedObject:
                        pass  # finished meanwhile by another session: the record below says how
                    crashpoints.durable_write(f"{self.name}:{outcome}")
                done = self._outcome(conn, ref.txn)
                if resolving and done is not None:
                    outcome = done  # committed in one phase, or finished already
                if done is not None and done != outcome:
                    raise InternalError(
                        f"transaction {ref.txn} on participant {self.name} is {done}, asked to be {outcome}: "
                        "this should never happen, please file a bug", shard=self.name)
                if done is None:
                    if outcome == "committed" and self._registered(conn, ref.txn):
                        raise InternalError(
                            f"transaction {ref.txn} on participant {self.name} never voted here; it cannot "
                            "commit: this should never happen, please file a bug", shard=self.name)
                    self._end_elsewhere(conn, ref.txn, outcome)
                    if resolving:  # a session ended just now may have committed first: its record says
                        outcome = self._outcome(conn, ref.txn) or outcome
                else:
                    conn.execute(f"DELETE FROM {self.s}.txns WHERE part=%s AND txn=%s", (self.num, ref.txn))
            finally:
                self.fence.release(conn)
        if tx is not None:
            self._forget_tx(tx)
        return outcome

    def _finish_open(self, tx: _Tx, ref: TxnRef, outcome: str) -> None:
        """Commit or roll back a transaction that is still open here (it never voted)."""
        conn = tx.conn
        self.fence.hold(conn, ref.epoch)
        s = self.s
        if outcome == "committed":
            if tx.backup:
                keep_backups(conn, self.s, self.num, tx.txn)
            conn.execute(f"DELETE FROM {s}.applied WHERE part=%s AND txn=%s", (self.num, tx.txn))
            conn.execute(f"INSERT INTO {s}.finished(part, txn, outcome, at) VALUES(%s, %s, 'committed', %s)",
                         (self.num, tx.txn, time.time()))
            conn.execute("COMMIT")
        else:
            conn.execute("ROLLBACK")
            self._record(conn, tx.txn, "aborted")
        crashpoints.durable_write(f"{self.name}:{outcome}")
        conn.execute(f"DELETE FROM {s}.txns WHERE part=%s AND txn=%s", (self.num, tx.txn))
        tx.conn = None
        self.fence.release(conn)
        self.store.pool.put(conn)
        self._forget_tx(tx)

    def _record(self, conn, txn: str, outcome: str) -> None:
        conn.execute(
            f"INSERT INTO {self.s}.finished(part, txn, outcome, at) VALUES(%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.num, txn, outcome, time.time()),
        )
        conn.execute(f"DELETE FROM {self.s}.txns WHERE part=%s AND txn=%s", (self.num, txn))

    def _registered(self, conn, txn: str) -> bool:
        return conn.execute(f"SELECT 1 FROM {self.s}.txns WHERE part=%s AND txn=%s", (self.num, txn)).fetchone() is not None

    def _end_elsewhere(self, conn, txn: str, outcome: str = "aborted") -> None:
        """End a transaction that is not open in this object and not prepared: terminate the
        session that still has it open (a replaced owner's), then record ``outcome``."""
        row = conn.execute(
            f"SELECT t.pid FROM {self.s}.txns t JOIN pg_stat_activity a ON a.pid = t.pid "
            "AND a.backend_start = t.backend_start WHERE t.part=%s AND t.txn=%s AND a.pid <> pg_backend_pid()",
            (self.num, txn),
        ).fetchone()
        if row is not None and not terminate(conn, row[0]):
            raise ParticipantUnavailable(f"participant {self.name}: the session holding {txn} (pid {row[0]}) did not end")
        self._record(conn, txn, outcome)

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> list[dict[str, Any]]:
        """Abort transactions that never voted (presumed abort), and return the prepared ones
        (``{txn, ts, shard}``) as in doubt. PostgreSQL keeps their writes and locks."""
        with self._controlled("recover") as conn:
            self.fence.hold_exclusive(conn)
            try:
                prepared = {parse_gid(g)[2] for g in self.store.prepared_gids(conn, self.name)}
                rows = conn.execute(
                    f"SELECT t.txn, t.ts, f.outcome FROM {self.s}.txns t LEFT JOIN {self.s}.finished f "
                    "ON f.part = t.part AND f.txn = t.txn WHERE t.part=%s ORDER BY t.ts, t.txn", (self.num,)
                ).fetchall()
                known = {txn: ts for txn, ts, _ in rows}
                for txn, ts, outcome in rows:
                    if txn in prepared or txn in self._txns:
                        continue
                    if outcome is not None:  # finished; only its registration was left
                        conn.execute(f"DELETE FROM {self.s}.txns WHERE part=%s AND txn=%s", (self.num, txn))
                    else:
                        self._end_elsewhere(conn, txn)
                in_doubt = [{"txn": txn, "ts": known.get(txn, 0), "shard": self.name} for txn in prepared]
            finally:
                self.fence.release_exclusive(conn)
        return sorted(in_doubt, key=lambda d: (d["ts"], d["txn"]))

    def pending(self) -> list[dict[str, Any]]:
        """Transactions not yet finished here (``{txn, state, ts}``)."""
        with self._controlled("pending") as conn:
            prepared = {parse_gid(g)[2] for g in self.store.prepared_gids(conn, self.name)}
            rows = conn.execute(
                f"SELECT t.txn, t.ts FROM {self.s}.txns t WHERE t.part=%s AND NOT EXISTS "
                f"(SELECT 1 FROM {self.s}.finished f WHERE f.part = t.part AND f.txn = t.txn) ORDER BY t.ts, t.txn",
                (self.num,),
            ).fetchall()
        return [{"txn": t, "state": "prepared" if t in prepared else "active", "ts": ts} for t, ts in rows]

    def outcome(self, txn: str) -> Optional[str]:
        with self._controlled("outcome") as conn:
            return self._outcome(conn, txn)

    def _outcome(self, conn, txn: str) -> Optional[str]:
        row = conn.execute(f"SELECT outcome FROM {self.s}.finished WHERE part=%s AND txn=%s", (self.num, txn)).fetchone()
        return row[0] if row else None

    def before_images(self, txn: str) -> list[BeforeImages]:
        """The before-images of a transaction still open in this object, chunk by chunk.

        Once prepared they are PostgreSQL's (``ROLLBACK PREPARED`` restores them) and no session
        can read them; this returns ``[]`` then."""
        tx = self._txns.get(txn)
        if tx is None:
            return []
        with tx.mutex:
            if tx.state != "active" or tx.conn is None:
                return []
            rows = tx.conn.execute(
                f"SELECT chunk, images FROM {self.s}.applied WHERE part=%s AND txn=%s ORDER BY chunk", (self.num, txn)
            ).fetchall()
        return [images_from_record(c, blob) for c, blob in rows]

    # -- reads --------------------------------------------------------------------------------
    def read_items(
        self,
        context_id: int,
        where: Optional[str] = None,
        *,
        own_txn: Optional[str] = None,
        ids: Optional[list[int]] = None,
        limit: Optional[int] = None,
        after: Optional[int] = None,
    ) -> Iterator[tuple[int, str]]:
        """Committed items of a context on this participant in id order; with ``own_txn`` (open
        here) that transaction's own writes too."""
        sql, params = items_sql("id, vals", self.s, context_id, where, self.num, ids, after, limit, order=True)
        return iter(self._read(sql, params, own_txn))

    def count_items(self, context_id: int, where: Optional[str] = None) -> int:
        sql, params = items_sql("count(*)", self.s, context_id, where, self.num, None, None, None, order=False)
        return self._read(sql, params, None)[0][0]

    def read_page(self, context_id: int, where: Optional[str] = None, *, limit: Optional[int] = None,
                  after: Optional[int] = None) -> tuple[list[tuple[int, str]], int]:
        return read_page(self.store, context_id, where, self.num, limit=limit, after=after)

    def read_docs(self, prefix: str = "") -> dict[str, str]:
        """Committed catalog documents whose key starts with ``prefix``."""
        rows = self._read(f"SELECT key, doc FROM {self.s}.docs WHERE part=%s AND starts_with(key, %s)",
                          [self.num, prefix], None)
        return dict(rows)

    def _read(self, sql: str, params: list[Any], own_txn: Optional[str]) -> list[tuple]:
        psycopg = psycopg_module()
        tx = self._txns.get(own_txn) if own_txn else None
        if tx is not None:
            with tx.mutex:
                if tx.state == "active" and tx.conn is not None:
                    return tx.conn.execute(sql, params).fetchall()
        try:
            with self.store.pool.connection() as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise store_error(f"participant {self.name}: read", exc) from None

    def integrity_check(self) -> str:
        return "ok"

    def leftovers(self) -> Leftovers:
        """Counts of 2PC state still recorded (all zero when nothing is in flight): ``txns``
        counts the transactions registered here or prepared in PostgreSQL (the undo is
        PostgreSQL's: ``undo`` and ``created`` are 0)."""
        with self._controlled("leftovers") as conn:
            registered = {t for (t,) in conn.execute(f"SELECT txn FROM {self.s}.txns WHERE part=%s", (self.num,))}
            applied = conn.execute(f"SELECT count(*) FROM {self.s}.applied WHERE part=%s", (self.num,)).fetchone()[0]
            prepared = {parse_gid(g)[2] for g in self.store.prepared_gids(conn, self.name)}
        return leftovers(txns=len(registered | prepared), applied=applied)
