// The upload page: pick images, choose a preset or build a pipeline, submit.

import { api, ApiError, el, formatBytes, formatDuration, rememberJob, upload } from "./api.js";
import { paramsForm } from "./schema-form.js";

const $ = (sel) => document.querySelector(sel);
const state = { files: [], limits: null, ops: new Map(), steps: [], preset: null };

// -- presets -------------------------------------------------------------------------------
// What each upscale preset is for, and how to find its model among the operation's choices:
// a parameter with that value (a "standard"/"detailed" switch), else a model name.
const UPSCALE_KINDS = [
  { id: "sharp", word: "standard", hint: "Photos · sharp", model: () => /^realesrgan-x4plus$|esrgan/i },
  { id: "faithful", word: "detailed", hint: "Photos · faithful, natural faces", model: () => /dat|swin|hat/i },
  { id: "illustration", word: null, hint: "Drawings, anime", model: (scale) => new RegExp(`^realcugan-x${scale}$`) },
];

function upscaleStep(scale, kind) {
  const op = state.ops.get("upscale");
  const props = (op && op.params.properties) || {};
  const step = { op: "upscale" };
  if ("scale" in props) step.scale = scale;
  const choicesOf = (raw) => raw.enum || enumOf(op.params, raw.$ref)
    || (raw.anyOf || []).map((p) => p.enum || enumOf(op.params, p.$ref)).find(Boolean) || null;
  for (const [name, raw] of Object.entries(props)) {
    const choices = choicesOf(raw);
    const want = kind.word && choices && choices.find((c) => String(c).toLowerCase() === kind.word);
    if (want !== undefined && want !== null && want !== false) { step[name] = want; return step; }
  }
  const models = props.model ? choicesOf(props.model) : null;
  const pick = models && models.find((m) => kind.model(scale).test(String(m)));
  if (pick) step.model = pick;
  else if (kind.id !== "sharp" || models) return null;
  return step;
}

function enumOf(schema, ref) {
  if (!ref) return null;
  const target = ref.replace(/^#\//, "").split("/").reduce((o, k) => (o || {})[k], schema);
  return target && target.enum;
}

function presets() {
  const has = (name) => state.ops.has(name) && state.ops.get(name).available;
  const groups = [];
  if (has("upscale")) {
    const items = [];
    for (const scale of [2, 4]) {
      for (const kind of UPSCALE_KINDS) {
        const step = upscaleStep(scale, kind);
        if (step) items.push({ id: `upscale-${scale}-${kind.id}`, label: `Upscale ${scale}×`,
          hint: kind.hint, steps: [step] });
      }
    }
    groups.push({ title: "Upscale with AI", items });
  }
  const filters = [
    ["grayscale", "Grayscale", "Black and white", [{ op: "grayscale" }]],
    ["sharpen", "Sharpen", "Crisper details", [{ op: "sharpen" }]],
    ["blur", "Blur", "Soft focus", [{ op: "blur", radius: 4 }]],
    ["smooth", "Smooth", "Less noise", [{ op: "smooth" }]],
    ["edge_enhance", "Edge enhance", "Stronger edges", [{ op: "edge_enhance" }]],
    ["edges", "Find edges", "Outlines only", [{ op: "edges" }]],
  ].filter(([op]) => has(op));
  if (filters.length) {
    groups.push({ title: "Filters", items: filters.map(([op, label, hint, steps]) => ({ id: op, label, hint, steps })) });
  }
  const sizes = [];
  if (has("resize")) {
    sizes.push({ id: "fit-2048", label: "Fit 2048 px", hint: "Large, for screens", steps: [{ op: "resize", width: 2048, height: 2048 }] });
    sizes.push({ id: "fit-1024", label: "Fit 1024 px", hint: "For the web", steps: [{ op: "resize", width: 1024, height: 1024 }] });
  }
  if (has("thumbnail")) {
    const props = state.ops.get("thumbnail").params.properties || {};
    const size = "size" in props ? { size: 256 } : "width" in props ? { width: 256 } : {};
    sizes.push({ id: "thumb-256", label: "Thumbnail", hint: "256 px", steps: [{ op: "thumbnail", ...size }] });
  }
  if (sizes.length) groups.push({ title: "Resize", items: sizes });
  if (has("encode")) {
    groups.push({ title: "Convert", items: [{ id: "convert", label: "Convert only", hint: "Pick the format below", steps: [], convert: true }] });
  }
  return groups;
}

function renderPresets() {
  const box = $("#presets");
  box.replaceChildren();
  const groups = presets();
  if (!groups.length) {
    box.append(el("p", { class: "muted", text: "This server offers no presets; build a pipeline instead." }));
    return;
  }
  let first = null;
  for (const group of groups) {
    const list = el("div", { class: "preset-list" });
    for (const item of group.items) {
      const id = `preset-${item.id}`;
      const input = el("input", { type: "radio", name: "preset", id, value: item.id, class: "visually-hidden" });
      input.addEventListener("change", () => { state.preset = item; if (item.convert && !$("#format").value) $("#format").value = "webp"; refresh(); });
      list.append(el("div", { class: "preset" }, input,
        el("label", { for: id }, el("strong", { text: item.label }), el("small", { text: item.hint }))));
      first = first || [input, item];
    }
    box.append(el("div", { class: "preset-group" }, el("h3", { text: group.title }), list));
  }
  const chosen = first && (box.querySelector(`input[value="${state.preset && state.preset.id}"]`) ? null : first);
  if (chosen) { chosen[0].checked = true; state.preset = chosen[1]; }
}

// -- the step-by-step builder --------------------------------------------------------------
function addStep(name, initial = {}) {
  const op = state.ops.get(name);
  if (!op) return;
  const form = paramsForm(op.params, initial);
  const step = { op: name, form };
  const item = el("li", { class: "step-card" });
  const title = el("div", { class: "step-head" },
    el("span", { class: "step-name" }, el("strong", { text: name }), el("small", { class: "muted", text: op.summary })),
    el("div", { class: "step-tools" },
      el("button", { type: "button", class: "icon", "aria-label": `Move ${name} up`, text: "↑", onclick: () => move(step, -1) }),
      el("button", { type: "button", class: "icon", "aria-label": `Move ${name} down`, text: "↓", onclick: () => move(step, 1) }),
      el("button", { type: "button", class: "icon danger", "aria-label": `Remove ${name}`, text: "✕", onclick: () => remove(step) })));
  item.append(title, form.node);
  item.addEventListener("input", refresh);
  item.addEventListener("change", refresh);
  step.node = item;
  state.steps.push(step);
  renderSteps();
  const focusable = form.node.querySelector("input,select");
  (focusable || title.querySelector("button")).focus();
}

function move(step, delta) {
  const i = state.steps.indexOf(step);
  const j = i + delta;
  if (j < 0 || j >= state.steps.length) return;
  [state.steps[i], state.steps[j]] = [state.steps[j], state.steps[i]];
  renderSteps();
  step.node.querySelector(`button[aria-label^="Move ${step.op} ${delta < 0 ? "up" : "down"}"]`).focus();
}

function remove(step) {
  state.steps = state.steps.filter((s) => s !== step);
  renderSteps();
  $("#add-op").focus();
}

function renderSteps() {
  $("#steps").replaceChildren(...state.steps.map((s) => s.node));
  $("#steps-empty").hidden = state.steps.length > 0;
  refresh();
}

function renderOpPicker() {
  const select = $("#add-op");
  select.replaceChildren();
  for (const op of state.ops.values()) {
    if (!op.available) continue;
    select.append(el("option", { value: op.name, text: `${op.name} (${op.resource})` }));
  }
  const show = () => {
    const op = state.ops.get(select.value);
    $("#op-summary").textContent = op ? op.summary : "";
  };
  select.addEventListener("change", show);
  show();
}

// -- the pipeline as it will be sent --------------------------------------------------------
function pipeline() {
  const custom = $("#mode-custom").checked;
  let steps = custom ? state.steps.map((s) => ({ op: s.op, ...s.form.values() }))
    : (state.preset ? state.preset.steps.map((s) => ({ ...s })) : []);
  const format = $("#format").value;
  if (format) {
    const last = steps[steps.length - 1];
    if (last && last.op === "encode") last.format = format;
    else steps = [...steps, { op: "encode", format }];
  }
  return steps;
}

function compact(steps) {
  return steps.map((s) => {
    const { op, ...params } = s;
    const args = Object.entries(params).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
    return args.length ? `${op}:${args.join(",")}` : op;
  }).join("|");
}

function refresh() {
  const steps = pipeline();
  $("#pipeline-text").textContent = steps.length ? compact(steps) : "—";
  const n = state.files.filter((f) => !f.error).length;
  $("#submit").textContent = n > 1 ? `Process ${n} images` : n === 1 ? "Process 1 image" : "Process images";
}

// -- files -----------------------------------------------------------------------------------
const SIGNATURES = [
  ["jpeg", (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff],
  ["png", (b) => b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47],
  ["gif", (b) => b[0] === 0x47 && b[1] === 0x49 && b[2] === 0x46],
  ["webp", (b) => ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 12) === "WEBP"],
  ["tiff", (b) => (b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a) || (b[0] === 0x4d && b[1] === 0x4d && b[3] === 0x2a)],
  ["heif", (b) => ascii(b, 4, 8) === "ftyp" && /^(hei|hev|mif|msf|avi)/.test(ascii(b, 8, 12))],
];

function ascii(bytes, from, to) {
  return String.fromCharCode(...bytes.slice(from, to));
}

async function sniff(file) {
  const head = new Uint8Array(await file.slice(0, 32).arrayBuffer());
  const found = SIGNATURES.find(([, test]) => test(head));
  return found ? found[0] : null;
}

async function addFiles(list) {
  const limits = state.limits;
  const problems = [];
  for (const file of list) {
    if (limits && state.files.length >= limits.max_files) {
      problems.push(`${file.name}: not added, at most ${limits.max_files} images per upload`);
      continue;
    }
    const entry = { file, id: `f${Math.random().toString(36).slice(2)}`, error: null };
    if (limits && file.size > limits.max_file_bytes) {
      entry.error = `larger than the limit of ${formatBytes(limits.max_file_bytes)}`;
    } else if (!(await sniff(file))) {
      entry.error = "not an image in a supported format";
    }
    state.files.push(entry);
    if (!entry.error) checkPixels(entry);
  }
  showFileProblems(problems);
  renderFiles();
}

function checkPixels(entry) {
  // Browsers decode most formats: refuse images with too many pixels before uploading.
  const img = new Image();
  entry.url = URL.createObjectURL(entry.file);
  img.onload = () => {
    entry.size = `${img.naturalWidth}×${img.naturalHeight}`;
    const pixels = img.naturalWidth * img.naturalHeight;
    if (state.limits && pixels > state.limits.max_pixels) {
      entry.error = `${entry.size} is ${(pixels / 1e6).toFixed(1)} megapixels, more than the limit of ${(state.limits.max_pixels / 1e6).toFixed(0)}`;
    }
    renderFiles();
  };
  img.src = entry.url;
}

function showFileProblems(problems) {
  const box = $("#file-errors");
  box.hidden = !problems.length;
  box.replaceChildren(...problems.map((p) => el("p", { text: p })));
}

function renderFiles() {
  const list = $("#file-list");
  list.replaceChildren(...state.files.map((entry) => {
    const thumb = entry.url && !entry.error
      ? el("img", { src: entry.url, alt: "", class: "file-thumb" })
      : el("span", { class: "file-thumb blank", "aria-hidden": "true" });
    const detail = entry.error ? el("span", { class: "file-error", text: entry.error })
      : el("span", { class: "muted", text: [formatBytes(entry.file.size), entry.size].filter(Boolean).join(" · ") });
    return el("li", { class: `file${entry.error ? " bad" : ""}` }, thumb,
      el("span", { class: "file-text" }, el("span", { class: "file-name", text: entry.file.name, title: entry.file.name }), detail),
      el("button", { type: "button", class: "icon", "aria-label": `Remove ${entry.file.name}`, text: "✕",
        onclick: () => { state.files = state.files.filter((f) => f !== entry); if (entry.url) URL.revokeObjectURL(entry.url); showFileProblems([]); renderFiles(); $("#file-input").focus(); } }));
  }));
  refresh();
}

function setupDropzone() {
  const zone = $("#dropzone");
  const input = $("#file-input");
  input.addEventListener("change", () => { addFiles([...input.files]); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  }
  zone.addEventListener("drop", (e) => addFiles([...e.dataTransfer.files]));
  // Dropping outside the zone must not open the image in place of the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => { e.preventDefault(); if (!zone.contains(e.target)) addFiles([...e.dataTransfer.files]); });
}

// -- submit ----------------------------------------------------------------------------------
function showError(message) {
  const box = $("#form-error");
  box.hidden = !message;
  box.textContent = message || "";
  if (message) box.scrollIntoView({ block: "nearest" });
}

async function submit(event) {
  event.preventDefault();
  showError("");
  const good = state.files.filter((f) => !f.error);
  if (!good.length) return showError(state.files.length ? "Remove the images marked in red, or add others." : "Choose at least one image.");
  if (good.length < state.files.length) return showError("Some images cannot be sent (marked in red): remove them first.");
  if ($("#mode-custom").checked) {
    const missing = state.steps.flatMap((s) => s.form.missing().map((m) => `${s.op}: ${m}`));
    if (missing.length) return showError(`Fill in the required fields: ${missing.join(", ")}.`);
  }
  const steps = pipeline();
  if (!steps.length) return showError($("#mode-custom").checked ? "Add at least one step." : "Choose a preset, or an output format.");
  const form = new FormData();
  for (const entry of good) form.append("files", entry.file, entry.file.name);
  form.append("pipeline", JSON.stringify(steps));
  form.append("ttl_seconds", $("#ttl").value);
  const button = $("#submit");
  const bar = $("#upload-progress");
  button.disabled = true;
  bar.hidden = false;
  $("#submit-status").textContent = "Uploading…";
  try {
    const job = await upload("/v1/jobs", form, (fraction) => {
      const pct = Math.round(fraction * 100);
      bar.querySelector(".progress").setAttribute("aria-valuenow", pct);
      bar.querySelector(".progress span").style.width = `${pct}%`;
      $("#submit-status").textContent = pct < 100 ? `Uploading… ${pct}%` : "Checking the images…";
    });
    rememberJob(job.id);
    $("#submit-status").textContent = "Submitted. Opening the job…";
    location.assign(`/jobs?ids=${encodeURIComponent(job.id)}`);
  } catch (err) {
    showError(err instanceof ApiError ? err.message : String(err));
    $("#submit-status").textContent = "";
    bar.hidden = true;
    button.disabled = false;
  }
}

// -- start -----------------------------------------------------------------------------------
function renderTtl(limits) {
  const select = $("#ttl");
  const choices = [[600, "10 minutes"], [3600, "1 hour"], [86400, "1 day"], [604800, "1 week"]]
    .filter(([s]) => s <= limits.max_ttl_seconds);
  if (!choices.some(([s]) => s === limits.ttl_seconds)) {
    choices.push([limits.ttl_seconds, `${formatDuration(limits.ttl_seconds)} (default)`]);
    choices.sort((a, b) => a[0] - b[0]);
  }
  select.replaceChildren(...choices.map(([s, label]) => el("option", { value: s, text: label })));
  select.value = String(limits.ttl_seconds);
}

async function start() {
  setupDropzone();
  $("#upload-form").addEventListener("submit", submit);
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      const custom = $("#mode-custom").checked;
      $("#presets").hidden = custom;
      $("#builder").hidden = !custom;
      refresh();
    });
  }
  $("#format").addEventListener("change", refresh);
  $("#add-step").addEventListener("click", () => addStep($("#add-op").value));
  try {
    const [limits, ops] = await Promise.all([api("/v1/limits"), api("/v1/operations")]);
    state.limits = limits;
    for (const op of ops) state.ops.set(op.name, op);
    $("#limits-text").textContent = `Up to ${limits.max_files} images, ${formatBytes(limits.max_file_bytes)} and ${Math.round(limits.max_pixels / 1e6)} megapixels each · JPEG, PNG, WebP, GIF, TIFF, HEIC, AVIF`;
    renderTtl(limits);
    if (!state.ops.has("encode")) $("#format").closest(".field").hidden = true;
    renderPresets();
    renderOpPicker();
    refresh();
  } catch (err) {
    showError(`Could not load the server's operations: ${err.message}`);
  }
}

start();
