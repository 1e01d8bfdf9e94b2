// The ticketing API as the page uses it: bearer tokens with a serialized refresh (each refresh
// token works once; two tabs refreshing at once would revoke the whole login), problem+json
// errors, a timeout, and the server's clock (the gate checks the QR's time against its own).

const SESSION_KEY = "citypass.session";
const CLOCK_KEY = "citypass.clockOffsetMs";
const TIMEOUT_MS = 15000;
const BASE = new URL("../", document.baseURI); // the app lives at <service>/app/

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = problem.code || "http_error";
    this.problem = problem;
  }
}

/** The request never got an answer (offline, server down, timeout): safe to retry. */
export class NetworkError extends Error {
  constructor(cause) {
    super("network unreachable");
    this.name = "NetworkError";
    this.cause = cause;
  }
}

export function session() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

export function keepSession(answer) {
  const value = {
    access_token: answer.access_token,
    refresh_token: answer.refresh_token,
    rider: answer.rider,
  };
  localStorage.setItem(SESSION_KEY, JSON.stringify(value));
  return value;
}

export function updateRider(rider) {
  const current = session();
  if (current) localStorage.setItem(SESSION_KEY, JSON.stringify({ ...current, rider }));
}

export function dropSession() {
  localStorage.removeItem(SESSION_KEY);
}

/** Milliseconds to add to the phone's clock to get the server's (0 when within 3 s). */
export function clockOffset() {
  return Number(localStorage.getItem(CLOCK_KEY)) || 0;
}

function learnClock(response, sentAt) {
  const date = Date.parse(response.headers.get("Date") || "");
  if (Number.isNaN(date)) return;
  // Date has whole seconds: the server's clock was within [date, date + 1 s) at the answer.
  const offset = date + 500 - (sentAt + Date.now()) / 2;
  localStorage.setItem(CLOCK_KEY, String(Math.abs(offset) >= 3000 ? Math.round(offset) : 0));
}

let refreshing = null;

async function refreshTokens(used) {
  const run = async () => {
    const current = session();
    if (!current) return false;
    if (current.refresh_token !== used) return true; // another call (or tab) already refreshed
    const response = await send("POST", "v1/sessions/refresh", {
      body: { refresh_token: current.refresh_token },
    });
    if (!response.ok) return false;
    keepSession(await response.json());
    return true;
  };
  if (!refreshing) {
    const locked = navigator.locks ? navigator.locks.request("citypass-refresh", run) : run();
    refreshing = locked.finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function send(method, path, { body, headers = {}, token } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  const sent = { Accept: "application/json", ...headers };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  if (token) sent.Authorization = `Bearer ${token}`;
  const sentAt = Date.now();
  try {
    const response = await fetch(new URL(path, BASE), {
      method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
      credentials: "omit",
    });
    learnClock(response, sentAt);
    return response;
  } catch (error) {
    throw new NetworkError(error);
  } finally {
    clearTimeout(timer);
  }
}

async function problemOf(response) {
  try {
    const problem = await response.json();
    if (problem && typeof problem === "object") return problem;
  } catch {
    // not JSON: a proxy's error page
  }
  return { status: response.status, title: response.statusText };
}

/** Calls the API; answers the parsed JSON (or null for 204), throws ApiError / NetworkError. */
export async function call(method, path, { body, headers, auth = true } = {}) {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const current = auth ? session() : null;
    if (auth && !current) throw new ApiError(401, { code: "not_logged_in", detail: "Log in first." });
    const response = await send(method, path, { body, headers, token: current?.access_token });
    if (response.status === 401 && auth && attempt === 0 && (await refreshTokens(current.refresh_token))) {
      continue;
    }
    if (response.ok) return response.status === 204 ? null : { body: await response.json(), response };
    const problem = await problemOf(response);
    if (response.status === 401 && auth) {
      // The access token was refused and could not be renewed: only a new login helps.
      dropSession();
      throw new ApiError(401, { ...problem, code: "session_ended", server_code: problem.code });
    }
    throw new ApiError(response.status, problem);
  }
  throw new ApiError(401, { code: "session_ended", detail: "The session has ended." });
}

export const get = async (path, options) => (await call("GET", path, options))?.body;
export const post = async (path, body, options = {}) => (await call("POST", path, { ...options, body }))?.body;
