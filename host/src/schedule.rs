//! Schedules: a workflow that `gleitzeit serve` starts at the due times of
//! a cron pattern in a time zone (`schedule:` in a workflow file, or
//! `gleitzeit schedule add FILE --cron …`).
//!
//! This module owns what a schedule is and what it does at a due time: the
//! policy for due times missed while the host was down ([`Schedule::due`]),
//! the workflow a run starts ([`Schedule::run_at`]), and the ids of the
//! runs ([`run_id`]), which make a run's start idempotent: a due time is
//! claimed by claiming its run's id in the store (`Store::claim`), which
//! grants an id once, so a host that fired and crashed before it wrote
//! the due time down cannot start that run twice (nor, once several hosts
//! share a store, a second host firing the same due time). It fires nothing and stores nothing;
//! the daemon's `schedules` does, through the `store`. The due times of a
//! pattern are `cadence`'s; reading the `schedule:` block of a file is
//! `workflow::schedule`'s.

pub use crate::cadence::{Cadence, CadenceError, Spec};
use crate::model::Workflow;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::SystemTime;

/// Most schedules one host keeps.
pub const MAX_SCHEDULES: usize = 1000;
/// Largest workflow a schedule keeps (as JSON): schedules stay in memory
/// and in the store for as long as they exist, so 1,000 of them stay small.
pub const MAX_SCHEDULE_BYTES: usize = 1024 * 1024;

/// The id of the run due at `due`: `ID-KEY-YYYYMMDDTHHMMSSZ` (UTC), or
/// `ID-YYYYMMDDTHHMMSSZ` for a schedule stored before keys (`key` empty).
fn run_id(schedule_id: &str, key: &str, due: SystemTime) -> String {
    let due = DateTime::<Utc>::from(due).format("%Y%m%dT%H%M%SZ");
    if key.is_empty() { format!("{schedule_id}-{due}") } else { format!("{schedule_id}-{key}-{due}") }
}

/// A new schedule's run key: 8 random hex digits.
fn new_run_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// A schedule as the host keeps it.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub spec: Spec,
    /// The workflow it starts, without its `schedule` block; its `owner`
    /// is the token whose runs these are.
    pub workflow: Workflow,
    /// When it was added (or replaced): due times before are not its.
    pub created_at: SystemTime,
    /// The last due time it handled (started a run for, or skipped).
    pub last_due: Option<SystemTime>,
    /// The id of the last run it started.
    pub last_run: Option<String>,
    /// Made when it is added and kept: part of every run's id. Workflow
    /// ids are one namespace for all tokens, and a run's id must not be
    /// one another token can guess and take before the run starts (the
    /// host would take that workflow for the run, and start none).
    pub run_key: String,
}

/// What a schedule should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Start the run due at `due`. `missed_from` is the first due time
    /// after the last one handled, when that is earlier: the host was down
    /// (or busy) over the due times from it up to `due`, and only `due`
    /// runs.
    Now { due: SystemTime, missed_from: Option<SystemTime> },
    /// Nothing before `next`.
    Later { next: SystemTime },
    /// The pattern has no more due times.
    Never,
}

impl Schedule {
    /// A new schedule of `workflow`'s `schedule` block; none without one.
    pub fn new(mut workflow: Workflow, created_at: SystemTime) -> Option<Self> {
        let spec = *workflow.schedule.take()?;
        Some(Self { spec, workflow, created_at, last_due: None, last_run: None, run_key: new_run_key() })
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The workflow with its `schedule` block, as a file would have it.
    pub fn document(&self) -> Workflow {
        Workflow { schedule: Some(Box::new(self.spec.clone())), ..self.workflow.clone() }
    }

    /// The id of its run due at `due`: the same after a restart, so a run
    /// started and not yet written down is not started twice.
    pub fn run_id(&self, due: SystemTime) -> String {
        run_id(self.id(), &self.run_key, due)
    }

    /// The missed-run policy: of the due times since the last one handled
    /// (or since it was added), only the latest runs, once.
    pub fn due(&self, cadence: &Cadence, now: SystemTime) -> Due {
        let since = self.last_due.map_or(self.created_at, |last| last.max(self.created_at));
        let Some(next) = cadence.next_after(since) else { return Due::Never };
        if next > now {
            return Due::Later { next };
        }
        let due = cadence.latest_until(now).filter(|latest| *latest >= next).unwrap_or(next);
        Due::Now { due, missed_from: (due > next).then_some(next) }
    }

    /// The workflow to start for the due time `due`: its own id, its inputs
    /// bound to the schedule's values, its `schedule` block gone (a run is
    /// a plain workflow) and a note of where it came from in `metadata`.
    pub fn run_at(&self, cadence: &Cadence, due: SystemTime) -> Result<Workflow, crate::workflow::WorkflowError> {
        let mut run = Workflow { id: self.run_id(due), ..self.workflow.clone() };
        let values = self.spec.values_at(cadence, due);
        crate::workflow::inputs::bind(&format!("schedule {}", self.id()), &mut run, values)?;
        if let Value::Object(metadata) = &mut run.metadata {
            let origin = serde_json::json!({ "id": self.id(), "due": cadence.local_text(due) });
            metadata.insert("schedule".into(), origin);
        }
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(text: &str) -> SystemTime {
        SystemTime::from(DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc))
    }

    #[test]
    fn due_times_follow_the_zone_across_daylight_saving() {
        let berlin = Cadence::new("0 7 * * *", "Europe/Berlin").unwrap();
        // Winter: 07:00 in Berlin is 06:00 UTC; summer: 05:00 UTC.
        assert_eq!(berlin.next_after(at("2026-12-01T12:00:00Z")), Some(at("2026-12-02T06:00:00Z")));
        assert_eq!(berlin.next_after(at("2026-07-01T12:00:00Z")), Some(at("2026-07-02T05:00:00Z")));
        assert_eq!(berlin.local_text(at("2026-12-02T06:00:00Z")), "2026-12-02T07:00:00+01:00");
        // 02:30 does not exist on 2026-03-29 in Berlin: it runs at 03:00.
        let gap = Cadence::new("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(gap.next_after(at("2026-03-28T12:00:00Z")), Some(at("2026-03-29T01:00:00Z")));
        // 02:30 happens twice on 2026-10-25: it runs once.
        let repeated = Cadence::new("30 2 * * *", "Europe/Berlin").unwrap();
        let first = repeated.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, at("2026-10-25T00:30:00Z"));
        assert_eq!(repeated.next_after(first), Some(at("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn patterns_with_seconds_nicknames_and_mistakes() {
        let every_second = Cadence::new("* * * * * *", "UTC").unwrap();
        assert_eq!(every_second.next_after(at("2026-12-01T00:00:00Z")), Some(at("2026-12-01T00:00:01Z")));
        let daily = Cadence::new("@daily", "UTC").unwrap();
        assert_eq!(daily.latest_until(at("2026-12-01T10:00:00Z")), Some(at("2026-12-01T00:00:00Z")));
        assert!(matches!(Cadence::new("61 * * * *", "UTC"), Err(CadenceError::Pattern { .. })));
        assert!(matches!(Cadence::new("0 7 * *", "UTC"), Err(CadenceError::Pattern { .. })));
        assert!(matches!(Cadence::new("0 7 * * *", "Mars/Olympus"), Err(CadenceError::Zone { .. })));
        let never = Cadence::new("0 0 30 2 *", "UTC");
        assert!(matches!(never, Err(CadenceError::Never { .. }) | Err(CadenceError::Pattern { .. })), "{never:?}");
    }

    fn schedule(created: &str, last_due: Option<&str>) -> Schedule {
        let text = r#"{"name": "w", "schedule": {"cron": "0 * * * *"},
                       "tasks": [{"id": "a", "protocol": "echo/v1", "method": "echo"}]}"#;
        let workflow = crate::workflow::parse("test", text.as_bytes(), crate::workflow::Format::Json).unwrap();
        Schedule { last_due: last_due.map(at), ..Schedule::new(workflow, at(created)).unwrap() }
    }

    #[test]
    fn of_the_due_times_missed_only_the_latest_runs() {
        let hourly = Cadence::new("0 * * * *", "UTC").unwrap();
        let fresh = schedule("2026-12-01T10:30:00Z", None);
        assert_eq!(fresh.due(&hourly, at("2026-12-01T10:59:59Z")), Due::Later { next: at("2026-12-01T11:00:00Z") });
        assert_eq!(
            fresh.due(&hourly, at("2026-12-01T11:00:00Z")),
            Due::Now { due: at("2026-12-01T11:00:00Z"), missed_from: None }
        );
        // Down from 11:30 to 14:10: the 12:00 and 13:00 runs are skipped, 14:00 runs.
        let handled = schedule("2026-12-01T10:30:00Z", Some("2026-12-01T11:00:00Z"));
        assert_eq!(
            handled.due(&hourly, at("2026-12-01T14:10:00Z")),
            Due::Now { due: at("2026-12-01T14:00:00Z"), missed_from: Some(at("2026-12-01T12:00:00Z")) }
        );
        // Replaced (created again) after its last due time: nothing before that.
        let replaced = schedule("2026-12-01T14:30:00Z", Some("2026-12-01T11:00:00Z"));
        assert_eq!(replaced.due(&hourly, at("2026-12-01T14:40:00Z")), Due::Later { next: at("2026-12-01T15:00:00Z") });
    }

    #[test]
    fn run_ids_name_the_schedule_and_the_due_time_in_utc() {
        assert_eq!(run_id("digest", "", at("2026-12-02T07:00:00+01:00")), "digest-20261202T060000Z");
        assert_eq!(run_id("digest", "0a1b2c3d", at("2026-12-02T07:00:00+01:00")), "digest-0a1b2c3d-20261202T060000Z");
        let longest =
            run_id(&"x".repeat(crate::ids::MAX_SCHEDULE_ID_CHARS), &new_run_key(), at("2026-12-02T07:00:00Z"));
        assert!(crate::ids::is_id(&longest), "{longest}");
        assert_ne!(new_run_key(), new_run_key());
    }
}
