//! The `results` table: the results of `cache: {ttl}` calls, by key, each
//! until it expires, at most [`MAX_CACHED_RESULTS`]. The store's file has
//! one; `gleitzeit run` without a store keeps one in a file of its own
//! ([`SqliteCache`]), which several runs may use at once (the store's file
//! is one host's alone).

use super::{create_private, opening_error};
use crate::clock::to_secs;
use crate::store::{MAX_CACHED_RESULTS, ResultCache, StoreError, decode_cached, encode_cached};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, result TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS results_expiring ON results (expires_at);
";

/// How many results are kept between two checks of the table's bound.
const PRUNE_EVERY: usize = 1000;

/// Reads and writes of the table on a connection its owner holds.
#[derive(Default)]
pub(super) struct Results {
    /// Results kept since it opened (see [`PRUNE_EVERY`]).
    kept: AtomicUsize,
}

/// A failed statement: what it was for, and why.
pub(super) type Failed = (&'static str, rusqlite::Error);

impl Results {
    pub(super) fn get(&self, connection: &Connection, key: &str) -> Result<Option<String>, Failed> {
        let now = to_secs(SystemTime::now());
        let read = "SELECT result FROM results WHERE key = ?1 AND expires_at > ?2";
        (connection.query_row(read, params![key, now], |row| row.get(0)).optional())
            .map_err(|e| ("read a cached result", e))
    }

    pub(super) fn put(
        &self,
        connection: &Connection,
        key: &str,
        result: &str,
        expires: SystemTime,
    ) -> Result<(), Failed> {
        let keep = "INSERT OR REPLACE INTO results (key, result, expires_at) VALUES (?1, ?2, ?3)";
        connection.execute(keep, params![key, result, to_secs(expires)]).map_err(|e| ("cache a result", e))?;
        // Counting the table scans it: the bound is checked once every
        // PRUNE_EVERY results kept, not at each.
        if !self.kept.fetch_add(1, Ordering::Relaxed).is_multiple_of(PRUNE_EVERY) {
            return Ok(());
        }
        let prune = |e| ("prune cached results", e);
        connection
            .execute("DELETE FROM results WHERE expires_at <= ?1", [to_secs(SystemTime::now())])
            .map_err(prune)?;
        let count: i64 = connection.query_row("SELECT COUNT(*) FROM results", [], |row| row.get(0)).map_err(prune)?;
        let excess = count - MAX_CACHED_RESULTS as i64;
        // Past the bound, those that expire first go. (Only a positive
        // LIMIT is given: a negative one is no limit in SQLite.)
        if excess > 0 {
            let first = "DELETE FROM results WHERE key IN (SELECT key FROM results ORDER BY expires_at LIMIT ?1)";
            connection.execute(first, [excess]).map_err(prune)?;
        }
        Ok(())
    }
}

/// How long a run waits for another run writing the same cache file.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// A file that holds only cached results, shared by the runs that use it.
pub struct SqliteCache {
    path: PathBuf,
    connection: std::sync::Mutex<Connection>,
    results: Results,
}

impl SqliteCache {
    /// Open (or create, private to its owner) the cache file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open = |reason: String| StoreError::Open { target: format!("sqlite:{}", path.display()), reason };
        create_private(path).map_err(open)?;
        let connection = Connection::open(path).map_err(|e| open(e.to_string()))?;
        connection.busy_timeout(BUSY_WAIT).map_err(|e| open(opening_error(&e)))?;
        let _: String = (connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)))
            .map_err(|e| open(opening_error(&e)))?;
        connection.execute_batch(SCHEMA).map_err(|e| open(opening_error(&e)))?;
        Ok(Self { path: path.to_owned(), connection: connection.into(), results: Results::default() })
    }

    fn failed(&self, (action, e): Failed) -> StoreError {
        StoreError::Io { target: format!("sqlite:{}", self.path.display()), action, reason: e.to_string() }
    }
}

impl ResultCache for SqliteCache {
    fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let connection = crate::locks::lock(&self.connection);
        let text = self.results.get(&connection, key).map_err(|e| self.failed(e))?;
        Ok(decode_cached(text))
    }

    fn put(&self, key: &str, result: &Value, expires: SystemTime) -> Result<(), StoreError> {
        let Some(text) = encode_cached(result) else { return Ok(()) };
        let connection = crate::locks::lock(&self.connection);
        self.results.put(&connection, key, &text, expires).map_err(|e| self.failed(e))
    }
}
