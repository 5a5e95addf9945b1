// The status page: polls api/status every second and redraws the tables; previews refresh when a newer frame is there.
"use strict";

const POLL_MS = 1000;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  return td;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell("none");
    td.colSpan = document.querySelectorAll(`#${tableId} thead th`).length;
    td.className = "muted";
    tr.append(td);
    body.append(tr);
  }
}

const rate = (value) => (value === undefined ? "–" : value.toFixed(1));
const seconds = (value) => (value === null || value === undefined ? "–" : value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(1)} s`);

function duration(value) {
  if (value === null || value === undefined) return "–";
  const s = Math.round(value);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function dropped(counters) {
  const parts = Object.entries(counters)
    .filter(([name, value]) => value && /^(dropped|stale|missing|failed|dead)/.test(name))
    .map(([name, value]) => `${name.replace(/^dropped_/, "")} ${value}`);
  return parts.join(", ") || "0";
}

function streams(status) {
  fill("streams", Object.entries(status.streams || {}).map(([name, s]) => {
    const latency = s.recent && s.recent.count ? s.recent : s.latency;
    return [cell(name), cell(rate(s.fps_in)), cell(rate(s.fps_out)), cell(s.in_flight), cell(s.counters.published || 0),
      cell(dropped(s.counters)), cell(`${seconds(latency.p50_s)} / ${seconds(latency.p99_s)}`)];
  }));
}

function processes(status) {
  fill("processes", status.processes.map((p) => [
    cell(p.name), cell(p.state, p.state === "RUNNING" ? "ok" : "bad"), cell(p.pid), cell(duration(p.uptime_s)),
    cell(p.restarts, p.restarts ? "warn" : ""), cell(p.last_error || "", "error"),
  ]));
}

function queues(status) {
  fill("queues", Object.entries(status.queues || {}).map(([name, depth]) => [cell(name), cell(depth)]));
}

function inputs(status) {
  fill("inputs", Object.entries(status.inputs || {}).map(([name, f]) => [
    cell(name), cell(f.state, f.state === "streaming" || f.state === "polling" ? "ok" : "warn"),
    cell(`${rate(f.fps_in)} / ${rate(f.fps_sent)}`), cell(f.reconnects ?? f.failures), cell(f.source), cell(f.last_error || "", "error"),
  ]));
}

function files(status) {
  fill("files", Object.entries(status.files || {}).map(([name, f]) => [
    cell(name), cell(f.file || f.state), cell(f.total ? `${f.done} of ${f.total}` : f.done), cell(rate(f.fps)),
    cell(duration(f.eta_s)),
  ]));
}

function outputs(status) {
  fill("outputs", Object.entries(status.outputs || {}).map(([name, f]) => [
    cell(name), cell(f.state, f.state === "delivering" ? "ok" : "bad"), cell(rate(f.fps)), cell(f.sent), cell(f.retried),
    cell(f.failed), cell(f.dropped), cell(f.last_error || "", "error"),
  ]));
}

const figures = new Map();

function previews(status) {
  const box = document.getElementById("previews");
  for (const [name, p] of Object.entries(status.previews || {})) {
    let figure = figures.get(name);
    if (!figure) {
      if (!figures.size) box.replaceChildren();
      figure = document.createElement("figure");
      figure.dataset.input = name;
      figure.innerHTML = "<img alt=''><figcaption></figcaption><ul></ul>";
      box.append(figure);
      figures.set(name, figure);
    }
    if (figure.dataset.seq === String(p.seq)) continue;
    figure.dataset.seq = String(p.seq);
    const img = figure.querySelector("img");
    img.alt = `latest detected frame of ${name}`;
    img.src = `preview/${encodeURIComponent(name)}.jpg?seq=${p.seq}`;
    figure.querySelector("figcaption").textContent = `${name} · seq ${p.seq} · ${new Date(p.captured_at * 1000).toLocaleTimeString()}`;
    figure.querySelector("ul").replaceChildren(...p.detections.map((d) => {
      const li = document.createElement("li");
      li.textContent = `${d.class_name} ${(d.confidence * 100).toFixed(0)}%`;
      return li;
    }));
  }
}

function header(status) {
  const broker = document.getElementById("broker");
  broker.textContent = status.broker.ok ? "broker up" : `broker: ${status.broker.error}`;
  broker.className = `pill ${status.broker.ok ? "ok" : "bad"}`;
  document.getElementById("dashboard-link").hidden = !status.dashboard;
  document.getElementById("updated").textContent = `updated ${new Date(status.at * 1000).toLocaleTimeString()}`;
}

async function refresh() {
  try {
    const response = await fetch("api/status", { cache: "no-store" });
    if (!response.ok) throw new Error(`status ${response.status}`);
    const status = await response.json();
    for (const draw of [header, streams, previews, processes, queues, inputs, files, outputs]) draw(status);
  } catch (error) {
    const broker = document.getElementById("broker");
    broker.textContent = `web face unreachable (${error.message})`;
    broker.className = "pill bad";
  } finally {
    setTimeout(refresh, POLL_MS);
  }
}

refresh();
