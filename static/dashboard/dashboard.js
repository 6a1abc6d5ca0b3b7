/* The dashboard: send over the JSON-RPC socket, watch the event stream, keep the
 * message table and the link state current. Plain browser JavaScript, no build.
 *
 * Everything the server says is put in the page with textContent, never as HTML.
 */
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const API = config.api_base; // e.g. "/v1" or "/prefix/v1"
  const $ = (id) => document.getElementById(id);

  const FEED_LIMIT = 200;
  const STATUS_EVERY_MS = 5000;
  const CALL_TIMEOUT_MS = 30000;
  const CLOSE_UNAUTHORIZED = 4401;

  /* The API key (when the gateway has SMSAPI_AUTH=required), kept in this browser.
   * fetch sends it as a header; EventSource and WebSocket cannot, so they get ?api_key=. */
  const KEY_STORAGE = "smsapi.apiKey";
  let apiKey = (() => {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  })();
  const authHeaders = () => (apiKey ? { Authorization: `Bearer ${apiKey}` } : {});
  const withKey = (query) => {
    if (apiKey) query.set("api_key", apiKey);
    return query;
  };

  // ---------------------------------------------------------------- helpers

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /* Node.append() writes null as "null": leave the missing ones out. */
  function add(parent, ...children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      parent.append(child);
    }
    return parent;
  }

  function wsUrl(path) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = withKey(new URLSearchParams()).toString();
    return `${scheme}//${location.host}${API}${path}${query ? `?${query}` : ""}`;
  }

  function clock(date = new Date()) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  }

  function shortDate(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    const today = new Date().toDateString() === date.toDateString();
    return today ? clock(date) : date.toLocaleString([], { dateStyle: "short", timeStyle: "short", hourCycle: "h23" });
  }

  /* Backoff for reconnects: 0.5 s doubling up to 15 s, with a little jitter. */
  function backoff(attempt) {
    const base = Math.min(15000, 500 * 2 ** attempt);
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  function setPill(id, state, text, title) {
    const pill = $(id);
    pill.dataset.state = state;
    pill.querySelector(".label").textContent = text;
    if (title) pill.title = title;
  }

  // ------------------------------------------------------- JSON-RPC socket

  /* Why a call cannot be made while the gateway refuses the socket's key (close 4401). */
  const keyProblem = () =>
    apiKey
      ? "the gateway refused this API key: check the key in the API key field (top right)"
      : "this gateway needs an API key: enter it in the API key field (top right), then Send again";

  /* /v1/ws/jsonrpc: calls matched to answers by id; reconnects by itself.
   * ``urlFor`` is asked on each connect, so a new key takes effect without a reload. */
  class RpcSocket {
    constructor(urlFor) {
      this.urlFor = urlFor;
      this.refused = false; // the last close was 4401: calls fail at once with keyProblem()
      this.nextId = 1;
      this.pending = new Map();
      this.attempt = 0;
      this.queue = [];
      this.connect();
    }

    connect() {
      setPill("rpc-pill", "connecting", "Send socket: connecting");
      const ws = new WebSocket(this.urlFor());
      this.ws = ws;
      ws.onopen = () => {
        this.attempt = 0;
        this.refused = false;
        setPill("rpc-pill", "ok", "Send socket: connected");
        for (const text of this.queue.splice(0)) ws.send(text);
      };
      ws.onmessage = (message) => this.answer(message.data);
      ws.onclose = (event) => {
        this.refused = event.code === CLOSE_UNAUTHORIZED;
        // Calls in flight may or may not have been done: say so rather than guess.
        const why = this.refused ? keyProblem() : "the socket closed before the answer";
        for (const [, call] of this.pending) {
          clearTimeout(call.timer);
          call.reject(new Error(why));
        }
        this.pending.clear();
        this.queue = [];
        const wait = backoff(this.attempt++);
        if (this.refused) setPill("rpc-pill", "down", apiKey ? "Send socket: API key refused" : "Send socket: API key needed");
        else setPill("rpc-pill", "down", `Send socket: offline, retry in ${Math.ceil(wait / 1000)} s`);
        this.retry = setTimeout(() => this.connect(), wait);
      };
    }

    answer(text) {
      let reply;
      try {
        reply = JSON.parse(text);
      } catch {
        return;
      }
      const call = this.pending.get(reply.id);
      if (!call) return;
      this.pending.delete(reply.id);
      clearTimeout(call.timer);
      if (reply.error === null || reply.error === undefined) call.resolve(reply.result);
      else call.reject(new Error(reply.error));
    }

    /* Connect again now (a new API key): the old socket is dropped quietly. */
    restart() {
      clearTimeout(this.retry);
      this.ws.onclose = null;
      this.ws.close();
      this.attempt = 0;
      this.refused = false;
      this.connect();
    }

    call(method, params) {
      if (this.refused && this.ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error(keyProblem()));
      const id = this.nextId++;
      const text = JSON.stringify({ method, params: [params], id });
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new Error("no answer within 30 s"));
        }, CALL_TIMEOUT_MS);
        this.pending.set(id, { resolve, reject, timer });
        if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
        else this.queue.push(text);
      });
    }
  }

  // ------------------------------------------------------------- send form

  const form = $("send-form");
  const textInput = $("text");
  const encInput = $("enc");

  function updateMeter() {
    const info = SmsText.analyse(textInput.value, encInput.value, config.concat);
    $("meter-chars").textContent = info.characters;
    $("meter-parts").textContent = info.parts;
    $("meter-parts-word").textContent = info.parts === 1 ? "part" : "parts";
    const encoding = $("meter-encoding");
    encoding.textContent = info.label;
    encoding.dataset.encoding = info.encoding;
    encoding.title = `${info.units} ${info.unit}`;
    $("meter-left").textContent =
      info.parts <= 1
        ? `${info.left} ${info.unit} left in this SMS`
        : `${info.left} left in part ${info.parts} (${info.capacity} per part)`;
    const fill = info.parts === 0 ? 0 : 1 - info.left / info.capacity;
    $("meter-fill").style.width = `${Math.round(fill * 100)}%`;

    const note = $("meter-note");
    let message = "";
    let level = "info";
    if (info.bad) {
      message = `${info.bad.text} cannot be sent in ${info.label}: choose another encoding.`;
      level = "error";
    } else if (info.parts > config.max_parts) {
      message = `This text needs ${info.parts} parts; the gateway sends at most ${config.max_parts}.`;
      level = "error";
    } else if (info.forcedBy.length) {
      const shown = info.forcedBy.slice(0, 5).map(SmsText.describe).join(", ");
      message = `UCS-2 because of ${shown}${info.forcedBy.length > 5 ? "…" : ""}.`;
    }
    note.hidden = !message;
    note.textContent = message;
    note.dataset.level = level;
    $("meter").dataset.level = message ? level : "ok";
  }

  function showResult(kind, text) {
    const result = $("send-result");
    result.dataset.kind = kind;
    result.textContent = text;
  }

  async function submit(event) {
    event.preventDefault();
    const params = {};
    for (const [key, value] of new FormData(form)) if (value !== "") params[key] = value;
    const button = $("send-button");
    button.disabled = true;
    showResult("pending", "Sending…");
    try {
      const result = await rpc.call("SM.Submit", params);
      const what = result.message_id
        ? `accepted by the SMSC as ${result.message_id}`
        : `stored, ${result.status}`;
      const parts = result.parts > 1 ? ` in ${result.parts} parts` : "";
      showResult("ok", `Message #${result.id} ${what}${parts}.`);
      messages.upsert({ ...params, ...result, state: result.status, created_at: new Date().toISOString() });
      messages.refreshSoon();
      loadStatusSoon();
    } catch (error) {
      showResult("error", error.message);
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------- the feed

  const feed = $("feed");
  const shown = new Set(["receipt", "mo", "status"]);

  function feedItem(data) {
    const type = data.type || "event";
    const head = el("div", { class: "feed-head" });
    const body = el("div", { class: "feed-body" });
    const badge = el("span", { class: `badge type-${type}` });
    if (type === "receipt") {
      badge.textContent = "receipt";
      add(head,
        badge,
        el("span", { class: "state", "data-state": (data.state || "").toLowerCase(), text: data.state || "?" }),
        data.id ? el("span", { class: "muted", text: `message #${data.id}` }) : null,
        data.parts > 1 ? el("span", { class: "muted", text: `part ${data.part}/${data.parts}` }) : null,
      );
      add(body,
        el("span", { text: `handset ${data.src || "?"}` }),
        data.error_code ? el("span", { class: "error-code", text: ` · error ${data.error_code}` }) : null,
      );
    } else if (type === "mo") {
      badge.textContent = "incoming";
      add(head, badge, el("span", { class: "route", text: `${data.src} → ${data.dst}` }));
      add(body, el("q", { class: "text", text: data.binary ? `binary ${data.binary}` : data.text }));
      if (data.complete === false) add(body, el("span", { class: "muted", text: " (incomplete)" }));
    } else if (type === "status") {
      badge.textContent = "state";
      add(head,
        badge,
        el("span", { text: `message #${data.id}` }),
        el("span", { class: "arrow", text: "→" }),
        el("span", { class: "state", "data-state": data.state, text: data.state }),
      );
      add(body, el("span", { class: "muted", text: `to ${data.dst}` }));
      if (data.command_status) add(body, el("span", { class: "error-code", text: ` · status ${data.command_status}` }));
    } else {
      badge.textContent = type;
      add(head, badge);
      add(body, el("code", { text: JSON.stringify(data) }));
    }
    const item = el(
      "li",
      { class: "feed-item", "data-type": type, "data-event-id": data.event_id },
      el("time", { text: clock() }),
      el("div", { class: "feed-main" }, head, body),
    );
    item.hidden = !shown.has(type);
    return item;
  }

  function addToFeed(data) {
    feed.prepend(feedItem(data));
    while (feed.children.length > FEED_LIMIT) feed.lastElementChild.remove();
    $("feed-empty").hidden = feed.children.length > 0;
  }

  for (const box of document.querySelectorAll(".filters input")) {
    box.addEventListener("change", () => {
      if (box.checked) shown.add(box.dataset.type);
      else shown.delete(box.dataset.type);
      for (const item of feed.children) item.hidden = !shown.has(item.dataset.type);
    });
  }

  // -------------------------------------------------------- event stream

  /* GET /v1/sse: EventSource resumes by itself with Last-Event-ID; when it gives
   * up (the server answered an error), we start a new one after a backoff. */
  class EventStream {
    constructor() {
      this.lastId = null;
      this.attempt = 0;
    }

    start(since) {
      this.lastId = since;
      this.open();
    }

    /* Open again now (a new API key), resuming after the last event seen. */
    restart() {
      clearTimeout(this.retry);
      if (this.source) this.source.close();
      this.attempt = 0;
      this.open();
    }

    open() {
      // The default stream carries receipts and incoming messages only (as the old
      // server's did); the dashboard also wants the state changes.
      const query = withKey(new URLSearchParams({ link: "1", type: "receipt,mo,status" }));
      if (this.lastId !== null) query.set("since", this.lastId);
      const source = new EventSource(`${API}/sse?${query}`);
      this.source = source;
      setPill("events-pill", "connecting", "Live feed: connecting");
      source.onopen = () => {
        this.attempt = 0;
        setPill("events-pill", "ok", "Live feed: live");
      };
      source.onmessage = (message) => {
        let data;
        try {
          data = JSON.parse(message.data);
        } catch {
          return;
        }
        this.lastId = Number(message.lastEventId) || this.lastId;
        addToFeed(data);
        loadStatusSoon();
        if (data.type === "status") messages.applyStatus(data);
        if (data.type === "receipt" && data.id) messages.refreshSoon();
      };
      source.addEventListener("link", (message) => {
        showLink([JSON.parse(message.data)]);
        loadStatus();
      });
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) {
          const wait = backoff(this.attempt++);
          setPill("events-pill", "down", `Live feed: offline, retry in ${Math.ceil(wait / 1000)} s`);
          this.retry = setTimeout(() => this.open(), wait);
        } else {
          setPill("events-pill", "connecting", "Live feed: reconnecting");
        }
      };
    }
  }

  // -------------------------------------------------------- message table

  const STATE_ORDER = ["queued", "submitting", "submitted", "delivered", "undeliverable", "expired", "rejected", "failed"];

  const messages = {
    rows: new Map(),
    timer: null,

    async load() {
      const info = $("messages-info");
      try {
        const response = await fetch(`${API}/messages?page_size=50`, {
          headers: { Accept: "application/json", ...authHeaders() },
        });
        if (response.status === 401) throw new Error((await response.json()).error);
        if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
        const page = await response.json();
        const results = Array.isArray(page) ? page : page.results || [];
        const body = $("messages");
        body.replaceChildren();
        this.rows.clear();
        for (const message of results) body.append(this.row(message));
        $("messages-empty").hidden = results.length > 0;
        const total = page.count ?? results.length;
        info.textContent = total > results.length ? `latest ${results.length} of ${total}` : `${total} in all`;
      } catch (error) {
        info.textContent = `could not load: ${error.message}`;
      }
    },

    refreshSoon() {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.load(), 400);
    },

    row(message) {
      const id = String(message.id);
      const ids = (message.message_ids || []).filter(Boolean);
      const state = message.state || message.status || "";
      const problem = [
        message.command_status ? `SMPP status ${message.command_status}` : "",
        message.error_code ? `network error ${message.error_code}` : "",
      ]
        .filter(Boolean)
        .join(", ");
      const tr = el(
        "tr",
        { "data-id": id },
        el("td", { class: "num", text: id }),
        el("td", { class: "nowrap", text: shortDate(message.created_at) }),
        el("td", { text: message.src || "" }),
        el("td", { class: "nowrap", text: message.dst || "" }),
        el("td", { class: "text-cell", text: message.text || "", title: message.text || "" }),
        el("td", { text: message.encoding || "" }),
        el("td", { class: "num", text: message.parts ?? message.parts_count ?? "" }),
        el("td", {}, el("span", { class: "state", "data-state": state, text: state, title: problem })),
        el("td", { class: "ids", text: ids.join(", "), title: ids.join("\n") }),
        el("td", { class: "nowrap", text: message.connector || "" }),
      );
      this.rows.set(id, tr);
      return tr;
    },

    upsert(message) {
      const id = String(message.id);
      const fresh = this.row(message);
      const old = document.querySelector(`#messages tr[data-id="${CSS.escape(id)}"]`);
      if (old) old.replaceWith(fresh);
      else $("messages").prepend(fresh);
      $("messages-empty").hidden = true;
    },

    applyStatus(event) {
      const tr = this.rows.get(String(event.id));
      if (!tr) {
        this.refreshSoon();
        return;
      }
      const cell = tr.querySelector(".state");
      const now = STATE_ORDER.indexOf(cell.dataset.state);
      const next = STATE_ORDER.indexOf(event.state);
      // Replayed events may be older than what the table shows: never move back.
      if (now > 2 && next <= 2) return;
      cell.dataset.state = event.state;
      cell.textContent = event.state;
      tr.classList.remove("flash");
      void tr.offsetWidth; // restart the animation
      tr.classList.add("flash");
      if (event.state === "submitted" || event.state === "delivered") this.refreshSoon();
    },
  };

  // ------------------------------------------------------- link and counts

  function showLink(links) {
    if (!links.length) {
      setPill("link-pill", "down", "SMPP: no worker", "No SMPP worker has reported yet");
      return;
    }
    const bound = links.filter((link) => link.state === "bound");
    const connecting = links.filter((link) => link.state === "connecting");
    const detail = links
      .map((link) => {
        const name = link.connector ? `${link.connector} bind ${link.bind}` : link.worker_id || "worker";
        return `${name}: ${link.state}${link.detail ? ` (${link.detail})` : ""}`;
      })
      .join("\n");
    if (bound.length) {
      const suffix = links.length > 1 ? ` ${bound.length}/${links.length}` : "";
      setPill("link-pill", "ok", `SMPP: bound${suffix}`, detail);
    } else if (connecting.length) setPill("link-pill", "connecting", "SMPP: connecting", detail);
    else setPill("link-pill", "down", `SMPP: ${links[0].state}`, detail);
  }

  function showCounts(counts) {
    const box = $("counts");
    box.replaceChildren();
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    box.append(el("span", { class: "count total" }, el("strong", { text: total }), total === 1 ? " message" : " messages"));
    for (const state of STATE_ORDER) {
      if (!counts[state]) continue;
      box.append(
        el("span", { class: "count", "data-state": state }, el("strong", { text: counts[state] }), ` ${state}`),
      );
    }
  }

  async function loadStatus() {
    try {
      const response = await fetch(`${API}/status`, { headers: { Accept: "application/json", ...authHeaders() } });
      if (!response.ok) throw new Error(`${response.status}`);
      const status = await response.json();
      showLink(status.link || []);
      showCounts(status.counts || {});
      return status;
    } catch {
      setPill("link-pill", "unknown", "SMPP: unknown", "The gateway did not answer /v1/status");
      return null;
    }
  }

  let statusTimer = null;
  function loadStatusSoon() {
    clearTimeout(statusTimer);
    statusTimer = setTimeout(loadStatus, 300);
  }

  // ----------------------------------------------------------------- start

  $("api-base").textContent = API;
  const keyInput = $("api-key");
  keyInput.value = apiKey;
  const saveKey = (event) => {
    if (event) event.preventDefault();
    const value = keyInput.value.trim();
    // Enter fires both "change" and "submit": act once.
    if (value === apiKey) return;
    apiKey = value;
    try {
      if (value) localStorage.setItem(KEY_STORAGE, value);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage blocked: the key still works until the page is closed
    }
    // Every connection starts again with the new key; the form keeps what was typed.
    rpc.restart();
    stream.restart();
    messages.load();
    loadStatus();
    if ($("send-result").dataset.kind === "error") showResult("", "");
  };
  $("key-form").addEventListener("submit", saveKey);
  keyInput.addEventListener("change", () => saveKey());
  if (!config.admin_url) $("admin-link").hidden = true;
  textInput.addEventListener("input", updateMeter);
  encInput.addEventListener("change", updateMeter);
  form.addEventListener("submit", submit);
  textInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  $("messages-refresh").addEventListener("click", () => messages.load());
  const moForm = $("mo-form"); // only with `serve --simulator`
  if (moForm) {
    moForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = $("mo-result");
      const body = Object.fromEntries(new FormData(moForm));
      $("mo-button").disabled = true;
      result.dataset.kind = "pending";
      result.textContent = "Sending…";
      try {
        const response = await fetch(`${API}/simulator/mo`, {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json", ...authHeaders() },
          body: JSON.stringify(body),
        });
        const answer = await response.json().catch(() => ({}));
        if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
        result.dataset.kind = "ok";
        result.textContent = `The simulator sends it now (${answer.parts} part${answer.parts === 1 ? "" : "s"}): watch the feed.`;
      } catch (error) {
        result.dataset.kind = "error";
        result.textContent = error.message;
      } finally {
        $("mo-button").disabled = false;
      }
    });
  }
  updateMeter();

  const rpc = new RpcSocket(() => wsUrl("/ws/jsonrpc"));
  const stream = new EventStream();
  messages.load();
  loadStatus().then((status) => {
    // Start the feed with the last few events, then live.
    const last = status ? status.last_event_id || 0 : null;
    stream.start(last === null ? null : Math.max(0, last - 20));
  });
  setInterval(loadStatus, STATUS_EVERY_MS);
})();
