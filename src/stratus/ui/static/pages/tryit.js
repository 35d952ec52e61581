// Stratus console, the "try it" panel: a form built from the model's signature (a text box for text models, a
// drawing pad with image drop for image models, a box per feature for tabular ones, or a row of the training
// dataset), sent to the real inference route (V2 JSON) through the bridge; the answer is shown under it.
// The form's fields are built by window.StratusTryit.fields, which the explain panel (explain.js) uses too, so
// both panels take input the same way; a prefix keeps their element ids apart on one page.
"use strict";
(function () {
  const S = () => window.Stratus;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.keys(attrs || {}).forEach((k) => node.setAttribute(k, attrs[k]));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A square pad to draw on (white ink on black, as the digits are) that also takes a dropped or chosen image.
  function imagePad(spec, fields, prefix) {
    const side = 224;
    const pad = el("canvas", { width: side, height: side, class: "tryit-pad", role: "img", "aria-label": "Drawing pad: draw a " + (spec.classes.length ? "shape of one of the classes" : "picture") + " with the mouse, or drop an image on it" });
    const ctx = pad.getContext("2d");
    const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, side, side); };
    clear();
    let drawing = false;
    const at = (event) => {
      const box = pad.getBoundingClientRect();
      return [(event.clientX - box.left) * side / box.width, (event.clientY - box.top) * side / box.height];
    };
    const state = { sample: null };
    pad.addEventListener("pointerdown", (event) => { drawing = true; state.sample = null; const [x, y] = at(event); ctx.beginPath(); ctx.moveTo(x, y); });
    pad.addEventListener("pointermove", (event) => {
      if (!drawing) return;
      const [x, y] = at(event);
      ctx.strokeStyle = "#fff"; ctx.lineWidth = side / 9; ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.lineTo(x, y); ctx.stroke();
    });
    ["pointerup", "pointerleave"].forEach((name) => pad.addEventListener(name, () => { drawing = false; }));
    const drawImage = (file) => {
      const url = URL.createObjectURL(file);
      const img = new Image();
      img.onload = () => { clear(); ctx.drawImage(img, 0, 0, side, side); URL.revokeObjectURL(url); state.sample = null; };
      img.src = url;
    };
    pad.addEventListener("dragover", (event) => event.preventDefault());
    pad.addEventListener("drop", (event) => {
      event.preventDefault();
      if (event.dataTransfer.files.length) drawImage(event.dataTransfer.files[0]);
    });
    const fileLabel = el("label", { for: prefix + "-file" }, "…or choose an image");
    const file = el("input", { id: prefix + "-file", type: "file", accept: "image/*" });
    file.addEventListener("change", () => { if (file.files.length) drawImage(file.files[0]); });
    const clearButton = el("button", { type: "button", class: "secondary" }, "Clear");
    clearButton.addEventListener("click", () => { clear(); state.sample = null; });
    fields.append(pad, el("br"), clearButton, " ", fileLabel, " ", file);

    // The model's input: the pad scaled down to the model's size, grey levels mapped onto its pixel range.
    // Each model pixel is the mean of its block of the pad: drawImage's scaling samples only a few pad pixels
    // per block (224 -> 8 reads about 4 of 784), so a stroke between them vanished and a blank image was sent.
    state.values = () => {
      if (state.sample) return state.sample;
      const pixels = ctx.getImageData(0, 0, side, side).data;
      const out = [];
      for (let c = 0; c < spec.channels; c++) {
        for (let y = 0; y < spec.height; y++) {
          const y0 = Math.floor(y * side / spec.height), y1 = Math.max(y0 + 1, Math.floor((y + 1) * side / spec.height));
          for (let x = 0; x < spec.width; x++) {
            const x0 = Math.floor(x * side / spec.width), x1 = Math.max(x0 + 1, Math.floor((x + 1) * side / spec.width));
            let sum = 0;
            for (let sy = y0; sy < y1; sy++) {
              for (let sx = x0; sx < x1; sx++) {
                const k = (sy * side + sx) * 4;
                sum += spec.channels === 1 ? (pixels[k] + pixels[k + 1] + pixels[k + 2]) / 3 : pixels[k + c];
              }
            }
            out.push(+(sum / ((y1 - y0) * (x1 - x0)) / 255 * spec.high).toFixed(4));
          }
        }
      }
      return out;
    };
    // A dataset row: shown on the pad, sent exactly as it is.
    state.show = (values) => {
      state.sample = values;
      const small = el("canvas", { width: spec.width, height: spec.height });
      const sctx = small.getContext("2d");
      const image = sctx.createImageData(spec.width, spec.height);
      for (let i = 0; i < spec.width * spec.height; i++) {
        const v = Math.max(0, Math.min(255, Math.round(values[i] / (spec.high || 1) * 255)));
        image.data.set([v, v, v, 255], i * 4);
      }
      sctx.putImageData(image, 0, 0);
      ctx.imageSmoothingEnabled = false;
      clear();
      ctx.drawImage(small, 0, 0, side, side);
    };
    return state;
  }

  // The input fields for ``spec`` in ``fields``: {read() -> {shape, data}, show(values) | null, kind}.
  // lines: a text box takes one text a line (the explain panel explains several at once).
  function inputFields(spec, fields, prefix, lines) {
    if (spec.kind === "text") {
      const box = el("textarea", { id: prefix + "-text", rows: lines ? "4" : "3", cols: "60" });
      fields.append(el("label", { for: prefix + "-text" }, lines ? "Texts, one a line" : "Text"), el("br"), box);
      const read = () => {
        const texts = lines ? box.value.split("\n").map((t) => t.trim()).filter((t) => t) : [box.value];
        return { shape: [texts.length], data: texts };
      };
      return { read: read, show: null, kind: "text" };
    }
    if (spec.kind === "image") {
      const pad = imagePad(spec, fields, prefix);
      const read = () => ({ shape: [1, spec.channels, spec.height, spec.width], data: pad.values() });
      return { read: read, show: (values) => pad.show(values), kind: "image" };
    }
    const grid = el("div", { class: "tryit-grid" });
    const inputs = spec.features.map((name, i) => {
      const id = prefix + "-f" + i;
      const input = el("input", { id: id, inputmode: "decimal", value: String(spec.defaults[i]), size: "8" });
      const cell = el("div");
      cell.append(el("label", { for: id }, name), input);
      grid.append(cell);
      return input;
    });
    fields.append(grid);
    return {
      read: () => ({ shape: [1, inputs.length], data: inputs.map((x) => parseFloat(x.value)) }),
      show: (values) => values.forEach((v, i) => { if (inputs[i]) inputs[i].value = String(v); }),
      kind: "tabular",
    };
  }

  // "Fill from a dataset row": a random row of the training dataset into the fields (manage only).
  function sampleButton(button, spec, show, say) {
    if (!button || !show || !spec.sample_url) return;
    button.addEventListener("click", async () => {
      const row = Math.floor(Math.random() * 100000);
      const response = await fetch(spec.sample_url + "?row=" + row, { credentials: "same-origin" });
      const body = await response.json();
      if (!response.ok) { say("Could not read a row: " + (body.error || response.status), false); return; }
      show(body.values);
      say("Row " + body.row + " of the dataset" + (body.label !== null ? " (labelled " + body.label + ")" : ""), true);
    });
  }

  function build(section) {
    const spec = S().data(section.dataset.tryit);
    const form = section.querySelector(".tryit-form");
    if (!form) return;
    const fields = form.querySelector(".tryit-fields");
    const answer = section.querySelector(".tryit-answer");
    const input = inputFields(spec, fields, "tryit", false);
    const read = input.read;
    sampleButton(section.querySelector(".tryit-sample"), spec, input.show, (text, ok) => { answer.textContent = ok ? text + ": press Predict." : text; });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const tensor = read();
      const body = { inputs: [{ name: spec.input, shape: tensor.shape, datatype: spec.datatype, data: tensor.data }] };
      answer.textContent = "Predicting…";
      try {
        const result = await S().api(spec.url, { method: "POST", json: body });
        render(answer, spec, result);
      } catch (err) {
        answer.textContent = "The model answered: " + err.message;
        answer.classList.add("error");
      }
    });
  }

  function render(answer, spec, result) {
    answer.textContent = "";
    answer.classList.remove("error");
    const label = (result.outputs || []).find((o) => o.name === "label");
    if (label && spec.classes.length && label.data.length) {
      const index = label.data[0];
      const name = spec.classes[index] !== undefined ? spec.classes[index] : String(index);
      answer.append(el("p", { class: "tryit-label" }, "Predicted class: " + name));
    }
    answer.append(el("p", {}, "Served by " + result.model_name + " version " + result.model_version + "."));
    const table = el("table");
    const head = el("thead");
    const hr = el("tr");
    ["Output", "Shape", "Values"].forEach((h) => hr.append(el("th", { scope: "col" }, h)));
    head.append(hr);
    const tbody = el("tbody");
    (result.outputs || []).forEach((o) => {
      const tr = el("tr");
      const shown = o.data.slice(0, 16).map((v) => (typeof v === "number" ? +v.toPrecision(4) : v)).join(", ");
      tr.append(el("td", {}, o.name), el("td", {}, JSON.stringify(o.shape)), el("td", {}, shown + (o.data.length > 16 ? ", …" : "")));
      tbody.append(tr);
    });
    table.append(head, tbody);
    answer.append(table);
  }

  window.StratusTryit = { fields: inputFields, sample: sampleButton, el: el };
  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-tryit]").forEach(build);
  });
})();
