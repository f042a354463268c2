"""The enrolment and rotation request (protocols/enrolment.py): signed by the keys it names."""

from __future__ import annotations

import pytest

from protocols import wire
from protocols.enrolment import (
    DS_ENROLMENT,
    Request,
    RequestKind,
    SignedRequest,
    check_server,
    sign_request,
    verify_request,
)
from protocols.errors import SchemaError, SignatureError
from protocols.identifiers import parse_agency
from protocols.keys import NATS_AGENCY, Identity

AGENCY = parse_agency("THA/NEW-UNIT")


def _enrol(new: Identity, **kw: object) -> Request:
    fields: dict[str, object] = {
        "v": 1,
        "kind": RequestKind.ENROL,
        "agency": str(AGENCY),
        "signing_key": new.public().signing,
        "encryption_key": new.public().encryption,
        "created": 1_795_000_000_000,
        "server": "nats://hub.example:4222",
        "nats_user": "agency-NEW-UNIT",
        "nats_password_hash": "$2b$11$" + "x" * 53,
    }
    fields.update(kw)
    return Request(**fields)  # type: ignore[arg-type]


def test_an_enrolment_verifies_and_names_its_keys() -> None:
    new = Identity.generate(AGENCY)
    request = verify_request(sign_request(_enrol(new), new))
    assert request.public.signing == new.public().signing
    assert request.public.encryption == new.public().encryption


def test_a_request_signed_by_another_key_is_refused() -> None:
    new, other = Identity.generate(AGENCY), Identity.generate(AGENCY)
    with pytest.raises(SchemaError):
        sign_request(_enrol(new), other)  # the builder refuses it
    body = wire.encode(_enrol(new))
    forged = SignedRequest(body=body, sig=other.signing.sign(DS_ENROLMENT + body))
    with pytest.raises(SignatureError, match="not signed by the signing key it carries"):
        verify_request(wire.encode(forged))


def test_a_rotation_is_signed_by_the_old_key_too() -> None:
    old, new, thief = (Identity.generate(AGENCY) for _ in range(3))
    rotation = Request(
        v=1,
        kind=RequestKind.ROTATE,
        agency=str(AGENCY),
        signing_key=new.public().signing,
        encryption_key=new.public().encryption or b"",
        created=1,
        previous_signing_key=old.public().signing,
    )
    assert verify_request(sign_request(rotation, new, old)).previous_signing_key == (
        old.public().signing
    )
    with pytest.raises(SchemaError):
        sign_request(rotation, new, thief)
    body = wire.encode(rotation)
    forged = SignedRequest(
        body=body,
        sig=new.signing.sign(DS_ENROLMENT + body),
        previous_sig=thief.signing.sign(DS_ENROLMENT + body),
    )
    with pytest.raises(SignatureError, match="not signed by the key it replaces"):
        verify_request(wire.encode(forged))
    unsigned = SignedRequest(body=body, sig=new.signing.sign(DS_ENROLMENT + body))
    with pytest.raises(SignatureError, match="lacks the old key"):
        verify_request(wire.encode(unsigned))


@pytest.mark.parametrize(
    "address",
    [
        "http://hub.example:4222",
        "nats://hub.example",
        "nats://:4222",
        "hub.example:4222",
        "nats://hub.example:99999",
        "nats://user:pw@hub.example:4222",
        "nats://hub.example:4222/path",
    ],
)
def test_malformed_server_addresses_are_refused(address: str) -> None:
    with pytest.raises(SchemaError):
        check_server(address)
    new = Identity.generate(AGENCY)
    with pytest.raises(SchemaError):
        _enrol(new, server=address)


@pytest.mark.parametrize("address", ["nats://hub.example:4222", "tls://10.0.0.1:7422"])
def test_good_server_addresses(address: str) -> None:
    assert check_server(address) == address


def test_an_enrolment_carries_a_public_nkey_or_an_older_hash() -> None:
    new = Identity.generate(AGENCY)
    seed = new.nats_seed(NATS_AGENCY)
    assert seed is not None
    request = verify_request(
        sign_request(_enrol(new, nats_password_hash=None, nats_nkey=seed.public), new)
    )
    assert request.nats_nkey == seed.public and request.nats_password_hash is None
    assert verify_request(sign_request(_enrol(new), new)).nats_nkey is None  # before nkeys
    with pytest.raises(SchemaError, match="nkey"):
        _enrol(new, nats_password_hash=None)  # neither
    with pytest.raises(SchemaError, match="nkey"):
        _enrol(new, nats_nkey=seed.public)  # both
    with pytest.raises(SchemaError, match="not a public NATS user nkey"):
        _enrol(new, nats_password_hash=None, nats_nkey=seed.seed_str())  # a seed, by mistake
