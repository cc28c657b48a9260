//! Which workflows a listing shows: the filters (owner, status, name,
//! submission time), the order (newest submitted first, then by id) and the
//! opaque cursor that continues a page. The stores apply a [`ListQuery`] in
//! their own way (SQL, an index scan); [`ListQuery::matches`] and
//! [`ListQuery::page`] apply it to summaries in memory, so every source
//! lists alike.
//!
//! It reads no store and no engine; it only decides.

use crate::model::WorkflowStatus;
use crate::report::{RunReport, Summary};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// Most workflows one page lists.
pub const MAX_PAGE: usize = 1000;

/// One line of a workflow listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowSummary {
    pub workflow_id: String,
    pub name: String,
    pub status: WorkflowStatus,
    /// When it was submitted (RFC 3339).
    #[serde(with = "crate::report::rfc3339_option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub submitted_at: Option<SystemTime>,
    #[serde(with = "crate::report::rfc3339_option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<SystemTime>,
    /// How long it ran; set once it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Task counts; a stored workflow that is still running may have none.
    pub summary: Option<Summary>,
    /// The token that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl WorkflowSummary {
    pub fn of(report: &RunReport) -> Self {
        let finished = report.status != WorkflowStatus::Running;
        Self {
            workflow_id: report.workflow_id.clone(),
            name: report.name.clone(),
            status: report.status,
            submitted_at: report.started_at,
            finished_at: if finished { report.finished_at } else { None },
            duration_ms: finished.then_some(report.duration_ms),
            summary: Some(report.summary.clone()),
            owner: report.owner.clone(),
        }
    }

    /// Where a page that ends with this workflow continues.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            submitted_at: self.submitted_at.map_or(0.0, crate::clock::to_secs),
            workflow_id: self.workflow_id.clone(),
        }
    }
}

/// Where a page continues: after the workflow submitted at `submitted_at`
/// (seconds since the epoch) with this id, in listing order.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub submitted_at: f64,
    pub workflow_id: String,
}

impl Cursor {
    /// The opaque text clients pass back: `SECONDS~ID`, hex-encoded so that
    /// it is one URL-safe token.
    pub fn encode(&self) -> String {
        let text = format!("{}~{}", self.submitted_at, self.workflow_id);
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(text: &str) -> Option<Self> {
        if !text.len().is_multiple_of(2) || text.len() > 2048 {
            return None;
        }
        let bytes: Option<Vec<u8>> =
            (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect();
        let text = String::from_utf8(bytes?).ok()?;
        let (seconds, id) = text.split_once('~')?;
        let submitted_at: f64 = seconds.parse().ok().filter(|s: &f64| s.is_finite())?;
        Some(Self { submitted_at, workflow_id: id.to_owned() })
    }

    /// Whether `summary` comes after this cursor in listing order.
    fn precedes(&self, summary: &WorkflowSummary) -> bool {
        let at = summary.submitted_at.map_or(0.0, crate::clock::to_secs);
        at < self.submitted_at || (at == self.submitted_at && summary.workflow_id < self.workflow_id)
    }
}

/// What a listing asks for.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this token's workflows; none for all.
    pub owner: Option<String>,
    pub status: Option<WorkflowStatus>,
    /// Only names containing this, ignoring case.
    pub name: Option<String>,
    /// Submitted at or after.
    pub since: Option<SystemTime>,
    /// Submitted before.
    pub until: Option<SystemTime>,
    /// Continue after this workflow.
    pub after: Option<Cursor>,
    /// At most this many (1 to [`MAX_PAGE`]).
    pub limit: usize,
}

impl ListQuery {
    /// Whether `summary` passes the filters and comes after the cursor.
    pub fn matches(&self, summary: &WorkflowSummary) -> bool {
        let submitted = summary.submitted_at.unwrap_or(std::time::UNIX_EPOCH);
        self.owner.as_ref().is_none_or(|o| summary.owner.as_ref() == Some(o))
            && self.status.is_none_or(|s| summary.status == s)
            && self.name.as_ref().is_none_or(|n| contains_ignoring_case(&summary.name, n))
            && self.since.is_none_or(|since| submitted >= since)
            && self.until.is_none_or(|until| submitted < until)
            && self.after.as_ref().is_none_or(|cursor| cursor.precedes(summary))
    }

    /// The page of `summaries` this query lists, in listing order.
    pub fn page(&self, summaries: impl IntoIterator<Item = WorkflowSummary>) -> Listed {
        let mut page: Vec<WorkflowSummary> = summaries.into_iter().filter(|s| self.matches(s)).collect();
        sort(&mut page);
        Listed::of(page, self.limit)
    }
}

/// A page of a listing: the matches, and where the next page starts when
/// there may be more.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    pub workflows: Vec<WorkflowSummary>,
    pub next: Option<Cursor>,
}

impl Listed {
    /// The first `limit` of `rows` (in listing order, fetched one more than
    /// asked for), continued after the last if that one more was there.
    pub fn of(mut rows: Vec<WorkflowSummary>, limit: usize) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = more.then(|| rows.last().map(WorkflowSummary::cursor)).flatten();
        Self { workflows: rows, next }
    }
}

/// Newest submitted first, then by id (descending), as every store lists.
pub fn sort(summaries: &mut [WorkflowSummary]) {
    let key = |s: &WorkflowSummary| s.submitted_at.map_or(0.0, crate::clock::to_secs);
    summaries.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| b.workflow_id.cmp(&a.workflow_id)));
}

pub fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn summary(id: &str, name: &str, at: u64, status: WorkflowStatus) -> WorkflowSummary {
        WorkflowSummary {
            workflow_id: id.into(),
            name: name.into(),
            status,
            submitted_at: Some(std::time::UNIX_EPOCH + Duration::from_secs(at)),
            finished_at: None,
            duration_ms: None,
            summary: None,
            owner: None,
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = Cursor { submitted_at: 1795678632.25, workflow_id: "wf-a~b".into() };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "zz", "abc", "7e", "4e614e7e78"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn pages_follow_the_order_and_continue_after_the_cursor() {
        use WorkflowStatus::*;
        let all = vec![
            summary("a", "Nightly report", 10, Completed),
            summary("b", "nightly sync", 30, Failed),
            summary("c", "hello", 20, Running),
            summary("d", "NIGHTLY", 30, Completed),
        ];
        let query = ListQuery { name: Some("nightLY".into()), limit: 2, ..ListQuery::default() };
        let first = query.page(all.clone()).workflows;
        assert_eq!(first.iter().map(|s| s.workflow_id.as_str()).collect::<Vec<_>>(), ["d", "b"]);
        let next = ListQuery { after: Some(first[1].cursor()), ..query.clone() };
        assert_eq!(next.page(all.clone()).workflows.iter().map(|s| s.workflow_id.as_str()).collect::<Vec<_>>(), ["a"]);
        let failed = ListQuery { status: Some(Failed), limit: 10, ..ListQuery::default() };
        assert_eq!(failed.page(all.clone()).workflows.len(), 1);
        assert!(query.page(all.clone()).next.is_some() && next.page(all.clone()).next.is_none());
        let window = ListQuery {
            since: Some(std::time::UNIX_EPOCH + Duration::from_secs(20)),
            until: Some(std::time::UNIX_EPOCH + Duration::from_secs(30)),
            limit: 10,
            ..ListQuery::default()
        };
        assert_eq!(window.page(all).workflows.iter().map(|s| s.workflow_id.as_str()).collect::<Vec<_>>(), ["c"]);
    }
}
