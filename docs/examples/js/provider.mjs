// A Gleitzeit remote provider in JavaScript: protocol text/v1.
//
// Run: GLEITZEIT_SERVER=http://127.0.0.1:8000 node provider.mjs
// Token: GLEITZEIT_TOKEN (make one with `gleitzeit token create --name text-worker
// --role provider --protocol text/v1`), else the host's local token.
// Needs: npm install socket.io-client
// REPLY_BY_EVENT=1 acks with nothing and sends the answer as a `method_result`
// event, as a provider whose answer comes later would.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { io } from "socket.io-client";

const SERVER = process.env.GLEITZEIT_SERVER ?? "http://127.0.0.1:8000";
const PROVIDER_ID = process.env.PROVIDER_ID ?? "text-js";
const REPLY_BY_EVENT = process.env.REPLY_BY_EVENT === "1";

// GLEITZEIT_TOKEN, else the local token a host on this machine wrote
// (never sent to another machine).
function token() {
  const data = process.env.XDG_DATA_HOME || join(homedir(), ".local/share");
  const path = join(data, "gleitzeit", "token");
  const local = ["127.0.0.1", "localhost", "[::1]"].includes(new URL(SERVER).hostname);
  if (process.env.GLEITZEIT_TOKEN || !local || !existsSync(path)) return process.env.GLEITZEIT_TOKEN;
  return readFileSync(path, "utf8").trim();
}

const methods = {
  upper: (p) => ({ text: p.text.toUpperCase() }),
  count: (p) => ({ length: p.text.length, words: p.text.split(/\s+/).filter(Boolean).length }),
};

function run(call) {
  const method = methods[call.method];
  if (!method) return { error: { code: -32601, message: `no method '${call.method}'` } };
  try {
    return { result: method(call.params) };
  } catch (e) {
    return { error: { code: -32602, message: `invalid params: ${e.message}` } };
  }
}

const socket = io(SERVER, { auth: { token: token() } });

// Register (again) on every connect: the host forgets providers that leave.
socket.on("connect", async () => {
  const reply = await socket.emitWithAck("register_provider", {
    provider_id: PROVIDER_ID,
    protocol_id: "text/v1",
    supported_methods: Object.keys(methods),
    max_concurrent: 8,
  });
  if (reply.error) {
    console.error(`registration refused: ${reply.error.message}`);
    process.exit(1);
  }
  console.log("registered", reply.provider_id);
});

// call: {jsonrpc, id, method, params, task_id, workflow_id, attempt}
socket.on("execute_method", (call, ack) => {
  const reply = run(call);
  if (REPLY_BY_EVENT) {
    ack(); // an empty ack: the answer follows as `method_result`
    socket.emit("method_result", { id: call.id, ...reply });
  } else {
    ack(reply);
  }
});
