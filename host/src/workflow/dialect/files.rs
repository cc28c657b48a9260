//! The original's ways of naming files, read as tasks that read a `file`
//! (or a `for_each` over files) from the files directory `cwd`: the
//! original resolved its paths against the directory its CLI ran in, and
//! `gleitzeit run` allows that directory under this name.
//!
//! - `file_path` in the params of `llm/v1` `chat` or `generate`: the
//!   file's text is put after the prompt (the last user message);
//! - a relative `image_path` of `vision`, or `images` that is one
//!   relative image path: the image, as `images`; and `messages` there,
//!   as the `prompt` vision takes;
//! - `python/v1` `execute` with `file` (a script) for `code`; the
//!   `timeout` among its params as the task's;
//! - batch files: `type: batch`, `batch: {directory, pattern}` and a
//!   `template:` task, as one task with `for_each: {files}`.

use crate::files::WORKING_DIR;
use crate::workflow::fields::TASK_FIELDS;
use serde_json::{Map, Value, json};

/// What a `${item}` reference reads of the file.
const TEXT: &str = "${item.text}";
const IMAGE: &str = "${item.base64}";

/// The id the batch's task gets when its template names none.
const BATCH_TASK: &str = "batch";

/// `type: batch` with `batch: {directory, pattern}` and `template`: the
/// workflow's one task, run once per file. Returns the note.
pub(super) fn batch(workflow: &mut Map<String, Value>) -> Option<String> {
    if workflow.get("type").and_then(Value::as_str) != Some("batch") || workflow.contains_key("tasks") {
        return None;
    }
    let directory = workflow.get("batch")?.get("directory")?.as_str()?.trim_end_matches('/').to_owned();
    let pattern = workflow.get("batch")?.get("pattern").and_then(Value::as_str).unwrap_or("*").to_owned();
    let Some(Value::Object(template)) = workflow.get("template") else { return None };
    let mut task = Map::new();
    let mut params = Map::new();
    for (key, value) in template {
        // The template's keys that are not a task's fields are its params,
        // as the original's template held them.
        let into = if TASK_FIELDS.contains(&key.as_str()) { &mut task } else { &mut params };
        into.insert(key.clone(), value.clone());
    }
    if !params.is_empty() {
        let given = task.entry("params").or_insert_with(|| json!({}));
        if let Value::Object(given) = given {
            params.extend(std::mem::take(given));
            *given = params;
        }
    }
    if !task.contains_key("id") && !task.contains_key("name") {
        task.insert("id".into(), BATCH_TASK.into());
    }
    let files = if directory.is_empty() || directory == "." { pattern } else { format!("{directory}/{pattern}") };
    task.insert("for_each".into(), json!({"files": files, "dir": WORKING_DIR}));
    workflow.remove("type");
    workflow.remove("batch");
    workflow.remove("template");
    workflow.insert("tasks".into(), json!([task]));
    Some(format!(
        "type 'batch' read as one task with for_each: {{files: '{files}', dir: {WORKING_DIR}}}, the template run once \
         per file with the file in its prompt"
    ))
}

/// The file a task's params name, read by the host: `(field, note)` for
/// each thing read so. `protocol` and `method` are as read already.
pub(super) fn params(task: &mut Map<String, Value>, batch: bool) -> Vec<(&'static str, String)> {
    let protocol = task.get("protocol").and_then(Value::as_str).unwrap_or_default().to_owned();
    let method = task.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
    let key = if task.contains_key("params") { "params" } else { "parameters" };
    if task.contains_key("file") {
        return Vec::new(); // this host's own form: nothing to read
    }
    let Some(Value::Object(params)) = task.get_mut(key) else { return Vec::new() };
    let mut notes = Vec::new();
    let mut path = None;
    match (protocol.as_str(), method.as_str()) {
        ("llm/v1", "chat" | "generate") => {
            path = take_path(params, "file_path", true);
            if path.is_some() || batch {
                put_text(params, &method);
                let whence = path.as_deref().map_or("the batch's file".to_owned(), |p| format!("'{p}'"));
                notes.push((key, format!("the text of {whence} is put after the prompt")));
            }
        }
        ("llm/v1", "vision") => {
            if let Some(note) = messages_as_prompt(params) {
                notes.push((key, note));
            }
            path = take_path(params, "image_path", false).or_else(|| one_image_path(params));
            if path.is_some() || batch {
                let images = params.entry("images").or_insert_with(|| json!([]));
                if let Value::Array(images) = images {
                    images.push(IMAGE.into());
                }
                let whence = path.as_deref().map_or("the batch's file".to_owned(), |p| format!("'{p}'"));
                notes.push((key, format!("the image {whence} is read by the host and sent as 'images'")));
            }
        }
        ("python/v1", "execute") => {
            if !params.contains_key("code") {
                path = take_path(params, "file", true);
            }
            if let Some(script) = &path {
                params.insert("code".into(), TEXT.into());
                notes.push((key, format!("the script '{script}' is read by the host and run as 'code'")));
            }
            if let Some(timeout) = params.remove("timeout") {
                task.entry("timeout").or_insert(timeout);
                notes.push(("timeout", "the script's 'timeout' in its params is the task's".into()));
            }
        }
        _ => {}
    }
    if batch {
        batch_references(task.get_mut(key));
    }
    if let Some(path) = path {
        task.insert("file".into(), json!({"path": path, "dir": WORKING_DIR}));
    }
    notes
}

/// Remove `field` (a path) from `params` if the host is to read it: any
/// path when `always`, else a relative one (an absolute `image_path` is a
/// param of this host's `vision`, read by the plugin).
fn take_path(params: &mut Map<String, Value>, field: &str, always: bool) -> Option<String> {
    let path = params.get(field)?.as_str()?;
    if !always && path.starts_with('/') {
        return None;
    }
    let path = path.strip_prefix("./").unwrap_or(path).to_owned();
    params.remove(field);
    Some(path)
}

/// The file extensions an `images` entry names an image file by, not
/// base64 (which ends in letters, digits, `+`, `/` or `=`, never `.png`).
const IMAGE_FILES: &[&str] = &[".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"];

/// `images: [PATH]`, one relative path of an image file, taken out of
/// `params`; `images` of base64 data, or of several entries, is left.
fn one_image_path(params: &mut Map<String, Value>) -> Option<String> {
    let [Value::String(path)] = params.get("images")?.as_array()?.as_slice() else { return None };
    let lower = path.to_ascii_lowercase();
    if path.starts_with('/') || !IMAGE_FILES.iter().any(|ext| lower.ends_with(ext)) {
        return None;
    }
    let path = path.strip_prefix("./").unwrap_or(path).to_owned();
    params.remove("images");
    Some(path)
}

/// The file's text after the prompt: `generate`'s `prompt`, or the last
/// user message of `chat` (a new one if there is none).
fn put_text(params: &mut Map<String, Value>, method: &str) {
    let append = |text: &mut String| {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(TEXT);
    };
    if method == "generate" {
        match params.entry("prompt").or_insert_with(|| "".into()) {
            Value::String(prompt) => append(prompt),
            other => *other = TEXT.into(),
        }
        return;
    }
    let messages = params.entry("messages").or_insert_with(|| json!([]));
    let Value::Array(messages) = messages else { return };
    let last_user = messages.iter_mut().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    match last_user.and_then(|m| m.get_mut("content")) {
        Some(Value::String(content)) => append(content),
        _ => messages.push(json!({"role": "user", "content": TEXT})),
    }
}

/// `vision` takes a `prompt`; the original's files gave it `messages`:
/// their contents, in order, become the prompt.
fn messages_as_prompt(params: &mut Map<String, Value>) -> Option<String> {
    if params.contains_key("prompt") {
        return None;
    }
    let Value::Array(messages) = params.get("messages")? else { return None };
    let contents: Option<Vec<&str>> = messages.iter().map(|m| m.get("content")?.as_str()).collect();
    let prompt = contents?.join("\n\n");
    params.remove("messages");
    params.insert("prompt".into(), prompt.into());
    Some("'messages' read as vision's 'prompt' (their contents, in order)".into())
}

/// A batch template's `${file_path}` and `${file_name}`: the item's.
fn batch_references(params: Option<&mut Value>) {
    let Some(params) = params else { return };
    super::each_string(params, |text| {
        if text.contains("${file_") {
            *text = text.replace("${file_path}", "${item.path}").replace("${file_name}", "${item.name}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_file_is_one_task_over_its_files() {
        let mut workflow = json!({"name": "b", "type": "batch", "batch": {"directory": "docs/", "pattern": "*.md"},
            "template": {"method": "llm/chat", "model": "m", "priority": 1,
                         "messages": [{"role": "user", "content": "About ${file_path}:"}]}});
        let Value::Object(map) = &mut workflow else { unreachable!() };
        let note = batch(map).unwrap();
        assert!(
            note.starts_with("type 'batch' read as one task with for_each: {files: 'docs/*.md', dir: cwd}"),
            "{note}"
        );
        let task = &workflow["tasks"][0];
        assert_eq!(task["for_each"], json!({"files": "docs/*.md", "dir": "cwd"}));
        assert_eq!(
            (&task["id"], &task["priority"], &task["params"]["model"]),
            (&json!("batch"), &json!(1), &json!("m"))
        );
        assert!(
            workflow.get("template").is_none() && workflow.get("batch").is_none() && workflow.get("type").is_none()
        );

        let Value::Object(task) = &mut workflow["tasks"][0] else { unreachable!() };
        task.insert("protocol".into(), "llm/v1".into());
        task.insert("method".into(), "chat".into());
        let notes = params(task, true);
        assert_eq!(notes, [("params", "the text of the batch's file is put after the prompt".to_owned())]);
        assert_eq!(task["params"]["messages"][0]["content"], "About ${item.path}:\n\n${item.text}");
    }

    #[test]
    fn a_script_file_is_read_for_code_and_its_timeout_is_the_tasks() {
        let mut task = json!({"protocol": "python/v1", "method": "execute",
            "parameters": {"file": "scripts/s.py", "context": {"x": 1}, "timeout": 30}});
        let Value::Object(map) = &mut task else { unreachable!() };
        let notes = params(map, false);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(task["file"], json!({"path": "scripts/s.py", "dir": "cwd"}));
        assert_eq!(task["parameters"], json!({"code": "${item.text}", "context": {"x": 1}}));
        assert_eq!(task["timeout"], 30);
        // Code given, or this host's own `file`: nothing is read.
        for mut task in [
            json!({"protocol": "python/v1", "method": "execute", "params": {"file": "s.py", "code": "x"}}),
            json!({"protocol": "llm/v1", "method": "chat", "file": "a.txt", "params": {"file_path": "b.txt"}}),
        ] {
            let before = task.clone();
            let Value::Object(map) = &mut task else { unreachable!() };
            assert!(params(map, false).is_empty());
            assert_eq!(task, before);
        }
    }

    #[test]
    fn a_scripts_timeout_is_the_tasks_also_with_code() {
        let mut task = json!({"protocol": "python/v1", "method": "execute", "params": {"code": "x", "timeout": 30}});
        let Value::Object(map) = &mut task else { unreachable!() };
        assert_eq!(params(map, false), [("timeout", "the script's 'timeout' in its params is the task's".to_owned())]);
        assert_eq!((&task["params"], &task["timeout"]), (&json!({"code": "x"}), &json!(30)));
    }

    #[test]
    fn images_that_is_one_relative_image_path_is_read_by_the_host() {
        let mut task = json!({"protocol": "llm/v1", "method": "vision",
            "params": {"prompt": "p", "images": ["./pics/a.PNG"]}});
        let Value::Object(map) = &mut task else { unreachable!() };
        assert_eq!(params(map, false).len(), 1);
        assert_eq!(task["file"], json!({"path": "pics/a.PNG", "dir": "cwd"}));
        assert_eq!(task["params"]["images"], json!([IMAGE]));
        // Base64, an absolute path or several images: the plugin's.
        for images in [json!(["iVBORw0KGgo="]), json!(["/srv/a.png"]), json!(["a.png", "b.png"])] {
            let mut task = json!({"protocol": "llm/v1", "method": "vision", "params": {"images": images}});
            let before = task.clone();
            let Value::Object(map) = &mut task else { unreachable!() };
            assert!(params(map, false).is_empty());
            assert_eq!(task, before);
        }
    }

    #[test]
    fn an_absolute_image_path_is_left_to_the_plugin() {
        let mut task =
            json!({"protocol": "llm/v1", "method": "vision", "params": {"image_path": "/srv/a.png", "prompt": "p"}});
        let Value::Object(map) = &mut task else { unreachable!() };
        assert!(params(map, false).is_empty());
        assert_eq!(task["params"]["image_path"], "/srv/a.png");
        assert!(task.get("file").is_none());
    }
}
