// The phone's Ed25519 device key: made here by WebCrypto as a NON-extractable key, kept as the
// CryptoKey object itself in IndexedDB (the browser can sign with it but never hand out its
// bytes), one key per rider account; only the public key is sent, to POST /v1/devices.
import * as api from "./api.js";
import { b64urlEncode, fingerprint } from "./codec.js";
import { STORES, get, put } from "./store.js";

export class DeviceKeyUnsupported extends Error {
  constructor(cause) {
    super("Ed25519 keys are not available in this browser");
    this.name = "DeviceKeyUnsupported";
    this.cause = cause;
  }
}

/** {riderId, privateKey, publicKey (CryptoKeys), publicKeyRaw, fingerprint, deviceId} or null */
export const local = (riderId) => get(STORES.devices, riderId);

async function create(riderId) {
  if (!window.isSecureContext || !crypto.subtle) throw new DeviceKeyUnsupported();
  let keys;
  try {
    keys = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  } catch (error) {
    throw new DeviceKeyUnsupported(error);
  }
  const publicKeyRaw = new Uint8Array(await crypto.subtle.exportKey("raw", keys.publicKey));
  const record = {
    riderId,
    privateKey: keys.privateKey,
    publicKey: keys.publicKey,
    publicKeyRaw,
    fingerprint: await fingerprint(publicKeyRaw),
    deviceId: null,
    createdAt: Date.now(),
  };
  await put(STORES.devices, record);
  return record;
}

function label() {
  const platform = navigator.userAgentData?.platform || navigator.platform || "";
  return `Web app${platform ? ` · ${platform}` : ""}`.slice(0, 60);
}

async function register(record) {
  const device = await api.post("v1/devices", { public_key: b64urlEncode(record.publicKeyRaw), label: label() });
  const registered = { ...record, deviceId: device.id };
  await put(STORES.devices, registered);
  return registered;
}

/**
 * Makes this phone the rider's active device (201), or confirms it already is (200).
 * A key that was ever registered and then replaced cannot come back (409): make a new one.
 */
export async function ensureRegistered(riderId) {
  const record = (await local(riderId)) || (await create(riderId));
  try {
    return await register(record);
  } catch (error) {
    if (error instanceof api.ApiError && error.code === "device_key_reused") {
      return register(await create(riderId));
    }
    throw error;
  }
}
