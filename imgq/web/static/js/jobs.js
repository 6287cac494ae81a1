// The jobs page: a card per image, live over Server-Sent Events, polling as a fallback.

import {
  api, apiKey, ApiError, clockSkew, el, formatBytes, formatDuration, formatEstimate, recentJobs, showImage,
} from "./api.js";

const $ = (sel, root = document) => root.querySelector(sel);
const ACTIVE = new Set(["queued", "running"]);
const LABELS = {
  queued: "Waiting", running: "Processing", succeeded: "Done", failed: "Failed",
  cancelled: "Cancelled", expired: "Expired", partial: "Partly done",
};
const POLL_MS = 1500;
const params = new URLSearchParams(location.search);
const forcePolling = params.get("transport") === "poll";
const views = new Map(); // job id -> JobView

class JobView {
  constructor(id) {
    this.id = id;
    this.job = null;
    this.source = null;
    this.polling = false;
    this.node = document.importNode($("#job-tpl").content, true).firstElementChild;
    this.node.dataset.job = id;
    $(".job-id", this.node).textContent = id.slice(0, 8);
    $(".job-id", this.node).title = id;
    $(".cancel", this.node).addEventListener("click", () => this.cancel());
    this.cards = new Map();
  }

  render(job) {
    this.job = job;
    const n = this.node;
    n.dataset.status = job.status;
    const badge = $(".job-status", n);
    badge.textContent = LABELS[job.status] || job.status;
    badge.dataset.status = job.status;
    $(".job-pipeline", n).textContent = job.pipeline.map(describeStep).join(" → ");
    setProgress($(".job-progress", n), job.progress, `Job ${job.id.slice(0, 8)}`);
    const zip = $(".zip", n);
    const done = (job.counts.succeeded || 0) > 0 && !job.data_removed;
    zip.hidden = !done;
    zip.href = done ? job.urls.archive : "";
    const cancel = $(".cancel", n);
    cancel.hidden = !ACTIVE.has(job.status);
    cancel.disabled = job.cancel_requested;
    cancel.textContent = job.cancel_requested ? "Cancelling…" : "Cancel";
    for (const item of job.items) this.renderItem(item);
    this.tick();
  }

  renderItem(item) {
    let card = this.cards.get(item.index);
    if (!card) {
      card = new Card(this, item);
      this.cards.set(item.index, card);
      $(".cards", this.node).append(card.node);
    }
    card.render(item, this.job);
  }

  // The summary event carries the job's fields, not its items.
  renderSummary(summary) {
    if (!this.job) return;
    this.render({ ...this.job, ...summary, items: this.job.items });
  }

  updateItem(item) {
    if (!this.job) return;
    const items = this.job.items.map((i) => (i.index === item.index ? item : i));
    this.job = { ...this.job, items };
    this.renderItem(item);
    updateTitle();
  }

  tick() {
    const expiry = $(".expiry", this.node);
    if (!this.job) return;
    if (this.job.data_removed) {
      expiry.textContent = "Expired: files removed";
      expiry.dataset.state = "expired";
      return;
    }
    const left = (new Date(this.job.expires_at).getTime() - (Date.now() + clockSkew)) / 1000;
    expiry.textContent = left > 0 ? `Expires in ${formatDuration(left)}` : "Expired";
    expiry.dataset.state = left <= 0 ? "expired" : left < 300 ? "soon" : "";
    if (left <= 0) {
      $(".zip", this.node).hidden = true;
      for (const card of this.cards.values()) card.expire();
    }
  }

  listen() {
    // EventSource cannot send a key: with one, the page polls instead.
    if (forcePolling || !window.EventSource || apiKey()) return this.poll();
    let failures = 0;
    const source = new EventSource(`/v1/jobs/${encodeURIComponent(this.id)}/events`);
    this.source = source;
    source.addEventListener("item", (e) => { failures = 0; this.updateItem(JSON.parse(e.data)); });
    source.addEventListener("job", (e) => { failures = 0; this.renderSummary(JSON.parse(e.data)); });
    source.addEventListener("done", (e) => {
      source.close();
      this.source = null;
      this.render(JSON.parse(e.data));
      announce(this.job);
    });
    source.addEventListener("deleted", () => { source.close(); this.gone(); });
    source.onerror = () => {
      // The browser reconnects by itself (resuming with Last-Event-ID); after a few failed
      // tries, or when the server refuses the stream, fall back to polling.
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures >= 3) {
        source.close();
        this.source = null;
        this.poll();
      }
    };
  }

  poll() {
    this.polling = true;
    this.node.dataset.transport = "poll";
    schedulePoll();
  }

  async cancel() {
    const button = $(".cancel", this.node);
    button.disabled = true;
    try {
      this.render(await api(`/v1/jobs/${encodeURIComponent(this.id)}/cancel`, { method: "POST" }));
    } catch (err) {
      button.disabled = false;
      showNotice(err.message);
    }
  }

  gone() {
    this.node.replaceChildren(el("p", { class: "notice", text: `Job ${this.id.slice(0, 8)} was deleted.` }));
  }
}

class Card {
  constructor(view, item) {
    this.view = view;
    this.node = document.importNode($("#card-tpl").content, true).firstElementChild;
    this.node.dataset.index = item.index;
    const n = this.node;
    $(".name", n).textContent = item.name;
    $(".name", n).title = item.name;
    const jobUrl = `/v1/jobs/${encodeURIComponent(view.id)}/items/${item.index}`;
    this.previewUrl = (of, size) => `${jobUrl}/preview?of=${of}&size=${size}`;
    const thumb = $(".thumb", n);
    // An item whose first step made its image (generate) has no input to show: until its
    // result is there, the card says what is being made instead of a broken picture.
    this.made = item.input == null;
    const first = (view.job && view.job.pipeline[0]) || {};
    this.prompt = typeof first.prompt === "string" ? first.prompt : "";
    if (this.made) {
      thumb.hidden = true;
      thumb.addEventListener("error", () => { thumb.hidden = true; $(".made", n).hidden = false; });
      $(".made-op", n).textContent = first.op === "generate" ? "Image from a prompt" : `Made by ${first.op || "the first step"}`;
      $(".made-prompt", n).textContent = this.prompt ? `“${this.prompt}”` : "";
      $(".made", n).hidden = false;
    } else {
      thumb.alt = `${item.name} (original)`;
      thumb.addEventListener("error", () => { thumb.hidden = true; $(".placeholder", n).hidden = false; });
      showImage(thumb, this.previewUrl("input", 480));
    }
    const slider = $(".slider", n);
    slider.setAttribute("aria-label", `Compare ${item.name} before and after`);
    slider.addEventListener("input", () => this.compareAt(slider.value));
    this.compareAt(50);
  }

  compareAt(value) {
    // On .compare itself: its own rule (--split: 50%) would hide a value set on the card.
    $(".compare", this.node).style.setProperty("--split", `${value}%`);
    $(".slider", this.node).setAttribute("aria-valuetext", `${value}% before`);
  }

  render(item, job) {
    const n = this.node;
    n.dataset.status = item.status;
    const badge = $(".item-status", n);
    badge.textContent = LABELS[item.status] || item.status;
    badge.dataset.status = item.status;
    setProgress($(".progress", n), item.progress, item.name);
    $(".progress", n).hidden = !ACTIVE.has(item.status);
    $(".stage", n).textContent = stageText(item);
    const meta = item.input ? [describeMeta(item.input)] : [];
    if (item.output) meta.push(describeMeta(item.output));
    $(".meta", n).textContent = meta.join("  →  ");
    const error = $(".item-error", n);
    const failed = item.status === "failed" && item.error;
    error.hidden = !failed;
    error.textContent = failed ? item.error.message : "";
    const ready = item.status === "succeeded" && item.result_url && !job.data_removed;
    const download = $(".download", n);
    download.hidden = !ready;
    const open = $(".open", n);
    open.hidden = !ready;
    if (ready) {
      download.href = item.result_url;
      download.setAttribute("download", item.result_name || "");
      download.setAttribute("aria-label", `Download ${item.result_name || item.name}`);
      download.textContent = `Download ${(item.output && item.output.format || "").toUpperCase()}`.trim();
      open.href = item.result_url;
      open.setAttribute("aria-label", `Open ${item.result_name || item.name} in a new tab`);
      this.showCompare(item);
    }
  }

  showCompare(item) {
    if (this.made) return this.showMade(item);
    const compare = $(".compare", this.node);
    if (!compare.hidden) return;
    const before = $(".before", compare);
    const after = $(".after", compare);
    showImage(before, this.previewUrl("input", 640));
    before.alt = `${item.name}, before`;
    showImage(after, this.previewUrl("result", 640));
    after.alt = `${item.result_name || item.name}, after`;
    compare.hidden = false;
    $(".thumb", this.node).hidden = true;
  }

  // Nothing to compare with: the result alone, where the placeholder was.
  showMade(item) {
    const thumb = $(".thumb", this.node);
    if (this.shown) return;
    this.shown = true;
    thumb.alt = this.prompt ? `${item.result_name || item.name}: ${this.prompt}` : (item.result_name || item.name);
    thumb.addEventListener("load", () => { $(".made", this.node).hidden = true; thumb.hidden = false; }, { once: true });
    showImage(thumb, this.previewUrl("result", 480));
  }

  expire() {
    for (const sel of [".download", ".open"]) $(sel, this.node).hidden = true;
  }
}

function stageText(item) {
  switch (item.status) {
    case "queued": return item.stage && item.attempts ? item.stage
      : `Waiting for a worker${item.estimated_seconds == null ? "" : ` · AI ${formatEstimate(item.estimated_seconds)} once it starts`}`;
    case "running": return `${item.progress}% · ${item.stage || "working"}`;
    case "succeeded": {
      const secs = item.timings && item.timings.processing_seconds;
      return secs != null ? `Done in ${secs < 10 ? secs.toFixed(1) : Math.round(secs)} s` : "Done";
    }
    case "cancelled": return item.error ? capitalize(item.error.message) : "Cancelled";
    case "expired": return "Expired: the files were removed";
    default: return "";
  }
}

function capitalize(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

function describeMeta(meta) {
  if (!meta) return "";
  return `${meta.format.toUpperCase()} · ${meta.width}×${meta.height} · ${formatBytes(meta.bytes)}`;
}

function describeStep(step) {
  const { op, ...params } = step;
  const args = Object.entries(params).map(([k, v]) => (k === "format" ? v : `${k} ${v}`));
  return args.length ? `${op} ${args.join(", ")}` : op;
}

function setProgress(bar, value, label) {
  bar.setAttribute("aria-valuenow", value);
  bar.setAttribute("aria-label", `Progress of ${label}`);
  bar.querySelector("span").style.width = `${value}%`;
}

function announce(job) {
  const done = job.counts.succeeded || 0;
  $("#live-note").textContent = `Job ${job.id.slice(0, 8)} ${LABELS[job.status] || job.status}: ${done} of ${job.items.length} images done.`;
  updateTitle();
}

function updateTitle() {
  const jobs = [...views.values()].map((v) => v.job).filter(Boolean);
  const items = jobs.flatMap((j) => j.items);
  const active = items.filter((i) => ACTIVE.has(i.status)).length;
  document.title = active ? `(${items.length - active}/${items.length}) Jobs · imgq` : "Jobs · imgq";
}

function showNotice(message) {
  const box = el("div", { class: "notice error", role: "alert", text: message });
  $("#jobs").before(box);
  setTimeout(() => box.remove(), 8000);
}

// -- polling, for all the jobs that need it at once -----------------------------------------
let pollTimer = null;

function schedulePoll() {
  if (!pollTimer) pollTimer = setTimeout(pollOnce, 0);
}

async function pollOnce() {
  pollTimer = null;
  const waiting = [...views.values()].filter((v) => v.polling && (!v.job || ACTIVE.has(v.job.status)));
  if (!waiting.length) return;
  try {
    const answer = await api(`/v1/jobs?ids=${waiting.map((v) => encodeURIComponent(v.id)).join(",")}`);
    const byId = new Map(answer.jobs.map((j) => [j.id, j]));
    for (const view of waiting) {
      const job = byId.get(view.id);
      if (!job) { view.polling = false; view.gone(); continue; }
      const wasActive = !view.job || ACTIVE.has(view.job.status);
      view.render(job);
      if (wasActive && !ACTIVE.has(job.status)) announce(job);
    }
  } catch (_) { /* try again at the next tick */ }
  updateTitle();
  pollTimer = setTimeout(pollOnce, POLL_MS);
}

// -- start -----------------------------------------------------------------------------------
async function start() {
  const fromUrl = (params.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean);
  const ids = [...new Set(fromUrl.length ? fromUrl : recentJobs())].slice(0, 50);
  $("#copy-link").addEventListener("click", async () => {
    const url = `${location.origin}/jobs?ids=${ids.join(",")}`;
    try { await navigator.clipboard.writeText(url); $("#copy-link").textContent = "Link copied"; } catch (_) { prompt("Copy this link", url); }
  });
  if (!fromUrl.length && ids.length) history.replaceState(null, "", `/jobs?ids=${ids.join(",")}`);
  if (!ids.length) {
    $("#jobs-empty").hidden = false;
    $("#copy-link").hidden = true;
    return;
  }
  let answer;
  try {
    answer = await api(`/v1/jobs?ids=${ids.map(encodeURIComponent).join(",")}`);
  } catch (err) {
    showNotice(err instanceof ApiError ? err.message : String(err));
    return;
  }
  const found = new Map(answer.jobs.map((j) => [j.id, j]));
  const missing = ids.filter((id) => !found.has(id));
  if (missing.length) {
    $("#jobs").append(el("p", { class: "notice", text: `${missing.length === 1 ? "One job was" : `${missing.length} jobs were`} not found (deleted, or a wrong link): ${missing.map((m) => m.slice(0, 8)).join(", ")}.` }));
  }
  if (!found.size) { $("#jobs-empty").hidden = false; return; }
  for (const id of ids) {
    const job = found.get(id);
    if (!job) continue;
    const view = new JobView(id);
    views.set(id, view);
    $("#jobs").append(view.node);
    view.render(job);
    if (ACTIVE.has(job.status)) view.listen();
  }
  updateTitle();
  setInterval(() => { for (const view of views.values()) view.tick(); }, 1000);
}

start();
