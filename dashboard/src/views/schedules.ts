// Schedules: each workflow the host starts on its own, when it is due next,
// when last, and its last run (a link to that workflow); a schedule can be
// removed here (its runs go on).

import { get, remove } from "../api";
import { clear, h } from "../dom";

export async function schedulesView(root: HTMLElement): Promise<void> {
  const { schedules } = await get<{ schedules: any[] }>("/api/v1/schedules");
  const run = (id: string | null) => (id ? h("a", { href: `#/workflows/${encodeURIComponent(id)}` }, id) : "–");
  const removeButton = (id: string) =>
    h("button", {
      "data-test": "remove-schedule",
      onclick: async () => {
        await remove(`/api/v1/schedules/${encodeURIComponent(id)}`);
        await schedulesView(root);
      },
    }, "remove");
  const columns = ["schedule", "workflow", "cron", "time zone", "next due", "last due", "last run", "owner", ""];
  const rows = schedules.map((s) => [s.schedule_id, s.name, s.cron, s.timezone, s.next_due ?? "never", s.last_due ?? "–",
    run(s.last_run), s.owner ?? "–", removeButton(s.schedule_id)]);
  clear(root,
    h("h2", {}, "Schedules"),
    schedules.length === 0
      ? h("p", { class: "muted", "data-test": "no-schedules" }, "No schedules: `gleitzeit schedule add FILE` makes one.")
      : h("table", { "data-test": "schedules" },
        h("thead", {}, h("tr", {}, ...columns.map((c) => h("th", {}, c)))),
        h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c) => h("td", {}, c)))))));
}
