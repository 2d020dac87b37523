// The annotation page: plain JS, no build step. Talks to the JSON API of annotator/server.py.
"use strict";

const COLORS = [[0, 200, 255], [60, 220, 75], [255, 0, 255], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [230, 25, 75], [210, 245, 60], [250, 190, 212], [0, 128, 128]];
const CANDIDATE_NAMES = ["single mask (as predict.py)", "candidate 1", "candidate 2", "candidate 3"];
const CANDIDATE_COLOR = [255, 235, 59]; // the mask being made: yellow, apart from every category colour
const CLICK_SLOP = 4; // screen pixels a press may move and still be a click, not a box

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

const S = {
  images: [], categories: [], index: 0, name: null, width: 0, height: 0, revision: 0,
  picture: null, objects: [], objectLayers: new Map(), selected: null,
  prompts: { points: [], labels: [], box: null }, undo: [],
  candidates: [], chosen: 0, candidateLayer: null, categoryIndex: 0,
  view: { scale: 1, ox: 0, oy: 0 }, drag: null, spaceDown: false, requestSeq: 0,
};

// --- talking to the server ------------------------------------------------------------------

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
    error.status = response.status;
    throw error;
  }
  return data;
}

let busyCount = 0;
async function busy(promise) {
  busyCount += 1;
  document.body.dataset.busy = "1";
  try { return await promise; } finally {
    busyCount -= 1;
    if (busyCount === 0) document.body.dataset.busy = "0";
  }
}

function say(text, kind = "") {
  const message = $("message");
  message.textContent = text;
  message.className = kind;
}

// --- masks -------------------------------------------------------------------------------------

function runsToLayer(runs, width, height, rgb, alpha = 90) {
  // row-major run lengths (background first) -> an offscreen canvas: the mask tinted rgb, its edge opaque
  const inside = new Uint8Array(width * height);
  let position = 0, set = false;
  for (const run of runs) {
    if (set) inside.fill(1, position, position + run);
    position += run;
    set = !set;
  }
  const layer = document.createElement("canvas");
  layer.width = width; layer.height = height;
  const lctx = layer.getContext("2d");
  const image = lctx.createImageData(width, height);
  const data = image.data;
  for (let i = 0; i < inside.length; i++) {
    if (!inside[i]) continue;
    const x = i % width, y = (i - x) / width;
    const edge = x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
      !inside[i - 1] || !inside[i + 1] || !inside[i - width] || !inside[i + width];
    const k = 4 * i;
    data[k] = rgb[0]; data[k + 1] = rgb[1]; data[k + 2] = rgb[2]; data[k + 3] = edge ? 255 : alpha;
  }
  lctx.putImageData(image, 0, 0);
  return layer;
}

function categoryColor(categoryId) {
  const i = S.categories.findIndex((c) => c.id === categoryId);
  return COLORS[(i < 0 ? 0 : i) % COLORS.length];
}

// --- view: image <-> screen ----------------------------------------------------------------------

function resizeCanvas() {
  canvas.width = canvas.clientWidth;
  canvas.height = canvas.clientHeight;
}

function fit() {
  resizeCanvas();
  if (!S.width) return;
  const scale = Math.min(canvas.width / S.width, canvas.height / S.height) * 0.95;
  S.view = { scale, ox: (canvas.width - S.width * scale) / 2, oy: (canvas.height - S.height * scale) / 2 };
  draw();
}

function toImage(event) {
  const rect = canvas.getBoundingClientRect();
  return { x: (event.clientX - rect.left - S.view.ox) / S.view.scale,
           y: (event.clientY - rect.top - S.view.oy) / S.view.scale };
}

function imageToClient(x, y) {
  // for tests and tools: where image pixel (x, y) (its centre at x + 0.5) is on the page
  const rect = canvas.getBoundingClientRect();
  return { x: rect.left + S.view.ox + (x + 0.5) * S.view.scale, y: rect.top + S.view.oy + (y + 0.5) * S.view.scale };
}

function pixelOf(point) {
  // the pixel under the pointer, as integer (x, y) inside the image; null outside it
  const x = Math.floor(point.x), y = Math.floor(point.y);
  return x >= 0 && y >= 0 && x < S.width && y < S.height ? [x, y] : null;
}

// --- drawing -------------------------------------------------------------------------------------

function draw() {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!S.picture) return;
  const { scale, ox, oy } = S.view;
  ctx.setTransform(scale, 0, 0, scale, ox, oy);
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.drawImage(S.picture, 0, 0);
  for (const object of S.objects) {
    const layer = S.objectLayers.get(object.id);
    if (layer) ctx.drawImage(layer, 0, 0);
    if (layer && object.id === S.selected) ctx.drawImage(layer, 0, 0); // twice: darker
  }
  if (S.candidateLayer) ctx.drawImage(S.candidateLayer, 0, 0);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  const toScreen = (x, y) => [ox + x * scale, oy + y * scale];
  const box = S.drag && S.drag.box ? S.drag.box : S.prompts.box;
  if (box) {
    const [x0, y0] = toScreen(box[0], box[1]);
    const [x1, y1] = toScreen(box[2] + 1, box[3] + 1);
    ctx.strokeStyle = "#00e676"; ctx.lineWidth = 2;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
  S.prompts.points.forEach(([x, y], i) => {
    const [sx, sy] = toScreen(x + 0.5, y + 0.5);
    ctx.beginPath();
    ctx.arc(sx, sy, 5, 0, 2 * Math.PI);
    ctx.fillStyle = S.prompts.labels[i] === 1 ? "#00e676" : "#ff1744";
    ctx.fill();
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.stroke();
  });
}

function renderSidebars() {
  const annotated = S.images.filter((image) => image.objects > 0).length;
  $("progress").textContent = `${annotated} / ${S.images.length} annotated`;
  $("image-name").textContent = S.name ? `${S.name} (${S.index + 1}/${S.images.length})` : "";
  const list = $("image-list");
  list.replaceChildren(...S.images.map((image, i) => {
    const row = document.createElement("div");
    row.textContent = image.name;
    row.title = image.name;
    row.dataset.count = image.objects;
    row.className = (image.objects > 0 ? "done " : "") + (i === S.index ? "current" : "");
    row.onclick = () => openImage(i);
    return row;
  }));
  list.children[S.index]?.scrollIntoView({ block: "nearest" });
  $("candidates").replaceChildren(...S.candidates.map((candidate, i) => {
    const button = document.createElement("button");
    button.className = "candidate" + (i === S.chosen ? " chosen" : "");
    button.textContent = `${i + 1}. ${CANDIDATE_NAMES[i]} — IoU ${candidate.iou.toFixed(3)}, ${candidate.area} px`;
    button.onclick = () => choose(i);
    return button;
  }));
  $("objects").replaceChildren(...S.objects.map((object) => {
    const item = document.createElement("li");
    const category = S.categories.find((c) => c.id === object.category_id);
    item.textContent = `#${object.id} ${category ? category.name : object.category_id} (${Math.round(object.area)} px)`;
    item.className = object.id === S.selected ? "selected" : "";
    item.onclick = () => { S.selected = S.selected === object.id ? null : object.id; renderSidebars(); draw(); };
    const remove = document.createElement("button");
    remove.textContent = "delete";
    remove.onclick = (event) => { event.stopPropagation(); deleteObject(object.id); };
    item.append(remove);
    return item;
  }));
  $("category").value = String(S.categories[S.categoryIndex]?.id ?? "");
}

// --- images --------------------------------------------------------------------------------------

function loadPicture(name) {
  return new Promise((resolve, reject) => {
    const picture = new Image();
    picture.onload = () => resolve(picture);
    picture.onerror = () => reject(new Error(`could not load ${name}`));
    picture.src = `/api/pixels?name=${encodeURIComponent(name)}`;
  });
}

function setObjects(payload) {
  S.revision = payload.revision;
  S.objects = payload.objects;
  S.objectLayers = new Map(S.objects.map((o) => [o.id, runsToLayer(o.runs, S.width, S.height, categoryColor(o.category_id))]));
  if (!S.objects.some((o) => o.id === S.selected)) S.selected = null;
  const entry = S.images.find((image) => image.name === S.name);
  if (entry) entry.objects = S.objects.length;
}

async function openImage(index) {
  if (index < 0 || index >= S.images.length) return;
  const name = S.images[index].name;
  S.index = index; S.name = name;
  clearPrompts(false);
  say(`opening ${name} …`);
  renderSidebars();
  try {
    const [picture, opened] = await busy(Promise.all([loadPicture(name), api("POST", "/api/open", { name })]));
    if (S.name !== name) return; // the user moved on meanwhile
    S.picture = picture; S.width = opened.width; S.height = opened.height;
    setObjects(opened);
    fit();
    renderSidebars();
    const e = opened.embedding;
    say(`${name}: embedding ${e.source}${e.source === "computed" ? ` in ${e.seconds.toFixed(2)} s` : ""}`);
  } catch (error) { say(error.message, "error"); }
}

// --- prompts and masks ------------------------------------------------------------------------

function clearPrompts(redraw = true) {
  S.prompts = { points: [], labels: [], box: null };
  S.undo = []; S.candidates = []; S.candidateLayer = null; S.chosen = 0;
  if (redraw) { renderSidebars(); draw(); }
}

function changePrompts(change) {
  S.undo.push(JSON.parse(JSON.stringify(S.prompts)));
  change(S.prompts);
  predict();
}

function hasPrompts() { return S.prompts.points.length > 0 || S.prompts.box !== null; }

async function predict() {
  draw();
  if (!hasPrompts()) { S.candidates = []; S.candidateLayer = null; renderSidebars(); draw(); return; }
  const seq = ++S.requestSeq;
  try {
    const result = await busy(api("POST", "/api/predict", { name: S.name, ...S.prompts }));
    if (seq !== S.requestSeq) return; // a newer prompt is on its way
    S.candidates = result.candidates;
    choose(S.chosen < S.candidates.length ? S.chosen : 0);
    say(`mask in ${(result.seconds * 1000).toFixed(0)} ms`);
  } catch (error) { say(error.message, "error"); }
}

function choose(i) {
  if (!S.candidates[i]) return;
  S.chosen = i;
  S.candidateLayer = runsToLayer(S.candidates[i].runs, S.width, S.height, CANDIDATE_COLOR, 120);
  renderSidebars();
  draw();
}

async function accept() {
  if (!S.candidates.length) { say("nothing to accept: click the object first", "error"); return; }
  const category = S.categories[S.categoryIndex];
  try {
    const saved = await busy(api("POST", "/api/objects", {
      name: S.name, revision: S.revision, candidate: S.chosen, category_id: category.id, ...S.prompts }));
    setObjects(saved);
    clearPrompts();
    say(`saved object #${saved.saved} (${category.name})`, "ok");
  } catch (error) { await handleSaveError(error); }
}

async function deleteObject(id) {
  try {
    const result = await busy(api("POST", "/api/objects/delete", { name: S.name, revision: S.revision, id }));
    setObjects(result);
    renderSidebars(); draw();
    say(`deleted object #${id}`, "ok");
  } catch (error) { await handleSaveError(error); }
}

async function handleSaveError(error) {
  say(error.message, "error");
  if (error.status === 409) { // another tab changed this image: show its objects, keep our prompts
    setObjects(await api("GET", `/api/objects?name=${encodeURIComponent(S.name)}`));
    renderSidebars(); draw();
  }
}

function undo() {
  if (S.undo.length) {
    S.prompts = S.undo.pop();
    predict();
  } else if (S.objects.length) {
    deleteObject(S.objects[S.objects.length - 1].id);
  }
}

// --- mouse and keyboard ----------------------------------------------------------------------

canvas.addEventListener("contextmenu", (event) => event.preventDefault());

canvas.addEventListener("mousedown", (event) => {
  canvas.focus();
  const panning = event.button === 1 || (event.button === 0 && (S.spaceDown || event.altKey));
  if (panning) {
    S.drag = { pan: true, x: event.clientX, y: event.clientY };
  } else if (event.button === 0) {
    S.drag = { pan: false, x: event.clientX, y: event.clientY, start: toImage(event), shift: event.shiftKey, box: null };
  } else if (event.button === 2) {
    const pixel = pixelOf(toImage(event));
    if (pixel) changePrompts((p) => { p.points.push(pixel); p.labels.push(0); });
  }
});

window.addEventListener("mousemove", (event) => {
  const drag = S.drag;
  if (!drag) return;
  if (drag.pan) {
    S.view.ox += event.clientX - drag.x; S.view.oy += event.clientY - drag.y;
    drag.x = event.clientX; drag.y = event.clientY;
    draw();
  } else if (Math.hypot(event.clientX - drag.x, event.clientY - drag.y) > CLICK_SLOP) {
    const end = toImage(event);
    const clamp = (v, hi) => Math.min(Math.max(Math.floor(v), 0), hi - 1);
    drag.box = [clamp(Math.min(drag.start.x, end.x), S.width), clamp(Math.min(drag.start.y, end.y), S.height),
                clamp(Math.max(drag.start.x, end.x), S.width), clamp(Math.max(drag.start.y, end.y), S.height)];
    draw();
  }
});

window.addEventListener("mouseup", () => {
  const drag = S.drag;
  S.drag = null;
  if (!drag || drag.pan) return;
  if (drag.box) {
    const box = drag.box;
    if (box[2] > box[0] && box[3] > box[1]) changePrompts((p) => { p.box = box; });
    else draw();
    return;
  }
  const pixel = pixelOf(drag.start);
  if (pixel) changePrompts((p) => { p.points.push(pixel); p.labels.push(drag.shift ? 0 : 1); });
});

canvas.addEventListener("wheel", (event) => {
  event.preventDefault();
  const rect = canvas.getBoundingClientRect();
  const sx = event.clientX - rect.left, sy = event.clientY - rect.top;
  const factor = Math.exp(-event.deltaY * 0.0015);
  const { scale, ox, oy } = S.view;
  const next = Math.min(Math.max(scale * factor, 0.05), 64);
  S.view = { scale: next, ox: sx - (sx - ox) * (next / scale), oy: sy - (sy - oy) * (next / scale) };
  draw();
}, { passive: false });

window.addEventListener("keydown", (event) => {
  if (event.target.tagName === "SELECT" || event.target.tagName === "INPUT") return;
  const key = event.key;
  if (key === " ") { S.spaceDown = true; event.preventDefault(); return; }
  if (event.ctrlKey || event.metaKey) return;
  const actions = {
    Enter: accept, z: undo, Z: undo, Escape: () => clearPrompts(), n: () => openImage(S.index + 1),
    N: () => openImage(S.index + 1), p: () => openImage(S.index - 1), P: () => openImage(S.index - 1),
    f: fit, F: fit, c: nextCategory, C: nextCategory,
    Delete: () => S.selected !== null && deleteObject(S.selected),
    Backspace: () => S.selected !== null && deleteObject(S.selected),
    1: () => choose(0), 2: () => choose(1), 3: () => choose(2), 4: () => choose(3),
  };
  if (actions[key]) { event.preventDefault(); actions[key](); }
});
window.addEventListener("keyup", (event) => { if (event.key === " ") S.spaceDown = false; });
window.addEventListener("resize", fit);

function nextCategory() {
  S.categoryIndex = (S.categoryIndex + 1) % S.categories.length;
  choose(S.chosen);
  renderSidebars();
}

$("category").addEventListener("change", (event) => {
  S.categoryIndex = S.categories.findIndex((c) => String(c.id) === event.target.value);
  choose(S.chosen);
  canvas.focus();
});
$("accept").onclick = accept;
$("undo").onclick = undo;
$("clear").onclick = () => clearPrompts();
$("next").onclick = () => openImage(S.index + 1);
$("prev").onclick = () => openImage(S.index - 1);

// --- start -----------------------------------------------------------------------------------

async function start() {
  try {
    const state = await busy(api("GET", "/api/state"));
    S.images = state.images;
    S.categories = state.categories;
    $("category").replaceChildren(...S.categories.map((c) => new Option(c.name, String(c.id))));
    $("shortcuts").replaceChildren(...state.shortcuts.map(([keys, what]) => {
      const row = document.createElement("tr");
      row.innerHTML = "<td></td><td></td>";
      row.children[0].textContent = keys; row.children[1].textContent = what;
      return row;
    }));
    const m = state.model;
    $("model").textContent = `${m.checkpoint}\n${m.model_type}, ${m.strategy}\ninput ${m.image_size}, ${m.normalization}, ` +
      `intensity ${m.intensity}\nsaving to ${state.annotations}`;
    await openImage(Math.max(0, S.images.findIndex((image) => image.name === state.resume)));
  } catch (error) { say(error.message, "error"); }
}

window.annotator = { state: S, imageToClient };
start();
