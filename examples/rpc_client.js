// A client of `meshchat daemon` in plain Node.js (no packages): JSON-RPC 2.0 over the Unix socket.
//
// Run: node examples/rpc_client.js PROFILE CONTACT TEXT [SOCKET]
//   (with `meshchat daemon --profile PROFILE` running; SOCKET defaults to PROFILE/daemon.sock)
//
// It reads the token the daemon wrote to PROFILE/daemon.token, authenticates, subscribes to events,
// sends TEXT to CONTACT, prints the message as the daemon returned it, then the first event that
// arrives (a `status` of the message, a `message` received...), one JSON object per line, and exits.

"use strict";

const fs = require("fs");
const net = require("net");
const path = require("path");

const [profile, contact, text, socketArg] = process.argv.slice(2);
if (!profile || !contact || text === undefined) {
  console.error("usage: node rpc_client.js PROFILE CONTACT TEXT [SOCKET]");
  process.exit(2);
}
const token = fs.readFileSync(path.join(profile, "daemon.token"), "ascii").trim();
const socket = net.createConnection(socketArg || path.join(profile, "daemon.sock"));

// Newline-delimited JSON: one message per line, both ways.
let nextId = 0;
const pending = new Map(); // id -> {resolve, reject}
let onEvent = null;

function call(method, params) {
  const id = ++nextId;
  socket.write(JSON.stringify({ jsonrpc: "2.0", id, method, params }) + "\n");
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

let buffer = "";
socket.setEncoding("utf8");
socket.on("data", (chunk) => {
  buffer += chunk;
  let end;
  while ((end = buffer.indexOf("\n")) >= 0) {
    const message = JSON.parse(buffer.slice(0, end));
    buffer = buffer.slice(end + 1);
    if (message.method === "event") {
      if (onEvent) onEvent(message.params.event);
    } else if (pending.has(message.id)) {
      const { resolve, reject } = pending.get(message.id);
      pending.delete(message.id);
      if (message.error) reject(new Error(`${message.error.code} ${message.error.message}`));
      else resolve(message.result);
    }
  }
});
socket.on("error", (error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
socket.on("close", () => {
  for (const { reject } of pending.values()) reject(new Error("the daemon closed the connection"));
});

async function main() {
  await call("auth", { token });
  const firstEvent = new Promise((resolve) => {
    onEvent = resolve;
  });
  await call("events.subscribe", {});
  const sent = await call("messages.send", { to: contact, text });
  console.log(JSON.stringify({ sent }));
  const event = await firstEvent;
  console.log(JSON.stringify({ event }));
  socket.end();
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
