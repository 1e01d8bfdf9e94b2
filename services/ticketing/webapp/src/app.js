// The rider app: screens behind #/hash routes, each loaded from the API when online and from
// IndexedDB when not. The ticket screen needs no network once its credential is on the phone.
import * as api from "./api.js";
import { TicketCodecError, b64urlDecode, makeDynamicQr } from "./codec.js";
import * as device from "./device.js";
import { clock, dateTime, day, lang, money, setLang, t, translate } from "./i18n.js";
import { drawQr } from "./qr.js";
import * as store from "./store.js";

const QR_PERIOD_S = 10; // DESIGN.md: a fresh device signature every 10 s (gates allow 30 s)
const TOPUP_POLL_MS = 2000;
const TOPUP_POLL_FOR_MS = 15 * 60 * 1000;
const PENDING_KEY = "citypass.pendingPurchase";
const COUNTER_KEY = "citypass.counter";

const $ = (selector) => document.querySelector(selector);
let leaveScreen = () => {};
let unreachable = false;
let rerender = () => {};

// Messages -----------------------------------------------------------------------------------

function describe(error) {
  if (error instanceof api.NetworkError) return t("err.network");
  if (error instanceof device.DeviceKeyUnsupported) return t("err.no_webcrypto");
  if (error instanceof api.ApiError) {
    const problem = error.problem;
    if (error.status === 422 && Array.isArray(problem.errors)) {
      const fields = problem.errors.flatMap((e) => e.loc || []);
      if (fields.includes("phone")) return t("err.phone");
      if (fields.includes("password")) return t("err.password");
    }
    const params = {
      shortfall: money(Number(problem.shortfall) || 0),
      time: problem.retry_at ? dateTime(problem.retry_at) : "",
    };
    const key = `err.${error.code}`;
    const text = t(key, params);
    return text === key ? t("err.generic", { detail: problem.detail || error.message }) : text;
  }
  if (error instanceof TicketCodecError) return t("err.generic", { detail: error.message });
  if (error?.name === "InvalidStateError" || error?.name === "UnknownError") return t("err.storage");
  return t("err.generic", { detail: error?.message || String(error) });
}

function say(element, text) {
  element.textContent = text || "";
  element.hidden = !text;
}

function failed(element, error) {
  if (error instanceof api.NetworkError) markReachable(false);
  if (error instanceof api.ApiError && ["not_logged_in", "session_ended"].includes(error.code)) {
    api.dropSession();
    history.replaceState(null, "", "#/login");
    location.reload(); // nothing of the ended session stays on screen
    return;
  }
  say(element, describe(error));
}

function markReachable(ok) {
  unreachable = !ok;
  $("#net").hidden = navigator.onLine && !unreachable;
}

const online = () => navigator.onLine;

// Data the screens share ------------------------------------------------------------------------

function rider() {
  return api.session()?.rider ?? null;
}

async function load(name, fetcher) {
  const who = rider();
  if (online()) {
    try {
      const value = await fetcher();
      markReachable(true);
      await store.keep(who.id, name, value);
      return { value, savedAt: null };
    } catch (error) {
      if (!(error instanceof api.NetworkError)) throw error;
      markReachable(false);
    }
  }
  const kept = await store.cached(who.id, name);
  if (kept) return kept;
  throw new api.NetworkError();
}

const products = () => load("products", () => api.get("v1/products", { auth: false }));
const tickets = () => load("tickets", () => api.get("v1/tickets"));
const wallet = () => load("wallet", () => api.get("v1/wallet"));

function productName(list, code) {
  const product = (list || []).find((p) => p.code === code);
  if (!product) return code;
  return lang() === "vi" ? product.name_vi : product.name_en;
}

async function credentialFor(ticketId, { force = false } = {}) {
  const who = rider();
  const here = await device.local(who.id);
  let stored = await store.get(store.STORES.credentials, ticketId);
  if (stored && stored.rider_id !== who.id) stored = null;
  const fresh = stored && here && stored.device_fingerprint === here.fingerprint && Date.parse(stored.refresh_at) > Date.now();
  if (fresh && !force) return stored;
  if (!online()) return stored;
  try {
    const credential = await api.get(`v1/tickets/${ticketId}/credential`);
    const kept = { ...credential, rider_id: who.id, saved_at: Date.now() };
    await store.put(store.STORES.credentials, kept);
    return kept;
  } catch (error) {
    if (error instanceof api.NetworkError && stored) return stored;
    if (error instanceof api.ApiError && ["ticket_revoked", "ticket_expired"].includes(error.code)) {
      await store.remove(store.STORES.credentials, ticketId);
    }
    throw error;
  }
}

/** Every live ticket's credential on the phone, so each one works offline later. */
async function keepCredentials(list) {
  for (const ticket of list.filter((x) => x.status === "active")) {
    try {
      await credentialFor(ticket.id);
    } catch {
      // shown when the rider opens that ticket
    }
  }
}

function nextCounter(riderId) {
  const key = `${COUNTER_KEY}.${riderId}`;
  const counter = (Number(localStorage.getItem(key)) || 0) + 1;
  localStorage.setItem(key, String(counter));
  return counter;
}

const serverNow = () => Date.now() + api.clockOffset();

/** +84912345678 as people write it at home: 0912 345 678. */
function nationalPhone(e164) {
  const match = /^\+84(\d{3})(\d{3})(\d{3})$/.exec(e164 || "");
  return match ? `0${match[1]} ${match[2]} ${match[3]}` : e164;
}

// Screens ------------------------------------------------------------------------------------

const screens = { login: showLogin, wallet: showWallet, topup: showTopup, buy: showBuy, tickets: showTickets, ticket: showTicket };

function route() {
  const [name, argument] = location.hash.replace(/^#\/?/, "").split("/");
  const signedIn = rider() !== null;
  let target = screens[name] ? name : "wallet";
  if (!signedIn) target = "login";
  else if (target === "login") target = "wallet";
  else if (target === "ticket" && !argument) target = "tickets";
  const hash = target === name && argument ? `#/${target}/${argument}` : `#/${target}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  for (const section of document.querySelectorAll(".screen")) section.hidden = section.id !== `screen-${target}`;
  $("#nav").hidden = !signedIn;
  for (const link of document.querySelectorAll("#nav a")) {
    const current = link.dataset.nav === target || (target === "ticket" && link.dataset.nav === "tickets");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.body.dataset.screen = target;
  rerender = () => {
    leaveScreen();
    leaveScreen = () => {};
    return screens[target](target === name ? argument : undefined);
  };
  const shown = rerender();
  $(`#screen-${target} h1`)?.focus({ preventScroll: true });
  return shown;
}

// Log in / sign up

let signingUp = false;

function setMode(signup) {
  signingUp = signup;
  $("#mode-login").setAttribute("aria-pressed", String(!signup));
  $("#mode-signup").setAttribute("aria-pressed", String(signup));
  $("#category-field").hidden = !signup;
  $("#password-hint").hidden = !signup;
  $("#password").autocomplete = signup ? "new-password" : "current-password";
  $("#login-title").dataset.i18n = signup ? "auth.signup" : "auth.login";
  $("#login-submit").dataset.i18n = signup ? "auth.submitSignup" : "auth.submitLogin";
  say($("#login-error"), "");
  translate($("#screen-login"));
}

function showLogin() {
  document.title = `CityPass · ${t(signingUp ? "auth.signup" : "auth.login")}`;
}

async function submitLogin(event) {
  event.preventDefault();
  const button = $("#login-submit");
  const error = $("#login-error");
  say(error, "");
  const phone = $("#phone").value.trim();
  const password = $("#password").value;
  if (!phone) return say(error, t("err.phone"));
  if (password.length < (signingUp ? 8 : 1)) return say(error, t("err.password"));
  button.disabled = true;
  button.textContent = t("auth.working");
  try {
    const answer = signingUp
      ? await api.post("v1/riders", { phone, password, category: $("#category").value }, { auth: false })
      : await api.post("v1/sessions", { phone, password }, { auth: false });
    api.keepSession(answer);
    markReachable(true);
    $("#password").value = "";
    try {
      await device.ensureRegistered(answer.rider.id);
    } catch (problem) {
      sessionStorage.setItem("citypass.deviceProblem", describe(problem));
    }
    location.hash = "#/wallet";
  } catch (problem) {
    failed(error, problem);
  } finally {
    button.disabled = false;
    translate($("#screen-login"));
  }
}

// Wallet

async function showWallet() {
  const who = rider();
  document.title = `CityPass · ${t("wallet.title")}`;
  $("#hello").textContent = t("wallet.hello", { phone: nationalPhone(who.phone) });
  const note = $("#category-note");
  const requested = who.requested_category ? t(`category.${who.requested_category}`) : "";
  if (who.category_status === "pending") say(note, t("wallet.categoryPending", { category: requested }));
  else if (who.category_status === "rejected") say(note, t("wallet.categoryRejected", { category: requested }));
  else say(note, "");
  const here = await device.local(who.id);
  $("#device-fingerprint").textContent = here ? here.fingerprint.slice(0, 16).replace(/(.{4})(?!$)/g, "$1 ") : "—";
  const error = $("#wallet-error");
  say(error, sessionStorage.getItem("citypass.deviceProblem") || "");
  sessionStorage.removeItem("citypass.deviceProblem");
  try {
    const { value, savedAt } = await wallet();
    $("#balance").textContent = money(value.balance);
    $("#balance").dataset.balance = String(value.balance);
    say($("#balance-as-of"), savedAt ? t("wallet.asOf", { time: dateTime(savedAt) }) : "");
  } catch (problem) {
    failed(error, problem);
  }
  if (online()) {
    api.get("v1/me").then((me) => { api.updateRider(me); }).catch(() => {});
  }
}

async function logOut() {
  const current = api.session();
  if (current) {
    try {
      await api.post("v1/sessions/revoke", { refresh_token: current.refresh_token }, { auth: false });
    } catch {
      // the refresh token expires by itself; the phone forgets it either way
    }
    await store.forgetRider(current.rider.id);
    localStorage.removeItem(`${PENDING_KEY}.${current.rider.id}`);
  }
  api.dropSession();
  // A fresh page: nothing of this rider stays on any screen (the shell comes from the cache).
  history.replaceState(null, "", "#/login");
  location.reload();
}

// Top up

let topupAttempt = null; // {amount, key}: one Idempotency-Key per attempt, reused on retry

function parseAmount(text) {
  const digits = text.replace(/[\s.,₫]|VND/gi, "");
  return /^\d{1,9}$/.test(digits) ? Number(digits) : NaN;
}

function showTopup() {
  document.title = `CityPass · ${t("topup.title")}`;
  let timer = null;
  let stopped = false;
  leaveScreen = () => {
    stopped = true;
    clearTimeout(timer);
  };
  const result = $("#topup-result");
  if (result.dataset.status === "paid") {
    result.hidden = true; // done: a new visit starts a new top-up
    delete result.dataset.topupId;
    delete result.dataset.status;
    $("#topup-form").hidden = false;
  }
  const shown = result.dataset.topupId;
  if (shown) {
    const amount = money(Number($("#vietqr").dataset.amount));
    $("#vietqr").setAttribute("aria-label", t("topup.qrAlt", { amount }));
    $("#topup-amount").textContent = amount;
    say($("#topup-status"), result.dataset.status === "paid" ? t("topup.paid", { amount }) : t("topup.waiting"));
  }
  if (shown && result.dataset.status === "pending") poll(shown, Date.now());

  async function poll(topupId, since) {
    if (stopped) return;
    try {
      const topup = await api.get(`v1/wallet/topups/${topupId}`);
      markReachable(true);
      if (topup.status === "paid") {
        showPaid(true);
        say($("#topup-status"), t("topup.paid", { amount: money(topup.amount) }));
        $("#topup-check").hidden = true;
        topupAttempt = null;
        return;
      }
    } catch (problem) {
      if (!(problem instanceof api.NetworkError)) return failed($("#topup-error"), problem);
    }
    if (Date.now() - since > TOPUP_POLL_FOR_MS) {
      say($("#topup-status"), t("topup.stillWaiting"));
      $("#topup-check").hidden = false;
      return;
    }
    timer = setTimeout(() => poll(topupId, since), TOPUP_POLL_MS);
  }

  $("#topup-again").onclick = () => {
    clearTimeout(timer);
    topupAttempt = null;
    result.hidden = true;
    delete result.dataset.topupId;
    $("#topup-form").hidden = false;
    $("#amount").focus();
  };

  $("#topup-check").onclick = () => {
    $("#topup-check").hidden = true;
    say($("#topup-status"), t("topup.waiting"));
    poll(result.dataset.topupId, Date.now());
  };

  $("#topup-form").onsubmit = async (event) => {
    event.preventDefault();
    const error = $("#topup-error");
    say(error, "");
    const amount = parseAmount($("#amount").value);
    if (!(amount >= 10000 && amount <= 10000000)) return say(error, t("topup.badAmount"));
    if (!topupAttempt || topupAttempt.amount !== amount) topupAttempt = { amount, key: crypto.randomUUID() };
    const button = $("#topup-submit");
    button.disabled = true;
    try {
      const topup = await api.post("v1/wallet/topups", { amount }, { headers: { "Idempotency-Key": topupAttempt.key } });
      markReachable(true);
      clearTimeout(timer);
      renderTopup(topup);
      if (topup.status === "pending") poll(topup.id, Date.now());
    } catch (problem) {
      failed(error, problem);
    } finally {
      button.disabled = false;
    }
  };
}

/** A paid VietQR is put away: paying it twice would only park the money in suspense. */
function showPaid(paid) {
  const result = $("#topup-result");
  result.dataset.status = paid ? "paid" : "pending";
  $("#topup-scan").hidden = paid;
  $("#topup-payload").hidden = paid;
  $("#topup-paid-mark").hidden = !paid;
}

function renderTopup(topup) {
  const result = $("#topup-result");
  $("#topup-form").hidden = true; // the code to scan comes first on a small screen
  result.hidden = false;
  result.dataset.topupId = topup.id;
  showPaid(topup.status === "paid");
  const canvas = $("#vietqr");
  drawQr(canvas, topup.qr, { mode: "Byte", cssSize: Math.min(300, result.clientWidth - 32) });
  canvas.dataset.amount = String(topup.amount);
  canvas.setAttribute("aria-label", t("topup.qrAlt", { amount: money(topup.amount) }));
  $("#topup-amount").textContent = money(topup.amount);
  $("#topup-reference").textContent = topup.reference;
  $("#vietqr-text").value = topup.qr;
  say($("#topup-status"), topup.status === "paid" ? t("topup.paid", { amount: money(topup.amount) }) : t("topup.waiting"));
}

async function copyVietQr() {
  const field = $("#vietqr-text");
  try {
    await navigator.clipboard.writeText(field.value);
  } catch {
    field.select();
  }
  $("#copy-vietqr").textContent = t("topup.copied");
  setTimeout(() => { $("#copy-vietqr").textContent = t("topup.copy"); }, 2000);
}

// Buy

function pendingPurchase() {
  try {
    return JSON.parse(localStorage.getItem(`${PENDING_KEY}.${rider().id}`));
  } catch {
    return null;
  }
}

function keepPending(attempt) {
  const key = `${PENDING_KEY}.${rider().id}`;
  if (attempt) localStorage.setItem(key, JSON.stringify(attempt));
  else localStorage.removeItem(key);
}

function describeProduct(product) {
  const parts = [t(`buy.${product.mode}`)];
  if (product.validity_days) parts.push(count("buy.days", product.validity_days));
  parts.push(product.rides ? count("buy.rides", product.rides) : t("buy.unlimited"));
  parts.push(product.line_choice ? t("buy.lineChoice") : product.lines.length ? product.lines.join(", ") : t("buy.allLines"));
  return parts.join(" · ");
}

function count(key, n) {
  return t(n === 1 ? `${key}.one` : key, { n });
}

function price(product) {
  if (product.distance_priced) return t("buy.perTrip");
  return product.price_vnd === 0 ? t("buy.free") : money(product.price_vnd);
}

let productList = [];

async function showBuy() {
  document.title = `CityPass · ${t("buy.title")}`;
  const error = $("#buy-error");
  say(error, "");
  const list = $("#products");
  try {
    productList = (await products()).value;
  } catch (problem) {
    list.replaceChildren();
    return failed(error, problem);
  }
  const category = rider().category;
  const mine = productList.filter((p) => p.categories.includes(category));
  const groups = ["metro", "bus", "any"].map((mode) => {
    const products = mine.filter((p) => p.mode === mode);
    if (!products.length) return null;
    const title = document.createElement("h2");
    title.className = "group-title";
    title.id = `products-${mode}`;
    title.textContent = t(`buy.${mode}`);
    const items = document.createElement("ul");
    items.className = "list";
    items.setAttribute("aria-labelledby", title.id);
    items.append(...products.map(productCard));
    const group = document.createElement("section");
    group.append(title, items);
    return group;
  });
  list.replaceChildren(...groups.filter(Boolean));
  if (!mine.length) say(error, t("buy.none"));
  const pending = pendingPurchase();
  const banner = $("#pending-purchase");
  banner.hidden = !pending;
  if (pending) {
    $("#pending-text").textContent = t("buy.unfinished", { name: productName(productList, pending.product_code) });
    $("#pending-continue").onclick = () => {
      const product = productList.find((p) => p.code === pending.product_code);
      if (product) openConfirm(product);
    };
  }
}

function productCard(product) {
  const item = document.createElement("li");
  item.className = "card product";
  item.dataset.product = product.code;
  const name = lang() === "vi" ? product.name_vi : product.name_en;
  const text = document.createElement("div");
  const title = document.createElement("div");
  title.className = "strong";
  title.textContent = name;
  const details = document.createElement("div");
  details.className = "hint";
  details.textContent = describeProduct(product);
  const cost = document.createElement("div");
  cost.className = "price";
  cost.textContent = price(product);
  text.append(title, details, cost);
  const button = document.createElement("button");
  button.type = "button";
  button.className = "primary buy";
  button.textContent = t("buy.button");
  button.setAttribute("aria-label", t("buy.buttonLabel", { name }));
  button.onclick = () => openConfirm(product);
  item.append(text, button);
  return item;
}

let attempt = null;

function openConfirm(product) {
  const pending = pendingPurchase();
  // Retrying the same product continues the same attempt: the same Idempotency-Key, so the
  // service answers the first purchase instead of making a second one.
  attempt = pending && pending.product_code === product.code
    ? pending
    : { key: crypto.randomUUID(), product_code: product.code, line: null, sent: false };
  const dialog = $("#confirm");
  dialog.dataset.product = product.code;
  $("#confirm-product").textContent = lang() === "vi" ? product.name_vi : product.name_en;
  $("#confirm-price").textContent = price(product);
  $("#confirm-balance").textContent = $("#balance").dataset.balance ? money(Number($("#balance").dataset.balance)) : "—";
  $("#confirm-line-field").hidden = !product.line_choice;
  $("#confirm-line").value = attempt.line || "";
  $("#confirm-line").readOnly = attempt.sent; // a retry must send the very same body
  $("#confirm-topup").hidden = true;
  say($("#confirm-error"), "");
  setPayLabel(attempt.sent ? "buy.retry" : "buy.pay");
  dialog.showModal();
  wallet().then(({ value }) => { $("#confirm-balance").textContent = money(value.balance); }).catch(() => {});
}

function setPayLabel(key) {
  const button = $("#confirm-pay");
  button.dataset.i18n = key;
  button.textContent = t(key);
}

async function pay(event) {
  event.preventDefault();
  const product = productList.find((p) => p.code === attempt.product_code);
  const error = $("#confirm-error");
  say(error, "");
  if (product.line_choice) {
    const line = $("#confirm-line").value.trim().toUpperCase();
    if (!/^[A-Z0-9]{1,10}$/.test(line)) return say(error, t("err.invalid_line"));
    attempt.line = line;
  }
  const body = { product_code: attempt.product_code };
  if (attempt.line) body.line = attempt.line;
  attempt.sent = true;
  keepPending(attempt); // before sending: if the answer is lost, the retry reuses the key
  const button = $("#confirm-pay");
  button.disabled = true;
  button.textContent = t("buy.working");
  try {
    const purchase = await api.post("v1/purchases", body, { headers: { "Idempotency-Key": attempt.key } });
    markReachable(true);
    keepPending(null);
    attempt = null;
    $("#confirm").close();
    const ticket = purchase.ticket;
    const known = (await store.cached(rider().id, "tickets"))?.value || [];
    await store.keep(rider().id, "tickets", [ticket, ...known.filter((x) => x.id !== ticket.id)]);
    location.hash = `#/ticket/${ticket.id}`;
  } catch (problem) {
    const retryable = problem instanceof api.NetworkError
      || (problem instanceof api.ApiError && (problem.status >= 500 || problem.status === 402 || problem.code === "payment_in_progress"));
    if (!retryable) {
      keepPending(null);
      attempt = { key: crypto.randomUUID(), product_code: attempt.product_code, line: null, sent: false };
      $("#confirm-line").readOnly = false;
    }
    $("#confirm-topup").hidden = !(problem instanceof api.ApiError && problem.code === "insufficient_funds");
    failed(error, problem);
    setPayLabel(retryable ? "buy.retry" : "buy.pay");
  } finally {
    button.disabled = false;
  }
}

// Tickets

async function showTickets() {
  document.title = `CityPass · ${t("tickets.title")}`;
  const error = $("#tickets-error");
  say(error, "");
  let list;
  let names;
  try {
    const loaded = await tickets();
    list = loaded.value;
    say($("#tickets-as-of"), loaded.savedAt ? t("tickets.asOf", { time: dateTime(loaded.savedAt) }) : "");
    names = (await products().catch(() => ({ value: [] }))).value;
  } catch (problem) {
    return failed(error, problem);
  }
  $("#tickets-empty").hidden = list.length > 0;
  $("#tickets").replaceChildren(...list.map((ticket) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.className = "card ticket-link";
    link.href = `#/ticket/${ticket.id}`;
    link.dataset.ticket = ticket.id;
    const name = productName(names, ticket.product_code);
    link.setAttribute("aria-label", `${t("tickets.open", { name })}, ${t(`tickets.status.${ticket.status}`)}`);
    const title = document.createElement("span");
    title.className = "strong";
    title.textContent = name;
    const badge = document.createElement("span");
    badge.className = `badge ${ticket.status}`;
    badge.textContent = t(`tickets.status.${ticket.status}`);
    const until = document.createElement("span");
    until.className = "hint";
    until.textContent = t("tickets.until", { time: dateTime(ticket.valid_until) });
    link.append(title, badge, until);
    item.append(link);
    return item;
  }));
  if (online()) keepCredentials(list);
}

// A stored-value ticket's fares today: each leg, its transfer discount, the caps

function capLine(element, bar, key, total, cap) {
  element.textContent = cap == null
    ? t("fares.noCap", { total: money(total) })
    : t(key, { total: money(total), cap: money(cap) });
  bar.hidden = cap == null;
  if (cap == null) return;
  bar.setAttribute("aria-valuemax", String(cap));
  bar.setAttribute("aria-valuenow", String(total));
  bar.firstElementChild.style.width = `${Math.min(100, (total / cap) * 100)}%`;
}

async function showFares(ticketId, stopped) {
  const section = $("#ticket-fares");
  section.hidden = true;
  let account;
  try {
    account = await api.get(`v1/me/tickets/${ticketId}/fares`);
  } catch (problem) {
    if (stopped()) return;
    section.hidden = false;
    return failed($("#fares-error"), problem);
  }
  if (stopped()) return;
  say($("#fares-error"), "");
  $("#fares-empty").hidden = account.legs.length > 0;
  $("#fares-legs").replaceChildren(...account.legs.map((leg) => {
    const item = document.createElement("li");
    item.dataset.leg = leg.leg_id;
    const name = document.createElement("span");
    name.className = "leg-name";
    name.textContent = leg.from_stop == null
      ? t("fares.bus", { route: leg.route_id })
      : t(leg.open_trip_entry ? "fares.openTrip" : "fares.metro", {
        line: leg.route_id, from: leg.open_trip_entry || leg.from_stop, to: leg.to_stop,
      });
    const parts = [name, Object.assign(document.createElement("span"), { className: "fare", textContent: t("fares.fare", { amount: money(leg.fare) }) })];
    if (leg.transfer_discount > 0) {
      parts.push(Object.assign(document.createElement("span"), { className: "discount", textContent: t("fares.transfer", { amount: money(leg.transfer_discount) }) }));
    }
    if (leg.capped > 0) {
      parts.push(Object.assign(document.createElement("span"), { className: "capped", textContent: t("fares.capped", { amount: money(leg.capped) }) }));
    }
    parts.push(Object.assign(document.createElement("span"), { className: "charged", textContent: t("fares.charged", { amount: money(leg.charged) }) }));
    item.replaceChildren(...parts);
    return item;
  }));
  $("#fares-capped").hidden = !account.capped_today;
  capLine($("#fares-day"), $("#fares-day-progress"), "fares.day", account.day_total, account.day_cap);
  capLine($("#fares-week"), $("#fares-week-progress"), "fares.week", account.week_total, account.week_cap);
  section.hidden = false;
}

// One ticket: the dynamic QR

async function showTicket(ticketId) {
  const who = rider();
  const error = $("#ticket-error");
  const pass = $("#ticket-pass");
  const useHere = $("#ticket-use-here");
  say(error, "");
  useHere.hidden = true;
  pass.hidden = true;
  $("#ticket-fares").hidden = true;
  $("#ticket-title").textContent = t("ticket.loading");
  $("#ticket-validity").textContent = "";
  $("#ticket-lines").textContent = "";
  say($("#ticket-offline"), "");
  let stopped = false;
  let timer = null;
  let wakeLock = null;
  leaveScreen = () => {
    stopped = true;
    clearInterval(timer);
    wakeLock?.release().catch(() => {});
    document.removeEventListener("visibilitychange", onVisible);
  };

  // What the phone has comes first: at the gate a slow network must not hold up the code.
  // The network only fills in what is missing, and checks the ticket afterwards.
  const names = (await store.cached(who.id, "products"))?.value
    || (await products().catch(() => ({ value: [] }))).value;
  const kept = ((await store.cached(who.id, "tickets"))?.value || []).find((x) => x.id === ticketId);
  let ticket = kept;
  if (!ticket && online()) {
    try {
      ticket = await fetchTicket(who.id, ticketId);
    } catch (problem) {
      if (!(problem instanceof api.NetworkError)) return failed(error, problem);
      markReachable(false);
    }
  }
  if (stopped) return;
  const name = ticket ? productName(names, ticket.product_code) : "";
  $("#ticket-title").textContent = name || t("tickets.title");
  document.title = `CityPass · ${name}`;
  if (ticket) {
    $("#ticket-validity").textContent = t("ticket.validUntil", { time: dateTime(ticket.valid_until) });
    $("#ticket-lines").textContent = t("ticket.lines", { lines: ticket.lines.length ? ticket.lines.join(", ") : t(`buy.${ticket.mode}`) });
    if (ticket.status !== "active") return say(error, t(`ticket.${ticket.status}`));
    if (Date.parse(ticket.valid_until) <= Date.now()) return say(error, t("ticket.expired"));
  }

  if (ticket?.kind === "stored_value" && online()) showFares(ticketId, () => stopped);

  let credential;
  try {
    credential = await credentialFor(ticketId);
  } catch (problem) {
    if (problem instanceof api.ApiError && problem.code === "no_active_device") useHere.hidden = false;
    return failed(error, problem);
  }
  if (stopped) return;
  if (!credential) return say(error, t("ticket.needNetwork"));
  const here = await device.local(who.id);
  if (!here || credential.device_fingerprint !== here.fingerprint) {
    useHere.hidden = false;
    return say(error, t("ticket.otherDevice"));
  }
  const signed = {
    credential: b64urlDecode(credential.credential),
    issuerSignature: b64urlDecode(credential.issuer_signature),
  };
  const keys = { privateKey: here.privateKey, publicKey: here.publicKeyRaw };
  const validUntil = Date.parse(credential.valid_until);
  const canvas = $("#ticket-qr");
  canvas.setAttribute("aria-label", t("ticket.qrLabel", { name, seconds: QR_PERIOD_S }));
  pass.hidden = false;
  let period = null;

  async function tick() {
    if (stopped) return;
    const now = serverNow();
    $("#ticket-clock").textContent = clock(now);
    $("#ticket-clock").dateTime = new Date(now).toISOString();
    $("#ticket-day").textContent = day(now);
    const seconds = Math.floor(now / 1000);
    const left = QR_PERIOD_S - (seconds % QR_PERIOD_S);
    $("#ticket-countdown").textContent = t("ticket.countdown", { n: left });
    const progress = $("#ticket-progress");
    progress.setAttribute("aria-valuenow", String(left));
    progress.firstElementChild.style.width = `${(left / QR_PERIOD_S) * 100}%`;
    const offline = !online() || unreachable;
    say($("#ticket-offline"), offline ? t("ticket.offline", { time: dateTime(validUntil) }) : "");
    if (now >= validUntil) {
      pass.hidden = true;
      clearInterval(timer);
      return say(error, t("ticket.credentialExpired"));
    }
    const current = Math.floor(seconds / QR_PERIOD_S);
    if (current === period) return;
    period = current;
    try {
      const counter = nextCounter(who.id);
      const text = await makeDynamicQr(signed, keys, { at: seconds, counter });
      if (stopped) return;
      drawQr(canvas, text, { mode: "Alphanumeric", cssSize: Math.min(360, pass.clientWidth - 24) });
      canvas.dataset.counter = String(counter);
      canvas.dataset.at = String(seconds);
    } catch (problem) {
      pass.hidden = true;
      clearInterval(timer);
      failed(error, problem);
    }
  }

  function onVisible() {
    if (document.visibilityState === "visible") tick();
  }

  document.addEventListener("visibilitychange", onVisible);
  await tick();
  timer = setInterval(tick, 250);
  try {
    wakeLock = await navigator.wakeLock?.request("screen");
  } catch {
    // the screen may dim; the brightness hint stays
  }
  if (online() && Date.parse(credential.refresh_at) <= Date.now()) credentialFor(ticketId, { force: true }).catch(() => {});
  if (online() && kept) {
    // Revoked or expired meanwhile? Then the code would be refused at the gate: say so.
    fetchTicket(who.id, ticketId).then((fresh) => {
      if (!stopped && fresh.status !== "active") {
        leaveScreen();
        pass.hidden = true;
        say(error, t(`ticket.${fresh.status}`));
      }
    }).catch((problem) => {
      // navigator.onLine says true on a Wi-Fi without internet: what failed says otherwise.
      if (problem instanceof api.NetworkError) markReachable(false);
    });
  }
}

async function fetchTicket(riderId, ticketId) {
  const ticket = await api.get(`v1/tickets/${ticketId}`);
  markReachable(true);
  const known = (await store.cached(riderId, "tickets"))?.value || [];
  await store.keep(riderId, "tickets", [ticket, ...known.filter((x) => x.id !== ticket.id)]);
  return ticket;
}

async function useThisPhone() {
  const error = $("#ticket-error");
  say(error, "");
  try {
    await device.ensureRegistered(rider().id);
    route();
  } catch (problem) {
    failed(error, problem);
  }
}

// Start --------------------------------------------------------------------------------------

function switchLanguage() {
  setLang(lang() === "vi" ? "en" : "vi");
  $("#lang").setAttribute("lang", lang() === "vi" ? "en" : "vi");
  translate();
  rerender();
}

function start() {
  translate();
  $("#lang").setAttribute("lang", lang() === "vi" ? "en" : "vi");
  $("#lang").onclick = switchLanguage;
  $("#mode-login").onclick = () => setMode(false);
  $("#mode-signup").onclick = () => setMode(true);
  $("#login-form").onsubmit = submitLogin;
  $("#logout").onclick = logOut;
  $("#copy-vietqr").onclick = copyVietQr;
  $("#confirm-form").onsubmit = pay;
  $("#confirm-cancel").onclick = () => $("#confirm").close();
  $("#confirm").addEventListener("close", () => {
    if (document.body.dataset.screen === "buy") rerender(); // shows an unfinished purchase
  });
  for (const link of document.querySelectorAll("#nav a")) {
    link.addEventListener("click", () => {
      if (link.getAttribute("href") === location.hash) rerender(); // tapping the current tab refreshes it
    });
  }
  $("#confirm-topup").onclick = () => $("#confirm").close();
  $("#ticket-use-here").onclick = useThisPhone;
  for (const chip of document.querySelectorAll("[data-amount]")) {
    chip.onclick = () => { $("#amount").value = chip.textContent; };
  }
  window.addEventListener("online", () => markReachable(true));
  window.addEventListener("offline", () => markReachable(false));
  window.addEventListener("hashchange", route);
  markReachable(true);
  if (!("indexedDB" in window)) say($("#fatal"), t("err.storage"));
  else if (!window.isSecureContext || !crypto.subtle) say($("#fatal"), t("err.no_webcrypto"));
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js", { scope: "./" }).catch(() => {
      // offline with a worker already installed, or not served over HTTPS: the page still works
    });
  }
  route();
}

start();
