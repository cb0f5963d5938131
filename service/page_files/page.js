// pixelscene's page for artists: the form, the job cards and their polling, the history and
// the image actions. No build step and no dependencies (ES modules from this server): it
// talks to this server's API only, and builds its DOM from <template>s and text, never from
// HTML strings (the Content-Security-Policy asks for Trusted Types).
import { ApiError, KEY_STORE, api, apiJson, apiKey } from "./api.js";
import { indexedPng, rgbPng } from "./png.js";

const ZOOM_STORE = "pixelscene.zoom";
const POLL_MS = 500; // a visible tab polls its running jobs this often...
const POLL_HIDDEN_MS = 5000; // ...a hidden one ten times less
const POLL_MAX_MS = 30000; // the longest wait after repeated failures
const JOBS_PER_POLL_STEP = 4; // polls slow down past this many live jobs (keys have rate limits)
const HISTORY_LIMIT = 10;
const FINAL = new Set(["succeeded", "failed", "canceled"]);
const FIELDS = ["prompt", "n", "seed", "palette", "cfg_scale", "model"];
const BUILTIN_PALETTES = ["none", "vga", "auto"];

const byId = (id) => document.getElementById(id);
const jobs = new Map(); // job id -> {job, card, shown, pollError, failures, gone}
const shots = new WeakMap(); // <figure> -> {entry, image, blob, bytes}
let nextCursor = null;

// ------------------------------------------------------------------------------ messages

let statusTimer = 0;

/** The line under the form; with `retryAfter`, counts down to when a retry may succeed. */
function setFormStatus(text, isError = false, retryAfter = null) {
  const status = byId("form-status");
  clearInterval(statusTimer);
  status.classList.toggle("error", isError);
  if (retryAfter === null) {
    status.textContent = text;
    return;
  }
  const until = Date.now() + retryAfter * 1000;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (left > 0) {
      status.textContent = `${text} Retry in ${left} s.`;
    } else {
      status.textContent = `${text} You can retry now.`;
      clearInterval(statusTimer);
    }
  };
  tick();
  statusTimer = setInterval(tick, 1000);
}

function clearFormErrors() {
  for (const name of FIELDS) byId(`err-${name}`).textContent = "";
  for (const input of document.querySelectorAll("#generate [aria-invalid]")) {
    input.removeAttribute("aria-invalid");
  }
  setFormStatus("");
}

function fieldInput(name) {
  if (name === "palette" && byId("palette").value === "auto") return byId("palette-n");
  return byId(name);
}

/** Each named field's message beside it (the API's words), the rest under the form. */
function showFieldErrors(fields) {
  const rest = [];
  let first = null;
  for (const [name, message] of Object.entries(fields)) {
    if (FIELDS.includes(name)) {
      byId(`err-${name}`).textContent = message;
      const input = fieldInput(name);
      input.setAttribute("aria-invalid", "true");
      first = first || input;
    } else {
      rest.push(`${name}: ${message}`);
    }
  }
  if (first) first.focus();
  return rest;
}

function showKeyError(err) {
  const box = byId("key-box");
  byId("err-key").textContent = err.message;
  if (!box.open) {
    box.open = true;
    byId("key").focus();
  }
}

/** Any error of a request the form made: never swallowed. */
function showFormError(err) {
  if (!(err instanceof ApiError)) throw err;
  const fields = err.details && err.details.fields;
  const rest = fields && typeof fields === "object" ? showFieldErrors(fields) : [];
  if (err.status === 401 || err.status === 403) showKeyError(err);
  const text = rest.length ? `${err.message}: ${rest.join("; ")}.` : `${err.message}.`;
  setFormStatus(text, true, err.retryAfter);
}

// ------------------------------------------------------------------------------ the form

/** The request body the form describes, or null after showing what cannot be read. */
function readForm() {
  const body = { prompt: byId("prompt").value };
  const unreadable = {};
  for (const name of ["n", "seed", "cfg_scale"]) {
    const input = byId(name);
    if (input.validity.badInput) unreadable[name] = "is not a number";
    else if (input.value !== "") body[name] = Number(input.value);
  }
  const palette = byId("palette").value;
  if (palette === "auto") {
    const count = byId("palette-n");
    if (count.validity.badInput) unreadable.palette = "auto:N needs a number of colours";
    else body.palette = `auto:${count.value}`;
  } else {
    body.palette = palette;
  }
  if (byId("model").value) body.model = byId("model").value;
  if (Object.keys(unreadable).length) {
    showFieldErrors(unreadable);
    return null;
  }
  return body;
}

function selectPalette(name) {
  const select = byId("palette");
  const auto = /^auto:(\d+)$/.exec(name || "");
  if (auto) {
    select.value = "auto";
    byId("palette-n").value = auto[1];
  } else {
    if (name && ![...select.options].some((o) => o.value === name)) addOption(select, name, name);
    select.value = name || "none";
  }
  byId("palette-n").hidden = select.value !== "auto";
}

/** Put a job's request, and one of its images' seed, back into the form. */
function fillForm(request, seed) {
  clearFormErrors();
  byId("prompt").value = request.prompt || "";
  byId("seed").value = seed;
  byId("cfg_scale").value = request.cfg_scale ?? "";
  selectPalette(request.palette);
  const model = byId("model");
  if ([...model.options].some((o) => o.value === request.model)) model.value = request.model;
  showModelVersion();
  window.scrollTo({ top: 0 });
  byId("prompt").focus();
  setFormStatus(
    `Seed ${seed} and its settings are in the form: change the prompt or palette and press Enter.`,
  );
}

let submitting = false;

async function queue(body) {
  if (submitting) return;
  submitting = true;
  byId("submit").disabled = true;
  try {
    const accepted = await apiJson("POST", "/v1/generations", body);
    const job = {
      id: accepted.id,
      kind: "generate",
      status: accepted.status,
      position: accepted.position,
      eta_seconds: accepted.eta_seconds,
      progress: 0,
      request: body,
      output: null,
      error: null,
    };
    upsert(job, true);
    setFormStatus(`Queued job ${job.id.slice(0, 8)}.`);
    schedulePoll(0);
  } catch (err) {
    showFormError(err);
  } finally {
    submitting = false;
    byId("submit").disabled = false;
  }
}

function onSubmit(event) {
  event.preventDefault();
  clearFormErrors();
  const body = readForm();
  if (body) queue(body);
}

function addOption(select, value, text) {
  const option = document.createElement("option");
  option.value = value;
  option.textContent = text;
  select.append(option);
  return option;
}

/** Every string of every `enum` in a JSON Schema (its anyOf branches included). */
function enumStrings(schema, out = []) {
  if (!schema || typeof schema !== "object") return out;
  if (Array.isArray(schema.enum)) out.push(...schema.enum.filter((v) => typeof v === "string"));
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    for (const sub of schema[key] || []) enumStrings(sub, out);
  }
  return out;
}

let models = [];

function showModelVersion() {
  const model = models.find((m) => m.name === byId("model").value);
  const hint = byId("model-version");
  if (!model) hint.textContent = "";
  else if (!model.available) hint.textContent = "unavailable on this server";
  else hint.textContent = `version ${model.version}`;
}

/** Models (GET /v1/models) and named palettes and limits (the request schema the server
 * validates with, from /openapi.json). */
async function loadOptions() {
  try {
    models = (await apiJson("GET", "/v1/models")).models;
    const select = byId("model");
    select.replaceChildren();
    for (const m of models) {
      const option = addOption(select, m.name, m.available ? m.name : `${m.name} (unavailable)`);
      option.disabled = !m.available;
      if (m.default) select.value = m.name;
    }
    showModelVersion();
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    byId("err-model").textContent = `models: ${err.message}`;
    if (err.status === 401 || err.status === 403) showKeyError(err);
  }
  try {
    const doc = await apiJson("GET", "/openapi.json");
    const request = doc.components.schemas.GenerationRequest.properties;
    const select = byId("palette");
    for (const name of enumStrings(request.palette)) {
      if (!BUILTIN_PALETTES.includes(name) && ![...select.options].some((o) => o.value === name)) {
        addOption(select, name, name);
      }
    }
    for (const name of ["n", "cfg_scale"]) {
      if (typeof request[name].maximum === "number") byId(name).max = request[name].maximum;
    }
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    byId("err-palette").textContent = `named palettes: ${err.message}`;
  }
}

// ------------------------------------------------------------------------------ job cards

function positionText(job) {
  if (job.status !== "queued") return "";
  if (typeof job.position !== "number") return ""; // a listed job's until its first poll
  const place = job.position === 0 ? "next in the queue" : `${job.position} ahead in the queue`;
  const eta = job.eta_seconds ? `, about ${Math.round(job.eta_seconds)} s` : "";
  return place + eta;
}

function metaText(job) {
  const r = job.request || {};
  const parts = [`${r.n ?? 1} image${(r.n ?? 1) === 1 ? "" : "s"}`];
  if (r.seed !== undefined && r.seed !== null) parts.push(`seed ${r.seed}`);
  parts.push(`palette ${r.palette || "none"}`);
  if (r.cfg_scale !== undefined && r.cfg_scale !== null) parts.push(`cfg ${r.cfg_scale}`);
  if (r.model) parts.push(r.model);
  if (job.created_at) parts.push(new Date(job.created_at).toLocaleString());
  return parts.join(" · ");
}

/** Add a job's card, or bring it up to date. */
function upsert(job, prepend = false) {
  if (job.kind && job.kind !== "generate") return; // trainings are not this page's business
  let entry = jobs.get(job.id);
  if (entry) {
    entry.job = job;
  } else {
    const card = byId("card-template").content.firstElementChild.cloneNode(true);
    card.dataset.job = job.id;
    card.querySelector(".cancel").addEventListener("click", () => cancel(job.id));
    entry = { job, card, shown: false, pollError: "", failures: 0, gone: false };
    jobs.set(job.id, entry);
    const gallery = byId("gallery");
    if (prepend) gallery.prepend(card);
    else gallery.append(card);
    byId("history-status").textContent = "";
  }
  render(entry);
}

function render(entry) {
  const { job, card } = entry;
  card.dataset.status = job.status;
  card.querySelector(".card-prompt").textContent = (job.request && job.request.prompt) || "";
  card.querySelector(".card-meta").textContent = metaText(job);
  const canceling = job.cancel_requested && !FINAL.has(job.status);
  card.querySelector(".badge").textContent = canceling ? `${job.status}, canceling` : job.status;
  const position = card.querySelector(".position");
  position.textContent = positionText(job);
  if (job.status === "queued" && typeof job.position === "number") {
    card.dataset.position = String(job.position);
  } else {
    delete card.dataset.position;
  }
  const bar = card.querySelector(".bar");
  bar.hidden = job.status !== "running";
  bar.value = job.progress || 0;
  bar.setAttribute("aria-label", `progress of "${(job.request && job.request.prompt) || ""}"`);
  card.querySelector(".percent").textContent =
    job.status === "running" ? `${Math.floor((job.progress || 0) * 100)} %` : "";
  const cancelButton = card.querySelector(".cancel");
  cancelButton.hidden = FINAL.has(job.status) || entry.gone;
  cancelButton.disabled = Boolean(canceling);
  cancelButton.textContent = canceling ? "Canceling…" : "Cancel";
  const error = job.error ? `${job.error.message} (${job.error.code})` : "";
  card.querySelector(".card-error").textContent = error || entry.pollError;
  if (job.status === "succeeded" && !entry.shown) showImages(entry);
}

async function cancel(id) {
  const entry = jobs.get(id);
  entry.card.querySelector(".cancel").disabled = true;
  try {
    upsert(await apiJson("DELETE", `/v1/jobs/${id}`));
    entry.pollError = "";
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    entry.pollError = err.message; // e.g. 409: it finished meanwhile
    if (err.status === 401 || err.status === 403) showKeyError(err);
  }
  render(entry);
  schedulePoll(0);
}

// ------------------------------------------------------------------------------ polling

let pollTimer = 0;
let polling = false;
let pollSoon = false;

function schedulePoll(delay) {
  if (polling) {
    if (delay === 0) pollSoon = true; // the poll under way looks again at once when done
    return;
  }
  clearTimeout(pollTimer);
  pollTimer = setTimeout(pollAll, delay);
}

async function pollAll() {
  polling = true;
  pollSoon = false;
  let wait = null;
  try {
    wait = await pollOnce();
  } finally {
    polling = false;
  }
  if (pollSoon) schedulePoll(0);
  else if (wait !== null) schedulePoll(wait);
}

/** GET each live job once; returns the wait before the next round (null: none live). */
async function pollOnce() {
  const live = [...jobs.values()].filter((e) => !FINAL.has(e.job.status) && !e.gone);
  if (!live.length) return null;
  const every = document.hidden ? POLL_HIDDEN_MS : POLL_MS;
  let wait = every * Math.ceil(live.length / JOBS_PER_POLL_STEP);
  await Promise.all(
    live.map(async (entry) => {
      try {
        const job = await apiJson("GET", `/v1/jobs/${entry.job.id}`);
        entry.pollError = "";
        entry.failures = 0;
        upsert(job);
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        entry.failures += 1;
        entry.gone = err.status === 404; // expired, or another key's: stop asking
        // The server's Retry-After when it gives one, else a doubling wait.
        const next =
          err.retryAfter !== null
            ? err.retryAfter * 1000
            : Math.min(POLL_MAX_MS, POLL_MS * 2 ** entry.failures);
        wait = Math.max(wait, next);
        const again = `(asking again in ${Math.ceil(next / 1000)} s)`;
        entry.pollError = entry.gone ? err.message : `${err.message} ${again}`;
        if (err.status === 401 || err.status === 403) showKeyError(err);
        render(entry);
      }
    }),
  );
  return wait;
}

// ------------------------------------------------------------------------------ history

async function loadHistory() {
  const status = byId("history-status");
  const params = new URLSearchParams({ limit: String(HISTORY_LIMIT) });
  if (nextCursor) params.set("cursor", nextCursor);
  const older = byId("older");
  older.disabled = true;
  try {
    const page = await apiJson("GET", `/v1/jobs?${params}`);
    for (const job of page.jobs) {
      if (!jobs.has(job.id)) upsert(job);
    }
    nextCursor = page.next_cursor;
    status.textContent = jobs.size ? "" : "No jobs yet: type a prompt above and press Enter.";
    schedulePoll(0);
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    status.textContent = `Earlier jobs: ${err.message}`;
    if (err.status === 401 || err.status === 403) showKeyError(err);
  } finally {
    older.hidden = !nextCursor;
    older.disabled = false;
  }
}

// ------------------------------------------------------------------------------ images

const imageObserver = new IntersectionObserver(
  (seen) => {
    for (const item of seen) {
      if (item.isIntersecting) {
        imageObserver.unobserve(item.target);
        loadImage(item.target);
      }
    }
  },
  { rootMargin: "600px" },
);

function showImages(entry) {
  entry.shown = true;
  const box = entry.card.querySelector(".images");
  for (const image of (entry.job.output && entry.job.output.images) || []) {
    const figure = byId("image-template").content.firstElementChild.cloneNode(true);
    figure.querySelector(".seed").textContent = `seed ${image.seed}`;
    shots.set(figure, { entry, image, blob: null, bytes: null });
    box.append(figure);
    imageObserver.observe(figure);
  }
}

async function loadImage(figure) {
  const shot = shots.get(figure);
  try {
    shot.blob = await (await api("GET", shot.image.url)).blob();
    shot.bytes = new Uint8Array(await shot.blob.arrayBuffer());
    const img = figure.querySelector("img");
    // The alt text only now: before, chromium would draw it in a broken-image box.
    img.alt = `${shot.entry.job.request.prompt}, seed ${shot.image.seed}`;
    img.src = URL.createObjectURL(shot.blob);
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    shotStatus(figure, `image: ${err.message}`, true);
  }
}

function shotStatus(figure, text, isError = false) {
  const status = figure.querySelector(".shot-status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function fileStem(shot) {
  const words = (shot.entry.job.request.prompt || "scene").toLowerCase().match(/[a-z0-9]+/g) || [];
  return `${words.join("-").slice(0, 48) || "scene"}-${shot.image.seed}`;
}

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

/** The request that made a job, for sending again (defaults as the server filled them). */
function reusable(job) {
  const body = {};
  for (const [name, value] of Object.entries(job.request || {})) {
    if (value !== null && name !== "webhook") body[name] = value;
  }
  return body;
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** A curl command that queues this one image again: same request, n 1, its own seed. */
function curlCommand(shot) {
  const body = { ...reusable(shot.entry.job), n: 1, seed: shot.image.seed };
  const parts = [
    "curl -s -X POST",
    shellQuote(`${location.origin}/v1/generations`),
    "-H 'Content-Type: application/json'",
  ];
  if (apiKey()) parts.push('-H "Authorization: Bearer $PIXELSCENE_API_KEY"');
  parts.push("-d", shellQuote(JSON.stringify(body)));
  return parts.join(" ");
}

async function copyCurl(figure, shot) {
  const code = figure.querySelector(".curl");
  code.textContent = curlCommand(shot);
  code.hidden = false;
  try {
    await navigator.clipboard.writeText(code.textContent);
    shotStatus(figure, "curl command copied");
  } catch {
    // no clipboard (a plain-http page on another host): the command is shown to select
    shotStatus(figure, "select the command below and copy it");
  }
}

async function onImageAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const figure = button.closest("figure");
  const shot = shots.get(figure);
  const { action } = button.dataset;
  shotStatus(figure, "");
  try {
    if (action === "new-seeds") {
      const body = reusable(shot.entry.job);
      delete body.seed;
      window.scrollTo({ top: 0 });
      await queue(body);
    } else if (action === "reuse-seed") {
      fillForm(shot.entry.job.request, shot.image.seed);
    } else if (action === "curl") {
      await copyCurl(figure, shot);
    } else if (action === "codes") {
      const blob = await (await api("GET", shot.image.codes_url)).blob();
      download(blob, `${fileStem(shot)}.codes.json`);
    } else if (!shot.bytes) {
      shotStatus(figure, "the image has not loaded yet", true);
    } else if (action === "png") {
      download(await rgbPng(shot.blob, shot.bytes), `${fileStem(shot)}.png`);
    } else if (action === "indexed") {
      const palette = shot.entry.job.request.palette || "none";
      const indexed = await indexedPng(shot.blob, shot.bytes);
      if (indexed.blob) download(indexed.blob, `${fileStem(shot)}-${palette.replace(":", "")}.png`);
      else {
        shotStatus(
          figure,
          `made without a palette, this image has ${indexed.colours} colours: choose a palette ` +
            "(vga, auto:N) and use Reuse seed",
          true,
        );
      }
    }
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    shotStatus(figure, err.message, true);
    if (err.status === 401 || err.status === 403) showKeyError(err);
  }
}

// ------------------------------------------------------------------------------ start

function setZoom(value) {
  document.documentElement.style.setProperty("--zoom", value);
  byId("zoom").value = value;
  localStorage.setItem(ZOOM_STORE, value);
}

function start() {
  jobs.clear();
  byId("gallery").replaceChildren();
  nextCursor = null;
  byId("err-model").textContent = "";
  byId("err-palette").textContent = "";
  loadOptions();
  loadHistory();
}

function saveKey() {
  localStorage.setItem(KEY_STORE, byId("key").value.trim());
  byId("err-key").textContent = "";
  setFormStatus(apiKey() ? "Key saved in this browser." : "Key forgotten.");
  start(); // another key owns other jobs
}

document.addEventListener("DOMContentLoaded", () => {
  byId("key").value = apiKey();
  const local = ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
  byId("key-box").open = !apiKey() && !local; // keys are off on localhost by default
  byId("key-save").addEventListener("click", saveKey);
  byId("key").addEventListener("keydown", (event) => {
    if (event.key === "Enter") saveKey();
  });
  byId("key-forget").addEventListener("click", () => {
    byId("key").value = "";
    saveKey();
  });
  byId("generate").addEventListener("submit", onSubmit);
  byId("palette").addEventListener("change", () => {
    byId("palette-n").hidden = byId("palette").value !== "auto";
  });
  byId("model").addEventListener("change", showModelVersion);
  byId("zoom").addEventListener("change", () => setZoom(byId("zoom").value));
  byId("older").addEventListener("click", loadHistory);
  byId("gallery").addEventListener("click", onImageAction);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) schedulePoll(0);
  });
  setZoom(localStorage.getItem(ZOOM_STORE) || "2");
  start();
});
