"""The chaos suite's psycopg 3 writer: the same protocol as writer-node.ts.

CONNECTIONS sessions (default 4), one thread each, write rows (writer, seq, note) into
`chaos` with their own writer id (<WRITER>-<i>) and a seq that only goes up. Most writes
are transactions (BEGIN; INSERT; pause; COMMIT, the pause 0-5 ms, sometimes 200-800 ms),
some autocommit INSERTs, some a CALL chaos_write(...) that commits its INSERT and then
sleeps before it replies. A write is acknowledged only when its INSERT reported one row
and its COMMIT came back as COMMIT (or the autocommit INSERT succeeded, or the CALL came
back as CALL); then it prints
"ack<TAB>writer<TAB>seq<TAB>kind". Any error prints
"err<TAB>writer<TAB>seq<TAB>step<TAB>code<TAB>message" and the write is given up; a
closed connection is replaced. psycopg prepares a statement after it has run 5 times
(prepare_threshold), so the INSERT soon runs as a named prepared statement.

Runs until stdin closes, then prints "done<TAB>name". Environment: DATABASE_URL, WRITER,
CONNECTIONS.
"""

import os
import random
import re
import sys
import threading
import time

import psycopg

URL = os.environ["DATABASE_URL"]
PREFIX = os.environ.get("WRITER", "py")
CONNECTIONS = int(os.environ.get("CONNECTIONS", "4"))
INSERT = "INSERT INTO chaos (writer, seq, note) VALUES (%s, %s, %s)"
CALL = "CALL chaos_write(%s, %s, %s, %s)"

stopping = threading.Event()
out_lock = threading.Lock()


def emit(*fields):
    line = "\t".join(re.sub(r"[\t\r\n]+", " ", str(field)) for field in fields)
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def code_of(error):
    """A SQLSTATE when the server sent one, else conn (refused, reset, closed)."""
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) and re.fullmatch(r"[0-9A-Z]{5}", state) else "conn"


def pick_write():
    """An autocommit INSERT (1 in 5), a CALL of chaos_write (1 in 10: it commits its INSERT,
    then sleeps), or a transaction paused 0-5 ms, one in twelve 200-800 ms (tx-long)."""
    draw = random.random()
    if draw < 0.2:
        return "auto", 0
    if draw < 0.3:
        return "call", 50 + random.randrange(250)
    if random.random() < 1 / 12:
        return "tx-long", 200 + random.randrange(600)
    return "tx", random.randrange(6)


class StepError(Exception):
    def __init__(self, step, failure):
        super().__init__(str(failure))
        self.step = step
        self.failure = failure


def step(name, run):
    try:
        return run()
    except Exception as error:  # noqa: BLE001 - every failure is reported, none is fatal
        raise StepError(name, error) from error


def run_connection(writer):
    conn = None
    seq = 0
    while not stopping.is_set():
        if conn is None:
            try:
                conn = psycopg.connect(URL, autocommit=True, connect_timeout=10)
            except Exception as error:  # noqa: BLE001
                emit("err", writer, seq, "connect", code_of(error), error)
                time.sleep(0.1 + random.random() / 10)
                continue
        seq += 1
        kind, pause = pick_write()
        note = kind + " py"
        try:
            if kind == "auto":
                cur = step("insert", lambda: conn.execute(INSERT, (writer, seq, note)))
                if cur.rowcount != 1:
                    raise StepError("insert", Exception(f"INSERT reported {cur.rowcount} rows"))
            elif kind == "call":
                cur = step("call", lambda: conn.execute(CALL, (writer, seq, note, pause)))
                if cur.statusmessage != "CALL":
                    raise StepError("call", Exception(f"CALL answered {cur.statusmessage}"))
            else:
                step("begin", lambda: conn.execute("BEGIN"))
                cur = step("insert", lambda: conn.execute(INSERT, (writer, seq, note)))
                if cur.rowcount != 1:
                    raise StepError("insert", Exception(f"INSERT reported {cur.rowcount} rows"))
                time.sleep(pause / 1000)
                commit = step("commit", lambda: conn.execute("COMMIT"))
                if commit.statusmessage != "COMMIT":
                    # Postgres answers COMMIT of a failed transaction with ROLLBACK.
                    emit("err", writer, seq, "commit", "not-committed", f"COMMIT answered {commit.statusmessage}")
                    continue
            emit("ack", writer, seq, kind)
        except StepError as failed:
            code = code_of(failed.failure)
            emit("err", writer, seq, failed.step, code, failed)
            dead = conn.closed or conn.broken or code == "conn"
            if not dead:
                try:
                    conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001
                    dead = True
            if dead:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


def main():
    threads = [
        threading.Thread(target=run_connection, args=(f"{PREFIX}-{i}",), daemon=True) for i in range(CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    sys.stdin.read()
    stopping.set()
    for thread in threads:
        thread.join()
    emit("done", PREFIX)


if __name__ == "__main__":
    main()
