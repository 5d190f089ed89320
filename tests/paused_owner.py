"""A participant's owner in a process of its own, for tests/test_pauses.py; not a test module.

    python tests/paused_owner.py KIND STORE NAME EPOCH

opens participant ``NAME`` of the store (``KIND`` ``sqlite``: ``STORE`` is the shard file;
``postgresql``: ``STORE`` is the store URL) without recovery, claims ``EPOCH``, and then runs
the steps it reads on stdin, one JSON object a line (``{"step": "apply", "txn", "ts", "id",
"mass"}`` updates item ``id``; ``{"step": "prepare"|"commit"|"abort", "txn", "ts"}``), writing
one JSON line per step: ``{"ok": value}`` or ``{"error": code, "message"}``. The test SIGSTOPs
it between steps and SIGCONTs it after a new owner has taken over.
"""
from __future__ import annotations

import json
import sys


def open_participant(kind: str, store: str, name: str):
    if kind == "sqlite":
        from batchray.core.storage.sqlite.shard import SqliteShard

        return SqliteShard(store, name=name, lock_timeout=2.0, recover=False)
    from batchray.core.storage.postgres.participant import PgParticipant
    from batchray.core.storage.postgres.store import PgStore

    return PgParticipant(PgStore(store), name, lock_timeout=2.0, recover=False)


def main(argv: list[str]) -> int:
    from batchray.core.txn.chunks import TxnRef, UpdateItems
    from batchray.errors import BatchrayError

    kind, store, name, epoch = argv[0], argv[1], argv[2], int(argv[3])
    participant = open_participant(kind, store, name)
    participant.claim(epoch)
    print(json.dumps({"ok": "ready"}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        ref = TxnRef(request["txn"], request["ts"], epoch=epoch)
        step = request["step"]
        try:
            if step == "apply":
                value = participant.apply(ref, UpdateItems(request["chunk"], 1, ids=[request["id"]],
                                                           patch={"mass": request["mass"]})).affected
            else:
                value = getattr(participant, step)(ref)
            print(json.dumps({"ok": value}), flush=True)
        except BatchrayError as exc:
            print(json.dumps({"error": exc.code, "message": exc.message}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
