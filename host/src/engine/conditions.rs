//! Where `when:` conditions are evaluated: off the scheduler's thread, in
//! turns, one owner's turn at a time per owner.
//!
//! A condition may take up to its budget (about a second of one core, see
//! `resolver::condition`), which on the scheduler's thread would hold up
//! every workflow. So ready tasks' conditions wait here, by owner, with
//! the values they read (shared, not copied); each owner with waiting
//! checks takes a turn on the blocking pool, which evaluates them in order
//! for at most [`TURN`] (or one condition, if that takes longer) and hands
//! back the verdicts and the checks it did not reach. A workflow with
//! thousands of costly conditions thus takes one thread for its owner,
//! while another owner's conditions get a turn of their own at once; and a
//! workflow with thousands of cheap ones pays one hand-over per turn, not
//! one per condition. This module holds the queues and runs a turn; the
//! scheduler decides what a verdict does.

use super::RunId;
use crate::model::{TaskError, codes};
use crate::resolver::Root;
use crate::resolver::condition::{Condition, ConditionError};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a turn goes on evaluating before it hands back the rest.
const TURN: Duration = Duration::from_millis(50);
/// Most checks one turn takes.
const MAX_TURN: usize = 4096;
/// Most parsed conditions one turn keeps for tasks that share their text.
const MAX_PARSED: usize = 64;

/// Whose checks wait together: a workflow's owner (`None`: none).
pub(super) type Owner = Option<Arc<str>>;

/// A ready task's condition with the values its references name.
pub(super) struct ConditionCheck {
    when: String,
    values: Vec<(Root, Arc<Value>)>,
}

impl ConditionCheck {
    pub fn new(when: String, values: Vec<(Root, Arc<Value>)>) -> Self {
        Self { when, values }
    }

    /// Whether the condition holds; an error fails the task.
    fn evaluate(&self, parsed: &mut HashMap<String, Result<Condition, ConditionError>>) -> Result<bool, TaskError> {
        let failed = |e: ConditionError| TaskError::new(codes::CONDITION_FAILED, format!("when: {e}"));
        if parsed.len() >= MAX_PARSED {
            parsed.clear();
        }
        if !parsed.contains_key(&self.when) {
            parsed.insert(self.when.clone(), Condition::parse(&self.when));
        }
        let condition = match parsed.get(&self.when) {
            Some(Ok(condition)) => condition,
            Some(Err(error)) => return Err(failed(error.clone())),
            None => return Err(failed(ConditionError::Evaluation("it was not parsed".into()))),
        };
        let value_of = |root: &Root| self.values.iter().find(|(bound, _)| bound == root).map(|(_, value)| &**value);
        condition.evaluate(value_of).map_err(failed)
    }
}

/// A check waiting for its owner's turn.
pub(super) struct Waiting {
    pub run: RunId,
    pub task: usize,
    pub check: ConditionCheck,
}

/// What a turn did: verdicts by (run, task), and the checks it left.
pub(super) struct Turn {
    pub verdicts: Vec<(RunId, usize, Result<bool, TaskError>)>,
    pub unchecked: Vec<Waiting>,
}

/// Evaluate `checks` in order, for at most [`TURN`]. Runs on the blocking
/// pool.
pub(super) fn take_turn(checks: Vec<Waiting>) -> Turn {
    let started = Instant::now();
    let mut parsed = HashMap::new();
    let mut checks = checks.into_iter();
    let mut verdicts = Vec::new();
    for Waiting { run, task, check } in checks.by_ref() {
        // The interpreter has panics of its own; a verdict must come back
        // all the same, or the owner's later checks would wait forever.
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check.evaluate(&mut parsed)))
            .unwrap_or_else(|_| Err(TaskError::new(codes::CONDITION_FAILED, "when: the CEL interpreter failed")));
        verdicts.push((run, task, verdict));
        if started.elapsed() > TURN {
            break;
        }
    }
    Turn { verdicts, unchecked: checks.collect() }
}

/// One owner's checks.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Whether its turn is being taken.
    busy: bool,
}

/// Checks by owner.
#[derive(Default)]
pub(super) struct Conditions {
    /// Owners with checks waiting or a turn being taken.
    owners: HashMap<Owner, Queue>,
    /// Whether an owner may be ready for a turn.
    startable: bool,
}

impl Conditions {
    /// `waiting` waits for its owner's turn.
    pub fn queue(&mut self, owner: &Owner, waiting: Waiting) {
        let queue = self.owners.entry(owner.clone()).or_default();
        queue.waiting.push_back(waiting);
        self.startable |= !queue.busy;
    }

    /// Turns to take now: each owner with checks waiting and no turn
    /// being taken, with its first checks (it is busy until
    /// [`Conditions::turn_over`]).
    pub fn turns(&mut self) -> Vec<(Owner, Vec<Waiting>)> {
        if !std::mem::take(&mut self.startable) {
            return Vec::new();
        }
        let idle = self.owners.iter_mut().filter(|(_, queue)| !queue.busy && !queue.waiting.is_empty());
        idle.map(|(owner, queue)| {
            queue.busy = true;
            let take = queue.waiting.len().min(MAX_TURN);
            (owner.clone(), queue.waiting.drain(..take).collect())
        })
        .collect()
    }

    /// `owner`'s turn is over; the checks it did not reach go first next.
    pub fn turn_over(&mut self, owner: &Owner, unchecked: Vec<Waiting>) {
        let Some(queue) = self.owners.get_mut(owner) else { return };
        queue.busy = false;
        for waiting in unchecked.into_iter().rev() {
            queue.waiting.push_front(waiting);
        }
        if queue.waiting.is_empty() {
            self.owners.remove(owner);
        } else {
            self.startable = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(task: usize, when: &str) -> Waiting {
        Waiting { run: 0, task, check: ConditionCheck::new(when.into(), Vec::new()) }
    }

    fn tasks(checks: &[Waiting]) -> Vec<usize> {
        checks.iter().map(|w| w.task).collect()
    }

    #[test]
    fn each_owner_takes_one_turn_at_a_time_and_the_rest_wait_in_order() {
        let (alice, bob) = (Some(Arc::from("alice")), Some(Arc::from("bob")));
        let mut conditions = Conditions::default();
        for task in 1..=3 {
            conditions.queue(&alice, waiting(task, "true"));
        }
        let turns = conditions.turns();
        assert_eq!(turns.len(), 1);
        assert_eq!(tasks(&turns[0].1), [1, 2, 3]);
        conditions.queue(&alice, waiting(4, "true"));
        conditions.queue(&bob, waiting(7, "true"));
        let turns = conditions.turns();
        assert_eq!(
            turns.iter().map(|(owner, checks)| (owner.clone(), tasks(checks))).collect::<Vec<_>>(),
            [(bob.clone(), vec![7])]
        );
        // Alice's turn reached task 1 only: 2 and 3 go first, then 4.
        let mut left = vec![waiting(2, "true"), waiting(3, "true")];
        conditions.turn_over(&alice, std::mem::take(&mut left));
        let turns = conditions.turns();
        assert_eq!(tasks(&turns[0].1), [2, 3, 4]);
        conditions.turn_over(&alice, Vec::new());
        conditions.turn_over(&bob, Vec::new());
        assert!(conditions.turns().is_empty() && conditions.owners.is_empty(), "nothing is held once all are checked");
    }

    #[test]
    fn a_turn_gives_each_check_its_verdict_and_a_bad_condition_fails_its_task_alone() {
        let turn = take_turn(vec![waiting(1, "1 < 2"), waiting(2, "1 +"), waiting(3, "1 < 2"), waiting(4, "'x'")]);
        let verdicts: Vec<_> =
            turn.verdicts.iter().map(|(_, t, v)| (*t, v.as_ref().map_err(|e| e.code).copied())).collect();
        assert_eq!(
            verdicts,
            [(1, Ok(true)), (2, Err(codes::CONDITION_FAILED)), (3, Ok(true)), (4, Err(codes::CONDITION_FAILED))]
        );
        assert!(turn.unchecked.is_empty());
    }
}
