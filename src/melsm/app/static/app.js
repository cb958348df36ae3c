// The melsm page: data, model form, fitting with progress, results, comparison.
// All model logic lives on the server; this file only moves the form and shows answers.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { columns: [], formTimer: null, currentFit: null, maxUpload: null };
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
  const usable = state.columns.filter((c) => c.usable);
  const names = usable.map((c) => c.name);
  const options = ['<option value="">—</option>'].concat(usable.map((c) => `<option value="${c.name}">${c.name}</option>`));
  for (const id of ["#response", "#group"]) {
    const previous = $(id).value;
    $(id).innerHTML = options.join("");
    if (names.includes(previous)) $(id).value = previous;
  }
  renderPredictors();
}

function renderPredictors() {
  const before = new Set([...document.querySelectorAll("#predictors tbody input:checked")]
    .map((el) => `${el.dataset.part}|${el.dataset.col}`));
  const taken = [$("#response").value, $("#group").value];
  const rows = state.columns.filter((c) => c.usable && !taken.includes(c.name)).map((c) => {
    const box = (part) => {
      const disabled = part.endsWith("random") && c.type !== "numeric" ? " disabled title=\"text column: no random slope\"" : "";
      return `<td><input type="checkbox" data-part="${part}" data-col="${c.name}"${disabled} aria-label="${c.name} ${part}"></td>`;
    };
    return `<tr><td>${c.name}${c.type === "text" ? ' <span class="meta">(categorical)</span>' : ""}</td>` +
      box("mean_fixed") + box("mean_random") + box("within_fixed") + box("within_random") + box("between") +
      box("between_within") + "</tr>";
  });
  $("#predictors tbody").innerHTML = rows.join("");
  document.querySelectorAll("#predictors tbody input").forEach((el) => {
    if (before.has(`${el.dataset.part}|${el.dataset.col}`) && !el.disabled) el.checked = true;
  });
  updateFormula();
}

function ticked(part) {
  return [...document.querySelectorAll(`#predictors input[data-part="${part}"]:checked`)].map((el) => el.dataset.col);
}

function currentForm() {
  const method = document.querySelector('input[name="method"]:checked').value;
  return {
    data: $("#data-select").value, name: $("#model-name").value, response: $("#response").value,
    group: $("#group").value, mean_fixed: ticked("mean_fixed"), mean_random: ticked("mean_random"),
    mean_random_intercept: $("#mean-random-intercept").checked, within_fixed: ticked("within_fixed"),
    within_random: ticked("within_random"), within_random_intercept: $("#within-random-intercept").checked,
    between: ticked("between"), between_within: ticked("between_within"), association: $("#association").value, method,
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

function showFit(fit) {
  state.currentFit = fit.id;
  $("#result").hidden = false;
  $("#result-title").textContent = `${fit.name} — ${fit.method === "ml" ? "maximum likelihood" : "MCMC"}`;
  const f = fit.formulas;
  $("#result-formulas").textContent = `mean: ${f.mean}   within: ${f.within}` + (f.between ? `   between: ${betweenText(f.between)}` : "") +
    `   association: ${fit.association}   ${fit.n_obs} observations, ${fit.n_groups} groups, ${number(fit.seconds, 2)} s`;
  const converged = `<b>Converged: <span id="result-converged">${fit.converged ? "yes" : "NO"}</span></b>`;
  $("#result-numbers").innerHTML = fit.method === "ml"
    ? `<b>Log-likelihood: <span id="result-loglik" data-value="${fit.loglik}">${number(fit.loglik, 4)}</span></b>` +
      `<b>AIC: ${number(fit.aic, 2)}</b><b>BIC: ${number(fit.bic, 2)}</b><b>Parameters: ${fit.n_params}</b>${converged}`
    : `<b>DIC: <span id="result-dic" data-value="${fit.dic}">${number(fit.dic, 2)}</span></b><b>pD: ${number(fit.p_d, 2)}</b>${converged}`;
  $("#result-warnings").innerHTML = fit.warnings.map((w) => `<li>${escapeHtml(w)}</li>`).join("");
  $("#result-summary").textContent = fit.summary;
  $("#download-re").href = `/api/fits/${fit.id}/random_effects.csv`;
  $("#download-json").href = `/api/fits/${fit.id}/fit.json`;
  $("#download-report").href = `/api/fits/${fit.id}/report.html`;
  $("#result-figures").innerHTML = fit.figures.map((fig) =>
    `<figure data-key="${fig.key}"><img alt="${escapeHtml(fig.title)}" src="data:image/png;base64,${fig.png}">` +
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
      `<td class="name" data-id="${fit.id}">${escapeHtml(fit.name)}</td><td>${fit.method.toUpperCase()}</td><td>${value}${fit.converged ? "" : " (not converged)"}</td>` +
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
  $("#compare-button").disabled = true;
  const { ok, payload } = await postJson("/api/compare", { ids: selectedFits() });
  $("#compare-button").disabled = false;
  if (!ok) { showErrors(payload.errors); return; }
  $("#compare-table").innerHTML = payload.html;
}

// ---- wiring -----------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("#data-select").addEventListener("change", loadPreview);
  $("#upload-input").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  $("#response").addEventListener("change", renderPredictors);
  $("#group").addEventListener("change", renderPredictors);
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
