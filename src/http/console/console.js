// The Maxine web console. Plain script, no dependencies. Every value from
// the server is put on the page with textContent: instance metadata, names
// and check outputs are user input and are never parsed as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "maxine.token";
  const FEED_MAX = 200;
  const $ = (id) => document.getElementById(id);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    selected: null, // { service, dc }
    lastEventId: 0,
    stream: null, // AbortController of the event stream
    refreshTimer: null,
  };

  // ---- helpers ----

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function headers() {
    const h = { Accept: "application/json" };
    if (state.token) h.Authorization = "Bearer " + state.token;
    return h;
  }

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    const res = await fetch(path, { headers: headers(), cache: "no-store" });
    let body = null;
    try { body = await res.json(); } catch (_) { body = null; }
    if (!res.ok) {
      const msg = (body && (body.error || body.message)) || res.statusText;
      throw new HttpError(res.status, msg);
    }
    return body;
  }

  function setStatus(text, cls) {
    const s = $("status");
    s.textContent = text;
    s.className = "status " + (cls || "");
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // ---- sign-in ----

  function showSignIn(message) {
    stopStream();
    $("main").hidden = true;
    $("signin").hidden = false;
    $("account").hidden = !state.token;
    $("account").textContent = "Sign out";
    $("signin-error").textContent = message || "";
    setStatus("signed out", "down");
  }

  function showMain() {
    $("signin").hidden = true;
    $("main").hidden = false;
    $("account").hidden = false;
    $("account").textContent = state.token ? "Sign out" : "Sign in";
  }

  async function signIn(ev) {
    ev.preventDefault();
    let token = $("token").value.trim();
    const user = $("user").value.trim();
    const password = $("password").value;
    $("signin-error").textContent = "";
    if (!token && user) {
      try {
        const res = await fetch("/api/maxine/signin", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ userName: user, password: password }),
        });
        const body = await res.json().catch(() => null);
        if (!res.ok || !body || !body.accessToken) {
          $("signin-error").textContent = (body && body.message) || "sign-in failed";
          return;
        }
        token = body.accessToken;
      } catch (e) {
        $("signin-error").textContent = String(e);
        return;
      }
    }
    if (!token) {
      $("signin-error").textContent = "give a token, or a user name and password";
      return;
    }
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("password").value = "";
    start();
  }

  function account() {
    if (!state.token) {
      showSignIn("");
      return;
    }
    state.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn("");
  }

  function denied(e) {
    if (e instanceof HttpError && (e.status === 401 || e.status === 403)) {
      showSignIn(state.token ? "this token may not read the services: " + e.message : "");
      return true;
    }
    return false;
  }

  // ---- services ----

  async function loadServices() {
    const body = await api("/v1/services");
    $("index").textContent = "index " + body.index;
    const tbody = $("services").tBodies[0];
    clear(tbody);
    let rows = 0;
    for (const svc of body.services || []) {
      for (const [dc, c] of Object.entries(svc.datacenters || {})) {
        const tr = el("tr", null, "link");
        tr.dataset.service = svc.name;
        tr.dataset.dc = dc;
        if (state.selected && state.selected.service === svc.name && state.selected.dc === dc) {
          tr.classList.add("selected");
        }
        tr.appendChild(el("td", svc.name, "mono"));
        tr.appendChild(el("td", dc));
        tr.appendChild(el("td", c.passing, "num passing"));
        const failing = (c.total || 0) - (c.passing || 0);
        tr.appendChild(el("td", failing, "num" + (failing > 0 ? " critical" : "")));
        tr.appendChild(el("td", c.total, "num"));
        tr.addEventListener("click", () => select(svc.name, dc));
        tbody.appendChild(tr);
        rows++;
      }
    }
    $("no-services").hidden = rows > 0;
  }

  async function loadDatacenters() {
    let list;
    try {
      list = await api("/v1/datacenters");
    } catch (e) {
      // Reading them needs operator read: without it, they are not shown.
      $("datacenters-card").hidden = true;
      return;
    }
    const dcs = Array.isArray(list) ? list : (list && list.datacenters) || [];
    $("datacenters-card").hidden = dcs.length < 2;
    const tbody = $("datacenters").tBodies[0];
    clear(tbody);
    for (const dc of dcs) {
      const tr = el("tr");
      tr.appendChild(el("td", dc.name + (dc.local ? " (local)" : ""), "mono"));
      let st = dc.reachable ? "reachable" : "unreachable";
      if (dc.stale) st += ", stale";
      tr.appendChild(el("td", st, dc.reachable ? "passing" : "critical"));
      tr.appendChild(el("td", dc.services, "num"));
      tr.appendChild(el("td", dc.instances, "num"));
      tr.appendChild(el("td", dc.local ? "" : (dc.lag_indexes || 0) + " changes", "num"));
      tbody.appendChild(tr);
    }
  }

  // ---- one service ----

  function select(service, dc) {
    const hash = "#service=" + encodeURIComponent(service) + "&dc=" + encodeURIComponent(dc);
    if (location.hash !== hash) location.hash = hash; // hashchange loads it
    else loadDetail();
  }

  function readHash() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ""));
    const service = p.get("service");
    state.selected = service ? { service: service, dc: p.get("dc") || "" } : null;
    for (const tr of $("services").tBodies[0].rows) {
      const on = state.selected && tr.dataset.service === state.selected.service && tr.dataset.dc === state.selected.dc;
      tr.classList.toggle("selected", !!on);
    }
  }

  function checksCell(checks) {
    const ul = el("ul", null, "plain");
    for (const c of checks || []) {
      const li = el("li");
      li.appendChild(el("span", c.name + " ", "mono"));
      li.appendChild(el("span", c.status, "health " + c.status));
      if (c.output) li.appendChild(el("span", c.output, "output"));
      ul.appendChild(li);
    }
    return ul;
  }

  function metadataCell(meta) {
    const ul = el("ul", null, "plain");
    for (const [k, v] of Object.entries(meta || {})) {
      const li = el("li");
      li.appendChild(el("span", k, "mono"));
      li.appendChild(document.createTextNode(" = "));
      li.appendChild(el("span", v, "mono"));
      ul.appendChild(li);
    }
    return ul;
  }

  async function loadDetail() {
    readHash();
    const sel = state.selected;
    if (!sel) {
      $("detail").hidden = true;
      return;
    }
    $("detail").hidden = false;
    $("detail-name").textContent = sel.service;
    $("detail-dc").textContent = sel.dc ? "in " + sel.dc : "";
    const tbody = $("instances").tBodies[0];
    let body;
    try {
      body = await api("/v1/services/" + encodeURIComponent(sel.service) + (sel.dc ? "?dc=" + encodeURIComponent(sel.dc) : ""));
    } catch (e) {
      if (denied(e)) return;
      clear(tbody);
      $("detail-info").textContent = e instanceof HttpError && e.status === 404 ? "" : String(e.message);
      $("detail-empty").hidden = false;
      return;
    }
    $("detail-info").textContent = "DNS " + body.dns.name + " · SRV " + body.dns.srv + " · strategy " + body.strategy + (body.panic ? " · panic mode" : "");
    clear(tbody);
    for (const i of body.instances || []) {
      const tr = el("tr");
      tr.dataset.instance = i.id;
      tr.appendChild(el("td", i.id, "mono"));
      tr.appendChild(el("td", i.health, "health " + i.health));
      tr.appendChild(el("td", i.address, "mono"));
      tr.appendChild(el("td", i.port, "num"));
      tr.appendChild(el("td", i.version || "", "mono"));
      const checks = el("td");
      checks.appendChild(checksCell(i.checks));
      tr.appendChild(checks);
      const meta = el("td");
      meta.appendChild(metadataCell(i.metadata));
      tr.appendChild(meta);
      tbody.appendChild(tr);
    }
    $("detail-empty").hidden = (body.instances || []).length > 0;
  }

  // ---- the change feed ----

  function addFeed(change) {
    const feed = $("feed");
    const li = el("li");
    li.appendChild(el("span", change.kind, "kind"));
    li.appendChild(document.createTextNode(" "));
    if (change.service) {
      li.appendChild(el("span", change.service + "/" + change.id, "mono"));
      li.appendChild(el("span", " in " + change.datacenter, "muted"));
    } else if (change.key) {
      li.appendChild(el("span", change.key, "mono"));
    }
    li.appendChild(el("span", " #" + change.index, "muted"));
    li.dataset.index = change.index;
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > FEED_MAX) feed.removeChild(feed.lastChild);
  }

  // Coalesces the reloads of a burst of changes into one.
  function refreshSoon(service) {
    const detail = state.selected && (!service || service === state.selected.service);
    if (state.refreshTimer) {
      state.refreshDetail = state.refreshDetail || detail;
      return;
    }
    state.refreshDetail = detail;
    state.refreshTimer = setTimeout(async () => {
      const both = state.refreshDetail;
      state.refreshTimer = null;
      try {
        await loadServices();
        if (both) await loadDetail();
      } catch (e) {
        denied(e);
      }
    }, 150);
  }

  function onEvent(type, data, id) {
    if (id) state.lastEventId = id;
    let body;
    try { body = JSON.parse(data); } catch (_) { return; }
    if (type === "change") {
      addFeed(body);
      refreshSoon(body.service);
    } else if (type === "snapshot") {
      refreshSoon(null);
    } else if (type === "resync") {
      state.lastEventId = 0;
    }
  }

  function stopStream() {
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  // The stream is read with fetch, not EventSource: EventSource cannot send
  // an Authorization header, and the token must not go into a URL (URLs end
  // up in logs and history).
  async function follow() {
    stopStream();
    const ctl = new AbortController();
    state.stream = ctl;
    let delay = 1000;
    while (state.stream === ctl) {
      try {
        const h = headers();
        h.Accept = "text/event-stream";
        if (state.lastEventId) h["Last-Event-ID"] = String(state.lastEventId);
        const res = await fetch("/v1/events", { headers: h, signal: ctl.signal, cache: "no-store" });
        if (res.status === 401 || res.status === 403) {
          showSignIn("this token may not follow the changes");
          return;
        }
        if (!res.ok || !res.body) throw new Error("the event stream answered " + res.status);
        setStatus("live", "live");
        delay = 1000;
        await readSse(res.body, ctl);
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      if (state.stream !== ctl) return;
      setStatus("reconnecting…", "down");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  async function readSse(stream, ctl) {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let type = "message", data = [], id = 0;
    while (!ctl.signal.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
        if (line === "") {
          if (data.length) onEvent(type, data.join("\n"), id);
          type = "message"; data = []; id = 0;
        } else if (line.startsWith(":")) {
          // a keep-alive comment
        } else {
          const c = line.indexOf(":");
          const field = c < 0 ? line : line.slice(0, c);
          const val = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
          if (field === "event") type = val;
          else if (field === "data") data.push(val);
          else if (field === "id") id = Number(val) || 0;
        }
      }
    }
  }

  // ---- start ----

  // With access control on, an anonymous caller may see little or
  // nothing, and the service list is then just empty. An anonymous caller
  // refused operator reads is asked to sign in; one who may read them can
  // still sign in from the header.
  async function anonymousRefused() {
    if (state.token) return false;
    try {
      await api("/v1/datacenters");
      return false;
    } catch (e) {
      return e instanceof HttpError && (e.status === 401 || e.status === 403);
    }
  }

  async function start() {
    if (await anonymousRefused()) {
      showSignIn("");
      return;
    }
    try {
      await loadServices();
    } catch (e) {
      if (!denied(e)) setStatus(String(e.message), "down");
      return;
    }
    showMain();
    loadDatacenters();
    loadDetail();
    follow();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", signIn);
    $("account").addEventListener("click", account);
    $("home").addEventListener("click", (ev) => {
      ev.preventDefault();
      history.replaceState(null, "", location.pathname);
      if ($("main").hidden) start();
      else loadDetail();
    });
    window.addEventListener("hashchange", loadDetail);
    setInterval(() => { if (!$("main").hidden) loadDatacenters(); }, 10000);
    start();
  });
})();
