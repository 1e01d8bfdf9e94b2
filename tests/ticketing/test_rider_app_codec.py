"""The rider app's JavaScript codec (`webapp/src/codec.js`) against `shared/ticketcodec.py`.

The page's module runs in Node (the same WebCrypto API as the browser). Ed25519 signatures are
deterministic, so with the same device key, credential, time and counter the page must make the
very text `make_dynamic_qr` makes, character for character; every CBOR integer width and Base45
tail is crossed on the way.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import uuid
from typing import Any

import base45
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.ticketing.webapp import WEBAPP_DIR
from shared.ticketcodec import (
    Credential,
    RiderCategory,
    decode_and_verify,
    make_dynamic_qr,
    public_key_bytes,
    sign_credential,
)

NODE = shutil.which("node")

# Reads a JSON list of cases on stdin, answers one JSON result per case on stdout.
RUNNER = """
import { webcrypto } from "node:crypto";
globalThis.crypto ??= webcrypto; // a global from Node 19 on, as in browsers
const codec = await import("./src/codec.js");
const cases = JSON.parse(await new Response(process.stdin).text());
const out = [];
for (const c of cases) {
  try {
    if (c.op === "qr") {
      const key = await crypto.subtle.importKey(
        "pkcs8", codec.b64urlDecode(c.pkcs8), { name: "Ed25519" }, false, ["sign"]);
      const signed = { credential: codec.b64urlDecode(c.credential),
                       issuerSignature: codec.b64urlDecode(c.issuer_signature) };
      const device = { privateKey: key, publicKey: codec.b64urlDecode(c.public_key) };
      const moment = { at: c.at, counter: c.counter };
      out.push({ text: await codec.makeDynamicQr(signed, device, moment) });
    } else if (c.op === "credential") {
      const fields = codec.decodeCredential(codec.b64urlDecode(c.credential));
      const devicePublicKey = codec.b64urlEncode(fields.devicePublicKey);
      out.push({ fields: { ...fields, devicePublicKey } });
    } else if (c.op === "base45") {
      const text = codec.base45Encode(codec.b64urlDecode(c.bytes));
      out.push({ text, back: codec.b64urlEncode(codec.base45Decode(text)) });
    }
  } catch (error) {
    out.push({ error: error.code || error.name, message: error.message });
  }
}
process.stdout.write(JSON.stringify(out));
"""


def run_codec(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert NODE is not None, "Node.js 18+ runs the rider app's codec (`make test` installs it)"
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", RUNNER],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        cwd=WEBAPP_DIR,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def pkcs8(key: Ed25519PrivateKey) -> str:
    return b64url(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def credential(device: Ed25519PrivateKey, rng: random.Random, **changes: Any) -> Credential:
    values: dict[str, Any] = {
        "kid": rng.choice(["k1", "2026-05", "iss-7f3a9c"]),
        "ticket_id": uuid.UUID(int=rng.getrandbits(128)),
        "product": rng.choice(["MD", "MM", "MS", "BMA", "SV"]),
        "rider_category": rng.choice(list(RiderCategory)),
        "valid_from": rng.randrange(0, 2**31),
        "lines": rng.choice([("METRO",), ("2A",), ("32", "09"), ("*",)]),
        "device_public_key": public_key_bytes(device),
        **changes,
    }
    values.setdefault("valid_until", values["valid_from"] + rng.randrange(0, 400 * 86_400))
    return Credential(**values)


def qr_case(
    signed: Any, device: Ed25519PrivateKey, at: int, counter: int, public_key: bytes | None = None
) -> dict[str, Any]:
    return {
        "op": "qr",
        "pkcs8": pkcs8(device),
        "public_key": b64url(public_key or public_key_bytes(device)),
        "credential": b64url(signed.credential_bytes),
        "issuer_signature": b64url(signed.issuer_signature),
        "at": at,
        "counter": counter,
    }


# Every CBOR integer width boundary (1, 2, 3, 5 bytes) for `at` and `counter`.
BOUNDARIES = [0, 1, 23, 24, 255, 256, 65_535, 65_536, 1_767_225_600, 2**32 - 1]


class TestDynamicQr:
    def test_the_page_signs_exactly_the_text_the_python_codec_makes(self) -> None:
        rng = random.Random(20260509)
        issuer = Ed25519PrivateKey.generate()
        cases, expected = [], []
        for at in BOUNDARIES:
            for counter in (BOUNDARIES[0], BOUNDARIES[3], at, BOUNDARIES[-1]):
                device = Ed25519PrivateKey.generate()
                signed = sign_credential(credential(device, rng), issuer)
                cases.append(qr_case(signed, device, at, counter))
                expected.append(make_dynamic_qr(signed, device, at=at, counter=counter))

        results = run_codec(cases)

        assert [r.get("text", r) for r in results] == expected
        issuer_keys = {kid: issuer.public_key() for kid in ("k1", "2026-05", "iss-7f3a9c")}
        for text, case in zip(expected, cases, strict=True):
            qr = decode_and_verify(text, issuer_keys)  # what a gate does with the page's code
            assert (qr.at, qr.counter) == (case["at"], case["counter"])

    def test_a_credential_bound_to_another_device_key_is_refused(self) -> None:
        rng = random.Random(1)
        device, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        signed = sign_credential(credential(other, rng), Ed25519PrivateKey.generate())

        [result] = run_codec([qr_case(signed, device, 1_767_225_600, 1)])

        assert result["error"] == "invalid_value"
        assert "does not match" in result["message"]

    @pytest.mark.parametrize(("at", "counter"), [(-1, 1), (2**32, 1), (1, -1), (1, 2**32)])
    def test_time_and_counter_must_fit_in_32_bits(self, at: int, counter: int) -> None:
        rng = random.Random(2)
        device = Ed25519PrivateKey.generate()
        signed = sign_credential(credential(device, rng), Ed25519PrivateKey.generate())

        [result] = run_codec([qr_case(signed, device, at, counter)])

        assert result["error"] == "invalid_value"


class TestCredential:
    def test_the_page_reads_back_what_the_issuer_signed(self) -> None:
        rng = random.Random(3)
        device = Ed25519PrivateKey.generate()
        issued = credential(device, rng, lines=("32", "09"), rider_category=RiderCategory.STUDENT)
        signed = sign_credential(issued, Ed25519PrivateKey.generate())

        [result] = run_codec([{"op": "credential", "credential": b64url(signed.credential_bytes)}])

        assert result["fields"] == {
            "version": 1,
            "kid": issued.kid,
            "ticketId": str(issued.ticket_id),
            "product": issued.product,
            "riderCategory": int(RiderCategory.STUDENT),
            "validFrom": issued.valid_from,
            "validUntil": issued.valid_until,
            "lines": ["32", "09"],
            "devicePublicKey": b64url(public_key_bytes(device)),
        }

    @pytest.mark.parametrize(
        ("mutate", "code"),
        [
            (lambda raw: raw + b"\x00", "trailing_bytes"),
            (lambda raw: raw[:-5], "malformed_cbor"),
            (lambda raw: b"\xa9\x01\x18\x01" + raw[3:], "malformed_cbor"),  # 1 written as 0x18 01
            (lambda raw: b"\xa9\x01\x02" + raw[3:], "unsupported_version"),
            (lambda _: b"\x80", "wrong_type"),
        ],
        ids=["trailing", "truncated", "long-form-integer", "version-2", "not-a-map"],
    )
    def test_a_damaged_credential_is_refused(self, mutate: Any, code: str) -> None:
        rng = random.Random(4)
        device = Ed25519PrivateKey.generate()
        signed = sign_credential(credential(device, rng), Ed25519PrivateKey.generate())
        assert signed.credential_bytes[:3] == b"\xa9\x01\x01"  # map(9), key 1, version 1

        [result] = run_codec(
            [{"op": "credential", "credential": b64url(mutate(signed.credential_bytes))}]
        )

        assert result["error"] == code


class TestBase45:
    def test_matches_rfc_9285_and_the_python_encoder(self) -> None:
        rng = random.Random(5)
        samples = [b"AB", b"Hello!!", b"base-45", b"", b"\x00", b"\xff\xff", b"\xff"]
        samples += [rng.randbytes(rng.randrange(1, 300)) for _ in range(40)]

        results = run_codec([{"op": "base45", "bytes": b64url(sample)} for sample in samples])

        assert [r["text"] for r in results[:3]] == ["BB8", "%69 VD92EX0", "UJCLQE7W581"]
        assert [r["text"] for r in results] == [base45.b45encode(s).decode() for s in samples]
        assert [r["back"] for r in results] == [b64url(s) for s in samples]
