// What the phone keeps: device keys (non-extractable CryptoKey objects), credentials and the
// last lists seen, in IndexedDB so that the ticket screen works with no network at all.

const DB_NAME = "citypass-rider";
const DB_VERSION = 1;
export const STORES = { devices: "devices", credentials: "credentials", cache: "cache" };

let opening = null;

function open() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, DB_VERSION);
      request.onupgradeneeded = () => {
        const db = request.result;
        db.createObjectStore(STORES.devices, { keyPath: "riderId" });
        db.createObjectStore(STORES.credentials, { keyPath: "ticket_id" });
        db.createObjectStore(STORES.cache, { keyPath: "key" });
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
      request.onblocked = () => reject(new Error("IndexedDB is blocked by another tab"));
    });
    opening.catch(() => { opening = null; });
  }
  return opening;
}

async function run(store, mode, action) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const request = action(tx.objectStore(store));
    tx.oncomplete = () => resolve(request ? request.result : undefined);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  });
}

export const get = (store, key) => run(store, "readonly", (s) => s.get(key));
export const put = (store, value) => run(store, "readwrite", (s) => s.put(value));
export const remove = (store, key) => run(store, "readwrite", (s) => s.delete(key));
export const all = (store) => run(store, "readonly", (s) => s.getAll());

// Cached answers, per rider: {key: "<rider>:tickets", value, saved_at}
export async function cached(riderId, name) {
  const row = await get(STORES.cache, `${riderId}:${name}`);
  return row ? { value: row.value, savedAt: row.saved_at } : null;
}

export function keep(riderId, name, value) {
  return put(STORES.cache, { key: `${riderId}:${name}`, value, saved_at: Date.now() });
}

export async function forgetRider(riderId) {
  for (const row of await all(STORES.credentials)) {
    if (row.rider_id === riderId) await remove(STORES.credentials, row.ticket_id);
  }
  for (const row of await all(STORES.cache)) {
    if (row.key.startsWith(`${riderId}:`)) await remove(STORES.cache, row.key);
  }
}
