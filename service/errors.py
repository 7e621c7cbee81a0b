"""The service's exception tree, mapped to HTTP in one place (``service.app``).

::

    ServiceError                 500 (a bug if it ever reaches a client)
    +-- InputError               4xx: something about the request is wrong
    |   +-- NotFound             404
    |   +-- NotCardiacLGE        422 not_cardiac_lge: not a short-axis LGE stack of a heart
    +-- Overloaded               503 with Retry-After

Each error carries a stable machine-readable ``code`` and a message that
names the rule, the value found and what to send instead. The response body
is the contract's ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None,
                 status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InputError(ServiceError):
    status_code = 400
    code = "bad_request"


class NotFound(InputError):
    status_code = 404
    code = "not_found"


class NotCardiacLGE(InputError):
    """Another body part, another MR sequence, noise: nothing is stored or pushed."""

    status_code = 422
    code = "not_cardiac_lge"


class Overloaded(ServiceError):
    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
