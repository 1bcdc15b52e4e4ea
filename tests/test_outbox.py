"""The outbox on a real write store (SQLite and PostgreSQL): events exist exactly when
their transaction commits, are claimed in order under a lease (at least once), one subject
at a time, and failing ones back off and end in the dead-letter list until retried."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from nearstate.content import outbox
from nearstate.content.db import WriteStore

T = 1_800_000_000.0  # a fixed "now" for claims that pass their own clock


def add(store: WriteStore, kind: str, subject: object, **kw: object) -> int:
    with store.transaction() as tx:
        return outbox.enqueue(tx, kind, subject, now=T, **kw)  # type: ignore[arg-type]


def row(store: WriteStore, event_id: int) -> dict:
    r = store.read_one("SELECT * FROM outbox WHERE id = ?", (event_id,))
    assert r is not None
    return r


def test_enqueue_is_part_of_the_transaction(write_store: WriteStore) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), write_store.transaction() as tx:
        outbox.enqueue(tx, "story", 1, revision=1, payload={"x": 1})
        tx.execute("INSERT INTO people (id, name, slug) VALUES (1, 'Rolled Back', 'rolled-back')")
        raise Boom
    assert outbox.pending_count(write_store) == 0
    assert write_store.read("SELECT * FROM people") == []
    # a statement failing inside the transaction takes the event with it
    with pytest.raises(Exception), write_store.transaction() as tx:  # noqa: B017
        outbox.enqueue(tx, "story", 2)
        tx.execute("INSERT INTO no_such_table VALUES (1)")
    assert outbox.pending_count(write_store) == 0
    assert outbox.claim(write_store, "w", now=T + 1) is None

    eid = add(write_store, "story", 3, revision=4, payload={"ids": [1, 2]})
    assert outbox.pending_count(write_store) == 1
    ev = outbox.claim(write_store, "w", now=T)
    assert ev is not None
    assert (ev.id, ev.kind, ev.subject, ev.revision, ev.payload, ev.attempts, ev.created_at) == (
        eid,
        "story",
        "3",
        4,
        {"ids": [1, 2]},
        1,
        T,
    )


def test_enqueue_wakes_waiters_only_on_commit(write_store: WriteStore) -> None:
    seen = write_store.wakes(outbox.CHANNEL)
    with pytest.raises(RuntimeError), write_store.transaction() as tx:
        outbox.enqueue(tx, "story", 1)
        raise RuntimeError
    assert write_store.wakes(outbox.CHANNEL) == seen
    got: list[int] = []
    waiter = threading.Thread(
        target=lambda: got.append(write_store.wait_wake(outbox.CHANNEL, seen, 10))
    )
    waiter.start()
    add(write_store, "story", 1)
    waiter.join(10)
    assert got == [seen + 1]


def test_claim_order_and_completion(write_store: WriteStore) -> None:
    ids = [add(write_store, "story", s) for s in (5, 3, 9)]
    claimed = []
    while (ev := outbox.claim(write_store, "w", lease=60, now=T)) is not None:
        claimed.append(ev.id)
    assert claimed == ids  # oldest first, whatever the subject
    for eid in ids[:2]:
        ev = outbox.Event.from_row(row(write_store, eid))
        with write_store.transaction() as tx:
            outbox.complete(tx, ev, now=T + 1)
    r = row(write_store, ids[0])
    assert (r["status"], r["done_at"], r["claimed_until"]) == ("done", T + 1, None)
    assert outbox.pending_count(write_store) == 1
    # done events are never claimed again, even long after their lease
    ev = outbox.claim(write_store, "w", lease=60, now=T + 3600)
    assert ev is not None and ev.id == ids[2] and ev.attempts == 2  # its lease had expired
    with write_store.transaction() as tx:
        outbox.complete(tx, ev)
    assert outbox.claim(write_store, "w", now=T + 7200) is None


def test_events_are_not_claimed_before_they_are_available(write_store: WriteStore) -> None:
    add(write_store, "story", 1)
    assert outbox.claim(write_store, "w", now=T - 1) is None
    assert outbox.claim(write_store, "w", now=T) is not None


def test_lease_at_least_once(write_store: WriteStore) -> None:
    eid = add(write_store, "story", 1)
    other = add(write_store, "story", 2)
    a = outbox.claim(write_store, "a", lease=10, now=T)
    assert a is not None and a.id == eid and a.attempts == 1
    r = row(write_store, eid)
    assert (r["claimed_by"], r["claimed_until"]) == ("a", T + 10)
    # while the lease holds, others get the next event, not this one
    b = outbox.claim(write_store, "b", lease=10, now=T + 9)
    assert b is not None and b.id == other
    assert outbox.claim(write_store, "c", lease=10, now=T + 10) is None
    # after it expires (worker a died), it is claimed again: at least once
    c = outbox.claim(write_store, "c", lease=10, now=T + 10.5)
    assert c is not None and c.id == eid and c.attempts == 2
    assert row(write_store, eid)["claimed_by"] == "c"
    # extend keeps it for its holder only
    assert not outbox.extend(write_store, c, "a", 60)
    assert outbox.extend(write_store, c, "c", 60)
    assert row(write_store, eid)["claimed_until"] >= time.time() + 59


def test_one_subject_at_a_time(write_store: WriteStore) -> None:
    first = add(write_store, "story", 7)
    second = add(write_store, "story", 7)
    same_subject_other_kind = add(write_store, "layout", 7)
    a = outbox.claim(write_store, "a", lease=30, now=T)
    assert a is not None and a.id == first
    # the second event of story 7 waits while the first is held ...
    b = outbox.claim(write_store, "b", lease=30, now=T + 1)
    assert b is not None and b.id == same_subject_other_kind
    assert outbox.claim(write_store, "b", lease=30, now=T + 1) is None
    # ... until the first is done
    with write_store.transaction() as tx:
        outbox.complete(tx, a)
    c = outbox.claim(write_store, "c", lease=30, now=T + 2)
    assert c is not None and c.id == second


def test_one_subject_at_a_time_until_the_lease_expires(write_store: WriteStore) -> None:
    first = add(write_store, "story", 7)
    second = add(write_store, "story", 7)
    a = outbox.claim(write_store, "a", lease=5, now=T)
    assert a is not None and a.id == first
    assert outbox.claim(write_store, "b", lease=5, now=T + 4) is None
    # the holder died: its lease ran out; the oldest of the subject comes back first
    b = outbox.claim(write_store, "b", lease=5, now=T + 6)
    assert b is not None and b.id == first
    assert outbox.claim(write_store, "c", lease=5, now=T + 7) is None
    with write_store.transaction() as tx:
        outbox.complete(tx, b)
    c = outbox.claim(write_store, "c", lease=5, now=T + 8)
    assert c is not None and c.id == second


def test_fail_backoff_dead_and_retry(write_store: WriteStore) -> None:
    eid = add(write_store, "story", 1)
    now = T
    waits = []
    for attempt in range(1, 4):
        ev = outbox.claim(write_store, "w", lease=30, now=now)
        assert ev is not None and ev.id == eid and ev.attempts == attempt
        status = outbox.fail(write_store, ev, f"boom {attempt}", max_attempts=4, now=now)
        assert status == "pending"
        r = row(write_store, eid)
        wait = r["available_at"] - now
        waits.append(wait)
        assert wait == outbox.backoff(attempt)
        assert (r["attempts"], r["last_error"], r["claimed_until"]) == (
            attempt,
            f"boom {attempt}",
            None,
        )
        # not before its backoff ends
        assert outbox.claim(write_store, "w", now=now + wait - 0.01) is None
        now += wait
    assert waits == [0.5, 1.0, 2.0]  # doubling
    ev = outbox.claim(write_store, "w", now=now)
    assert ev is not None and ev.attempts == 4
    assert outbox.fail(write_store, ev, "x" * 5000, max_attempts=4, now=now) == "dead"
    r = row(write_store, eid)
    assert r["status"] == "dead" and len(r["last_error"]) == 2000
    assert outbox.claim(write_store, "w", now=now + 3600) is None
    assert outbox.pending_count(write_store) == 0
    dead = outbox.dead_letters(write_store)
    assert [(d["id"], d["attempts"]) for d in dead] == [(eid, 4)]

    assert outbox.retry(write_store, eid)
    assert not outbox.retry(write_store, eid)  # not dead any more
    assert outbox.dead_letters(write_store) == []
    ev = outbox.claim(write_store, "w")  # real clock: available now
    assert ev is not None and ev.id == eid and ev.attempts == 1
    with write_store.transaction() as tx:
        outbox.complete(tx, ev)
    assert not outbox.retry(write_store, eid)  # done: not dead
    assert not outbox.retry(write_store, 12345)


def test_fail_without_retry_is_dead_at_once(write_store: WriteStore) -> None:
    eid = add(write_store, "bogus", 1)
    ev = outbox.claim(write_store, "w", now=T)
    assert ev is not None
    assert outbox.fail(write_store, ev, "unknown kind", retry=False, now=T) == "dead"
    assert [d["id"] for d in outbox.dead_letters(write_store)] == [eid]


def test_backoff_is_capped() -> None:
    assert [outbox.backoff(n) for n in (0, 1, 2, 3)] == [0.5, 0.5, 1.0, 2.0]
    assert outbox.backoff(30) == 60.0
    assert outbox.backoff(3, base=1, cap=3) == 3


def test_concurrent_claimers_never_share_an_event(write_store: WriteStore) -> None:
    """Threads claim (under a lease longer than the test) and complete events of a few
    subjects; every event is claimed exactly once, and no two events of one subject are
    held at the same time."""
    n_events, n_subjects, n_threads = 120, 6, 6
    with write_store.transaction() as tx:
        for i in range(n_events):
            outbox.enqueue(tx, "story", i % n_subjects)
    holds: list[tuple[int, str, float, float, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    go = threading.Barrier(n_threads)

    def claimer(name: str) -> None:
        try:
            go.wait()
            idle = 0
            while idle < 20:
                ev = outbox.claim(write_store, name, lease=300)
                if ev is None:
                    idle += 1
                    time.sleep(0.005)
                    continue
                idle = 0
                t0 = time.monotonic()
                time.sleep(0.001)
                t1 = time.monotonic()
                with write_store.transaction() as tx:
                    outbox.complete(tx, ev)
                with lock:
                    holds.append((ev.id, ev.subject, t0, t1, name))
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=claimer, args=(f"c{i}",)) for i in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors
    ids = sorted(h[0] for h in holds)
    assert ids == sorted(set(ids)), "an event was claimed twice while its lease was valid"
    assert len(ids) == n_events
    assert outbox.pending_count(write_store) == 0
    assert len({h[4] for h in holds}) > 1  # the work was shared
    # per subject, the events were processed one at a time, in order
    by_subject: dict[str, list[tuple[int, float, float]]] = {}
    for eid, subject, t0, t1, _ in holds:
        by_subject.setdefault(subject, []).append((eid, t0, t1))
    overlaps = []
    for subject, hs in by_subject.items():
        hs.sort(key=lambda h: h[1])
        assert [h[0] for h in hs] == sorted(h[0] for h in hs), f"subject {subject} out of order"
        for (e1, _, end1), (e2, start2, _) in itertools.pairwise(hs):
            if start2 < end1:
                overlaps.append((subject, e1, e2))
    assert overlaps == []
