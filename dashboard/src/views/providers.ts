// Hosts, providers and plugins: the hosts (of the cluster, if any), what
// serves which protocol, how busy it is, and each plugin's version, load
// time, reloads and last error.

import { get } from "../api";
import { badge, clear, h, time } from "../dom";
import { hostsPanel } from "./hosts";

export async function providersView(root: HTMLElement, signal: AbortSignal): Promise<void> {
  const [hosts, { providers }, plugins] = await Promise.all([
    hostsPanel(signal),
    get<{ providers: any[] }>("/api/v1/providers"),
    get<{ plugins: any[]; directory: string }>("/api/v1/plugins"),
  ]);
  const table = (columns: string[], rows: (string | number | Node)[][], test: string) =>
    h("table", { "data-test": test }, h("thead", {}, h("tr", {}, ...columns.map((c) => h("th", {}, c)))),
      h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c) => h("td", {}, c))))));
  clear(root,
    h("h2", {}, "Hosts"), hosts,
    h("h2", {}, "Providers"),
    table(["provider", "kind", "protocol", "methods", "capacity", "in flight"],
      providers.map((p) => [p.provider_id, p.kind, p.protocol_id, p.methods.join(", "), p.max_concurrent ?? "∞", p.in_flight]), "providers"),
    h("h2", {}, "Plugins"), h("p", { class: "muted" }, `directory: ${plugins.directory}`),
    table(["plugin", "state", "protocol", "version", "loaded", "loads", "failures", "last error"],
      plugins.plugins.map((p) => [p.name, badge(p.state), p.protocol_id ?? "–", p.version ?? "–", time(p.loaded_at), p.loads, p.failures, p.last_error ?? ""]), "plugins"));
}
