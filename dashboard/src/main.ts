// The dashboard: a token asked for once per browser session, then five
// views chosen by the URL's hash: #/ (workflows), #/workflows/ID,
// #/submit, #/schedules, #/providers (hosts, providers and plugins).

import { ApiError, setToken, token, whenUnauthorized } from "./api";
import { clear, h } from "./dom";
import { providersView } from "./views/providers";
import { schedulesView } from "./views/schedules";
import { submitView } from "./views/submit";
import { workflowView } from "./views/workflow";
import { workflowsView } from "./views/list";

const root = document.getElementById("app")!;
let current = new AbortController();

function login(message = ""): void {
  current.abort();
  const input = h("input", { type: "password", autocomplete: "off", placeholder: "gzt_…", "data-test": "token" });
  const form = h("form", { class: "login", "data-test": "login" },
    h("h2", {}, "Gleitzeit"),
    h("p", {}, "This host asks for a token: the local one is in its data directory (~/.local/share/gleitzeit/token); others come from `gleitzeit token create`."),
    message ? h("p", { class: "error" }, message) : null,
    input, h("button", { type: "submit" }, "open"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    route();
  });
  clear(root, form);
  input.focus();
}

whenUnauthorized(() => {
  setToken(null);
  login("The host did not accept that token.");
});

function route(): void {
  current.abort();
  current = new AbortController();
  if (!token()) return login();
  const [, view, id] = location.hash.split("/");
  const main = h("main", {});
  const nav = h("nav", {}, h("a", { href: "#/" }, "Workflows"), h("a", { href: "#/submit" }, "Submit"),
    h("a", { href: "#/schedules" }, "Schedules"), h("a", { href: "#/providers" }, "Hosts & providers"), h("a", { href: "#/", onclick: () => { setToken(null); login(); } }, "Forget token"));
  clear(root, nav, main);
  const failed = (e: unknown) => {
    if (e instanceof ApiError && e.status !== 401) clear(main, h("p", { class: "error", "data-test": "error" }, e.message));
  };
  try {
    if (view === "workflows" && id) workflowView(main, decodeURIComponent(id), current.signal);
    else if (view === "submit") submitView(main);
    else if (view === "schedules") schedulesView(main).catch(failed);
    else if (view === "providers") providersView(main, current.signal).catch(failed);
    else workflowsView(main, current.signal);
  } catch (e) {
    failed(e);
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (e) => {
  if (e.reason instanceof ApiError && e.reason.status !== 401) {
    const main = root.querySelector("main");
    if (main) main.prepend(h("p", { class: "error", "data-test": "error" }, e.reason.message));
  }
});
route();
