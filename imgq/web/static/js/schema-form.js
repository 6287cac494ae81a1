// Form fields generated from an operation's parameter JSON schema (as GET /v1/operations gives).

import { el } from "./api.js";

let uid = 0;

function resolve(root, prop) {
  if (!prop || !prop.$ref) return prop || {};
  const target = prop.$ref.replace(/^#\//, "").split("/").reduce((o, k) => (o || {})[k], root);
  const { $ref, ...rest } = prop;
  return { ...(target || {}), ...rest };
}

// The shape of one parameter: {kind, optional, enum, min, max, default, ...}.
export function describe(root, raw) {
  let prop = resolve(root, raw);
  let optional = false;
  if (prop.anyOf) {
    const options = prop.anyOf.map((p) => resolve(root, p));
    const real = options.filter((p) => p.type !== "null");
    optional = real.length < options.length;
    prop = { ...real[0], ...prop, anyOf: undefined, type: real[0] && real[0].type };
    if (real.length === 1) prop = { ...resolve(root, real[0]), ...prop };
  }
  const kind = prop.enum ? "enum" : prop.const !== undefined ? "const" : prop.type || "string";
  return {
    kind, optional, enum: prop.enum, title: prop.title, description: prop.description,
    default: prop.default, min: prop.minimum ?? prop.exclusiveMinimum,
    max: prop.maximum ?? prop.exclusiveMaximum,
  };
}

function labelText(name, shape) {
  return shape.title || name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

// Build the fields for one operation; returns {node, values()} where values() gives the
// parameters to send (fields left empty are left out, so the server's defaults apply).
export function paramsForm(schema, initial = {}) {
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const readers = [];
  const node = el("div", { class: "param-grid" });
  for (const [name, raw] of Object.entries(props)) {
    const shape = describe(schema, raw);
    const id = `param-${++uid}`;
    const hintId = shape.description ? `${id}-hint` : null;
    const value = initial[name] !== undefined ? initial[name] : shape.default;
    let input;
    if (shape.kind === "boolean") {
      input = el("input", { type: "checkbox", id, "aria-describedby": hintId });
      input.checked = Boolean(value);
      readers.push(() => (input.checked !== Boolean(shape.default) ? [name, input.checked] : null));
      node.append(el("div", { class: "field check" }, input,
        el("label", { for: id, text: labelText(name, shape) }),
        hintId ? el("small", { id: hintId, class: "hint", text: shape.description }) : null));
      continue;
    }
    if (shape.kind === "enum") {
      input = el("select", { id, "aria-describedby": hintId });
      if (shape.optional || shape.default === undefined) {
        input.append(el("option", { value: "", text: shape.optional ? "(not set)" : "Choose…" }));
      }
      for (const option of shape.enum) {
        input.append(el("option", { value: JSON.stringify(option), text: String(option) }));
      }
      input.value = value == null ? "" : JSON.stringify(value);
      readers.push(() => (input.value === "" ? null : [name, JSON.parse(input.value)]));
    } else if (shape.kind === "integer" || shape.kind === "number") {
      input = el("input", {
        type: "number", id, inputmode: shape.kind === "integer" ? "numeric" : "decimal",
        step: shape.kind === "integer" ? "1" : "any", min: shape.min, max: shape.max,
        placeholder: shape.optional ? "not set" : "", "aria-describedby": hintId,
        required: required.has(name) || null,
      });
      input.value = value == null ? "" : String(value);
      readers.push(() => (input.value === "" ? null : [name, Number(input.value)]));
    } else {
      input = el("input", { type: "text", id, "aria-describedby": hintId,
        required: required.has(name) || null, placeholder: shape.optional ? "not set" : "" });
      input.value = value == null ? "" : typeof value === "string" ? value : JSON.stringify(value);
      readers.push(() => {
        if (input.value === "") return null;
        if (shape.kind === "string") return [name, input.value];
        try { return [name, JSON.parse(input.value)]; } catch (_) { return [name, input.value]; }
      });
    }
    const label = el("label", { for: id }, labelText(name, shape),
      required.has(name) ? el("span", { class: "req", "aria-hidden": "true", text: " *" }) : null);
    node.append(el("div", { class: "field" }, label, input,
      hintId ? el("small", { id: hintId, class: "hint", text: shape.description }) : null));
  }
  if (!readers.length) node.append(el("p", { class: "muted small", text: "No parameters." }));
  return {
    node,
    values() {
      return Object.fromEntries(readers.map((read) => read()).filter(Boolean));
    },
    missing() {
      return [...node.querySelectorAll("[required]")].filter((i) => i.value === "")
        .map((i) => node.querySelector(`label[for="${i.id}"]`).firstChild.textContent);
    },
  };
}
