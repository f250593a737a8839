"""Domain errors and their one mapping to gRPC status codes.

Agent and domain code raise these (no gRPC imports there); the server bootstrap's interceptor turns
them into status codes with the message intact. Any other exception becomes INTERNAL with a
generic message and a full log entry. Messages say what is wrong and what to change.
"""

from __future__ import annotations

import grpc


class TrainerAgentError(Exception):
    """Base class: an error whose message a user can act on."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(TrainerAgentError):
    """The caller's input is wrong; the message says what to change."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(TrainerAgentError):
    """A named thing (job, deployment, artifact) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(TrainerAgentError):
    """The thing exists but is in the wrong state for this call."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(TrainerAgentError):
    """A limit was reached (size, count, ports)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class PermissionDenied(TrainerAgentError):
    """The caller may not do this (a path outside the allowed roots, a missing right)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(TrainerAgentError):
    """No valid API key."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(TrainerAgentError):
    """A dependency (NATS, another service) cannot be reached right now; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE


class DataError(TrainerAgentError):
    """A problem in the content of a dataset, found while preparing it: the job ends FAILED."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NeedsInput(TrainerAgentError):
    """The data leaves a choice open that only the user can make (which column is the label).

    Not a failure: the job waits in NEEDS_INPUT with ``questions`` (dicts with ``id``, ``text`` and
    optional ``choices``), and a reply by question id lets it go on. Question ids the Task agent
    applies: ``label_column``, ``text_column``, ``task_type``.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, questions: list[dict]) -> None:
        super().__init__(message)
        if not questions:
            raise ValueError("NeedsInput needs at least one question")
        self.questions = questions


class TrainingError(TrainerAgentError):
    """Training could not produce a model (every trial failed)."""

    code = grpc.StatusCode.INTERNAL


INTERNAL_MESSAGE = "internal error; the service log has the details (look for the request id)"


def from_rpc_error(exc: grpc.aio.AioRpcError) -> TrainerAgentError:
    """Another service's status code and message, carried through this one unchanged."""
    error = TrainerAgentError(exc.details() or exc.code().name)
    error.code = exc.code()
    return error
