// The workflows: newest first, filtered by status and name, kept current
// by the host's event stream (a changed workflow's row is fetched again).

import { get, stream } from "../api";
import { badge, clear, duration, h, time } from "../dom";

interface Summary {
  workflow_id: string;
  name: string;
  status: string;
  submitted_at: string | null;
  duration_ms?: number | null;
  owner?: string;
  summary: { total: number; completed: number; failed: number; skipped: number; cancelled: number } | null;
}

export function workflowsView(root: HTMLElement, signal: AbortSignal): void {
  const status = h("select", { "data-test": "status-filter" },
    ...["", "running", "completed", "failed", "cancelled"].map((s) => h("option", { value: s }, s || "any status")));
  const search = h("input", { type: "search", placeholder: "name contains…", "data-test": "name-filter" });
  const body = h("tbody");
  const more = h("button", { class: "more" }, "more");
  const table = h("table", { class: "workflows", "data-test": "workflows" },
    h("thead", {}, h("tr", {}, ...["status", "name", "tasks", "done", "failed", "submitted", "duration", "owner"].map((c) => h("th", {}, c)))),
    body);
  clear(root, h("div", { class: "filters" }, status, search), table, more);

  let cursor: string | null = null;
  const rows = new Map<string, HTMLTableRowElement>();
  const query = () => {
    const q = new URLSearchParams({ limit: "100" });
    if (status.value) q.set("status", status.value);
    if (search.value.trim()) q.set("name", search.value.trim());
    return q;
  };
  const render = (w: Summary) => {
    const s = w.summary;
    const row = h("tr", { "data-workflow": w.workflow_id, class: "link", onclick: () => (location.hash = `#/workflows/${w.workflow_id}`) },
      h("td", {}, badge(w.status)), h("td", {}, w.name), h("td", {}, s?.total ?? "–"), h("td", {}, s?.completed ?? "–"),
      h("td", {}, s ? s.failed + s.skipped + s.cancelled : "–"), h("td", {}, time(w.submitted_at)),
      h("td", {}, duration(w.duration_ms)), h("td", {}, w.owner ?? ""));
    const old = rows.get(w.workflow_id);
    if (old) old.replaceWith(row);
    else body.append(row);
    rows.set(w.workflow_id, row);
  };
  const load = async (append: boolean) => {
    const q = query();
    if (append && cursor) q.set("cursor", cursor);
    const page = await get<{ workflows: Summary[]; next_cursor: string | null }>(`/api/v1/workflows?${q}`);
    if (!append) {
      body.replaceChildren();
      rows.clear();
    }
    page.workflows.forEach(render);
    cursor = page.next_cursor;
    more.hidden = !cursor;
  };
  // A changed workflow: fetch the first page again (newest first), at most
  // every 300 ms however many events arrive.
  let pending: number | undefined;
  const refresh = () => {
    if (pending === undefined) pending = window.setTimeout(() => ((pending = undefined), load(false)), 300);
  };
  status.addEventListener("change", () => load(false));
  search.addEventListener("input", refresh);
  more.addEventListener("click", () => load(true));
  load(false);
  stream("/api/v1/events", (e) => {
    if (e.event === "workflow_started" || e.event === "workflow_completed" || e.event === "task_result" || e.event === "reset") refresh();
  }, signal);
}
