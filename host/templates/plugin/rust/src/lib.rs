//! {{protocol}}: a Gleitzeit plugin.

use gleitzeit_plugin_sdk::{Context, Provider, RpcError, Value, export_provider, json};
use schemars::JsonSchema;
use serde::Deserialize;

/// The params of `greet`; their JSON Schema is what the host checks.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Greet {
    name: String,
    #[serde(default)]
    excited: bool,
}

fn greet(_ctx: &Context, p: Greet) -> Result<Value, RpcError> {
    let end = if p.excited { "!" } else { "." };
    Ok(json!({ "greeting": format!("Hello, {}{end}", p.name) }))
}

fn provider() -> Provider {
    Provider::new("{{protocol}}", "{{name}}", env!("CARGO_PKG_VERSION"))
        .description("Says hello")
        .method("greet", "Greet someone by name", greet)
}

export_provider!(provider);

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context { method: "greet".into(), task_id: "t".into(), workflow_id: None, attempt: 1 }
    }

    #[test]
    fn greets_by_name() {
        let answer = greet(&context(), Greet { name: "Ada".into(), excited: true });
        assert_eq!(answer, Ok(json!({ "greeting": "Hello, Ada!" })));
    }
}
