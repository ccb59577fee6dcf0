"""Each role's Redis ACL rule, generated from :mod:`fbvision.core.transport.keys` (the key table), so the documented
users (docs/deploy.md, checked against :func:`acl_rules` by ``tests/security/test_acl_rules.py``) and the keys the
code uses cannot drift apart.

A rule is ``reset on >PASSWORD`` then key patterns (``~`` read/write, ``%R~`` read-only, ``%W~`` write-only), the
commands one by one (``+@stream`` would include ``XGROUP DESTROY``, ``+@hash`` ``HDEL``), and Redis 7 *selectors*
(``(...)``: a second set of keys with commands of their own) where a role may run a command on some keys only: the
camera user may ask a result stream for its group's backlog (``XINFO GROUPS``) and nothing else of it. Redis checks
every command a Lua script calls against the same user, so a script cannot widen the grant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fbvision.core.transport import keys as k

#: What every stage's connection sends: PING (readiness), CLIENT SETNAME (``fbv-<role>``), TIME (the reference
#: clock), and the scripts (EVALSHA; SCRIPT LOAD/EXISTS: redis-py loads a script the server lost).
BASE_COMMANDS = ("ping", "client|setname", "time", "evalsha", "script|load", "script|exists")
_COUNTERS = ("hset", "hget", "hincrby", "hincrbyfloat", "pexpire")  # stats:<stage> (+ :w:<writer>), snapshots


@dataclass(frozen=True)
class Selector:
    """Keys (``(mode, name)``: mode ``~``, ``%R~`` or ``%W~``; a name ending ``*`` is a prefix) and commands."""

    keys: tuple[tuple[str, str], ...]
    commands: tuple[str, ...]


@dataclass(frozen=True)
class Role:
    user: str
    what: str
    keys: tuple[tuple[str, str], ...]
    commands: tuple[str, ...]
    selectors: tuple[Selector, ...] = field(default=())
    base: bool = True


def _stats(stage: str) -> tuple[tuple[str, str], ...]:
    return (("~", f"{k.STATS_PREFIX}{stage}"), ("~", f"{k.STATS_PREFIX}{stage}{k.STATS_WRITER_INFIX}*"))


ROLES: dict[str, Role] = {
    "camera": Role(
        "fbv-camera", "push frames, write its camera statuses and counters, read evidence requests",
        keys=(("~", k.FRAMES), ("~", f"{k.ONCE_PREFIX}*"), ("~", k.CAMERA_STATUS), ("~", f"{k.STATS_PREFIX}queue"),
              *_stats("camera"), ("~", k.SNAPSHOTS), ("%R~", k.EVIDENCE_REQUESTS)),
        commands=("xread", "rpush", "ltrim", "llen", "set", "get", *_COUNTERS),
        # the results' backlog (back-pressure, and at stop while it serves the last evidence requests): only
        # XINFO GROUPS of a result stream, never its entries
        selectors=(Selector((("%R~", f"{k.RESULTS_PREFIX}*"),), ("xinfo|groups",)),),
    ),
    "inference": Role(
        "fbv-inference", "pop frames, publish results, dead-letter bad frames",
        keys=(("~", k.FRAMES), ("~", f"{k.RESULTS_PREFIX}*"), ("~", f"{k.ONCE_PREFIX}*"), *_stats("inference"),
              ("~", k.DEAD_LETTER), ("~", k.SNAPSHOTS)),
        commands=("blpop", "lpop", "llen", "lpush", "ltrim", "xadd", "set", "get", *_COUNTERS),
    ),
    "logic": Role(
        "fbv-logic", "read/ack results, leases, episodes and baselines, write alerts and evidence requests",
        keys=(("~", f"{k.RESULTS_PREFIX}*"), ("~", k.OUTBOX), ("~", k.EVIDENCE_REQUESTS), ("~", "logic:*"),
              ("%R~", k.CAMERA_STATUS), *_stats("logic"), ("~", k.DEAD_LETTER), ("~", k.SNAPSHOTS)),
        commands=("multi", "exec", "discard", "xgroup|create", "xgroup|delconsumer", "xreadgroup", "xread",
                  "xautoclaim", "xack", "xadd", "xrange", "xrevrange", "xinfo|groups", "xinfo|consumers", "xpending",
                  "zadd", "zrange", "zrangebyscore", "zremrangebyscore", "zrem", "set", "get", "del", "pexpire",
                  "hset", "hget", "hgetall", "hincrby", "hincrbyfloat", "lpush", "ltrim"),
    ),
    "delivery": Role(
        "fbv-delivery", "read/ack/trim the outbox (its sink's group), dead-letter",
        keys=(("~", k.OUTBOX), *_stats("delivery"), ("~", k.DEAD_LETTER), ("~", k.SNAPSHOTS)),
        commands=("multi", "exec", "discard", "xgroup|create", "xreadgroup", "xautoclaim", "xack", "xdel", "xlen",
                  "xpending", "xinfo|groups", "xtrim", "xrange", "lpush", "ltrim", *_COUNTERS),
    ),
    "runner": Role(
        "fbv-runner", "read every key (dashboard, report, drain)",
        keys=(("%R~", "*"),),
        commands=("ping", "client|setname", "time", "llen", "lrange", "hgetall", "hget", "get", "zrange",
                  "xinfo|groups", "xpending", "xlen", "xrange"),
        base=False,
    ),
}
# "logic:*" above: the logic workers own every logic: key (leases, workers, episodes, baselines, time budgets).
assert all(name.startswith("logic:") for name in (k.LEASE_PREFIX, k.LOGIC_WORKERS, k.EPISODES, k.BASELINES,
                                                   k.TIME_BUDGETS))


def _patterns(pairs, keys: k.Keys) -> list[str]:
    return [f"{mode}{'*' if name == '*' else keys.pattern(name)}" for mode, name in pairs]


def acl_rule(role: str, namespace: str = "", password: str | None = None) -> list[str]:
    """The ``ACL SETUSER`` arguments after the user name for ``role`` (``password`` None: the placeholder
    ``>ROLE_PASSWORD`` of the docs)."""
    r = ROLES[role]
    keys = k.Keys(namespace)
    commands = (*BASE_COMMANDS, *r.commands) if r.base else r.commands
    out = ["reset", "on", f">{password if password is not None else role.upper() + '_PASSWORD'}",
           *_patterns(r.keys, keys), *(f"+{c}" for c in commands)]
    for s in r.selectors:
        out.append("(" + " ".join([*_patterns(s.keys, keys), *(f"+{c}" for c in s.commands)]) + ")")
    return out


def acl_line(role: str, namespace: str = "") -> str:
    """The documented line: ``ACL SETUSER fbv-<role> ...`` (a selector quoted, as redis-cli wants it)."""
    args = [f'"{a}"' if a.startswith("(") else a for a in acl_rule(role, namespace)]
    return " ".join(["ACL", "SETUSER", ROLES[role].user, *args])


def acl_rules(namespace: str = "") -> dict[str, str]:
    """user -> its documented ``ACL SETUSER`` line, every role."""
    return {r.user: acl_line(role, namespace) for role, r in ROLES.items()}
