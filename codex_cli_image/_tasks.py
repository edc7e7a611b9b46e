"""One small task-group pattern the client and the MCP server share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


async def beside(
    work: Callable[[], Awaitable[T]],
    helper: Callable[[anyio.CancelScope], Coroutine[Any, Any, None]],
) -> tuple[T] | None:
    """``work()`` with ``helper(scope)`` running beside it until it ends.

    The helper may cancel ``scope`` to end the work: then None. Otherwise ``(result,)``; an
    exception of the work propagates as itself (out of a task group it would be grouped), and a
    cancellation from outside as a cancellation.
    """
    done: list[T] = []
    failure: Exception | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(helper, tasks.cancel_scope)
        try:
            done.append(await work())
        except Exception as exc:
            failure = exc
        finally:
            tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return (done[0],) if done else None
