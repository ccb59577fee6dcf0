"""Each role's ACL rule is generated from the key table (fbvision/core/transport/acl.py), the documented users are
exactly those rules, and on a real redis-server each role's user is refused what is outside its role - through the
transport, with a TransportPermissionError naming the user, the operation and the keys."""

from __future__ import annotations

import re
import secrets

import pytest
import redis

from fbvision.core.config import REPO_ROOT
from fbvision.core.transport import (
    CameraTransport,
    DeliveryTransport,
    LogicTransport,
    Transport,
    TransportPermissionError,
)
from fbvision.core.transport.acl import ROLES, acl_rule, acl_rules
from fbvision.run.redis_server import EmbeddedRedis

pytestmark = pytest.mark.timeout(60)


def test_the_documented_users_are_the_generated_rules():
    documented = re.findall(r"^(ACL SETUSER (fbv-[a-z]+) .*)$", (REPO_ROOT / "docs" / "deploy.md").read_text(),
                            flags=re.MULTILINE)
    assert {user: line for line, user in documented} == acl_rules()


def test_a_namespace_prefixes_every_pattern():
    rule = acl_rule("camera", namespace="site1", password="pw")
    patterns = [a for a in rule if "~" in a]
    assert patterns and all("{site1}:" in p for p in patterns), patterns
    assert "(%R~{site1}:batch_results:* +xinfo|groups)" in rule


@pytest.fixture(scope="module")
def acl_server():
    """A redis-server with every role's user (random passwords) created from the generated rules; namespaces
    '' and 'site1'."""
    with EmbeddedRedis() as server:
        admin = server.client()
        passwords = {}
        for role in ROLES:
            for ns in ("", "site1"):
                user = ROLES[role].user + (f"-{ns}" if ns else "")
                passwords[(role, ns)] = pw = secrets.token_urlsafe(16)
                assert admin.execute_command("ACL", "SETUSER", user, *acl_rule(role, ns, password=pw))
        yield server, admin, passwords
        admin.close()


def url(acl_server, role: str, ns: str = "") -> str:
    server, _admin, passwords = acl_server
    return f"redis://{ROLES[role].user}{'-' + ns if ns else ''}:{passwords[(role, ns)]}@127.0.0.1:{server.port}/0"


def refused(call) -> TransportPermissionError:
    with pytest.raises(TransportPermissionError) as info:
        call()
    return info.value


@pytest.mark.parametrize("ns", ["", "site1"])
def test_each_role_does_its_part_and_is_refused_the_rest(acl_server, ns):
    _server, admin, _ = acl_server
    admin.flushall()
    # logic seeds a result stream (as inference would) and an evidence request; its own part works
    inference = Transport(url(acl_server, "inference", ns), namespace=ns)
    inference.publish_results([("barn-a", b"result")])
    logic = LogicTransport(url(acl_server, "logic", ns), namespace=ns)
    logic.request_evidence([b"{}"])
    assert logic.read_results([logic.partition_of("barn-a")], pending=False, count=10)

    camera = CameraTransport(url(acl_server, "camera", ns), namespace=ns)
    camera.push_frames([b"frame"], once=["barn-a\x1f1\x1f1.0"])
    camera.set_camera_status("barn-a", {"state": "online"})
    assert camera.result_backlog() >= 0 and len(camera.read_evidence_requests("0")) == 1
    # ... but the camera user cannot read results, write alerts, take a lease
    whole = Transport(url(acl_server, "camera", ns), namespace=ns)
    error = refused(lambda: whole.add_alerts([b"{}"]))
    assert error.user.startswith("fbv-camera") and error.operation == "add_alerts"
    assert error.keys == (whole.keys.outbox,) and "fbv-camera" in str(error) and whole.keys.outbox in str(error)
    error = refused(lambda: whole.read_results([0], pending=False, count=1))
    assert any("batch_results:*" in k for k in error.keys) and "fbv-camera" in str(error)
    error = refused(lambda: whole.try_lease(0, "me", 5))
    assert error.keys == (whole.keys.lease(0)[:-1] + "*",)
    raw = whole.client
    for command in (("XREAD", "STREAMS", whole.keys.results(0), "0"), ("XRANGE", whole.keys.results(0), "-", "+"),
                    ("XADD", whole.keys.outbox, "*", "a", "{}"), ("DEL", whole.keys.frames), ("FLUSHALL",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.execute_command(*command)

    # inference cannot write camera statuses or alerts
    error = refused(lambda: inference.set_camera_status("barn-a", {"state": "offline"}))
    assert error.keys == (inference.keys.camera_status,) and "fbv-inference" in str(error)
    refused(lambda: inference.add_alerts([b"{}"]))
    # logic reads statuses but cannot write them, nor push frames
    assert set(logic.camera_statuses()) == {"barn-a"}
    whole_logic = Transport(url(acl_server, "logic", ns), namespace=ns)
    assert refused(lambda: whole_logic.set_camera_status("barn-a", {"state": "online"})).keys == (whole_logic.keys.camera_status,)
    refused(lambda: whole_logic.push_frames([b"x"]))
    # delivery settles alerts but cannot add them, nor touch results or episodes
    whole_logic.add_alerts([b'{"a":1}'])  # (the logic worker's commit_results writes alerts the same way)
    delivery = DeliveryTransport(url(acl_server, "delivery", ns), namespace=ns)
    got = delivery.read_alerts("d1", pending=False, count=10)
    assert delivery.ack_alerts([e.entry_id for e in got]) == 1 and delivery.outbox_length() == 0
    refused(lambda: delivery.add_alerts([b"{}"]))
    whole_delivery = Transport(url(acl_server, "delivery", ns), namespace=ns)
    assert refused(lambda: whole_delivery.load_episodes("barn-a")).keys == (whole_delivery.keys.episodes,)
    # the runner reads everything, writes nothing
    runner = Transport(url(acl_server, "runner", ns), namespace=ns)
    assert runner.camera_statuses() and runner.frame_queue_depth() == 1
    refused(lambda: runner.set_camera_status("barn-a", {"state": "online"}))
    assert not [e for e in admin.acl_log(count=100) if e["username"].startswith("fbv-") and
                e["object"] in ("xinfo|groups", "evalsha", "xread")], "a role's own part was refused"
    admin.acl_log_reset()
    for t in (inference, logic, camera, whole, whole_logic, delivery, whole_delivery, runner):
        t.close()
