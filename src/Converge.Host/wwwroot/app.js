// Converge web UI: plain JavaScript, no build step. Reads the same /api/v1 the CLI uses, with the token entered (kept
// in sessionStorage for this tab only): an admin token for changes, a read-only one to view an API beyond loopback.
"use strict";

const TOKEN_KEY = "converge-token";
const MiB = 1024 * 1024;
const palette = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a3069", "#6e7781"];
const state = { cluster: null, host: null, lastHealth: 0 };

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes, unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return (unit === 0 ? value : value.toFixed(value >= 100 ? 0 : 1)) + " " + units[unit];
}

const status = (text, cls) => el("span", { class: "s-" + (cls || text) }, text);

function bar(used, provisioned, capacity) {
  const pct = v => Math.min(100, capacity > 0 ? (100 * v) / capacity : 0).toFixed(1) + "%";
  return el("span", { class: "bar", title: `${size(used)} used, ${size(provisioned)} provisioned of ${size(capacity)}` },
    el("span", { class: "prov", style: "width:" + pct(provisioned) }),
    el("span", { class: "used", style: "width:" + pct(used) }));
}

function showMessage(text, ok) {
  const box = $("#message");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = false;
}

async function api(method, path, body) {
  // X-Converge-Client: the API takes changes only with it or a JSON body, which a cross-site form cannot send.
  const headers = { "Accept": "application/json", "X-Converge-Client": "1" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (method !== "GET" && !token) {
    $("#token").focus();
    throw new Error("enter the admin token (top right) first: changes need it");
  }
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const detail = (data && (data.detail || data.title)) || `${method} ${path}: HTTP ${response.status}`;
    const error = new Error(response.status === 403 ? "refused: " + detail : detail);
    error.status = response.status;
    throw error;
  }
  return data;
}

async function tryGet(path) {
  try { return await api("GET", path); } catch (e) { if (e.status === 404) return null; throw e; }
}

// ---- rendering ----

function renderHealth(report) {
  const overall = $("#overall");
  overall.textContent = "health: " + report.status;
  overall.className = "pill s-" + report.status;
  const body = $("#health tbody");
  body.replaceChildren(...report.checks.map(c => el("tr", { "data-check": c.name },
    el("td", {}, c.title), el("td", { "data-field": "status" }, status(c.status)), el("td", {}, c.message), el("td", { class: "muted" }, c.remedy))));
}

function renderCapacity(cluster) {
  const total = $("#capacity-total");
  total.replaceChildren(
    el("strong", {}, "Cluster: "), bar(cluster.usedBytes, cluster.provisionedBytes, cluster.capacityBytes),
    el("span", { "data-field": "capacity", "data-capacity": cluster.capacityBytes, "data-used": cluster.usedBytes, "data-provisioned": cluster.provisionedBytes, "data-free": cluster.freeBytes }, `${size(cluster.usedBytes)} used · ${size(cluster.provisionedBytes)} provisioned · ${size(cluster.freeBytes)} free of ${size(cluster.capacityBytes)}`));
  const perHost = new Map();
  for (const d of cluster.disks) {
    const h = perHost.get(d.hostName) || { used: 0, prov: 0, free: 0, cap: 0 };
    h.used += d.usedBytes; h.prov += d.provisionedBytes; h.free += d.freeBytes; h.cap += d.capacityBytes;
    perHost.set(d.hostName, h);
  }
  const rows = [];
  for (const [host, h] of perHost) {
    rows.push(el("tr", { class: "host-total", "data-host-capacity": host },
      el("td", {}, el("strong", {}, host)), el("td", { class: "muted" }, "all disks"), el("td", {}),
      el("td", {}, bar(h.used, h.prov, h.cap), size(h.used)), el("td", {}, size(h.prov)), el("td", {}, size(h.free)), el("td", {}, size(h.cap)), el("td", {})));
    for (const d of cluster.disks.filter(d => d.hostName === host)) {
      rows.push(el("tr", { "data-disk": d.id },
        el("td", {}, ""), el("td", {}, d.path), el("td", {}, d.reachable ? status(d.state) : status("unreachable")),
        el("td", {}, bar(d.usedBytes, d.provisionedBytes, d.capacityBytes), d.reachable ? size(d.usedBytes) : "-"),
        el("td", {}, size(d.provisionedBytes)), el("td", {}, d.reachable ? size(d.freeBytes) : "-"), el("td", {}, size(d.capacityBytes)),
        el("td", {}, d.componentCount)));
    }
  }
  $("#disks tbody").replaceChildren(...rows);
}

function renderHosts(cluster) {
  $("#hosts tbody").replaceChildren(...cluster.hosts.map(h => {
    let action;
    if (h.state === "maintenance") {
      action = el("button", { onclick: () => mutate("DELETE", `/api/v1/hosts/${encodeURIComponent(h.name)}/maintenance`, undefined, `host ${h.name} left maintenance`) }, "Exit maintenance");
    } else {
      const mode = el("select", { "aria-label": "maintenance mode" },
        el("option", { value: "ensure-accessibility" }, "ensure accessibility"),
        el("option", { value: "full-data-migration" }, "full data migration"),
        el("option", { value: "no-data-migration" }, "no data migration"));
      action = el("span", {}, mode, " ", el("button", {
        onclick: () => mutate("POST", `/api/v1/hosts/${encodeURIComponent(h.name)}/maintenance`, { mode: mode.value }, `host ${h.name} entered maintenance (${mode.value}); no data is moved yet`),
      }, "Enter maintenance"));
    }
    return el("tr", { "data-host": h.name },
      el("td", { "data-field": "name" }, el("strong", {}, h.name)),
      el("td", {}, (h.voter ? "voter" : "client") + (h.leader ? " (leader)" : "")),
      el("td", { "data-field": "state" }, status(h.state), h.maintenanceMode ? ` (${h.maintenanceMode})` : ""),
      el("td", { "data-field": "reachable" }, status(h.reachable ? "yes" : "no")),
      el("td", {}, h.faultDomain || h.name),
      el("td", {}, h.diskCount), el("td", {}, h.componentCount),
      el("td", {}, el("a", { href: h.api + "/" }, h.api)),
      el("td", {}, action));
  }));
}

function renderVdisks(cluster) {
  $("#vdisks tbody").replaceChildren(...cluster.virtualDisks.map(v => el("tr", { "data-vdisk": v.name },
    el("td", { "data-field": "name" }, el("strong", {}, v.name)),
    el("td", { "data-field": "size", "data-bytes": v.sizeBytes }, size(v.sizeBytes)),
    el("td", { "data-field": "policy" }, v.policy || "-"),
    el("td", { "data-field": "state" }, status(v.state)),
    el("td", { "data-field": "compliance" }, status(v.compliance || "-"), v.complianceDetail ? el("div", { class: "muted" }, v.complianceDetail) : null),
    el("td", {}, v.coordinator || "-"),
    el("td", {}, el("code", {}, v.nbdUri)))));
  if (cluster.virtualDisks.length === 0) {
    $("#vdisks tbody").append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no virtual disks yet: create one below")));
  }
  $("#layouts").replaceChildren(...cluster.virtualDisks.map(v => layoutPicture(v, cluster)));
  const select = $("#create-vdisk select[name=policy]");
  const chosen = select.value;
  select.replaceChildren(...cluster.policies.map(p => el("option", { value: p.name },
    `${p.name} (FTT=${p.failuresToTolerate}, stripe width ${p.stripeWidth})${p.isDefault ? " — default" : ""}`)));
  const preferred = chosen || (cluster.policies.find(p => p.isDefault) || {}).name;
  if (preferred) select.value = preferred;
}

const stateFill = { active: "#dafbe1", absent: "#ffebe9", degraded: "#ffebe9", stale: "#fff8c5", resyncing: "#fff8c5" };

function layoutPicture(v, cluster) {
  const layout = v.layout || [];
  const data = layout.filter(c => c.role === "data");
  const witnesses = layout.filter(c => c.role === "witness");
  const replicas = [...new Set(data.map(c => c.replica))].sort((a, b) => a - b);
  const stripes = [...new Set(data.map(c => c.stripe))].sort((a, b) => a - b);
  const reachable = new Map(cluster.hosts.map(h => [h.id, h.reachable]));
  const W = 170, H = 58, gap = 8, top = 18;
  const columns = replicas.length + (witnesses.length ? 1 : 0);
  const rows = Math.max(stripes.length, witnesses.length, 1);
  const picture = svg("svg", { width: columns * (W + gap), height: top + rows * (H + gap), role: "img", "aria-label": `layout of ${v.name}` });
  const box = (c, x, y, label) => {
    const hostUp = reachable.get(c.hostId) !== false;
    const g = svg("g", { class: "component", "data-component-id": c.id, "data-state": c.state, "data-host": c.hostName, "data-host-reachable": String(hostUp) });
    g.append(svg("title", {}, `${c.role} ${c.id}\nhost ${c.hostName}, disk ${c.diskId}\nstate ${c.state}${hostUp ? "" : " (host does not answer)"}`));
    g.append(svg("rect", { x, y, width: W, height: H, rx: 5, fill: stateFill[c.state] || "#eaeef2", stroke: hostUp ? "#8c959f" : "#cf222e", "stroke-width": hostUp ? 1 : 2, "stroke-dasharray": hostUp ? "" : "4 3" }));
    g.append(svg("text", { x: x + 6, y: y + 15, "font-weight": "600" }, label));
    g.append(svg("text", { x: x + 6, y: y + 31 }, `${c.hostName} · disk ${c.diskId.slice(0, 8)}`));
    g.append(svg("text", { x: x + 6, y: y + 47, class: "component-state", fill: c.state === "active" ? "#1a7f37" : "#cf222e" }, c.state + (hostUp ? "" : " · host unreachable")));
    picture.append(g);
  };
  replicas.forEach((r, i) => {
    picture.append(svg("text", { x: i * (W + gap) + 4, y: 12, fill: "#656d76" }, `replica ${r}`));
    stripes.forEach((s, j) => {
      const pieces = data.filter(c => c.replica === r && c.stripe === s);
      pieces.forEach((c, k) => box(c, i * (W + gap), top + j * (H + gap) + k * 4, `r${r} s${s}${pieces.length > 1 ? ` part ${k}` : ""} · ${size(c.length)}`));
    });
  });
  if (witnesses.length) {
    const x = replicas.length * (W + gap);
    picture.append(svg("text", { x: x + 4, y: 12, fill: "#656d76" }, "witness"));
    witnesses.forEach((c, j) => box(c, x, top + j * (H + gap), `witness · ${c.votes} vote(s)`));
  }
  return el("div", { class: "layout", "data-layout": v.name }, el("h4", {}, `${v.name} `, el("span", { class: "muted" }, `${v.policy}, ${layout.length} components`)), picture);
}

function renderResync(report) {
  const root = $("#resync");
  if (!report.copies.length) {
    root.replaceChildren(el("p", { class: "muted", "data-field": "resync-idle" }, "No resync, rebuild or repair is running."));
    return;
  }
  root.replaceChildren(
    el("p", {}, `${size(report.remainingBytes)} left of ${size(report.totalBytes)}` + (report.etaSeconds ? `, about ${Math.round(report.etaSeconds)} s to go` : "")),
    el("table", {}, el("thead", {}, el("tr", {}, ...["Virtual disk", "Kind", "Target", "Run by", "Progress", "Rate"].map(h => el("th", {}, h)))),
      el("tbody", {}, ...report.copies.map(c => el("tr", {},
        el("td", {}, c.virtualDisk), el("td", {}, c.kind), el("td", {}, c.targetHost || c.targetHostId), el("td", {}, c.host || "-"),
        el("td", {}, el("progress", { max: Math.max(1, c.totalBytes), value: c.doneBytes }), ` ${size(c.doneBytes)} / ${size(c.totalBytes)}`),
        el("td", {}, size(c.bytesPerSecond) + "/s"))))));
}

function renderEvents(events) {
  $("#events").replaceChildren(...events.slice().reverse().map(e => el("li", { "data-kind": e.kind },
    new Date(e.time).toLocaleTimeString(), " ", status(e.severity === "info" ? "info" : e.severity, e.severity === "info" ? "muted" : e.severity), " ", e.message)));
}

function drawChart(canvas, series, value) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const left = 44, bottom = 18, top = 16;
  let max = 0, t0 = Infinity, t1 = -Infinity;
  for (const s of series) for (const p of s.samples) { max = Math.max(max, value(p)); t0 = Math.min(t0, p.time); t1 = Math.max(t1, p.time); }
  max = max > 0 ? max * 1.1 : 1;
  ctx.strokeStyle = "#d0d7de"; ctx.fillStyle = "#656d76"; ctx.font = "10px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = top + ((height - top - bottom) * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(width, y); ctx.stroke();
    const v = max * (1 - i / 4);
    ctx.fillText(v >= 100 ? v.toFixed(0) : v.toFixed(1), 2, y + 3);
  }
  if (!isFinite(t0)) { ctx.fillText("no samples", left + 8, height / 2); return; }
  ctx.fillText(`${Math.round(t1 - t0)} s`, width - 28, height - 4);
  series.forEach((s, i) => {
    const color = palette[i % palette.length];
    ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.beginPath();
    s.samples.forEach((p, j) => {
      const x = left + ((width - left - 4) * (p.time - t0)) / Math.max(1, t1 - t0);
      const y = top + (height - top - bottom) * (1 - value(p) / max);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = color; ctx.fillText(s.name, left + 4 + i * 70, 10);
  });
}

function renderPerf(perf) {
  const iops = p => p.readIops + p.writeIops + p.otherIops;
  const tput = p => (p.readBytesPerSecond + p.writeBytesPerSecond) / MiB;
  const lat = p => p.latencyMs;
  drawChart($("#chart-host-iops"), perf.hosts, iops);
  drawChart($("#chart-host-tput"), perf.hosts, tput);
  drawChart($("#chart-host-lat"), perf.hosts, lat);
  drawChart($("#chart-vdisk-iops"), perf.virtualDisks, iops);
  drawChart($("#chart-vdisk-tput"), perf.virtualDisks, tput);
  drawChart($("#chart-vdisk-lat"), perf.virtualDisks, lat);
}

// Standalone host (no /api/v1/cluster): the same tables from its own disks and virtual disks.
function standaloneView(host, disks, vdisks) {
  return {
    name: host.name + " (standalone)",
    hosts: [{ id: host.id, name: host.name, voter: false, leader: false, state: "active", reachable: true, diskCount: disks.length, componentCount: vdisks.length, api: host.apiEndpoint }],
    disks: disks.map(d => ({ id: d.id, hostName: host.name, path: d.path, state: d.state, reachable: true, usedBytes: d.usedBytes, provisionedBytes: d.provisionedBytes, freeBytes: d.freeBytes, capacityBytes: d.capacityBytes, componentCount: d.componentCount })),
    virtualDisks: vdisks,
    policies: [],
    capacityBytes: disks.reduce((a, d) => a + d.capacityBytes, 0),
    usedBytes: disks.reduce((a, d) => a + d.usedBytes, 0),
    provisionedBytes: disks.reduce((a, d) => a + d.provisionedBytes, 0),
    freeBytes: disks.reduce((a, d) => a + d.freeBytes, 0),
  };
}

async function refresh() {
  try {
    const host = await api("GET", "/api/v1/host");
    let cluster = await tryGet("/api/v1/cluster");
    if (!cluster) {
      cluster = standaloneView(host, await api("GET", "/api/v1/disks"), await api("GET", "/api/v1/vdisks"));
    }
    state.cluster = cluster;
    $("#cluster-name").textContent = "cluster " + cluster.name + (cluster.leader ? ` · metadata leader ${cluster.leader}` : "");
    $("#asked").textContent = "served by " + host.name;
    document.body.dataset.standalone = String(!cluster.clusterId);
    renderCapacity(cluster);
    renderHosts(cluster);
    renderVdisks(cluster);
    const [resync, events, perf] = await Promise.all([
      api("GET", "/api/v1/resync"), tryGet("/api/v1/events?limit=100"), api("GET", "/api/v1/perf?seconds=120")]);
    renderResync(resync);
    renderEvents(events || []);
    renderPerf(perf);
    if (Date.now() - state.lastHealth > 5000) {
      state.lastHealth = Date.now();
      renderHealth(await api("GET", "/api/v1/health/checks"));
    }
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (e) {
    $("#updated").textContent = "update failed: " + e.message;
    // Beyond loopback reads need a token too; a wrong token is refused on reads as well.
    if (e.status === 401) showMessage(e.message, false);
  }
}

async function mutate(method, path, body, success) {
  try {
    await api(method, path, body);
    showMessage(success, true);
    state.lastHealth = 0;
    await refresh();
    return true;
  } catch (e) {
    showMessage(e.message, false);
    return false;
  }
}

function showTokenState() {
  $("#token-state").textContent = sessionStorage.getItem(TOKEN_KEY) ? "token set for this tab" : "no token: viewing only, where the host allows it";
}

$("#token-form").addEventListener("submit", event => {
  event.preventDefault();
  const value = $("#token").value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
  $("#token").value = "";
  showTokenState();
  refresh();
});

$("#create-vdisk").addEventListener("submit", async event => {
  event.preventDefault();
  const form = event.target;
  const f = name => form.elements[name];
  const body = { name: f("name").value.trim(), size: f("size").value.trim() };
  if (f("policy").value) body.policy = f("policy").value;
  if (await mutate("POST", "/api/v1/vdisks", body, `created virtual disk ${body.name}`)) f("name").value = "";
});

$("#create-policy").addEventListener("submit", async event => {
  event.preventDefault();
  const form = event.target;
  const f = name => form.elements[name];
  const name = f("name").value.trim();
  const body = {
    failuresToTolerate: Number(f("ftt").value), stripeWidth: Number(f("stripeWidth").value),
    objectSpaceReservationPercent: Number(f("reservation").value), iopsLimit: Number(f("iops").value),
    checksumEnabled: f("checksum").checked, method: "raid1",
  };
  await mutate("PUT", `/api/v1/policies/${encodeURIComponent(name)}`, body, `saved policy ${name}`);
});

showTokenState();
refresh();
setInterval(refresh, 2000);
