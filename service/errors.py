"""The service's exceptions, all of them; mapped to HTTP in one place (``service.api.errors``).

::

    ServiceError                 500 (a bug if it ever reaches a client)
    +-- InternalFailure          500 internal: a bug already logged under an error id
    +-- InputError               4xx: something about the request is wrong
    |   +-- Unauthorized         401 unauthorized: no or a wrong API key
    |   +-- NotFound             404
    |   +-- NotCardiacLGE        422 not_cardiac_lge: not a short-axis LGE stack of a heart
    |   +-- ConflictingInstances 422 conflicting_instances: one instance, two different images
    +-- Overloaded               503 with Retry-After
    |   +-- NotEncodedYet        503 encoding: the SEG or SR of an answered analysis is not made yet
    |   +-- ShuttingDown         503 shutting_down: stopping (SIGTERM); ask the next process
    |   +-- InsufficientStorage  507 insufficient_storage: a store's disk is full; nothing kept
    +-- StartupError             the service does not start (never an answer)
        +-- ModelStoreError      model_store_invalid: the manifest and the files disagree
        +-- DataDirInUse         data_dir_in_use: another process serves this DATA_DIR

Each error carries a stable machine-readable ``code`` and a message that
names the rule, the value found and what to send instead. The response body
is the contract's ``{"error": {"code", "message"}}``.

Three more are outcomes recorded where they happen, never HTTP errors:
:class:`Refused` (one STOW-RS instance not kept: a FailedSOPSequence item
with its PS3.4 reason), :class:`SeriesFull` (the inbox's limit, refused as
0xA700) and :class:`PushError` (a store-back not delivered: recorded and
retried). A ``ValueError`` from a pure function means its caller broke its
contract (a bug), not bad input: input is checked before it gets there.
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


class Unauthorized(InputError):
    status_code = 401
    code = "unauthorized"


class NotFound(InputError):
    status_code = 404
    code = "not_found"


class NotCardiacLGE(InputError):
    """Another body part, another MR sequence, noise: nothing is stored or pushed."""

    status_code = 422
    code = "not_cardiac_lge"


class ConflictingInstances(InputError):
    """Two decodable copies of one SOP instance with different pixel data: the service does
    not guess which image the radiologist meant. 422, since the request is well formed but
    says two things (409 is STOW-RS's "nothing stored")."""

    status_code = 422
    code = "conflicting_instances"


class Overloaded(ServiceError):
    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotEncodedYet(Overloaded):
    """The analysis is stored and answered; its SEG and SR are still being encoded."""

    code = "encoding"


class ShuttingDown(Overloaded):
    """The process is stopping (SIGTERM): it finishes what it holds and takes nothing new."""

    code = "shutting_down"


class InsufficientStorage(Overloaded):
    """A store's filesystem is full (ENOSPC, EDQUOT, SQLITE_FULL) or below MIN_FREE_BYTES:
    nothing of the series is kept; it works again, by itself, once space is freed
    (``service.store.space``)."""

    status_code = 507
    code = "insufficient_storage"


class InternalFailure(ServiceError):
    """A bug met in the background (an encoding that failed its last try), logged with its
    traceback under ``error_id``: answered 500 ``internal`` with that id, not a new one."""

    code = "internal"

    def __init__(self, message: str, *, error_id: str) -> None:
        super().__init__(message)
        self.error_id = error_id

    def body(self) -> dict:
        return {"error": {"code": self.code, "id": self.error_id, "message": self.message}}


class StartupError(ServiceError):
    """A setting or the model store makes serving impossible: the process stops."""

    code = "startup_failed"


class ModelStoreError(StartupError):
    code = "model_store_invalid"


class DataDirInUse(StartupError):
    """Another live process holds the data folder's lock (``service.store.lock``)."""

    code = "data_dir_in_use"


class Refused(Exception):
    """One STOW-RS instance the server will not keep, with its PS3.4 failure reason."""

    def __init__(self, reason: int, message: str, sop_class_uid: str = "",
                 sop_instance_uid: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


class SeriesFull(Exception):
    """The series already holds as many instances as one analysis may read (MAX_FILES)."""


class PushError(Exception):
    """The destination did not take a store-back (unreachable, or it refused instances)."""
