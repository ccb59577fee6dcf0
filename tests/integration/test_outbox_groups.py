"""One outbox consumer group per sink, against a real redis-server: a slow sink keeps what it has not settled,
a new sink's group starts at 0, a poison entry is dead-lettered by each sink on its own, and the stream is
trimmed only below what every group has settled."""

from __future__ import annotations

import pytest

from fbvision.core.transport import OUTBOX_GROUP, Transport

pytestmark = pytest.mark.timeout(60)


def alerts(n: int, start: int = 0) -> list[bytes]:
    return [f'{{"n":{i}}}'.encode() for i in range(start, start + n)]


def stream_ids(t: Transport) -> list[str]:
    return [i.decode() for i, _ in t.client.xrange(t.keys.outbox)]


def test_nothing_is_trimmed_until_both_groups_acked(transport):
    assert transport.outbox_groups([OUTBOX_GROUP, "notifier"]) == [OUTBOX_GROUP, "notifier"]
    ids = transport.add_alerts(alerts(6))
    fast = transport.read_alerts("d1", pending=False, count=10)
    assert [e.entry_id for e in fast] == ids
    assert transport.ack_alerts([e.entry_id for e in fast]) == 6  # the default group: delivery
    # The notifier has read nothing yet: all six stay.
    assert stream_ids(transport) == ids and transport.outbox_length() == 6
    slow = transport.read_alerts("n1", pending=False, count=4, group="notifier")
    assert [e.payload for e in slow] == alerts(4)
    assert transport.outbox_pending(group="notifier") == 4
    assert transport.ack_alerts([e.entry_id for e in slow[:2]], group="notifier") == 2
    assert stream_ids(transport) == ids[2:]  # settled by both: gone; the rest still needed by the notifier
    # Settling out of order: the 4th before the 3rd. The 4th goes (both settled it), the 3rd stays (pending).
    assert transport.ack_alerts([slow[3].entry_id], group="notifier") == 1
    assert stream_ids(transport) == [ids[2], ids[4], ids[5]]
    assert transport.ack_alerts([slow[2].entry_id], group="notifier") == 1
    assert stream_ids(transport) == ids[4:]  # not delivered to the notifier yet
    rest = transport.read_alerts("n1", pending=False, count=10, group="notifier")
    assert [e.entry_id for e in rest] == ids[4:]
    transport.ack_alerts([e.entry_id for e in rest], group="notifier")
    assert transport.outbox_length() == 0
    assert transport.outbox_pending() == 0 and transport.outbox_pending(group="notifier") == 0


def test_a_new_sink_gets_every_alert_still_in_the_outbox(transport):
    transport.outbox_groups([OUTBOX_GROUP])
    ids = transport.add_alerts(alerts(3))
    got = transport.read_alerts("d1", pending=False, count=1)
    transport.ack_alerts([got[0].entry_id])  # the only group: delivered and settled -> gone at once
    assert stream_ids(transport) == ids[1:]
    transport.outbox_groups(["pager"])  # created from id 0: sees the two still there
    assert [e.entry_id for e in transport.read_alerts("p1", pending=False, count=10, group="pager")] == ids[1:]
    # the delivery group has not read those two: acking them for the pager alone deletes nothing
    transport.ack_alerts(ids[1:], group="pager")
    assert stream_ids(transport) == ids[1:]


def test_a_poison_entry_is_dead_lettered_per_group(transport):
    groups = [OUTBOX_GROUP, "notifier"]
    transport.outbox_groups(groups)
    good = transport.add_alerts(alerts(1))
    poison = transport.add_alerts([b"\xff not json"])
    for group in groups:
        entries = transport.read_alerts(f"{group}-1", pending=False, count=10, group=group)
        for entry in entries:
            if entry.payload.startswith(b"{"):
                continue  # "delivered": settled below with the rest
            transport.dead_letter(f"alerts:outbox/{group}", "invalid_json", entry.payload, full=True)
        before = stream_ids(transport)
        assert transport.ack_alerts([e.entry_id for e in entries], group=group) == 2
        if group == groups[0]:
            assert stream_ids(transport) == before == good + poison  # the notifier still needs both
    assert transport.outbox_length() == 0
    letters = transport.dead_letters()
    assert sorted(d["queue"] for d in letters) == ["alerts:outbox/delivery", "alerts:outbox/notifier"]
    assert all(d["payload_b64"] and d["reason"] == "invalid_json" for d in letters)


def test_a_dead_consumers_entries_are_claimed_within_its_group_only(transport):
    transport.outbox_groups([OUTBOX_GROUP, "notifier"])
    ids = transport.add_alerts(alerts(2))
    transport.read_alerts("dead", pending=False, count=10, group="notifier")
    assert transport.claim_stale_alerts("alive", 0.0, group=OUTBOX_GROUP) == []  # nothing pending there
    claimed = transport.claim_stale_alerts("alive", 0.0, group="notifier")
    assert [e.entry_id for e in claimed] == ids and claimed[0].payload == alerts(1)[0]
    assert [e.entry_id for e in transport.read_alerts("alive", pending=True, count=10, group="notifier")] == ids


def test_a_bad_group_name_is_a_clear_error(transport):
    with pytest.raises(ValueError, match="outbox group name"):
        transport.outbox_groups(["no spaces"])
    with pytest.raises(ValueError, match="outbox group name"):
        transport.read_alerts("c", pending=False, count=1, group="")
