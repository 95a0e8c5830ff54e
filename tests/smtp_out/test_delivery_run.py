"""The service as it runs in ``mssante serve``: recovery after a crash, notify(), stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from outbound_helpers import PEER_DOMAIN, Operator, Receiver

from mssante.queue.store import claim_due
from mssante.store.models import QueueStatus

MakeOperator = Callable[..., Operator]
MARTIN = f"docteur.martin@{PEER_DOMAIN}"


async def _until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _crash_while_delivering(op: Operator, recipients: list[str]) -> int:
    """A message claimed by a worker that then died (kill -9): left in flight."""
    queue_id = op.submit(recipients)
    claim_due(op.db, worker_id="crashed-process", limit=100, now=op.clock())
    assert {s.status for s in op.service.queue.recipients(queue_id)} == {QueueStatus.IN_FLIGHT}
    return queue_id


async def test_recover_redelivers_what_a_crash_left_in_flight(
    make_operator: MakeOperator, receiver: Receiver
) -> None:
    op = make_operator()
    queue_id = _crash_while_delivering(op, [MARTIN])

    assert (await op.service.deliver_due_once()).delivered == 0  # in flight: not due
    assert op.service.queue.recover(op.clock()) == 1
    assert (await op.service.deliver_due_once()).delivered == 1

    assert [m.rcpt_tos for m in receiver.messages] == [[MARTIN]]
    [state] = op.service.queue.recipients(queue_id)
    assert (state.status, state.claimed_by) == (QueueStatus.DELIVERED, "")


async def test_run_recovers_at_start_then_delivers_on_notify(
    make_operator: MakeOperator, receiver: Receiver
) -> None:
    op = make_operator()
    crashed = _crash_while_delivering(op, [MARTIN])
    stop = asyncio.Event()
    running = asyncio.create_task(op.service.run(stop))
    try:
        await _until(lambda: len(receiver.messages) == 1)  # recovered at start, then sent

        # The submission server runs in another thread: it enqueues, then notifies.
        submitted: list[int] = []

        def submit_and_notify() -> None:
            submitted.append(op.submit([f"docteur.durand@{PEER_DOMAIN}"]))
            op.service.notify()

        thread = threading.Thread(target=submit_and_notify)
        thread.start()
        thread.join()
        await _until(lambda: len(receiver.messages) == 2)
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)

    for queue_id in (crashed, *submitted):
        assert [s.status for s in op.service.queue.recipients(queue_id)] == [QueueStatus.DELIVERED]


async def test_stop_gives_back_nothing_in_flight(
    make_operator: MakeOperator, receiver: Receiver
) -> None:
    op = make_operator()
    receiver.handler.rcpt_replies[MARTIN] = "451 4.3.0 later"
    queue_id = op.submit([MARTIN])
    stop = asyncio.Event()
    running = asyncio.create_task(op.service.run(stop))
    await _until(lambda: receiver.handler.mail_commands == 1)
    stop.set()
    await asyncio.wait_for(running, 15)

    [state] = op.service.queue.recipients(queue_id)
    assert state.status is QueueStatus.DEFERRED
    assert state.claimed_by == ""
