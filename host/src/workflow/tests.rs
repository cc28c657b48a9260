//! The workflow reader's tests: every field, every problem, hostile text.

use super::*;
use crate::model::{Backoff, Priority, RetryPolicy};
use serde_json::Map;
use std::time::Duration;

fn yaml(text: &str) -> Result<Workflow, WorkflowError> {
    parse("wf.yaml", text.as_bytes(), Format::Yaml)
}

fn problems(text: &str) -> Vec<String> {
    match yaml(text) {
        Ok(_) => panic!("expected problems"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn parses_the_full_schema_with_aliases() {
    let wf = yaml(
        r#"
name: demo
id: wf-1
version: 2
priority: high
max_parallel_tasks: 4
timeout: 5m
tasks:
  - id: a
    protocol: echo/v1
    method: echo
    parameters: {message: hi}
    retry_config: {max_attempts: 4, backoff_strategy: linear, base_delay: 0.5, max_delay: 2, jitter: false}
  - name: Second Step
    protocol: echo/v1
    method: echo
    dependencies: [a]
    priority: low
    timeout: 2.5
    params: {message: "${a.result.echoed}"}
  - id: c
    protocol: echo/v1
    method: echo
    dependencies: [Second Step, a, a]
"#,
    )
    .unwrap();
    assert_eq!(wf.tasks[2].dependencies, ["second-step", "a"], "names become ids, repeats drop");
    assert_eq!((wf.id.as_str(), wf.version.as_deref(), wf.max_parallel), ("wf-1", Some("2"), Some(4)));
    assert_eq!(wf.timeout, Some(Duration::from_secs(300)));
    let [a, b, _] = &wf.tasks[..] else { panic!() };
    assert_eq!(a.priority, Priority::High, "inherits the workflow's priority");
    assert_eq!(a.retry.max_attempts, 4);
    assert_eq!(a.retry.backoff, Backoff::Linear);
    assert_eq!(a.params["message"], "hi");
    assert_eq!((b.id.as_str(), b.name.as_str()), ("second-step", "Second Step"));
    assert_eq!(b.priority, Priority::Low);
    assert_eq!(b.timeout, Some(Duration::from_millis(2500)));
    assert_eq!(b.retry, RetryPolicy::none());
}

#[test]
fn reports_every_problem_with_task_and_field() {
    let found = problems(
        r#"
name: bad
tasks:
  - id: a
    protocol: Echo
    method: echo
    priority: hgh
    timeout: -1
    dependecies: [b]
  - id: a
    protocol: echo/v1
    method: "1x"
    retry: {backoff: sometimes, max_attempts: 0}
  - id: c
    protocol: echo/v1
    method: echo
    dependencies: [c, nope]
"#,
    );
    let expected = [
        "task 'a', field 'dependecies': unknown field; did you mean 'dependencies'?",
        "task 'a', field 'protocol': 'Echo' is not a protocol id",
        "task 'a', field 'priority': unknown priority 'hgh'",
        "task 'a', field 'timeout': must be a number of seconds",
        "task 'a', field 'method': '1x' is not a method name",
        "task 'a', field 'retry.max_attempts': must be a whole number from 1 to 100, found 0",
        "task 'a', field 'retry.backoff': unknown backoff 'sometimes'",
        "task 'c', field 'dependencies': a task cannot depend on itself",
        "task 'c', field 'dependencies': unknown task 'nope'",
    ];
    for want in expected {
        assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
    }
}

#[test]
fn graph_problems_are_found_after_fields_are_valid() {
    let found = problems(
        r#"
name: graph
tasks:
  - {id: a, protocol: echo/v1, method: echo, dependencies: [c]}
  - {id: b, protocol: echo/v1, method: echo, dependencies: [a]}
  - {id: c, protocol: echo/v1, method: echo, dependencies: [b]}
  - {id: d, protocol: echo/v1, method: echo, dependencies: [d]}
  - {id: a, protocol: echo/v1, method: echo}
"#,
    );
    assert!(found.iter().any(|p| p.contains("duplicate id: tasks #1 and #5")), "{found:#?}");
    assert!(
        found.iter().any(|p| p
            == "task 'a', field 'dependencies': dependency cycle: a -> c -> b -> a (each task depends on the next)"),
        "{found:#?}"
    );
    assert!(found.iter().any(|p| p.contains("task 'd'") && p.contains("itself")), "{found:#?}");
}

#[test]
fn references_must_point_to_ancestors() {
    let found = problems(
        r#"
name: refs
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: b, protocol: echo/v1, method: echo, dependencies: [a]}
  - {id: c, protocol: echo/v1, method: echo, dependencies: [b], params: {m: "${a.result.x}", n: "${b.result}"}}
  - {id: d, protocol: echo/v1, method: echo, params: {m: "${c.result}", n: "${ghost.result}", o: "${a.result..x}"}}
"#,
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found.iter().any(|p| p.starts_with(
        "task 'd', field 'params': refers to the result of task 'c', which is not among its dependencies"
    )));
    assert!(found.iter().any(|p| p.contains("'${ghost.result}' refers to unknown task 'ghost'")));
    assert!(found.iter().any(|p| p.contains("malformed reference '${a.result..x}'")));
}

#[test]
fn for_each_is_checked_like_params() {
    let found = problems(
        r#"
name: fan
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: b, protocol: echo/v1, method: echo, for_each: "${a.result.list}", params: {m: "${item}"}}
  - {id: c, protocol: echo/v1, method: echo, for_each: {file: x}, max_parallel: 0, allow_failures: "yes"}
  - {id: d, protocol: echo/v1, method: echo, max_parallel: 2, allow_failures: true, params: {m: "${item.x}"}}
  - {id: e, protocol: echo/v1, method: echo, for_each: "${item}", params: {m: "${item_index}"}}
  - {id: item, protocol: echo/v1, method: echo, for_each: "list: ${a.result}", dependencies: [a]}
"#,
    );
    let expected = [
        "task 'b', field 'for_each': refers to the result of task 'a', which is not among its dependencies",
        "task 'c', field 'for_each': must be a list of items, one reference that gives a list (like \"${topics.result.items}\") or {files: PATTERN, dir: NAME}, found a mapping",
        "task 'c', field 'max_parallel': must be a whole number from 1 to 100000, found 0",
        "task 'c', field 'allow_failures': must be true or false, found 'yes'",
        "task 'd', field 'max_parallel': applies to a task with 'for_each' only",
        "task 'd', field 'allow_failures': applies to a task with 'for_each' only",
        "task 'd', field 'params': '${item.x}' needs 'for_each' or 'file' on the task (it names the item)",
        "task 'e', field 'for_each': '${item}': the items are not known yet in 'for_each'",
        "task 'item', field 'id': 'item' is reserved for the items of for_each; rename the task",
        "task 'item', field 'for_each': must be a list of items, one reference",
    ];
    for want in expected {
        assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn for_each_survives_the_stores_round_trip() {
    let wf = yaml(
            r#"
name: fan
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: b, protocol: echo/v1, method: echo, dependencies: [a], for_each: "${a.result}", max_parallel: 3, allow_failures: true, params: {m: "${item}"}}
  - {id: c, protocol: echo/v1, method: echo, for_each: [1, {x: 2}]}
"#,
        )
        .unwrap();
    let for_each = wf.tasks[1].for_each.as_ref().unwrap();
    assert_eq!((for_each.max_parallel, for_each.allow_failures), (Some(3), true));
    let stored = crate::store::workflow_json("test", &wf).unwrap();
    assert_eq!(crate::store::workflow_from_json("test", &wf.id, &stored).unwrap(), wf);
}

#[test]
fn a_schedule_block_is_checked_against_the_declared_inputs() {
    // A workflow id too long for a schedule id is refused, not cut: two
    // such workflows would share one schedule.
    let long_id = format!(
        "name: x\nid: {}\nschedule: {{cron: \"@daily\"}}\ntasks: [{{id: t, protocol: echo/v1, method: echo}}]\n",
        "w".repeat(101)
    );
    let found = problems(&long_id);
    assert!(
        found[0].starts_with("field 'schedule.id': 'wwww") && found[0].contains("is not a valid schedule id"),
        "{found:#?}"
    );
    let found = problems(
        r#"
name: "!!!"
inputs: {at: string, count: integer, flag: boolean}
schedule: {cron: "0 25 * * *", timezone: Europe/Berln, every: day}
tasks:
  - {id: t, protocol: echo/v1, method: echo}
"#,
    );
    let expected = [
        "field 'schedule.every': unknown field; schedule fields are: cron, timezone, inputs, due_input, id",
        "field 'schedule.timezone': unknown time zone 'Europe/Berln'",
    ];
    for want in expected {
        assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
    }
    let found = problems(
        r#"
name: "!!!"
inputs: {at: string, count: integer, flag: boolean}
schedule: {cron: "0 25 * * *"}
tasks:
  - {id: t, protocol: echo/v1, method: echo}
"#,
    );
    assert!(found[0].starts_with("field 'schedule.cron': '0 25 * * *' is not a cron pattern"), "{found:#?}");
    let found = problems(
        r#"
name: "!!!"
inputs: {at: string, count: integer, flag: boolean}
schedule: {cron: "@daily", due_input: count, inputs: {count: many, flag: "true", x: 1}}
tasks:
  - {id: t, protocol: echo/v1, method: echo}
"#,
    );
    let expected = [
        "field 'schedule.inputs.count': must be an integer, found 'many'",
        "field 'schedule.inputs.x': the workflow declares no such input (inputs: at, count, flag)",
        "field 'schedule.due_input': input 'count' must be of type string to hold a time",
        "field 'schedule.id': the workflow's name gives no id; set schedule.id",
    ];
    for want in expected {
        assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    assert!(
        problems("name: x\nschedule: 7am\ntasks:\n  - {id: t, protocol: echo/v1, method: echo}\n")[0]
            .starts_with("field 'schedule': must be a mapping with 'cron'")
    );

    // The id: the block's, else the workflow's, else its name's.
    let id = |text: &str| yaml(text).unwrap().schedule.unwrap().id;
    let tasks = "tasks:\n  - {id: t, protocol: echo/v1, method: echo}\n";
    assert_eq!(id(&format!("name: Morning Digest\nschedule: {{cron: '@daily'}}\n{tasks}")), "morning-digest");
    assert_eq!(id(&format!("id: md\nname: x\nschedule: {{cron: '@daily'}}\n{tasks}")), "md");
    assert_eq!(id(&format!("id: md\nname: x\nschedule: {{cron: '@daily', id: mine}}\n{tasks}")), "mine");
    // Run by hand, a scheduled workflow takes its schedule's inputs.
    let mut wf = yaml(&format!(
            "name: x\ninputs: {{at: string, n: integer}}\nschedule: {{cron: '@daily', due_input: at, inputs: {{n: '3'}}}}\n{tasks}"
        ))
        .unwrap();
    inputs::bind("x", &mut wf, Map::new()).unwrap();
    let at = wf.inputs[0].default.as_deref().cloned().unwrap();
    assert!(at.as_str().unwrap().ends_with("+00:00"), "due now, in UTC: {at}");
    assert_eq!(wf.inputs[1].default.as_deref(), Some(&serde_json::json!(3)));
}

#[test]
fn inputs_are_declared_with_types_and_bound_once() {
    let found = problems(
        r#"
name: inputs
inputs: {a: strin, b: {type: integer, default: x}, c: {type: string, deflt: 1}, "d e": string, f: 3}
tasks:
  - {id: t, protocol: echo/v1, method: echo, params: {m: "${inputs.zz}"}}
  - {id: inputs, protocol: echo/v1, method: echo}
"#,
    );
    let expected = [
        "field 'inputs.a.type': unknown type 'strin'; use string, integer, number, boolean, array, object",
        "field 'inputs.b.default': must be an integer, found 'x'",
        "field 'inputs.c.deflt': unknown field; input fields are: type, default, description",
        "field 'inputs.d e': 'd e' is not a valid input name",
        "field 'inputs.f': must be a type (string, integer, number, boolean, array, object) or a mapping with 'type', found a number",
        "task 't', field 'params': '${inputs.zz}' names no declared input (inputs: c)",
        "task 'inputs', field 'id': 'inputs' is reserved",
    ];
    for want in expected {
        assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");

    let mut wf = yaml(
            "name: x\ninputs: {n: {type: number, default: 1.5}, o: object}\ntasks:\n  - {id: t, protocol: echo/v1, method: echo}\n",
        )
        .unwrap();
    let given = serde_json::json!({"o": "{\"k\": [1]}"}).as_object().unwrap().clone();
    inputs::bind("x", &mut wf, given).unwrap();
    let values: Vec<_> = wf.inputs.iter().map(|i| i.default.as_deref().cloned().unwrap()).collect();
    assert_eq!(values, [serde_json::json!(1.5), serde_json::json!({"k": [1]})], "strings are read by type");
    // Bound values travel in the document, so a stored workflow reads back with them.
    let stored = crate::store::workflow_json("test", &wf).unwrap();
    let again = crate::store::workflow_from_json("test", &wf.id, &stored).unwrap();
    assert_eq!(again, wf);
    let mut again = again;
    assert!(inputs::bind("x", &mut again, Map::new()).is_ok(), "a bound workflow needs nothing more");
}

#[test]
fn conditions_are_checked_like_params() {
    let found = problems(
        r#"
name: when
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: b, protocol: echo/v1, method: echo, when: "${a.result.x} =="}
  - {id: d, protocol: echo/v1, method: echo, when: [1]}
"#,
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with(
            "task 'b', field 'when': is not a valid CEL expression: Syntax error: mismatched input '<EOF>' expecting"
        ),
        "{found:#?}"
    );
    assert_eq!(found[1], "task 'd', field 'when': must be a condition (a string), found a list");
    let found = problems(
        r#"
name: when
tasks:
  - {id: a, protocol: echo/v1, method: echo}
  - {id: c, protocol: echo/v1, method: echo, when: "${a.result.x} == 1"}
  - {id: e, protocol: echo/v1, method: echo, for_each: [1], when: "${item} == 1"}
  - {id: f, protocol: echo/v1, method: echo, when: "${a.reslt} == 1", dependencies: [a]}
  - {id: g, protocol: echo/v1, method: echo, when: true}
"#,
    );
    let expected = [
        "task 'c', field 'when': refers to the result of task 'a', which is not among its dependencies",
        "task 'e', field 'when': '${item}': the items are not known yet in 'when'",
        "task 'f', field 'when': malformed reference '${a.reslt}'",
    ];
    for want in expected {
        assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn hostile_input_gets_clear_errors() {
    let err = parse("x.yaml", b"name: \xff\xfe", Format::Yaml).unwrap_err();
    assert!(err.to_string().contains("not UTF-8 text (invalid byte at offset 6)"), "{err}");

    let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    let err = yaml(bomb).unwrap_err();
    assert!(matches!(err, WorkflowError::Syntax { .. }), "{err}");

    let deep = format!("name: x\ntasks: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(yaml(&deep).unwrap_err(), WorkflowError::Syntax { .. }));
    let deep_json = format!("{{\"name\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(parse("x.json", deep_json.as_bytes(), Format::Json).unwrap_err(), WorkflowError::Syntax { .. }));

    let err = yaml("- just\n- a list\n").unwrap_err();
    assert!(err.to_string().contains("the top level must be a mapping"), "{err}");
}
