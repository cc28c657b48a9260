// The hosts: this one alone, or every host of its cluster (`--cluster`):
// whether its lease holds, when Redis last heard from it, its address, its
// providers and plugins and the workflows it drives. Read again every two
// seconds while the page is open, so a host that stops turns `gone`.

import { get } from "../api";
import { badge, clear, h, time } from "../dom";

const EVERY_MS = 2000;

interface Host {
  host_id: string;
  status: string;
  last_seen: string | null;
  epoch: number | null;
  address: string;
  version: string;
  providers: string[];
  plugins: string[];
  running: number;
}

/** A table of the hosts, kept current until `signal` aborts. */
export async function hostsPanel(signal: AbortSignal): Promise<HTMLElement> {
  const panel = h("div", { "data-test": "hosts" });
  const render = (hosts: Host[]) => clear(panel, h("table", {},
    h("thead", {}, h("tr", {}, ...["host", "status", "last seen", "epoch", "address", "version", "providers", "plugins", "running"].map((c) => h("th", {}, c)))),
    h("tbody", {}, ...hosts.map((host) => h("tr", { "data-test": "host", "data-host": host.host_id },
      ...[host.host_id, badge(host.status), time(host.last_seen), host.epoch ?? "–", host.address, host.version,
        host.providers.join(", ") || "–", host.plugins.join(", ") || "–", host.running].map((c) => h("td", {}, c)))))));
  render((await get<{ hosts: Host[] }>("/api/v1/hosts")).hosts);
  const timer = setInterval(async () => {
    try {
      render((await get<{ hosts: Host[] }>("/api/v1/hosts")).hosts);
    } catch {
      // Shown again at the next read; the error is the API's to report.
    }
  }, EVERY_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
  return panel;
}
