// Stratus console: the little JavaScript the server-rendered pages use. No inline script anywhere (the CSP
// forbids it): pages carry their data in <script type="application/json"> blocks, which never run.
"use strict";
(function () {
  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // fetch() through the console's bridge (/ui/bridge/<API path>) as the signed-in session; state-changing
  // requests carry the session's CSRF token.
  async function api(path, options) {
    const opts = Object.assign({ method: "GET", headers: {} }, options || {});
    opts.headers = Object.assign({}, opts.headers);
    if (opts.method !== "GET" && opts.method !== "HEAD") opts.headers["X-CSRF-Token"] = csrf();
    if (opts.json !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    opts.credentials = "same-origin";
    const response = await fetch("/ui/bridge" + path, opts);
    const type = response.headers.get("content-type") || "";
    const body = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) {
      const message = body && body.error ? body.error : String(body);
      throw new Error(response.status + ": " + message);
    }
    return body;
  }

  function data(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  const COLOURS = ["#1f4e79", "#a4161a", "#1e6b34", "#7a5200", "#6a3aa8", "#00707a"];

  // A uPlot chart in ``el`` from {x: [unix seconds | numbers], series: {label: [values]}, y_label?}.
  // kind "time" (x as time) or "line" (x as a number, e.g. epochs). Returns the uPlot instance.
  function chart(el, spec, kind) {
    if (!window.uPlot || !spec) return null;
    const labels = Object.keys(spec.series);
    const series = [{}].concat(labels.map((label, i) => ({
      label: label, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: true,
      points: { show: spec.x.length <= 40 },  // a dot per value only where there are few
    })));
    const width = Math.max(320, el.clientWidth - 16);
    const options = {
      width: width, height: 220, series: series,
      scales: { x: { time: kind !== "line" } },
      axes: [{}, { label: spec.y_label || "" }],
    };
    const values = [spec.x].concat(labels.map((label) => spec.series[label]));
    el.textContent = "";
    return new window.uPlot(options, values, el);
  }

  function drawCharts() {
    document.querySelectorAll("[data-chart]").forEach((el) => {
      chart(el, data(el.dataset.chart), el.dataset.kind || "time");
    });
  }

  // Buttons with data-confirm ask before their form is sent.
  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach((form) => {
      form.addEventListener("submit", (event) => {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  window.Stratus = { api: api, csrf: csrf, data: data, chart: chart };
  document.addEventListener("DOMContentLoaded", () => { drawCharts(); confirmations(); });
})();
