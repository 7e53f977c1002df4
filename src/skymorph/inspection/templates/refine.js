// skymorph "teach single galaxies": an expert types the galaxies the classifier is least sure of.
// Like app.js, the server is the only source of truth: an answer is marked once the server saved it.
"use strict";

const teach = { expert: null, items: [], types: [], answers: {}, counts: null };
const byId = (id) => document.getElementById(id);

function refineStatus(text, isError) {
  const el = byId("refine-status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function startTeaching(name) {
  name = name.replace(/\s+/g, " ").trim();
  if (!name) { byId("login-error").textContent = "Enter your name."; return; }
  if (!token) {
    byId("login-error").textContent =
      "This page needs the address printed by `skymorph inspect refine` (it ends in ?token=\u2026).";
    return;
  }
  teach.expert = name;
  localStorage.setItem("skymorph-expert", name);
  try {
    await loadPage();
    byId("expert-label").textContent = name;
    byId("login").hidden = true;
    byId("who").hidden = false;
    byId("teach").hidden = false;
    byId("login-error").textContent = "";
  } catch (err) {
    byId("login-error").textContent = `Could not load the galaxies: ${err.message}`;
  }
}

async function loadPage() {
  refineStatus("Picking the galaxies the classifier is least sure of\u2026");
  const data = await api(`/api/refine/page?expert=${encodeURIComponent(teach.expert)}`);
  teach.items = data.items;
  teach.types = data.types;
  teach.answers = {};
  teach.counts = { taught: data.n_taught_by_you, looked: data.n_looked_at_by_you };
  byId("run-name").textContent = data.run;
  byId("cards").dataset.reason = data.reason;
  buildCards();
  refreshCounts();
  refineStatus(data.items.length ? "" : "Every galaxy has been looked at.");
}

function buildCards() {
  const box = byId("cards");
  box.replaceChildren();
  for (const item of teach.items) {
    const card = document.createElement("figure");
    card.className = "card";
    card.dataset.row = item.row;
    const img = document.createElement("img");
    img.src = withToken(item.png);
    img.alt = `galaxy ${item.id}`;
    const caption = document.createElement("figcaption");
    caption.textContent = `galaxy ${item.id}`;
    const guess = document.createElement("p");
    guess.className = "guess";
    guess.textContent = item.predicted
      ? `classifier: ${item.predicted} (p ${item.p_predicted.toFixed(2)}, margin ${item.margin.toFixed(2)})`
      : "drawn at random (no classifier yet)";
    const answers = document.createElement("div");
    answers.className = "answers";
    for (const code of [...teach.types.map((t) => t.code), "skip"]) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.type = code;
      if (code === "skip") b.className = "skip";
      b.textContent = code;
      b.addEventListener("click", () => answer(item, code));
      answers.append(b);
    }
    card.append(img, caption, guess, answers);
    box.append(card);
  }
}

function refreshCounts() {
  const done = Object.keys(teach.answers).length;
  byId("teach-counts").textContent =
    `${done} / ${teach.items.length} on this page \u00b7 ${teach.counts.taught} galaxies typed by you, ` +
    `${teach.counts.looked} looked at`;
  const pageDone = teach.items.length > 0 && done === teach.items.length;
  byId("page-done").hidden = !pageDone;
}

async function answer(item, code) {
  refineStatus(`Saving galaxy ${item.id} = ${code}\u2026`);
  try {
    await api("/api/refine/label", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ expert: teach.expert, row: item.row, type: code }),
    });
    const before = teach.answers[item.row];
    if (before === undefined) teach.counts.looked += 1;
    if (before !== undefined && before !== "skip") teach.counts.taught -= 1;
    if (code !== "skip") teach.counts.taught += 1;
    teach.answers[item.row] = code;
    const card = document.querySelector(`.card[data-row='${item.row}']`);
    card.classList.add("answered");
    card.dataset.answer = code;
    for (const b of card.querySelectorAll(".answers button")) b.classList.toggle("selected", b.dataset.type === code);
    refreshCounts();
    refineStatus(`Saved: galaxy ${item.id} = ${code}`);
  } catch (err) {
    refineStatus(`Not saved: ${err.message}`, true);
  }
}

byId("login-form").addEventListener("submit", (e) => { e.preventDefault(); startTeaching(byId("expert-name").value); });
byId("next-page").addEventListener("click", async () => {
  try { await loadPage(); } catch (err) { refineStatus(`Could not load the next page: ${err.message}`, true); }
});
byId("to-clusters").addEventListener("click", (e) => {
  // keep the token: the clusters page reads it from the address
  e.preventDefault();
  window.location.href = withToken("/");
});
byId("expert-name").value = localStorage.getItem("skymorph-expert") || "";
