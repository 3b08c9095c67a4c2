// The live page: loads /api/assets, then follows /api/events (server-sent events); polls /api/assets when
// the browser has no EventSource or the server has no free stream. No framework, no build step.
"use strict";

(() => {
  const POLL_MS = 2000;
  const SSE_RETRY_MS = 30000;  // while polling, how often to try the event stream again
  const CHANGES_SHOWN = 30;
  const COLORS = { price: "#58a6ff", long: "#e5534b", short: "#3fb950", oi: "#d2a8ff", grid: "#2a3039" };

  const assets = new Map();   // asset -> newest record, with .history (columns: t, price, liq_rate_*, oi_usd)
  const rows = new Map();     // asset -> {tr, cells}
  const dirty = new Set();
  let changes = [];
  let seq = 0;
  let windowS = 900;
  let stepS = 1;
  let loaded = false;
  let buffered = [];          // events that arrived before the first snapshot
  let source = null;
  let pollTimer = 0;
  let retryTimer = 0;
  let frame = 0;

  const $ = (sel) => document.querySelector(sel);
  const tbody = $("#assets tbody");

  // -- formatting ------------------------------------------------------------------------------------------

  const words = (name) => String(name).replace(/_/g, " ");
  const isNum = (x) => typeof x === "number" && Number.isFinite(x);

  function usd(x) {
    if (!isNum(x)) return "–";
    const a = Math.abs(x);
    if (a >= 1e9) return "$" + (x / 1e9).toFixed(2) + "B";
    if (a >= 1e6) return "$" + (x / 1e6).toFixed(2) + "M";
    if (a >= 1e3) return "$" + (x / 1e3).toFixed(1) + "k";
    return "$" + x.toFixed(0);
  }

  function price(x) {
    if (!isNum(x)) return "–";
    const digits = x >= 1000 ? 2 : x >= 1 ? 3 : 6;
    return x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits });
  }

  const score = (x) => (isNum(x) ? x.toFixed(0) : "–");
  const percent = (x) => (isNum(x) ? (x * 100).toFixed(4) + " %" : "–");
  const clock = (t) => (isNum(t) ? new Date(t * 1000).toISOString().slice(11, 19) + " UTC" : "");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;  // never innerHTML: names come from the data
    return node;
  }

  // -- state -----------------------------------------------------------------------------------------------

  function applySnapshot(body) {
    seq = body.seq;
    windowS = body.window_s || windowS;
    stepS = body.step_s || stepS;
    assets.clear();
    for (const record of body.assets) assets.set(record.asset, record);
    for (const [name, row] of rows) {
      if (!assets.has(name)) { row.tr.remove(); rows.delete(name); }
    }
    for (const name of assets.keys()) dirty.add(name);
    changes = body.changes.slice(-CHANGES_SHOWN).reverse();
    loaded = true;
    const pending = buffered;
    buffered = [];
    for (const event of pending) handle(event.kind, event.id, event.data);
    renderChanges();
    schedule();
  }

  function onState(record) {
    const old = assets.get(record.asset);
    const history = old ? old.history : { t: [], price: [], liq_rate_long: [], liq_rate_short: [], oi_usd: [] };
    const point = record.point;
    const keys = ["t", "price", "liq_rate_long", "liq_rate_short", "oi_usd"];
    const last = history.t.length - 1;
    // The server keeps the newest point of each step; mirror it so a reload shows the same chart.
    const sameStep = last >= 0 && Math.floor(point[0] / stepS) === Math.floor(history.t[last] / stepS);
    keys.forEach((key, i) => {
      if (sameStep) history[key][last] = point[i];
      else history[key].push(point[i]);
    });
    while (history.t.length && history.t[0] < point[0] - windowS) keys.forEach((key) => history[key].shift());
    delete record.point;
    record.history = history;
    if (old && old.stage !== record.stage) flash(record.asset);
    assets.set(record.asset, record);
    dirty.add(record.asset);
  }

  function onChange(change) {
    changes.unshift(change);
    changes.length = Math.min(changes.length, CHANGES_SHOWN);
    renderChanges();
  }

  function handle(kind, id, data) {
    if (kind === "reset") { reload(); return; }
    if (!loaded) {
      buffered.push({ kind, id, data });
      if (buffered.length > 10000) buffered.shift();  // the oldest: the ones the snapshot most likely covers
      return;
    }
    if (id && id <= seq) return;  // already in the snapshot
    if (id) seq = id;
    const payload = JSON.parse(data);
    if (kind === "state") onState(payload);
    else if (kind === "change") onChange(payload);
    schedule();
  }

  // -- transport -------------------------------------------------------------------------------------------

  function setStatus(mode, text) {
    const status = $("#status");
    status.className = "status status-" + mode;
    status.textContent = text || mode;
    document.body.dataset.mode = mode;
  }

  async function reload() {
    try {
      const response = await fetch("api/assets", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      applySnapshot(await response.json());
      if (source && source.readyState === EventSource.OPEN) setStatus("live", "live");
      return true;
    } catch (err) {
      setStatus("offline", "offline: " + err.message);
      if (source) setTimeout(() => { if (!loaded) reload(); }, POLL_MS);
      return false;
    }
  }

  function connect() {
    if (!("EventSource" in window)) { startPolling(); return; }
    loaded = false;
    buffered = [];
    source = new EventSource("api/events");
    for (const kind of ["state", "change", "reset"]) {
      source.addEventListener(kind, (e) => handle(kind, Number(e.lastEventId) || 0, e.data));
    }
    source.onopen = () => {
      stopPolling();
      setStatus("live", "live");
      if (!loaded) reload();
    };
    source.onerror = () => {
      // A refused stream (503: no free slot) or a dead server closes the EventSource for good: poll instead.
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        startPolling();
      } else {
        setStatus("reconnecting", "reconnecting…");
      }
    };
  }

  function startPolling() {
    if (pollTimer) return;
    const poll = async () => {
      if (await reload()) setStatus("polling", "polling every " + POLL_MS / 1000 + " s");
    };
    poll();
    pollTimer = setInterval(poll, POLL_MS);
    if ("EventSource" in window && !retryTimer) {
      retryTimer = setInterval(() => { if (!source) connect(); }, SSE_RETRY_MS);
    }
  }

  function stopPolling() {
    clearInterval(pollTimer);
    clearInterval(retryTimer);
    pollTimer = 0;
    retryTimer = 0;
  }

  // -- rendering -------------------------------------------------------------------------------------------

  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function flash(name) {
    const row = rows.get(name);
    if (!row) return;
    row.tr.classList.remove("flash");
    void row.tr.offsetWidth;  // restart the animation
    row.tr.classList.add("flash");
  }

  function makeRow(name) {
    const tr = el("tr");
    tr.dataset.asset = name;
    const cells = {
      asset: el("th", "asset", name),
      stage: el("td", "stage"),
      side: el("td", "side"),
      score: el("td", "score"),
      price: el("td", "num price"),
      liq: el("td", "num liq"),
      oi: el("td", "num oi"),
      funding: el("td", "num funding"),
    };
    cells.asset.scope = "row";
    const charts = {};
    for (const key of ["price", "liq", "oi"]) {
      const td = el("td", "chart chart-" + key);
      charts[key] = el("canvas");
      charts[key].setAttribute("role", "img");
      td.append(charts[key]);
      cells["chart_" + key] = td;
    }
    tr.append(...Object.values(cells));
    const after = [...rows.keys()].sort().find((other) => other > name);
    tbody.insertBefore(tr, after ? rows.get(after).tr : null);
    const row = { tr, cells, charts };
    rows.set(name, row);
    return row;
  }

  function renderRow(record) {
    const row = rows.get(record.asset) || makeRow(record.asset);
    const { cells } = row;
    const overheated = record.stage === 0 && record.stage_name === "overheated";
    const badge = el("span", "badge stage-" + (overheated ? "overheated" : record.stage),
      record.stage + " · " + words(record.stage_name));
    cells.stage.replaceChildren(badge);
    if (record.paused) cells.stage.append(el("span", "paused", "paused"));
    cells.stage.dataset.stage = String(record.stage);
    cells.stage.dataset.stageName = record.stage_name;
    cells.side.replaceChildren(el("span", "side-" + record.side, record.side === "long" ? "▼ long" : "▲ short"));
    cells.side.dataset.side = record.side;
    const sides = record.sides || {};
    const part = (side) => el("span", side === record.side ? "risk" : "other",
      score(sides[side] ? sides[side].overheat_score : null));
    cells.score.replaceChildren(part("long"), document.createTextNode(" / "), part("short"));
    cells.score.dataset.score = isNum(record.overheat_score) ? String(record.overheat_score) : "";
    cells.price.textContent = price(record.price);
    cells.liq.textContent = usd(record.liq_rate_long) + " / " + usd(record.liq_rate_short);
    cells.oi.textContent = usd(record.oi_usd);
    cells.funding.textContent = percent(record.funding_8h);
    const h = record.history;
    spark(row.charts.price, h.t, [[h.price, COLORS.price]], record.asset + " price");
    spark(row.charts.liq, h.t, [[h.liq_rate_long, COLORS.long], [h.liq_rate_short, COLORS.short]],
      record.asset + " liquidations per minute", true);
    spark(row.charts.oi, h.t, [[h.oi_usd, COLORS.oi]], record.asset + " open interest");
  }

  function spark(canvas, t, series, label, fromZero) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 140;
    const h = canvas.clientHeight || 38;
    if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
    if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    let lo = fromZero ? 0 : Infinity;
    let hi = -Infinity;
    for (const [values] of series) {
      for (const v of values) if (isNum(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    canvas.setAttribute("aria-label", label + (hi >= lo ? ": " + lo.toPrecision(4) + " to " + hi.toPrecision(4) : ""));
    if (t.length < 2 || !(hi >= lo)) return;
    if (hi === lo) { hi += Math.abs(hi) * 0.01 || 1; lo -= fromZero ? 0 : Math.abs(lo) * 0.01 || 1; }
    const t0 = t[0];
    const span = t[t.length - 1] - t0 || 1;
    const pad = 3;
    const x = (ti) => ((ti - t0) / span) * (w - 2) + 1;
    const y = (v) => h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad);
    ctx.strokeStyle = COLORS.grid;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, h - 0.5);
    ctx.lineTo(w, h - 0.5);
    ctx.stroke();
    ctx.lineWidth = 1.5;
    ctx.lineJoin = "round";
    for (const [values, color] of series) {
      ctx.strokeStyle = color;
      ctx.beginPath();
      let pen = false;
      values.forEach((v, i) => {
        if (!isNum(v)) { pen = false; return; }  // a gap where the value is missing
        if (pen) ctx.lineTo(x(t[i]), y(v)); else ctx.moveTo(x(t[i]), y(v));
        pen = true;
      });
      ctx.stroke();
    }
  }

  function renderChanges() {
    const list = $("#changes");
    list.replaceChildren(...changes.map((c) => {
      const li = el("li");
      const what = c.stage === c.stage_from && c.paused ? "paused at " + words(c.stage_name)
        : words(c.stage_from_name) + " → " + words(c.stage_name);
      li.append(el("span", "time", clock(c.ts) + " "), el("span", "asset", c.asset),
        el("span", "side-" + c.side, " " + c.side),
        document.createTextNode(": " + what + " (score " + score(c.overheat_score) + ")"));
      return li;
    }));
  }

  function render() {
    frame = 0;
    let newest = 0;
    for (const name of dirty) {
      const record = assets.get(name);
      if (record) renderRow(record);
    }
    dirty.clear();
    for (const record of assets.values()) newest = Math.max(newest, record.ts || 0);
    $("#empty").hidden = assets.size > 0;
    $("#updated").textContent = newest ? "newest snapshot " + clock(newest) : "";
    $("#window").textContent = Math.round(windowS / 60) + " minutes";
    document.body.dataset.seq = String(seq);
  }

  connect();
  if (!source) reload();
})();
