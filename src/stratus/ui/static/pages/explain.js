// Stratus console, the "explain" panel of a version page: the try-it panel's input fields (tryit.js), sent to the
// version's explain route (POST /v2/models/NAME/versions/N/explain) through the bridge, and the answer drawn:
// tabular rows as horizontal bar charts of their largest attributions (SVG, with a table of every number), texts
// as their words shaded by attribution (each with its number), images as a heat map (canvas) with the strongest
// regions in words. Colour is never the only carrier: bars point left or right and every value has its sign.
"use strict";
(function () {
  const S = () => window.Stratus;
  const T = () => window.StratusTryit;
  const SVG = "http://www.w3.org/2000/svg";
  //: Bars drawn per row; the rest are summed in one line and listed in the table.
  const TOP = 10;
  // Red raises the explained score, blue lowers it (SHAP's usual pair), both dark enough for white-on-colour.
  const RAISES = "#a4161a";
  const LOWERS = "#1f4e79";

  function el(tag, attrs, text) { return T().el(tag, attrs, text); }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach((k) => node.setAttribute(k, attrs[k]));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) {
    if (typeof v !== "number" || !isFinite(v)) return String(v);
    const a = Math.abs(v);
    const text = a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(+v.toPrecision(4));
    return text;
  }

  function signed(v) { return (v > 0 ? "+" : v < 0 ? "−" : "±") + fmt(Math.abs(v)); }

  function className(spec, index) {
    return spec.classes[index] !== undefined ? spec.classes[index] : String(index);
  }

  // "logit of class malignant = 3.912": what each row's numbers explain.
  function explained(spec, result, i) {
    const space = result.output_space === "raw" ? result.output : result.output_space;
    const target = result.output_space === "raw" && !spec.classes.length ? "" : " of class " + className(spec, result.targets[i]);
    return space + target + " = " + fmt(result.scores[i]);
  }

  // One tabular row: its largest |attributions| as bars from a zero axis, a line for the rest, a table of all.
  function tabularRow(spec, result, i, values) {
    const names = result.feature_names && result.feature_names.length ? result.feature_names : spec.features;
    const attributions = result.attributions[i];
    const order = attributions.map((_, j) => j).sort((a, b) => Math.abs(attributions[b]) - Math.abs(attributions[a]));
    const shown = order.slice(0, TOP);
    const rest = order.slice(TOP).reduce((sum, j) => sum + attributions[j], 0);
    const total = attributions.reduce((sum, v) => sum + v, 0);
    const figure = el("figure", { class: "explain-row" });
    const base = result.base_values ? result.base_values[i] : null;
    const head = "Row " + (i + 1) + ": " + explained(spec, result, i) + (base !== null ? " (base value " + fmt(base) + ", the mean over " + result.background_rows + " background rows)" : "");
    figure.append(el("p", { class: "explain-head" }, head));

    const labelW = 260, barW = 420, valueW = 80, rowH = 22, pad = 6;
    const width = labelW + barW + valueW;
    const height = pad * 2 + shown.length * rowH;
    const peak = Math.max(1e-12, ...shown.map((j) => Math.abs(attributions[j])));
    const mid = labelW + barW / 2;
    const summary = shown.slice(0, 3).map((j) => names[j] + " " + signed(attributions[j])).join(", ");
    const title = "Row " + (i + 1) + ": the " + shown.length + " largest attributions, bars right raise the score, left lower it. Largest: " + summary;
    const chart = svgEl("svg", { viewBox: "0 0 " + width + " " + height, width: String(width), height: String(height), role: "img", "aria-label": title, class: "drawing explain-bars" });
    chart.append(svgEl("title", {}, title));
    chart.append(svgEl("line", { x1: String(mid), x2: String(mid), y1: "0", y2: String(height), stroke: "#4a5360", "stroke-width": "1" }));
    shown.forEach((j, k) => {
      const v = attributions[j];
      const y = pad + k * rowH;
      const length = Math.abs(v) / peak * (barW / 2 - 4);
      const group = svgEl("g", { class: "explain-bar", "data-feature": names[j], "data-value": String(v) });
      const input = values && values[j] !== undefined ? " = " + fmt(values[j]) : "";
      group.append(svgEl("text", { x: String(labelW - 6), y: String(y + 15), "text-anchor": "end", "font-size": "12", fill: "#1b1f24", "font-family": "system-ui, sans-serif" }, names[j] + input));
      group.append(svgEl("rect", { x: String(v >= 0 ? mid : mid - length), y: String(y + 3), width: String(Math.max(1, length)), height: String(rowH - 6), fill: v >= 0 ? RAISES : LOWERS }));
      group.append(svgEl("text", { x: String(labelW + barW + 4), y: String(y + 15), "font-size": "12", fill: "#1b1f24", "font-family": "system-ui, sans-serif" }, signed(v)));
      chart.append(group);
    });
    const scroll = el("div", { class: "scroll" });
    scroll.append(chart);
    figure.append(scroll);
    const notes = [];
    if (order.length > TOP) notes.push((order.length - TOP) + " other features together " + signed(rest) + ".");
    notes.push("All attributions sum to " + signed(total) + (base !== null ? "; the score minus the base value is " + signed(result.scores[i] - base) : "") + (result.additive ? " (the method is additive: they match)." : "."));
    figure.append(el("figcaption", {}, notes.join(" ")));

    const details = el("details");
    details.append(el("summary", {}, "Every feature's numbers (row " + (i + 1) + ")"));
    const table = el("table", { class: "compact" });
    const thead = el("thead");
    const hr = el("tr");
    ["Feature", "Input", "Attribution", "Effect"].forEach((h, k) => hr.append(el("th", { scope: "col", class: k ? "num" : "" }, h)));
    thead.append(hr);
    const tbody = el("tbody");
    order.forEach((j) => {
      const tr = el("tr");
      const v = attributions[j];
      tr.append(el("td", {}, names[j]), el("td", { class: "num" }, values && values[j] !== undefined ? fmt(values[j]) : ""),
        el("td", { class: "num" }, signed(v)), el("td", { class: "num" }, v > 0 ? "raises" : v < 0 ? "lowers" : "none"));
      tbody.append(tr);
    });
    table.append(thead, tbody);
    details.append(table);
    figure.append(details);
    return figure;
  }

  // One text: each word shaded by its attribution (four steps each way; CSS classes, the CSP allows no inline
  // style) with its number beside it.
  function textRow(spec, result, i) {
    const figure = el("figure", { class: "explain-row" });
    figure.append(el("p", { class: "explain-head" }, "Text " + (i + 1) + ": " + explained(spec, result, i)));
    const tokens = result.tokens[i];
    const attributions = result.attributions[i];
    const peak = Math.max(1e-12, ...attributions.map((v) => Math.abs(v)));
    const line = el("p", { class: "explain-text" });
    tokens.forEach((token, k) => {
      const v = attributions[k];
      const step = Math.min(4, Math.ceil(Math.abs(v) / peak * 4));
      const word = el("span", { class: "explain-token " + (v >= 0 ? "up" : "down") + step, "data-token": token, "data-value": String(v) });
      word.append(document.createTextNode(token + " "), el("sub", {}, signed(v)));
      line.append(word, document.createTextNode(" "));
    });
    figure.append(line);
    const order = attributions.map((_, k) => k).sort((a, b) => attributions[b] - attributions[a]);
    const up = order.filter((k) => attributions[k] > 0).slice(0, 3).map((k) => tokens[k] + " " + signed(attributions[k]));
    const down = order.filter((k) => attributions[k] < 0).reverse().slice(0, 3).map((k) => tokens[k] + " " + signed(attributions[k]));
    figure.append(el("figcaption", {}, "Each number: the score with the word minus the score without it. Raise it most: " + (up.join(", ") || "none") + ". Lower it most: " + (down.join(", ") || "none") + "."));
    return figure;
  }

  // One image: the per-pixel map summed over channels, red raises and blue lowers, on a canvas scaled up.
  function imageRow(spec, result, i) {
    const figure = el("figure", { class: "explain-row" });
    figure.append(el("p", { class: "explain-head" }, "Image " + (i + 1) + ": " + explained(spec, result, i) + " (occlusion, patches of " + result.patch + " pixels)"));
    let map = result.attributions[i];
    if (Array.isArray(map[0]) && Array.isArray(map[0][0])) {  // [C, H, W]: the channels summed
      map = map[0].map((row, y) => row.map((_, x) => map.reduce((sum, channel) => sum + channel[y][x], 0)));
    }
    const h = map.length, w = map[0].length;
    const flat = [].concat(...map);
    const peak = Math.max(1e-12, ...flat.map((v) => Math.abs(v)));
    const small = el("canvas", { width: String(w), height: String(h) });
    const image = small.getContext("2d").createImageData(w, h);
    flat.forEach((v, k) => {
      const a = Math.abs(v) / peak;
      const rgb = v >= 0 ? [255, Math.round(255 * (1 - a)), Math.round(255 * (1 - a))] : [Math.round(255 * (1 - a)), Math.round(255 * (1 - a)), 255];
      image.data.set(rgb.concat([255]), k * 4);
    });
    small.getContext("2d").putImageData(image, 0, 0);
    const side = 224;
    const strongest = flat.map((v, k) => [v, k]).filter(([v]) => v !== 0).sort((a, b) => Math.abs(b[0]) - Math.abs(a[0])).slice(0, 3)
      .map(([v, k]) => "row " + Math.floor(k / w) + " column " + (k % w) + " " + signed(v));
    // An image equal to the baseline where it matters (a blank pad) has no attribution at all: say so.
    const found = strongest.length ? "Strongest pixels: " + strongest.join(", ") : "Every pixel is 0: occluding any region changes nothing";
    const label = "Heat map of image " + (i + 1) + " (" + w + " by " + h + " pixels): red raises the score, blue lowers it. " + found;
    const big = el("canvas", { width: String(side), height: String(Math.round(side * h / w)), role: "img", "aria-label": label, class: "explain-heat" });
    const ctx = big.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(small, 0, 0, big.width, big.height);
    figure.append(big, el("figcaption", {}, label + (strongest.length ? ". The largest magnitude is " + fmt(peak) + "." : ".")));
    return figure;
  }

  function render(target, spec, result, values) {
    target.textContent = "";
    const note = "Method " + result.method + (result.additive ? " (additive)" : " (not additive)") + ", version " + result.model_version + ".";
    target.append(el("p", {}, note));
    result.attributions.forEach((_, i) => {
      if (result.kind === "tabular") target.append(tabularRow(spec, result, i, values[i]));
      else if (result.kind === "text") target.append(textRow(spec, result, i));
      else target.append(imageRow(spec, result, i));
    });
  }

  function build(section) {
    const spec = S().data(section.dataset.explain);
    const form = section.querySelector(".explain-form");
    if (!form || !T()) return;
    const status = section.querySelector(".explain-status");
    const answer = section.querySelector(".explain-answer");
    const input = T().fields(spec, form.querySelector(".explain-fields"), "explain", true);
    const say = (text, bad) => { status.textContent = text; status.classList.toggle("error", !!bad); };
    T().sample(section.querySelector(".explain-sample"), spec, input.show, (text, ok) => say(ok ? text + ": add it or explain it." : text, !ok));

    // Tabular rows to explain together: "Add this row" queues the fields' row; with none queued, Explain takes
    // the fields' row alone.
    const queued = [];
    const list = section.querySelector(".explain-rows");
    const showQueue = () => {
      list.textContent = "";
      queued.forEach((row, k) => list.append(el("li", {}, "Row " + (k + 1) + ": " + row.map(fmt).join(", "))));
      const count = section.querySelector(".explain-count");
      if (count) count.textContent = queued.length ? queued.length + " row" + (queued.length > 1 ? "s" : "") + " to explain" : "No rows added: Explain takes the row above";
    };
    const add = section.querySelector(".explain-add");
    const clear = section.querySelector(".explain-clear");
    if (input.kind === "tabular" && add && clear) {
      add.addEventListener("click", () => {
        const row = input.read().data;
        if (row.some((v) => !isFinite(v))) { say("Every feature needs a number.", true); return; }
        if (queued.length >= 100) { say("At most 100 rows an explanation.", true); return; }
        queued.push(row);
        showQueue();
        say("Added row " + queued.length + ".", false);
      });
      clear.addEventListener("click", () => { queued.length = 0; showQueue(); say("", false); });
      showQueue();
    } else {
      section.querySelectorAll(".explain-queue").forEach((node) => node.remove());
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let tensor = input.read();
      let rows = [tensor.data];
      if (input.kind === "tabular") {
        rows = queued.length ? queued.slice() : [tensor.data];
        tensor = { shape: [rows.length, rows[0].length], data: [].concat(...rows) };
      } else if (input.kind === "text" && !tensor.data.length) {
        say("Write a text to explain.", true);
        return;
      }
      const query = new URLSearchParams();
      ["output", "target"].forEach((name) => {
        const field = form.querySelector("[name=" + name + "]");
        if (field && field.value) query.set(name, field.value);
      });
      const url = spec.url + (query.toString() ? "?" + query.toString() : "");
      const body = { inputs: [{ name: spec.input, shape: tensor.shape, datatype: spec.datatype, data: tensor.data }] };
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      answer.textContent = "";
      say("Explaining… (the first explanation starts a worker: a few seconds)", false);
      try {
        const result = await S().api(url, { method: "POST", json: body });
        render(answer, spec, result, rows);
        say("Explained " + result.attributions.length + (result.attributions.length > 1 ? " inputs." : " input."), false);
      } catch (err) {
        say("The server answered: " + err.message, true);
      } finally {
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-explain]").forEach(build);
  });
})();
