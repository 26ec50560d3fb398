"""What the client raises: one tree, with the API's own message and, for a 422, its `fields`."""

from __future__ import annotations

from typing import Any

from asynctask.core.errors import AsyncTaskError


class APIError(AsyncTaskError):
    """Base of every error the client raises for a call that did not succeed."""


class APIConnectionError(APIError):
    """The API could not be reached, or the connection broke, and the retries ran out."""


class APITimeoutError(APIConnectionError):
    """The API did not answer within the client's timeout, and the retries ran out."""


class APIStatusError(APIError):
    """The API answered with an error status; `message` is its `error` text."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.body = body
        self.request_id = request_id
        super().__init__(f"HTTP {status}: {message}")


class BadRequestError(APIStatusError):
    """400: the body is not JSON."""


class AuthenticationError(APIStatusError):
    """401: no token, or a wrong one (ASYNCTASK_TOKEN)."""


class NotFoundError(APIStatusError):
    """404: no such task (or route)."""


class ConflictError(APIStatusError):
    """409: the task's state does not allow the change, or a create's twin is still in flight."""


class PayloadTooLargeError(APIStatusError):
    """413: the body is larger than the server's api.max_body_bytes."""


class ValidationError(APIStatusError):
    """422: a field breaks a rule; `fields` maps each one (e.g. "tasks.3.priority") to messages."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(status, message, body=body, request_id=request_id)
        raw = body.get("fields") if isinstance(body, dict) else None
        self.fields: dict[str, list[str]] = {
            str(key): [str(m) for m in value] if isinstance(value, list) else [str(value)]
            for key, value in (raw or {}).items()
        }

    def __str__(self) -> str:
        named = "; ".join(f"{key}: {' '.join(value)}" for key, value in self.fields.items())
        return f"{super().__str__()} ({named})" if named else super().__str__()


class UnavailableError(APIStatusError):
    """503: the API's database is unavailable (retried first, with backoff)."""


class ServerError(APIStatusError):
    """Any other 5xx."""


class PartialBatchError(APIError):
    """create_many failed part way: the batches before the failing one are committed.

    `ids` holds their ids in order; `error` (also the cause) is what stopped the rest.
    """

    def __init__(self, ids: list[int], error: APIError) -> None:
        self.ids = ids
        self.error = error
        super().__init__(f"{len(ids)} tasks were created before this failure: {error}")


class WaitTimeoutError(APIError):
    """wait() timed out before the task reached a final state; `task` is its last state."""

    def __init__(self, task: Any, timeout: float) -> None:
        self.task = task
        self.timeout = timeout
        super().__init__(f"task {task.id} is still {task.state} after {timeout:g} s")


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    503: UnavailableError,
}


def status_error(
    status: int, message: str, body: Any = None, request_id: str | None = None
) -> APIStatusError:
    """The exception for an error answer of this status."""
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else APIStatusError)
    return kind(status, message, body=body, request_id=request_id)
