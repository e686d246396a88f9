// cranewatch console: state changes (with the CSRF token) and the live monitor stream.
// Everything received is put into the page as text (textContent), never as HTML.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  let data = {};
  try { data = await response.json(); } catch { data = {}; }
  return { ok: response.ok, status: response.status, data };
}

function cell(row, text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text ?? "";
  row.appendChild(td);
  return td;
}

function badge(text) {
  const span = document.createElement("span");
  span.className = `badge ${text}`;
  span.textContent = text;
  return span;
}

document.getElementById("logout")?.addEventListener("click", async () => {
  await post("/logout", {});
  window.location.assign("/login");
});

const triage = document.getElementById("triage");
triage?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(triage);
  const body = { crane: triage.dataset.crane, note: form.get("note") };
  if (form.get("state")) body.state = form.get("state");
  if (form.get("until")) body.until = form.get("until");
  if (form.get("evidence")) body.evidence = Number(form.get("evidence"));
  if (form.get("assign")) body.assign = form.get("assign");
  if (body.assign && body.state) delete body.assign; // a state change and an assignment are two records
  const result = document.getElementById("triage-result");
  const answer = await post(`/api/findings/${encodeURIComponent(triage.dataset.finding)}/triage`, body);
  if (answer.ok) {
    result.textContent = "recorded";
    window.location.reload();
  } else {
    result.textContent = `refused (${answer.status}): ${answer.data.error ?? ""}`;
  }
});

const sign = document.getElementById("sign-gate");
sign?.addEventListener("click", async () => {
  const out = document.getElementById("gate-result");
  out.textContent = "deciding…";
  const answer = await post(`/api/cranes/${encodeURIComponent(sign.dataset.crane)}/gate`, {});
  if (answer.ok) {
    out.textContent = `${answer.data.decision}, signed by ${answer.data.signed_by}`;
    window.location.reload();
  } else {
    out.textContent = `refused (${answer.status}): ${answer.data.error ?? ""}`;
  }
});

const live = document.getElementById("live");
if (live) {
  const state = document.getElementById("stream-state");
  const params = new URLSearchParams({ after: live.dataset.cursor });
  if (live.dataset.crane) params.set("crane", live.dataset.crane);
  const source = new EventSource(`/api/monitor/events?${params}`);
  source.addEventListener("open", () => { state.textContent = "live"; });
  source.addEventListener("error", () => { state.textContent = "reconnecting"; });
  source.addEventListener("finding", (event) => {
    const f = JSON.parse(event.data);
    const body = live.tBodies[0];
    body.querySelector(`tr[data-id="${CSS.escape(f.id)}"]`)?.remove();
    const row = document.createElement("tr");
    row.dataset.id = f.id;
    row.className = "fresh";
    cell(row, (f.recorded ?? "").replace("T", " ").slice(0, 19));
    cell(row, f.crane);
    cell(row, f.sensor);
    cell(row, "").appendChild(badge(f.severity));
    const link = document.createElement("a");
    link.href = `/crane/${encodeURIComponent(f.crane)}/finding/${encodeURIComponent(f.id)}`;
    link.textContent = f.title;
    cell(row, "").appendChild(link);
    cell(row, `${f.src ?? ""}${f.dst ? " → " + f.dst : ""}`, "mono");
    cell(row, String(f.count));
    body.prepend(row);
  });
}
