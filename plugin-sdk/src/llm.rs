//! What the bundled `llm/v1` bridges (Ollama, OpenAI-compatible) share,
//! for an LLM bridge of your own: the params of `generate`, `vision` and `embed`, the
//! defaults of the generating methods and their checks. The same names and
//! defaults on every backend let a workflow move between them by
//! configuration alone.

use crate::{RpcError, Value};
use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;

/// The default `temperature` (the original system's).
pub fn temperature() -> f64 {
    0.7
}

/// The default `max_tokens` (the original system's).
pub fn max_tokens() -> u32 {
    500
}

/// The default of `stream`: answers stream to subscribers.
pub fn stream() -> bool {
    true
}

fn describe_image() -> String {
    "Describe this image.".into()
}

/// `generate`'s params.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    pub prompt: String,
    pub model: Option<String>,
    pub system: Option<String>,
    /// `"json"` or a JSON schema.
    pub format: Option<Value>,
    /// Base64 images for multimodal models.
    pub images: Option<Vec<String>>,
    /// Stream pieces to subscribers as they are generated (default true).
    #[serde(default = "stream")]
    pub stream: bool,
    #[serde(default = "temperature")]
    pub temperature: f64,
    #[serde(default = "max_tokens")]
    pub max_tokens: u32,
    /// Extra backend options, passed as given.
    #[serde(default)]
    pub options: serde_json::Map<String, Value>,
}

/// `vision`'s params.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Vision {
    #[serde(default = "describe_image")]
    pub prompt: String,
    pub model: Option<String>,
    /// One base64 image.
    pub image_data: Option<String>,
    /// Several base64 images.
    pub images: Option<Vec<String>>,
    /// A file to read, inside a directory the manifest grants (`read_dirs`).
    pub image_path: Option<String>,
    /// Stream pieces to subscribers as they are generated (default true).
    #[serde(default = "stream")]
    pub stream: bool,
    #[serde(default = "temperature")]
    pub temperature: f64,
    #[serde(default = "max_tokens")]
    pub max_tokens: u32,
    /// Extra backend options, passed as given.
    #[serde(default)]
    pub options: serde_json::Map<String, Value>,
}

impl Vision {
    /// Its images as base64: `images`, then `image_data`, then the file at
    /// `image_path`; an error if there are none or the file cannot be read.
    pub fn take_images(&mut self) -> Result<Vec<String>, RpcError> {
        let mut images = self.images.take().unwrap_or_default();
        images.extend(self.image_data.take());
        if let Some(path) = &self.image_path {
            let bytes = std::fs::read(path).map_err(|e| {
                RpcError::invalid_params(format!(
                    "cannot read image_path '{path}': {e} (the plugin reads only directories its manifest grants in read_dirs)"
                ))
            })?;
            images.push(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        if images.is_empty() {
            return Err(RpcError::invalid_params("give an image: 'image_data' (base64), 'images' or 'image_path'"));
        }
        Ok(images)
    }
}

/// `embed`'s params.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Embed {
    /// One text, or a list of texts.
    pub text: Value,
    pub model: Option<String>,
}

impl Embed {
    /// An error unless `text` is a string or a non-empty list of strings.
    pub fn check(&self) -> Result<(), RpcError> {
        let text = &self.text;
        let valid =
            text.is_string() || text.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
        if valid {
            Ok(())
        } else {
            Err(RpcError::invalid_params("'text' must be a string or a non-empty list of strings"))
        }
    }
}

/// Tokens a call used, in the names both bridges report (`usage`).
pub fn usage(prompt: u64, completion: u64, total: Option<u64>) -> Value {
    serde_json::json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total.unwrap_or(prompt + completion),
    })
}
