"""Errors the server returns, with TF Serving's status codes and their HTTP statuses."""

from __future__ import annotations

# canonical status code -> HTTP status, as TF Serving's REST handler maps them
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
# TensorFlow's OpError.error_code numbers are the same canonical codes
CODE_BY_NUMBER = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


class ServingError(Exception):
    """A request failed; `code` is the canonical status name (e.g. "INVALID_ARGUMENT")."""

    def __init__(self, code: str, message: str):
        if code not in HTTP_STATUS:
            raise ValueError(f"Unknown status code. Received: code={code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def from_op_error(error) -> ServingError:
    """A TensorFlow `OpError` as a ServingError, its message cut to the part a client can act on."""
    code = CODE_BY_NUMBER.get(getattr(error, "error_code", 2), "UNKNOWN")
    lines = [line.strip() for line in str(error.message).splitlines()]
    kept = [
        line
        for line in lines
        if line
        and not line.startswith(
            ("Detected at node", "Graph execution error", "[[", 'File "', "Stack trace", "<stack traces")
        )
    ]
    message = kept[0] if kept else str(error.message).strip()
    if " [[" in message:
        message = message.split(" [[")[0]
    return ServingError(code, message)
