// skymorph voting application: one expert names each consensus cluster.
// The server is the only source of truth: the page shows what votes.csv holds for this
// expert, and a choice is marked only once the server has confirmed it was written.
"use strict";

const state = { expert: null, clusters: [], types: [], votes: {}, index: 0 };
const $ = (id) => document.getElementById(id);

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `server answered ${response.status}`);
  }
  return body;
}

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function login(name) {
  name = name.replace(/\s+/g, " ").trim();
  if (!name) { $("login-error").textContent = "Enter your name."; return; }
  try {
    const data = await api(`/api/state?expert=${encodeURIComponent(name)}`);
    state.expert = name;
    state.clusters = data.clusters;
    state.types = data.types;
    state.votes = data.votes;
    localStorage.setItem("skymorph-expert", name);
    $("run-name").textContent = data.run;
    $("expert-label").textContent = name;
    $("login").hidden = true;
    $("who").hidden = false;
    $("workspace").hidden = false;
    buildTypes();
    buildList();
    const firstOpen = state.clusters.findIndex((c) => !state.votes[c.cluster]);
    show(firstOpen >= 0 ? firstOpen : 0);
    setStatus("");
  } catch (err) {
    $("login-error").textContent = `Could not load the clusters: ${err.message}`;
  }
}

function buildTypes() {
  const box = $("types");
  box.replaceChildren();
  state.types.forEach((t, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `type ${t.code}`;
    b.dataset.type = t.code;
    const kbd = document.createElement("kbd");
    kbd.textContent = String(i + 1);
    const small = document.createElement("small");
    small.textContent = t.name;
    b.append(kbd, document.createTextNode(t.code), small);
    b.addEventListener("click", () => vote(t.code));
    box.append(b);
  });
}

function buildList() {
  const list = $("cluster-list");
  list.replaceChildren();
  state.clusters.forEach((c, i) => {
    const li = document.createElement("li");
    li.dataset.cluster = c.cluster;
    const b = document.createElement("button");
    b.type = "button";
    const label = document.createElement("span");
    label.textContent = `Cluster ${c.cluster} (${c.size})`;
    const badge = document.createElement("span");
    badge.className = "badge";
    b.append(label, badge);
    b.addEventListener("click", () => show(i));
    li.append(b);
    list.append(li);
  });
  refreshList();
}

function refreshList() {
  let done = 0;
  for (const li of $("cluster-list").children) {
    const v = state.votes[li.dataset.cluster];
    const badge = li.querySelector(".badge");
    badge.textContent = v || "\u2013";
    badge.className = `badge ${v || "none"}`;
    li.classList.toggle("current", Number(li.dataset.cluster) === state.clusters[state.index]?.cluster);
    if (v) done += 1;
  }
  const total = state.clusters.length;
  $("progress").max = total;
  $("progress").value = done;
  $("progress-text").textContent = `${done} / ${total} clusters voted`;
}

function show(i) {
  if (!state.clusters.length) return;
  state.index = (i + state.clusters.length) % state.clusters.length;
  const c = state.clusters[state.index];
  $("cluster-title").textContent =
    `Cluster ${c.cluster} \u00b7 ${c.size} galaxies \u00b7 ${c.n_shown} shown`;
  const img = $("montage");
  img.src = c.png;
  img.dataset.cluster = c.cluster;
  const g = c.geometry;
  const cells = $("cells");
  cells.replaceChildren();
  c.cells.forEach((cell, k) => {
    const row = Math.floor(k / g.cols), col = k % g.cols;
    const x = g.gap + col * (g.cell + g.gap), y = g.header + g.gap + row * (g.cell + g.gap);
    const b = document.createElement("button");
    b.type = "button";
    b.className = "cell";
    b.dataset.stamp = cell.stamp;
    b.title = `galaxy ${cell.id}`;
    b.style.left = `${(100 * x) / g.width}%`;
    b.style.top = `${(100 * y) / g.height}%`;
    b.style.width = `${(100 * g.cell) / g.width}%`;
    b.style.height = `${(100 * g.cell) / g.height}%`;
    b.addEventListener("click", () => zoom(cell));
    cells.append(b);
  });
  markSelected();
  refreshList();
}

function markSelected() {
  const c = state.clusters[state.index];
  const v = c ? state.votes[c.cluster] : null;
  for (const b of $("types").children) b.classList.toggle("selected", b.dataset.type === v);
}

async function vote(code) {
  const c = state.clusters[state.index];
  if (!c || !state.expert) return;
  setStatus(`Saving cluster ${c.cluster} = ${code}\u2026`);
  try {
    const data = await api("/api/vote", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ expert: state.expert, cluster: c.cluster, type: code }),
    });
    state.votes = data.votes;
    setStatus(`Saved: cluster ${c.cluster} = ${code}`);
    markSelected();
    refreshList();
    // move on to the next cluster this expert has not named yet
    const n = state.clusters.length;
    for (let step = 1; step < n; step++) {
      const j = (state.index + step) % n;
      if (!state.votes[state.clusters[j].cluster]) { show(j); return; }
    }
  } catch (err) {
    setStatus(`Not saved: ${err.message}`, true);
  }
}

function zoom(cell) {
  $("zoom-img").src = `/galaxy/${cell.stamp}.png`;
  $("zoom-caption").textContent = `galaxy ${cell.id}`;
  $("zoom").hidden = false;
}

function closeZoom() { $("zoom").hidden = true; }

$("login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("expert-name").value); });
$("switch-expert").addEventListener("click", () => {
  state.expert = null;
  $("workspace").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  $("expert-name").value = "";
  $("expert-name").focus();
});
$("prev").addEventListener("click", () => show(state.index - 1));
$("next").addEventListener("click", () => show(state.index + 1));
$("zoom").addEventListener("click", closeZoom);
document.addEventListener("keydown", (e) => {
  if (!state.expert || e.target.tagName === "INPUT") return;
  if (e.key === "Escape") { closeZoom(); return; }
  if (!$("zoom").hidden) return;
  if (e.key === "ArrowLeft") show(state.index - 1);
  else if (e.key === "ArrowRight") show(state.index + 1);
  else if (/^[1-9]$/.test(e.key) && Number(e.key) <= state.types.length) vote(state.types[Number(e.key) - 1].code);
});
$("expert-name").value = localStorage.getItem("skymorph-expert") || "";
