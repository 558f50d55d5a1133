// wwws.js: the small client every wwws page uses. No dependencies, no build step.
//
//   import { devLogin, WwwsClient } from "./wwws.js";
//   const client = new WwwsClient({ service: "chat", token: () => devLogin("alice") });
//   client.subscribe("lobby", (msg) => show(msg.data));
//   client.addEventListener("hello", (e) => console.log("on node", e.detail.node));
//   client.connect();
//
// What it does for a page (the wire protocol is docs/protocol.md):
// - request/reply: frames get an `id`; the reply with that `id` settles a Promise
//   (an `error` frame rejects it with a WwwsError carrying `code`);
// - reconnects by the close code, the way the server asks (see `reconnectPolicy`);
// - resumes channels: it remembers the last `epoch` + `offset` per channel, re-subscribes
//   with `since` after a reconnect, and drops any publication it has already seen, so a
//   page gets every message once, in order, or is told plainly that a gap happened;
// - notices a server that went silent (see `watchSilence`) and reconnects.

/** A random key for `pub`'s `idem` (1-64 characters). */
export function newIdempotencyKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** A failed request: `code` is the server's error code (or "disconnected"/"timeout"). */
class WwwsError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "WwwsError";
    this.code = code;
  }
}

/**
 * Ask the service's dev-only login for a token (off in production, where tokens come
 * from your own login service). The path is relative, so it works behind any prefix.
 */
export async function devLogin(user) {
  const response = await fetch("./api/dev-login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user }),
  });
  if (response.status === 404) {
    throw new WwwsError(
      "login_refused",
      "The dev login is off on this server: open this page with #token=<JWT> " +
        "(mint one with `make token U=name`).",
    );
  }
  if (!response.ok) {
    const reason = (await response.text()).trim() || `login failed (HTTP ${response.status})`;
    // 4xx: this name/request is refused for good; 5xx: the service is having a moment.
    const code = response.status < 500 ? "login_refused" : "login_unavailable";
    throw new WwwsError(code, reason);
  }
  return response.json(); // {user, token}
}

/**
 * A token handed to the page in its address, `#token=JWT` (e.g. from `make token
 * U=alice`), for servers where the dev login is off. The fragment never reaches a
 * server or its logs; it is removed from the address bar (and history) at once.
 * Returns {user, token} or null.
 */
export function takeHashToken() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (!token) return null;
  history.replaceState(null, "", location.pathname + location.search);
  try {
    // Only to show who we are; the server verifies the token, the page cannot.
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const user = JSON.parse(atob(payload)).sub;
    return typeof user === "string" ? { user, token } : null;
  } catch {
    return null;
  }
}

/** The WebSocket URL of a service on the page's own host: wss:// under https. */
export function serviceUrl(service, token) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/${service}/ws?token=${encodeURIComponent(token)}`;
}

// Backoff with "full jitter" (a random delay in [0, min(cap, base * 2^attempt)]): clients
// cut off together (a replica died) come back spread out instead of in one stampede.
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;

/**
 * What to do after a close, from its code (the server picks the code to steer clients):
 * - 1000 normal: the server meant it, stop;
 * - 1001 going away (drain, deploy): reconnect at once, Traefik sends us to another replica;
 * - 4000-4099 (unauthorized, forbidden, protocol violation, 4011 revoked): retrying cannot
 *   help, stop; except 4010 (token expired) when `token` is a function: the client
 *   reconnects at once with a new token (see WwwsClient.closed);
 * - 1003, 1007, 1009: this client sent bad input (binary, bad UTF-8, too big); it would
 *   only do it again, stop;
 * - 1011, 4100-4199 (slow consumer, rate limited) and anything else (1006: the network
 *   dropped or the handshake was refused): reconnect with backoff.
 * Returns {reconnect: boolean, delay: ms}.
 */
const STOP_CODES = new Set([1000, 1003, 1007, 1009]);
const TOKEN_EXPIRED = 4010;

export function reconnectPolicy(code, attempt, random = Math.random) {
  if (STOP_CODES.has(code)) return { reconnect: false, delay: 0 };
  if (code >= 4000 && code <= 4099) return { reconnect: false, delay: 0 };
  // Only the first try after a drain is immediate; if that fails too, back off.
  if (code === 1001 && attempt === 0) return { reconnect: true, delay: 0 };
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return { reconnect: true, delay: Math.round(random() * ceiling) };
}

const REQUEST_TIMEOUT_MS = 10000;
const RESUBSCRIBE_RETRY_MS = 1000;
// A connection that lived this long was healthy: the next failure starts a fresh backoff.
// (Resetting on `hello` alone would let a server that accepts and then fails at once
// keep the client in a tight loop of short delays.)
const STABLE_MS = 5000;
// The protocol's rule: no frame from the server for 2 heartbeat intervals + 5 s is a dead
// connection (docs/protocol.md, Heartbeat).
const SILENCE_SLACK_MS = 5000;

/**
 * One logical connection to a service, across reconnects. Events (CustomEvent, data in
 * `detail`):
 * - "state" {state}; "hello" {node, user, heartbeat, resumed};
 * - "close" {code, reason, reconnect, delay};
 * - "resumed" {ch, recovered, missed, reconnected}: a channel picked up where it was;
 * - "gap" {ch, reason}: publications were lost for good (the page was told, not fooled);
 * - "suberror" {ch, error}; "frame": every frame, for ops without a helper (presence,
 *   heartbeat, calls, ...).
 */
export class WwwsClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.service  "chat" | "ticker" | "telephony"
   * @param {() => Promise<{token: string}>|string} options.token  asked again on every
   *   connect, so an expired dev token is simply replaced, and when the server asks for
   *   a fresh token (`refresh`, before the token expires)
   * @param {(connects: number) => void} [options.onConnect]  after each `hello`
   */
  constructor({ service, token, onConnect }) {
    super();
    this.service = service;
    this.tokenSource = token;
    this.onConnect = onConnect;
    this.ws = null;
    this.state = "idle"; // idle | connecting | open | waiting | closed
    this.hello = null;
    this.connects = 0; // how many times a `hello` arrived
    this.attempt = 0; // failed tries since the last stable connection
    this.openedAt = null; // when the current connection said `hello`
    this.generation = 0; // bumps on every open(), so a stale one gives up
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.channels = new Map(); // channel -> see `subscribe`
    this.retryTimer = null;
    this.stopped = false;
    this.refreshing = false; // a token refresh is under way
    this.heartbeat = null; // the server's ping interval, s (hello, then `heartbeat` frames)
    this.lastHeard = 0; // when the current connection last sent a frame (Date.now())
    this.silenceTimer = null;
    this.asking = false; // a `ping` is in flight
    // Back on the network (a phone leaving a tunnel): no point sitting out the backoff.
    window.addEventListener("online", () => {
      if (this.state === "waiting") {
        clearTimeout(this.retryTimer);
        this.open();
      }
    });
  }

  // -- connection ---------------------------------------------------------------------

  connect() {
    if (this.state === "connecting" || this.state === "open") return;
    this.stopped = false;
    clearTimeout(this.retryTimer);
    this.open();
  }

  /** Close for good (1000): no reconnect. */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000, "bye");
    this.setState("closed");
  }

  async open() {
    const generation = ++this.generation;
    this.setState("connecting");
    let token;
    try {
      const source = this.tokenSource;
      token = typeof source === "function" ? (await source()).token : source;
    } catch (error) {
      if (this.stopped || generation !== this.generation) return;
      if (error.code === "login_refused") {
        // A refused name will not become valid by retrying.
        this.emit("close", { code: 0, reason: error.message, reconnect: false, delay: 0 });
        this.setState("closed");
      } else {
        // The service is unreachable (restarting?): retry like a dropped connection.
        this.ws = null;
        this.closed(null, 1006, error.message);
      }
      return;
    }
    if (this.stopped || generation !== this.generation) return;
    const ws = new WebSocket(serviceUrl(this.service, token));
    this.ws = ws;
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => this.closed(ws, event.code, event.reason);
  }

  closed(ws, code, reason) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.hello = null;
    clearTimeout(this.silenceTimer);
    if (this.openedAt !== null && Date.now() - this.openedAt >= STABLE_MS) this.attempt = 0;
    this.openedAt = null;
    for (const [, request] of this.pending) {
      clearTimeout(request.timer);
      request.reject(new WwwsError("disconnected", "the connection closed"));
    }
    this.pending.clear();
    for (const state of this.channels.values()) state.live = false;
    // 4010: the token expired unrefreshed. A token function gives a new one: reconnect now.
    const renewable = code === TOKEN_EXPIRED && typeof this.tokenSource === "function";
    const policy = this.stopped
      ? { reconnect: false, delay: 0 }
      : renewable
        ? { reconnect: true, delay: 0 }
        : reconnectPolicy(code, this.attempt);
    this.emit("close", { code, reason, ...policy });
    if (!policy.reconnect) {
      this.setState("closed");
      return;
    }
    this.attempt += 1;
    this.setState("waiting");
    this.retryTimer = setTimeout(() => this.open(), policy.delay);
  }

  setState(state) {
    this.state = state;
    this.emit("state", { state });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // -- frames -------------------------------------------------------------------------

  /** Send a frame without waiting for a reply; false when not connected. */
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Send a frame with a fresh `id` and resolve with the reply that echoes it. */
  request(frame, timeout = REQUEST_TIMEOUT_MS) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.send({ ...frame, id })) {
        reject(new WwwsError("disconnected", "not connected"));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new WwwsError("timeout", `no reply to ${frame.op}`));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer });
    });
  }

  /**
   * Publish `data` on `channel` and resolve with the `ack`. The frame carries an
   * idempotency key (`idem`): pass the same key again to retry a publication whose ack
   * never came (or that was answered `unavailable`); the server stores it once and
   * answers the retry with the first offset. A fresh key is made when none is given.
   */
  publish(channel, data, { idem = newIdempotencyKey() } = {}) {
    return this.request({ op: "pub", ch: channel, data, idem });
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return; // the server only sends JSON; ignore rather than crash the page
    }
    this.lastHeard = Date.now();
    switch (frame.op) {
      case "hello":
        this.welcome(frame);
        break;
      case "heartbeat":
        this.heartbeat = frame.interval;
        break;
      case "msg":
        this.publication(frame);
        break;
      case "subscribed":
        this.subscribed(frame);
        break;
      case "unsubscribed":
        break;
      case "refresh":
        this.refreshToken();
        break;
    }
    this.emit("frame", frame);
    if (frame.id !== undefined && this.pending.has(frame.id)) {
      const request = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      clearTimeout(request.timer);
      if (frame.op === "error") request.reject(new WwwsError(frame.code, frame.message));
      else request.resolve(frame);
    }
  }

  /**
   * A browser answers the server's WebSocket pings by itself and never shows them to the
   * page, so a server that vanished without a close (its machine lost power, a NAT
   * forgot the flow) looks just like a quiet one. After a quiet heartbeat interval the
   * client asks `ping` (the server answers `pong`); with no frame at all for 2 intervals
   * + 5 s it gives the connection up as dead, as the protocol says, and reconnects (the
   * "close" event has code 1006). The server still sets the pace: its interval.
   */
  watchSilence(ws) {
    clearTimeout(this.silenceTimer);
    if (ws !== this.ws || !this.hello || !(this.heartbeat > 0)) return;
    const interval = this.heartbeat * 1000;
    const limit = 2 * interval + SILENCE_SLACK_MS;
    const quiet = Date.now() - this.lastHeard;
    if (quiet >= limit) {
      ws.onmessage = ws.onclose = null; // whatever it says late is not this connection's
      try {
        ws.close(4000, "the server went silent");
      } catch {
        // closing a socket that is already closing: nothing to do
      }
      this.closed(ws, 1006, "no frame from the server for 2 heartbeat intervals + 5 s");
      return;
    }
    if (quiet >= interval && !this.asking) {
      this.asking = true;
      this.request({ op: "ping" }, limit)
        .catch(() => null) // silence is judged by the clock above, not by this reply
        .finally(() => (this.asking = false));
    }
    const next = quiet >= interval ? limit - quiet : interval - quiet;
    this.silenceTimer = setTimeout(() => this.watchSilence(ws), Math.max(100, next));
  }

  /**
   * The server's `refresh` notice: its token expires soon. With a token function the
   * client sends a new token over the socket; without one (or if it is refused) the
   * server closes with 4010 at `exp`, and a token function makes the reconnect use a new
   * token. Emits "refreshed" {exp}.
   */
  async refreshToken() {
    if (typeof this.tokenSource !== "function" || this.refreshing) return;
    this.refreshing = true;
    try {
      const { token } = await this.tokenSource();
      const reply = await this.request({ op: "refresh", token });
      this.emit("refreshed", { exp: reply.exp });
    } catch (error) {
      console.warn("wwws: token refresh failed:", error.message);
    } finally {
      this.refreshing = false;
    }
  }

  welcome(frame) {
    const resumed = this.connects > 0;
    this.connects += 1;
    this.openedAt = Date.now();
    this.hello = frame;
    this.heartbeat = frame.heartbeat;
    this.watchSilence(this.ws);
    this.setState("open");
    this.emit("hello", { ...frame, resumed });
    for (const [channel, state] of this.channels) {
      // An automatic channel (ticker's user:<id>) seen before is resumed like any other:
      // the server lets our `sub` with `since` replace its automatic subscription.
      if (!state.auto || state.epoch !== null) this.resubscribe(channel, state);
    }
    if (this.onConnect) this.onConnect(this.connects);
  }

  // -- channels -----------------------------------------------------------------------

  /**
   * Follow a channel: `onMsg(msg)` gets each publication once, in offset order, from
   * the `subscribed` snapshot/history and live. Options:
   * - resume (default true): after a reconnect ask for what was missed (`since`); false
   *   for channels where only the latest value matters (prices);
   * - auto: the server subscribes this channel by itself on connect (ticker's
   *   `user:<id>`): no `sub` the first time; after a reconnect a `sub` with `since`
   *   replaces the automatic subscription, so nothing missed is lost;
   * - onReset(info): the history restarted (new epoch or too much missed): the page
   *   should clear what it shows before the fresh window arrives.
   * Returns a Promise of the `subscribed` reply (null for auto channels).
   */
  subscribe(channel, onMsg, { resume = true, auto = false, onReset = null } = {}) {
    const state = {
      onMsg,
      onReset,
      resume,
      auto,
      epoch: null,
      offset: null, // last offset handed to onMsg
      live: false,
      resyncing: false,
    };
    this.channels.set(channel, state);
    if (auto || this.state !== "open") return Promise.resolve(null);
    return this.sendSub(channel, state, false);
  }

  async unsubscribe(channel) {
    const state = this.channels.get(channel);
    this.channels.delete(channel);
    if (state && !state.auto && this.state === "open") {
      await this.request({ op: "unsub", ch: channel }).catch(() => null);
    }
  }

  resubscribe(channel, state) {
    this.sendSub(channel, state, this.connects > 1).catch((error) => {
      if (error.code === "disconnected") return; // the next `hello` resubscribes
      this.emit("suberror", { ch: channel, error });
      if (error.code === "unavailable") {
        // "Try again": the backplane is away for a moment. Until the reply, the channel
        // shows nothing (an automatic one ignores its unsolicited window), so retry.
        const ws = this.ws;
        setTimeout(() => {
          if (this.ws === ws && this.channels.get(channel) === state) this.resubscribe(channel, state);
        }, RESUBSCRIBE_RETRY_MS);
      }
    });
  }

  sendSub(channel, state, resuming) {
    const frame = { op: "sub", ch: channel };
    if (state.resume && state.epoch !== null && state.offset !== null) {
      frame.since = { epoch: state.epoch, offset: state.offset };
    }
    state.resuming = resuming;
    return this.request(frame);
  }

  subscribed(frame) {
    const state = this.channels.get(frame.ch);
    if (!state) return;
    if (state.auto && state.resuming && frame.id === undefined) {
      // The automatic subscription's window, while our `sub` with `since` is on its way:
      // the reply to it holds exactly what we missed (docs/protocol.md, ticker).
      return;
    }
    const before = state.offset;
    const pubs = frame.publications || [];
    const reconnected = state.resuming;
    const resuming = reconnected || state.resyncing;
    // An empty epoch ("") is a channel that had no stream when we subscribed: the stream
    // its first publication created is the one we follow, so a recovered reply is no loss,
    // and an automatic subscription checks for a gap (and asks with `since`) as usual.
    const created = state.epoch === "" && (frame.recovered || state.auto);
    // One stream's top never goes below what we have seen: below it, the stream was lost
    // and restarted, even where we only know the empty epoch "" for both.
    const restarted = !frame.recovered && state.offset !== null && frame.offset < state.offset;
    if (state.epoch !== null && ((state.epoch !== frame.epoch && !created) || restarted)) {
      // The channel's history was lost and restarted: old offsets mean nothing now.
      state.offset = null;
      if (state.onReset) state.onReset({ ch: frame.ch, reason: "epoch" });
      this.emit("gap", { ch: frame.ch, reason: "epoch" });
    } else if (!frame.recovered && before !== null && state.resume) {
      const first = pubs.length ? pubs[0].offset : frame.offset + 1;
      if (first > before + 1) {
        // Publications after `before` and older than this window are not in the reply.
        state.offset = null;
        if (state.onReset) state.onReset({ ch: frame.ch, reason: "gap" });
        this.emit("gap", { ch: frame.ch, reason: "gap" });
      }
    }
    state.epoch = frame.epoch;
    state.live = true;
    state.resuming = false;
    state.resyncing = false;
    let missed = 0;
    for (const msg of pubs) if (this.deliver(frame.ch, state, msg)) missed += 1;
    // Live msgs continue after the channel's top as it was when the reply was read.
    if (state.offset === null || state.offset < frame.offset) state.offset = frame.offset;
    if (resuming) {
      this.emit("resumed", {
        ch: frame.ch,
        recovered: Boolean(frame.recovered),
        missed: before === null ? 0 : missed,
        reconnected, // false: a hole in the live stream was filled, no reconnect
      });
    }
  }

  publication(frame) {
    const state = this.channels.get(frame.ch);
    if (!state || !state.live) return;
    if (state.resume && state.offset !== null && frame.offset > state.offset + 1) {
      // A hole in the live stream: fetch it rather than show messages out of order.
      this.resync(frame.ch, state);
      return;
    }
    this.deliver(frame.ch, state, frame);
  }

  /** Hand `msg` to the page unless already seen; true when it was new. */
  deliver(channel, state, msg) {
    if (state.offset !== null && msg.offset <= state.offset) return false; // duplicate
    state.offset = msg.offset;
    try {
      state.onMsg(msg);
    } catch (error) {
      console.error(`wwws: handler for ${channel} failed`, error);
    }
    return true;
  }

  /** Unsubscribe and subscribe again with `since`, to fill a hole. */
  async resync(channel, state) {
    if (state.resyncing) return;
    state.resyncing = true;
    state.live = false;
    try {
      await this.request({ op: "unsub", ch: channel });
      const frame = { op: "sub", ch: channel, since: { epoch: state.epoch, offset: state.offset } };
      await this.request(frame);
    } catch (error) {
      state.resyncing = false;
      if (error.code !== "disconnected") this.emit("suberror", { ch: channel, error });
    }
  }
}

// -- small helpers the pages share ------------------------------------------------------

/** `document.getElementById`, failing loudly when a page and its script disagree. */
export function $(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`no element #${id}`);
  return element;
}

/** A valid user id (the server's rule), or null. */
export function validUser(name) {
  const trimmed = (name || "").trim();
  return /^[A-Za-z0-9_\-.@]{1,64}$/.test(trimmed) ? trimmed : null;
}

/** Remember small page settings (the name) across visits; storage may be blocked. */
export const remember = {
  get(key, fallback = "") {
    try {
      return localStorage.getItem(`wwws.${key}`) ?? fallback;
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(`wwws.${key}`, value);
    } catch {
      /* private mode: not remembering is fine */
    }
  },
};

/** Show the connection state, node and notices in the shared status bar of a page. */
export function bindStatus(client, { status, node, notice }) {
  client.addEventListener("state", (e) => {
    status.textContent = e.detail.state;
    status.dataset.state = e.detail.state;
  });
  client.addEventListener("hello", (e) => {
    node.textContent = e.detail.node;
    if (e.detail.resumed) say(notice, `Reconnected to node ${e.detail.node}.`, "ok");
  });
  client.addEventListener("close", (e) => {
    const { code, reason, reconnect, delay } = e.detail;
    if (!reconnect) {
      if (code !== 1000) say(notice, `Disconnected (${code}${reason ? `: ${reason}` : ""}).`, "bad");
    } else {
      const when = delay < 50 ? "now" : `in ${(delay / 1000).toFixed(1)} s`;
      say(notice, `Connection lost (${code}); reconnecting ${when}…`, "warn");
    }
  });
}

/** Put a one-line notice in `element` (kind: ok | warn | bad). */
export function say(element, text, kind = "ok") {
  element.textContent = text;
  element.dataset.kind = kind;
  element.hidden = false;
}

/** "14:03:07" in the reader's locale, from ms since the epoch. */
export function clock(ms) {
  const when = typeof ms === "number" ? new Date(ms) : new Date();
  return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
