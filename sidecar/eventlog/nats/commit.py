"""Group commit: queued plans go out together as one JetStream atomic batch.

The committer tasks take the queue in order, publish each group (one message alone skips the
batch protocol), hand every member its stream sequences, and announce the new head.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import nats.errors
from nats.aio.client import Client as NatsClient

from sidecar.eventlog.nats.codec import (
    HDR_BATCH_COMMIT,
    HDR_BATCH_ID,
    HDR_BATCH_SEQ,
    HDR_EXPECTED_SUBJECT,
    HDR_EXPECTED_SUBJECT_SEQ,
    HDR_MSG_ID,
    encode_event,
    json_reply,
)
from sidecar.eventlog.nats.errors import (
    CONNECTION_ERRORS,
    STALE_ERRORS,
    StalePlan,
    TransientFailure,
)
from sidecar.eventlog.nats.lookups import JetStreamLookups
from sidecar.eventlog.nats.plans import PendingAppend, Plan
from sidecar.eventlog.nats.settings import MAX_ATOMIC_BATCH_EVENTS
from sidecar.eventlog.port import StoreError

_log = logging.getLogger(__name__)


class GroupCommit(JetStreamLookups):
    """Queue a plan, commit groups of plans as atomic batches, announce the head."""

    async def _commit(self, plan: Plan, attempts: set[str]) -> list[int]:
        """Queue ``plan`` for the next group commit; the stream sequences of ``plan.new``.

        Group commit: plans queued by concurrent appends travel together in one atomic
        batch (up to ``MAX_ATOMIC_BATCH_EVENTS`` messages), so one JetStream commit (on R1:
        one fsync) covers many callers. At most ``max_inflight_batches`` batches are in
        flight; while they are, new plans queue up and form the next, larger group. A refused
        group is refused for each of its members, which then plan again on their own.
        """
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append(PendingAppend(plan, attempts, future))
        if self._committers < self._settings.max_inflight_batches:
            self._committers += 1
            task = asyncio.get_running_loop().create_task(self._run_committer())
            self._committer_tasks.add(task)
            task.add_done_callback(self._committer_tasks.discard)
        return await future

    async def _run_committer(self) -> None:
        group: list[PendingAppend] = []
        try:
            while self._pending:
                group = []
                size = 0
                while self._pending:
                    nxt = self._pending[0]
                    if group and size + len(nxt.plan.new) > MAX_ATOMIC_BATCH_EVENTS:
                        break
                    self._pending.popleft()
                    if nxt.future.done():  # its caller was cancelled while it waited
                        continue
                    group.append(nxt)
                    size += len(nxt.plan.new)
                if not group:
                    continue
                batch_id = uuid.uuid4().hex
                for member in group:
                    member.attempts.add(batch_id)
                started = time.perf_counter()
                try:
                    positions = await self._publish([m.plan for m in group], batch_id)
                except (StalePlan, TransientFailure, StoreError) as exc:
                    _log.debug("group commit of %d appends not accepted: %r", len(group), exc)
                    for member in group:
                        if not member.future.done():
                            member.future.set_exception(type(exc)(str(exc)))
                    continue
                _log.debug(
                    "group commit: %d events of %d appends in %.1f ms",
                    len(positions), len(group), (time.perf_counter() - started) * 1000,
                )
                offset = 0
                for member in group:
                    count = len(member.plan.new)
                    if not member.future.done():
                        member.future.set_result(positions[offset : offset + count])
                    offset += count
                self._note_head(positions[-1])
                nc = self._nc
                if nc is not None:
                    await self._announce(nc, positions[-1])
        except BaseException as exc:  # cancelled by close(), or a bug: nobody may hang
            stranded = [*group, *self._pending]
            self._pending.clear()
            for member in stranded:
                if not member.future.done():
                    member.future.set_exception(StoreError(f"commit abandoned: {exc!r}"))
            raise
        finally:
            self._committers -= 1

    async def _publish(self, plans: list[Plan], batch_id: str) -> list[int]:
        """Send the new events of ``plans`` as one atomic batch; their stream sequences."""
        nc = self._nc
        assert nc is not None
        messages: list[tuple[str, bytes, dict[str, str]]] = []
        recorded_at_ns = self._last_recorded_ns = max(time.time_ns(), self._last_recorded_ns)
        for plan in plans:
            plan.recorded_at_ns = recorded_at_ns
            expected: set[str] = set()
            for _, event in plan.new:
                headers = {HDR_BATCH_ID: batch_id, HDR_BATCH_SEQ: str(len(messages) + 1)}
                if event.stream not in expected:
                    expected.add(event.stream)
                    head = plan.expectations[event.stream]
                    headers[HDR_EXPECTED_SUBJECT_SEQ] = str(head.sequence)
                    headers[HDR_EXPECTED_SUBJECT] = self._subjects.stream_all(event.stream)
                messages.append(
                    (self._subjects.slot(event.stream, event.version),
                     encode_event(event, recorded_at_ns), headers)
                )
        if len(messages) == 1:
            # One message is atomic by itself: skip the batch protocol (JetStream stages
            # every atomic batch in a temporary store, a fixed cost per batch). The attempt id
            # goes in Nats-Msg-Id, so a retry can recognise its own earlier write.
            headers = messages[0][2]
            del headers[HDR_BATCH_SEQ]
            headers[HDR_MSG_ID] = headers.pop(HDR_BATCH_ID)
        else:
            messages[-1][2][HDR_BATCH_COMMIT] = "1"
        try:
            for subject, body, headers in messages[:-1]:
                await nc.publish(subject, body, headers=headers)
            subject, body, headers = messages[-1]
            reply = await nc.request(
                subject, body, timeout=self._settings.request_timeout_s, headers=headers
            )
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            raise TransientFailure(f"no acknowledgement of the batch: {exc!r}") from None
        except nats.errors.NoRespondersError:
            raise TransientFailure("no JetStream stream leader answered (election?)") from None
        except CONNECTION_ERRORS as exc:
            if self._closed:
                raise StoreError("the store is closed") from None
            raise TransientFailure(f"connection problem: {exc!r}") from None
        ack = json_reply(reply.data)
        error = ack.get("error")
        if error:
            err_code = int(error.get("err_code") or 0)
            description = str(error.get("description") or error)
            if err_code in STALE_ERRORS:
                raise StalePlan(description)
            if int(error.get("code") or 0) >= 500:
                raise TransientFailure(f"{description} (err_code {err_code})")
            raise StoreError(f"JetStream refused the batch: {description} (err_code {err_code})")
        if ack.get("duplicate"):  # cannot happen (attempt ids are unique); never trust it
            raise StalePlan(f"JetStream called attempt {batch_id} a duplicate")
        count = 1 if len(messages) == 1 else int(ack.get("count") or 0)
        last = int(ack.get("seq") or 0)
        if count != len(messages) or last < count:
            raise StoreError(f"JetStream acknowledged {count} of {len(messages)} events ({ack})")
        return list(range(last - count + 1, last + 1))

    async def _announce(self, nc: NatsClient, head: int) -> None:
        """Tell other adapters (replicas) the head moved; best effort (they also poll)."""
        with contextlib.suppress(nats.errors.Error):
            await nc.publish(self._subjects.head, str(head).encode())
