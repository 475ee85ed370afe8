// Hubbub's browser client for the JSON WebSocket protocol (protocol 1).
//
// `ChatClient` owns one connection at a time: it says hello, remembers the
// rooms it should be in and the last seq it saw in each, and reconnects after
// any close it did not ask for, with jittered exponential backoff, trying the
// nodes the cluster announced in `welcome`. A reconnect resumes: `hello`
// carries the session id of the first `welcome`, every room is joined again
// with `since` (the node replays what was missed, so nothing is lost and the
// page de-duplicates by (room, seq)), and sends that were not acknowledged are
// sent again with the same id once their room is joined (the room's owner
// de-duplicates by (user, id)). A `reconnect` frame from the node moves the
// connection to another node at once. It knows nothing about the DOM: it
// reports what happens as events (`status`, `welcome`, `joined`, `left`,
// `roomlost`, `message`, `ack`, `failed`, `error`, `nodes`), each with a
// `detail`.

/// Names of users and rooms: bytes of A-Z a-z 0-9 - _ . :
export const USER_RE = /^[A-Za-z0-9_.:-]{1,32}$/;
export const ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

/// Why a node closed the connection, by close code.
export const CLOSE_REASONS = {
  1000: "closed",
  1001: "node draining",
  1006: "connection lost",
  1009: "frame too large",
  1011: "node error",
  1013: "node not ready",
  4001: "hello timeout",
  4008: "too slow reading messages",
  4009: "too many sends in flight",
};

/// Human text for `error` codes.
export const ERROR_TEXT = {
  bad_json: "the node could not read a frame",
  unknown_type: "the node does not know this request",
  bad_field: "a field was refused",
  empty_body: "the message is empty",
  body_too_large: "the message is too long",
  bad_room: "room names use 1–64 letters, digits, - _ . :",
  bad_user: "user names use 1–32 letters, digits, - _ . :",
  bad_id: "bad message id",
  binary_frame: "binary frames are not supported",
  hello_required: "not signed in yet",
  already_hello: "already signed in",
  not_joined: "you are not in this room",
  too_many_rooms: "you are in too many rooms",
  user_offline: "that user is not online",
  unavailable: "the cluster could not complete this right now",
};

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15000;
/// A connection that stayed up this long resets the backoff.
const STABLE_MS = 10000;
const PING_EVERY_MS = 20000;
const PONG_TIMEOUT_MS = 10000;
/// Without a welcome this long after opening, the attempt is abandoned.
const WELCOME_TIMEOUT_MS = 10000;
/// A request refused with `unavailable` is sent again (same id) this many
/// times, after a jittered pause, before it is reported as failed.
const MAX_AUTO_RETRIES = 3;

/// `ws(s)://<this page's host>/ws`.
export function defaultUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

/// UTF-8 length of `text` in bytes (the protocol's limits count bytes).
export function byteLength(text) {
  return new TextEncoder().encode(text).length;
}

/// Backoff before reconnect attempt `attempt` (0-based): exponential with
/// "equal jitter", so a cluster restart does not bring every client back in
/// the same instant.
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 10));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/// A node URL as this page must use it: `wss:` when the page is https.
function pageScheme(url) {
  return window.location.protocol === "https:" ? url.replace(/^ws:/, "wss:") : url;
}

export class ChatClient extends EventTarget {
  /// `user`: the name to say hello with; `url`: the first node to try.
  constructor({ user, url = defaultUrl() }) {
    super();
    this.user = user;
    this.homeUrl = url;
    /// URLs to try, the last successful one first.
    this.urls = [url];
    this.urlIndex = 0;
    this.ws = null;
    /// Frames and messages read (a batched frame holds several messages).
    this.framesRead = 0;
    this.messagesRead = 0;
    this.state = "idle"; // idle | connecting | open | waiting | moving | stopped
    this.node = null;
    this.nodes = [];
    this.maxBody = 65536;
    /// The session of the first `welcome`, resumed by every reconnect.
    this.session = null;
    /// Set by a `reconnect` frame until the next welcome: { url, reason }.
    this.moving = null;
    /// Rooms the user wants to be in: room -> { joined, lastSeq }. `lastSeq`
    /// is the last seq seen in the room (the `joined` seq of the first join
    /// counts: what came before it was never ours to show), null before.
    this.rooms = new Map();
    /// Requests not answered yet, in the order they were made:
    /// id -> { frame, sent (on this connection), retries, hold (a retry
    /// timer runs) }. They survive reconnects and are sent again.
    this.pending = new Map();
    this.attempt = 0;
    this.retryTimer = null;
    this.retryAt = 0;
    this.pingTimer = null;
    this.pongTimer = null;
    this.welcomeTimer = null;
    this.rejoinTimer = null;
    this.openedAt = 0;
    this.idPrefix = `w${Math.random().toString(36).slice(2, 8)}`;
    this.idCounter = 0;
  }

  /// Starts connecting (no-op while connected or connecting).
  connect() {
    if (this.state === "connecting" || this.state === "open" || this.state === "stopped") return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const url = this.urls[this.urlIndex % this.urls.length];
    this.setState("connecting", { url });
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.scheduleReconnect({ code: 0, reason: String(e) });
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.ws !== ws) return;
      this.openedAt = Date.now();
      // batch: a busy room's messages may come several to a frame, one per line.
      const hello = { type: "hello", user: this.user, batch: true };
      if (this.session) hello.session = this.session;
      this.sendFrame(hello);
      this.welcomeTimer = setTimeout(() => ws.close(4000, "no welcome"), WELCOME_TIMEOUT_MS);
    });
    ws.addEventListener("message", (ev) => {
      if (this.ws === ws) this.framesRead += 1;
      for (const line of String(ev.data).split("\n")) {
        // A frame may end this connection (a move to another node): the
        // rest of it belongs to the old one.
        if (this.ws !== ws) return;
        if (line === "") continue;
        let frame;
        try {
          frame = JSON.parse(line);
        } catch {
          this.emit("error", { code: "bad_frame", message: "the node sent a frame that is not JSON" });
          return;
        }
        this.messagesRead += 1;
        this.onFrame(frame);
      }
    });
    ws.addEventListener("close", (ev) => {
      if (this.ws !== ws) return;
      this.onClose(ev.code, ev.reason);
    });
  }

  /// Closes the connection for good (no reconnect).
  stop() {
    this.setState("stopped", {});
    clearTimeout(this.retryTimer);
    clearTimeout(this.rejoinTimer);
    this.rejoinTimer = null;
    this.stopTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "bye");
    this.failPending("disconnected", "the connection closed before the node confirmed it");
  }

  /// Reconnects now instead of waiting for the backoff.
  retryNow() {
    if (this.state === "waiting") this.connect();
  }

  join(room) {
    if (!this.rooms.has(room)) this.rooms.set(room, { joined: false, lastSeq: null });
    if (this.state === "open") this.sendFrame(this.joinFrame(room));
  }

  leave(room) {
    const wasJoined = this.rooms.get(room)?.joined;
    this.rooms.delete(room);
    if (this.state === "open" && wasJoined) this.sendFrame({ type: "leave", room });
    // Sends still waiting for this room will never be confirmed.
    this.flushPending();
  }

  /// `join` for `room`, resuming after the last seq seen there.
  joinFrame(room) {
    const lastSeq = this.rooms.get(room)?.lastSeq;
    return lastSeq == null ? { type: "join", room } : { type: "join", room, since: lastSeq };
  }

  /// Sends to a joined room; returns the message id.
  send(room, body) {
    return this.request({ type: "send", room, body });
  }

  direct(to, body) {
    return this.request({ type: "direct", to, body });
  }

  broadcast(body) {
    return this.request({ type: "broadcast", body });
  }

  /// Makes a request with a fresh id. It is sent now when it can be (for a
  /// room: once the room is joined), else as soon as the connection is back.
  request(frame) {
    const id = `${this.idPrefix}-${++this.idCounter}`;
    this.pending.set(id, { frame: { ...frame, id }, sent: false, retries: 0, hold: null });
    if (this.state === "stopped") {
      // Reported after the caller has recorded the id.
      queueMicrotask(() => this.fail(id, "offline", "not connected: the message was not sent"));
    } else {
      this.flushPending();
    }
    return id;
  }

  /// Sends every pending request that is not on the wire yet and may go:
  /// room sends only once their room is joined on this connection.
  flushPending() {
    if (this.state !== "open") return;
    for (const [id, req] of [...this.pending]) {
      if (req.sent || req.hold) continue;
      if (req.frame.type === "send") {
        const room = this.rooms.get(req.frame.room);
        if (!room) {
          this.fail(id, "not_joined", "you left the room before the message was confirmed");
          continue;
        }
        if (!room.joined) continue; // sent when its `joined` arrives
      }
      req.sent = true;
      this.sendFrame(req.frame);
    }
  }

  sendFrame(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  onFrame(f) {
    switch (f.type) {
      case "welcome":
        return this.onWelcome(f);
      case "joined":
        return this.onJoined(f);
      case "left":
        return this.emit("left", { room: f.room });
      case "message": {
        if (f.kind === "room") {
          const room = this.rooms.get(f.room);
          if (!room) return; // a late delivery for a room we left
          if (room.lastSeq == null || f.seq > room.lastSeq) room.lastSeq = f.seq;
        }
        return this.emit("message", f);
      }
      case "ack": {
        const req = this.pending.get(f.id);
        if (req) clearTimeout(req.hold);
        this.pending.delete(f.id);
        return this.emit("ack", f);
      }
      case "error":
        return this.onError(f);
      case "reconnect":
        return this.moveTo(f.url, f.reason);
      case "pong":
        clearTimeout(this.pongTimer);
        this.pongTimer = null;
        return;
      default:
        return; // newer servers may send more; ignore what we do not know
    }
  }

  onJoined(f) {
    const room = this.rooms.get(f.room);
    if (!room) {
      // Left while the join was in flight.
      this.sendFrame({ type: "leave", room: f.room });
      return;
    }
    const since = room.lastSeq;
    room.joined = true;
    // The first join: messages up to `seq` are not ours to show. A resumed
    // join: the replay of (since, seq] follows and moves `lastSeq` itself,
    // so a drop in the middle of it resumes where it stopped.
    if (since == null) room.lastSeq = f.seq;
    else if (f.seq < since) console.warn(`room ${f.room}: joined at seq ${f.seq}, below the ${since} already seen`);
    this.emit("joined", { room: f.room, seq: f.seq, since, truncated: f.truncated === true });
    // Sends for this room that were not confirmed go again, same ids.
    this.flushPending();
  }

  onError(f) {
    const req = f.id ? this.pending.get(f.id) : null;
    if (req) {
      const room = req.frame.type === "send" ? this.rooms.get(req.frame.room) : null;
      if (f.code === "unavailable" && req.retries < MAX_AUTO_RETRIES) {
        // The cluster could not answer in time (a node died, a room moved):
        // the same id again after a jittered pause; the owner de-duplicates.
        req.retries += 1;
        req.sent = false;
        req.hold = setTimeout(() => {
          req.hold = null;
          this.flushPending();
        }, backoffDelay(req.retries));
        return;
      }
      if (f.code === "not_joined" && room && req.retries < MAX_AUTO_RETRIES) {
        // The node dropped us from the room meanwhile: join again, then
        // the send follows.
        req.retries += 1;
        req.sent = false;
        this.lostRoom(req.frame.room);
        return;
      }
      return this.fail(f.id, f.code, f.message);
    }
    const named = /\broom ([A-Za-z0-9_.:-]+)/.exec(f.message || "")?.[1];
    if (f.code === "unavailable" && named && this.rooms.has(named)) {
      // The node dropped us from the room (its owner did not answer):
      // we still want to be in it, so join again shortly.
      this.lostRoom(named);
    } else if (f.code === "too_many_rooms" || f.code === "bad_room") {
      // A refused join: forget the latest room we were not in yet.
      const waiting = [...this.rooms].filter(([, r]) => !r.joined).map(([name]) => name);
      const refused = named && this.rooms.has(named) ? named : waiting.at(-1);
      if (refused) {
        this.rooms.delete(refused);
        for (const [id, p] of [...this.pending]) {
          if (p.frame.type === "send" && p.frame.room === refused) this.fail(id, f.code, f.message);
        }
      }
    }
    return this.emit("error", f);
  }

  /// The node no longer has us in `room`: join it again shortly.
  lostRoom(name) {
    const room = this.rooms.get(name);
    if (!room) return;
    if (room.joined) {
      room.joined = false;
      this.emit("roomlost", { room: name });
    }
    this.scheduleRejoin();
  }

  onWelcome(f) {
    clearTimeout(this.welcomeTimer);
    this.node = f.node;
    this.session = f.session;
    this.maxBody = f.max_body || this.maxBody;
    const moved = this.moving;
    this.moving = null;
    this.setNodes(f.nodes || []);
    this.setState("open", { node: f.node, moved: Boolean(moved), reason: moved?.reason });
    this.emit("welcome", { ...f, moved: Boolean(moved) });
    for (const name of this.rooms.keys()) this.sendFrame(this.joinFrame(name));
    // Direct and broadcast requests need no room: they go now.
    this.flushPending();
    this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
  }

  /// Keeps the announced nodes, with the one we are on first.
  setNodes(nodes) {
    this.nodes = nodes.map(pageScheme);
    const current = this.urls[this.urlIndex % this.urls.length];
    const rest = this.nodes.filter((u) => u !== current);
    this.urls = [current, ...rest];
    if (!this.urls.includes(this.homeUrl)) this.urls.push(this.homeUrl);
    this.urlIndex = 0;
    this.emit("nodes", { nodes: this.nodes });
  }

  /// The node asked us to move to `url` (a rebalance, or it is draining):
  /// leave this connection and resume there at once, without backoff.
  moveTo(url, reason) {
    if (typeof url !== "string" || !/^wss?:\/\//.test(url)) return;
    const target = pageScheme(url);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "moving");
    this.teardown();
    this.moving = { url: target, reason };
    this.urls = [target, ...this.urls.filter((u) => u !== target)];
    this.urlIndex = 0;
    this.attempt = 0;
    this.openedAt = 0;
    clearTimeout(this.retryTimer);
    this.setState("moving", { url: target, reason });
    this.connect();
  }

  /// Re-sends `join` for every wanted room not joined, after a jittered
  /// pause (one timer at a time).
  scheduleRejoin() {
    if (this.rejoinTimer) return;
    this.rejoinTimer = setTimeout(() => {
      this.rejoinTimer = null;
      if (this.state !== "open") return; // the welcome re-joins everything
      for (const [name, room] of this.rooms) if (!room.joined) this.sendFrame(this.joinFrame(name));
    }, backoffDelay(2));
  }

  ping() {
    if (this.pongTimer) return;
    this.sendFrame({ type: "ping" });
    this.pongTimer = setTimeout(() => {
      // No pong: the connection is dead even if the socket has not noticed.
      if (this.ws) this.ws.close(4000, "no pong");
    }, PONG_TIMEOUT_MS);
  }

  stopTimers() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    clearTimeout(this.welcomeTimer);
    this.pingTimer = this.pongTimer = this.welcomeTimer = null;
  }

  /// What a connection that ended leaves behind: no room is joined, and
  /// every pending request is to be sent again on the next connection.
  teardown() {
    this.stopTimers();
    clearTimeout(this.rejoinTimer);
    this.rejoinTimer = null;
    for (const room of this.rooms.values()) room.joined = false;
    for (const req of this.pending.values()) {
      clearTimeout(req.hold);
      req.hold = null;
      req.sent = false;
    }
  }

  onClose(code, reason) {
    this.ws = null;
    this.teardown();
    if (this.state === "stopped") return;
    this.scheduleReconnect({ code, reason });
  }

  scheduleReconnect({ code, reason }) {
    const stable = this.openedAt && Date.now() - this.openedAt > STABLE_MS;
    if (stable) this.attempt = 0;
    this.openedAt = 0;
    this.moving = null;
    // Draining or not ready: this node will not take us; go elsewhere at once.
    const moveOn = code === 1001 || code === 1013 || this.attempt > 0;
    if (moveOn && this.urls.length > 1) this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    // A draining node: straight to the next node, no backoff (once; if that
    // one is draining too, back off as usual).
    const delay = code === 1001 && this.attempt === 0 ? 0 : backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    const why = CLOSE_REASONS[code] || reason || `closed (${code})`;
    this.setState("waiting", { code, reason: why, delay, attempt: this.attempt });
    if (delay === 0) this.connect();
    else this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /// Every unanswered request fails (used when the client stops for good).
  failPending(code, message) {
    for (const id of [...this.pending.keys()]) this.fail(id, code, message);
  }

  fail(id, code, message) {
    const req = this.pending.get(id);
    if (!req) return;
    clearTimeout(req.hold);
    this.pending.delete(id);
    this.emit("failed", { id, code, message, request: req.frame });
  }

  setState(state, detail) {
    this.state = state;
    this.emit("status", { state, ...detail });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
