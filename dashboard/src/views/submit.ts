// Submit a workflow: paste YAML or JSON, or pick a file; the validator's
// problems are listed by task and field, as the CLI prints them.

import { ApiError, post } from "../api";
import { clear, h } from "../dom";

export function submitView(root: HTMLElement): void {
  const text = h("textarea", { rows: "18", spellcheck: "false", "data-test": "workflow-text",
    placeholder: "name: Greeting\ntasks:\n  - id: greet\n    protocol: echo/v1\n    method: echo\n    params: {message: Hello}" });
  const file = h("input", { type: "file", accept: ".yaml,.yml,.json", "data-test": "workflow-file" });
  const problems = h("div", { class: "problems", "data-test": "problems" });
  const submit = h("button", { "data-test": "submit" }, "submit");
  file.addEventListener("change", async () => {
    const chosen = file.files?.[0];
    if (chosen) text.value = await chosen.text();
  });
  submit.addEventListener("click", async () => {
    clear(problems);
    const body = text.value;
    const type = body.trimStart().startsWith("{") ? "application/json" : "application/yaml";
    try {
      const accepted = await post<{ workflow_id: string }>("/api/v1/workflows", body, type);
      location.hash = `#/workflows/${accepted.workflow_id}`;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      const located = e.problems.map((p) => h("li", {}, [p.task, p.field && `field '${p.field}'`].filter(Boolean).join(", ") + (p.task || p.field ? ": " : "") + p.message));
      clear(problems, h("p", { class: "error" }, located.length ? `${located.length} problem(s):` : e.message), located.length ? h("ul", {}, ...located) : null);
    }
  });
  clear(root, h("h2", {}, "Submit a workflow"), h("p", {}, file), text, h("p", {}, submit), problems);
}
