"""Signed links (core/links.py): one purpose, one subject, until the expiry; anything changed fails."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fbvision.core.links import LinkError, new_link_secret, sign_link, verify_link

SECRET = "s" * 32
NOW = 1_800_000_000.0


def test_a_signed_link_verifies_to_its_purpose_subject_and_expiry():
    token = sign_link("ack", "stall-01:horse_down:1:1700000000", NOW + 3600, SECRET)
    claim = verify_link(token, "ack", SECRET, NOW)
    assert (claim.purpose, claim.subject, claim.expires_at) == ("ack", "stall-01:horse_down:1:1700000000", int(NOW + 3600))


@given(st.text(min_size=1, max_size=200))
def test_any_subject_round_trips(subject):
    assert verify_link(sign_link("ack", subject, NOW + 60, SECRET), "ack", SECRET, NOW).subject == subject


def test_an_expired_link_is_refused_as_expired():
    token = sign_link("ack", "k", NOW + 10, SECRET)
    with pytest.raises(LinkError) as err:
        verify_link(token, "ack", SECRET, NOW + 10)
    assert err.value.reason == "expired"


@pytest.mark.parametrize("part", [2, 3, 4])
def test_changing_any_signed_part_breaks_the_signature(part):
    token = sign_link("ack", "stall-01:horse_down", NOW + 60, SECRET)
    pieces = token.split(".")
    other = sign_link("ack", "stall-02:horse_down", NOW + 99_999, SECRET).split(".")
    pieces[part] = other[part]
    with pytest.raises(LinkError) as err:
        verify_link(".".join(pieces), "ack", SECRET, NOW)
    assert err.value.reason == "signature"


def test_another_purpose_or_secret_does_not_verify():
    token = sign_link("snooze", "stall-01", NOW + 60, SECRET)
    with pytest.raises(LinkError) as err:
        verify_link(token, "ack", SECRET, NOW)
    assert err.value.reason == "signature"
    with pytest.raises(LinkError):
        verify_link(sign_link("ack", "k", NOW + 60, new_link_secret()), "ack", SECRET, NOW)


@pytest.mark.parametrize("junk", ["", "v1", "v2.ack.a.1.b", "v1.ack.a.x.b", "v1.ack.a!.1.b", "v1.ack.a.1.b.c",
                                  "v1.ACK.a.1.b", "x" * 5000, "v1.ack.a.1" + "1" * 20 + ".b"])
def test_malformed_tokens_are_refused_as_malformed(junk):
    with pytest.raises(LinkError) as err:
        verify_link(junk, "ack", SECRET, NOW)
    assert err.value.reason == "malformed"


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        sign_link("ack", "k", NOW + 60, "short")
