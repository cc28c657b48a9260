// One workflow: its DAG coloured by task status (drawn with cytoscape and
// its dagre layout while it is small enough to read), a table of every
// task that renders only the rows in view (10,000 tasks stay cheap), and a
// task's details on click (params, calls with their providers and timings,
// result). Its event stream keeps all three current.

import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";
import { get, post, stream } from "../api";
import { badge, clear, duration, h, json, time } from "../dom";

cytoscape.use(dagre);

/** Above this many tasks the graph is not drawn: the table and counts are. */
export const MAX_DRAWN = 300;
const ROW_HEIGHT = 26;

interface Task {
  id: string;
  name: string;
  protocol: string;
  method: string;
  status: string;
  attempts: number;
  started_at: string | null;
  finished_at: string | null;
  queued_ms: number | null;
  duration_ms: number | null;
  error: { code: number; message: string } | null;
  dependencies?: string[];
  usage?: Usage;
  /** Why a queued task is held back (a rate limit, a concurrency key). */
  waiting_for?: string;
}

/** Tokens used, as the backends reported them. */
interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

const tokens = (u?: Usage) => u ? `${u.total_tokens} tokens (${u.prompt_tokens} prompt, ${u.completion_tokens} completion)` : "–";

interface Call {
  attempt: number;
  provider: string;
  started_at: string;
  duration_ms: number | null;
  error: { code: number; message: string } | null;
  usage?: Usage;
  model?: string;
}

/** A task in full, as `/tasks/{task}` has it. */
interface TaskDetail extends Task {
  params?: unknown;
  result: unknown;
  history?: Call[];
}

interface Report {
  workflow_id: string;
  name: string;
  status: string;
  duration_ms: number;
  summary: Record<string, number>;
  tasks: Task[];
  owner?: string;
  usage?: Usage;
  rerun_of?: string;
}

export function workflowView(root: HTMLElement, id: string, signal: AbortSignal): void {
  const head = h("div", { class: "workflow-head" });
  const counts = h("div", { class: "counts", "data-test": "counts" });
  const graph = h("div", { class: "graph", "data-test": "graph" });
  const scroller = h("div", { class: "task-table", "data-test": "task-table" });
  const detail = h("aside", { class: "detail", "data-test": "task-detail" }, "Click a task to see it.");
  clear(root, head, counts, h("div", { class: "workflow-body" }, h("div", { class: "views" }, graph, scroller), detail));

  const tasks: Task[] = [];
  const index = new Map<string, number>();
  const progress = new Map<string, string>();
  // A task's details, fetched when it is shown and again only once its
  // status or attempt changed (a finished task's never change).
  const details = new Map<string, { key: string; detail: Promise<TaskDetail> }>();
  const detailOf = (t: Task): Promise<TaskDetail> => {
    const key = `${t.status}/${t.attempts}`;
    const known = details.get(t.id);
    if (known?.key === key) return known.detail;
    const detail = get<TaskDetail>(`/api/v1/workflows/${id}/tasks/${encodeURIComponent(t.id)}`);
    details.set(t.id, { key, detail });
    return detail;
  };
  let report: Report | null = null;
  let cy: cytoscape.Core | null = null;
  let selected: string | null = null;

  const renderHead = () => {
    if (!report) return;
    const cancel = report.status === "running"
      ? h("button", { "data-test": "cancel", onclick: async () => { await post(`/api/v1/workflows/${id}/cancel`, "{}"); } }, "cancel")
      : null;
    // A failed or cancelled run: run what did not complete again, as a new workflow.
    const rerun = report.status === "failed" || report.status === "cancelled"
      ? h("button", { "data-test": "rerun", onclick: async () => {
          const again = await post<{ workflow_id: string }>(`/api/v1/workflows/${id}/rerun`, "");
          location.hash = `#/workflows/${again.workflow_id}`;
        } }, "rerun")
      : null;
    clear(head, h("h2", {}, report.name), badge(report.status), h("span", { class: "muted" }, ` ${report.workflow_id} · ${duration(report.duration_ms)}`),
      report.usage ? h("span", { class: "muted", "data-test": "workflow-tokens" }, ` · ${tokens(report.usage)}`) : null,
      report.rerun_of ? h("span", { class: "muted", "data-test": "rerun-of" }, ` · rerun of ${report.rerun_of}`) : null, cancel, rerun);
    const byStatus = new Map<string, number>();
    for (const t of tasks) byStatus.set(t.status, (byStatus.get(t.status) ?? 0) + 1);
    clear(counts, ...[...byStatus.entries()].map(([s, n]) => h("span", { class: `count status-${s}`, "data-status": s }, `${s} ${n}`)));
  };

  // The table: a tall inner box, and the rows of what is in view.
  const inner = h("div", { class: "inner" });
  scroller.append(inner);
  const renderRows = () => {
    inner.style.height = `${tasks.length * ROW_HEIGHT}px`;
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW_HEIGHT) - 5);
    const last = Math.min(tasks.length, first + Math.ceil(scroller.clientHeight / ROW_HEIGHT) + 10);
    const rows: HTMLElement[] = [];
    for (let i = first; i < last; i++) {
      const t = tasks[i];
      const row = h("div", { class: `row${t.id === selected ? " selected" : ""}`, "data-task": t.id, onclick: () => select(t.id) },
        badge(t.status), h("span", { class: "id" }, t.id), h("span", {}, `${t.protocol}.${t.method}`),
        h("span", {}, `${t.attempts} att.`), h("span", {}, duration(t.duration_ms)));
      row.style.top = `${i * ROW_HEIGHT}px`;
      rows.push(row);
    }
    inner.replaceChildren(...rows);
  };
  scroller.addEventListener("scroll", () => requestAnimationFrame(renderRows));

  const drawGraph = () => {
    if (tasks.length > MAX_DRAWN) {
      clear(graph, h("p", { class: "muted" }, `${tasks.length} tasks: too many to draw; the table below has every one.`));
      graph.classList.add("small");
      return;
    }
    const elements: cytoscape.ElementDefinition[] = tasks.map((t) => ({ data: { id: t.id, label: t.id }, classes: t.status }));
    for (const t of tasks) for (const d of t.dependencies ?? []) if (index.has(d)) elements.push({ data: { id: `${d}->${t.id}`, source: d, target: t.id } });
    cy = cytoscape({
      container: graph,
      elements,
      // A small DAG is drawn at its size, not blown up to fill the box.
      maxZoom: 1.5,
      minZoom: 0.05,
      layout: { name: "dagre", rankDir: "LR" } as any,
      style: [
        { selector: "node", style: { label: "data(label)", "font-size": 11, width: 22, height: 22, "background-color": "#9aa5b1", color: "#222", "text-valign": "bottom" } },
        { selector: "edge", style: { width: 1.5, "line-color": "#c3cbd3", "target-arrow-shape": "triangle", "target-arrow-color": "#c3cbd3", "curve-style": "bezier" } },
        { selector: ".running", style: { "background-color": "#2f80ed" } },
        { selector: ".completed", style: { "background-color": "#27ae60" } },
        { selector: ".failed", style: { "background-color": "#eb5757" } },
        { selector: ".skipped, .cancelled", style: { "background-color": "#f2c94c" } },
        { selector: ":selected", style: { "border-width": 3, "border-color": "#111" } },
      ],
    });
    cy.on("tap", "node", (e) => select(e.target.id()));
  };

  const calls = (history: Call[]) => h("table", { class: "calls", "data-test": "task-calls" },
    h("thead", {}, h("tr", {}, ...["#", "provider", "started", "took", "tokens", "error"].map((c) => h("th", {}, c)))),
    h("tbody", {}, ...history.map((c) => h("tr", {},
      h("td", {}, c.attempt), h("td", { "data-test": "call-provider" }, c.provider), h("td", {}, time(c.started_at)),
      h("td", {}, duration(c.duration_ms)), h("td", {}, c.usage ? `${c.usage.total_tokens}${c.model ? ` ${c.model}` : ""}` : ""),
      h("td", { class: "error" }, c.error?.message ?? "")))));

  const renderDetail = async (taskId: string) => {
    const t = tasks[index.get(taskId) ?? -1];
    if (!t) return;
    const params = h("pre", { "data-test": "task-params" }, "…");
    const history = h("div", {}, "…");
    const result = h("pre", { "data-test": "task-result" }, t.status === "completed" ? "…" : "–");
    const usage = h("dd", { "data-test": "task-tokens" }, tokens(t.usage));
    const shownProgress = progress.get(taskId);
    clear(detail,
      h("h3", {}, t.name), badge(t.status),
      h("dl", {},
        h("dt", {}, "call"), h("dd", {}, `${t.protocol}.${t.method}`),
        h("dt", {}, "attempts"), h("dd", {}, t.attempts),
        h("dt", {}, "started"), h("dd", {}, time(t.started_at)),
        h("dt", {}, "finished"), h("dd", {}, time(t.finished_at)),
        h("dt", {}, "queued"), h("dd", {}, duration(t.queued_ms)),
        h("dt", {}, "took"), h("dd", {}, duration(t.duration_ms)),
        h("dt", {}, "tokens"), usage,
        ...(t.waiting_for ? [h("dt", {}, "waiting for"), h("dd", { "data-test": "task-waiting" }, t.waiting_for)] : [])),
      t.error ? h("div", {}, h("h4", {}, "error"), h("pre", { class: "error", "data-test": "task-error" }, json(t.error))) : null,
      shownProgress ? h("div", {}, h("h4", {}, "progress"), h("pre", { "data-test": "task-progress" }, shownProgress)) : null,
      h("h4", {}, "params"), params,
      h("h4", {}, "calls"), history,
      h("h4", {}, "result"), result);
    const full = await detailOf(t);
    params.textContent = full.params === undefined ? "– (not called yet)" : json(full.params);
    clear(history, full.history?.length ? calls(full.history) : "–");
    if (full.status === "completed") result.textContent = json(full.result);
    usage.textContent = tokens(full.usage);
  };
  const select = (taskId: string) => {
    selected = taskId;
    renderRows();
    cy?.$(":selected").unselect();
    cy?.getElementById(taskId).select();
    renderDetail(taskId);
  };

  const apply = (taskId: string, change: Partial<Task>) => {
    const at = index.get(taskId);
    if (at === undefined) return;
    Object.assign(tasks[at], change);
    cy?.getElementById(taskId).classes(tasks[at].status);
  };
  // A report's tasks: applied to those shown, or, when it has new ones (a
  // `for_each` made its items' tasks), shown anew in the report's order.
  const adopt = (fresh: Task[]) => {
    if (fresh.every((t) => index.has(t.id))) {
      for (const t of fresh) apply(t.id, t);
      return;
    }
    tasks.length = 0;
    index.clear();
    tasks.push(...fresh);
    fresh.forEach((t, i) => index.set(t.id, i));
    cy?.destroy();
    cy = null;
    drawGraph();
  };
  // Timings come with the report: fetched again at most once a second while
  // tasks end (and once more at the end), never once per event.
  let fetching: number | undefined;
  const refetch = (now = false) => {
    if (fetching !== undefined && !now) return;
    window.clearTimeout(fetching);
    fetching = window.setTimeout(async () => {
      const fresh = await get<Report>(`/api/v1/workflows/${id}`);
      fetching = undefined;
      report = fresh;
      adopt(fresh.tasks);
      rerender();
    }, now ? 0 : 1000);
  };

  // Many events in a burst become one render.
  let queued = false;
  const rerender = () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      renderHead();
      renderRows();
      if (selected) renderDetail(selected);
    });
  };

  stream(`/api/v1/workflows/${id}/events`, (e) => {
    const d = e.data;
    switch (e.event) {
      case "snapshot": {
        const first = report === null;
        report = d as Report;
        if (first) {
          tasks.push(...report.tasks);
          report.tasks.forEach((t, i) => index.set(t.id, i));
          drawGraph();
        } else {
          adopt(report.tasks);
        }
        break;
      }
      case "task_status":
      case "task_result":
        apply(d.task_id, { status: d.status, attempts: d.attempt, error: d.error });
        // A task not shown yet is an item of a `for_each`: the report has it.
        if (e.event === "task_result" || !index.has(d.task_id)) refetch();
        break;
      case "task_progress": {
        const chunk = typeof d.chunk === "string" ? d.chunk : d.chunk?.text ?? d.chunk?.content ?? JSON.stringify(d.chunk);
        progress.set(d.task_id, (progress.get(d.task_id) ?? "") + chunk);
        break;
      }
      case "workflow_completed":
        if (report) report.status = d.status;
        refetch(true);
        break;
    }
    rerender();
  }, signal);
}
