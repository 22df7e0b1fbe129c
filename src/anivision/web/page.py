"""The web app's one page: plain HTML with its CSS and JavaScript inline.

Nothing is loaded from anywhere but the app itself (no CDN, no web font, no framework; images
arrive as data URIs), and the app's Content-Security-Policy forbids it anyway, so the page works
on a machine with no network. Text from the server is set with ``textContent``, never as HTML.
"""

from __future__ import annotations

#: ``Content-Security-Policy`` sent with every answer: only this origin, inline code, data: images.
CSP = (
    "default-src 'none'; connect-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>anivision</title>
<style>
  :root { --fg:#1d1d24; --muted:#676775; --line:#dcdce4; --accent:#3b5bdb; --bad:#c92a2a; --bg:#f6f6f9; }
  * { box-sizing: border-box; }
  body { margin:0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
  header { padding:14px 24px; background:#fff; border-bottom:1px solid var(--line); display:flex; gap:18px; align-items:baseline; flex-wrap:wrap; }
  header h1 { margin:0; font-size:20px; }
  #models { color:var(--muted); font-size:13px; }
  main { padding:18px 24px; max-width:1280px; }
  #drop { border:2px dashed #aab; border-radius:10px; background:#fff; padding:18px; display:flex; gap:14px; align-items:center; flex-wrap:wrap; }
  #drop.over { border-color:var(--accent); background:#eef2ff; }
  #drop p { margin:0; color:var(--muted); flex:1 1 260px; }
  button { font:inherit; padding:7px 16px; border-radius:6px; border:1px solid var(--accent); background:var(--accent); color:#fff; cursor:pointer; }
  button:disabled { opacity:.5; cursor:default; }
  #status { margin:12px 0; color:var(--muted); min-height:1.4em; }
  #error { display:none; margin:12px 0; padding:10px 14px; border-radius:6px; background:#fff0f0; border:1px solid #f3b8b8; color:var(--bad); }
  .image { margin:18px 0; }
  .image h2 { font-size:16px; margin:0 0 8px; }
  .image h2 small { color:var(--muted); font-weight:normal; }
  .face { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px; margin:10px 0; display:flex; gap:18px; flex-wrap:wrap; align-items:flex-start; }
  .face > div { min-width:180px; }
  .face h3 { font-size:13px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); margin:0 0 6px; }
  img.crop, img.overlay { width:160px; height:auto; border-radius:6px; display:block; background:#eee; }
  .bars { border-collapse:collapse; font-size:13px; }
  .bars td { padding:1px 6px 1px 0; white-space:nowrap; }
  .bar { height:10px; background:var(--accent); border-radius:3px; }
  .who { font-size:18px; font-weight:600; }
  .who.unknown { color:var(--muted); font-style:italic; }
  .similar { display:flex; gap:8px; flex-wrap:wrap; max-width:560px; }
  .similar figure { margin:0; width:100px; font-size:11px; color:var(--muted); }
  .similar img { width:100px; height:100px; object-fit:cover; border-radius:4px; display:block; }
  .note { color:var(--muted); font-size:13px; }
</style>
</head>
<body>
<header><h1>anivision</h1><span id="models">loading&hellip;</span></header>
<main>
  <form id="form">
    <div id="drop">
      <input id="files" name="files" type="file" accept="image/*" multiple>
      <button id="go" type="submit">Analyse</button>
      <p>Choose, drop or paste (Ctrl+V) one or more images: face crops or whole illustrations.
         Faces are found and each is labelled.</p>
    </div>
  </form>
  <div id="error" role="alert"></div>
  <div id="status" aria-live="polite"></div>
  <div id="results"></div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let pasted = [];
let limits = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.appendChild(c);
  return e;
}
function pct(p) { return (100 * p).toFixed(1) + "%"; }
function showError(msg) { const e = $("error"); e.textContent = msg; e.style.display = msg ? "block" : "none"; }

async function info() {
  try {
    const r = await fetch("api/info");
    const j = await r.json();
    const m = j.models, parts = [];
    limits = j.limits;
    for (const c of m.classifiers) parts.push(c.name + " (" + c.classes + " classes)");
    if (m.gallery) parts.push("gallery of " + m.gallery.characters + " characters");
    if (m.retrieval) parts.push("style search over " + m.retrieval.gallery_images + " images");
    $("models").textContent = parts.length ? "models: " + parts.join(" · ") : "no model loaded";
    if (!parts.length) showError(j.no_model_message);
  } catch (e) { $("models").textContent = "server not reachable"; }
}

function classifierBlock(c) {
  const table = el("table", {class: "bars"});
  for (const t of c.top) {
    const bar = el("div", {class: "bar"}); bar.style.width = Math.max(2, Math.round(120 * t.prob)) + "px";
    table.appendChild(el("tr", {}, el("td", {class: "label", text: t.label}), el("td", {text: pct(t.prob)}), el("td", {}, bar)));
  }
  const box = el("div", {class: "classifier", "data-testid": "classifier"}, el("h3", {text: c.name}), table);
  if (c.overlay) {
    box.appendChild(el("img", {class: "overlay", src: c.overlay, alt: "Grad-CAM++ of " + c.top[0].label, title: "Grad-CAM++: where the model looked for " + c.top[0].label}));
  }
  return box;
}

function faceCard(f, i) {
  const card = el("div", {class: "face", "data-testid": "face"});
  const where = f.box ? "face " + (i + 1) + " at " + f.box[0] + "," + f.box[1] + " (" + f.box[2] + "×" + f.box[3] + ")" : "whole image (no face found)";
  card.appendChild(el("div", {}, el("h3", {text: where}), el("img", {class: "crop", src: f.crop, alt: where})));
  for (const c of f.classifiers) card.appendChild(classifierBlock(c));
  if (f.identity) {
    const who = el("div", {class: "who" + (f.identity.known ? "" : " unknown"), "data-testid": "identity", text: f.identity.label});
    const near = f.identity.top.map((t) => t.label + " " + t.distance.toFixed(3)).join(", ");
    card.appendChild(el("div", {}, el("h3", {text: "who"}), who, el("div", {class: "note", text: "nearest: " + near})));
  }
  if (f.similar.length) {
    const row = el("div", {class: "similar"});
    for (const s of f.similar) {
      const fig = el("figure", {"data-testid": "similar"});
      if (s.thumb) fig.appendChild(el("img", {src: s.thumb, alt: s.path}));
      fig.appendChild(el("figcaption", {text: s.work + " · " + s.dist.toFixed(3)}));
      row.appendChild(fig);
    }
    card.appendChild(el("div", {}, el("h3", {text: "similar style"}), row));
  }
  return card;
}

function render(answer) {
  const out = $("results"); out.textContent = "";
  for (const im of answer.images) {
    const sec = el("section", {class: "image", "data-testid": "image"});
    sec.appendChild(el("h2", {}, document.createTextNode(im.name + " "),
      el("small", {text: im.width + "×" + im.height + " px, " + im.faces.length + " face(s)"})));
    im.faces.forEach((f, i) => sec.appendChild(faceCard(f, i)));
    out.appendChild(sec);
  }
}

async function send(files) {
  if (!files.length) { showError("choose one or more images first"); return; }
  const bytes = files.reduce((n, f) => n + f.size, 0);
  if (limits && bytes > limits.max_upload_bytes) {  // the server would refuse it too, after the upload
    showError((bytes / 1e6).toFixed(1) + " MB chosen: at most " + (limits.max_upload_bytes / 1e6).toFixed(1) + " MB per request");
    return;
  }
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name || "pasted.png");
  showError(""); $("go").disabled = true; $("status").textContent = "analysing " + files.length + " image(s)…";
  const t0 = performance.now();
  try {
    const r = await fetch("api/analyse", {method: "POST", body: form});
    let j;
    try { j = await r.json(); } catch (e) { j = {error: "the server answered " + r.status + " without a message"}; }
    if (!r.ok || j.error) { showError(j.error || ("error " + r.status)); $("status").textContent = ""; return; }
    render(j);
    $("status").textContent = "done in " + ((performance.now() - t0) / 1000).toFixed(2) + " s";
  } catch (e) {
    showError("could not reach the server: " + e); $("status").textContent = "";
  } finally { $("go").disabled = false; }
}

$("form").addEventListener("submit", (ev) => { ev.preventDefault(); send([...$("files").files, ...pasted]); pasted = []; });
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); send([...ev.dataTransfer.files]); });
document.addEventListener("paste", (ev) => {
  const files = [...(ev.clipboardData || {}).files || []];
  if (files.length) { ev.preventDefault(); send(files); }
});
info();
</script>
</body>
</html>
"""
