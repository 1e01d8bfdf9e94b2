"""VietQR payloads (NAPAS on EMVCo merchant-presented mode): encode, decode, CRC.

Pure functions, no I/O. Field lengths count characters; the CRC covers the UTF-8 bytes of
everything up to and including the literal ``6304``. Encoding only ever emits ASCII.

Field 38 (NAPAS QR Switching v1.5.2, and its VietQR transfer profile of 2021): the GUID
(38.00) and the beneficiary organisation (38.01: bank BIN 00 and account, card or merchant
id 01) are mandatory; the service code (38.02) is conditional. Transfers carry QRIBFTTA (to
an account) or QRIBFTTC (to a card); a merchant payment may carry QRPUSH or leave 38.02 out,
and then needs what EMVCo requires of every merchant: category code (52), name (59) and
city (60). QRCASH (cash at an ATM) is not a payment request and is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

ErrorCode = Literal[
    "crc_mismatch",
    "truncated_field",
    "value_too_long",
    "missing_field",
    "invalid_field",
    "duplicate_field",
    "crc_not_last",
]


class VietQRError(ValueError):
    """Not a valid VietQR payload or request; `code` is stable, the message is for people."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


class ServiceCode(StrEnum):
    TO_ACCOUNT = "QRIBFTTA"
    TO_CARD = "QRIBFTTC"
    PAYMENT = "QRPUSH"


@dataclass(frozen=True, slots=True)
class VietQR:
    """One VietQR payment request: who gets paid, optionally how much and why.

    `service_code` None is a merchant payment whose field 38 has no service code (NAPAS
    treats it as QRPUSH); `account` is then the merchant id at the acquiring bank `bank_bin`.
    """

    bank_bin: str
    account: str
    amount: int | None = None
    dynamic: bool = False
    service_code: ServiceCode | None = ServiceCode.TO_ACCOUNT
    merchant_category: str | None = None
    bill_number: str | None = None
    store: str | None = None
    reference: str | None = None
    terminal: str | None = None
    purpose: str | None = None
    merchant_name: str | None = None
    merchant_city: str | None = None

    @property
    def merchant_payment(self) -> bool:
        return self.service_code in (None, ServiceCode.PAYMENT)


MAX_PAYLOAD_LENGTH: Final = 512
NAPAS_GUID: Final = "A000000727"


class _Field:
    PAYLOAD_FORMAT: Final = "00"
    POINT_OF_INITIATION: Final = "01"
    MERCHANT_ACCOUNT: Final = "38"
    MERCHANT_CATEGORY: Final = "52"
    CURRENCY: Final = "53"
    AMOUNT: Final = "54"
    COUNTRY: Final = "58"
    MERCHANT_NAME: Final = "59"
    MERCHANT_CITY: Final = "60"
    ADDITIONAL_DATA: Final = "62"
    CRC: Final = "63"


class _MerchantAccountField:
    GUID: Final = "00"
    BENEFICIARY: Final = "01"
    SERVICE_CODE: Final = "02"


class _BeneficiaryField:
    BANK_BIN: Final = "00"
    ACCOUNT: Final = "01"


class _AdditionalDataField:
    BILL_NUMBER: Final = "01"
    STORE_LABEL: Final = "03"
    REFERENCE_LABEL: Final = "05"
    TERMINAL_LABEL: Final = "07"
    PURPOSE: Final = "08"


_PAYLOAD_FORMAT_VERSION: Final = "01"
_STATIC: Final = "11"
_DYNAMIC: Final = "12"
_VND: Final = "704"
_VIETNAM: Final = "VN"
_CRC_HEADER: Final = _Field.CRC + "04"
_CASH_WITHDRAWAL: Final = "QRCASH"
_MAX_TEMPLATE_LENGTH: Final = 99
_MAX_ACCOUNT_LENGTH: Final = 19
_MAX_AMOUNT_LENGTH: Final = 13
_MAX_MERCHANT_NAME_LENGTH: Final = 25
_MAX_MERCHANT_CITY_LENGTH: Final = 15
_MAX_ADDITIONAL_DATA_LENGTH: Final = 25

# EMVCo maximum value lengths; ids not listed are bounded only by the two-digit length.
_TOP_LEVEL_MAX_LENGTH: Final[dict[str, int]] = {
    "00": 2,
    "01": 2,
    _Field.MERCHANT_CATEGORY: 4,
    "53": 3,
    "54": _MAX_AMOUNT_LENGTH,
    "55": 2,
    "56": 13,
    "57": 5,
    "58": 2,
    "59": _MAX_MERCHANT_NAME_LENGTH,
    "60": _MAX_MERCHANT_CITY_LENGTH,
    "61": 10,
    "63": 4,
}
_MERCHANT_ACCOUNT_MAX_LENGTH: Final[dict[str, int]] = {_MerchantAccountField.GUID: 32}
_BENEFICIARY_MAX_LENGTH: Final[dict[str, int]] = {_BeneficiaryField.ACCOUNT: _MAX_ACCOUNT_LENGTH}
_ADDITIONAL_DATA_MAX_LENGTH: Final[dict[str, int]] = {
    **{f"{sub_id:02d}": _MAX_ADDITIONAL_DATA_LENGTH for sub_id in range(1, 9)},
    "09": 3,
}

_TWO_DIGITS: Final = re.compile(r"[0-9]{2}")
_BANK_BIN_PATTERN: Final = re.compile(r"[0-9]{6}")
_ACCOUNT_PATTERN: Final = re.compile(r"[A-Za-z0-9]+")
_AMOUNT_PATTERN: Final = re.compile(r"[1-9][0-9]*")
_MERCHANT_CATEGORY_PATTERN: Final = re.compile(r"[0-9]{4}")  # ISO 18245
_CRC_PATTERN: Final = re.compile(r"[0-9A-F]{4}")
# Bank apps reject or mangle anything else in transfer descriptions, diacritics included.
_BANK_SAFE_TEXT: Final = re.compile(r"[A-Za-z0-9 .-]+")


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def _crc_hex(text: str) -> str:
    return f"{crc16_ccitt_false(text.encode('utf-8')):04X}"


def _label(field_id: str, parent: str = "") -> str:
    return f"field {parent}.{field_id}" if parent else f"field {field_id}"


def _parse_fields(text: str, parent: str = "") -> dict[str, str]:
    where = f"field {parent}" if parent else "the payload"
    fields: dict[str, str] = {}
    position = 0
    while position < len(text):
        header = text[position : position + 4]
        if len(header) < 4:
            raise VietQRError(
                "truncated_field",
                f"{where} has {len(header)} character(s) left at offset {position},"
                " too few for an id and a length",
            )
        field_id, declared_length = header[:2], header[2:]
        if not (_TWO_DIGITS.fullmatch(field_id) and _TWO_DIGITS.fullmatch(declared_length)):
            raise VietQRError(
                "invalid_field",
                f"{where} has {header!r} at offset {position}"
                " where a two-digit id and a two-digit length belong",
            )
        label = _label(field_id, parent)
        length = int(declared_length)
        if length == 0:
            raise VietQRError("invalid_field", f"{label} has an empty value")
        start = position + 4
        end = start + length
        if end > len(text):
            raise VietQRError(
                "truncated_field",
                f"{label} declares {length} characters but only {len(text) - start} remain",
            )
        if field_id in fields:
            raise VietQRError("duplicate_field", f"{label} appears more than once")
        fields[field_id] = text[start:end]
        position = end
    return fields


def _check_max_lengths(fields: dict[str, str], limits: dict[str, int], parent: str = "") -> None:
    for field_id, value in fields.items():
        limit = limits.get(field_id)
        if limit is not None and len(value) > limit:
            raise VietQRError(
                "value_too_long",
                f"{_label(field_id, parent)} is {len(value)} characters; the limit is {limit}",
            )


def _required(fields: dict[str, str], field_id: str, name: str, parent: str = "") -> str:
    value = fields.get(field_id)
    if value is None:
        raise VietQRError("missing_field", f"{_label(field_id, parent)} ({name}) is required")
    return value


def _expect(value: str, expected: str, name: str) -> None:
    if value != expected:
        raise VietQRError("invalid_field", f"{name} is {value!r}; expected {expected!r}")


def _service_code(value: str) -> ServiceCode:
    if value == _CASH_WITHDRAWAL:
        raise VietQRError(
            "invalid_field", f"service code {value} is a cash withdrawal at an ATM, not a payment"
        )
    try:
        return ServiceCode(value)
    except ValueError:
        raise VietQRError(
            "invalid_field",
            f"service code {value!r} is none of {ServiceCode.TO_ACCOUNT.value} (to account),"
            f" {ServiceCode.TO_CARD.value} (to card) and {ServiceCode.PAYMENT.value} (merchant)",
        ) from None


def _check_crc(text: str, fields: dict[str, str]) -> None:
    declared = _required(fields, _Field.CRC, "CRC")
    if next(reversed(fields)) != _Field.CRC:
        raise VietQRError("crc_not_last", f"{_label(_Field.CRC)} (CRC) must be the last field")
    if not _CRC_PATTERN.fullmatch(declared):
        raise VietQRError("invalid_field", f"CRC {declared!r} is not 4 uppercase hex digits")
    computed = _crc_hex(text[:-4])
    if declared != computed:
        raise VietQRError("crc_mismatch", f"CRC is {declared} but the payload's CRC is {computed}")


def _decode_merchant_account(value: str) -> tuple[str, str, ServiceCode | None]:
    parent = _Field.MERCHANT_ACCOUNT
    fields = _parse_fields(value, parent)
    _check_max_lengths(fields, _MERCHANT_ACCOUNT_MAX_LENGTH, parent)
    guid = _required(fields, _MerchantAccountField.GUID, "GUID", parent)
    _expect(guid, NAPAS_GUID, "merchant account GUID")

    beneficiary_parent = f"{parent}.{_MerchantAccountField.BENEFICIARY}"
    beneficiary = _parse_fields(
        _required(fields, _MerchantAccountField.BENEFICIARY, "beneficiary organisation", parent),
        beneficiary_parent,
    )
    _check_max_lengths(beneficiary, _BENEFICIARY_MAX_LENGTH, beneficiary_parent)
    bank_bin = _required(beneficiary, _BeneficiaryField.BANK_BIN, "bank BIN", beneficiary_parent)
    if not _BANK_BIN_PATTERN.fullmatch(bank_bin):
        raise VietQRError("invalid_field", f"bank BIN {bank_bin!r} is not exactly 6 digits")
    account = _required(beneficiary, _BeneficiaryField.ACCOUNT, "account", beneficiary_parent)
    if not _ACCOUNT_PATTERN.fullmatch(account):
        raise VietQRError("invalid_field", f"account {account!r} is not letters and digits")

    service = fields.get(_MerchantAccountField.SERVICE_CODE)
    return bank_bin, account, None if service is None else _service_code(service)


def _decode_amount(value: str | None) -> int | None:
    if value is None:
        return None
    if not _AMOUNT_PATTERN.fullmatch(value):
        raise VietQRError(
            "invalid_field",
            f"amount {value!r} is not a positive whole number of VND without leading zeros",
        )
    return int(value)


def _check_merchant_category(value: str | None) -> None:
    if value is not None and not _MERCHANT_CATEGORY_PATTERN.fullmatch(value):
        raise VietQRError("invalid_field", f"merchant category code {value!r} is not 4 digits")


def _check_merchant_fields(qr: VietQR) -> None:
    """What EMVCo requires of every merchant-presented code, which a transfer may leave out."""
    for value, field_id, name in (
        (qr.merchant_category, _Field.MERCHANT_CATEGORY, "merchant category code"),
        (qr.merchant_name, _Field.MERCHANT_NAME, "merchant name"),
        (qr.merchant_city, _Field.MERCHANT_CITY, "merchant city"),
    ):
        if value is None:
            raise VietQRError(
                "missing_field",
                f"{_label(field_id)} ({name}) is required in a merchant payment"
                f" (service code {ServiceCode.PAYMENT.value} or none)",
            )


def decode(text: str) -> VietQR:
    """Parse and validate a VietQR payload; raise VietQRError on anything malformed.

    Well-formed fields this module does not model (merchant category code, tips, unreserved
    templates, other additional-data labels) are checked for structure, then ignored.
    """
    if len(text) > MAX_PAYLOAD_LENGTH:
        raise VietQRError(
            "value_too_long",
            f"payload is {len(text)} characters; the limit is {MAX_PAYLOAD_LENGTH}",
        )
    fields = _parse_fields(text)
    _check_crc(text, fields)
    _check_max_lengths(fields, _TOP_LEVEL_MAX_LENGTH)

    if next(iter(fields)) != _Field.PAYLOAD_FORMAT:
        raise VietQRError(
            "invalid_field",
            f"{_label(_Field.PAYLOAD_FORMAT)} (payload format indicator) must come first",
        )
    _expect(fields[_Field.PAYLOAD_FORMAT], _PAYLOAD_FORMAT_VERSION, "payload format indicator")
    initiation = _required(fields, _Field.POINT_OF_INITIATION, "point of initiation")
    if initiation not in (_STATIC, _DYNAMIC):
        raise VietQRError(
            "invalid_field",
            f"point of initiation {initiation!r} is neither {_STATIC!r} (static)"
            f" nor {_DYNAMIC!r} (dynamic)",
        )
    dynamic = initiation == _DYNAMIC
    bank_bin, account, service_code = _decode_merchant_account(
        _required(fields, _Field.MERCHANT_ACCOUNT, "merchant account information")
    )
    _expect(_required(fields, _Field.CURRENCY, "currency"), _VND, "currency")
    amount = _decode_amount(fields.get(_Field.AMOUNT))
    if dynamic and amount is None:
        raise VietQRError(
            "missing_field", f"{_label(_Field.AMOUNT)} (amount) is required in a dynamic VietQR"
        )
    _expect(_required(fields, _Field.COUNTRY, "country code"), _VIETNAM, "country code")
    merchant_category = fields.get(_Field.MERCHANT_CATEGORY)
    _check_merchant_category(merchant_category)

    additional: dict[str, str] = {}
    if _Field.ADDITIONAL_DATA in fields:
        additional = _parse_fields(fields[_Field.ADDITIONAL_DATA], _Field.ADDITIONAL_DATA)
        _check_max_lengths(additional, _ADDITIONAL_DATA_MAX_LENGTH, _Field.ADDITIONAL_DATA)

    qr = VietQR(
        bank_bin=bank_bin,
        account=account,
        amount=amount,
        dynamic=dynamic,
        service_code=service_code,
        merchant_category=merchant_category,
        bill_number=additional.get(_AdditionalDataField.BILL_NUMBER),
        store=additional.get(_AdditionalDataField.STORE_LABEL),
        reference=additional.get(_AdditionalDataField.REFERENCE_LABEL),
        terminal=additional.get(_AdditionalDataField.TERMINAL_LABEL),
        purpose=additional.get(_AdditionalDataField.PURPOSE),
        merchant_name=fields.get(_Field.MERCHANT_NAME),
        merchant_city=fields.get(_Field.MERCHANT_CITY),
    )
    if qr.merchant_payment:
        _check_merchant_fields(qr)
    return qr


def _too_long(name: str, length: int, limit: int) -> VietQRError:
    return VietQRError("value_too_long", f"{name} is {length} characters; the limit is {limit}")


def _tlv(field_id: str, value: str, name: str) -> str:
    if len(value) > _MAX_TEMPLATE_LENGTH:
        raise _too_long(name, len(value), _MAX_TEMPLATE_LENGTH)
    return f"{field_id}{len(value):02d}{value}"


def _check_text(value: str | None, limit: int, name: str) -> None:
    if value is None:
        return
    if len(value) > limit:
        raise _too_long(name, len(value), limit)
    if not _BANK_SAFE_TEXT.fullmatch(value):
        raise VietQRError(
            "invalid_field",
            f"{name} {value!r} must be non-empty and use only letters, digits, space, '.' and '-'",
        )


def _check_request(qr: VietQR) -> None:
    if not _BANK_BIN_PATTERN.fullmatch(qr.bank_bin):
        raise VietQRError("invalid_field", f"bank BIN {qr.bank_bin!r} is not exactly 6 digits")
    if len(qr.account) > _MAX_ACCOUNT_LENGTH:
        raise _too_long("account", len(qr.account), _MAX_ACCOUNT_LENGTH)
    if not _ACCOUNT_PATTERN.fullmatch(qr.account):
        raise VietQRError(
            "invalid_field", f"account {qr.account!r} must be non-empty letters and digits"
        )
    if qr.amount is None:
        if qr.dynamic:
            raise VietQRError("missing_field", "a dynamic VietQR needs an amount")
    # bool is an int subclass; True must not turn into a 1 VND payment.
    elif isinstance(qr.amount, bool) or qr.amount <= 0:
        raise VietQRError(
            "invalid_field", f"amount {qr.amount!r} must be a positive whole number of VND"
        )
    elif len(str(qr.amount)) > _MAX_AMOUNT_LENGTH:
        raise _too_long("amount", len(str(qr.amount)), _MAX_AMOUNT_LENGTH)
    _check_merchant_category(qr.merchant_category)
    _check_text(qr.merchant_name, _MAX_MERCHANT_NAME_LENGTH, "merchant name")
    _check_text(qr.merchant_city, _MAX_MERCHANT_CITY_LENGTH, "merchant city")
    if qr.merchant_payment:
        _check_merchant_fields(qr)
    _check_text(qr.bill_number, _MAX_ADDITIONAL_DATA_LENGTH, "bill number")
    _check_text(qr.store, _MAX_ADDITIONAL_DATA_LENGTH, "store")
    _check_text(qr.reference, _MAX_ADDITIONAL_DATA_LENGTH, "reference")
    _check_text(qr.terminal, _MAX_ADDITIONAL_DATA_LENGTH, "terminal")
    _check_text(qr.purpose, _MAX_ADDITIONAL_DATA_LENGTH, "purpose")


def encode(qr: VietQR) -> str:
    """The VietQR payload for `qr`, CRC included; raise VietQRError if `qr` breaks a limit."""
    _check_request(qr)
    service_code = None if qr.service_code is None else _service_code(qr.service_code)
    beneficiary = _tlv(_BeneficiaryField.BANK_BIN, qr.bank_bin, "bank BIN") + _tlv(
        _BeneficiaryField.ACCOUNT, qr.account, "account"
    )
    merchant_account = _tlv(_MerchantAccountField.GUID, NAPAS_GUID, "GUID") + _tlv(
        _MerchantAccountField.BENEFICIARY, beneficiary, "beneficiary organisation"
    )
    if service_code is not None:
        merchant_account += _tlv(_MerchantAccountField.SERVICE_CODE, service_code, "service code")
    additional_data = "".join(
        _tlv(field_id, value, name)
        for field_id, value, name in (
            (_AdditionalDataField.BILL_NUMBER, qr.bill_number, "bill number"),
            (_AdditionalDataField.STORE_LABEL, qr.store, "store"),
            (_AdditionalDataField.REFERENCE_LABEL, qr.reference, "reference"),
            (_AdditionalDataField.TERMINAL_LABEL, qr.terminal, "terminal"),
            (_AdditionalDataField.PURPOSE, qr.purpose, "purpose"),
        )
        if value is not None
    )
    parts = [
        _tlv(_Field.PAYLOAD_FORMAT, _PAYLOAD_FORMAT_VERSION, "payload format indicator"),
        _tlv(_Field.POINT_OF_INITIATION, _DYNAMIC if qr.dynamic else _STATIC, "initiation"),
        _tlv(_Field.MERCHANT_ACCOUNT, merchant_account, "merchant account information"),
    ]
    if qr.merchant_category is not None:
        parts.append(_tlv(_Field.MERCHANT_CATEGORY, qr.merchant_category, "merchant category"))
    parts.append(_tlv(_Field.CURRENCY, _VND, "currency"))
    if qr.amount is not None:
        parts.append(_tlv(_Field.AMOUNT, str(qr.amount), "amount"))
    parts.append(_tlv(_Field.COUNTRY, _VIETNAM, "country code"))
    if qr.merchant_name is not None:
        parts.append(_tlv(_Field.MERCHANT_NAME, qr.merchant_name, "merchant name"))
    if qr.merchant_city is not None:
        parts.append(_tlv(_Field.MERCHANT_CITY, qr.merchant_city, "merchant city"))
    if additional_data:
        parts.append(_tlv(_Field.ADDITIONAL_DATA, additional_data, "additional data (field 62)"))
    body = "".join(parts) + _CRC_HEADER
    if len(body) + 4 > MAX_PAYLOAD_LENGTH:
        raise _too_long("payload", len(body) + 4, MAX_PAYLOAD_LENGTH)
    return body + _crc_hex(body)
