"""AWS error codes, classified once for every AWS caller (the providers and the
DynamoDB state store). Codes only: nothing here imports an SDK."""

from __future__ import annotations

# The service asks us to slow down.
THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "TooManyUpdates",
        "SlowDown",
        "ProvisionedThroughputExceededException",
    }
)
# The service failed or timed out this once; the same request may succeed.
SERVER = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# Another write to the same resource is still in progress.
CONFLICT = frozenset({"PriorRequestNotComplete", "ConcurrentModificationException"})
# Our credentials do not work here (now): no retry helps, but it is not our request's fault.
CREDENTIALS = frozenset(
    {
        "AccessDeniedException",
        "ExpiredTokenException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
    }
)

RETRYABLE = THROTTLING | SERVER | CONFLICT
