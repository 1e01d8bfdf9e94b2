from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import uuid
from typing import get_args

import base45
import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.qrimage import decode_png, qr_version, render_png
from shared.ticketcodec import (
    MAX_CREDENTIAL_BYTES,
    MAX_QR_TEXT_LENGTH,
    QR_PREFIX,
    Credential,
    ErrorCode,
    RiderCategory,
    SignedCredential,
    TicketCodecError,
    _b45decode,
    _decode_envelope,
    _read_canonical_envelope,
    check_freshness,
    decode_and_verify,
    encode_credential,
    generate_device_key,
    load_public_key,
    make_dynamic_qr,
    parse_dynamic_qr,
    public_key_bytes,
    sign_credential,
    verify_dynamic_qr,
    verify_ed25519,
)

# Generated once per module: hypothesis tests cannot take function-scoped fixtures.
ISSUER_K1 = Ed25519PrivateKey.generate()
ISSUER_K2 = Ed25519PrivateKey.generate()
ISSUER_KEYS: dict[str, Ed25519PublicKey] = {
    "k1": ISSUER_K1.public_key(),
    "k2": ISSUER_K2.public_key(),
}
DEVICE_KEY = generate_device_key()
DEVICE_PUBLIC_KEY = public_key_bytes(DEVICE_KEY)
TICKET_ID = uuid.UUID("0f8c6c1e-3b1a-4c55-9d6e-2a7b0c4d5e6f")
VALID_FROM = 1_767_225_600  # 2026-01-01 00:00 UTC
VALID_UNTIL = 1_769_904_000  # 2026-02-01 00:00 UTC
NOW = 1_767_300_000
UINT32_MAX = 2**32 - 1
ALPHANUMERIC_MODE = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
ANY_SIGNATURE = bytes(range(64))

ERROR_CODES = frozenset(get_args(ErrorCode))  # every refusal names one of them


def make_credential(**changes: object) -> Credential:
    credential = Credential(
        kid="k1",
        ticket_id=TICKET_ID,
        product="M30-STU",
        rider_category=RiderCategory.STUDENT,
        valid_from=VALID_FROM,
        valid_until=VALID_UNTIL,
        lines=("2A", "3", "Z1"),
        device_public_key=DEVICE_PUBLIC_KEY,
    )
    return dataclasses.replace(credential, **changes)  # type: ignore[arg-type]


def issue(credential: Credential | None = None, issuer: Ed25519PrivateKey = ISSUER_K1) -> str:
    signed = sign_credential(credential or make_credential(), issuer)
    return make_dynamic_qr(signed, DEVICE_KEY, at=NOW, counter=7)


def payload_of(text: str) -> bytes:
    payload: bytes = base45.b45decode(text.removeprefix(QR_PREFIX))
    return payload


def text_of(payload: bytes) -> str:
    body: bytes = base45.b45encode(payload)
    return QR_PREFIX + body.decode("ascii")


def credential_fields(
    changes: dict[object, object] | None = None, *, drop: tuple[int, ...] = ()
) -> dict[object, object]:
    """A compact credential map written out from the spec, independently of the codec.

    Compact so that the changes tests make stay within MAX_CREDENTIAL_BYTES.
    """
    fields: dict[object, object] = {
        1: 1,
        2: "k1",
        3: TICKET_ID.bytes,
        4: "M30",
        5: 1,
        6: VALID_FROM,
        7: VALID_UNTIL,
        8: ["2A"],
        9: DEVICE_PUBLIC_KEY,
    }
    fields.update(changes or {})
    for key in drop:
        del fields[key]
    return fields


def envelope(
    credential: object = None,
    issuer_signature: object = ANY_SIGNATURE,
    at: object = NOW,
    counter: object = 7,
    device_signature: object = ANY_SIGNATURE,
) -> list[object]:
    if credential is None:
        credential = cbor2.dumps(credential_fields(), canonical=True)
    return [credential, issuer_signature, at, counter, device_signature]


def with_credential(fields: dict[object, object]) -> str:
    return text_of(cbor2.dumps(envelope(cbor2.dumps(fields, canonical=True))))


def rejection_code(text: str) -> str:
    with pytest.raises(TicketCodecError) as caught:
        decode_and_verify(text, ISSUER_KEYS)
    return caught.value.code


class TestRoundTrip:
    def test_make_parse_verify_returns_the_issued_credential(self) -> None:
        credential = make_credential()
        qr = decode_and_verify(issue(credential), ISSUER_KEYS)
        assert qr.credential == credential
        assert (qr.at, qr.counter) == (NOW, 7)
        assert qr.credential_bytes == encode_credential(credential)

    def test_bytes_follow_the_documented_layout(self) -> None:
        credential = make_credential()
        spec_fields = credential_fields({2: "k1", 4: "M30-STU", 8: ["2A", "3", "Z1"]})
        assert encode_credential(credential) == cbor2.dumps(spec_fields, canonical=True)
        qr = parse_dynamic_qr(issue(credential))
        ISSUER_K1.public_key().verify(qr.issuer_signature, b"CPCRED1" + qr.credential_bytes)
        digest = hashlib.sha256(qr.credential_bytes + qr.issuer_signature).digest()
        device_message = b"CPQR1" + digest + NOW.to_bytes(4, "big") + (7).to_bytes(4, "big")
        DEVICE_KEY.public_key().verify(qr.device_signature, device_message)

    def test_parse_then_verify_separately(self) -> None:
        qr = parse_dynamic_qr(issue())
        verify_dynamic_qr(qr, ISSUER_KEYS)
        assert qr.credential.rider_category is RiderCategory.STUDENT

    def test_text_uses_only_qr_alphanumeric_mode_characters(self) -> None:
        text = issue()
        assert text.startswith(QR_PREFIX)
        assert set(text) <= ALPHANUMERIC_MODE

    def test_realistic_credential_fits_version_11_at_level_m(self) -> None:
        signed = sign_credential(
            make_credential(rider_category=RiderCategory.POOR_HOUSEHOLD), ISSUER_K1
        )
        text = make_dynamic_qr(signed, DEVICE_KEY, at=UINT32_MAX, counter=UINT32_MAX)
        assert len(payload_of(text)) <= 240
        assert qr_version(text) <= 11

    def test_largest_allowed_credential_still_fits_version_11(self) -> None:
        for length in range(1, 40):
            candidate = make_credential(product="MONTHLY-STUDENT-PASS"[:length].ljust(length, "X"))
            if len(encode_credential_or_none(candidate) or b"") == MAX_CREDENTIAL_BYTES:
                break
        else:
            pytest.fail("no product length reaches the credential budget exactly")
        signed = sign_credential(candidate, ISSUER_K1)
        text = make_dynamic_qr(signed, DEVICE_KEY, at=UINT32_MAX, counter=UINT32_MAX)
        assert len(text) == MAX_QR_TEXT_LENGTH
        assert qr_version(text) <= 11
        decode_and_verify(text, ISSUER_KEYS)

    def test_credential_too_big_for_the_qr_is_refused_at_issue(self) -> None:
        with pytest.raises(TicketCodecError) as caught:
            sign_credential(make_credential(product="MONTHLY-STUDENT-ALL-LINES"), ISSUER_K1)
        assert caught.value.code == "oversize"

    def test_scanned_png_decodes_to_the_same_text_and_verifies(self) -> None:
        text = issue()
        assert decode_png(render_png(text)) == [text]
        decode_and_verify(decode_png(render_png(text))[0], ISSUER_KEYS)

    def test_every_rider_category_round_trips(self) -> None:
        for category in RiderCategory:
            credential = make_credential(rider_category=category)
            assert decode_and_verify(issue(credential), ISSUER_KEYS).credential == credential


def encode_credential_or_none(credential: Credential) -> bytes | None:
    try:
        return encode_credential(credential)
    except TicketCodecError:
        return None


class TestTampering:
    def test_every_single_bit_flip_in_the_payload_is_rejected(self) -> None:
        payload = payload_of(issue())
        for position in range(len(payload)):
            for bit in range(8):
                flipped = bytearray(payload)
                flipped[position] ^= 1 << bit
                code = rejection_code(text_of(bytes(flipped)))
                assert code in ERROR_CODES, (position, bit, code)  # refused, never accepted

    def test_credential_rebound_to_an_attacker_device_is_rejected(self) -> None:
        genuine = parse_dynamic_qr(issue())
        attacker_key = generate_device_key()
        rebound = dataclasses.replace(
            genuine.credential, device_public_key=public_key_bytes(attacker_key)
        )
        forged = SignedCredential(encode_credential(rebound), genuine.issuer_signature, "k1")
        text = make_dynamic_qr(forged, attacker_key, at=NOW, counter=8)
        assert rejection_code(text) == "bad_issuer_signature"

    def test_copied_credential_signed_by_another_device_is_rejected(self) -> None:
        genuine = parse_dynamic_qr(issue())
        other_device = generate_device_key()
        signature = other_device.sign(b"anything")
        items = envelope(genuine.credential_bytes, genuine.issuer_signature, NOW, 7, signature)
        assert rejection_code(text_of(cbor2.dumps(items))) == "bad_device_signature"

    @pytest.mark.parametrize(("at", "counter"), [(NOW + 60, 7), (NOW, 8)])
    def test_changed_time_or_counter_is_rejected(self, at: int, counter: int) -> None:
        genuine = parse_dynamic_qr(issue())
        items = envelope(
            genuine.credential_bytes,
            genuine.issuer_signature,
            at,
            counter,
            genuine.device_signature,
        )
        assert rejection_code(text_of(cbor2.dumps(items))) == "bad_device_signature"

    def test_the_device_check_agrees_with_openssl(self) -> None:
        """Gates verify device signatures with libsodium, issuers sign with OpenSSL."""
        key = generate_device_key()
        public = public_key_bytes(key)
        for size in (0, 1, 63, 64, 200):
            message = bytes(range(size % 256)) * (size // 256 + 1)
            signature = key.sign(message)
            assert verify_ed25519(public, signature, message)
            for position in (0, 31, 32, 63):
                damaged = bytearray(signature)
                damaged[position] ^= 0x40
                assert not verify_ed25519(public, bytes(damaged), message)
            assert not verify_ed25519(public, signature, message + b"!")
            assert not verify_ed25519(public_key_bytes(generate_device_key()), signature, message)
            assert not verify_ed25519(public[:31], signature, message)
            assert not verify_ed25519(public, signature[:63], message)
            assert not verify_ed25519(public, signature + b"\0", message)

    def test_issuer_signature_made_with_another_trusted_key_is_rejected(self) -> None:
        forged = SignedCredential(
            encode_credential(make_credential(kid="k2")),
            ISSUER_K1.sign(b"CPCRED1" + encode_credential(make_credential(kid="k2"))),
            "k2",
        )
        text = make_dynamic_qr(forged, DEVICE_KEY, at=NOW, counter=1)
        assert rejection_code(text) == "bad_issuer_signature"


class TestStrippedDeviceSignature:
    def test_envelope_without_device_signature_is_rejected(self) -> None:
        items = cbor2.loads(payload_of(issue()))
        assert rejection_code(text_of(cbor2.dumps(items[:4]))) == "missing_device_signature"

    @pytest.mark.parametrize("stripped", [b"", None])
    def test_empty_device_signature_is_rejected(self, stripped: bytes | None) -> None:
        items = cbor2.loads(payload_of(issue()))
        items[4] = stripped
        assert rejection_code(text_of(cbor2.dumps(items))) == "missing_device_signature"

    def test_verify_refuses_a_hand_built_qr_without_device_signature(self) -> None:
        stripped = dataclasses.replace(parse_dynamic_qr(issue()), device_signature=b"")
        with pytest.raises(TicketCodecError) as caught:
            verify_dynamic_qr(stripped, ISSUER_KEYS)
        assert caught.value.code == "missing_device_signature"

    def test_truncated_device_signature_is_rejected(self) -> None:
        items = cbor2.loads(payload_of(issue()))
        items[4] = items[4][:32]
        assert rejection_code(text_of(cbor2.dumps(items))) == "wrong_type"


class TestKeyRotation:
    def test_unknown_kid_is_rejected(self) -> None:
        text = issue(make_credential(kid="k9"))
        assert rejection_code(text) == "unknown_key"

    def test_credentials_from_old_and_new_keys_both_verify_during_rotation(self) -> None:
        decode_and_verify(issue(make_credential(kid="k1"), ISSUER_K1), ISSUER_KEYS)
        decode_and_verify(issue(make_credential(kid="k2"), ISSUER_K2), ISSUER_KEYS)

    def test_retired_key_credentials_are_refused(self) -> None:
        old = issue(make_credential(kid="k1"), ISSUER_K1)
        new = issue(make_credential(kid="k2"), ISSUER_K2)
        after_rotation = {"k2": ISSUER_KEYS["k2"]}
        decode_and_verify(new, after_rotation)
        with pytest.raises(TicketCodecError) as caught:
            decode_and_verify(old, after_rotation)
        assert caught.value.code == "unknown_key"


class TestStrictDecoding:
    def assert_parse_rejects(self, text: str, code: str) -> None:
        with pytest.raises(TicketCodecError) as caught:
            parse_dynamic_qr(text)
        assert caught.value.code == code

    def test_empty_string(self) -> None:
        self.assert_parse_rejects("", "malformed_prefix")

    @pytest.mark.parametrize("prefix", ["", "CP2:", "cp1:", " CP1:", "CP1", "HC1:"])
    def test_wrong_or_missing_prefix(self, prefix: str) -> None:
        body = issue().removeprefix(QR_PREFIX)
        self.assert_parse_rejects(prefix + body, "malformed_prefix")

    @pytest.mark.parametrize(
        "body",
        ["abc", "A", "GGW", "00GGW", "V5", "ÀBC", "00\n", "00 \u00a0", "A=B"],
        ids=[
            "lowercase",
            "dangling-char",
            "chunk-over-65535",
            "second-chunk-over-65535",
            "tail-over-255",
            "non-ascii",
            "newline",
            "nbsp",
            "pad",
        ],
    )
    def test_invalid_base45(self, body: str) -> None:
        self.assert_parse_rejects(QR_PREFIX + body, "malformed_base45")

    @given(st.binary(max_size=300))
    def test_base45_decoding_matches_rfc_9285(self, data: bytes) -> None:
        text = base45.b45encode(data).decode()
        assert _b45decode(text) == data == base45.b45decode(text)

    @given(st.text(alphabet=sorted(ALPHANUMERIC_MODE), max_size=40))
    def test_base45_decoding_accepts_exactly_what_rfc_9285_decodes(self, text: str) -> None:
        try:
            expected: bytes | None = base45.b45decode(text)
        except ValueError:
            expected = None
        if expected is None:
            with pytest.raises(TicketCodecError) as refused:
                _b45decode(text)
            assert refused.value.code == "malformed_base45"
        else:
            assert _b45decode(text) == expected

    def test_one_megabyte_input_is_rejected_before_decoding(self) -> None:
        self.assert_parse_rejects("\x00" * 1_000_000, "oversize")
        self.assert_parse_rejects(QR_PREFIX + "0" * 1_000_000, "oversize")

    def test_one_character_over_the_limit_is_oversize(self) -> None:
        self.assert_parse_rejects(
            QR_PREFIX + "0" * (MAX_QR_TEXT_LENGTH - len(QR_PREFIX) + 1), "oversize"
        )

    def test_credential_over_budget_inside_a_small_envelope_is_oversize(self) -> None:
        fields = credential_fields({4: "X" * 30})
        items = envelope(cbor2.dumps(fields, canonical=True), at=0, counter=0)
        assert len(items[0]) > MAX_CREDENTIAL_BYTES  # type: ignore[arg-type]
        self.assert_parse_rejects(text_of(cbor2.dumps(items)), "oversize")

    def test_bad_cbor(self) -> None:
        self.assert_parse_rejects(text_of(b"\xff\x00"), "malformed_cbor")

    def test_empty_payload(self) -> None:
        self.assert_parse_rejects(QR_PREFIX, "malformed_cbor")

    def test_every_truncation_of_the_payload(self) -> None:
        payload = payload_of(issue())
        for length in range(len(payload)):
            self.assert_parse_rejects(text_of(payload[:length]), "malformed_cbor")

    def test_trailing_bytes_after_the_envelope(self) -> None:
        self.assert_parse_rejects(text_of(payload_of(issue()) + b"\x00"), "trailing_bytes")

    def test_trailing_bytes_after_the_credential(self) -> None:
        credential = cbor2.dumps(credential_fields(), canonical=True) + b"\x00"
        self.assert_parse_rejects(text_of(cbor2.dumps(envelope(credential))), "trailing_bytes")

    def test_unknown_version(self) -> None:
        self.assert_parse_rejects(with_credential(credential_fields({1: 2})), "unsupported_version")

    def test_unknown_version_wins_over_its_unfamiliar_fields(self) -> None:
        self.assert_parse_rejects(with_credential({1: 2, 20: "new"}), "unsupported_version")

    @pytest.mark.parametrize(
        "changes",
        [
            {1: "1"},
            {2: b"k1"},
            {3: bytes(15)},
            {3: "ticket"},
            {4: 42},
            {5: "student"},
            {5: -1},
            {5: True},
            {5: 1.0},
            {6: 1.5},
            {6: -5},
            {7: 2**40},
            {8: "2A"},
            {8: ["2A", 3]},
            {9: bytes(31)},
            {9: DEVICE_PUBLIC_KEY + b"\x00"},
        ],
    )
    def test_wrong_credential_field_types(self, changes: dict[object, object]) -> None:
        self.assert_parse_rejects(with_credential(credential_fields(changes)), "wrong_type")

    @pytest.mark.parametrize(
        "items",
        [
            {},
            5,
            b"",
            envelope(credential="text"),
            envelope(issuer_signature=ANY_SIGNATURE[:63]),
            envelope(at="now"),
            envelope(at=-1),
            envelope(at=1.0),
            envelope(at=2**32),
            envelope(counter=True),
            envelope(device_signature=ANY_SIGNATURE + b"\x00"),
            envelope(device_signature="sig"),
        ],
    )
    def test_wrong_envelope_types(self, items: object) -> None:
        self.assert_parse_rejects(text_of(cbor2.dumps(items)), "wrong_type")

    def test_credential_map_that_is_not_a_map(self) -> None:
        credential = cbor2.dumps([1, "k1"])
        self.assert_parse_rejects(text_of(cbor2.dumps(envelope(credential))), "wrong_type")

    @pytest.mark.parametrize("key", [1, 4, 9])
    def test_missing_credential_field(self, key: int) -> None:
        self.assert_parse_rejects(with_credential(credential_fields(drop=(key,))), "missing_field")

    def test_envelope_with_too_few_items(self) -> None:
        self.assert_parse_rejects(text_of(cbor2.dumps(envelope()[:3])), "missing_field")

    @pytest.mark.parametrize("key", [10, 0, -1, "kid"])
    def test_unknown_credential_field(self, key: object) -> None:
        fields = credential_fields({key: "x"})
        self.assert_parse_rejects(with_credential(fields), "unknown_field")

    def test_envelope_with_extra_items(self) -> None:
        self.assert_parse_rejects(text_of(cbor2.dumps([*envelope(), 0])), "unknown_field")

    @pytest.mark.parametrize(
        "changes",
        [{5: 99}, {7: VALID_FROM - 1}, {8: []}, {2: ""}, {4: "M30 STU"}, {8: ["2A", "Tuyến 3"]}],
        ids=["rider-category", "until-before-from", "no-lines", "empty-kid", "space", "non-ascii"],
    )
    def test_out_of_range_values(self, changes: dict[object, object]) -> None:
        self.assert_parse_rejects(with_credential(credential_fields(changes)), "invalid_value")

    @pytest.mark.parametrize(
        "items",
        [
            envelope(at=cbor2.CBORTag(1, NOW)),
            envelope(at=cbor2.CBORTag(2, NOW.to_bytes(4, "big"))),
            envelope(
                credential=cbor2.CBORTag(24, cbor2.dumps(credential_fields(), canonical=True))
            ),
            cbor2.CBORTag(55799, envelope()),
        ],
        ids=["datetime", "bignum", "embedded-cbor", "self-describe"],
    )
    def test_tagged_items_in_the_envelope(self, items: object) -> None:
        self.assert_parse_rejects(text_of(cbor2.dumps(items)), "malformed_cbor")

    def test_uuid_tag_in_the_credential(self) -> None:
        self.assert_parse_rejects(
            with_credential(credential_fields({3: TICKET_ID})), "malformed_cbor"
        )

    def test_indefinite_length_envelope(self) -> None:
        payload = cbor2.dumps(envelope(), indefinite_containers=True)
        self.assert_parse_rejects(text_of(payload), "malformed_cbor")

    @pytest.mark.parametrize(
        "payload",
        [b"\x81" * 200 + b"\x00", b"\x85" + b"\x81" * 5 + b"\x00", cbor2.dumps(envelope(at=[NOW]))],
        ids=["deep-arrays", "nested-envelope", "array-for-time"],
    )
    def test_nested_garbage(self, payload: bytes) -> None:
        self.assert_parse_rejects(text_of(payload), "malformed_cbor")

    def test_nested_garbage_in_the_credential(self) -> None:
        fields = credential_fields({8: [["2A"]]})
        self.assert_parse_rejects(with_credential(fields), "malformed_cbor")

    def test_longer_integer_form_of_a_signed_time_is_rejected(self) -> None:
        genuine = payload_of(issue())
        items = cbor2.loads(genuine)
        long_form = (
            b"\x85"
            + cbor2.dumps(items[0])
            + cbor2.dumps(items[1])
            + b"\x1b"
            + NOW.to_bytes(8, "big")
            + cbor2.dumps(items[3])
            + cbor2.dumps(items[4])
        )
        assert cbor2.loads(long_form) == items
        self.assert_parse_rejects(text_of(long_form), "malformed_cbor")

    def test_credential_keys_out_of_canonical_order(self) -> None:
        fields = credential_fields()
        reordered = dict(reversed(fields.items()))
        credential = cbor2.dumps(reordered)
        self.assert_parse_rejects(text_of(cbor2.dumps(envelope(credential))), "malformed_cbor")

    def test_duplicate_credential_keys(self) -> None:
        credential = cbor2.dumps(credential_fields(), canonical=True)
        duplicated = bytes([credential[0] + 1]) + credential[1:] + b"\x04\x63ABC"
        self.assert_parse_rejects(text_of(cbor2.dumps(envelope(duplicated))), "malformed_cbor")


CBOR_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=70),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.integers(-2, 12), children)
    ),
    max_leaves=12,
)


class TestArbitraryInput:
    @settings(database=None)
    @given(st.text())
    def test_arbitrary_text_only_raises_ticket_codec_error(self, text: str) -> None:
        with contextlib.suppress(TicketCodecError):
            decode_and_verify(text, ISSUER_KEYS)

    @settings(database=None)
    @given(st.text(alphabet=sorted(ALPHANUMERIC_MODE), max_size=400))
    def test_arbitrary_base45_text_only_raises_ticket_codec_error(self, body: str) -> None:
        with contextlib.suppress(TicketCodecError):
            decode_and_verify(QR_PREFIX + body, ISSUER_KEYS)

    @settings(database=None)
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_behind_the_prefix_only_raise_ticket_codec_error(
        self, payload: bytes
    ) -> None:
        with contextlib.suppress(TicketCodecError):
            decode_and_verify(text_of(payload), ISSUER_KEYS)

    @settings(database=None)
    @given(st.lists(CBOR_VALUES, max_size=6))
    def test_arbitrary_cbor_envelopes_are_rejected(self, items: list[object]) -> None:
        with pytest.raises(TicketCodecError):
            decode_and_verify(text_of(cbor2.dumps(items)), ISSUER_KEYS)

    @settings(database=None)
    @given(st.dictionaries(st.integers(-1, 11), CBOR_VALUES, max_size=11))
    def test_arbitrary_credential_maps_are_rejected(self, fields: dict[object, object]) -> None:
        credential = cbor2.dumps(fields, canonical=True)
        with pytest.raises(TicketCodecError):
            decode_and_verify(text_of(cbor2.dumps(envelope(credential))), ISSUER_KEYS)

    @settings(database=None)
    @given(st.data())
    def test_spliced_valid_payloads_are_rejected(self, data: st.DataObject) -> None:
        payload = payload_of(issue())
        start = data.draw(st.integers(0, len(payload)))
        end = data.draw(st.integers(start, len(payload)))
        insert = data.draw(st.binary(max_size=8))
        spliced = payload[:start] + insert + payload[end:]
        if spliced == payload:
            return
        with pytest.raises(TicketCodecError):
            decode_and_verify(text_of(spliced), ISSUER_KEYS)


def generic_envelope(payload: bytes) -> object:
    """What the generic decoder makes of `payload`: its envelope, or the code it refuses with."""
    try:
        return _decode_envelope(payload)
    except TicketCodecError as refused:
        return refused.code


class TestCanonicalEnvelopeReader:
    """The gate's fast reader of well-formed envelopes takes exactly what the generic decoder
    takes, with the same values; everything else it leaves to the generic decoder."""

    @given(
        credential=st.binary(max_size=MAX_CREDENTIAL_BYTES),
        at=st.integers(0, UINT32_MAX),
        counter=st.integers(0, UINT32_MAX),
    )
    def test_every_shortest_form_envelope_is_read_as_the_generic_decoder_reads_it(
        self, credential: bytes, at: int, counter: int
    ) -> None:
        payload = cbor2.dumps(envelope(credential, at=at, counter=counter))
        read = _read_canonical_envelope(payload)
        assert read is not None
        assert (
            read
            == generic_envelope(payload)
            == (credential, ANY_SIGNATURE, at, counter, ANY_SIGNATURE)
        )

    @settings(database=None)
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_are_read_the_same_or_left_to_the_generic_decoder(
        self, payload: bytes
    ) -> None:
        read = _read_canonical_envelope(payload)
        assert read is None or read == generic_envelope(payload)

    @settings(database=None)
    @given(st.data())
    def test_altered_envelopes_are_read_the_same_or_left_to_the_generic_decoder(
        self, data: st.DataObject
    ) -> None:
        payload = bytearray(payload_of(issue()))
        for _ in range(data.draw(st.integers(1, 4))):
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(payload)))
        altered = bytes(payload[:cut]) + data.draw(st.binary(max_size=4))
        read = _read_canonical_envelope(altered)
        assert read is None or read == generic_envelope(altered)

    @pytest.mark.parametrize(
        ("at", "encoded"),
        [(23, b"\x17"), (24, b"\x18\x18"), (255, b"\x18\xff"), (256, b"\x19\x01\x00")],
    )
    def test_longer_integer_forms_are_left_to_the_generic_decoder(
        self, at: int, encoded: bytes
    ) -> None:
        shortest = cbor2.dumps(envelope(b"", at=at))
        at_offset = 1 + 1 + 2 + len(ANY_SIGNATURE)  # array head, empty credential, signature
        assert shortest[at_offset : at_offset + len(encoded)] == encoded
        widened = (
            shortest[:at_offset]
            + b"\x1a"
            + at.to_bytes(4, "big")
            + shortest[at_offset + len(encoded) :]
        )
        assert _read_canonical_envelope(widened) is None
        assert generic_envelope(widened) == "malformed_cbor"

    @pytest.mark.parametrize("length", [0, 5, 23])
    def test_a_longer_credential_length_form_is_left_to_the_generic_decoder(
        self, length: int
    ) -> None:
        shortest = cbor2.dumps(envelope(bytes(length)))
        widened = b"\x85\x58" + bytes((length,)) + shortest[2:]
        assert _read_canonical_envelope(widened) is None
        assert generic_envelope(widened) == "malformed_cbor"


class TestFreshness:
    @pytest.mark.parametrize("age", [0, 1, 29, 30, -1, -5])
    def test_inside_the_window_is_fresh(self, age: int) -> None:
        assert check_freshness(NOW - age, NOW) is None

    @pytest.mark.parametrize("age", [31, 3600])
    def test_too_old_is_expired(self, age: int) -> None:
        assert check_freshness(NOW - age, NOW) == "qr_expired"

    @pytest.mark.parametrize("lead", [6, 3600])
    def test_too_far_in_the_future_is_not_yet_valid(self, lead: int) -> None:
        assert check_freshness(NOW + lead, NOW) == "qr_not_yet_valid"

    def test_window_and_skew_are_adjustable(self) -> None:
        assert check_freshness(NOW - 50, NOW, window_s=60) is None
        assert check_freshness(NOW + 2, NOW, skew_s=1) == "qr_not_yet_valid"


class TestKeysAndIssuing:
    def test_public_key_bytes_are_raw_32_bytes_and_load_back(self) -> None:
        raw = public_key_bytes(DEVICE_KEY)
        assert raw == public_key_bytes(DEVICE_KEY.public_key())
        assert len(raw) == 32
        assert public_key_bytes(load_public_key(raw)) == raw

    def test_load_public_key_refuses_wrong_length(self) -> None:
        with pytest.raises(TicketCodecError) as caught:
            load_public_key(bytes(31))
        assert caught.value.code == "wrong_type"

    def test_phone_cannot_sign_with_a_key_the_credential_does_not_name(self) -> None:
        signed = sign_credential(make_credential(), ISSUER_K1)
        with pytest.raises(TicketCodecError) as caught:
            make_dynamic_qr(signed, generate_device_key(), at=NOW, counter=1)
        assert caught.value.code == "invalid_value"

    @pytest.mark.parametrize(("at", "counter"), [(-1, 0), (2**32, 0), (NOW, 2**32)])
    def test_time_and_counter_must_fit_32_bits(self, at: int, counter: int) -> None:
        signed = sign_credential(make_credential(), ISSUER_K1)
        with pytest.raises(TicketCodecError) as caught:
            make_dynamic_qr(signed, DEVICE_KEY, at=at, counter=counter)
        assert caught.value.code == "invalid_value"

    @pytest.mark.parametrize(
        "changes",
        [{"lines": ()}, {"valid_until": VALID_FROM - 1}, {"product": "M30 STU"}, {"kid": ""}],
    )
    def test_issuer_refuses_credentials_a_gate_would_refuse(
        self, changes: dict[str, object]
    ) -> None:
        with pytest.raises(TicketCodecError) as caught:
            encode_credential(make_credential(**changes))
        assert caught.value.code == "invalid_value"
