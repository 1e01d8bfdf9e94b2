// The CP1 dynamic QR, made on the phone exactly as shared/ticketcodec.py `make_dynamic_qr` does:
//
//   QR text     = "CP1:" + Base45(envelope)                         RFC 9285
//   envelope    = CBOR [credential bstr, issuer_sig bstr(64), at uint32, counter uint32,
//                       device_sig bstr(64)]                        shortest-form, definite
//   device_sig  = Ed25519(device key, "CPQR1" || SHA-256(credential || issuer_sig)
//                                     || uint32be(at) || uint32be(counter))
//
// The credential bytes are used exactly as the issuer signed them; they are decoded only to
// check that they name this phone's key (a code signed by another key can never pass a gate).

export const QR_PREFIX = "CP1:";
export const SIGNATURE_LENGTH = 64;
export const PUBLIC_KEY_LENGTH = 32;
export const UINT32_MAX = 0xffffffff;
// Largest envelope whose text still fits a version 11 QR at level M (see ticketcodec.py).
export const MAX_PAYLOAD_BYTES = 241;
export const MAX_CREDENTIAL_BYTES = MAX_PAYLOAD_BYTES - (1 + 2 + (2 + 64) + 5 + 5 + (2 + 64));
export const CREDENTIAL_VERSION = 1;

const BASE45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
const DEVICE_DOMAIN = new TextEncoder().encode("CPQR1");
const FIELDS = { 1: "version", 2: "kid", 3: "ticketId", 4: "product", 5: "riderCategory",
  6: "validFrom", 7: "validUntil", 8: "lines", 9: "devicePublicKey" };

export class TicketCodecError extends Error {
  constructor(code, detail = "") {
    super(detail ? `${code}: ${detail}` : code);
    this.name = "TicketCodecError";
    this.code = code;
  }
}

// Base45 and base64url -----------------------------------------------------------------------

export function base45Encode(bytes) {
  let out = "";
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    let n = bytes[i] * 256 + bytes[i + 1];
    for (let k = 0; k < 3; k += 1) {
      out += BASE45[n % 45];
      n = Math.floor(n / 45);
    }
  }
  if (bytes.length % 2 === 1) {
    const n = bytes[bytes.length - 1];
    out += BASE45[n % 45] + BASE45[Math.floor(n / 45)];
  }
  return out;
}

export function base45Decode(text) {
  const values = [...text].map((c) => {
    const v = BASE45.indexOf(c);
    if (v < 0) throw new TicketCodecError("malformed_base45", "character outside the alphabet");
    return v;
  });
  if (values.length % 3 === 1) throw new TicketCodecError("malformed_base45", "bad length");
  const out = [];
  for (let i = 0; i < values.length; i += 3) {
    if (i + 2 < values.length) {
      const n = values[i] + values[i + 1] * 45 + values[i + 2] * 2025;
      if (n > 0xffff) throw new TicketCodecError("malformed_base45", "chunk out of range");
      out.push(n >> 8, n & 0xff);
    } else {
      const n = values[i] + values[i + 1] * 45;
      if (n > 0xff) throw new TicketCodecError("malformed_base45", "chunk out of range");
      out.push(n);
    }
  }
  return Uint8Array.from(out);
}

export function b64urlDecode(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*={0,2}$/.test(text)) {
    throw new TicketCodecError("wrong_type", "not base64url");
  }
  const plain = text.replace(/=+$/, "").replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(plain + "=".repeat((4 - (plain.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export function b64urlEncode(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// CBOR: the few shortest-form, definite-length items the credential and envelope use --------

function head(major, value) {
  const m = major << 5;
  if (value < 24) return [m | value];
  if (value < 0x100) return [m | 24, value];
  if (value < 0x10000) return [m | 25, value >> 8, value & 0xff];
  return [m | 26, (value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
}

function uint32(value, name) {
  if (!Number.isInteger(value) || value < 0 || value > UINT32_MAX) {
    throw new TicketCodecError("invalid_value", `${name} must fit in 32 bits`);
  }
  return value;
}

export function encodeEnvelope(credential, issuerSignature, at, counter, deviceSignature) {
  const parts = [
    Uint8Array.of(0x85),
    Uint8Array.from(head(2, credential.length)), credential,
    Uint8Array.from(head(2, issuerSignature.length)), issuerSignature,
    Uint8Array.from(head(0, uint32(at, "at"))),
    Uint8Array.from(head(0, uint32(counter, "counter"))),
    Uint8Array.from(head(2, deviceSignature.length)), deviceSignature,
  ];
  return concat(...parts);
}

function decodeItem(bytes, start, depth) {
  if (start >= bytes.length) throw new TicketCodecError("malformed_cbor", "truncated");
  const first = bytes[start];
  const major = first >> 5;
  const info = first & 0x1f;
  let value;
  let at = start + 1;
  if (info < 24) {
    value = info;
  } else if (info >= 24 && info <= 26) {
    const width = 1 << (info - 24);
    if (at + width > bytes.length) throw new TicketCodecError("malformed_cbor", "truncated");
    value = 0;
    for (let k = 0; k < width; k += 1) value = value * 256 + bytes[at + k];
    at += width;
    const least = [24, 0x100, 0x10000][info - 24];
    if (value < least) throw new TicketCodecError("malformed_cbor", "not in shortest form");
  } else {
    throw new TicketCodecError("malformed_cbor", "unsupported item (64-bit, indefinite or simple)");
  }
  switch (major) {
    case 0:
      return [value, at];
    case 2:
    case 3: {
      if (at + value > bytes.length) throw new TicketCodecError("malformed_cbor", "truncated");
      const raw = bytes.slice(at, at + value);
      return [major === 2 ? raw : new TextDecoder("utf-8", { fatal: true }).decode(raw), at + value];
    }
    case 4:
    case 5: {
      if (depth <= 0) throw new TicketCodecError("malformed_cbor", "nested too deep");
      if (major === 4) {
        const items = [];
        for (let k = 0; k < value; k += 1) {
          const [item, next] = decodeItem(bytes, at, depth - 1);
          items.push(item);
          at = next;
        }
        return [items, at];
      }
      const entries = new Map();
      for (let k = 0; k < value; k += 1) {
        const [key, afterKey] = decodeItem(bytes, at, depth - 1);
        const [item, next] = decodeItem(bytes, afterKey, depth - 1);
        if (entries.has(key)) throw new TicketCodecError("malformed_cbor", "duplicate key");
        entries.set(key, item);
        at = next;
      }
      return [entries, at];
    }
    default:
      throw new TicketCodecError("malformed_cbor", `major type ${major} is not used here`);
  }
}

function decodeCbor(bytes, depth) {
  const [item, end] = decodeItem(bytes, 0, depth);
  if (end !== bytes.length) throw new TicketCodecError("trailing_bytes", `${bytes.length - end} bytes after the item`);
  return item;
}

// The credential and the dynamic QR ---------------------------------------------------------

const isBytes = (v, n) => v instanceof Uint8Array && (n === undefined || v.length === n);

export function decodeCredential(bytes) {
  if (!isBytes(bytes)) throw new TicketCodecError("wrong_type", "credential must be bytes");
  if (bytes.length > MAX_CREDENTIAL_BYTES) {
    throw new TicketCodecError("oversize", `credential longer than ${MAX_CREDENTIAL_BYTES} bytes`);
  }
  const map = decodeCbor(bytes, 2);
  if (!(map instanceof Map)) throw new TicketCodecError("wrong_type", "credential must be a map");
  if (map.get(1) !== CREDENTIAL_VERSION) throw new TicketCodecError("unsupported_version", `version ${map.get(1)}`);
  const fields = {};
  for (const [key, value] of map) {
    if (!(key in FIELDS)) throw new TicketCodecError("unknown_field", `credential key ${key}`);
    fields[FIELDS[key]] = value;
  }
  const missing = Object.values(FIELDS).filter((name) => !(name in fields));
  if (missing.length) throw new TicketCodecError("missing_field", missing.join(", "));
  if (typeof fields.kid !== "string" || typeof fields.product !== "string") {
    throw new TicketCodecError("wrong_type", "kid and product must be text");
  }
  if (!isBytes(fields.ticketId, 16)) throw new TicketCodecError("wrong_type", "ticket id must be 16 bytes");
  if (!isBytes(fields.devicePublicKey, PUBLIC_KEY_LENGTH)) {
    throw new TicketCodecError("wrong_type", "device public key must be 32 bytes");
  }
  if (!Array.isArray(fields.lines) || !fields.lines.every((l) => typeof l === "string")) {
    throw new TicketCodecError("wrong_type", "lines must be an array of text");
  }
  for (const name of ["riderCategory", "validFrom", "validUntil"]) {
    if (!Number.isInteger(fields[name])) throw new TicketCodecError("wrong_type", `${name} must be an integer`);
  }
  const id = hex(fields.ticketId);
  fields.ticketId = `${id.slice(0, 8)}-${id.slice(8, 12)}-${id.slice(12, 16)}-${id.slice(16, 20)}-${id.slice(20)}`;
  return fields;
}

export async function deviceMessage(credential, issuerSignature, at, counter) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", concat(credential, issuerSignature)));
  const tail = new Uint8Array(8);
  const view = new DataView(tail.buffer);
  view.setUint32(0, uint32(at, "at"));
  view.setUint32(4, uint32(counter, "counter"));
  return concat(DEVICE_DOMAIN, digest, tail);
}

/**
 * The QR text the phone shows for the moment `at` (unix seconds).
 * signed: {credential: Uint8Array, issuerSignature: Uint8Array}
 * device: {privateKey: CryptoKey (Ed25519), publicKey: Uint8Array (32 raw bytes)}
 */
export async function makeDynamicQr(signed, device, { at, counter }) {
  uint32(at, "at");
  uint32(counter, "counter");
  if (!isBytes(signed.issuerSignature, SIGNATURE_LENGTH)) {
    throw new TicketCodecError("wrong_type", "issuer signature must be 64 bytes");
  }
  const credential = decodeCredential(signed.credential);
  if (!equalBytes(credential.devicePublicKey, device.publicKey)) {
    throw new TicketCodecError("invalid_value", "device key does not match the credential");
  }
  const message = await deviceMessage(signed.credential, signed.issuerSignature, at, counter);
  const signature = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, device.privateKey, message));
  const envelope = encodeEnvelope(signed.credential, signed.issuerSignature, at, counter, signature);
  return QR_PREFIX + base45Encode(envelope);
}

export async function fingerprint(publicKey) {
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", publicKey)));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function equalBytes(a, b) {
  return isBytes(a) && isBytes(b) && a.length === b.length && a.every((v, i) => v === b[i]);
}
