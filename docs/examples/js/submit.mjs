// Submit a workflow to a Gleitzeit host and print its report as JSON.
//
// It mixes the bundled WASM echo provider with the text/v1 provider of
// provider.mjs, passing results on with ${...}.
// Run: GLEITZEIT_SERVER=http://127.0.0.1:8000 node submit.mjs
// Token: GLEITZEIT_TOKEN (`gleitzeit token create --name me --role client`),
// else the host's local token.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { io } from "socket.io-client";

const SERVER = process.env.GLEITZEIT_SERVER ?? "http://127.0.0.1:8000";

// GLEITZEIT_TOKEN, else the local token a host on this machine wrote
// (never sent to another machine).
function token() {
  const data = process.env.XDG_DATA_HOME || join(homedir(), ".local/share");
  const path = join(data, "gleitzeit", "token");
  const local = ["127.0.0.1", "localhost", "[::1]"].includes(new URL(SERVER).hostname);
  if (process.env.GLEITZEIT_TOKEN || !local || !existsSync(path)) return process.env.GLEITZEIT_TOKEN;
  return readFileSync(path, "utf8").trim();
}

const workflow = {
  name: "Mixed providers",
  tasks: [
    { id: "greet", protocol: "echo/v1", method: "echo", params: { message: "hello from javascript" } },
    { id: "shout", protocol: "text/v1", method: "upper", dependencies: ["greet"],
      params: { text: "${greet.result.echoed}" } },
    { id: "measure", protocol: "text/v1", method: "count", dependencies: ["shout"],
      params: { text: "${shout.result.text}" } },
    { id: "report", protocol: "echo/v1", method: "echo", dependencies: ["shout", "measure"],
      params: { message: "${shout.result.text} has ${measure.result.words} words" } },
  ],
};

const socket = io(SERVER, { auth: { token: token() } });
const finished = new Map();
let waiting = null;

socket.on("workflow_completed", (event) => {
  finished.set(event.workflow_id, event.status);
  if (waiting === event.workflow_id) done(event.workflow_id);
});
socket.on("task_result", (event) => console.log("task", event.task_id, event.status));

async function done(workflowId) {
  const report = await socket.emitWithAck("get_workflow", { workflow_id: workflowId });
  console.log(JSON.stringify(report));
  socket.disconnect();
}

// A refused handshake (no token, an unknown one) is final: say why and stop.
socket.on("connect_error", (error) => {
  console.error(`cannot connect: ${error.message}`);
  process.exit(1);
});

socket.once("connect", async () => {
  const reply = await socket.emitWithAck("submit_workflow", { workflow });
  if (reply.error) {
    console.error(reply.error.message);
    process.exit(1);
  }
  waiting = reply.workflow_id;
  if (finished.has(waiting)) done(waiting);
});

setTimeout(() => {
  console.error("timed out");
  process.exit(1);
}, 60_000).unref();
