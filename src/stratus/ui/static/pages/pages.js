// Stratus console, resource pages: API forms, the live training job, endpoint charts, the compression scatter.
// Everything goes through the bridge as the signed-in session (window.Stratus.api, from console.js); pages hand
// their data over in <script type="application/json"> blocks (the CSP allows no inline script).
"use strict";
(function () {
  const S = () => window.Stratus;

  // -- forms that call the API ---------------------------------------------------------------------------
  // <form class="api-form" data-api="/api/v1/...{field}" data-method="POST" [data-body="multipart"]
  //       [data-then="/ui/...{key of the answer}"] [data-ask="question"]>
  // Fields: name="a.b.0.c" builds nested JSON (a number makes a list); data-type="int|float|list"; a field
  // with data-path fills {name} in the URL instead of the body. Empty fields are left out.
  function setPath(target, parts, value) {
    let node = target;
    for (let i = 0; i < parts.length - 1; i++) {
      const key = parts[i];
      if (node[key] === undefined) node[key] = /^\d+$/.test(parts[i + 1]) ? [] : {};
      node = node[key];
    }
    node[parts[parts.length - 1]] = value;
  }

  function compact(value) {
    if (Array.isArray(value)) return value.filter((v) => v !== undefined && v !== null).map(compact);
    if (value && typeof value === "object") {
      const out = {};
      Object.keys(value).forEach((k) => { out[k] = compact(value[k]); });
      return out;
    }
    return value;
  }

  function typed(el) {
    const raw = el.value.trim();
    if (el.dataset.type === "int") return parseInt(raw, 10);
    if (el.dataset.type === "float") return parseFloat(raw);
    return raw;
  }

  function formBody(form) {
    const body = {};
    const lists = {};
    Array.from(form.elements).forEach((el) => {
      if (!el.name || el.disabled || el.type === "submit" || el.type === "button" || el.hasAttribute("data-path")) return;
      if (el.type === "checkbox") {
        if (el.dataset.type === "list") {
          lists[el.name] = lists[el.name] || [];
          if (el.checked) lists[el.name].push(el.value);
        } else if (el.checked) setPath(body, el.name.split("."), el.value);
        return;
      }
      if (el.value.trim() === "") return;
      setPath(body, el.name.split("."), typed(el));
    });
    Object.keys(lists).forEach((name) => setPath(body, name.split("."), lists[name]));
    // A list of objects keeps the rows that say something (an empty target row is no target).
    Object.keys(body).forEach((k) => {
      if (Array.isArray(body[k])) body[k] = body[k].filter((row) => row && (typeof row !== "object" || Object.keys(row).length));
    });
    return compact(body);
  }

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, (_, key) => encodeURIComponent(values[key] === undefined ? "" : values[key]));
  }

  // Attributes are read with getAttribute: form.dataset would be the form's own field named "dataset".
  async function submitApiForm(form, event) {
    event.preventDefault();
    if (form.getAttribute("data-ask") && !window.confirm(form.getAttribute("data-ask"))) return;
    const status = form.querySelector(".form-status");
    const say = (text, bad) => { if (status) { status.textContent = text; status.classList.toggle("error", !!bad); } };
    const pathValues = {};
    form.querySelectorAll("[data-path]").forEach((el) => { pathValues[el.name] = el.value.trim(); });
    const path = fill(form.getAttribute("data-api"), pathValues);
    const options = { method: form.getAttribute("data-method") || "POST" };
    if (form.getAttribute("data-body") === "multipart") {
      const data = new FormData();
      Array.from(form.elements).forEach((el) => {
        if (!el.name || el.disabled || el.type === "submit") return;
        if (el.type === "file") { if (el.files.length) data.append(el.name, el.files[0]); return; }
        if (el.value.trim() !== "") data.append(el.name, el.value.trim());
      });
      options.body = data;
    } else {
      options.json = formBody(form);
    }
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    say("Working…", false);
    try {
      const answer = await S().api(path, options);
      say("Done.", false);
      if (form.getAttribute("data-then")) window.location.assign(fill(form.getAttribute("data-then"), answer || {}));
      else window.location.reload();
    } catch (err) {
      say(err.message, true);
    } finally {
      if (button) button.disabled = false;
    }
  }

  function apiForms() {
    document.querySelectorAll("form.api-form").forEach((form) => {
      form.addEventListener("submit", (event) => submitApiForm(form, event));
    });
  }

  // -- a running job: progress bar, curves and log from its server-sent events --------------------------
  function jobLive() {
    const holder = document.querySelector("[data-job-live]");
    if (!holder) return;
    const live = S().data(holder.dataset.jobLive);
    const chartEl = document.getElementById("job-curves");
    let plot = null;
    const curves = live.curves;
    const drawCurves = () => {
      if (!chartEl || !curves) return;
      chartEl.dataset.points = String(curves.x.length); // how many epochs the curves show (the tests read it)
      if (plot === null) plot = S().chart(chartEl, Object.assign({ y_label: "loss / metric" }, curves), "line");
      else plot.setData([curves.x].concat(Object.keys(curves.series).map((k) => curves.series[k])));
    };
    drawCurves();
    if (live.terminal.indexOf(live.state) >= 0) return;
    const bar = document.getElementById("job-progress");
    const epochs = document.querySelector(".job-epochs");
    const stateEl = document.querySelector(".job-state");
    const log = document.getElementById("job-log");
    let after = live.after;
    const source = new EventSource(live.events);
    const fresh = (event) => {
      const seq = parseInt(event.lastEventId || "0", 10);
      if (seq <= after) return null;
      after = seq;
      return JSON.parse(event.data);
    };
    const line = (text) => {
      if (!log) return;
      const li = document.createElement("li");
      li.textContent = text;
      log.appendChild(li);
    };
    source.addEventListener("epoch", (event) => {
      const e = fresh(event);
      if (!e) return;
      const d = e.data;
      if (bar) { bar.max = d.epochs || 1; bar.value = d.epoch || 0; bar.textContent = d.epoch + " of " + d.epochs; }
      if (epochs) epochs.textContent = "epoch " + d.epoch + " of " + d.epochs;
      if (curves) {
        const keys = Object.keys(curves.series);
        curves.x.push(d.epoch);
        curves.series[keys[0]].push(d.loss === undefined ? null : d.loss);
        if (keys[1]) curves.series[keys[1]].push(d.val_metric === undefined ? null : d.val_metric);
        drawCurves();
      }
    });
    ["log", "step", "done"].forEach((kind) => source.addEventListener(kind, (event) => {
      const e = fresh(event);
      if (e) line(kind + ": " + (e.data.message || JSON.stringify(e.data)));
    }));
    let ended = false;
    source.addEventListener("error", (event) => {
      if (!event.data) {
        // The connection closed. After the job's end the server closes the stream: stop (no request is in
        // flight now, so nothing is cut off) and reload, so the page shows what the job made. Otherwise
        // EventSource reconnects by itself, sending Last-Event-ID.
        if (ended) { source.close(); window.location.reload(); }
        return;
      }
      const e = fresh(event);
      if (e) line("error: " + (e.data.message || ""));
    });
    source.addEventListener("state", (event) => {
      const e = fresh(event);
      if (!e) return;
      const state = e.data.state;
      if (stateEl) stateEl.textContent = state + (e.data.error ? ": " + e.data.error : "");
      line("state: " + state);
      if (live.terminal.indexOf(state) >= 0) ended = true;
    });
  }

  // -- an endpoint's charts, refreshed from the metrics history -------------------------------------------
  // spec: {x: [unix seconds], series: [[label, values], ...], y_label}: a list, so the order (and colours) hold.
  // Points are drawn too: a few requests make isolated steps, which a line alone would not show.
  const LINE_COLOURS = ["#1f4e79", "#a4161a"];
  function timeChart(el, spec) {
    if (!el || !window.uPlot) return null;
    const series = [{}].concat(spec.series.map((pair, i) => ({
      label: pair[0], stroke: LINE_COLOURS[i % LINE_COLOURS.length], width: 2, spanGaps: false,
      points: { show: true, size: 5 },
    })));
    const options = {
      width: Math.max(320, el.clientWidth - 16), height: 220, series: series,
      axes: [{}, { label: spec.y_label || "" }],
    };
    el.textContent = "";
    return new window.uPlot(options, [spec.x].concat(spec.series.map((pair) => pair[1])), el);
  }

  function endpointCharts() {
    const holder = document.querySelector("[data-endpoint-charts]");
    if (!holder) return;
    const spec = S().data(holder.dataset.endpointCharts);
    const traffic = timeChart(document.getElementById("chart-traffic"), spec.traffic);
    const latency = timeChart(document.getElementById("chart-latency"), spec.latency);
    const count = document.querySelector(".endpoint-requests");
    const refresh = async () => {
      try {
        const answer = await S().api(spec.refresh.url.replace(/^\/ui\/bridge/, ""));
        const series = answer.series;
        const xs = series.requests_per_s.map((p) => p[0]);
        const col = (m) => series[m].map((p) => p[1]);
        if (traffic) traffic.setData([xs, col("requests_per_s"), col("errors_per_s")]);
        if (latency) latency.setData([xs, col("p50_ms"), col("p99_ms")]);
        if (count) count.textContent = String(Math.round(col("requests_per_s").reduce((a, v) => a + (v || 0), 0) * answer.step));
      } catch (err) {
        if (count) count.textContent = count.textContent + " (refresh failed: " + err.message + ")";
      }
    };
    window.setInterval(refresh, spec.refresh.seconds * 1000);
  }

  // -- the compression run's accuracy-vs-speed scatter plot ------------------------------------------------
  const COLOURS = ["#555555", "#1f4e79", "#a4161a", "#1e6b34", "#7a5200", "#6a3aa8", "#00707a"];
  function scatter() {
    const el = document.querySelector("[data-scatter]");
    if (!el || !window.uPlot) return;
    const spec = S().data(el.dataset.scatter);
    const labels = Object.keys(spec.series);
    const series = [{ label: spec.x_label }].concat(labels.map((label, i) => ({
      label: label,
      stroke: COLOURS[i % COLOURS.length],
      fill: COLOURS[i % COLOURS.length],
      paths: () => null,
      points: { show: true, size: 14, fill: COLOURS[i % COLOURS.length] },
    })));
    const options = {
      width: Math.max(320, el.clientWidth - 16), height: 300, series: series,
      scales: {
        x: { time: false },
        // Around the models' quality, not from 0: the differences are what the plot is for.
        y: { range: (u, min, max) => { const pad = (max - min) * 0.25 || Math.abs(max) * 0.02 || 0.01; return [min - pad, max + pad]; } },
      },
      axes: [{ label: spec.x_label }, { label: spec.y_label }],
      cursor: { points: { size: 16 } },
    };
    el.textContent = "";
    el.classList.add("drawn");
    new window.uPlot(options, [spec.x].concat(labels.map((l) => spec.series[l])), el);
  }

  document.addEventListener("DOMContentLoaded", () => {
    apiForms();
    jobLive();
    endpointCharts();
    scatter();
  });
})();
