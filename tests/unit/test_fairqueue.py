from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from codexd.limits.budget import Budget, BudgetLimits
from codexd.limits.fairqueue import FairQueue

T0 = 1000.0


def queue(*, conc: int = 1, rpm: int | None = None, tpm: int | None = None):
    return FairQueue(Budget(BudgetLimits(rpm, tpm, conc)), name="openai")


def serve_one_at_a_time(q: FairQueue) -> list[str]:
    """Grant with one slot, releasing each job before the next: the order clients are served."""
    order: list[str] = []
    while len(q):
        (ticket,) = q.grant(T0)
        order.append(str(ticket).split("-")[0])
        q.budget.release(ticket, T0)
    return order


def test_one_job_is_not_starved_by_five_hundred() -> None:
    q = queue()
    for i in range(500):
        q.push(f"busy-{i}", "busy", 10)
    q.push("lone-0", "lone", 10)
    assert q.position("lone-0") == 2
    order = serve_one_at_a_time(q)
    assert order.index("lone") <= 1


def test_clients_are_served_in_turn_while_they_all_wait() -> None:
    q = queue()
    for client, n in (("a", 50), ("b", 10), ("c", 10)):
        for i in range(n):
            q.push(f"{client}-{i}", client, 1)
    order = serve_one_at_a_time(q)
    # loose criterion: while every client still has work, no client is ever more than one job
    # ahead of another
    served: Counter[str] = Counter()
    for client in order[:30]:
        served[client] += 1
        assert max(served.values()) - min(served[c] for c in "abc") <= 1
    assert order[30:] == ["a"] * 40


def test_a_newcomer_joins_the_back_of_the_rotation() -> None:
    q = queue()
    for i in range(3):
        q.push(f"a-{i}", "a", 1)
        q.push(f"b-{i}", "b", 1)
    q.push("c-0", "c", 1)
    assert serve_one_at_a_time(q) == ["a", "b", "c", "a", "b", "a", "b"]


def test_positions_follow_the_serving_order() -> None:
    q = queue()
    q.push("a-0", "a", 1)
    q.push("a-1", "a", 1)
    q.push("a-2", "a", 1)
    q.push("b-0", "b", 1)
    assert [q.position(t) for t in ("a-0", "b-0", "a-1", "a-2")] == [1, 2, 3, 4]
    assert q.position("nope") is None


def test_cancel_removes_and_moves_others_up() -> None:
    q = queue()
    for t, c in (("a-0", "a"), ("b-0", "b"), ("a-1", "a"), ("b-1", "b")):
        q.push(t, c, 1)
    assert q.remove("b-0")
    assert not q.remove("b-0")
    assert q.position("a-1") == 3  # a-0, b-1, a-1
    assert q.remove("b-1")
    assert q.position("a-1") == 2
    assert len(q) == 2
    assert repr(q) == "<FairQueue 'openai': 2 queued, 1 clients>"


def test_a_large_job_in_turn_is_not_overtaken_by_small_ones() -> None:
    q = queue(conc=10, tpm=100)
    q.push("small-0", "small", 60)
    assert q.grant(T0) == ["small-0"]
    q.push("big-0", "big", 90)
    q.push("small-1", "small", 10)
    # big-0 has the turn and does not fit: small-1 waits behind it though it would fit
    assert q.grant(T0 + 1) == []
    assert q.next_deadline(T0 + 1) == T0 + 61
    assert q.grant(T0 + 61) == ["big-0", "small-1"]


def test_grant_admits_into_the_budget_and_respects_it() -> None:
    q = queue(conc=2, rpm=3)
    for i in range(4):
        q.push(i, "a", 1)
    assert q.grant(T0) == [0, 1]
    assert q.budget.in_flight == 2
    assert q.next_deadline(T0) is None  # waits for a release, not for time
    q.budget.release(0, T0)
    assert q.grant(T0) == [2]
    q.budget.release(1, T0)
    assert q.grant(T0) == []
    assert q.next_deadline(T0) == T0 + 61


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from("abcd")),
        st.tuples(st.just("remove"), st.integers(0, 40)),
        st.tuples(st.just("grant"), st.integers(0, 3)),
    ),
    max_size=60,
)


@given(ops)
def test_positions_are_exactly_the_grant_order(script: list[tuple[str, object]]) -> None:
    q = queue(conc=10**6)
    next_ticket = 0
    for op, arg in script:
        if op == "push":
            q.push(next_ticket, str(arg), 1)
            next_ticket += 1
        elif op == "remove":
            q.remove(arg)
        else:
            # grant a few at a time: only `arg` more fit
            room = q.budget.in_flight + int(str(arg))
            q.budget.reconfigure(BudgetLimits(max_concurrency=max(room, 1)))
            q.grant(T0)
    waiting = [t for t in range(next_ticket) if t in q]
    positions = {t: q.position(t) for t in waiting}
    q.budget.reconfigure(BudgetLimits(max_concurrency=10**6))
    order = q.grant(T0)
    assert sorted(order) == sorted(waiting)
    assert [positions[t] for t in order] == list(range(1, len(order) + 1))
