"""How a Redis failure is classified: an outage to wait out (:class:`TransportUnavailable`, with a ``reason``), a
refusal of the ACL (:class:`TransportPermissionError`, naming the role's user, the command and the key), or a
genuine error (redis-py's, re-raised).

Blocking calls always use a timeout below the socket timeout. Connection errors are retried with exponential
back-off and jitter by redis-py (:mod:`fbvision.core.transport.client`); when the server stays away,
:class:`TransportUnavailable` is raised and the caller's loop backs off and tries again (no stage dies from an
outage). Error replies that mean "not now" rather than "wrong command" - OOM (maxmemory under noeviction),
READONLY (a replica after a failover), MISCONF (a failed snapshot), LOADING, MASTERDOWN, BUSY, NOGROUP (streams gone
after a restart without persistence: the groups are recreated on the next read) - are outages too, with a
``reason`` (:func:`outage_reason`), which the stage loop counts as ``redis_unavailable:<reason>``.
"""

from __future__ import annotations

import functools
import re

from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fbvision.core.transport.keys import OPERATION_KEYS


class TransportUnavailable(RuntimeError):
    """Redis could not be reached after the retries, or refused the command for a passing reason (out of memory,
    a read-only replica after a failover...); the caller should back off and try again.

    ``reason`` says which (one of :data:`OUTAGE_REASONS`), so stages count outages per reason.
    """

    def __init__(self, message: str, reason: str = "unreachable"):
        super().__init__(message)
        self.reason = reason


class TransportError(RuntimeError):
    """A Redis command that retrying cannot cure, raised by the transport with what it was doing."""


class TransportPermissionError(TransportError):
    """Redis's ACL refused a command (NOPERM): the stage's user is not granted it - a deployment error (the user's
    ACL rule, :mod:`fbvision.core.transport.acl`), or a stage doing what its role must not. Names the user (the
    role), the transport method, and the key or command Redis refused."""

    def __init__(self, message: str, *, user: str | None, operation: str, refused: str | None,
                 keys: tuple[str, ...] = ()):
        super().__init__(message)
        self.user = user
        self.operation = operation
        #: What Redis named: ``command 'xadd'``, or (Redis >= 7.2) ``key 'alerts:outbox'``; None when it named neither.
        self.refused = refused
        #: The keys the operation touches (namespaced), from :data:`fbvision.core.transport.keys.OPERATION_KEYS`.
        self.keys = keys


#: Why Redis is "unavailable": not reached (``unreachable``, ``timeout``), or an error reply that means "not now"
#: rather than "wrong command": the stage backs off and retries, exactly as for a lost connection.
OUTAGE_REASONS = ("unreachable", "timeout", "loading", "oom", "readonly", "misconf", "masterdown", "busy",
                  "clusterdown", "tryagain", "noreplicas", "nogroup")

# Reply codes as they arrive (first word of the reply; redis-py keeps unknown codes in the message, and a
# pipeline prefixes the reply with "Command # n (...) of pipeline caused error: ").
_REPLY_CODE = re.compile(r"(?:^|caused error: )([A-Z]{4,})\b")
_OUTAGE_REPLY_CODES = {
    "OOM": "oom",  # maxmemory reached under noeviction: frees up as consumers catch up and streams are trimmed
    "READONLY": "readonly",  # we talk to a replica (failover in progress, or DNS still pointing at the old master)
    "MISCONF": "misconf",  # stop-writes-on-bgsave-error after a failed snapshot, until a save succeeds
    "LOADING": "loading",  # the dataset is being loaded after a restart
    "MASTERDOWN": "masterdown",  # a replica with replica-serve-stale-data no, link to its master down
    "BUSY": "busy",  # a script runs past lua-time-limit
    "CLUSTERDOWN": "clusterdown",
    "TRYAGAIN": "tryagain",
    "NOREPLICAS": "noreplicas",  # min-replicas-to-write not met
    "NOGROUP": "nogroup",  # the stream or its group vanished (a restart without persistence): recreated next read
    "UNBLOCKED": "nogroup",  # a blocked XREADGROUP whose stream was deleted under it (or CLIENT UNBLOCK ERROR)
}
# "NOPERM User fbv-camera has no permissions to access the 'alerts:outbox' key" (also "... to run the 'xadd'
# command"), in a script: "... script: ..., on @user_script:..."; from a pipeline with the pipeline's prefix.
_NOPERM_OBJECT = re.compile(r"to (?:access|run) the '([^']*)' (key|command|channel)")


def outage_reason(exc: BaseException) -> str | None:
    """The outage reason of an error reply, or None for an error that retrying cannot cure (a bug, bad data)."""
    if isinstance(exc, OutOfMemoryError):
        return "oom"
    if isinstance(exc, ReadOnlyError):
        return "readonly"
    if isinstance(exc, BusyLoadingError):
        return "loading"
    if isinstance(exc, MasterDownError):
        return "masterdown"
    if isinstance(exc, ClusterDownError):
        return "clusterdown"
    if isinstance(exc, TryAgainError):
        return "tryagain"
    if isinstance(exc, ResponseError):
        match = _REPLY_CODE.search(str(exc))
        if match:
            return _OUTAGE_REPLY_CODES.get(match.group(1))
    return None


def is_noperm(exc: BaseException) -> bool:
    """An ACL refusal: redis-py's NoPermissionError, or a NOPERM reply inside a script or pipeline error."""
    return isinstance(exc, NoPermissionError) or (isinstance(exc, ResponseError) and "NOPERM" in str(exc))


def permission_error(exc: BaseException, user: str | None, operation: str,
                     keys: tuple[str, ...] = ()) -> TransportPermissionError:
    match = _NOPERM_OBJECT.search(str(exc))
    refused = f"{match.group(2)} {match.group(1)!r}" if match else None
    who = f"user {user!r}" if user else "the default user"
    on = f" on {', '.join(keys)}" if keys else ""
    return TransportPermissionError(
        f"redis refused {operation}{on} for {who} (the role's ACL does not grant it): "
        f"{refused or 'a key'} - {exc}", user=user, operation=operation, refused=refused, keys=keys)


def guard(fn):
    """Turn connection failures that survived redis-py's retries into TransportUnavailable, NOPERM into
    TransportPermissionError. The decorated method's object has ``safe_urls``, ``acl_user`` and ``_groups_ready``
    (:class:`fbvision.core.transport.client.Connection`)."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except AuthenticationError:
            raise  # a wrong password is a configuration error, not an outage: no point in waiting
        except ResponseError as exc:
            if is_noperm(exc):
                keys = tuple(self.keys.pattern(n) for n in OPERATION_KEYS.get(fn.__name__, ()))
                raise permission_error(exc, self.acl_user, fn.__name__, keys) from exc
            reason = outage_reason(exc)
            if reason is None:
                raise  # a genuine error (wrong type, bad argument): retrying would fail the same way
            if reason == "nogroup":
                # The stream or its consumer group is gone (Redis restarted without persistence, or someone
                # deleted it): forget that the groups exist, so the next read creates them again.
                self._groups_ready.clear()
            raise TransportUnavailable(f"redis at {self.safe_urls} refused: {exc}", reason) from exc
        except (RedisConnectionError, RedisTimeoutError, OSError, RedisClusterException) as exc:
            # RedisClusterException: no node of the cluster answered (all down, slots uncovered).
            reason = "loading" if isinstance(exc, BusyLoadingError) else (
                "timeout" if isinstance(exc, RedisTimeoutError) else "unreachable")
            raise TransportUnavailable(f"redis at {self.safe_urls} unavailable: {exc}", reason) from exc

    return wrapper
