// ferry dashboard: draws the throughput charts as inline SVG and refreshes a running run. No dependencies.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// One line chart: a point per item, y from 0 to the largest value, the first and last labels under the axis.
function drawChart(box, items, key, labelKey) {
  const W = 400, H = 160, L = 44, R = 8, T = 10, B = 22;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": box.previousElementSibling ?
    box.previousElementSibling.textContent : key });
  const values = items.map((it) => Number(it[key]) || 0);
  const max = Math.max(1, ...values);
  const x = (i) => L + (items.length > 1 ? (i * (W - L - R)) / (items.length - 1) : (W - L - R) / 2);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  svg.appendChild(el("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  svg.appendChild(el("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  svg.appendChild(el("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, max.toLocaleString()));
  svg.appendChild(el("text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"));
  if (items.length) {
    const path = values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.appendChild(el("path", { class: "line", d: path }));
    values.forEach((v, i) => {
      const label = String(items[i][labelKey]);
      const dot = el("circle", { class: "point", cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3,
        "data-value": v, "data-label": label });
      dot.appendChild(el("title", {}, `${labelKey === "id" ? "run " : ""}${label}: ${v.toLocaleString()}`));
      svg.appendChild(dot);
    });
    const short = (s) => (labelKey === "hour" ? s.slice(11, 16) : `run ${s}`);
    svg.appendChild(el("text", { x: L, y: H - 6 }, short(String(items[0][labelKey]))));
    svg.appendChild(el("text", { x: W - R, y: H - 6, "text-anchor": "end" },
      short(String(items[items.length - 1][labelKey]))));
  }
  box.replaceChildren(svg);
}

function drawCharts() {
  const data = document.getElementById("throughput-data");
  if (!data) return;
  const series = JSON.parse(data.textContent);
  for (const box of document.querySelectorAll(".chart")) {
    drawChart(box, series[box.dataset.series] || [], box.dataset.key, box.dataset.label);
  }
}

// While a run is running, refresh its figures: the runs table's rows (polled), or the run's own page.
function pollRunning() {
  const body = document.getElementById("runs-body");
  const running = () => document.querySelector('[data-status="running"], [data-running]');
  if (!running()) return;
  const timer = setInterval(async () => {
    if (!body) { location.reload(); return; }
    try {
      const answer = await fetch("/runs/rows", { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (!answer.ok) return;
      body.innerHTML = await answer.text();
      if (!running()) { clearInterval(timer); location.reload(); }  // finished: redraw the charts with it
    } catch (err) { /* the server restarts: try again on the next tick */ }
  }, 2000);
}

// A latency as pages.seconds_text writes it: "2.4 ms", "850 ms", "3.20 s".
function secondsText(v) {
  if (v === null || v === undefined) return "-";
  if (v < 0.01) return `${(v * 1000).toFixed(1)} ms`;
  if (v < 1) return `${(v * 1000).toFixed(0)} ms`;
  return `${v.toFixed(2)} s`;
}

function rateText(v) {
  return v === null || v === undefined ? "-" :
    v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function numberText(v) {
  if (v === null || v === undefined) return "-";
  return Number.isInteger(v) ? v.toLocaleString("en-US") :
    v.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
}

// Inside ferry serve: refresh the real-time panel's figures from /api/live every 2 s (each cell names its
// figure's path in the JSON with data-live).
function pollLive() {
  const panel = document.getElementById("realtime");
  if (!panel) return;
  const tick = async () => {
    try {
      const answer = await fetch(panel.dataset.poll, { headers: { Accept: "application/json" },
        credentials: "same-origin" });
      if (!answer.ok) return;
      const data = await answer.json();
      for (const cell of panel.querySelectorAll("[data-live]")) {
        let v = data;
        for (const k of JSON.parse(cell.dataset.live)) v = v === null || v === undefined ? v : v[k];
        const unit = cell.dataset.unit;
        cell.textContent = unit === "s" ? secondsText(v) : unit === "rate" ? rateText(v) : numberText(v);
      }
      panel.dataset.updated = String(Date.now());
    } catch (err) { /* the server restarts: try again on the next tick */ }
  };
  setInterval(tick, 2000);
}

document.addEventListener("DOMContentLoaded", () => { drawCharts(); pollRunning(); pollLive(); });
