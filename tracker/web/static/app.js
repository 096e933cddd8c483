// Facewire dashboard: draws what the tracker sends over the WebSocket and sends the controls back.
// Plain script, no libraries, nothing fetched from elsewhere.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
// Counters the browser tests read; they say what the page did, not what it was sent.
const debug = window.facewireDebug = { frames: 0, images: 0, overlays: 0, lastFrame: 0, controlsSeen: 0,
  refused: [], errors: [], access: null };

let socket = null;
let names = { blend: [], features: [], groups: [] };
let access = null;
let image = null;            // ImageBitmap of the newest camera frame
let imageFrame = null;       // the frame message that came with it
let lastFrame = null;
let asked = null;            // {version, what, at}: the newest control change this page asked for
let dragging = false;
const faceCards = new Map();

function connect() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  setBadge("connection", "connecting…", "");
  socket.onopen = () => setBadge("connection", "connected", "ok");
  socket.onmessage = (event) => {
    if (typeof event.data === "string") handle(JSON.parse(event.data), null);
    else handleBinary(event.data);
  };
  socket.onclose = (event) => {
    if (event.code === 4403) {
      setBadge("connection", "refused: " + (event.reason || "wrong token"), "bad");
      return;                                         // a wrong token does not get better by retrying
    }
    setBadge("connection", "disconnected, retrying…", "warn");
    setTimeout(connect, 1000);
  };
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function setBadge(id, text, kind) {
  const el = $(id);
  el.textContent = text;
  el.className = "badge " + kind;
}

async function handleBinary(buffer) {
  const length = new DataView(buffer).getUint32(0);
  const message = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const blob = new Blob([new Uint8Array(buffer, 4 + length)], { type: "image/jpeg" });
  try {
    const bitmap = await createImageBitmap(blob);
    if (image) image.close();
    image = bitmap;
    imageFrame = message;
    debug.images++;
  } catch (err) {
    debug.errors.push("image: " + err);
  }
  handle(message, true);
}

function handle(message, withImage) {
  switch (message.type) {
    case "hello": return hello(message);
    case "frame": return frame(message, withImage);
    case "controls": return controlsReply(message.controls);
    case "page":
      $("stat-page").textContent = `${message.sent} / ${message.dropped}`;
      return;
    case "image":
      $("show-image").checked = message.on;
      if (!message.on) image = null;
      draw();
      return;
    case "refused":
      debug.refused.push(message.what);
      $("control-status").textContent = `refused: ${message.reason}`;
      return;
    case "error":
      debug.errors.push(message.message);
      $("control-status").textContent = `error: ${message.message}`;
      return;
  }
}

function hello(message) {
  access = debug.access = message.access;
  names = { blend: message.blendshape_names, features: message.feature_names, groups: message.groups };
  const full = access === "full";
  setBadge("access", full ? "full access" : access === "view" ? "view only" : "refused", full ? "ok" : "bad");
  $("notice").textContent = message.reason || "";
  $("show-image").checked = message.images;
  $("show-image").disabled = !message.images;
  for (const el of document.querySelectorAll("#controls button, #controls input")) el.disabled = !full;
  buildSmoothing(message.groups, full);
  if (message.controls) showControls(message.controls);
}

function buildSmoothing(groups, enabled) {
  const box = $("smoothing");
  box.textContent = "";
  for (const group of groups) {
    const row = document.createElement("div");
    row.className = "slider";
    row.innerHTML = `<label for="smooth-${group}">smoothing ${group}</label>
      <input type="range" id="smooth-${group}" data-group="${group}" min="0" max="1" step="0.05">
      <span class="value" id="smooth-${group}-value"></span>`;
    box.appendChild(row);
    const input = row.querySelector("input");
    input.disabled = !enabled;
    input.addEventListener("pointerdown", () => { dragging = true; });
    input.addEventListener("input", () => { $(`smooth-${group}-value`).textContent = label(+input.value); });
    input.addEventListener("change", () => {
      dragging = false;
      ask({ smoothing: { [group]: +input.value } }, `smoothing ${group} ${label(+input.value)}`);
    });
  }
}

const label = (v) => (v === 0 ? "off" : v.toFixed(2));

function ask(changes, what) {
  asked = { version: null, what, at: performance.now() };
  $("control-status").textContent = `asked: ${what}`;
  send({ type: "control", set: changes });
}

function controlsReply(state) {
  if (asked && asked.version === null) asked.version = state.version;
  debug.controlsSeen = state.version;
  showControls(state);
  if (asked) {
    $("control-status").textContent = `accepted: ${asked.what} (change ${state.version}), waiting for the tracker…`;
  }
}

function showControls(state) {
  if (!dragging) {
    for (const [group, value] of Object.entries(state.smoothing)) {
      const input = $(`smooth-${group}`);
      if (input && document.activeElement !== input) input.value = value;
      const out = $(`smooth-${group}-value`);
      if (out) out.textContent = label(value);
    }
  }
  $("paused").checked = state.paused;
  $("mirror").checked = state.mirror;
}

function frame(message, withImage) {
  // A frame with an image waits for its JPEG to decode, so a newer text frame can overtake it: then
  // only its picture is still news.
  if (lastFrame && message.frame < lastFrame.frame) {
    if (withImage) draw();
    return;
  }
  debug.frames++;
  debug.lastFrame = message.frame;
  lastFrame = message;
  if (message.controls) showControls(message.controls);
  if (asked && asked.version !== null && message.applied && message.applied.version >= asked.version) {
    const ms = performance.now() - asked.at;
    $("control-status").textContent =
      `applied: ${asked.what} from frame ${message.applied.frame} (${ms.toFixed(0)} ms after asking)`;
    debug.appliedFrame = message.applied.frame;
    asked = null;
  }
  const s = message.stats;
  if (s) {
    $("stat-fps").textContent = s.fps.toFixed(1);
    $("stat-processing").textContent = `${s.processing_ms.toFixed(2)} ms`;
    $("stat-latency").textContent = `${s.latency_ms.toFixed(2)} ms`;
    $("stat-dropped").textContent = s.dropped_frames;
    showOutputs(s.outputs, message.controls && message.controls.paused);
  }
  $("frame-info").textContent = `frame ${message.frame}, ${message.size[0]}×${message.size[1]}`;
  showFaces(message.faces);
  // With the camera image, the overlay is drawn with the image's own frame so they always match.
  if (withImage || !showingImage()) draw();
}

function showingImage() {
  return $("show-image").checked && image !== null;
}

function showOutputs(outputs, paused) {
  const body = $("outputs").tBodies[0];
  body.textContent = "";
  for (const o of outputs) {
    const row = body.insertRow();
    row.insertCell().textContent = o.name;
    row.insertCell().textContent = !o.running ? "failed" : paused ? "paused" : "running";
    const d = row.insertCell(); d.className = "num"; d.textContent = o.datagrams;
    const e = row.insertCell(); e.className = "num"; e.textContent = o.errors;
  }
}

// --- faces ---------------------------------------------------------------------------------------------

function makeBars(container, labels, signed) {
  const bars = [];
  for (const name of labels) {
    const row = document.createElement("div");
    row.className = signed ? "bar signed" : "bar";
    row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span>
      <span class="value"></span>`;
    row.querySelector(".name").textContent = name;
    row.dataset.name = name;
    container.appendChild(row);
    bars.push({ fill: row.querySelector(".fill"), value: row.querySelector(".value"), row });
  }
  return bars;
}

function setBar(bar, v) {
  if (v === null || v === undefined) { bar.fill.style.transform = "scaleX(0)"; bar.value.textContent = "–"; return; }
  const signed = bar.row.classList.contains("signed");
  const c = Math.max(-1, Math.min(1, v));
  bar.fill.classList.toggle("neg", signed && c < 0);
  bar.fill.style.transform = `scaleX(${signed ? Math.abs(c) : Math.max(0, c)})`;
  bar.value.textContent = v.toFixed(2);
  bar.row.dataset.value = v;
}

function faceCard(id) {
  let card = faceCards.get(id);
  if (card) return card;
  const el = document.createElement("div");
  el.className = "face";
  el.dataset.id = id;
  el.innerHTML = `<h3>face <span class="id"></span> <span class="muted conf"></span></h3>
    <div class="numbers">
      <span>yaw <b class="yaw"></b></span><span>pitch <b class="pitch"></b></span><span>roll <b class="roll"></b></span>
      <span></span>
      <span>gaze left eye <b class="gaze-l"></b></span><span>right eye <b class="gaze-r"></b></span>
    </div>
    <h2>eyes open</h2><div class="bars eyes"></div>
    <h2>blendshapes</h2><div class="bars blend"></div>
    <h2>OpenSeeFace features</h2><div class="bars features"></div>`;
  el.querySelector(".id").textContent = id;
  $("faces").appendChild(el);
  card = {
    el,
    eyes: makeBars(el.querySelector(".eyes"), ["left", "right"], false),
    blend: makeBars(el.querySelector(".blend"), names.blend, false),
    features: makeBars(el.querySelector(".features"), names.features, true),
  };
  faceCards.set(id, card);
  return card;
}

// [towards the subject's left, up] in degrees -> words
const gazeText = ([h, v]) =>
  `${Math.abs(h).toFixed(0)}° ${h >= 0 ? "left" : "right"}, ${Math.abs(v).toFixed(0)}° ${v >= 0 ? "up" : "down"}`;
const deg = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(1)}°`);

function showFaces(faces) {
  $("no-face").style.display = faces.length ? "none" : "";
  const seen = new Set();
  for (const f of faces) {
    seen.add(f.id);
    const card = faceCard(f.id);
    const q = (sel) => card.el.querySelector(sel);
    q(".conf").textContent = `confidence ${f.conf.toFixed(2)}`;
    q(".yaw").textContent = deg(f.ypr && f.ypr[0]);
    q(".pitch").textContent = deg(f.ypr && f.ypr[1]);
    q(".roll").textContent = deg(f.ypr && f.ypr[2]);
    q(".gaze-l").textContent = gazeText(f.gaze[0]);
    q(".gaze-r").textContent = gazeText(f.gaze[1]);
    f.eyes.forEach((v, i) => setBar(card.eyes[i], v));
    card.blend.forEach((bar, i) => setBar(bar, f.blend ? f.blend[i] : null));
    card.features.forEach((bar, i) => setBar(bar, f.features[i]));
  }
  for (const [id, card] of faceCards) {
    if (!seen.has(id)) { card.el.remove(); faceCards.delete(id); }
  }
}

// --- the picture ---------------------------------------------------------------------------------------

function draw() {
  const source = showingImage() ? imageFrame : lastFrame;
  if (!source) return;
  const [w, h] = source.size;
  const width = Math.min(640, w);
  const height = Math.round(h * width / w);
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  const k = width / w;
  if (showingImage()) ctx.drawImage(image, 0, 0, width, height);
  else { ctx.fillStyle = "#0b0d10"; ctx.fillRect(0, 0, width, height); }
  if ($("show-mesh").checked) for (const f of source.faces) drawFace(f, k);
  debug.overlays++;
}

function line(x0, y0, x1, y1, colour, k, width) {
  ctx.strokeStyle = colour;
  ctx.lineWidth = width;
  ctx.beginPath();
  ctx.moveTo(x0 * k, y0 * k);
  ctx.lineTo(x1 * k, y1 * k);
  ctx.stroke();
}

// base64 of little-endian float32 x, y pairs -> Float32Array (decoded once per message)
function unpackPoints(text) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

function drawFace(f, k) {
  ctx.fillStyle = "#35f08f";
  if (typeof f.points === "string") f.points = unpackPoints(f.points);
  const p = f.points;
  for (let i = 0; i < p.length; i += 2) ctx.fillRect(p[i] * k - 0.75, p[i + 1] * k - 0.75, 1.5, 1.5);
  ctx.strokeStyle = "#20e0ff";
  ctx.lineWidth = 1.5;
  for (const [x, y, r] of f.irises) {
    ctx.beginPath();
    ctx.arc(x * k, y * k, Math.max(1.5, r * k), 0, 2 * Math.PI);
    ctx.stroke();
  }
  if (f.axes) {
    const [ox, oy] = f.axes.origin;
    const t = f.axes.tips;
    ["#ff4040", "#40ff40", "#4080ff"].forEach((colour, i) => line(ox, oy, t[2 * i], t[2 * i + 1], colour, k, 2.5));
  }
  if (f.rays) {
    const r = f.rays;
    for (let i = 0; i < r.length; i += 4) line(r[i], r[i + 1], r[i + 2], r[i + 3], "#ffe040", k, 1.5);
  }
  ctx.font = "12px system-ui, sans-serif";
  const at = [Math.max(2, f.box[0] * k), Math.max(12, f.box[1] * k - 4)];
  ctx.strokeStyle = "#000000";
  ctx.lineWidth = 3;
  ctx.strokeText(`id ${f.id}`, ...at);
  ctx.fillStyle = "#ffffff";
  ctx.fillText(`id ${f.id}`, ...at);
}

// --- controls ------------------------------------------------------------------------------------------

$("relearn").addEventListener("click", () => {
  asked = { version: null, what: "re-learn the neutral face", at: performance.now() };
  $("control-status").textContent = "asked: re-learn the neutral face";
  send({ type: "relearn" });
});
$("paused").addEventListener("change", (e) =>
  ask({ paused: e.target.checked }, e.target.checked ? "pause sending" : "resume sending"));
$("mirror").addEventListener("change", (e) =>
  ask({ mirror: e.target.checked }, e.target.checked ? "mirror the input" : "stop mirroring"));
$("show-image").addEventListener("change", (e) => {
  send({ type: "image", on: e.target.checked });
  if (!e.target.checked) { image = null; draw(); }
});
$("show-mesh").addEventListener("change", draw);

connect();
