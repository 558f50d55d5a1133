// The admin console: pushed `console` frames drawn as a table with sparklines, and the
// operator's actions (publish, presence, revoke) as requests on the same socket.
import { $, WwwsClient, bindStatus, clock, say } from "./wwws.js";

const notice = $("notice");
let adminKey = null; // kept in this tab's memory only, to log in again on reconnect

async function login() {
  const response = await fetch("./api/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ key: adminKey }),
  });
  if (!response.ok) {
    const error = new Error((await response.text()).trim() || `HTTP ${response.status}`);
    error.code = response.status < 500 && response.status !== 429 ? "login_refused" : "login_unavailable";
    throw error;
  }
  return response.json(); // {user, token, expires_in}
}

const client = new WwwsClient({ service: "admin", token: login });
bindStatus(client, { status: $("status"), node: $("node"), notice });

client.addEventListener("close", (e) => {
  if (!e.detail.reconnect && e.detail.code === 0) {
    $("login-error").textContent = e.detail.reason;
    $("login-panel").hidden = false;
    $("console").hidden = true;
  }
});
client.addEventListener("hello", () => {
  $("login-panel").hidden = true;
  $("console").hidden = false;
  $("login-error").textContent = "";
});
client.addEventListener("frame", (e) => {
  if (e.detail.op === "console") draw(e.detail);
});

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  adminKey = $("key").value;
  $("key").value = "";
  client.connect();
});

$("publish").addEventListener("submit", async (event) => {
  event.preventDefault();
  const frame = {
    op: "publish",
    service: $("pub-service").value,
    ch: $("pub-channel").value.trim(),
    data: { text: $("pub-text").value },
  };
  try {
    const reply = await client.request(frame);
    say($("action-result"), `Published to ${reply.service}/${reply.ch} at offset ${reply.offset}.`);
  } catch (error) {
    say($("action-result"), `Refused: ${error.message}`, "bad");
  }
});

$("lookup").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const reply = await client.request({ op: "presence", user: $("lookup-user").value.trim() });
    const rooms = reply.rooms.length ? reply.rooms.join(", ") : "none the console sees";
    const online = reply.online ? "online" : "offline";
    say($("action-result"), `${reply.user}: ${online} in telephony; chat rooms: ${rooms}.`);
  } catch (error) {
    say($("action-result"), `Refused: ${error.message}`, "bad");
  }
});

$("revoke").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const reply = await client.request({ op: "revoke", user: $("revoke-user").value.trim() });
    const at = new Date(reply.revoked_at * 1000).toLocaleTimeString();
    say(
      $("action-result"),
      `${reply.user}: disconnected everywhere (4011); tokens issued before ${at} refused.`,
    );
  } catch (error) {
    say($("action-result"), `Refused: ${error.message}`, "bad");
  }
});

function mib(bytes) {
  return `${(bytes / 1048576).toFixed(0)} MiB`;
}

function cell(row, text, testid) {
  const td = row.insertCell();
  td.textContent = text;
  if (testid) td.dataset.testid = testid;
  return td;
}

// series points: [ts, connections, in/s, out/s, lag ms]
function sparkline(points) {
  const canvas = document.createElement("canvas");
  canvas.width = 180;
  canvas.height = 28;
  const g = canvas.getContext("2d");
  const lines = [
    [1, "#4c8bf5"],
    [3, "#2e9e5b"],
    [4, "#d9822b"],
  ];
  for (const [column, color] of lines) {
    const values = points.map((p) => p[column]);
    const top = Math.max(1, ...values);
    g.strokeStyle = color;
    g.beginPath();
    values.forEach((v, i) => {
      const x = points.length < 2 ? 0 : (i / (points.length - 1)) * (canvas.width - 1);
      const y = canvas.height - 1 - (v / top) * (canvas.height - 2);
      if (i === 0) g.moveTo(x, y);
      else g.lineTo(x, y);
    });
    g.stroke();
  }
  return canvas;
}

function draw(frame) {
  $("updated").textContent = `updated ${clock()}`;
  const body = $("replica-rows");
  body.replaceChildren();
  for (const r of frame.replicas) {
    const row = body.insertRow();
    row.dataset.testid = "replica";
    row.dataset.service = r.service;
    row.dataset.node = r.node;
    cell(row, r.service);
    cell(row, r.node);
    cell(row, String(r.connections), "connections");
    cell(row, String(r.subscriptions));
    cell(row, r.in_per_second.toFixed(1));
    cell(row, r.out_per_second.toFixed(1));
    cell(row, `${r.loop_lag_ms.toFixed(1)} ms`);
    cell(row, `${r.heartbeat_seconds} s`);
    cell(row, mib(r.memory_bytes));
    cell(row, r.silent ? "silent" : r.draining ? "draining" : "serving", "state");
    row.insertCell().append(sparkline(r.series));
  }
  const list = $("channels");
  list.replaceChildren();
  for (const c of frame.channels) {
    const item = document.createElement("li");
    item.dataset.testid = "channel";
    item.textContent = `${c.service}/${c.ch} — ${c.subscribers} subscriber${c.subscribers === 1 ? "" : "s"}`;
    list.append(item);
  }
  $("no-channels").hidden = frame.channels.length > 0;
}
