// The rider app's service worker: the app shell comes from this cache, so the ticket screen
// opens and signs fresh QR codes with no network. The API (/v1/…) is never cached here: the
// page keeps what it needs (credentials, lists) in IndexedDB itself.
// `make app` fills in the version (a digest of every file) and the list of files.
const VERSION = "__VERSION__";
const CACHE = `citypass-rider-${VERSION}`;
const ASSETS = ["__ASSETS__"];

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(ASSETS.map((asset) => new Request(asset, { cache: "reload" })));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("citypass-rider-") && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  const scope = new URL(self.registration.scope);
  if (request.method !== "GET" || url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) {
    return; // the API and everything else: straight to the network
  }
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const hit = request.mode === "navigate"
      ? await cache.match("./") // one page; the screen is in the #hash
      : await cache.match(request, { ignoreSearch: true });
    return hit || fetch(request);
  })());
});
