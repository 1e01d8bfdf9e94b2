"""VietQR codec: round trips, strict rejection codes, published payloads and a real scanner."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.qrimage import decode_png, render_png
from shared.vietqr import (
    MAX_PAYLOAD_LENGTH,
    ServiceCode,
    VietQR,
    VietQRError,
    crc16_ccitt_false,
    decode,
    encode,
)

# Published payloads, verbatim. Each was checked against its source's own expectations.
# xuannghia/vietnam-qr-pay, test/test-vietqr.spec.ts (test 'VietQR'): ACB 257678859, 1000 VND.
XUANNGHIA_DYNAMIC_DECODE_FIXTURE = (
    "00020101021238530010A0000007270123000697041601092576788590208QRIBFTTA"
    "5303704540410005802VN62150811Chuyen tien6304BBB8"
)
# xuannghia/vietnam-qr-pay, test/test-vietqr.spec.ts (test 'Invalid CRC VietQR '): same, CRC BBB5.
XUANNGHIA_INVALID_CRC_FIXTURE = (
    "00020101021238530010A0000007270123000697041601092576788590208QRIBFTTA"
    "5303704540410005802VN62150811Chuyen tien6304BBB5"
)
# xuannghia/vietnam-qr-pay, README.md, "VietQR Tĩnh" (static, no amount).
XUANNGHIA_STATIC_README = (
    "00020101021138530010A0000007270123000697041601092576788590208QRIBFTTA53037045802VN6304AE9F"
)
# xuannghia/vietnam-qr-pay, README.md, "VietQR Động" (dynamic, 10000 VND, purpose).
XUANNGHIA_DYNAMIC_README = (
    "00020101021238530010A0000007270123000697041601092576788590208QRIBFTTA"
    "53037045405100005802VN62150811Chuyen tien630453E6"
)
# xuannghia/vietnam-qr-pay, README.md, "ZaloPay" (BVBank wallet account, CRC with a leading 0).
XUANNGHIA_ZALOPAY_README = (
    "00020101021138620010A00000072701320006970454011899ZP24009M072482670208QRIBFTTA"
    "53037045802VN6304073C"
)
# xuannghia/vietnam-qr-pay, README.md, "MoMo": reference label 05 plus unreserved field 80.
XUANNGHIA_MOMO_README = (
    "00020101021138620010A00000072701320006970454011899MM24011M348750800208QRIBFTTA"
    "53037045802VN62190515MOMOW2W3487508080030466304EBC8"
)
# xuannghia/vietnam-qr-pay, README.md, "VNPay": a valid EMVCo code, but field 26, not NAPAS 38.
XUANNGHIA_VNPAY_README = (
    "00020101021126280010A0000007750110010531314453037045408210900005802VN5910CELLPHONES"
    "62600312CPSHN ONLINE0517021908061613127850705ONLHN0810CellphoneS63047685"
)
# subiz/vietqr, vietqr_test.go (TestQR case 0): TPBank static, no amount.
SUBIZ_STATIC = (
    "00020101021138540010A00000072701240006970423011000999999990208QRIBFTTA53037045802VN6304CBB4"
)
# subiz/vietqr, vietqr_test.go (TestQR case 1): MB dynamic, 40123 VND, "test text string".
SUBIZ_DYNAMIC = (
    "00020101021238570010A00000072701270006970422011300234579234420208QRIBFTTA"
    "53037045405401235802VN62200816test text string6304D9C6"
)
# subiz/vietqr, vietqr_test.go (TestQR case 3): same account, "chuyen khoan".
SUBIZ_DYNAMIC_CHUYEN_KHOAN = (
    "00020101021238570010A00000072701270006970422011300234579234420208QRIBFTTA"
    "53037045405401235802VN62160812chuyen khoan6304722F"
)
# subiz/vietqr, vietqr_test.go (TestQR case 5): alphanumeric account, 25-character purpose.
SUBIZ_DYNAMIC_LONG_PURPOSE = (
    "00020101021238630010A0000007270133000697042201190023457923442ASDFLJ0208QRIBFTTA"
    "53037045405401235802VN62290825chuyen khoan alsdkf laksj6304E5DB"
)

# NAPAS, Technical Specifications on NAPAS QR Switching v1.5.2 (January 2021), part IV,
# examples 6.1.1-6.1.4: merchant payments (acquirer 970403, merchant 2112995044604025, MCC
# 5812, store label 62.03). Copied from liopayvn/vietqr-php,
# tests/Integration/QRPushBuilderIntegrationTest.php (6.1.1 and 6.1.2 also in its
# CRCHelperTest; 6.1.4 also in trantuan94/vietqrjs, src/decryptor/vietqrv1.decryptor.spec.ts).
# 6.1.1: static, field 38 without a service code (38.02).
NAPAS_MERCHANT_STATIC = (
    "00020101021138480010A00000072701300006970403011621129950446040255204581253037045802VN"
    "5910PHUONG CAC6005HANOI62110307NPS686963045802"
)
# 6.1.2: static, service code QRPUSH.
NAPAS_MERCHANT_STATIC_QRPUSH = (
    "00020101021138580010A00000072701300006970403011621129950446040250206QRPUSH5204581253037045802VN"
    "5910PHUONG CAC6005HANOI62110307NPS686963043820"
)
# 6.1.3: dynamic 180000 VND, no service code (the PDF drops the 2 of "5802VN"; liopay's fix).
NAPAS_MERCHANT_DYNAMIC = (
    "00020101021238480010A00000072701300006970403011621129950446040255204581253037045406180000"
    "5802VN5910PHUONG CAC6005HANOI62110307NPS6869630479EE"
)
# 6.1.4: dynamic 180000 VND, service code QRPUSH.
NAPAS_MERCHANT_DYNAMIC_QRPUSH = (
    "00020101021238580010A00000072701300006970403011621129950446040250206QRPUSH5204581253037045406"
    "1800005802VN5910PHUONG CAC6005HANOI62110307NPS686963047C1B"
)
# trantuan94/vietqrjs, src/decryptor/vietqrv1.decryptor.spec.ts ('decrypt cash withdrawl
# service'): a NAPAS QRCASH code (cash at an ATM), with postal code and language template.
VIETQRJS_CASH_WITHDRAWAL = (
    "00020101021238500010A000000727012200069704030108123456780206QRCASH5204601153037045802VN"
    "5915NGUYEN HUU HUAN6005HANOI6105100006237052120190109155714228384707080000111164260002en"
    "0107shop vn0205Hanoi630476DA"
)
NAPAS_MERCHANT_EXAMPLES = [
    NAPAS_MERCHANT_STATIC,
    NAPAS_MERCHANT_STATIC_QRPUSH,
    NAPAS_MERCHANT_DYNAMIC,
    NAPAS_MERCHANT_DYNAMIC_QRPUSH,
]

# Every field of these is modelled, in the order encode() writes them.
REENCODABLE_EXAMPLES = [
    *NAPAS_MERCHANT_EXAMPLES,
    XUANNGHIA_DYNAMIC_DECODE_FIXTURE,
    XUANNGHIA_STATIC_README,
    XUANNGHIA_DYNAMIC_README,
    XUANNGHIA_ZALOPAY_README,
    SUBIZ_STATIC,
    SUBIZ_DYNAMIC,
    SUBIZ_DYNAMIC_CHUYEN_KHOAN,
    SUBIZ_DYNAMIC_LONG_PURPOSE,
]
VIETQR_EXAMPLES = [*REENCODABLE_EXAMPLES, XUANNGHIA_MOMO_README]
EMVCO_EXAMPLES = [*VIETQR_EXAMPLES, XUANNGHIA_VNPAY_README, VIETQRJS_CASH_WITHDRAWAL]

BANK_SAFE_CHARACTERS = string.ascii_letters + string.digits + " .-"


def tlv(field_id: str, value: str) -> str:
    return f"{field_id}{len(value):02d}{value}"


def signed(*fields: str) -> str:
    """The fields followed by a correct CRC field."""
    body = "".join(fields) + "6304"
    return body + f"{crc16_ccitt_false(body.encode()):04X}"


def merchant_account(
    *,
    guid: str | None = "A000000727",
    bank_bin: str | None = "970416",
    account: str | None = "257678859",
    service: str | None = "QRIBFTTA",
) -> str:
    beneficiary = "".join(
        tlv(field_id, value)
        for field_id, value in (("00", bank_bin), ("01", account))
        if value is not None
    )
    return "".join(
        tlv(field_id, value)
        for field_id, value in (("00", guid), ("01", beneficiary), ("02", service))
        if value
    )


def payment_fields(
    *,
    payload_format: str | None = "01",
    initiation: str | None = "12",
    account_info: str | None = None,
    currency: str | None = "704",
    amount: str | None = "1000",
    country: str | None = "VN",
    additional_data: str | None = None,
) -> list[str]:
    """A dynamic 1000 VND request to ACB 257678859, with any field replaced or left out."""
    if account_info is None:
        account_info = merchant_account()
    fields = (
        ("00", payload_format),
        ("01", initiation),
        ("38", account_info),
        ("53", currency),
        ("54", amount),
        ("58", country),
        ("62", additional_data),
    )
    return [tlv(field_id, value) for field_id, value in fields if value is not None]


def merchant_payment_fields(
    *, service: str | None, category: str = "5812", leave_out: str | None = None
) -> list[str]:
    """A static merchant payment like NAPAS's example 6.1.1, with any root field left out."""
    fields = [
        *payment_fields(
            initiation="11",
            account_info=merchant_account(
                bank_bin="970403", account="2112995044604025", service=service
            ),
            amount=None,
        )[:3],
        tlv("52", category),
        tlv("53", "704"),
        tlv("58", "VN"),
        tlv("59", "PHUONG CAC"),
        tlv("60", "HANOI"),
    ]
    return [field for field in fields if leave_out is None or not field.startswith(leave_out)]


# Printable ASCII and a few characters that take 2-3 bytes in UTF-8.
REPLACEMENT_CHARACTERS = "".join(map(chr, range(32, 127))) + "đĐệ€"


def single_character_changes(text: str) -> list[str]:
    """Every string one substitution (by REPLACEMENT_CHARACTERS) or one deletion away."""
    changed: list[str] = []
    for position, original in enumerate(text):
        head, tail = text[:position], text[position + 1 :]
        changed.extend(head + c + tail for c in REPLACEMENT_CHARACTERS if c != original)
        changed.append(head + tail)
    return changed


def rejection_code(text: str) -> str:
    with pytest.raises(VietQRError) as caught:
        decode(text)
    return caught.value.code


def encode_rejection_code(qr: VietQR) -> str:
    with pytest.raises(VietQRError) as caught:
        encode(qr)
    return caught.value.code


def optional(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.none() | strategy


def bank_safe_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=BANK_SAFE_CHARACTERS, min_size=1, max_size=max_size)


@st.composite
def payment_requests(draw: st.DrawFn) -> VietQR:
    """Transfers to an account or card, and merchant payments (with QRPUSH or without 38.02)."""
    dynamic = draw(st.booleans())
    amounts = st.integers(min_value=1, max_value=10**13 - 1)
    service_code = draw(st.sampled_from([*ServiceCode, None]))
    merchant = service_code in (None, ServiceCode.PAYMENT)
    merchant_categories = st.text(alphabet=string.digits, min_size=4, max_size=4)
    additional = [draw(optional(bank_safe_text(25))) for _ in range(5)]
    # Field 62 holds at most 99 characters, less than five full 25-character labels.
    assume(sum(len(value) + 4 for value in additional if value is not None) <= 99)
    bill_number, store, reference, terminal, purpose = additional
    return VietQR(
        bank_bin=draw(st.text(alphabet=string.digits, min_size=6, max_size=6)),
        account=draw(
            st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=19)
        ),
        amount=draw(amounts) if dynamic else draw(st.none() | amounts),
        dynamic=dynamic,
        service_code=service_code,
        merchant_category=draw(merchant_categories if merchant else optional(merchant_categories)),
        bill_number=bill_number,
        store=store,
        reference=reference,
        terminal=terminal,
        purpose=purpose,
        merchant_name=draw(bank_safe_text(25) if merchant else optional(bank_safe_text(25))),
        merchant_city=draw(bank_safe_text(15) if merchant else optional(bank_safe_text(15))),
    )


class TestCrc16CcittFalse:
    def test_standard_check_value(self) -> None:
        assert crc16_ccitt_false(b"123456789") == 0x29B1

    def test_empty_input_is_the_initial_value(self) -> None:
        assert crc16_ccitt_false(b"") == 0xFFFF

    @pytest.mark.parametrize("published", EMVCO_EXAMPLES)
    def test_matches_the_last_four_hex_digits_of_published_payloads(self, published: str) -> None:
        assert published[-8:-4] == "6304"
        assert f"{crc16_ccitt_false(published[:-4].encode()):04X}" == published[-4:]


class TestPublishedExamples:
    @pytest.mark.parametrize("published", VIETQR_EXAMPLES)
    def test_decoder_accepts_published_payload(self, published: str) -> None:
        decoded = decode(published)
        assert decoded.bank_bin.isdigit()

    @pytest.mark.parametrize("published", REENCODABLE_EXAMPLES)
    def test_reencoding_gives_back_the_published_string(self, published: str) -> None:
        assert encode(decode(published)) == published

    def test_dynamic_fixture_decodes_to_the_documented_values(self) -> None:
        assert decode(XUANNGHIA_DYNAMIC_DECODE_FIXTURE) == VietQR(
            bank_bin="970416",
            account="257678859",
            amount=1000,
            dynamic=True,
            service_code=ServiceCode.TO_ACCOUNT,
            purpose="Chuyen tien",
        )

    def test_encoding_the_documented_values_gives_the_published_string(self) -> None:
        static = VietQR(bank_bin="970416", account="257678859")
        dynamic = VietQR(
            bank_bin="970416",
            account="257678859",
            amount=10000,
            dynamic=True,
            purpose="Chuyen tien",
        )
        assert encode(static) == XUANNGHIA_STATIC_README
        assert encode(dynamic) == XUANNGHIA_DYNAMIC_README

    def test_alphanumeric_account_and_25_character_purpose_decode(self) -> None:
        decoded = decode(SUBIZ_DYNAMIC_LONG_PURPOSE)
        assert decoded.account == "0023457923442ASDFLJ"
        assert decoded.purpose == "chuyen khoan alsdkf laksj"
        assert decoded.amount == 40123

    def test_unmodelled_fields_are_ignored_so_reencoding_drops_them(self) -> None:
        decoded = decode(XUANNGHIA_MOMO_README)
        assert decoded.reference == "MOMOW2W34875080"
        assert decoded.account == "99MM24011M34875080"
        reencoded = encode(decoded)
        assert "8003046" not in reencoded
        assert decode(reencoded) == decoded

    def test_published_wrong_crc_is_rejected(self) -> None:
        assert rejection_code(XUANNGHIA_INVALID_CRC_FIXTURE) == "crc_mismatch"

    def test_non_napas_emvco_code_is_not_a_vietqr(self) -> None:
        assert rejection_code(XUANNGHIA_VNPAY_README) == "missing_field"


class TestRoundTrip:
    def test_static_without_optional_fields(self) -> None:
        qr = VietQR(bank_bin="970436", account="1023456789")
        text = encode(qr)
        assert text.startswith("000201010211")
        assert "53037045802VN" in text
        assert decode(text) == qr

    def test_static_with_amount(self) -> None:
        qr = VietQR(bank_bin="970436", account="1023456789", amount=25000)
        assert decode(encode(qr)) == qr

    def test_dynamic_with_every_optional_field(self) -> None:
        qr = VietQR(
            bank_bin="970422",
            account="0023457923442",
            amount=1_943_000,
            dynamic=True,
            service_code=ServiceCode.TO_ACCOUNT,
            bill_number="HD-2024.0001",
            reference="CP 7781",
            terminal="GATE-03",
            purpose="Parking 2h Ben Thanh",
            merchant_name="CityPass Parking",
            merchant_city="Ho Chi Minh",
        )
        text = encode(qr)
        assert text.startswith("000201010212")
        assert decode(text) == qr

    def test_dynamic_to_card(self) -> None:
        qr = VietQR(
            bank_bin="970403",
            account="9704031101234567",
            amount=180000,
            dynamic=True,
            service_code=ServiceCode.TO_CARD,
            bill_number="NPS6869",
            purpose="thanh toan don hang",
        )
        text = encode(qr)
        assert "0208QRIBFTTC" in text
        assert decode(text) == qr

    def test_fields_at_their_maximum_lengths(self) -> None:
        qr = VietQR(
            bank_bin="970415",
            account="A" * 19,
            amount=10**13 - 1,
            dynamic=True,
            reference="R" * 25,
            terminal="T" * 25,
            purpose="P" * 25,
            merchant_name="N" * 25,
            merchant_city="C" * 15,
        )
        assert decode(encode(qr)) == qr

    @given(payment_requests())
    def test_any_valid_request_round_trips(self, qr: VietQR) -> None:
        text = encode(qr)
        assert len(text) <= MAX_PAYLOAD_LENGTH
        assert decode(text) == qr
        assert encode(decode(text)) == text

    @given(payment_requests(), st.data())
    def test_any_single_character_corruption_is_rejected(
        self, qr: VietQR, data: st.DataObject
    ) -> None:
        text = encode(qr)
        position = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
        replacement = data.draw(
            st.sampled_from(string.ascii_letters + string.digits + " ").filter(
                lambda character: character != text[position]
            )
        )
        with pytest.raises(VietQRError):
            decode(text[:position] + replacement + text[position + 1 :])

    def test_generated_code_survives_png_and_zxing(self) -> None:
        qr = VietQR(
            bank_bin="970422",
            account="0023457923442",
            amount=35000,
            dynamic=True,
            reference="CP-20240611-0042",
            purpose="CityPass parking",
            merchant_name="CityPass",
        )
        text = encode(qr)
        scanned = decode_png(render_png(text))
        assert scanned == [text]
        assert decode(scanned[0]) == qr


class TestCorruption:
    def test_every_single_character_change_of_a_published_code_is_refused(self) -> None:
        tried, accepted = 0, []
        for published in VIETQR_EXAMPLES:
            for mutated in single_character_changes(published):
                tried += 1
                try:
                    decode(mutated)
                except VietQRError:
                    continue
                accepted.append(mutated)
        assert tried == sum(
            len(text) * (len(REPLACEMENT_CHARACTERS) - 1) + len(text) for text in VIETQR_EXAMPLES
        )
        assert accepted == []


class TestMerchantPayment:
    """NAPAS: 38.02 is conditional; a merchant payment may leave it out (QRPUSH by default)."""

    def test_napas_example_without_service_code_decodes_to_its_values(self) -> None:
        assert decode(NAPAS_MERCHANT_STATIC) == VietQR(
            bank_bin="970403",
            account="2112995044604025",
            service_code=None,
            merchant_category="5812",
            store="NPS6869",
            merchant_name="PHUONG CAC",
            merchant_city="HANOI",
        )

    def test_napas_dynamic_example_with_qrpush_decodes_to_its_values(self) -> None:
        decoded = decode(NAPAS_MERCHANT_DYNAMIC_QRPUSH)
        assert (decoded.service_code, decoded.amount, decoded.dynamic) == (
            ServiceCode.PAYMENT,
            180000,
            True,
        )
        assert decoded.merchant_payment

    def test_transfers_are_not_merchant_payments(self) -> None:
        assert not decode(XUANNGHIA_STATIC_README).merchant_payment
        assert not decode(SUBIZ_DYNAMIC).merchant_payment

    @pytest.mark.parametrize("service", [None, "QRPUSH"], ids=["no-service-code", "qrpush"])
    @pytest.mark.parametrize("left_out", ["52", "59", "60"])
    def test_merchant_payment_without_category_name_or_city_is_rejected(
        self, service: str | None, left_out: str
    ) -> None:
        text = signed(*merchant_payment_fields(service=service, leave_out=left_out))
        assert rejection_code(text) == "missing_field"

    @pytest.mark.parametrize("service", [None, "QRPUSH"], ids=["no-service-code", "qrpush"])
    def test_merchant_payment_with_category_name_and_city_is_accepted(
        self, service: str | None
    ) -> None:
        decoded = decode(signed(*merchant_payment_fields(service=service)))
        assert (decoded.account, decoded.merchant_category) == ("2112995044604025", "5812")

    @pytest.mark.parametrize(
        ("category", "code"),
        [("581", "invalid_field"), ("58A2", "invalid_field"), ("58120", "value_too_long")],
    )
    def test_merchant_category_not_four_digits_is_rejected(self, category: str, code: str) -> None:
        text = signed(*merchant_payment_fields(service=None, category=category))
        assert rejection_code(text) == code

    def test_published_cash_withdrawal_code_is_not_a_payment(self) -> None:
        with pytest.raises(VietQRError, match="cash withdrawal") as caught:
            decode(VIETQRJS_CASH_WITHDRAWAL)
        assert caught.value.code == "invalid_field"

    def test_encoding_without_service_code_leaves_38_02_out(self) -> None:
        qr = decode(NAPAS_MERCHANT_STATIC)
        assert "0208" not in encode(qr)
        assert encode(qr) == NAPAS_MERCHANT_STATIC

    @pytest.mark.parametrize("missing", ["merchant_category", "merchant_name", "merchant_city"])
    def test_encoding_a_merchant_payment_needs_category_name_and_city(self, missing: str) -> None:
        values: dict[str, object] = {
            "bank_bin": "970403",
            "account": "2112995044604025",
            "service_code": None,
            "merchant_category": "5812",
            "merchant_name": "PHUONG CAC",
            "merchant_city": "HANOI",
        }
        del values[missing]
        assert encode_rejection_code(VietQR(**values)) == "missing_field"  # type: ignore[arg-type]

    def test_encoding_a_category_that_is_not_four_digits_is_rejected(self) -> None:
        qr = VietQR(bank_bin="970416", account="257678859", merchant_category="58120")
        assert encode_rejection_code(qr) == "invalid_field"


class TestDecode:
    def test_well_formed_request_is_accepted(self) -> None:
        assert decode(signed(*payment_fields())) == VietQR(
            bank_bin="970416", account="257678859", amount=1000, dynamic=True
        )

    def test_wrong_crc_is_rejected(self) -> None:
        text = encode(VietQR(bank_bin="970416", account="257678859"))
        wrong_digit = "0" if text[-1] != "0" else "1"
        assert rejection_code(text[:-1] + wrong_digit) == "crc_mismatch"

    def test_changed_content_under_the_old_crc_is_rejected(self) -> None:
        tampered = XUANNGHIA_DYNAMIC_README.replace("5405100005", "5405900005")
        assert rejection_code(tampered) == "crc_mismatch"

    def test_truncated_field_is_rejected(self) -> None:
        assert rejection_code(XUANNGHIA_DYNAMIC_README[:-10]) == "truncated_field"

    def test_length_running_past_the_end_is_rejected(self) -> None:
        assert rejection_code("000201010212" + "5899VN") == "truncated_field"

    def test_fewer_than_four_header_characters_is_rejected(self) -> None:
        assert rejection_code("00020101021263") == "truncated_field"

    def test_nested_truncated_field_is_rejected(self) -> None:
        broken_account_info = tlv("00", "A000000727") + "0150" + "0006970416"
        text = signed(*payment_fields(account_info=broken_account_info))
        assert rejection_code(text) == "truncated_field"

    def test_over_long_additional_data_value_is_rejected(self) -> None:
        text = signed(*payment_fields(additional_data=tlv("08", "x" * 26)))
        assert rejection_code(text) == "value_too_long"

    def test_over_long_amount_is_rejected(self) -> None:
        text = signed(*payment_fields(amount="1" * 14))
        assert rejection_code(text) == "value_too_long"

    def test_over_long_account_is_rejected(self) -> None:
        text = signed(*payment_fields(account_info=merchant_account(account="1" * 20)))
        assert rejection_code(text) == "value_too_long"

    def test_over_long_merchant_name_is_rejected(self) -> None:
        text = signed(*payment_fields(), tlv("59", "N" * 26))
        assert rejection_code(text) == "value_too_long"

    def test_over_long_payload_is_rejected(self) -> None:
        unreserved = [tlv(f"{field_id}", "u" * 95) for field_id in range(80, 86)]
        text = signed(*payment_fields(), *unreserved)
        assert len(text) > MAX_PAYLOAD_LENGTH
        assert rejection_code(text) == "value_too_long"

    def test_duplicate_top_level_field_is_rejected(self) -> None:
        text = signed(*payment_fields(), tlv("53", "704"))
        assert rejection_code(text) == "duplicate_field"

    def test_duplicate_nested_field_is_rejected(self) -> None:
        text = signed(*payment_fields(additional_data=tlv("08", "a") + tlv("08", "b")))
        assert rejection_code(text) == "duplicate_field"

    @pytest.mark.parametrize(
        "fields",
        [
            pytest.param(payment_fields(currency=None), id="currency"),
            pytest.param(payment_fields(country=None), id="country"),
            pytest.param(payment_fields(initiation=None), id="point-of-initiation"),
            pytest.param(payment_fields(amount=None), id="amount-of-dynamic-code"),
            pytest.param(payment_fields(account_info=tlv("00", "A000000727")), id="beneficiary"),
            pytest.param(payment_fields(account_info=merchant_account(guid=None)), id="guid"),
            # Without 38.02 it is a merchant payment, which needs 52, 59 and 60.
            pytest.param(payment_fields(account_info=merchant_account(service=None)), id="service"),
            pytest.param(
                payment_fields(account_info=merchant_account(bank_bin=None)), id="bank-bin"
            ),
            pytest.param(payment_fields(account_info=merchant_account(account=None)), id="account"),
            pytest.param(
                [field for field in payment_fields() if not field.startswith("38")],
                id="merchant-account",
            ),
        ],
    )
    def test_missing_required_field_is_rejected(self, fields: list[str]) -> None:
        assert rejection_code(signed(*fields)) == "missing_field"

    def test_missing_crc_is_rejected(self) -> None:
        assert rejection_code("".join(payment_fields())) == "missing_field"

    def test_crc_not_last_is_rejected(self) -> None:
        fields = payment_fields()
        body = "".join(fields[:-1]) + "6304"
        text = body + f"{crc16_ccitt_false(body.encode()):04X}" + fields[-1]
        assert rejection_code(text) == "crc_not_last"

    @pytest.mark.parametrize(
        "fields",
        [
            pytest.param(payment_fields(payload_format="02"), id="payload-format-not-01"),
            pytest.param(payment_fields(initiation="13"), id="initiation-not-11-or-12"),
            pytest.param(payment_fields(currency="840"), id="currency-not-704"),
            pytest.param(payment_fields(country="US"), id="country-not-VN"),
            pytest.param(payment_fields(amount="12.50"), id="amount-with-decimals"),
            pytest.param(payment_fields(amount="1e5"), id="amount-not-digits"),
            pytest.param(payment_fields(amount="0"), id="amount-zero"),
            pytest.param(payment_fields(amount="01000"), id="amount-leading-zero"),
            pytest.param(
                payment_fields(account_info=merchant_account(bank_bin="97041")), id="bin-5-digits"
            ),
            pytest.param(
                payment_fields(account_info=merchant_account(bank_bin="97041A")), id="bin-letter"
            ),
            pytest.param(
                payment_fields(account_info=merchant_account(account="2576-78859")),
                id="account-punctuation",
            ),
            pytest.param(
                payment_fields(account_info=merchant_account(guid="A000000775")), id="wrong-guid"
            ),
            pytest.param(
                payment_fields(account_info=merchant_account(service="QRIBFTTX")),
                id="unknown-service-code",
            ),
            pytest.param(
                payment_fields(account_info=merchant_account(service="QRCASH")),
                id="cash-withdrawal-service-code",
            ),
            pytest.param(
                [payment_fields()[1], payment_fields()[0], *payment_fields()[2:]],
                id="payload-format-not-first",
            ),
            pytest.param([*payment_fields(), "5900"], id="empty-value"),
            pytest.param([*payment_fields(), "5A02VN"], id="non-digit-id"),
        ],
    )
    def test_invalid_value_is_rejected(self, fields: list[str]) -> None:
        assert rejection_code(signed(*fields)) == "invalid_field"

    def test_lowercase_crc_is_rejected(self) -> None:
        assert XUANNGHIA_STATIC_README.endswith("AE9F")
        assert rejection_code(XUANNGHIA_STATIC_README[:-4] + "ae9f") == "invalid_field"

    def test_error_is_a_value_error_with_a_code_and_a_message(self) -> None:
        with pytest.raises(ValueError, match="CRC") as caught:
            decode(XUANNGHIA_INVALID_CRC_FIXTURE)
        assert isinstance(caught.value, VietQRError)
        assert caught.value.code == "crc_mismatch"
        assert caught.value.message == str(caught.value)


class TestEncode:
    @pytest.mark.parametrize("amount", [0, -1, -50_000])
    def test_non_positive_amount_of_dynamic_code_is_rejected(self, amount: int) -> None:
        qr = VietQR(bank_bin="970416", account="257678859", amount=amount, dynamic=True)
        assert encode_rejection_code(qr) == "invalid_field"

    def test_zero_amount_of_static_code_is_rejected(self) -> None:
        qr = VietQR(bank_bin="970416", account="257678859", amount=0)
        assert encode_rejection_code(qr) == "invalid_field"

    def test_boolean_amount_is_rejected(self) -> None:
        qr = VietQR(bank_bin="970416", account="257678859", amount=True, dynamic=True)
        assert encode_rejection_code(qr) == "invalid_field"

    def test_dynamic_code_without_amount_is_rejected(self) -> None:
        qr = VietQR(bank_bin="970416", account="257678859", dynamic=True)
        assert encode_rejection_code(qr) == "missing_field"

    def test_amount_over_13_digits_is_rejected(self) -> None:
        qr = VietQR(bank_bin="970416", account="257678859", amount=10**13, dynamic=True)
        assert encode_rejection_code(qr) == "value_too_long"

    @pytest.mark.parametrize(
        "reference",
        ["HD#1", "Chuyển tiền", "a_b", "pay/ref", "line\nbreak", ""],
    )
    def test_reference_outside_the_bank_safe_characters_is_rejected(self, reference: str) -> None:
        qr = VietQR(bank_bin="970416", account="257678859", reference=reference)
        assert encode_rejection_code(qr) == "invalid_field"

    def test_reference_over_25_characters_is_rejected(self) -> None:
        qr = VietQR(bank_bin="970416", account="257678859", reference="R" * 26)
        assert encode_rejection_code(qr) == "value_too_long"

    def test_purpose_with_diacritics_is_rejected(self) -> None:
        qr = VietQR(bank_bin="970416", account="257678859", purpose="ủng hộ")
        assert encode_rejection_code(qr) == "invalid_field"

    def test_merchant_city_over_15_characters_is_rejected(self) -> None:
        qr = VietQR(bank_bin="970416", account="257678859", merchant_city="C" * 16)
        assert encode_rejection_code(qr) == "value_too_long"

    @pytest.mark.parametrize("bank_bin", ["97041", "9704160", "97041A", ""])
    def test_bank_bin_not_six_digits_is_rejected(self, bank_bin: str) -> None:
        qr = VietQR(bank_bin=bank_bin, account="257678859")
        assert encode_rejection_code(qr) == "invalid_field"

    def test_account_over_19_characters_is_rejected(self) -> None:
        qr = VietQR(bank_bin="970416", account="1" * 20)
        assert encode_rejection_code(qr) == "value_too_long"

    @pytest.mark.parametrize("account", ["", "2576-78859", "2576 78859"])
    def test_account_not_letters_and_digits_is_rejected(self, account: str) -> None:
        qr = VietQR(bank_bin="970416", account=account)
        assert encode_rejection_code(qr) == "invalid_field"

    def test_unknown_service_code_is_rejected(self) -> None:
        qr = VietQR(
            bank_bin="970416",
            account="257678859",
            service_code="QRIBFTTX",  # type: ignore[arg-type]
        )
        assert encode_rejection_code(qr) == "invalid_field"

    def test_additional_data_over_99_characters_is_rejected(self) -> None:
        qr = VietQR(
            bank_bin="970416",
            account="257678859",
            bill_number="B" * 25,
            reference="R" * 25,
            terminal="T" * 25,
            purpose="P" * 25,
        )
        assert encode_rejection_code(qr) == "value_too_long"

    def test_crc_is_four_uppercase_hex_digits_after_6304(self) -> None:
        text = encode(VietQR(bank_bin="970454", account="99ZP24009M07248267"))
        assert text == XUANNGHIA_ZALOPAY_README
        assert text[-8:-4] == "6304"
        assert text[-4:] == text[-4:].upper()
