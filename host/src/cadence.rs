//! When a schedule is due: the due times of a cron pattern in a time zone
//! ([`Cadence`], on `croner` with the IANA zones of `chrono-tz`), and the
//! input values of a run due at a time ([`Spec::values_at`]). Below both
//! the workflow parser (which checks a `schedule:` block with it) and
//! `schedule` (which decides what to run): it names only the data types.

pub use crate::model::ScheduleSpec as Spec;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::str::FromStr as _;
use std::time::{Duration, SystemTime};

/// Longest cron pattern read.
pub const MAX_CRON_BYTES: usize = 256;
/// The zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

impl Spec {
    pub fn cadence(&self) -> Result<Cadence, CadenceError> {
        Cadence::new(&self.cron, &self.timezone)
    }

    /// The input values a run due at `due` starts from: the schedule's
    /// inputs, and its due time in `due_input`.
    pub fn values_at(&self, cadence: &Cadence, due: SystemTime) -> Map<String, Value> {
        let mut values = self.inputs.clone();
        if let Some(name) = &self.due_input {
            values.insert(name.clone(), Value::String(cadence.local_text(due)));
        }
        values
    }
}

/// Why a pattern or zone cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CadenceError {
    #[error("'{pattern}' is not a cron pattern: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("'{pattern}' is never due (no date matches it)")]
    Never { pattern: String },
    #[error("unknown time zone '{name}'; use an IANA name such as Europe/Berlin, America/New_York or UTC")]
    Zone { name: String },
}

/// When a schedule is due: a cron pattern read in a time zone. Wall-clock
/// times that a daylight-saving change skips run at the first instant after
/// the gap; times it repeats run once (croner's rules, the Open Cron
/// Pattern Specification's).
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
}

impl Cadence {
    pub fn new(pattern: &str, timezone: &str) -> Result<Self, CadenceError> {
        let zone = chrono_tz::Tz::from_str(timezone)
            .map_err(|_| CadenceError::Zone { name: crate::text::excerpt(timezone) })?;
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(pattern)
            .map_err(|e| CadenceError::Pattern { pattern: pattern.to_owned(), reason: e.to_string() })?;
        let cadence = Self { cron, zone };
        if cadence.next_after(SystemTime::now()).is_none() {
            return Err(CadenceError::Never { pattern: pattern.to_owned() });
        }
        Ok(cadence)
    }

    fn zoned(&self, time: SystemTime) -> DateTime<chrono_tz::Tz> {
        DateTime::<Utc>::from(time).with_timezone(&self.zone)
    }

    /// The first due time after `time`; none if the pattern has no more.
    pub fn next_after(&self, time: SystemTime) -> Option<SystemTime> {
        self.cron.find_next_occurrence(&self.zoned(time), false).ok().map(SystemTime::from)
    }

    /// The last due time at or before `time`.
    pub fn latest_until(&self, time: SystemTime) -> Option<SystemTime> {
        self.cron.find_previous_occurrence(&self.zoned(time), true).ok().map(SystemTime::from)
    }

    /// The shortest time between two of the next `count` due times after
    /// `time` (none if fewer come).
    pub fn shortest_gap(&self, time: SystemTime, count: usize) -> Option<Duration> {
        let mut dues = Vec::with_capacity(count);
        let mut after = time;
        while dues.len() < count {
            let Some(due) = self.next_after(after) else { break };
            dues.push(due);
            after = due;
        }
        dues.windows(2).filter_map(|pair| pair[1].duration_since(pair[0]).ok()).min()
    }

    /// `time` as RFC 3339 in the schedule's zone (`2026-12-03T07:00:00+01:00`).
    pub fn local_text(&self, time: SystemTime) -> String {
        self.zoned(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    }

    /// The next `count` due times after `time`, as [`Self::local_text`].
    pub fn upcoming(&self, time: SystemTime, count: usize) -> Vec<String> {
        let mut next = Vec::with_capacity(count);
        let mut after = time;
        while next.len() < count {
            let Some(due) = self.next_after(after) else { break };
            next.push(self.local_text(due));
            after = due;
        }
        next
    }
}
