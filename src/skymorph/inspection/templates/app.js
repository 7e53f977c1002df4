// skymorph voting application: one expert names each consensus cluster.
// The server is the only source of truth: the page shows what votes.csv holds for this
// expert, and a choice is marked only once the server has confirmed it was written.
// Every request carries the session's token (session.js, loaded first).
"use strict";

const state = { expert: null, clusters: [], types: [], votes: {}, index: 0, softening: null, cell: null,
                flags: {} };
const $ = (id) => document.getElementById(id);

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function login(name) {
  name = name.replace(/\s+/g, " ").trim();
  if (!name) { $("login-error").textContent = "Enter your name."; return; }
  if (!token) {
    $("login-error").textContent =
      "This page needs the address printed by `skymorph inspect serve` (it ends in ?token=\u2026).";
    return;
  }
  try {
    const data = await api(`/api/state?expert=${encodeURIComponent(name)}`);
    state.expert = name;
    state.clusters = data.clusters;
    state.types = data.types;
    state.votes = data.votes;
    state.softening = data.softening;
    state.flags = data.flags || {};
    localStorage.setItem("skymorph-expert", name);
    $("run-name").textContent = data.run;
    $("expert-label").textContent = name;
    $("login").hidden = true;
    $("who").hidden = false;
    $("workspace").hidden = false;
    $("login-error").textContent = "";
    buildTypes();
    buildList();
    const firstOpen = state.clusters.findIndex((c) => !state.votes[c.cluster]);
    show(firstOpen >= 0 ? firstOpen : 0);
    setStatus("");
  } catch (err) {
    $("login-error").textContent = `Could not load the clusters: ${err.message}`;
  }
}

function typeIndex(code) { return state.types.findIndex((t) => t.code === code); }

function buildTypes() {
  const box = $("types");
  box.replaceChildren();
  state.types.forEach((t, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `type t${i}`;
    b.dataset.type = t.code;
    const kbd = document.createElement("kbd");
    if (i < 9) kbd.textContent = String(i + 1);
    const small = document.createElement("small");
    small.textContent = t.name;
    b.append(kbd, document.createTextNode(t.code), small);
    b.addEventListener("click", () => vote(t.code));
    box.append(b);
  });
  const n = Math.min(state.types.length, 9);
  $("type-keys").textContent = n > 1 ? `1\u2013${n}` : "1";
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
    label.textContent = `Cluster ${clusterNumber(c)} (${c.size})`;
    li.title = `catalog cluster ${c.cluster}`;
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
    badge.className = v ? `badge t${typeIndex(v)}` : "badge none";
    li.classList.toggle("current", Number(li.dataset.cluster) === state.clusters[state.index]?.cluster);
    if (v) done += 1;
  }
  const total = state.clusters.length;
  $("progress").max = total;
  $("progress").value = done;
  $("progress-text").textContent = `${done} / ${total} clusters voted`;
  const allDone = total > 0 && done === total;
  $("all-done").hidden = !allDone;
  $("all-done").textContent = allDone
    ? `Done: ${state.expert} has voted on every cluster (${total} of ${total}). ` +
      "All votes are saved; you can still change any of them."
    : "";
}

function show(i) {
  if (!state.clusters.length) return;
  state.index = (i + state.clusters.length) % state.clusters.length;
  const c = state.clusters[state.index];
  $("cluster-title").textContent =
    `Cluster ${clusterNumber(c)} \u00b7 ${c.size} galaxies \u00b7 ${c.n_shown} shown`;
  $("cluster-title").title = `catalog cluster ${c.cluster}`;
  const img = $("montage");
  img.src = withToken(c.png);
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
    markFlagged(b, cell);
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
  setStatus(`Saving cluster ${clusterNumber(c)} = ${code}\u2026`);
  try {
    const data = await api("/api/vote", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ expert: state.expert, cluster: c.cluster, type: code }),
    });
    state.votes = data.votes;
    setStatus(`Saved: cluster ${clusterNumber(c)} = ${code}`);
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

// --- zoomed view: galaxy id, scale bar, live stretch --------------------------------------------

// slider position 0..100 <-> asinh softening, log scale from the largest (nearly linear)
// to the smallest (strongest asinh) the server accepts
function softeningAt(pos) {
  const lo = Math.log10(state.softening.min), hi = Math.log10(state.softening.max);
  return Math.pow(10, hi - (pos / 100) * (hi - lo));
}

function positionOf(softening) {
  const lo = Math.log10(state.softening.min), hi = Math.log10(state.softening.max);
  return Math.round((100 * (hi - Math.log10(softening))) / (hi - lo));
}

function niceLength(target) {
  const p = Math.pow(10, Math.floor(Math.log10(target)));
  for (const m of [5, 2, 1]) if (m * p <= target) return m * p;
  return p;
}

function drawScaleBar(cell) {
  // about a quarter of the stamp, in arcsec where the pixel scale is known, else in pixels
  const side = cell.side;
  let px, label;
  if (cell.arcsec_per_px) {
    const arcsec = niceLength((side / 4) * cell.arcsec_per_px);
    px = arcsec / cell.arcsec_per_px;
    label = `${arcsec}\u2033 (${Math.round(px)} px)`;
  } else {
    px = niceLength(side / 4);
    label = `${px} px`;
  }
  $("scale-bar-line").style.width = `${(100 * px) / side}%`;
  $("scale-bar-line").dataset.px = String(px);
  $("scale-bar-label").textContent = label;
}

function zoomSrc(cell) {
  if (cell.colour) return withToken(`/colour/${cell.stamp}.png`);  // a colour input, in its colours
  let path = `/galaxy/${cell.stamp}.png`;
  if (cell.stretch === "asinh") path += `?softening=${softeningAt(Number($("zoom-stretch").value)).toPrecision(3)}`;
  return withToken(path);
}

let stretchTimer = null;
function onStretch() {
  clearTimeout(stretchTimer);
  stretchTimer = setTimeout(() => { if (state.cell) $("zoom-img").src = zoomSrc(state.cell); }, 60);
}

function zoom(cell) {
  state.cell = cell;
  const slider = $("zoom-stretch");
  const adjustable = cell.stretch === "asinh";
  slider.disabled = !adjustable;
  $("zoom-stretch-reset").disabled = !adjustable;
  if (slider.dataset.touched !== "1") slider.value = String(positionOf(state.softening.default));
  $("stretch-note").textContent = adjustable
    ? ""
    : "This image was display-scaled (JPEG/PNG) before ingest: shown as it is.";
  $("zoom-img").src = zoomSrc(cell);
  $("zoom-id").textContent = `galaxy ${cell.id}`;
  $("zoom-caption").textContent = `(stamp ${cell.stamp}, ${cell.side} \u00d7 ${cell.side} px)`;
  drawScaleBar(cell);
  showFlag(cell);
  clearSimilar();
  $("zoom").hidden = false;
}

function closeZoom() { $("zoom").hidden = true; state.cell = null; }

// --- cluster numbers as the expert sees them, and flags on single galaxies ----------------------

// 1..n over the consensus clusters, without the gaps of the catalog's cluster ids
function clusterNumber(c) { return c.number ?? c.cluster; }

function markFlagged(button, cell) {
  const flagged = Object.prototype.hasOwnProperty.call(state.flags, cell.id);
  button.classList.toggle("flagged", flagged);
  button.title = flagged ? `galaxy ${cell.id} (flagged: ${state.flags[cell.id] || "no comment"})`
                         : `galaxy ${cell.id}`;
}

function showFlag(cell) {
  const flagged = Object.prototype.hasOwnProperty.call(state.flags, cell.id);
  $("flag-check").checked = flagged;
  $("flag-comment").value = flagged ? state.flags[cell.id] : "";
  $("flag-status").textContent = "";
  $("flag-status").className = "";
}

async function saveFlag() {
  const cell = state.cell;
  if (!cell || !state.expert) return;
  const flagged = $("flag-check").checked;
  try {
    const data = await api("/api/flag", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ expert: state.expert, stamp: cell.stamp, comment: $("flag-comment").value,
                             flagged }),
    });
    state.flags = data.flags;
    $("flag-status").textContent = flagged ? `Flag saved: galaxy ${cell.id}` : `Flag removed: galaxy ${cell.id}`;
    $("flag-status").className = "";
    for (const b of $("cells").children) {
      const c = state.clusters[state.index].cells.find((x) => String(x.stamp) === b.dataset.stamp);
      if (c) markFlagged(b, c);
    }
  } catch (err) {
    $("flag-status").textContent = `Not saved: ${err.message}`;
    $("flag-status").className = "error";
  }
}

$("flag-save").addEventListener("click", saveFlag);
$("flag-comment").addEventListener("input", () => { if ($("flag-comment").value.trim()) $("flag-check").checked = true; });

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
$("zoom").addEventListener("click", (e) => { if (e.target === $("zoom")) closeZoom(); });
$("zoom-close").addEventListener("click", closeZoom);
$("zoom-stretch").addEventListener("input", () => { $("zoom-stretch").dataset.touched = "1"; onStretch(); });
$("zoom-stretch-reset").addEventListener("click", () => {
  $("zoom-stretch").value = String(positionOf(state.softening.default));
  $("zoom-stretch").dataset.touched = "0";
  onStretch();
});
document.addEventListener("keydown", (e) => {
  if (!state.expert || e.target.tagName === "INPUT") {
    if (e.key === "Escape") closeZoom();
    return;
  }
  if (e.key === "Escape") { closeZoom(); return; }
  if (!$("zoom").hidden) return;
  if (e.key === "ArrowLeft") show(state.index - 1);
  else if (e.key === "ArrowRight") show(state.index + 1);
  else if (/^[1-9]$/.test(e.key) && Number(e.key) <= state.types.length) vote(state.types[Number(e.key) - 1].code);
});

// --- "more like this": the nearest galaxies of the zoomed one ------------------------------------

function clearSimilar() {
  $("similar-panel").hidden = true;
  $("similar-grid").replaceChildren();
}

async function moreLikeThis() {
  const cell = state.cell;
  if (!cell) return;
  $("similar-title").textContent = "Searching\u2026";
  $("similar-panel").hidden = false;
  try {
    const data = await api(`/api/similar?stamp=${cell.stamp}&n=12`);
    if (state.cell !== cell) return;
    $("similar-title").textContent = `The ${data.neighbours.length} galaxies most like ${data.id} (${data.metric} distance):`;
    const grid = $("similar-grid");
    grid.replaceChildren();
    for (const n of data.neighbours) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "neighbour";
      b.dataset.id = n.id;
      b.title = `galaxy ${n.id} \u00b7 distance ${n.distance.toPrecision(3)}` +
        (n.cluster !== undefined && n.cluster !== null ? ` \u00b7 cluster ${n.cluster}` : "");
      const img = document.createElement("img");
      img.alt = `galaxy ${n.id}`;
      img.src = withToken(`/galaxy/${n.stamp}.png`);
      b.append(img);
      b.addEventListener("click", () => zoom(n));
      grid.append(b);
    }
  } catch (err) {
    $("similar-title").textContent = `No neighbours: ${err.message}`;
  }
}

$("more-like-this").addEventListener("click", moreLikeThis);

// --- subclasses (skymorph subdivide): experts name them with special types or free text ----------

const subclassState = { data: null };

async function showSubclasses() {
  if (!state.expert) return;
  try {
    subclassState.data = await api(`/api/subclasses?expert=${encodeURIComponent(state.expert)}`);
  } catch (err) {
    setStatus(`Could not load the subclasses: ${err.message}`, true);
    return;
  }
  $("workspace").hidden = true;
  $("subclasses").hidden = false;
  renderSubclasses();
}

function renderSubclasses() {
  const data = subclassState.data;
  const list = $("subclass-list");
  list.replaceChildren();
  if (!data.groups.length) {
    const p = document.createElement("p");
    p.textContent = "No subclasses yet: run `skymorph subdivide RUN --cluster C` first.";
    list.append(p);
    return;
  }
  for (const g of data.groups) {
    const h = document.createElement("h3");
    h.textContent = `${g.by} ${g.group} \u00b7 ${g.n_members} galaxies`;
    list.append(h);
    for (const s of g.subclusters) {
      const box = document.createElement("div");
      box.className = "subclass";
      box.dataset.subcluster = s.subcluster;
      const title = document.createElement("p");
      const current = data.votes[s.subcluster];
      title.textContent = `subclass ${s.subcluster} \u00b7 ${s.size} galaxies` + (current ? ` \u00b7 your name: ${current}` : "");
      const img = document.createElement("img");
      img.alt = `montage of subclass ${s.subcluster}`;
      img.src = withToken(s.png);
      const buttons = document.createElement("div");
      for (const t of data.special_types) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "special" + (current === t ? " selected" : "");
        b.textContent = t;
        b.addEventListener("click", () => voteSubclass(s.subcluster, t));
        buttons.append(b);
      }
      const input = document.createElement("input");
      input.maxLength = 40;
      input.placeholder = "or your own name";
      input.setAttribute("aria-label", `name of subclass ${s.subcluster}`);
      const save = document.createElement("button");
      save.type = "button";
      save.textContent = "save";
      save.addEventListener("click", () => voteSubclass(s.subcluster, input.value));
      buttons.append(input, save);
      box.append(title, buttons, img);
      list.append(box);
    }
  }
}

async function voteSubclass(subcluster, label) {
  try {
    const data = await api("/api/subclass-vote", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ expert: state.expert, subcluster, label }),
    });
    subclassState.data.votes = data.votes;
    $("subclass-status").textContent = `Saved: subclass ${subcluster} = ${data.vote.type}`;
    $("subclass-status").className = "";
    renderSubclasses();
  } catch (err) {
    $("subclass-status").textContent = `Not saved: ${err.message}`;
    $("subclass-status").className = "error";
  }
}

$("show-subclasses").addEventListener("click", showSubclasses);
$("subclasses-close").addEventListener("click", () => {
  $("subclasses").hidden = true;
  $("workspace").hidden = false;
});

$("expert-name").value = localStorage.getItem("skymorph-expert") || "";
