// skymorph's voting pages (app.js, refine.js): the session's token and the one way to ask the server.
// Every request carries the token (from the ?token= of the address the server printed).
"use strict";

const token = (() => {
  const fromUrl = new URLSearchParams(window.location.search).get("token");
  if (fromUrl) {
    sessionStorage.setItem("skymorph-token", fromUrl);
    // keep the secret out of the address bar (and of screenshots and bookmarks)
    window.history.replaceState(null, "", window.location.pathname);
    return fromUrl;
  }
  return sessionStorage.getItem("skymorph-token") || "";
})();

function withToken(path) {
  return `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = Object.assign({ "X-Skymorph-Token": token }, opts.headers || {});
  opts.credentials = "same-origin";
  const response = await fetch(path, opts);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `server answered ${response.status}`);
  }
  return body;
}
