// The jaxhash search page: plain JavaScript over the JSON API (no build step).
"use strict";

const $ = (s) => document.querySelector(s);
const state = { settings: null, models: [], indexes: [], queryFile: null, queryImageId: null };

function show(text, ok = false) {
  const box = $("#message");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = !text;
  if (ok) setTimeout(() => { if (box.textContent === text) box.hidden = true; }, 4000);
}

function headers() {
  const token = localStorage.getItem("jaxhash-token") || "";
  return token ? { "Authorization": "Bearer " + token } : {};
}

async function api(path, options = {}) {
  const init = { ...options, headers: { ...headers(), ...(options.headers || {}) } };
  if (options.json !== undefined) {
    init.body = JSON.stringify(options.json);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    let detail = body && body.detail !== undefined ? body.detail : response.statusText;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
    throw new Error(detail || `error ${response.status}`);
  }
  return body;
}

const bytes = (n) => n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + " GB" : n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MB"
  : n >= 1024 ? (n / 1024).toFixed(0) + " kB" : n + " B";
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
};

// -- tabs ----------------------------------------------------------------------------------------
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
    document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === "tab-" + tab.dataset.tab));
    show("");  // a message belongs to the tab it came from
    refresh();
    if (tab.dataset.tab === "maintain") refreshDisk();
  });
}

// -- lists ---------------------------------------------------------------------------------------
function fillSelect(select, items, label, empty = "") {
  const keep = select.value;
  select.replaceChildren(...(items.length || !empty ? items.map((it) => el("option", { value: it.id }, label(it)))
    : [el("option", { value: "", disabled: "" }, empty)]));
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

async function refresh() {
  try {
    [state.models, state.indexes] = await Promise.all([api("/api/models"), api("/api/indexes")]);
  } catch (e) { show("cannot reach the server: " + e.message); return; }
  const modelName = (id) => { const m = state.models.find((x) => x.id === id); return m ? m.name : "deleted"; };
  const noIndex = state.models.some((m) => m.status === "ready") ? "no index yet: create one on the Indexes tab"
    : "no index yet: train or import a model first";
  fillSelect($("#search-index"), state.indexes, (i) => `${i.name} (${i.ntotal} images, ${modelName(i.model_id)})`, noIndex);
  fillSelect($("#index-target"), state.indexes, (i) => `${i.id}: ${i.name}`, noIndex);
  fillSelect($("#new-index-model"), state.models.filter((m) => m.status === "ready"), (m) => `${m.id}: ${m.name} (${m.method}, ${m.n_bits} bits)`,
    "no model yet: train one on the Train tab, or import one");
  updateSearchOptions();
  const itable = $("#index-table tbody");
  itable.replaceChildren(...state.indexes.map((i) => el("tr", {},
    el("td", {}, i.id), el("td", {}, i.name), el("td", {}, `${i.model_id ?? "-"} ${modelName(i.model_id)}`), el("td", {}, i.kind),
    el("td", {}, i.ntotal), el("td", {}, `${bytes(i.index_bytes)} codes, ${bytes(i.image_bytes)} images`),
    el("td", {},
      el("button", { class: "plain", onclick: () => act(`/api/indexes/${i.id}/rebuild`, "POST", "rebuilding index " + i.id) }, "Rebuild"), " ",
      el("button", { class: "danger", onclick: () => confirm(`Empty index ${i.name}?`) && act(`/api/indexes/${i.id}/clear`, "POST", "index emptied") }, "Clear"), " ",
      el("button", { class: "danger", onclick: () => confirm(`Delete index ${i.name}?`) && act(`/api/indexes/${i.id}`, "DELETE", "index deleted") }, "Delete")))));
  const mtable = $("#model-table tbody");
  mtable.replaceChildren(...state.models.map((m) => {
    const s = m.summary || {};
    const acc = s.validation_accuracy == null ? "" : `, validation accuracy ${s.validation_accuracy.toFixed(3)}`;
    const trained = s.trained_at ? `${s.trained_at}, ${s.seconds} s, ${s.iterations} iterations${acc}` : (s.imported_from ? "imported" : "");
    const curveCell = el("td", {});
    if (m.job_id) api(`/api/jobs/${m.job_id}`).then((j) => curveCell.replaceChildren(curve(j.curve, 180, 60))).catch(() => {});
    return el("tr", {}, el("td", {}, m.id), el("td", {}, m.name), el("td", {}, m.method), el("td", {}, m.n_bits), el("td", {}, m.status),
      el("td", {}, trained), curveCell,
      el("td", {}, el("button", { class: "danger", onclick: () => deleteModel(m) }, "Delete")));
  }));
  await refreshJobs();
  if ($("#tab-maintain").classList.contains("active")) {
    api("/api/health").then((h) => { $("#health").textContent = JSON.stringify(h, null, 2); }).catch((e) => show(e.message));
  }
}

function refreshDisk() {  // on opening the tab and after freeing space only: it walks the data folder
  api("/api/disk").then((d) => {
    const parts = Object.entries(d.bytes).filter(([, n]) => n > 0).map(([k, n]) => `${k === "jobs" ? "checkpoints" : k} ${bytes(n)}`);
    $("#disk").textContent = `The data folder holds ${bytes(d.total_bytes)}` + (parts.length ? ` (${parts.join(", ")})` : "") + ". " +
      (d.unused_images || d.spare_checkpoint_bytes ? `Freeing space would remove ${d.unused_images} image` +
        `${d.unused_images === 1 ? "" : "s"} that no index holds (${bytes(d.unused_image_bytes)}) and ` +
        `${bytes(d.spare_checkpoint_bytes)} of checkpoints no job can resume from.` : "Nothing to free: every file is in use.");
    $("#disk-free").disabled = !(d.unused_images || d.spare_checkpoint_bytes);
  }).catch((e) => show(e.message));
}

async function deleteModel(m) {
  if (m.indexes.length) {
    if (!confirm(`Model ${m.name} is used by index ${m.indexes.join(", ")}. Delete the model and those indexes?`)) return;
    return act(`/api/models/${m.id}?with_indexes=true`, "DELETE", "model and its indexes deleted");
  }
  if (confirm(`Delete model ${m.name}?`)) return act(`/api/models/${m.id}`, "DELETE", "model deleted");
}

$("#disk-free").addEventListener("click", async () => {
  try {
    const freed = await api("/api/disk/free", { method: "POST" });
    const n = (count, what) => `${count} ${what}${count === 1 ? "" : "s"}`;
    show(`freed ${bytes(freed.bytes_freed)}: ${n(freed.images_removed, "image file")}, ${n(freed.checkpoints_removed, "checkpoint folder")}`, true);
  } catch (e) { show(e.message); }
  refresh();
  refreshDisk();
});

async function act(path, method, done, json) {
  try { await api(path, { method, json }); show(done, true); } catch (e) { show(e.message); }
  refresh();
}

// -- search --------------------------------------------------------------------------------------
function updateSearchOptions() {
  const index = state.indexes.find((i) => String(i.id) === $("#search-index").value);
  $("#top-classes-box").hidden = !(index && index.kind === "partitioned");
}
$("#search-index").addEventListener("change", updateSearchOptions);

function setQuery(file) {
  state.queryFile = file; state.queryImageId = null;
  const img = $("#query-preview");
  img.src = URL.createObjectURL(file); img.hidden = false;
  $("#drop-text").firstChild.textContent = file.name + " — drop another, or ";
}
$("#query-file").addEventListener("change", (e) => { if (e.target.files[0]) { setQuery(e.target.files[0]); runSearch(); } });
const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) { setQuery(e.dataTransfer.files[0]); runSearch(); }
});
$("#search-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });

async function runSearch() {
  const indexId = $("#search-index").value;
  if (!indexId) return show("there is no index yet: create one on the Indexes tab");
  if (!state.queryFile && state.queryImageId === null) return show("pick or drop a query image first");
  const form = new FormData();
  form.append("index_id", indexId);
  form.append("k", $("#search-k").value || "20");
  form.append("rerank", $("#search-rerank").checked ? String(Math.max(1000, 10 * Number($("#search-k").value || 20))) : "0");
  form.append("top_classes", $("#search-top").value || "1");
  if (state.queryImageId !== null) form.append("image_id", state.queryImageId); else form.append("file", state.queryFile);
  let answer;
  try { answer = await api("/api/search", { method: "POST", body: form }); } catch (e) { return show(e.message); }
  show("");
  const predicted = answer.predicted_label ?? (answer.predicted_class ?? null);
  $("#search-info").textContent = `${answer.results.length} of ${answer.ntotal} images by ${answer.measure} distance in ${(answer.seconds * 1000).toFixed(1)} ms`
    + (predicted !== null ? `; the model sees class ${predicted}` : "") + (answer.note ? `. ${answer.note}` : "");
  $("#results").dataset.query = state.queryImageId !== null ? `image ${state.queryImageId}` : `file ${state.queryFile.name}`;
  $("#results").replaceChildren(...answer.results.map((r) => el("div", {
    class: "result", title: `image ${r.image_id}: click to search with it`, "data-id": r.image_id,
    onclick: () => searchWith(r.image_id) },
    el("img", { src: `/api/images/${r.image_id}/thumbnail`, alt: r.name || "" }),
    el("div", { class: "sim" }, `${(100 * r.similarity).toFixed(2)}%`),
    el("div", { class: "meta" }, `Hamming ${r.hamming}` + (answer.measure === "euclidean" ? `, d ${r.distance.toFixed(3)}` : "")),
    el("div", { class: "meta" }, [r.label, r.name].filter(Boolean).join(" / ")),
    el("button", { class: "danger small", title: "remove this image from the index",
      onclick: (e) => { e.stopPropagation(); removeFromIndex(Number(indexId), r.image_id); } }, "remove"))));
}

async function removeFromIndex(indexId, imageId) {
  if (!confirm(`Remove image ${imageId} from this index? (The file stays for other indexes.)`)) return;
  try {
    await api(`/api/indexes/${indexId}/remove`, { method: "POST", json: { image_ids: [imageId] } });
    show(`image ${imageId} removed`, true);
    document.querySelector(`#results .result[data-id="${imageId}"]`)?.remove();
  } catch (e) { show(e.message); }
  refresh();
}

function searchWith(imageId) {
  state.queryImageId = imageId; state.queryFile = null;
  const img = $("#query-preview");
  img.src = `/api/images/${imageId}/thumbnail`; img.hidden = false;
  $("#drop-text").firstChild.textContent = `image ${imageId} — drop another, or `;
  runSearch();
}

// -- indexes -------------------------------------------------------------------------------------
$("#index-create").addEventListener("submit", async (e) => {
  e.preventDefault();
  const model = $("#new-index-model").value;
  if (!model) return show("there is no ready model: train one on the Train tab, or import one on the Maintenance tab");
  await act("/api/indexes", "POST", "index created",
    { name: $("#new-index-name").value, model_id: Number(model), partitioned: $("#new-index-partitioned").checked });
});

$("#index-add").addEventListener("submit", async (e) => {
  e.preventDefault();
  const index = $("#index-target").value;
  if (!index) return show("create an index first");
  const zip = $("#index-zip").files[0];
  try {
    if (zip) {
      const form = new FormData(); form.append("file", zip);
      await api(`/api/indexes/${index}/zip`, { method: "POST", body: form });
    } else {
      await api(`/api/indexes/${index}/folder`, { method: "POST", json: { folder: $("#index-folder").value } });
    }
    show("indexing started", true);
  } catch (err) { show(err.message); }
  refreshJobs();
});

// -- training ------------------------------------------------------------------------------------
$("#train-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const zip = $("#train-zip").files[0];
  const fields = { name: $("#train-name").value, method: $("#train-method").value, n_bits: Number($("#train-bits").value),
    preset: $("#train-preset").value };
  if ($("#train-epochs").value) fields.epochs = Number($("#train-epochs").value);
  if ($("#train-min").value) fields.min_images_per_class = Number($("#train-min").value);
  try {
    if (zip) {
      const form = new FormData();
      for (const [k, v] of Object.entries(fields)) form.append(k, String(v));
      form.append("file", zip);
      await api("/api/train/zip", { method: "POST", body: form });
    } else {
      await api("/api/train", { method: "POST", json: { ...fields, folder: $("#train-folder").value } });
    }
    show("training queued", true);
  } catch (err) { show(err.message); }
  refresh();
});

// -- jobs ----------------------------------------------------------------------------------------
function curve(points, width = 520, height = 170) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height); svg.setAttribute("class", "curve");
  if (!points || !points.length) return svg;
  const pad = 24, n = points.length;
  const x = (i) => pad + (n === 1 ? 0 : (i * (width - 2 * pad)) / (n - 1));
  const series = [["loss", "#2456c7"], ["accuracy", "#98a2b3"], ["val_accuracy", "#067647"]];
  const maxLoss = Math.max(...points.map((p) => p.loss || 0), 1e-9);
  for (const [name, color] of series) {
    const values = points.map((p) => p[name]);
    if (values.every((v) => v == null)) continue;
    const scale = name === "loss" ? maxLoss : 1;
    const y = (v) => height - pad - (v / scale) * (height - 2 * pad);
    const path = document.createElementNS(ns, "polyline");
    path.setAttribute("points", values.map((v, i) => v == null ? "" : `${x(i)},${y(v)}`).join(" "));
    path.setAttribute("fill", "none"); path.setAttribute("stroke", color); path.setAttribute("stroke-width", "2");
    svg.append(path);
  }
  if (width >= 300) {
    const legend = document.createElementNS(ns, "text");
    legend.setAttribute("x", pad); legend.setAttribute("y", 12);
    legend.textContent = `loss (blue, max ${maxLoss.toFixed(2)}), accuracy (grey: train, green: validation)`;
    svg.append(legend);
  }
  return svg;
}

function jobCard(job) {
  const pct = job.total ? Math.round((100 * job.done) / job.total) : (job.status === "done" ? 100 : 0);
  const what = job.kind === "train" ? `train ${job.params.method} "${job.params.name}"` : (job.kind === "rebuild" ? `rebuild index ${job.params.index_id}` : `add images to index ${job.params.index_id}`);
  const head = el("div", { class: "head" }, el("b", {}, `#${job.id}`), el("span", {}, what),
    el("span", { class: "status " + job.status }, job.status),
    el("progress", { max: 100, value: pct }), el("span", { class: "pct" }, `${pct}%`),
    el("span", {}, job.kind === "train" ? `epoch ${job.done}/${job.total || "?"}` : `${job.done}/${job.total} images, ${job.rate.toFixed(0)}/s`));
  const card = el("div", { class: "job", "data-id": job.id, "data-status": job.status, onclick: () => showLog(job.id) }, head,
    el("div", { class: "msg" }, job.message));
  if (job.status === "queued" || job.status === "running") {
    head.append(el("button", { class: "danger", title: "what it did so far stays", onclick: (e) => { e.stopPropagation();
      if (!confirm(`Cancel job ${job.id}?`)) return;
      api(`/api/jobs/${job.id}/cancel`, { method: "POST" }).then((r) => show(r.status === "cancelled" ? "job cancelled"
        : "the job stops after its current epoch or chunk of images", true)).catch((err) => show(err.message)).then(refresh); } },
      "Cancel"));
  }
  if (job.status === "interrupted" || job.status === "failed" || job.status === "cancelled") {
    head.append(el("button", { class: "plain", onclick: (e) => { e.stopPropagation(); act(`/api/jobs/${job.id}/resume`, "POST", "job queued again"); } },
      job.kind !== "train" ? "Run again" : job.done > 0 ? "Resume from checkpoint" : "Start again"));
  }
  if (job.kind === "train" && job.status === "done" && job.result.trained_at) {
    const r = job.result;
    card.append(el("div", { class: "summary" }, `Trained ${r.trained_at} in ${r.seconds} s, ${r.iterations} iterations, ` +
      `validation accuracy ${r.validation_accuracy == null ? "n/a" : r.validation_accuracy.toFixed(3)}; model ${r.model_id}.`));
  }
  return card;
}

async function refreshJobs() {
  let jobs;
  try { jobs = await api("/api/jobs?limit=30"); } catch (e) { return; }
  $("#index-jobs").replaceChildren(...jobs.filter((j) => j.kind !== "train").slice(0, 8).map(jobCard));
  $("#all-jobs").replaceChildren(...jobs.map(jobCard));
  const trainJobs = jobs.filter((j) => j.kind === "train").slice(0, 5);
  const cards = [];
  for (const j of trainJobs) {
    const card = jobCard(j);
    if (j.status === "running" || j === trainJobs[0]) {
      try { card.append(curve((await api(`/api/jobs/${j.id}`)).curve)); } catch (e) { /* shown next time */ }
    }
    cards.push(card);
  }
  $("#train-jobs").replaceChildren(...cards);
  const busy = jobs.some((j) => j.status === "running" || j.status === "queued");
  clearTimeout(state.timer);
  state.timer = setTimeout(busy ? refresh : refreshJobs, busy ? 700 : 3000);
}

async function showLog(id) {
  try { const job = await api(`/api/jobs/${id}`); $("#job-log").textContent = `job ${id} (${job.kind}, ${job.status})\n` + job.log; }
  catch (e) { show(e.message); }
}

$("#import-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act("/api/models/import", "POST", "model imported", { path: $("#import-path").value });
});

// -- start ---------------------------------------------------------------------------------------
(async function start() {
  try { state.settings = await api("/api/settings"); } catch (e) { return show("cannot reach the server: " + e.message); }
  const s = state.settings;
  $("#token-box").hidden = !s.token_required;
  $("#token").value = localStorage.getItem("jaxhash-token") || "";
  $("#token").addEventListener("change", (e) => localStorage.setItem("jaxhash-token", e.target.value));
  const methodNames = { "cnn-hash": "cnn-hash: a learned hash layer (Zelensky et al.)",
    "cnn-softmax": "cnn-softmax: class probabilities (Hu & Feng)" };
  fillSelect($("#train-method"), s.train_methods.map((m) => ({ id: m })), (m) => methodNames[m.id] || m.id);
  fillSelect($("#train-preset"), s.presets.map((p) => ({ id: p })), (p) => p.id);
  $("#train-preset").value = "cpu";
  $("#train-min").placeholder = s.min_images_per_class;
  $("#train-hint").textContent = `A folder (or zip) with one sub-folder per class, at least two classes. Every class needs at least ` +
    `${s.min_images_per_class} images` + (s.min_images_per_class >= s.paper_min_images_per_class ? ", as Hu & Feng recommend"
      : ` here (Hu & Feng recommend ${s.paper_min_images_per_class} or more)`) + `: fewer images per class ` +
    `give a classifier that has seen too little. A tenth of each class is held out to report validation accuracy. Training runs in the ` +
    `background, one at a time, with a checkpoint every epoch: if the server stops, resume the job here.`;
  $("#roots-hint").textContent = s.allow_roots.length ? `Server folders must be inside: ${s.allow_roots.join(", ")}.`
    : "This server reads no server folders (started without --allow-root): upload a zip file.";
  refresh();
})();
