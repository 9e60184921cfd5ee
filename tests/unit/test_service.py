"""The application service on a real store, read model and token service."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.support import FakeClock, collect
from tracker.auth import Passwords, Principal, TokenService
from tracker.clock import system_clock
from tracker.domain import CreateTask, UpdateTask
from tracker.errors import AuthError, BadRequest, NotFound, VersionConflict
from tracker.events.sqlite import SQLiteStore
from tracker.events.types import GuestStarted
from tracker.projections.model import ReadModel
from tracker.service import Tracker

KEY = "k" * 64


def ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id{next(counter)}"


@pytest.fixture
async def tracker(db_path: Path, clock: FakeClock) -> AsyncIterator[Tracker]:
    async with SQLiteStore.open(db_path, clock) as store:
        model = await ReadModel.build(store)
        store.add_listener(model.on_commit)
        # Tokens on the wall clock: PyJWT checks `exp` against it whatever clock is injected
        # (see test_auth.py::test_verification_follows_the_injected_clock).
        tokens = TokenService(KEY, system_clock, guest_ttl=3600, user_ttl=600)
        yield Tracker(store, model, tokens, Passwords(4), clock, make_id=ids())


@pytest.fixture
async def alice(tracker: Tracker) -> Principal:
    return (await tracker.start_guest()).principal


@pytest.fixture
async def bob(tracker: Tracker) -> Principal:
    return (await tracker.start_guest()).principal


def update(**fields: object) -> UpdateTask:
    return msgspec.convert(fields, UpdateTask)


# Identity


async def test_starting_a_guest_records_it_and_issues_a_token(tracker: Tracker) -> None:
    session = await tracker.start_guest()

    assert session.principal == Principal(id="id1", kind="guest")
    (event,) = await tracker.store.read_stream("principal-id1")
    assert (event.type, event.actor) == ("GuestStarted", "system")
    assert await tracker.authenticate(session.token) == session.principal


async def test_a_token_for_a_principal_the_log_never_saw_is_refused(tracker: Tracker) -> None:
    stranger = tracker.tokens.issue(Principal(id="stranger", kind="guest"))

    with pytest.raises(AuthError):
        await tracker.authenticate(stranger.token)


async def test_a_token_that_claims_another_kind_is_refused(
    tracker: Tracker, alice: Principal
) -> None:
    as_user = tracker.tokens.issue(Principal(id=alice.id, kind="user"))

    with pytest.raises(AuthError):
        await tracker.authenticate(as_user.token)


async def test_a_forged_token_is_refused(tracker: Tracker) -> None:
    with pytest.raises(AuthError):
        await tracker.authenticate("not.a.token")


# Tasks


async def test_a_created_task_is_read_back_at_once(tracker: Tracker, alice: Principal) -> None:
    task = await tracker.create_task(alice, CreateTask(title="  Buy milk ", notes="2 l"))

    assert (task.title, task.notes, task.done, task.version) == ("Buy milk", "2 l", False, 1)
    assert tracker.task(alice, task.id) == task
    assert tracker.tasks(alice) == [task]


async def test_tasks_are_listed_oldest_first(tracker: Tracker, alice: Principal) -> None:
    for title in ("one", "two", "three"):
        await tracker.create_task(alice, CreateTask(title=title))

    assert [t.title for t in tracker.tasks(alice)] == ["one", "two", "three"]


async def test_an_update_changes_the_task_and_its_version(
    tracker: Tracker, alice: Principal
) -> None:
    task = await tracker.create_task(alice, CreateTask(title="Buy milk"))

    updated = await tracker.update_task(alice, task.id, update(done=True), if_match=None)

    assert (updated.done, updated.version) == (True, 2)
    assert tracker.task(alice, task.id).done


async def test_an_update_that_changes_nothing_records_nothing(
    tracker: Tracker, alice: Principal
) -> None:
    task = await tracker.create_task(alice, CreateTask(title="Buy milk"))
    head = tracker.store.head

    same = await tracker.update_task(alice, task.id, update(title="Buy milk"), if_match=1)

    assert same.version == 1
    assert tracker.store.head == head


async def test_an_update_with_a_current_if_match_lands(tracker: Tracker, alice: Principal) -> None:
    task = await tracker.create_task(alice, CreateTask(title="Buy milk"))

    updated = await tracker.update_task(alice, task.id, update(notes="n"), if_match=1)

    assert updated.version == 2


async def test_an_update_with_a_stale_if_match_is_a_version_conflict(
    tracker: Tracker, alice: Principal
) -> None:
    task = await tracker.create_task(alice, CreateTask(title="Buy milk"))
    await tracker.update_task(alice, task.id, update(done=True), if_match=None)

    with pytest.raises(VersionConflict):
        await tracker.update_task(alice, task.id, update(title="late"), if_match=1)

    assert tracker.task(alice, task.id).title == "Buy milk"


async def test_concurrent_updates_without_if_match_all_land(
    tracker: Tracker, alice: Principal
) -> None:
    task = await tracker.create_task(alice, CreateTask(title="counter"))

    async with anyio.create_task_group() as tasks:
        for number in range(50):
            tasks.start_soon(
                tracker.update_task, alice, task.id, update(title=f"update {number}"), None
            )

    assert tracker.task(alice, task.id).version == 51
    history = await tracker.history(alice, task.id)
    assert [e.version for e in history] == list(range(1, 52))
    assert sorted(bytes(e.data) for e in history[1:]) == sorted(
        msgspec.json.encode({"type": "TaskUpdated", "title": f"update {n}"}) for n in range(50)
    )


async def test_a_deleted_task_is_gone(tracker: Tracker, alice: Principal) -> None:
    task = await tracker.create_task(alice, CreateTask(title="Buy milk"))

    await tracker.delete_task(alice, task.id, if_match=1)

    assert tracker.tasks(alice) == []
    with pytest.raises(NotFound):
        tracker.task(alice, task.id)
    with pytest.raises(NotFound):
        await tracker.delete_task(alice, task.id, if_match=None)


async def test_deleting_with_a_stale_if_match_is_a_version_conflict(
    tracker: Tracker, alice: Principal
) -> None:
    task = await tracker.create_task(alice, CreateTask(title="Buy milk"))
    await tracker.update_task(alice, task.id, update(done=True), if_match=None)

    with pytest.raises(VersionConflict):
        await tracker.delete_task(alice, task.id, if_match=1)

    assert tracker.tasks(alice) != []


async def test_history_lists_a_tasks_events_in_order_even_after_deletion(
    tracker: Tracker, alice: Principal
) -> None:
    task = await tracker.create_task(alice, CreateTask(title="Buy milk"))
    await tracker.update_task(alice, task.id, update(done=True), if_match=None)
    await tracker.delete_task(alice, task.id, if_match=None)

    history = await tracker.history(alice, task.id)

    assert [(e.type, e.version, e.actor) for e in history] == [
        ("TaskCreated", 1, alice.id),
        ("TaskUpdated", 2, alice.id),
        ("TaskDeleted", 3, alice.id),
    ]


async def test_tasks_as_of_shows_the_tasks_as_they_stood(
    tracker: Tracker, alice: Principal, bob: Principal
) -> None:
    first = await tracker.create_task(alice, CreateTask(title="first"))
    at_first = tracker.store.head
    await tracker.create_task(bob, CreateTask(title="bob's"))
    await tracker.update_task(alice, first.id, update(title="first, renamed"), if_match=None)
    at_rename = tracker.store.head
    second = await tracker.create_task(alice, CreateTask(title="second"))
    await tracker.delete_task(alice, first.id, if_match=None)

    async def titles(position: int) -> list[str]:
        return [t.title for t in await tracker.tasks_as_of(alice, position)]

    assert await titles(0) == []
    assert await titles(at_first) == ["first"]
    assert await titles(at_rename) == ["first, renamed"]
    assert await titles(tracker.store.head) == ["second"]
    assert await tracker.tasks_as_of(alice, tracker.store.head) == [tracker.task(alice, second.id)]


@pytest.mark.parametrize("offset", [-1, 1], ids=["negative", "past-the-head"])
async def test_tasks_as_of_a_position_outside_the_log_is_a_bad_request(
    tracker: Tracker, alice: Principal, offset: int
) -> None:
    position = -1 if offset < 0 else tracker.store.head + 1

    with pytest.raises(BadRequest):
        await tracker.tasks_as_of(alice, position)


async def test_another_principal_cannot_see_or_touch_a_task(
    tracker: Tracker, alice: Principal, bob: Principal
) -> None:
    task = await tracker.create_task(alice, CreateTask(title="mine"))
    head = tracker.store.head

    with pytest.raises(NotFound):
        tracker.task(bob, task.id)
    with pytest.raises(NotFound):
        await tracker.update_task(bob, task.id, update(done=True), if_match=None)
    with pytest.raises(NotFound):
        await tracker.update_task(bob, task.id, update(done=True), if_match=1)
    with pytest.raises(NotFound):
        await tracker.delete_task(bob, task.id, if_match=None)
    with pytest.raises(NotFound):
        await tracker.history(bob, task.id)
    assert tracker.tasks(bob) == []
    assert await tracker.tasks_as_of(bob, head) == []
    assert tracker.store.head == head


async def test_the_history_of_a_task_that_never_existed_is_not_found(
    tracker: Tracker, alice: Principal
) -> None:
    with pytest.raises(NotFound):
        await tracker.history(alice, "nope")


async def test_events_carry_the_principal_as_actor(tracker: Tracker, alice: Principal) -> None:
    await tracker.create_task(alice, CreateTask(title="t"))

    log = await collect(tracker.store.read_all())

    assert [(e.type, e.actor) for e in log] == [
        ("GuestStarted", "system"),
        ("TaskCreated", alice.id),
    ]
    assert tracker.model.identities.kind_of(alice.id) == "guest"
    assert msgspec.json.decode(bytes(log[0].data), type=GuestStarted).principal_id == alice.id


# Live and replayed agree

titles = st.text(alphabet=" abcXYZé🦆", min_size=1, max_size=12).filter(str.strip)
changes = st.fixed_dictionaries(
    {},
    optional={
        "title": titles,
        "notes": st.text(alphabet="ab \n\t", max_size=5),
        "done": st.booleans(),
    },
)
scripts = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 1), titles),
        st.tuples(st.just("update"), st.integers(0, 20), changes),
        st.tuples(st.just("delete"), st.integers(0, 20)),
        st.just(("snapshot",)),
    ),
    max_size=15,
)


@settings(max_examples=30, deadline=None, database=None)
@given(script=scripts)
async def test_replaying_the_log_gives_the_board_that_was_built_live(
    tmp_path_factory: pytest.TempPathFactory, script: list[tuple[Any, ...]]
) -> None:
    path = tmp_path_factory.mktemp("replay") / "tracker.db"
    clock = FakeClock()
    async with SQLiteStore.open(path, clock) as store:
        model = await ReadModel.build(store)
        store.add_listener(model.on_commit)
        tokens = TokenService(KEY, system_clock, guest_ttl=3600, user_ttl=600)
        tracker = Tracker(store, model, tokens, Passwords(4), clock, make_id=ids())
        owners = [(await tracker.start_guest()).principal for _ in range(2)]
        created: list[tuple[Principal, str]] = []
        expected: dict[str, dict[str, dict[str, Any]]] = {owner.id: {} for owner in owners}

        for step in script:
            clock.advance(0.25)
            if step[0] == "create":
                owner = owners[step[1]]
                task = await tracker.create_task(owner, CreateTask(title=step[2]))
                created.append((owner, task.id))
                expected[owner.id][task.id] = {"title": step[2].strip(), "notes": "", "done": False}
            elif step[0] == "snapshot":
                await model.save_snapshot(store)
            elif created:
                owner, task_id = created[step[1] % len(created)]
                alive = task_id in expected[owner.id]
                if step[0] == "update":
                    command = msgspec.convert(step[2], UpdateTask)
                    if not alive:
                        with pytest.raises(NotFound):
                            await tracker.update_task(owner, task_id, command, None)
                        continue
                    await tracker.update_task(owner, task_id, command, None)
                    fields = msgspec.structs.asdict(command)
                    expected[owner.id][task_id] |= {
                        name: value for name, value in fields.items() if value is not msgspec.UNSET
                    }
                elif not alive:
                    with pytest.raises(NotFound):
                        await tracker.delete_task(owner, task_id, None)
                else:
                    await tracker.delete_task(owner, task_id, None)
                    del expected[owner.id][task_id]

        replayed = ReadModel()
        await replayed.catch_up(store)
        from_snapshot = await ReadModel.build(store)
        live = model.dump()

    assert replayed.dump() == live
    assert from_snapshot.dump() == live
    for owner in owners:
        tasks = model.board.tasks_of(owner.id)
        assert {t.id: {"title": t.title, "notes": t.notes, "done": t.done} for t in tasks} == (
            expected[owner.id]
        )
        assert [t.id for t in tasks] == list(expected[owner.id])
    async with SQLiteStore.open(path) as reopened:
        assert (await ReadModel.build(reopened)).dump() == live
