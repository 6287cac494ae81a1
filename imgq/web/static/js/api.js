// Talking to the imgq API, and small formatting helpers shared by the pages.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(response) {
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : message;
    }
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(response.status, code, message);
}

export let clockSkew = 0; // server time minus browser time, in ms

function noteServerTime(response) {
  const date = response.headers.get("date");
  if (!date) return;
  const skew = new Date(date).getTime() - Date.now();
  clockSkew = Math.abs(skew) > 2000 ? skew : 0;
}

// -- the API key, for a server run with IMGQ_AUTH=keys --------------------------------------
// The key is kept in this browser (localStorage) and sent as a bearer token. The page asks
// for it the first time the server answers 401, then repeats the request.
const KEY_STORE = "imgq.apiKey";
const KEY_TRIES = 5;

export function apiKey() {
  try { return localStorage.getItem(KEY_STORE) || ""; } catch (_) { return ""; }
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

let keyPrompt = null;

// Show the key form with the server's message; resolves once a key is entered.
function askForKey(message) {
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve) => {
    const form = document.getElementById("key-form");
    const input = document.getElementById("api-key");
    document.getElementById("key-message").textContent = message;
    form.hidden = false;
    input.focus();
    const onSubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      try { localStorage.setItem(KEY_STORE, key); } catch (_) { /* private mode: this page only */ }
      form.removeEventListener("submit", onSubmit);
      form.hidden = true;
      input.value = "";
      keyPrompt = null;
      resolve(key);
    };
    form.addEventListener("submit", onSubmit);
  });
  return keyPrompt;
}

export async function api(path, options = {}) {
  for (let attempt = 1; ; attempt += 1) {
    let response;
    try {
      response = await fetch(path, {
        ...options, headers: { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) },
      });
    } catch (err) {
      throw new ApiError(0, "network", "The server cannot be reached. Check your connection and try again.");
    }
    noteServerTime(response);
    if (response.status === 401 && attempt < KEY_TRIES) {
      await askForKey((await errorOf(response)).message);
      continue;
    }
    if (!response.ok) throw await errorOf(response);
    return response.status === 204 ? null : response.json();
  }
}

// An image or file of the API as a blob: URL, fetched with the key (an <img> or a link
// cannot send one).
export async function blobUrl(path) {
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) throw await errorOf(response);
  return URL.createObjectURL(await response.blob());
}

// Show an API image in an <img>: straight from its URL, or through a blob: URL with a key.
export function showImage(img, path) {
  if (!apiKey()) { img.src = path; return; }
  blobUrl(path).then((url) => { img.src = url; },
    () => img.dispatchEvent(new Event("error")));
}

// With a key, links to the API (downloads, the ZIP, "open") fetch with it instead.
document.addEventListener("click", async (event) => {
  const link = event.target.closest && event.target.closest("a[href]");
  if (!link || !apiKey()) return;
  const target = new URL(link.href, location.href);
  if (target.origin !== location.origin || !target.pathname.startsWith("/v1/")) return;
  event.preventDefault();
  const url = await blobUrl(target.pathname + target.search);
  const save = el("a", { href: url, download: link.getAttribute("download") ?? null,
    target: link.hasAttribute("download") ? null : "_blank" });
  document.body.append(save);
  save.click();
  setTimeout(() => { save.remove(); URL.revokeObjectURL(url); }, 60000);
});

// Upload with progress (fetch cannot report upload progress).
export async function upload(path, form, onProgress) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await uploadOnce(path, form, onProgress);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401 || attempt >= KEY_TRIES) throw err;
      await askForKey(err.message);
    }
  }
}

function uploadOnce(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
    const key = apiKey();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new ApiError(0, "network", "The upload failed: the server cannot be reached."));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* keep null */ }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      const err = body && body.error;
      reject(new ApiError(xhr.status, err ? err.code : "http_error",
        err ? err.message : `The server answered ${xhr.status} ${xhr.statusText}`));
    };
    xhr.send(form);
  });
}

export function formatBytes(n) {
  if (n == null) return "";
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)} KB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} MB`;
  return `${(n / 1e9).toFixed(1)} GB`;
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), r = s % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(r).padStart(2, "0")}s`;
  return `${r}s`;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

const RECENT_KEY = "imgq.recentJobs";

export function recentJobs() {
  try { return JSON.parse(localStorage.getItem(RECENT_KEY) || "[]"); } catch (_) { return []; }
}

export function rememberJob(id) {
  const ids = [id, ...recentJobs().filter((x) => x !== id)].slice(0, 20);
  try { localStorage.setItem(RECENT_KEY, JSON.stringify(ids)); } catch (_) { /* private mode */ }
}
