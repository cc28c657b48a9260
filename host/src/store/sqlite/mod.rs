//! The default store: one SQLite file (WAL), no server to run.
//!
//! Tables: `workflows` (the document as accepted, status, times, the final
//! report), `tasks` (each task's last state) and `task_events` (every state
//! change, in order), `schedules` (each schedule, as JSON) and `claims`
//! (workflow ids claimed and not yet accepted), and `results` (cached
//! results, [`results`]). A batch of records is one transaction, so a crash
//! leaves either all of it or none. `synchronous = FULL`: a commit that
//! returned is on disk, which is what lets the engine report it. The file is
//! locked for as long as the host runs: one host per store.

mod results;

pub use results::SqliteCache;

use super::{Claim, Record, SavedSchedules, Store, StoreError, Unfinished, Unreadable, corrupt};
use crate::clock::{from_secs, to_secs};
use crate::listing::{ListQuery, Listed, WorkflowSummary};
use crate::model::Workflow;
use crate::report::RunReport;
use crate::schedule::Schedule;
use results::Results;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The layout this version writes; older ones are brought up to it
/// ([`MIGRATIONS`]), newer files are refused.
const SCHEMA_VERSION: i64 = 4;

/// What takes a file from version N to N + 1, by N.
const MIGRATIONS: &[(i64, &str)] = &[
    // Workflows gained their owner (the token that submitted them).
    (1, "ALTER TABLE workflows ADD COLUMN owner TEXT;"),
    // Schedules: their table is in SCHEMA (created if missing on every open).
    (2, ""),
    // Reports are stored without their tasks' results, params and calls,
    // which the tasks' rows have; reports stored whole are read as they are.
    (3, ""),
];

/// Indexes over columns later versions added (run after the migrations).
const INDEXES: &str = "
DROP INDEX IF EXISTS workflows_owner_finished;
CREATE INDEX IF NOT EXISTS workflows_submitted ON workflows (submitted_at, id);
CREATE INDEX IF NOT EXISTS workflows_owner_submitted ON workflows (owner, submitted_at, id);
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    document TEXT NOT NULL,
    status TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    finished_at REAL,
    report TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS workflows_finished ON workflows (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS tasks (
    workflow_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (workflow_id, task_id)
);
CREATE TABLE IF NOT EXISTS task_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS task_events_workflow ON task_events (workflow_id);
CREATE TABLE IF NOT EXISTS schedules (id TEXT PRIMARY KEY, definition TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (id TEXT PRIMARY KEY, at REAL NOT NULL);
";

pub struct SqliteStore {
    path: PathBuf,
    /// One connection: the journal writes, readers wait their turn (reads
    /// are rare and short next to the writes). Fair: the journal, which
    /// writes batch after batch while a workflow has much to write, hands
    /// the connection to a waiting reader between two batches instead of
    /// taking it back at once (an unfair lock let it starve every status
    /// call and submission for as long as it wrote).
    connection: parking_lot::FairMutex<Connection>,
    /// Its `results` table.
    results: Results,
}

impl SqliteStore {
    /// Open (or create) the file at `path`; refuse one that is not ours.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let target = format!("sqlite:{}", path.display());
        let open = |reason: String| StoreError::Open { target: target.clone(), reason };
        create_private(path).map_err(open)?;
        let connection = Connection::open(path).map_err(|e| open(e.to_string()))?;
        // One host per store: the first write takes a lock this process keeps
        // until it exits (the OS drops it if the process dies), so a second
        // host on the same file fails here instead of resuming the same work.
        connection
            .busy_timeout(Duration::from_millis(500))
            .and_then(|()| connection.execute_batch("PRAGMA locking_mode = EXCLUSIVE"))
            .map_err(|e| open(opening_error(&e)))?;
        // journal_mode answers with a row, so it is a query, not a pragma_update.
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| open(opening_error(&e)))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open(format!("cannot switch to WAL (journal mode {mode})")));
        }
        connection
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .and_then(|()| connection.execute_batch(SCHEMA))
            .and_then(|()| connection.execute_batch(results::SCHEMA))
            .map_err(|e| open(opening_error(&e)))?;
        let version: Option<String> = connection
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0))
            .optional()
            .map_err(|e| open(e.to_string()))?;
        match version.map(|v| v.parse::<i64>()) {
            None => {
                connection
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                        [SCHEMA_VERSION.to_string()],
                    )
                    .map_err(|e| open(e.to_string()))?;
            }
            Some(Ok(SCHEMA_VERSION)) => {}
            Some(Ok(older)) if (1..SCHEMA_VERSION).contains(&older) => migrate(&connection, older).map_err(open)?,
            Some(other) => {
                return Err(open(format!(
                    "schema version {other:?} is not {SCHEMA_VERSION}; this file is from a newer version"
                )));
            }
        }
        connection.execute_batch(INDEXES).map_err(|e| open(opening_error(&e)))?;
        // Claims left by a host that stopped between claiming and accepting:
        // the file is this host's alone, and their submitters got no answer.
        connection.execute_batch("DELETE FROM claims").map_err(|e| open(opening_error(&e)))?;
        Ok(Self {
            path: path.to_owned(),
            connection: parking_lot::FairMutex::new(connection),
            results: Results::default(),
        })
    }

    fn io(&self, action: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io { target: self.target(), action, reason: e.to_string() }
    }

    /// A failed write: refused for good if SQLite can never take the row
    /// (a value past its length limit), else worth trying again.
    fn write_failed(&self, action: &'static str, e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::TooBig) => {
                StoreError::Refused { target: self.target(), action, reason: e.to_string() }
            }
            _ => self.io(action, e),
        }
    }

    fn connection(&self) -> parking_lot::FairMutexGuard<'_, Connection> {
        self.connection.lock()
    }
}

/// Create `path` and its directory if missing, private to their owner.
fn create_private(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut private = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(private.recursive(true), 0o700);
        private.create(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    make_private(path).map_err(|e| format!("cannot make it private: {e}"))
}

/// The store holds every user's params and results: only its owner may
/// read it. Creates the file if missing (SQLite gives its `-wal` and `-shm`
/// files the database's mode), and takes what others may do away from one
/// that exists, with its `-wal` and `-shm`.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Bring a file of version `from` up to [`SCHEMA_VERSION`], in one
/// transaction.
fn migrate(connection: &Connection, from: i64) -> Result<(), String> {
    let steps: String = MIGRATIONS.iter().filter(|(version, _)| *version >= from).map(|(_, sql)| *sql).collect();
    let sql =
        format!("BEGIN; {steps} UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'; COMMIT;");
    connection.execute_batch(&sql).map_err(|e| format!("cannot upgrade schema version {from} to {SCHEMA_VERSION}: {e}"))
}

/// Why opening failed, in the user's terms.
fn opening_error(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            "another process (another gleitzeit host?) is using it".into()
        }
        Some(rusqlite::ErrorCode::NotADatabase) => format!("not a readable SQLite database ({e})"),
        _ => e.to_string(),
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("\"unencodable: {e}\""))
}

impl Store for SqliteStore {
    fn target(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn write(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let tx = connection.transaction().map_err(|e| self.io("begin a transaction", e))?;
        {
            let mut accept = tx
                .prepare_cached("INSERT OR REPLACE INTO workflows (id, name, document, status, submitted_at, owner) VALUES (?1, ?2, ?3, 'running', ?4, ?5)")
                .map_err(|e| self.io("prepare", e))?;
            // A workflow id used again starts from nothing: the states of an
            // earlier run under that id must not be resumed as this one's.
            let mut forget_tasks =
                tx.prepare_cached("DELETE FROM tasks WHERE workflow_id = ?1").map_err(|e| self.io("prepare", e))?;
            let mut forget_events = tx
                .prepare_cached("DELETE FROM task_events WHERE workflow_id = ?1")
                .map_err(|e| self.io("prepare", e))?;
            let mut end_claim =
                tx.prepare_cached("DELETE FROM claims WHERE id = ?1").map_err(|e| self.io("prepare", e))?;
            let mut task = tx
                .prepare_cached("INSERT OR REPLACE INTO tasks (workflow_id, task_id, state) VALUES (?1, ?2, ?3)")
                .map_err(|e| self.io("prepare", e))?;
            let mut event = tx
                .prepare_cached(
                    "INSERT INTO task_events (workflow_id, task_id, status, attempt, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| self.io("prepare", e))?;
            let mut finish = tx
                .prepare_cached("UPDATE workflows SET status = ?2, finished_at = ?3, report = ?4 WHERE id = ?1")
                .map_err(|e| self.io("prepare", e))?;
            let now = to_secs(SystemTime::now());
            for record in records {
                match record {
                    Record::Accepted { workflow, submitted_at } => {
                        let document = super::workflow_json(&self.target(), workflow)?;
                        forget_tasks.execute([&workflow.id]).map_err(|e| self.write_failed("store a workflow", e))?;
                        forget_events.execute([&workflow.id]).map_err(|e| self.write_failed("store a workflow", e))?;
                        end_claim.execute([&workflow.id]).map_err(|e| self.write_failed("store a workflow", e))?;
                        accept
                            .execute(params![
                                workflow.id,
                                workflow.name,
                                document,
                                to_secs(*submitted_at),
                                workflow.owner
                            ])
                            .map_err(|e| self.write_failed("store a workflow", e))?;
                    }
                    Record::Task(t) => {
                        task.execute(params![t.workflow_id, t.task_id, json(t)])
                            .map_err(|e| self.write_failed("store a task", e))?;
                        event
                            .execute(params![t.workflow_id, t.task_id, json(&t.status), t.attempts, now])
                            .map_err(|e| self.write_failed("store a task event", e))?;
                    }
                    Record::Finished(report) => {
                        let finished = report.finished_at.map_or(now, to_secs);
                        finish
                            .execute(params![
                                report.workflow_id,
                                json(&report.status),
                                finished,
                                super::report_json(&self.target(), report)?
                            ])
                            .map_err(|e| self.write_failed("store a report", e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.io("commit", e))
    }

    fn unfinished(&self) -> Result<Unfinished, StoreError> {
        let target = self.target();
        let connection = self.connection();
        let mut workflows = connection
            .prepare("SELECT id, name, document, submitted_at, owner FROM workflows WHERE finished_at IS NULL ORDER BY submitted_at")
            .map_err(|e| self.io("read workflows", e))?;
        let rows = workflows
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, f64>(3)?,
                    row.get(4)?,
                ))
            })
            .map_err(|e| self.io("read workflows", e))?;
        let mut tasks = connection
            .prepare("SELECT state FROM tasks WHERE workflow_id = ?1")
            .map_err(|e| self.io("read tasks", e))?;
        let mut unfinished = Unfinished::default();
        for row in rows {
            let (id, name, document, submitted_at, owner) = row.map_err(|e| self.io("read workflows", e))?;
            let states: Vec<String> = tasks
                .query_map([&id], |row| row.get::<_, String>(0))
                .map_err(|e| self.io("read tasks", e))?
                .collect::<Result<_, _>>()
                .map_err(|e| self.io("read tasks", e))?;
            match super::saved(&target, &id, &document, owner, from_secs(submitted_at), &states) {
                Ok(saved) => unfinished.saved.push(saved),
                Err(error) => unfinished.unreadable.push(Unreadable { workflow_id: id, name, error }),
            }
        }
        Ok(unfinished)
    }

    fn report(&self, workflow_id: &str) -> Result<Option<RunReport>, StoreError> {
        let connection = self.connection();
        let text: Option<Option<String>> = connection
            .query_row("SELECT report FROM workflows WHERE id = ?1", [workflow_id], |row| row.get(0))
            .optional()
            .map_err(|e| self.io("read a report", e))?;
        let Some(text) = text.flatten() else { return Ok(None) };
        let records = || {
            let document = connection
                .query_row("SELECT document FROM workflows WHERE id = ?1", [workflow_id], |row| row.get(0))
                .optional()
                .map_err(|e| self.io("read a report", e))?;
            let mut tasks = connection
                .prepare_cached("SELECT state FROM tasks WHERE workflow_id = ?1")
                .map_err(|e| self.io("read a report", e))?;
            let states = tasks
                .query_map([workflow_id], |row| row.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| self.io("read a report", e))?;
            Ok((document, states))
        };
        super::read_report(&self.target(), workflow_id, &text, records).map(Some)
    }

    fn document(&self, workflow_id: &str) -> Result<Option<Workflow>, StoreError> {
        let row: Option<(String, Option<String>)> = self
            .connection()
            .query_row("SELECT document, owner FROM workflows WHERE id = ?1", [workflow_id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(|e| self.io("read a workflow", e))?;
        let Some((document, owner)) = row else { return Ok(None) };
        let workflow = super::workflow_from_json(&self.target(), workflow_id, &document)?;
        Ok(Some(Workflow { owner, ..workflow }))
    }

    fn claim(&self, workflow_id: &str) -> Result<Claim, StoreError> {
        let mut connection = self.connection();
        let tx = connection.transaction().map_err(|e| self.io("begin a transaction", e))?;
        let stored: Option<bool> = tx
            .query_row("SELECT finished_at IS NOT NULL FROM workflows WHERE id = ?1", [workflow_id], |row| row.get(0))
            .optional()
            .map_err(|e| self.io("claim a workflow id", e))?;
        let claim = match stored {
            Some(true) => Claim::Finished,
            Some(false) => Claim::Running,
            None => {
                let inserted = tx
                    .execute(
                        "INSERT INTO claims (id, at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        params![workflow_id, to_secs(SystemTime::now())],
                    )
                    .map_err(|e| self.io("claim a workflow id", e))?;
                if inserted == 1 { Claim::Granted } else { Claim::Running }
            }
        };
        tx.commit().map_err(|e| self.io("claim a workflow id", e))?;
        Ok(claim)
    }

    fn release(&self, workflow_id: &str) -> Result<(), StoreError> {
        self.connection()
            .execute("DELETE FROM claims WHERE id = ?1", [workflow_id])
            .map(drop)
            .map_err(|e| self.io("give back a claim", e))
    }

    fn has(&self, workflow_id: &str) -> Result<bool, StoreError> {
        self.connection()
            .query_row("SELECT 1 FROM workflows WHERE id = ?1", [workflow_id], |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
            .map_err(|e| self.io("look up a workflow", e))
    }

    fn list(&self, query: &ListQuery) -> Result<Listed, StoreError> {
        let connection = self.connection();
        // Statuses are stored bare ('running') at acceptance and as JSON
        // ('"completed"') once finished: compare without the quotes.
        let mut statement = connection
            .prepare_cached(
                "SELECT id, name, trim(status, '\"'), submitted_at, finished_at, owner,
                        json_extract(report, '$.summary'), json_extract(report, '$.duration_ms')
                 FROM workflows
                 WHERE (?1 IS NULL OR owner = ?1)
                   AND (?2 IS NULL OR trim(status, '\"') = ?2)
                   AND (?3 IS NULL OR instr(lower(name), lower(?3)) > 0)
                   AND (?4 IS NULL OR submitted_at >= ?4)
                   AND (?5 IS NULL OR submitted_at < ?5)
                   AND (?6 IS NULL OR submitted_at < ?6 OR (submitted_at = ?6 AND id < ?7))
                 ORDER BY submitted_at DESC, id DESC LIMIT ?8",
            )
            .map_err(|e| self.io("list workflows", e))?;
        let cursor = query.after.as_ref();
        let rows = statement
            .query_map(
                params![
                    query.owner,
                    query.status.map(|s| s.name()),
                    query.name,
                    query.since.map(to_secs),
                    query.until.map(to_secs),
                    cursor.map(|c| c.submitted_at),
                    cursor.map(|c| c.workflow_id.as_str()),
                    query.limit as i64 + 1,
                ],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, f64>(3)?,
                        row.get::<_, Option<f64>>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get::<_, Option<String>>(6)?,
                        row.get::<_, Option<f64>>(7)?,
                    ))
                },
            )
            .map_err(|e| self.io("list workflows", e))?;
        let mut workflows = Vec::new();
        for row in rows {
            let (workflow_id, name, status, submitted, finished, owner, summary, duration_ms) =
                row.map_err(|e| self.io("list workflows", e))?;
            let corrupt_row =
                |what: &str, e: serde_json::Error| corrupt(&self.target(), format!("{what} of '{workflow_id}'"), e);
            let status =
                serde_json::from_value(serde_json::Value::String(status)).map_err(|e| corrupt_row("the status", e))?;
            let summary =
                summary.map(|s| serde_json::from_str(&s)).transpose().map_err(|e| corrupt_row("the summary", e))?;
            workflows.push(WorkflowSummary {
                workflow_id,
                name,
                status,
                submitted_at: Some(from_secs(submitted)),
                finished_at: finished.map(from_secs),
                duration_ms,
                summary,
                owner,
            });
        }
        Ok(Listed::of(workflows, query.limit))
    }

    fn prune(&self, before: SystemTime) -> Result<usize, StoreError> {
        let mut connection = self.connection();
        let tx = connection.transaction().map_err(|e| self.io("begin a transaction", e))?;
        let cutoff = to_secs(before);
        let old = "SELECT id FROM workflows WHERE finished_at IS NOT NULL AND finished_at < ?1";
        tx.execute(&format!("DELETE FROM tasks WHERE workflow_id IN ({old})"), [cutoff])
            .map_err(|e| self.io("prune", e))?;
        tx.execute(&format!("DELETE FROM task_events WHERE workflow_id IN ({old})"), [cutoff])
            .map_err(|e| self.io("prune", e))?;
        let pruned = tx
            .execute("DELETE FROM workflows WHERE finished_at IS NOT NULL AND finished_at < ?1", [cutoff])
            .map_err(|e| self.io("prune", e))?;
        tx.commit().map_err(|e| self.io("commit", e))?;
        Ok(pruned)
    }

    fn schedules(&self) -> Result<SavedSchedules, StoreError> {
        let connection = self.connection();
        let mut statement =
            connection.prepare("SELECT id, definition FROM schedules").map_err(|e| self.io("read schedules", e))?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
            .map_err(|e| self.io("read schedules", e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.io("read schedules", e))?;
        Ok(SavedSchedules::of(&self.target(), rows))
    }

    fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        let definition = super::schedule_json(&self.target(), schedule)?;
        self.connection()
            .execute(
                "INSERT OR REPLACE INTO schedules (id, definition) VALUES (?1, ?2)",
                params![schedule.id(), definition],
            )
            .map(|_| ())
            .map_err(|e| self.io("store a schedule", e))
    }

    fn update_schedule(&self, schedule: &Schedule) -> Result<bool, StoreError> {
        let definition = super::schedule_json(&self.target(), schedule)?;
        self.connection()
            .execute("UPDATE schedules SET definition = ?2 WHERE id = ?1", params![schedule.id(), definition])
            .map(|updated| updated > 0)
            .map_err(|e| self.io("store a schedule", e))
    }

    fn remove_schedule(&self, id: &str) -> Result<bool, StoreError> {
        self.connection()
            .execute("DELETE FROM schedules WHERE id = ?1", [id])
            .map(|removed| removed > 0)
            .map_err(|e| self.io("remove a schedule", e))
    }

    fn cached(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.results.get(&self.connection(), key).map_err(|(action, e)| self.io(action, e))
    }

    fn cache(&self, key: &str, result: &str, expires: SystemTime) -> Result<(), StoreError> {
        self.results.put(&self.connection(), key, result, expires).map_err(|(action, e)| self.io(action, e))
    }
}
