// The rdzv status page: polls /api/runs every second and redraws. Every value that came
// from a node or an operator is put in the page as text (textContent), never as HTML.
"use strict";

const token = new URLSearchParams(window.location.search).get("token");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "data") Object.assign(node.dataset, value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function attributes(attrs) {
  return Object.entries(attrs || {})
    .filter(([key]) => key !== "host")
    .map(([key, value]) => `${key}=${value}`)
    .join(", ");
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

function runSection(run) {
  const section = el("section", { class: "run", data: { run: run.run_id } });
  if (!run.exists) {
    section.append(el("h2", {}, run.run_id), el("p", { class: "note" }, "no rendezvous state yet"));
    return section;
  }
  const [low, high] = run.nnodes || [null, null];
  const state = run.state || "";
  section.append(el("h2", {},
    el("span", { class: "run-id" }, run.run_id),
    el("span", { class: `state ${state.replace(" ", "-")}` }, state),
    el("span", {}, `round ${run.round}`)));
  if (high) {
    section.append(el("p", {},
      el("progress", { max: high, value: Math.min(run.joined, high) }),
      ` ${run.joined} joined (min ${low}, max ${high})`));
  }
  if (run.closed_reason) section.append(el("p", { class: "note" }, `closed: ${run.closed_reason}`));
  if (run.members_round !== null && run.members_round !== undefined && run.members_round !== run.round) {
    section.append(el("p", { class: "note" },
      `round ${run.round} is gathering; the members of round ${run.members_round}:`));
  }
  const lost = new Set(run.lost || []);
  const rows = run.members.map((m) => {
    const gone = lost.has(m.node);
    const cls = gone ? "lost" : m.stale ? "stale" : "";
    const beat = `${m.beat_age.toFixed(1)} s${gone ? " (lost)" : m.stale ? " (stale)" : ""}`;
    return el("tr", { class: `member ${cls}`, data: { node: m.node, rank: String(m.rank) } },
      el("td", { class: "num rank" }, m.rank), el("td", { class: "node" }, m.node),
      el("td", { class: "host" }, (m.attributes || {}).host || ""),
      el("td", { class: "beat" }, beat), el("td", { class: "attrs" }, attributes(m.attributes)));
  });
  for (const spare of run.spares || []) {
    rows.push(el("tr", { class: "spare", data: { node: spare.node } },
      el("td", {}, "spare"), el("td", {}, spare.node), el("td", {}, ""),
      el("td", {}, spare.why), el("td", {}, attributes(spare.attributes))));
  }
  for (const node of lost) {
    if (!run.members.some((m) => m.node === node)) {
      rows.push(el("tr", { class: "lost", data: { node } },
        el("td", {}, "lost"), el("td", {}, node), el("td", {}), el("td", {}), el("td", {})));
    }
  }
  section.append(table(["rank", "node", "host", "heartbeat", "attributes"], rows));
  const excluded = Object.entries(run.exclusions || {})
    .filter(([, r]) => r.seconds_left === null || r.seconds_left > 0);
  for (const [subject, record] of excluded) {
    const how = record.seconds_left === null ? "permanently" : `${Math.round(record.seconds_left)} s left`;
    section.append(el("p", { class: "note excluded" }, `excluded ${subject} (${how}): ${record.reason}`));
  }
  if (run.waiting_or_lost) section.append(el("p", { class: "note" }, `${run.waiting_or_lost} change(s) pending`));
  const history = (run.history || []).slice(-10).reverse().map((h) =>
    el("tr", { class: `round ${h.outcome}` },
      el("td", { class: "num" }, h.round), el("td", {}, h.outcome),
      el("td", { class: "num" }, h.world_size ?? ""), el("td", {}, when(h.started)),
      el("td", { class: "num" }, h.seconds === null || h.seconds === undefined ? "" : `${h.seconds.toFixed(2)} s`),
      el("td", {}, h.joined ? `+${h.joined.length} / -${h.left.length}` : ""),
      el("td", {}, h.failure || "")));
  section.append(el("h3", {}, "rounds"),
    table(["round", "outcome", "world", "started", "took", "joined / left", "why"], history));
  return section;
}

async function refresh() {
  const updated = document.getElementById("updated");
  try {
    const query = token ? `?token=${encodeURIComponent(token)}` : "";
    const reply = await fetch(`api/runs${query}`, { cache: "no-store" });
    if (!reply.ok) throw new Error(`${reply.status} ${(await reply.json()).error || ""}`);
    const data = await reply.json();
    document.getElementById("runs").replaceChildren(...data.runs.map(runSection));
    if (!data.runs.length) {
      document.getElementById("runs").append(el("p", { class: "note" }, "no runs in this store yet"));
    }
    updated.className = "";
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    updated.className = "error";
    updated.textContent = `cannot read the status: ${error.message}`;
  }
}

refresh();
setInterval(refresh, 1000);
