// jqueue's web page: the jobs of a jq-masterd, kept current from its event stream.
// Plain JavaScript, no framework and no build step; served by jq-masterd itself.
"use strict";

(function () {
  const API = "/api/v1";
  const NEWEST = 9007199254740991;  // "before" this id: the newest jobs first
  const PAGE = 1000;
  const LOG_KEEP = 1 << 20;  // characters of log kept on screen
  const LOG_RETRY_MS = 1000;  // between two reads of a log whose daemon went away
  const FINAL = new Set(["success", "error", "canceled"]);

  const state = {
    rows: new Map(),      // job id -> {tr, cells, job}
    filter: "",
    parent: null,         // the group shown (null: the root)
    crumbs: [{id: null, title: "Root"}],
    selected: null,
    logGeneration: 0,
    pending: new Set(),   // job ids an event named, to read again
    flushTimer: null,
    flushing: Promise.resolve(),  // flushes run one after another: none draws stale rows
    source: null,
    loading: null,
    loads: 0,             // reloads started: an answer older than the last is dropped
    nodesTimer: null,
  };

  const $ = (id) => document.getElementById(id);

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)jq_csrf=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function api(method, path, body) {
    const options = {method: method, headers: {}, credentials: "same-origin"};
    if (method !== "GET") {
      options.headers["X-CSRF-Token"] = csrfToken();
    }
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(API + path, options);
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : {"class": "HTTP", message: response.statusText};
      const failure = new Error(error.message);
      failure.status = response.status;
      failure.cls = error["class"];
      throw failure;
    }
    return data;
  }

  // Formatting

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  function formatTime(seconds) {
    if (!seconds) { return ""; }
    const d = new Date(seconds * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function formatDuration(job) {
    if (!job.started) { return ""; }
    const end = job.ended || Date.now() / 1000;
    let s = Math.max(0, Math.round(end - job.started));
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return h ? h + "h" + pad(m) + "m" + pad(s) + "s" : m ? m + "m" + pad(s) + "s" : s + "s";
  }

  function progressOf(job) {
    if (job.children) {
      const tally = tallyOf(job.children);
      return tally.total ? tally.finished / tally.total : 0;
    }
    if (job.status === "success") { return 1; }
    return typeof job.progress === "number" ? Math.max(0, Math.min(1, job.progress)) : 0;
  }

  // A group's children: its leaves (the jobs of its tree without jobs of their own) by
  // status, as the list gives them ({"success": 3, "queued": 2}); null for other jobs.
  const COUNT_WORDS = [["success", "ok"], ["error", "failed"], ["canceled", "canceled"],
                       ["running", "running"], ["canceling", "canceling"],
                       ["waiting", "waiting"], ["queued", "queued"]];

  function tallyOf(children) {
    let total = 0, finished = 0;
    for (const [status, n] of Object.entries(children)) {
      total += n;
      if (FINAL.has(status)) { finished += n; }
    }
    return {total: total, finished: finished};
  }

  function countsText(children) {
    const parts = COUNT_WORDS.filter(([status]) => children[status])
      .map(([status, word]) => children[status] + " " + word);
    return parts.length ? parts.join(" / ") : "no jobs";
  }

  // The jobs table

  function buildRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.id = job.id;
    const cells = {};
    for (const name of ["id", "title", "status", "node", "progress", "attempts", "start",
                        "duration"]) {
      const td = document.createElement("td");
      td.className = name;
      tr.appendChild(td);
      cells[name] = td;
    }
    cells.mark = document.createElement("span");
    cells.mark.className = "group-mark";
    cells.mark.textContent = "\u25b8";
    cells.name = document.createElement("span");
    cells.name.className = "name";
    cells.counts = document.createElement("span");
    cells.counts.className = "counts";
    cells.title.append(cells.mark, cells.name, cells.counts);
    cells.statusText = document.createElement("span");
    cells.held = document.createElement("span");
    cells.held.className = "held-badge";
    cells.held.textContent = "held";
    // Why a pending job does not run, in a word (the API's wait_reason: "slots"); the
    // words are the cell's tooltip.
    cells.wait = document.createElement("span");
    cells.wait.className = "wait-reason";
    cells.status.append(cells.statusText, cells.held, cells.wait);
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    bar.appendChild(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    cells.progress.appendChild(bar);
    cells.progress.appendChild(pct);
    cells.bar = bar; cells.fill = fill; cells.pct = pct;
    const entry = {tr: tr, cells: cells, job: job};
    // A group's row enters the group (and shows its detail); a job's row, its detail.
    tr.addEventListener("click", () => {
      if (entry.job.children) { enterGroup(entry.job); } else { select(entry.job.id); }
    });
    return entry;
  }

  function renderRow(entry, job) {
    const c = entry.cells;
    entry.job = job;
    const group = Boolean(job.children);
    c.id.textContent = job.id;
    c.mark.hidden = !group;
    c.name.textContent = job.title || "";
    c.counts.textContent = group ? countsText(job.children) : "";
    c.counts.hidden = !group;
    c.title.title = (job.title || "") + (group ? " (" + countsText(job.children) + ")" : "");
    c.statusText.textContent = job.status;
    c.held.hidden = !job.held;
    c.status.className = "status st-" + job.status;
    c.status.title = job.wait_message || "";  // why a pending job does not run now
    // (held: the badge says it)
    const reason = job.wait_reason && job.wait_reason !== "HELD" ? job.wait_reason : "";
    c.wait.textContent = reason.toLowerCase().replace(/_/g, " ");
    c.wait.hidden = !reason;
    c.node.textContent = job.node || "";
    const progress = progressOf(job);
    c.fill.style.width = Math.round(progress * 100) + "%";
    c.bar.className = "bar " + job.status;
    c.bar.dataset.progress = Math.round(progress * 100);
    if (group) {
      const tally = tallyOf(job.children);
      c.pct.textContent = tally.finished + "/" + tally.total;
    } else {
      c.pct.textContent = Math.round(progress * 100) + "%";
    }
    c.attempts.textContent = job.attempt ? job.attempt + "/" + (job.max_attempts || 1) : "";
    c.start.textContent = formatTime(job.started);
    c.duration.textContent = formatDuration(job);
    entry.tr.dataset.status = job.status;
    entry.tr.dataset.held = job.held ? "true" : "false";
    entry.tr.classList.toggle("group", group);
    if (group) {
      entry.tr.dataset.counts = JSON.stringify(job.children);
    } else {
      delete entry.tr.dataset.counts;
    }
  }

  function visible(job) {
    if (state.filter && job.status !== state.filter) { return false; }
    return (job.parent || null) === state.parent;
  }

  function upsert(job) {
    let entry = state.rows.get(job.id);
    if (state.selected === job.id) { renderDetail(job); }  // shown or not (a group entered)
    if (!visible(job)) {
      if (entry) { remove(job.id); }
      return;
    }
    if (!entry) {
      entry = buildRow(job);
      state.rows.set(job.id, entry);
      insertInOrder(entry.tr, job.id);
    }
    renderRow(entry, job);
  }

  function insertInOrder(tr, id) {
    const body = $("job-rows");
    let next = body.firstElementChild;
    while (next && Number(next.dataset.id) > id) { next = next.nextElementSibling; }
    body.insertBefore(tr, next);
  }

  function remove(id) {
    const entry = state.rows.get(id);
    if (entry) {
      entry.tr.remove();
      state.rows.delete(id);
    }
  }

  function updateCounts() {
    $("empty").hidden = state.rows.size > 0;
    $("shown").textContent = state.rows.size + " shown";
  }

  async function loadJobs() {
    const load = ++state.loads;
    const query = "?limit=" + PAGE + "&before=" + NEWEST +
      (state.filter ? "&status=" + encodeURIComponent(state.filter) : "") +
      "&parent=" + (state.parent === null ? "0" : state.parent);
    const page = await api("GET", "/jobs" + query);
    if (load !== state.loads) { return; }  // another group or filter was asked for since
    const body = $("job-rows");
    const fresh = document.createDocumentFragment();
    state.rows.clear();
    for (const job of page.jobs) {
      const entry = buildRow(job);
      renderRow(entry, job);
      state.rows.set(job.id, entry);
      fresh.appendChild(entry.tr);
    }
    body.replaceChildren(fresh);
    markSelected();
    updateCounts();
    refreshSummary();
  }

  function reload() {
    state.loading = loadJobs().catch((err) => showConnection("down", err.message));
    return state.loading;
  }

  // Events: read again the jobs they name, a window of ids at a time

  function schedule(id) {
    state.pending.add(id);
    if (state.flushTimer === null) {
      state.flushTimer = setTimeout(flush, 150);
    }
  }

  // A burst of rows is drawn a slice per frame: the page keeps answering meanwhile.
  const ROWS_PER_FRAME = 40;

  async function inFrames(items, draw) {
    for (let i = 0; i < items.length; i += ROWS_PER_FRAME) {
      if (i) { await new Promise((resolve) => requestAnimationFrame(resolve)); }
      items.slice(i, i + ROWS_PER_FRAME).forEach(draw);
    }
  }

  function flush() {
    state.flushTimer = null;
    state.flushing = state.flushing.then(flushNow, flushNow);
    return state.flushing;
  }

  async function flushNow() {
    const ids = Array.from(state.pending).sort((a, b) => a - b);
    state.pending.clear();
    if (!ids.length) { return; }
    await state.loading;
    let start = 0;
    while (start < ids.length) {
      let end = start;
      while (end + 1 < ids.length && ids[end + 1] - ids[start] < PAGE) { end += 1; }
      const low = ids[start], high = ids[end];
      try {
        const page = await api("GET", "/jobs?after=" + (low - 1) + "&limit=" + (high - low + 1));
        const found = new Map(page.jobs.map((job) => [job.id, job]));
        await inFrames(ids.slice(start, end + 1), (id) => {
          if (found.has(id)) { upsert(found.get(id)); } else { remove(id); }
        });
        // A job in a group changes its group's counts, which no event names: read the
        // groups above it again (up to the one shown, whose jobs are the rows).
        for (const job of found.values()) {
          if (job.parent && job.parent !== state.parent) { schedule(job.parent); }
        }
      } catch (err) {
        showConnection("down", err.message);
      }
      start = end + 1;
    }
    updateCounts();
    refreshSummary();
  }

  function connect() {
    if (state.source) { state.source.close(); }
    const source = new EventSource(API + "/events");
    state.source = source;
    source.onopen = () => showConnection("live", "event stream connected");
    source.onerror = () => showConnection("down", "event stream lost; reconnecting");
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.job) { schedule(event.job); }
      if (event.kind === "node" || event.kind === "attempt") { scheduleNodes(); }
    };
    source.addEventListener("gap", () => reload());
  }

  function showConnection(kind, text) {
    const badge = $("connection");
    badge.className = "connection " + kind;
    badge.textContent = kind === "live" ? "live" : kind === "down" ? "reconnecting" : kind;
    badge.title = text || "";
  }

  let summaryTimer = null;
  let summaryAgain = false;
  function refreshSummary() {
    if (summaryTimer !== null) { summaryAgain = true; return; }
    summaryTimer = setTimeout(async () => {
      try {
        const info = await api("GET", "/info");
        const counts = Object.entries(info.counts).filter((kv) => kv[1])
          .map((kv) => kv[1] + " " + kv[0]).join(", ");
        $("summary").textContent = (info.cluster_name || "") + " · " + (counts || "no jobs") +
          (info.drained ? " · drained" : "");
      } catch (err) { /* the stream badge tells */ }
      summaryTimer = null;
      if (summaryAgain) { summaryAgain = false; refreshSummary(); }
    }, 500);
  }

  // A job's detail: fields, actions, the log as it grows

  function select(id, known) {
    state.selected = id;
    markSelected();
    const entry = state.rows.get(id);
    const job = known || (entry ? entry.job : null);
    $("detail").hidden = false;
    $("action-message").textContent = "";
    $("log").textContent = "";
    if (job) { renderDetail(job); }
    api("GET", "/jobs/" + id).then(renderDetail).catch((err) => message(err.message, true));
    if (job && job.children) {
      state.logGeneration += 1;  // a group has no log: stop following the last one's
    } else {
      tailLog(id);
    }
  }

  function markSelected() {
    for (const [id, entry] of state.rows) {
      entry.tr.classList.toggle("selected", id === state.selected);
    }
  }

  // 1536 -> "1.5 KiB", as jqctl writes sizes.
  function bytesText(count) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let value = count, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return unit ? value.toFixed(1) + " " + units[unit] : count + " bytes";
  }

  // A command's memory: its last attempt's peak against its limit ("peak 70.3 MiB of its
  // 64.0 MiB limit, killed over it"), what it holds now while it runs, or its limit alone.
  function memoryUse(job) {
    const limit = job.memory_max ? bytesText(job.memory_max) : "";
    if (job.status === "running" && typeof job.rss === "number") {
      return "now " + bytesText(job.rss) + (limit ? " of its " + limit + " limit" : "");
    }
    if (typeof job.max_rss !== "number") { return limit ? "limit " + limit : ""; }
    return "peak " + bytesText(job.max_rss) + (limit ? " of its " + limit + " limit" : "") +
      (job.memory_exceeded ? ", killed over it" : "");
  }

  // Who is told of a job's end and how it went ("POST http://h/x: delivered", "to
  // ops@example.com: not delivered (exit status 3)"), and a group's after beside it.
  function notifyText(job) {
    const spec = job.notify;
    if (!spec) { return ""; }
    const target = spec.url ? "POST " + spec.url : "to " + spec.to;
    const told = (done) => !done ? "" : done.delivered ? ": delivered" :
      ": not delivered (" + done.error + ")";
    const parts = [];
    if (spec.on && spec.on.length) { parts.push(target + told(job.notified)); }
    if (spec.after) {
      parts.push(target + " once " + spec.after + " of its jobs ended" +
                 told(job.notified_after));
    }
    return parts.join("; ");
  }

  function renderDetail(job) {
    if (job.id !== state.selected) { return; }
    const group = Boolean(job.children);
    $("detail-title").textContent = (group ? "Group " : "Job ") + job.id +
      (job.title ? ": " + job.title : "");
    $("detail").classList.toggle("group", group);
    const fields = $("detail-fields");
    const rows = [["status", job.status], ["held", job.held ? "yes" : ""],
                  ["waiting", job.wait_message],
                  ["jobs", group ? countsText(job.children) : ""],
                  ["node", job.node], ["owner", job.owner],
                  ["priority", job.priority], ["attempts", job.attempt ?
                    job.attempt + "/" + (job.max_attempts || 1) : ""],
                  ["exit status", job.exit_status], ["reason", job.reason],
                  ["memory", memoryUse(job)],
                  ["CPU", typeof job.cpu_time === "number" ? job.cpu_time.toFixed(2) + " s" : ""],
                  ["next attempt", formatTime(job.retry_at)],
                  ["progress", Math.round(progressOf(job) * 100) + "%"],
                  ["submitted", formatTime(job.received)], ["started", formatTime(job.started)],
                  ["ended", formatTime(job.ended)], ["duration", formatDuration(job)],
                  ["notify", notifyText(job)]];
    const fragment = document.createDocumentFragment();
    for (const [name, value] of rows) {
      if (value === null || value === undefined || value === "") { continue; }
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dd.dataset.field = name;
      fragment.appendChild(dt);
      fragment.appendChild(dd);
    }
    fields.replaceChildren(fragment);
  }

  async function tailLog(id) {
    const generation = ++state.logGeneration;
    const view = $("log");
    // A tail: a log longer than what the view keeps is read from near its end only, and
    // the view keeps the last LOG_KEEP characters, saying that it left some out.
    let offset = 0;
    let shown = "";
    let cut = false;
    try {
      const job = await api("GET", "/jobs/" + id);
      offset = Math.max(0, (job.log_bytes || 0) - LOG_KEEP);
      cut = offset > 0;
    } catch (err) { /* read from the start; the loop below reports errors */ }
    if (generation !== state.logGeneration) { return; }
    for (;;) {
      let part;
      try {
        part = await api("GET", "/jobs/" + id + "/log?offset=" + offset + "&wait=25");
      } catch (err) {
        if (generation !== state.logGeneration) { return; }
        if (err.status === undefined || err.status >= 500) {
          // The daemon went away (a restart, a failover): read on from the same offset
          // once it answers again, as the event stream's badge says.
          await new Promise((resolve) => setTimeout(resolve, LOG_RETRY_MS));
          continue;
        }
        view.textContent += err.status === 404 ? "" : "\n[log unavailable: " + err.message + "]";
        return;
      }
      if (generation !== state.logGeneration) { return; }
      if (part.data) {
        const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
        shown += part.data;
        if (shown.length > LOG_KEEP) {
          shown = shown.slice(shown.length - LOG_KEEP);
          cut = true;
        }
        view.textContent = (cut ? "[earlier output not shown]\n" : "") + shown;
        if (atBottom) { view.scrollTop = view.scrollHeight; }
      }
      offset = part.offset;
      if (part.eof) { return; }
    }
  }

  function message(text, error) {
    const line = $("action-message");
    line.textContent = text;
    line.className = "message" + (error ? " error" : "");
  }

  async function act(action) {
    const id = state.selected;
    if (id === null) { return; }
    try {
      let answer;
      if (action === "archive") {
        answer = await api("DELETE", "/jobs/" + id);
        message("Job " + id + " archived");
      } else {
        answer = await api("POST", "/jobs/" + id + "/" + action, {});
        message(answer.message);
      }
      schedule(id);
    } catch (err) {
      message(err.message, true);
    }
  }

  // Groups: the breadcrumb

  function enterGroup(job) {
    state.crumbs.push({id: job.id, title: job.title || ("job " + job.id), job: job});
    state.parent = job.id;
    renderCrumbs();
    reload();
    select(job.id, job);  // its detail: its counts and its actions (hold, release...)
  }

  function renderCrumbs() {
    const list = $("breadcrumb");
    const fragment = document.createDocumentFragment();
    state.crumbs.forEach((crumb, index) => {
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.textContent = crumb.title;
      link.dataset.id = crumb.id === null ? "root" : crumb.id;
      if (index === state.crumbs.length - 1) { link.setAttribute("aria-current", "page"); }
      link.addEventListener("click", () => {
        state.crumbs = state.crumbs.slice(0, index + 1);
        state.parent = crumb.id;
        renderCrumbs();
        reload();
        if (crumb.id !== null) { select(crumb.id, crumb.job); }  // the group's detail
      });
      li.appendChild(link);
      fragment.appendChild(li);
    });
    list.replaceChildren(fragment);
  }

  // Nodes

  // A node's clock this far from the master's is shown (jqueue.constants.CLOCK_SKEW_WARN).
  const CLOCK_SKEW_WARN = 10;

  function clockNote(node) {
    const skew = node.clock_skew;
    if (typeof skew !== "number" || Math.abs(skew) < CLOCK_SKEW_WARN) { return ""; }
    return "clock " + (skew > 0 ? "+" : "-") + Math.round(Math.abs(skew)) + "s";
  }

  // The 1-minute load average over the CPUs ("0.52 / 2 CPUs"), and the memory free of
  // the total ("1.2 of 7.8 GiB free"), as the node's last heartbeat said them.
  function loadText(node) {
    if (typeof node.load !== "number") { return ""; }
    return node.load.toFixed(2) + (node.cpus ? " / " + node.cpus + " CPUs" : "");
  }

  function memoryText(node) {
    if (typeof node.mem_available !== "number" || !node.mem_total) { return ""; }
    const gib = (bytes) => (bytes / 1073741824).toFixed(1);
    return gib(node.mem_available) + " of " + gib(node.mem_total) + " GiB free";
  }

  let nodesPending = null;
  function scheduleNodes() {
    if ($("nodes-view").hidden || nodesPending !== null) { return; }
    nodesPending = setTimeout(() => { nodesPending = null; loadNodes(); }, 300);
  }

  async function loadNodes() {
    let answer;
    try {
      answer = await api("GET", "/nodes");
    } catch (err) {
      return;
    }
    const fragment = document.createDocumentFragment();
    for (const node of answer.nodes) {
      const tr = document.createElement("tr");
      tr.dataset.node = node.name;
      const state_ = node.offline ? "offline" : node.drained ? "drained"
        : node.degraded ? "degraded" : "online";
      const clock = clockNote(node);
      // Why the master cannot reach it (as jqctl node list says below its table), why
      // it is degraded (a failed epilog), a clock far from the master's, which dates its
      // attempts and services wrong.
      const problem = [!node.reachable && node.last_error ? node.last_error : "",
                       node.degraded ? "degraded: " + node.degraded : "", clock]
        .filter(Boolean).join("; ");
      const values = [node.name, node.reachable ? "yes" : "no", node.tags.join(", "),
                      node.used + "/" + (node.slots === null ? "?" : node.slots),
                      node.running.join(", "), node.queued, state_, loadText(node),
                      memoryText(node),
                      formatTime(node.last_heard) + (clock ? " (" + clock + ")" : ""),
                      problem];
      values.forEach((value, index) => {
        const td = document.createElement("td");
        td.textContent = value;
        if (index === 1) { td.className = node.reachable ? "yes" : "no"; }
        if (index === values.length - 1) { td.className = "problem"; }
        tr.appendChild(td);
      });
      fragment.appendChild(tr);
    }
    $("node-rows").replaceChildren(fragment);
  }

  function showTab(name) {
    for (const tab of document.querySelectorAll(".tab")) {
      tab.classList.toggle("active", tab.dataset.tab === name);
    }
    $("jobs-view").hidden = name !== "jobs";
    $("nodes-view").hidden = name !== "nodes";
    clearInterval(state.nodesTimer);
    if (name === "nodes") {
      loadNodes();
      state.nodesTimer = setInterval(loadNodes, 5000);
    }
  }

  // Durations of running jobs tick without a request

  function tick() {
    for (const entry of state.rows.values()) {
      if (entry.job.started && !FINAL.has(entry.job.status)) {
        entry.cells.duration.textContent = formatDuration(entry.job);
      }
    }
    // What a running command holds (rss) changes without an event: read the open
    // detail again as often as its node looks (every 5 s).
    state.ticks = (state.ticks || 0) + 1;
    const open = state.selected !== null ? state.rows.get(state.selected) : null;
    if (state.ticks % 5 === 0 && open && open.job.status === "running") {
      const id = state.selected;
      api("GET", "/jobs/" + id).then(renderDetail).catch(() => {});
    }
  }

  function start() {
    for (const tab of document.querySelectorAll(".tab")) {
      tab.addEventListener("click", () => showTab(tab.dataset.tab));
    }
    $("status-filter").addEventListener("change", (e) => {
      state.filter = e.target.value;
      reload();
    });
    $("detail-close").addEventListener("click", () => {
      state.selected = null;
      state.logGeneration += 1;
      $("detail").hidden = true;
      markSelected();
    });
    for (const button of document.querySelectorAll(".actions button")) {
      button.addEventListener("click", () => act(button.dataset.action));
    }
    renderCrumbs();
    connect();
    reload();
    setInterval(tick, 1000);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
