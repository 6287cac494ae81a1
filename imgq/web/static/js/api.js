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

export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
  } catch (err) {
    throw new ApiError(0, "network", "The server cannot be reached. Check your connection and try again.");
  }
  noteServerTime(response);
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

// Upload with progress (fetch cannot report upload progress).
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
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

// Sizes are written as the server writes them (imgq/domain/units.py): binary units, 50 MiB.
export function formatBytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  if (unit === 0) return `${n} B`;
  const text = value >= 100 ? value.toFixed(0) : String(Number(value.toPrecision(3)));
  return `${text} ${units[unit]}`;
}

// "~40 s", "~3 min", "~1.5 h": as the server writes its estimates (imgq/ai/estimate.py).
export function formatEstimate(seconds) {
  if (seconds < 90) return `~${Math.round(seconds)} s`;
  if (seconds < 5400) return `~${Math.round(seconds / 60)} min`;
  return `~${(seconds / 3600).toFixed(1)} h`;
}

export function formatMegapixels(pixels) {
  const mp = pixels / 1e6;
  return `${mp >= 100 || mp === Math.round(mp) ? mp.toFixed(0) : String(Number(mp.toPrecision(3)))} MP`;
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
