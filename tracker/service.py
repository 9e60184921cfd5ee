"""The application: carries out commands (read state, decide, append) and answers queries.

It knows the store, the read model and the domain, and nothing of HTTP. Reads
come from the in-memory read model, which the store's commit listener has
already brought up to date by the time an append returns.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Callable, Sequence

from tracker.audit import EventQuery, redacted
from tracker.auth import Claims, Passwords, Principal, Session, TokenService
from tracker.clock import Clock, parse_timestamp
from tracker.domain import (
    CreateTask,
    Credentials,
    StartTimer,
    UpdateTask,
    create_task,
    delete_task,
    finish_timer,
    pause_timer,
    resume_timer,
    start_timer,
    stop_timer,
    update_task,
)
from tracker.errors import (
    AuthError,
    BadRequest,
    InvalidCredentials,
    NotFound,
    UsernameTaken,
    VersionConflict,
)
from tracker.events.records import Recorded
from tracker.events.store import Append, EventStore
from tracker.events.types import (
    BaseEvent,
    GuestClaimed,
    GuestStarted,
    SessionRevoked,
    UserRegistered,
)
from tracker.projections.board import RunClock, Task, task_stream
from tracker.projections.identity import principal_stream, username_stream
from tracker.projections.model import ReadModel, replay_board
from tracker.throttle import Attempts, LoginThrottle

TimerDecision = Callable[[Task | None, RunClock | None, float], Sequence[BaseEvent]]
"""A decision on a task's countdown at a moment (pause, resume, stop)."""

MAX_ATTEMPTS = 1000
"""How often a write without `If-Match` is decided again after losing a race."""

_BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_IN_ASCII_ORDER = bytes.maketrans(_BASE64URL, bytes(sorted(_BASE64URL)))
"""base64url's 64 characters, given each digit's place in ASCII order: encoded with it,
big-endian bytes compare as their text does."""
_48_BITS = (1 << 48) - 1


class IdMaker:
    """Ids of 16 URL-safe characters that sort (as text) in the order they were made.

    An id is 48 bits of the clock's milliseconds, then 48 random bits from the system's
    CSPRNG, read in blocks rather than one call per id. Ids made one after another sit
    side by side at the end of the log's (stream, version) index: a commit of new tasks
    writes a page or two of it, where random ids wrote one page per task, and the more
    of them the index held, the more each commit cost.
    """

    RANDOM_BYTES = 6

    def __init__(self, clock: Clock, ids_per_block: int = 256) -> None:
        self._clock = clock
        self._block = self.RANDOM_BYTES * ids_per_block
        self._pool = b""
        self._next = 0

    def __call__(self) -> str:
        if self._next >= len(self._pool):
            self._pool, self._next = secrets.token_bytes(self._block), 0
        start, self._next = self._next, self._next + self.RANDOM_BYTES
        millis = (round(self._clock() * 1000) & _48_BITS).to_bytes(6, "big")
        encoded = base64.urlsafe_b64encode(millis + self._pool[start : self._next])
        return encoded.translate(_IN_ASCII_ORDER).decode("ascii")


class Tracker:
    """Every use case of the product, over one store and one read model."""

    def __init__(
        self,
        store: EventStore,
        model: ReadModel,
        tokens: TokenService,
        passwords: Passwords,
        clock: Clock,
        make_id: Callable[[], str] | None = None,
        admins: frozenset[str] = frozenset(),
        attempts: Attempts | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.tokens = tokens
        self.passwords = passwords
        self.throttle = LoginThrottle(clock, attempts)
        self.clock = clock
        self._make_id = make_id or IdMaker(clock)
        self._admins = frozenset(name.lower() for name in admins)

    # Identity

    async def register(self, credentials: Credentials, guest: Principal | None) -> Session:
        """A new account; registering as a guest hands the guest's tasks to it."""
        if self.model.identities.account(credentials.username) is not None:
            raise UsernameTaken(f"the username {credentials.username!r} is taken")
        password_hash = await self.passwords.hash(credentials.password)
        user = Principal(id=self._make_id(), kind="user", username=credentials.username)
        registered = UserRegistered(
            principal_id=user.id, username=credentials.username, password_hash=password_hash
        )
        appends = [Append(username_stream(credentials.username), 0, [registered])]
        if guest is not None and guest.kind == "guest":
            claim = GuestClaimed(guest_id=guest.id, user_id=user.id)
            appends.append(Append(principal_stream(guest.id), None, [claim]))
        try:
            await self.store.append_all(appends, user.id)
        except VersionConflict:
            raise UsernameTaken(f"the username {credentials.username!r} is taken") from None
        return self.tokens.issue(user)

    async def login(self, credentials: Credentials, address: str) -> Session:
        """A session for the account, if the password is right and nobody is guessing."""
        await self.throttle.attempt(credentials.username, address)
        account = self.model.identities.account(credentials.username)
        hashed = account.password_hash if account is not None else None
        if account is None or not await self.passwords.check(credentials.password, hashed):
            raise InvalidCredentials("unknown username or wrong password")
        await self.throttle.succeeded(credentials.username, address)
        return self.tokens.issue(
            Principal(id=account.principal_id, kind="user", username=account.username)
        )

    async def logout(self, token: str) -> None:
        """Revoke this session's token (other sessions of the principal live on)."""
        claims = self.tokens.verify(token)
        principal = await self._principal_now(claims)
        revoked = SessionRevoked(jti=claims.jti, expires_at=claims.exp)
        await self.store.append(principal_stream(principal.id), None, [revoked], principal.id)

    async def start_guest(self) -> Session:
        """A new guest, recorded in the log, with a token."""
        principal = Principal(id=self._make_id(), kind="guest")
        await self.store.append(
            principal_stream(principal.id), 0, [GuestStarted(principal_id=principal.id)], "system"
        )
        return self.tokens.issue(principal)

    async def authenticate(self, token: str) -> Principal:
        """The principal a token speaks for; AuthError if it is not valid now.

        A genuine token of a principal this instance has not seen yet was issued by
        another instance sharing the log a moment ago: it catches up, and looks again.
        """
        return await self._principal_now(self.tokens.verify(token))

    async def _principal_now(self, claims: Claims) -> Principal:
        try:
            return self.principal_of(claims)
        except AuthError:
            await self.store.catch_up()
        return self.principal_of(claims)

    def principal_of(self, claims: Claims) -> Principal:
        """The principal named by verified claims, if the log knows it as that kind and
        the token was not logged out."""
        identities = self.model.identities
        if identities.kind_of(claims.sub) != claims.kind or identities.is_revoked(claims.jti):
            raise AuthError("invalid or expired token")
        return Principal(
            id=claims.sub, kind=claims.kind, username=identities.usernames.get(claims.sub)
        )

    # Tasks: queries

    def tasks(self, principal: Principal) -> list[Task]:
        """The principal's live tasks as they stand now, oldest first."""
        board, now = self.model.board, self.clock()
        return [board.view(task, now) for task in board.tasks_of(principal.id)]

    async def find_task(self, principal: Principal, task_id: str) -> Task:
        """One of the principal's tasks as it stands now; NotFound for anyone else's (or
        once this instance has caught up with the log, if it did not know the task)."""
        if self.model.board.task(principal.id, task_id) is None:
            await self.store.catch_up()
        return self.task(principal, task_id)

    def task(self, principal: Principal, task_id: str) -> Task:
        """One of the principal's tasks as it stands now; NotFound for anyone else's."""
        task = self.model.board.task(principal.id, task_id)
        if task is None:
            raise NotFound("no such task")
        return self.model.board.detached(task, self.clock())

    async def history(self, principal: Principal, task_id: str) -> list[Recorded]:
        """Every event of one of the principal's tasks, deleted or not."""
        owns = self.model.board.owns_stream
        if not owns(principal.id, task_id):
            await self.store.catch_up()  # a task made through another instance a moment ago
            if not owns(principal.id, task_id):
                raise NotFound("no such task")
        return await self.store.read_stream(task_stream(task_id))

    async def tasks_as_of(self, principal: Principal, position: int) -> list[Task]:
        """The principal's tasks as they stood right after event `position`."""
        if position > self.model.position:
            await self.store.catch_up()  # a position another instance answered with
        if not 0 <= position <= self.model.position:
            raise BadRequest(f"as_of must be a position from 0 to {self.model.position}")
        owners = self.model.identities.merged_into(principal.id)
        streams = self._own_streams(principal)
        past = await replay_board(self.store.read_all(until=position, streams=streams))
        # Before a guest registered, its tasks were its own: they are this user's now.
        # A countdown running then is shown as it stood at that event's time.
        at = await self._time_of(position)
        return [past.view(task, at) for owner in owners for task in past.tasks_of(owner)]

    # The audit trail

    def is_admin(self, principal: Principal) -> bool:
        """Whether the principal is an account named in TRACKER_ADMINS."""
        return principal.username is not None and principal.username.lower() in self._admins

    async def events(self, principal: Principal, query: EventQuery) -> AsyncIterator[Recorded]:
        """The events the principal may read (its own; every one for an admin), in log
        order, secrets redacted, streamed in constant memory."""
        streams = None if self.is_admin(principal) else self._own_streams(principal)
        if query.stream is not None:
            if streams is not None and query.stream not in streams:
                return  # another principal's stream: as if it had no events
            streams = [query.stream]
        types = None if query.type is None else [query.type]
        async for record in self.store.read_all(
            query.after, streams=streams, types=types, limit=query.limit
        ):
            yield redacted(record)

    def _own_streams(self, principal: Principal) -> list[str]:
        """Every stream the principal owns: its identity, the guests it was, and every
        task it (or they) ever had."""
        owners = self.model.identities.merged_into(principal.id)
        streams = [principal_stream(owner) for owner in owners]
        if principal.username is not None:
            streams.append(username_stream(principal.username))
        streams.extend(stream for owner in owners for stream in self.model.board.streams_of(owner))
        return streams

    async def _time_of(self, position: int) -> float:
        event = await self.store.event_at(position) if position else None
        return parse_timestamp(event.recorded_at) if event is not None else 0.0

    # Tasks: commands

    async def create_task(self, principal: Principal, command: CreateTask) -> Task:
        """Create a task owned by the principal."""
        task_id = self._make_id()
        events = create_task(task_id, principal.id, command)
        await self.store.append(task_stream(task_id), 0, events, principal.id)
        return self.task(principal, task_id)

    async def update_task(
        self, principal: Principal, task_id: str, command: UpdateTask, if_match: int | None
    ) -> Task:
        """Change a task; with `if_match`, only if it is still at that version."""
        await self._write(
            principal,
            task_id,
            lambda task, _: update_task(task, command, if_match),
            retry=if_match is None,
        )
        return self.task(principal, task_id)

    async def delete_task(self, principal: Principal, task_id: str, if_match: int | None) -> None:
        """Delete a task; with `if_match`, only if it is still at that version."""
        await self._write(
            principal,
            task_id,
            lambda task, _: delete_task(task, if_match),
            retry=if_match is None,
        )

    # Timers

    async def start_timer(self, principal: Principal, task_id: str, command: StartTimer) -> Task:
        """Start a new countdown run on the task."""
        run = self._make_id()
        await self._write(
            principal,
            task_id,
            lambda task, clock: start_timer(task, clock, command, run, self.clock()),
        )
        return self.task(principal, task_id)

    async def pause_timer(self, principal: Principal, task_id: str) -> Task:
        """Pause the running countdown."""
        return await self._timer_command(principal, task_id, pause_timer)

    async def resume_timer(self, principal: Principal, task_id: str) -> Task:
        """Resume the paused countdown."""
        return await self._timer_command(principal, task_id, resume_timer)

    async def stop_timer(self, principal: Principal, task_id: str) -> Task:
        """Stop the countdown; the task has no timer again."""
        return await self._timer_command(principal, task_id, stop_timer)

    async def _timer_command(
        self, principal: Principal, task_id: str, decision: TimerDecision
    ) -> Task:
        await self._write(
            principal, task_id, lambda task, clock: decision(task, clock, self.clock())
        )
        return self.task(principal, task_id)

    async def finish_timer(self, task_id: str, run: str, due: float) -> bool:
        """Finish `run` at its due time, if it is still running and due then (the supervisor's
        call); whether it finished now."""
        for _ in range(MAX_ATTEMPTS):
            task = self.model.board.live.get(task_id)
            events = finish_timer(self.model.board.clocks.get(task_id), run, due)
            if task is None or not events:
                return False
            try:
                await self.store.append(task_stream(task_id), task.version, events, "system")
            except VersionConflict:
                continue  # a pause or stop may have won the race: decide again
            return True
        return False

    async def _write(
        self,
        principal: Principal,
        task_id: str,
        decide: Callable[[Task | None, RunClock | None], Sequence[BaseEvent]],
        *,
        retry: bool = True,
    ) -> None:
        """Decide on the current state and append; decide again if another write won the race."""
        board = self.model.board
        if board.task(principal.id, task_id) is None:
            await self.store.catch_up()  # a task made through another instance a moment ago
        for _ in range(MAX_ATTEMPTS):
            task = board.task(principal.id, task_id)
            events = decide(task, board.clocks.get(task_id) if task is not None else None)
            if not events:
                return
            assert task is not None  # decisions refuse a missing task
            try:
                await self.store.append(task_stream(task_id), task.version, events, principal.id)
            except VersionConflict:
                if not retry:
                    raise
                continue
            return
        raise VersionConflict(task_stream(task_id), -1, -1)
