// bidense serve: upload or pick an image, POST it to /api/predict, draw the answer.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "";
}

function fmtMs(ms) {
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`;
}

function drawLabels(legend, box) {
  const list = document.createElement("ul");
  list.className = "classes";
  for (const entry of legend.entries) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = entry.color;
    item.append(swatch, `${entry.name} (${(100 * entry.share).toFixed(1)}%)`);
    list.append(item);
  }
  box.append(list);
}

function drawScale(legend, box) {
  const title = document.createElement("div");
  title.textContent = legend.unit ? `${legend.label} (${legend.unit})` : legend.label;
  const bar = document.createElement("div");
  bar.className = "scale";
  bar.style.background = `linear-gradient(to right, ${legend.stops.join(", ")})`;
  const ticks = document.createElement("div");
  ticks.className = "ticks";
  for (const tick of legend.ticks) {
    const label = document.createElement("span");
    label.style.left = `${100 * tick.position}%`;
    label.textContent = `${tick.value}`;
    ticks.append(label);
  }
  box.append(title, bar, ticks);
}

const LEGENDS = { labels: drawLabels, scale: drawScale };

function drawResult(answer) {
  $("result").src = answer.picture;
  const legend = $("legend");
  legend.replaceChildren();
  LEGENDS[answer.legend.kind](answer.legend, legend);
  $("figure").hidden = false;
  const lat = answer.latency;
  $("repeats").textContent = `${lat.repeats} run${lat.repeats === 1 ? "" : "s"}`;
  $("runtime-ms").textContent = `${fmtMs(lat.runtime_ms)} (${lat.threads} thread${lat.threads === 1 ? "" : "s"})`;
  const torch = lat.pytorch_ms !== null;
  $("pytorch-ms").textContent = torch ? fmtMs(lat.pytorch_ms)
    : "not available: a .bdn file has no PyTorch model (serve its checkpoint to compare)";
  $("speedup").textContent = torch ? `${(lat.pytorch_ms / lat.runtime_ms).toFixed(2)}x` : "–";
  $("latency").hidden = false;
  const [h, w] = answer.image_size;
  $("status").textContent = `${w}x${h} image, run at ${info.input_size[1]}x${info.input_size[0]}`;
}

async function predict(blob) {
  $("error").hidden = true;
  $("status").textContent = "running…";
  let answer;
  try {
    const response = await fetch("/api/predict", { method: "POST", body: blob });
    answer = await response.json();
    if (!response.ok) {
      showError(answer.error || `the server answered ${response.status}`);
      return;
    }
  } catch (err) {
    showError(`the server did not answer: ${err}`);
    return;
  }
  drawResult(answer);
}

async function pickSample(name) {
  const response = await fetch(`/api/samples/${name}`);
  if (!response.ok) {
    showError(`cannot load sample ${name}`);
    return;
  }
  await predict(await response.blob());
}

async function start() {
  info = await (await fetch("/api/info")).json();
  $("model").textContent = `${info.model} [${info.method}]`;
  $("about").textContent = `${info.title} from ${info.source}; input ` +
    `${info.input_size[1]}x${info.input_size[0]}` +
    (info.pytorch ? "" : "; PyTorch is not available for a .bdn file");
  $("limits").textContent = `PNG, JPEG, BMP, TIFF or WebP, up to ${info.limits.max_mb} MB and ` +
    `${info.limits.max_side} px a side`;
  for (const name of info.samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.title = name;
    button.dataset.sample = name;
    const thumb = document.createElement("img");
    thumb.src = `/api/samples/${name}`;
    thumb.alt = name;
    button.append(thumb);
    button.addEventListener("click", () => pickSample(name));
    $("samples").append(button);
  }
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) predict(file);
  });
}

start().catch((err) => showError(`cannot reach the server: ${err}`));
