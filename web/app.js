// Hubbub's web chat: the page around `ChatClient` (chat.js).
//
// State lives in `conversations` (rooms, direct messages and the cluster-wide
// "Everyone" channel); every change goes through `render*` functions that
// update the DOM from that state. All user-provided text reaches the page
// through `textContent`, never as HTML.

import { ChatClient, USER_RE, ROOM_RE, ERROR_TEXT, byteLength } from "./chat.js";

const MAX_ITEMS = 500;
const MEMBERS_REFRESH_MS = 10000;
const TOAST_MS = 6000;
const store = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem(`hubbub.${key}`);
      return v == null ? fallback : JSON.parse(v);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(`hubbub.${key}`, JSON.stringify(value));
    } catch {
      // Private mode or full storage: the app works, it just forgets.
    }
  },
};

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "title") node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children.filter((c) => c != null));
  return node;
};

const app = {
  user: null,
  client: null,
  /// key -> conversation; keys are `room:<name>`, `dm:<user>`, `broadcast`.
  conversations: new Map(),
  active: null,
  /// message id -> item, for acks and failures of our own messages.
  own: new Map(),
  members: null,
  /// ws URL -> node name, from /debug/members (kept when that fails later).
  urlNames: new Map(),
  membersTimer: null,
  statusTimer: null,
  localOrder: 0,
  wasConnected: false,
};
window.hubbub = app; // for the console; the page does not rely on it

// ---- conversations -------------------------------------------------------

function conversation(key) {
  let conv = app.conversations.get(key);
  if (!conv) {
    const [kind, name] = key === "broadcast" ? ["broadcast", "Everyone"] : key.split(/:(.*)/s);
    // Rooms: `seqs` are the seqs shown, `floorSeq` the highest one dropped
    // from the list (older ones are not shown again). Others: `seen` holds
    // `from|id` of what is shown.
    conv = { key, kind, name, items: [], seqs: new Set(), floorSeq: 0, seen: new Set(), unread: 0, status: null };
    app.conversations.set(key, conv);
  }
  return conv;
}

function roomKey(room) {
  return `room:${room}`;
}

function addItem(conv, item) {
  item.order = ++app.localOrder;
  item.domKey = item.domKey || `i${item.order}`;
  conv.items.push(item);
  sortItems(conv);
  while (conv.items.length > MAX_ITEMS) {
    const dropped = conv.items.shift();
    if (dropped.seq != null) {
      conv.seqs.delete(dropped.seq);
      conv.floorSeq = Math.max(conv.floorSeq, dropped.seq);
    }
    if (dropped.id) app.own.delete(dropped.id);
  }
}

/// Rooms in sequence order (unsequenced, i.e. still pending, last; a note
/// about the room's history at its `sortSeq`); other conversations in
/// arrival order.
function sortItems(conv) {
  if (conv.kind !== "room") return;
  const at = (i) => i.seq ?? i.sortSeq ?? Infinity;
  conv.items.sort((a, b) => at(a) - at(b) || a.order - b.order);
}

function persistRooms() {
  const rooms = [...app.conversations.values()].filter((c) => c.kind === "room").map((c) => c.name);
  store.set("rooms", rooms);
}

function select(key) {
  app.active = key;
  store.set("active", key);
  const conv = app.conversations.get(key);
  if (conv) conv.unread = 0;
  closeDrawer();
  renderAll();
  $("composer-input").focus({ preventScroll: true });
}

function joinRoom(room) {
  const key = roomKey(room);
  const conv = conversation(key);
  if (conv.status !== "joined") conv.status = "joining";
  app.client.join(room);
  persistRooms();
  select(key);
}

function leaveRoom(room) {
  const key = roomKey(room);
  app.client.leave(room);
  app.conversations.delete(key);
  persistRooms();
  if (app.active === key) app.active = firstConversation();
  renderAll();
}

function firstConversation() {
  for (const conv of app.conversations.values()) if (conv.kind === "room") return conv.key;
  return app.conversations.size ? app.conversations.keys().next().value : null;
}

// ---- client events -------------------------------------------------------

function start(user) {
  app.user = user;
  store.set("user", user);
  $("me-name").textContent = user;
  $("me-avatar").textContent = user.slice(0, 1).toUpperCase();
  const client = new ChatClient({ user });
  app.client = client;
  conversation("broadcast");
  for (const room of store.get("rooms", [])) {
    if (ROOM_RE.test(room)) {
      conversation(roomKey(room)).status = "joining";
      client.join(room);
    }
  }
  const saved = store.get("active", null);
  app.active = saved && app.conversations.has(saved) ? saved : firstConversation();

  client.addEventListener("status", (e) => {
    if (e.detail.state !== "open") {
      // Rooms are joined again after the next welcome.
      for (const conv of app.conversations.values()) if (conv.kind === "room") conv.status = "joining";
      renderAll();
    }
    renderStatus(e.detail);
  });
  client.addEventListener("welcome", (e) => onWelcome(e.detail));
  client.addEventListener("nodes", () => renderNodes());
  client.addEventListener("joined", (e) => onJoined(e.detail));
  client.addEventListener("left", (e) => {
    const conv = app.conversations.get(roomKey(e.detail.room));
    if (conv) conv.status = "left";
    renderAll();
  });
  client.addEventListener("roomlost", (e) => {
    const conv = app.conversations.get(roomKey(e.detail.room));
    if (conv) conv.status = "joining";
    renderAll();
  });
  client.addEventListener("message", (e) => onMessage(e.detail));
  client.addEventListener("ack", (e) => onAck(e.detail));
  client.addEventListener("failed", (e) => onFailed(e.detail));
  client.addEventListener("error", (e) => onError(e.detail));
  client.connect();
  renderAll();
}

function onWelcome(w) {
  $("node-label").textContent = w.node;
  if (w.moved) {
    // The cluster moved us (a rebalance or a draining node): routine, so
    // only the status line says so, for a moment.
    $("conn-text").textContent = `Connected · moved to ${w.node}`;
    clearInterval(app.statusTimer);
    app.statusTimer = setTimeout(() => {
      if (app.client?.state === "open") $("conn-text").textContent = "Connected";
    }, TOAST_MS);
  } else if (app.wasConnected) {
    toast(`Reconnected to node ${w.node}`, "info");
  }
  app.wasConnected = true;
  refreshMembers();
  clearInterval(app.membersTimer);
  app.membersTimer = setInterval(refreshMembers, MEMBERS_REFRESH_MS);
  renderAll();
}

/// A (re-)join was answered. What was missed while away is replayed by the
/// node right after it (duplicates are dropped by seq in `onMessage`); when
/// the room's history no longer reaches back that far, a note marks the gap.
function onJoined({ room, since, truncated }) {
  const conv = app.conversations.get(roomKey(room));
  if (!conv) return;
  conv.status = "joined";
  if (truncated) {
    addItem(conv, {
      system: true,
      // After the last message shown, before the replayed ones.
      sortSeq: (since ?? 0) + 0.5,
      text: "Some older messages are no longer available",
    });
  }
  renderAll();
}

function onMessage(m) {
  let conv;
  if (m.kind === "room") {
    conv = app.conversations.get(roomKey(m.room));
    if (!conv) return;
    if (m.seq <= conv.floorSeq || conv.seqs.has(m.seq)) return; // already shown
  } else if (m.kind === "direct") {
    conv = conversation(`dm:${m.from === app.user ? m.to : m.from}`);
  } else {
    conv = conversation("broadcast");
  }
  const mine = m.from === app.user;
  const ownItem = mine ? app.own.get(m.id) : null;
  if (ownItem && conv.items.includes(ownItem)) {
    // Our own message coming back: it is in the list already.
    Object.assign(ownItem, { seq: m.seq ?? ownItem.seq, ts: m.ts, state: "acked" });
    if (m.seq != null) conv.seqs.add(m.seq);
    sortItems(conv);
    return renderAll();
  }
  if (m.kind !== "room") {
    const dedupKey = `${m.from}|${m.id}`;
    if (conv.seen.has(dedupKey)) return;
    conv.seen.add(dedupKey);
  }
  if (m.seq != null) conv.seqs.add(m.seq);
  addItem(conv, {
    id: m.id,
    seq: m.seq ?? null,
    from: m.from,
    to: m.to,
    body: m.body,
    ts: m.ts,
    kind: m.kind,
    room: m.room,
    own: mine,
    state: mine ? "acked" : "received",
  });
  if (conv.key !== app.active && !mine) conv.unread += 1;
  renderAll();
}

function onAck(a) {
  const item = app.own.get(a.id);
  if (!item) return;
  item.state = "acked";
  const conv = app.conversations.get(item.convKey);
  if (a.seq != null && conv) {
    if (conv.seqs.has(a.seq) && item.seq !== a.seq) {
      // Delivered before the ack under the same seq: keep one copy.
      conv.items = conv.items.filter((i) => i === item || i.seq !== a.seq);
    }
    item.seq = a.seq;
    conv.seqs.add(a.seq);
    sortItems(conv);
  }
  renderAll();
}

/// A request the client gave up on: refused by the node (after automatic
/// retries for `unavailable`), or the page stopped. The item offers Retry.
function onFailed({ id, code, message }) {
  const item = app.own.get(id);
  if (!item) return;
  item.state = "failed";
  item.error = code === "disconnected" || code === "offline" ? message : ERROR_TEXT[code] || message;
  renderAll();
}

function onError(err) {
  toast(`${ERROR_TEXT[err.code] || err.code}${err.message ? ` — ${err.message}` : ""}`, "error");
  if (err.code === "bad_room" || err.code === "too_many_rooms") {
    // A refused join: drop rooms the client forgot.
    for (const conv of [...app.conversations.values()]) {
      if (conv.kind === "room" && conv.status === "joining" && !app.client.rooms.has(conv.name)) {
        app.conversations.delete(conv.key);
        if (app.active === conv.key) app.active = firstConversation();
      }
    }
    persistRooms();
    renderAll();
  }
}

function sendMessage(body, conv) {
  const client = app.client;
  let id;
  if (conv.kind === "room") id = client.send(conv.name, body);
  else if (conv.kind === "dm") id = client.direct(conv.name, body);
  else id = client.broadcast(body);
  const item = {
    id,
    seq: null,
    from: app.user,
    to: conv.kind === "dm" ? conv.name : undefined,
    body,
    ts: Date.now(),
    kind: conv.kind === "dm" ? "direct" : conv.kind,
    room: conv.kind === "room" ? conv.name : undefined,
    own: true,
    state: "pending",
    convKey: conv.key,
  };
  app.own.set(id, item);
  if (conv.kind !== "room") conv.seen.add(`${app.user}|${id}`);
  addItem(conv, item);
  renderAll();
}

// ---- rendering -----------------------------------------------------------

function renderAll() {
  renderSidebar();
  renderConversation();
  renderComposer();
  const unread = [...app.conversations.values()].reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) Hubbub` : "Hubbub";
  const badge = $("drawer-unread");
  badge.hidden = unread === 0;
  badge.textContent = unread > 99 ? "99+" : String(unread);
}

function renderSidebar() {
  const focusedKey = document.activeElement?.dataset?.convKey;
  const lists = { room: $("room-list"), dm: $("dm-list"), broadcast: $("broadcast-list") };
  const rows = { room: [], dm: [], broadcast: [] };
  const convs = [...app.conversations.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const conv of convs) {
    const label = conv.kind === "room" ? `# ${conv.name}` : conv.kind === "dm" ? `@ ${conv.name}` : "◉ Everyone";
    const unread = conv.unread
      ? el("span", { class: "badge", "aria-label": `${conv.unread} unread`, text: String(conv.unread) })
      : null;
    const pending = conv.kind === "room" && conv.status !== "joined";
    const open = el(
      "button",
      {
        type: "button",
        class: "conv-button",
        "data-conv-key": conv.key,
        "aria-current": conv.key === app.active ? "true" : null,
        onclick: () => select(conv.key),
      },
      el("span", { class: "conv-name", text: label }),
      pending ? el("span", { class: "muted small", text: conv.status === "left" ? "left" : "joining…" }) : null,
      unread,
    );
    const leave =
      conv.kind === "room"
        ? el("button", {
            type: "button",
            class: "icon-button leave",
            "aria-label": `Leave ${conv.name}`,
            title: `Leave ${conv.name}`,
            "data-testid": "leave-room",
            text: "×",
            onclick: () => leaveRoom(conv.name),
          })
        : null;
    const row = el(
      "li",
      { "data-testid": `${conv.kind}-item`, "data-room": conv.kind === "room" ? conv.name : null, "data-unread": conv.unread },
      open,
      leave,
    );
    rows[conv.kind].push(row);
  }
  for (const [kind, list] of Object.entries(lists)) list.replaceChildren(...rows[kind]);
  if (focusedKey) document.querySelector(`[data-conv-key="${CSS.escape(focusedKey)}"]`)?.focus();
}

function renderConversation() {
  const conv = app.active ? app.conversations.get(app.active) : null;
  const list = $("message-list");
  $("empty-state").hidden = Boolean(conv);
  list.hidden = !conv;
  $("leave-button").hidden = !conv || conv.kind !== "room";
  if (!conv) {
    $("conv-title").textContent = "No conversation";
    $("conv-subtitle").textContent = "";
    list.replaceChildren();
    return;
  }
  $("conv-title").textContent = conv.kind === "room" ? `# ${conv.name}` : conv.kind === "dm" ? `@ ${conv.name}` : "Everyone";
  $("conv-subtitle").textContent =
    conv.kind === "room"
      ? conv.status === "joined" ? "Room" : "Joining…"
      : conv.kind === "dm" ? "Direct messages" : "Broadcasts to every connected user on the cluster";
  if (list.dataset.conv !== conv.key) {
    list.dataset.conv = conv.key;
    list.replaceChildren();
  }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const wanted = conv.items.map(renderItem);
  // Keyed reconcile: existing elements are reused and moved, not rebuilt.
  const keep = new Set(wanted);
  for (const child of [...list.children]) if (!keep.has(child)) child.remove();
  wanted.forEach((node, i) => {
    if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
  });
  if (atBottom || conv.items.at(-1)?.own) list.scrollTop = list.scrollHeight;
}

const itemElements = new WeakMap();

function renderItem(item) {
  let node = itemElements.get(item);
  if (item.system) {
    if (!node) {
      node = el("li", { class: "system", role: "note", text: item.text });
      itemElements.set(item, node);
    }
    return node;
  }
  if (!node) {
    const from = item.own
      ? el("span", { class: "from", text: "You" })
      : el("button", {
          type: "button",
          class: "from link-button",
          title: `Message ${item.from} directly`,
          text: item.from,
          onclick: () => openDm(item.from),
        });
    node = el(
      "li",
      { class: `msg${item.own ? " own" : ""}${item.kind === "broadcast" ? " broadcast" : ""}`, "data-testid": "message" },
      el(
        "div",
        { class: "meta" },
        from,
        el("time", { class: "time" }),
        el("span", { class: "delivery", "aria-live": "polite" }),
      ),
      el("p", { class: "body", text: item.body }),
      el("div", { class: "failure", hidden: true }),
    );
    itemElements.set(item, node);
  }
  node.dataset.kind = item.kind;
  node.dataset.from = item.from;
  node.dataset.id = item.id;
  node.dataset.state = item.state;
  if (item.room) node.dataset.room = item.room;
  if (item.seq != null) node.dataset.seq = String(item.seq);
  const time = node.querySelector("time");
  const date = new Date(item.ts);
  time.dateTime = date.toISOString();
  time.textContent = hhmm(date);
  time.title = date.toLocaleString();
  const delivery = node.querySelector(".delivery");
  delivery.textContent = item.own ? { pending: "Sending…", acked: "✓ Sent", failed: "Not sent" }[item.state] : "";
  node.classList.toggle("pending", item.state === "pending");
  node.classList.toggle("failed", item.state === "failed");
  const failure = node.querySelector(".failure");
  failure.hidden = item.state !== "failed";
  if (item.state === "failed" && !failure.childElementCount) {
    failure.append(
      el("span", { text: item.error || "not sent" }),
      el("button", { type: "button", class: "link-button", text: "Retry", onclick: () => retry(item) }),
    );
  }
  return node;
}

function hhmm(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function retry(item) {
  const conv = app.conversations.get(item.convKey);
  if (!conv) return;
  conv.items = conv.items.filter((i) => i !== item);
  app.own.delete(item.id);
  sendMessage(item.body, conv);
}

function renderComposer() {
  const conv = app.active ? app.conversations.get(app.active) : null;
  const input = $("composer-input");
  const online = app.client?.state === "open";
  const ready = Boolean(conv) && online && (conv.kind !== "room" || conv.status === "joined");
  input.disabled = !conv;
  $("send-button").disabled = !ready;
  input.placeholder = !conv
    ? "Join a room first"
    : !online
      ? "Offline — reconnecting…"
      : conv.kind === "room" && conv.status !== "joined"
        ? `Joining #${conv.name}…`
        : conv.kind === "room"
          ? `Message #${conv.name}`
          : conv.kind === "dm" ? `Message @${conv.name}` : "Message everyone on the cluster";
}

function renderStatus(s) {
  const dot = $("conn-dot");
  const text = $("conn-text");
  const retryButton = $("retry-now");
  clearInterval(app.statusTimer);
  dot.dataset.state = s.state === "moving" ? "connecting" : s.state;
  retryButton.hidden = s.state !== "waiting";
  if (s.state === "connecting") text.textContent = app.client?.moving ? "Moving to another node…" : "Connecting…";
  else if (s.state === "moving") text.textContent = "Moving to another node…";
  else if (s.state === "open") text.textContent = "Connected";
  else if (s.state === "stopped") text.textContent = "Disconnected";
  else if (s.state === "waiting") {
    const tick = () => {
      const left = Math.max(0, Math.ceil((app.client.retryAt - Date.now()) / 1000));
      text.textContent = `${s.reason} — retrying in ${left}s`;
    };
    tick();
    app.statusTimer = setInterval(tick, 1000);
    $("node-label").textContent = "–";
  }
  renderNodes();
  renderComposer();
}

async function refreshMembers() {
  try {
    const res = await fetch("/debug/members", { cache: "no-store" });
    if (!res.ok) throw new Error(String(res.status));
    app.members = await res.json();
    for (const m of app.members.members || []) if (m.node_state?.ws_url) app.urlNames.set(m.node_state.ws_url, m.name);
  } catch {
    app.members = null; // fall back to the URLs from `welcome`
  }
  renderNodes();
}

function renderNodes() {
  const list = $("nodes-list");
  const current = app.client?.state === "open" ? app.client.node : null;
  let nodes;
  if (app.members?.members) {
    nodes = app.members.members
      .filter((m) => m.state !== "down")
      .map((m) => ({
        name: m.name,
        state: m.node_state?.draining ? "draining" : m.state,
        title: [m.node_state?.ws_url, m.node_state ? `${m.node_state.connections} connections` : null, m.state]
          .filter(Boolean)
          .join(" · "),
      }));
  } else {
    nodes = (app.client?.nodes || []).map((url) => {
      // The names learnt from an earlier /debug/members, else host:port.
      let name = app.urlNames.get(url) || url;
      try {
        name = app.urlNames.get(url) || new URL(url).host;
      } catch {
        // keep the raw text
      }
      return { name, state: "alive", title: url };
    });
  }
  nodes.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  list.replaceChildren(
    ...nodes.map((n) =>
      el(
        "li",
        {
          class: "node",
          "data-node": n.name,
          "data-state": n.state,
          "data-current": n.name === current ? "true" : null,
          title: n.title,
          "aria-label": `${n.name}${n.name === current ? " (connected)" : ""}, ${n.state}`,
        },
        el("span", { class: "dot", "data-state": n.state === "alive" ? "open" : n.state, "aria-hidden": "true" }),
        el("span", { text: n.name }),
      ),
    ),
  );
}

let toastSeq = 0;
function toast(text, kind = "info") {
  const node = el("div", { class: `toast ${kind}`, "data-toast": String(++toastSeq), role: kind === "error" ? "alert" : "status" },
    el("span", { text }),
    el("button", { type: "button", class: "icon-button", "aria-label": "Dismiss", text: "×", onclick: () => node.remove() }),
  );
  $("toasts").append(node);
  setTimeout(() => node.remove(), TOAST_MS);
}

// ---- drawer (narrow screens) ---------------------------------------------

function openDrawer() {
  document.body.classList.add("drawer-open");
  $("drawer-toggle").setAttribute("aria-expanded", "true");
  $("backdrop").hidden = false;
  $("sidebar").querySelector("button, input")?.focus();
}

function closeDrawer() {
  if (!document.body.classList.contains("drawer-open")) return;
  document.body.classList.remove("drawer-open");
  $("drawer-toggle").setAttribute("aria-expanded", "false");
  $("backdrop").hidden = true;
}

// ---- forms ---------------------------------------------------------------

function fieldError(id, text) {
  const node = $(id);
  node.hidden = !text;
  node.textContent = text || "";
}

function openDm(user) {
  if (user === app.user) return;
  select(conversation(`dm:${user}`).key);
}

function askName() {
  const dialog = $("name-dialog");
  $("name-input").value = app.user || store.get("user", "") || "";
  fieldError("name-error", "");
  if (!dialog.open) dialog.showModal();
  $("name-input").focus();
}

function wire() {
  $("name-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("name-input").value.trim();
    if (!USER_RE.test(name)) {
      fieldError("name-error", "Use 1–32 letters, digits, or - _ . : (no spaces).");
      $("name-input").setAttribute("aria-invalid", "true");
      return;
    }
    $("name-input").removeAttribute("aria-invalid");
    $("name-dialog").close();
    if (name === app.user && app.client) return;
    if (app.client) {
      app.client.stop();
      app.conversations.clear();
      app.own.clear();
      app.wasConnected = false;
    }
    start(name);
  });
  $("name-dialog").addEventListener("cancel", (e) => {
    if (!app.user) e.preventDefault(); // a name is needed to chat
  });
  $("change-name").addEventListener("click", askName);

  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const room = $("join-input").value.trim().replace(/^#/, "");
    if (!ROOM_RE.test(room)) {
      fieldError("join-error", "Room names use 1–64 letters, digits, or - _ . :");
      return;
    }
    fieldError("join-error", "");
    $("join-input").value = "";
    joinRoom(room);
  });
  $("join-lobby").addEventListener("click", () => joinRoom("lobby"));

  $("dm-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const user = $("dm-input").value.trim().replace(/^@/, "");
    if (!USER_RE.test(user)) {
      fieldError("dm-error", "User names use 1–32 letters, digits, or - _ . :");
      return;
    }
    if (user === app.user) {
      fieldError("dm-error", "That is you.");
      return;
    }
    fieldError("dm-error", "");
    $("dm-input").value = "";
    openDm(user);
  });

  $("leave-button").addEventListener("click", () => {
    const conv = app.conversations.get(app.active);
    if (conv?.kind === "room") leaveRoom(conv.name);
  });

  const input = $("composer-input");
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const conv = app.conversations.get(app.active);
    const body = input.value;
    if (!conv || $("send-button").disabled || !body.trim()) return;
    const max = app.client.maxBody;
    if (byteLength(body) > max) {
      toast(`The message is too long: at most ${max} bytes.`, "error");
      return;
    }
    input.value = "";
    autosize();
    sendMessage(body, conv);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  const autosize = () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  };
  input.addEventListener("input", autosize);

  $("retry-now").addEventListener("click", () => app.client?.retryNow());
  $("drawer-toggle").addEventListener("click", () =>
    document.body.classList.contains("drawer-open") ? closeDrawer() : openDrawer(),
  );
  $("backdrop").addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("drawer-open")) {
      closeDrawer();
      $("drawer-toggle").focus();
    }
  });
}

wire();
const saved = store.get("user", null);
if (typeof saved === "string" && USER_RE.test(saved)) start(saved);
else {
  renderAll();
  askName();
}
