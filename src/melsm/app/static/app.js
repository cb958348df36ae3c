// The melsm page: data, model form, fitting with progress, results, comparison.
// All model logic lives on the server; this file only moves the form and shows answers.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { columns: [], levels: { key: null, columns: [] }, renderSeq: 0, formTimer: null, currentFit: null,
  maxUpload: null };
// The server accepts changes only from this page: the browser's Origin header shows it,
// and this token (in the page, readable only by the page) shows it where Origin is missing.
const TOKEN = document.querySelector('meta[name="melsm-token"]').content;

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = { errors: { form: `the server answered ${response.status}` } }; }
  return { ok: response.ok, payload };
}

function post(path, body, contentType) {
  return api(path, { method: "POST", headers: { "Content-Type": contentType, "X-Melsm-Token": TOKEN }, body });
}

function postJson(path, body) { return post(path, JSON.stringify(body), "application/json"); }

function size(bytes) { return bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(1)} MB` : `${(bytes / 2 ** 10).toFixed(0)} kB`; }

// ---- errors next to fields ------------------------------------------------------------
const FIELD_INPUTS = { response: "#response", group: "#group", name: "#model-name", association: "#association",
  chains: "#chains", warmup: "#warmup", draws: "#draws", seed: "#seed", data: "#data-select" };

function clearErrors(fields) {
  document.querySelectorAll(".error").forEach((el) => {
    if (!fields || fields.includes(el.dataset.for)) el.textContent = "";
  });
  document.querySelectorAll(".has-error").forEach((el) => el.classList.remove("has-error"));
}

function showErrors(errors) {
  for (const [field, message] of Object.entries(errors || {})) {
    const slot = document.querySelector(`.error[data-for="${field}"]`) || $("#form-error");
    slot.textContent = message;
    if (FIELD_INPUTS[field]) $(FIELD_INPUTS[field]).classList.add("has-error");
  }
}

// ---- data -----------------------------------------------------------------------------
async function loadDatasets(select) {
  const { payload } = await api("/api/datasets");
  state.maxUpload = payload.max_upload;
  const options = payload.builtin.map((n) => `<option value="${n}">${n} (built-in)</option>`)
    .concat(payload.uploaded.map((u) => `<option value="${u.key}">${escapeHtml(u.filename)} (uploaded)</option>`));
  $("#data-select").innerHTML = options.join("");
  if (select) $("#data-select").value = select;
  await loadPreview();
}

async function loadPreview() {
  clearErrors(["data"]);
  const name = $("#data-select").value;
  const { ok, payload } = await api(`/api/data?name=${encodeURIComponent(name)}`);
  if (!ok) { showErrors(payload.errors); return; }
  state.columns = payload.columns;
  const head = payload.columns.map((c) => `<th>${escapeHtml(c.name)}<br><span class="type">${c.type}` +
    `${c.missing ? `, ${c.missing} missing` : ""}${c.usable ? "" : ", name not usable"}</span></th>`).join("");
  const cell = (v) => (v === null ? "" : typeof v === "number" && !Number.isInteger(v) ? String(Number(v.toFixed(4))) : escapeHtml(v));
  const rows = payload.head.map((r) => "<tr>" + r.map((v) => `<td>${cell(v)}</td>`).join("") + "</tr>").join("");
  $("#preview").innerHTML = `<p class="meta">${payload.n_rows} rows, ${payload.columns.length} columns; the first rows:</p>` +
    `<table><thead><tr>${head}</tr></thead><tbody>${rows}</tbody></table>`;
  fillModelForm();
}

async function upload(file) {
  clearErrors(["upload"]);
  $("#upload-input").value = "";
  if (state.maxUpload !== null && file.size > state.maxUpload) {  // the server would refuse it unread
    showErrors({ upload: `the file is ${size(file.size)}; the limit is ${size(state.maxUpload)}` });
    return;
  }
  const { ok, payload } = await post(`/api/upload?filename=${encodeURIComponent(file.name)}`, file, "text/csv");
  if (!ok) { showErrors(payload.errors); return; }
  await loadDatasets(payload.key);
}

// ---- the model form ---------------------------------------------------------------------
function fillModelForm() {
  // Keep the choices made so far where the (re)loaded data still have those columns.
  // Constant columns (one value in every row) are offered nowhere; the response is numeric.
  const usable = state.columns.filter((c) => c.usable && c.level !== "constant");
  const choices = { "#response": usable.filter((c) => c.type === "numeric"), "#group": usable };
  for (const [id, columns] of Object.entries(choices)) {
    const previous = $(id).value;
    $(id).innerHTML = ['<option value="">—</option>'].concat(columns.map((c) =>
      `<option value="${escapeHtml(c.name)}">${escapeHtml(c.name)}</option>`)).join("");
    if (columns.some((c) => c.name === previous)) $(id).value = previous;
  }
  renderPredictors();
}

async function columnLevels() {
  // Each column's level given the group, computed by the server from the data.
  const name = $("#data-select").value;
  const group = $("#group").value;
  if (!group) return state.columns;
  const key = JSON.stringify([name, group]);
  if (state.levels.key !== key) {
    const { ok, payload } = await api(`/api/columns?name=${encodeURIComponent(name)}&group=${encodeURIComponent(group)}`);
    if (!ok) { showErrors(payload.errors); return state.columns; }
    state.levels = { key, columns: payload.columns };
  }
  return state.levels.columns;
}

const LEVEL_TEXT = { "level-1": ["1", "varies within groups: level 1"], "level-2": ["2", "constant within each group: level 2"],
  "": ["?", "choose the group to see the level"] };

function predictorRow(c, group) {
  const text = c.type !== "numeric";
  const name = escapeHtml(c.name);
  const box = (part, disabled, title) => `<td><input type="checkbox" data-part="${part}" data-col="${name}"` +
    `${disabled ? " disabled" : ""}${title ? ` title="${escapeHtml(title)}"` : ""} aria-label="${name} ${part}"></td>`;
  const randomBox = (part) => box(part, text, text ? "categorical: no random slope" : "");
  const betweenBox = (part) => (c.level === "level-2" ? box(part, false, "") : `<td class="na" title="${escapeHtml(
    group ? `${c.name} varies within ${group}: only level-2 covariates enter the level-2 variance functions`
      : "choose the group first")}">–</td>`);
  const [level, levelTitle] = LEVEL_TEXT[c.level] || LEVEL_TEXT[""];
  const categorical = text ? box("categorical", true, "text: always categorical").replace("<input", "<input checked")
    : box("categorical", c.categorical === "no", c.categorical === "no" ? `${c.distinct} values: too many` : "");
  return `<tr data-col="${name}" data-level="${escapeHtml(c.level)}"><td>${name}</td>` +
    `<td class="level" title="${escapeHtml(levelTitle)}">${level}</td>${categorical}` +
    box("mean_fixed") + randomBox("mean_random") + box("within_fixed") + randomBox("within_random") +
    betweenBox("between") + betweenBox("between_within") + "</tr>";
}

async function renderPredictors() {
  const sequence = ++state.renderSeq;
  const columns = await columnLevels();
  if (sequence !== state.renderSeq) return;  // a later change is being rendered
  const before = new Set([...document.querySelectorAll("#predictors tbody input:checked")]
    .map((el) => `${el.dataset.part}|${el.dataset.col}`));
  const group = $("#group").value;
  const taken = [$("#response").value, group];
  const shown = columns.filter((c) => c.usable && !taken.includes(c.name) && c.level !== "constant");
  $("#predictors tbody").innerHTML = shown.map((c) => predictorRow(c, group)).join("");
  document.querySelectorAll("#predictors tbody input").forEach((el) => {
    if (before.has(`${el.dataset.part}|${el.dataset.col}`) && !el.disabled) el.checked = true;
  });
  document.querySelectorAll('#predictors tbody input[data-part="categorical"]').forEach(categoricalChanged);
  const constant = columns.filter((c) => c.level === "constant").map((c) => c.name);
  const unusable = columns.filter((c) => !c.usable).map((c) => c.name);
  $("#predictors-note").textContent = (constant.length ? `Not offered: ${constant.join(", ")} (the same value in every ` +
    "row). " : "") + (unusable.length ? `Names a formula cannot use (rename them): ${unusable.join(", ")}.` : "");
  updateFormula();
}

function categoricalChanged(box) {
  // a categorical covariate has no random slope
  const row = box.closest("tr");
  for (const part of ["mean_random", "within_random"]) {
    const random = row.querySelector(`input[data-part="${part}"]`);
    random.disabled = box.checked;
    random.title = box.checked ? "categorical: no random slope" : "";
    if (box.checked) random.checked = false;
  }
}

function ticked(part) {
  return [...document.querySelectorAll(`#predictors input[data-part="${part}"]:checked:not(:disabled)`)]
    .map((el) => el.dataset.col);
}

function currentForm() {
  const method = document.querySelector('input[name="method"]:checked').value;
  return {
    data: $("#data-select").value, name: $("#model-name").value, response: $("#response").value,
    group: $("#group").value, mean_fixed: ticked("mean_fixed"), mean_random: ticked("mean_random"),
    mean_random_intercept: $("#mean-random-intercept").checked, within_fixed: ticked("within_fixed"),
    within_random: ticked("within_random"), within_random_intercept: $("#within-random-intercept").checked,
    between: ticked("between"), between_within: ticked("between_within"), categorical: ticked("categorical"), association: $("#association").value, method,
    chains: $("#chains").value, warmup: $("#warmup").value, draws: $("#draws").value, seed: $("#seed").value,
  };
}

function updateFormula() {
  clearTimeout(state.formTimer);
  state.formTimer = setTimeout(async () => {
    const form = currentForm();
    if (!form.response || !form.group) { $("#formula-preview").textContent = "choose the response and the group"; return; }
    const { payload } = await postJson("/api/formula", form);
    if (payload.formulas) {
      const f = payload.formulas;
      $("#formula-preview").textContent = `mean:    ${f.mean}\nwithin:  ${f.within}` + (f.between ? `\nbetween: ${betweenText(f.between)}` : "");
    } else {
      const first = Object.values(payload.errors || {})[0] || "";
      $("#formula-preview").textContent = `(incomplete: ${first})`;
    }
  }, 120);
}

// ---- fitting ----------------------------------------------------------------------------
async function runFit() {
  clearErrors();
  const form = currentForm();
  const { ok, payload } = await postJson("/api/fit", form);
  if (!ok) { showErrors(payload.errors); return; }
  $("#run").disabled = true;
  $("#progress").hidden = false;
  const label = `${form.name} by ${form.method === "ml" ? "maximum likelihood" : "MCMC"}`;
  const poll = async () => {
    const { payload: job } = await api(`/api/jobs/${payload.job}`);
    if (job.status === "queued" || job.status === "running") {
      let stage = "";
      if (job.method === "mcmc" && job.status === "running") {
        stage = job.progress && job.progress.total ? ` — sampling: ${job.progress.done} of ${job.progress.total} iterations`
          : " — warming up the sampler";
      }
      $("#progress-text").textContent = `${job.status === "queued" ? "Waiting to fit" : "Fitting"} ${label} … ` +
        `${job.seconds.toFixed(1)} s${stage}`;
      setTimeout(poll, 400);
      return;
    }
    $("#run").disabled = false;
    $("#progress").hidden = true;
    if (job.status === "error") { showErrors(job.errors); return; }
    await loadFits();
    showFit(job.fit);
    nextModelName();
  };
  poll();
}

function nextModelName() {
  const match = /^(.*?)(\d+)$/.exec($("#model-name").value);
  if (match) $("#model-name").value = `${match[1]}${Number(match[2]) + 1}`;
}

function betweenText(between) {
  // a formula, or {effect: formula} for level-2 functions of several random effects
  if (!between) return "";
  return typeof between === "string" ? between : Object.entries(between).map(([k, v]) => `${k} ${v}`).join("; ");
}

function number(value, digits) { return value === null || value === undefined ? "—" : Number(value).toFixed(digits); }

// ---- result tables (built by the server from the results' DataFrames; every cell escaped here)
function breakable(text) {
  // long names (mean:C(x)[T.a], corr:mean:Intercept,within:Intercept) may wrap after ':' and ','
  return escapeHtml(text).replace(/([:,])/g, "$1<wbr>");
}

function tableHtml(t) {
  const span = t.columns.length + 1;
  const words = new Set(t.text_columns);
  const label = t.names ? (text) => `<code>${breakable(text)}</code>` : escapeHtml;
  const head = `<tr><th scope="col">${escapeHtml(t.corner)}</th>` +
    t.columns.map((c, k) => `<th scope="col"${words.has(k) ? ' class="text"' : ""}>${breakable(c)}</th>`).join("") + "</tr>";
  const body = t.rows.map((r) => (r.block !== undefined
    ? `<tr class="block"><th colspan="${span}" scope="rowgroup">${escapeHtml(r.block)}</th></tr>`
    : `<tr><th scope="row">${r.plain ? escapeHtml(r.label) : label(r.label)}</th>` + r.cells.map((c, k) =>
      `<td class="${words.has(k) ? (c.length <= 24 ? "text short" : "text") : "num"}">${escapeHtml(c)}</td>`).join("") +
      "</tr>")).join("");
  return `<figure class="result-table" data-key="${escapeHtml(t.key)}"><figcaption>${escapeHtml(t.title)}</figcaption>` +
    `<div class="table-scroll"><table class="results" data-key="${escapeHtml(t.key)}"><thead>${head}</thead>` +
    `<tbody>${body}</tbody></table></div>${t.note ? `<p class="note">${escapeHtml(t.note)}</p>` : ""}</figure>`;
}

function formulaLines(fit) {
  const f = fit.formulas;
  const lines = [["mean", f.mean], ["within", f.within]];
  if (typeof f.between === "string") lines.push(["between", f.between]);
  else if (f.between) for (const [effect, formula] of Object.entries(f.between)) lines.push([`between (${effect})`, formula]);
  const code = lines.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd><code>${escapeHtml(v)}</code></dd>`).join("");
  return code + `<dt>association</dt><dd>${escapeHtml(fit.association)}</dd>` +
    `<dt>data</dt><dd>${escapeHtml(fit.data_label || fit.data)}: ${fit.n_obs} observations, ${fit.n_groups} groups; ` +
    `${number(fit.seconds, 2)} s</dd>`;
}

function showFit(fit) {
  state.currentFit = fit.id;
  $("#result").hidden = false;
  $("#result-title").textContent = `${fit.name} — ${fit.method === "ml" ? "maximum likelihood" : "MCMC"}`;
  $("#result-formulas").innerHTML = formulaLines(fit);
  const converged = `<b>Converged: <span id="result-converged">${fit.converged ? "yes" : "NO"}</span></b>`;
  $("#result-numbers").innerHTML = fit.method === "ml"
    ? `<b>Log-likelihood: <span id="result-loglik" data-value="${fit.loglik}">${number(fit.loglik, 4)}</span></b>` +
      `<b>AIC: ${number(fit.aic, 2)}</b><b>BIC: ${number(fit.bic, 2)}</b><b>Parameters: ${fit.n_params}</b>${converged}`
    : `<b>DIC: <span id="result-dic" data-value="${fit.dic}">${number(fit.dic, 2)}</span></b><b>pD: ${number(fit.p_d, 2)}</b>${converged}`;
  $("#result-warnings").innerHTML = fit.warnings.map((w) => `<li>${escapeHtml(w)}</li>`).join("");
  $("#result-tables").innerHTML = (fit.tables || []).map(tableHtml).join("");
  $("#result-summary").textContent = fit.summary;
  $("#download-re").href = `/api/fits/${fit.id}/random_effects.csv`;
  $("#download-json").href = `/api/fits/${fit.id}/fit.json`;
  $("#download-report").href = `/api/fits/${fit.id}/report.html`;
  $("#result-figures").innerHTML = fit.figures.map((fig) =>
    `<figure data-key="${escapeHtml(fig.key)}"><img alt="${escapeHtml(fig.title)}" src="data:image/png;base64,${fig.png}">` +
    `<figcaption>${escapeHtml(fig.title)}</figcaption></figure>`).join("");
}

// ---- fitted models and comparison ------------------------------------------------------
async function loadFits() {
  const { payload } = await api("/api/fits");
  $("#no-fits").hidden = payload.length > 0;
  $("#fits").hidden = payload.length === 0;
  $("#fits tbody").innerHTML = payload.map((fit) => {
    const value = fit.method === "ml" ? `logL ${number(fit.loglik, 4)}` : `DIC ${number(fit.dic, 2)}`;
    const f = fit.formulas;
    return `<tr><td><input type="checkbox" class="fit-select" value="${fit.id}" aria-label="select ${escapeHtml(fit.name)}"></td>` +
      `<td class="name" data-id="${fit.id}">${escapeHtml(fit.name)}</td><td>${fit.method.toUpperCase()}</td><td class="value">${value}${fit.converged ? "" : " (not converged)"}</td>` +
      `<td class="meta">${escapeHtml(f.mean)}; ${escapeHtml(f.within)}${f.between ? "; " + escapeHtml(betweenText(f.between)) : ""}</td></tr>`;
  }).join("");
  updateReportLink();
}

function selectedFits() { return [...document.querySelectorAll(".fit-select:checked")].map((el) => Number(el.value)); }

function updateReportLink() {
  const ids = selectedFits();
  $("#report-link").href = ids.length ? `/api/report.html?ids=${ids.join(",")}` : "#";
}

async function compareFits() {
  clearErrors(["compare"]);
  $("#compare-table").innerHTML = "";
  $("#compare-notes").innerHTML = "";
  $("#compare-button").disabled = true;
  const { ok, payload } = await postJson("/api/compare", { ids: selectedFits() });
  $("#compare-button").disabled = false;
  if (!ok) { showErrors(payload.errors); return; }
  $("#compare-table").innerHTML = payload.tables.map(tableHtml).join("");
  $("#compare-notes").innerHTML = payload.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join("");
}

// ---- wiring -----------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("#data-select").addEventListener("change", loadPreview);
  $("#upload-input").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  $("#response").addEventListener("change", renderPredictors);
  $("#group").addEventListener("change", renderPredictors);
  $("#predictors").addEventListener("change", (e) => {
    if (e.target.dataset.part === "categorical") categoricalChanged(e.target);
  });
  $("#model-section").addEventListener("change", updateFormula);
  $("#model-section").addEventListener("input", updateFormula);
  document.querySelectorAll('input[name="method"]').forEach((el) => el.addEventListener("change", () => {
    $("#mcmc-options").hidden = document.querySelector('input[name="method"]:checked').value !== "mcmc";
  }));
  $("#run").addEventListener("click", runFit);
  $("#compare-button").addEventListener("click", compareFits);
  $("#fits").addEventListener("change", updateReportLink);
  $("#fits").addEventListener("click", async (e) => {
    if (!e.target.classList.contains("name")) return;
    const { payload } = await api(`/api/fits/${e.target.dataset.id}`);
    showFit(payload);
    $("#result").scrollIntoView();
  });
  $("#report-link").addEventListener("click", (e) => {
    if (!selectedFits().length) { e.preventDefault(); showErrors({ compare: "tick at least one fitted model" }); }
  });
  loadDatasets().then(loadFits);
});
