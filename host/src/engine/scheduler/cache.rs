//! Result caching (`cache: {ttl}`): before a task whose call may be cached
//! is handed to a provider, its key is looked up off the scheduler's
//! thread. A hit completes the task with the kept result, its one call
//! marked `cached` (provider `cache`), without a provider, a rate limit's
//! slot or a concurrency key's place; a miss lets it run, and a result it
//! then gets is kept for `ttl`.
//!
//! The key is the SHA-256 of the workflow's owner (its token; none for
//! the host's own runs), the protocol, the method, the resolved params
//! (objects' keys in order) and the name and version of every provider of
//! the protocol: a new version of a provider is a new key, and one token's
//! results are never another's (a hit would tell what the other asked).

use super::{Internal, Message, Scheduler};
use crate::engine::RunId;
use crate::engine::run::Lookup;
use crate::model::{CachePolicy, TaskStatus};
use crate::resolver::substitute;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::SystemTime;

impl Scheduler {
    /// Whether task `t` waits for its cache lookup (begun now, or still
    /// running); a task whose call is not cached does not.
    pub(super) fn looking_up(&mut self, id: RunId, t: usize) -> bool {
        let Some(run) = self.runs.get_mut(&id) else { return false };
        let task = &run.workflow.tasks[t];
        if task.cache.is_none() || matches!(run.tasks[t].lookup, Lookup::Missed(_)) {
            return false;
        }
        if run.tasks[t].lookup == Lookup::Running {
            return true;
        }
        // A provider may say a method is not to be cached; params that do
        // not resolve fail when the task is launched.
        let params = substitute(&task.params, |root| run.value_of(t, root));
        let (Ok(params), true) = (params, self.registry.cacheable(&task.protocol, &task.method)) else {
            run.tasks[t].lookup = Lookup::Missed(None);
            return false;
        };
        let owner = run.owner.as_deref().unwrap_or_default();
        let key = key(owner, &task.protocol, &task.method, &params, &self.registry.versions(&task.protocol));
        run.tasks[t].lookup = Lookup::Running;
        let (results, inbox) = (self.results.clone(), self.inbox.clone());
        tokio::spawn(async move {
            let lookup = key.clone();
            let hit = tokio::task::spawn_blocking(move || results.get(&lookup)).await;
            let hit = match hit {
                Ok(Ok(hit)) => hit,
                Ok(Err(e)) => {
                    tracing::warn!("the result cache could not be read ({e}); the task runs");
                    None
                }
                Err(_) => None,
            };
            if let Some(inbox) = inbox.upgrade() {
                let _ = inbox.send(Message::Internal(Internal::CacheLooked { run: id, task: t, key, hit }));
            }
        });
        true
    }

    /// Task `t`'s lookup is done: a hit completes it, a miss sends it on.
    pub(super) fn cache_looked(&mut self, id: RunId, t: usize, key: String, hit: Option<Value>) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let (protocol, priority) = (run.workflow.tasks[t].protocol.clone(), run.workflow.tasks[t].priority);
        let state = &mut run.tasks[t];
        if state.status != TaskStatus::Queued {
            return; // cancelled meanwhile
        }
        self.stats.count_cache(&protocol, hit.is_some());
        let Some(result) = hit else {
            state.lookup = Lookup::Missed(Some(key));
            self.queue.push_front(priority, (id, t));
            return;
        };
        state.lookup = Lookup::Missed(None);
        state.attempts += 1;
        state.status = TaskStatus::Running;
        state.started_at.get_or_insert_with(SystemTime::now);
        state.started.get_or_insert_with(std::time::Instant::now);
        state.answered_from_cache(state.attempts);
        run.admitted -= 1;
        self.settle(id, t, Ok(result));
        self.admit(id);
    }

    /// Keep the result of task `t`'s call, if it is to be kept.
    pub(super) fn keep_result(&mut self, id: RunId, t: usize, result: &Value) {
        let Some(run) = self.runs.get_mut(&id) else { return };
        let Some(CachePolicy { ttl }) = run.workflow.tasks[t].cache else { return };
        let Lookup::Missed(Some(key)) = std::mem::take(&mut run.tasks[t].lookup) else { return };
        let (results, result, expires) = (self.results.clone(), result.clone(), SystemTime::now() + ttl);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = results.put(&key, &result, expires) {
                tracing::warn!("a result could not be cached: {e}");
            }
        });
    }
}

/// The cache key of a call (see the module's doc).
fn key(owner: &str, protocol: &str, method: &str, params: &Value, providers: &[String]) -> String {
    let mut hash = Sha256::new();
    for part in [owner, protocol, method] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    canonical(params, &mut hash);
    for provider in providers {
        hash.update(provider.as_bytes());
        hash.update([0]);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `value` as JSON with every object's keys in order, into `hash`.
fn canonical(value: &Value, hash: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hash.update(b"{");
            for k in keys {
                hash.update(Value::String(k.clone()).to_string().as_bytes());
                hash.update(b":");
                canonical(&map[k], hash);
                hash.update(b",");
            }
            hash.update(b"}");
        }
        Value::Array(items) => {
            hash.update(b"[");
            for item in items {
                canonical(item, hash);
                hash.update(b",");
            }
            hash.update(b"]");
        }
        scalar => hash.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_ignore_the_order_of_object_keys_and_change_with_everything_else() {
        let providers = vec!["ollama@0.1.0".to_owned()];
        let a = key("alice", "llm/v1", "chat", &json!({"model": "m", "prompt": "p"}), &providers);
        assert_eq!(a, key("alice", "llm/v1", "chat", &json!({"prompt": "p", "model": "m"}), &providers));
        assert_ne!(a, key("alice", "llm/v1", "chat", &json!({"model": "m", "prompt": "q"}), &providers));
        assert_ne!(a, key("alice", "llm/v1", "generate", &json!({"model": "m", "prompt": "p"}), &providers));
        assert_ne!(
            a,
            key("alice", "llm/v1", "chat", &json!({"model": "m", "prompt": "p"}), &["ollama@0.2.0".to_owned()])
        );
        assert_ne!(a, key("bob", "llm/v1", "chat", &json!({"model": "m", "prompt": "p"}), &providers));
        assert_eq!(a.len(), 64);
    }
}
