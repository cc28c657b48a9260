//! Where `when:` conditions are evaluated: off the scheduler's thread, one
//! at a time per owner.
//!
//! A condition may take up to its budget (about a second of one core, see
//! `resolver::condition`), which on the scheduler's thread would hold up
//! every workflow. So a ready task's condition goes to the blocking pool
//! with the values it reads (shared, not copied), and its verdict comes
//! back as a message. Each owner has at most one evaluation in flight and
//! the rest wait in order: a workflow with thousands of costly conditions
//! takes one thread, while another owner's condition starts at once. This
//! module holds the queue; the scheduler decides what a verdict does.

use super::RunId;
use crate::model::{TaskError, codes};
use crate::resolver::Root;
use crate::resolver::condition::{Condition, ConditionError};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

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
    pub fn evaluate(&self) -> Result<bool, TaskError> {
        let failed = |e: ConditionError| TaskError::new(codes::CONDITION_FAILED, format!("when: {e}"));
        let condition = Condition::parse(&self.when).map_err(failed)?;
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

/// Checks by owner (`None`: workflows without one).
#[derive(Default)]
pub(super) struct Conditions {
    /// An owner is here while one of its checks is being evaluated, with
    /// those that wait behind it.
    owners: HashMap<Option<Arc<str>>, VecDeque<Waiting>>,
}

impl Conditions {
    /// Queue `waiting`; it comes back if its owner has none in flight, to
    /// be evaluated now.
    pub fn queue(&mut self, owner: &Option<Arc<str>>, waiting: Waiting) -> Option<Waiting> {
        match self.owners.get_mut(owner) {
            Some(queue) => {
                queue.push_back(waiting);
                None
            }
            None => {
                self.owners.insert(owner.clone(), VecDeque::new());
                Some(waiting)
            }
        }
    }

    /// `owner`'s evaluation ended: its next check, to be evaluated now.
    pub fn next(&mut self, owner: &Option<Arc<str>>) -> Option<Waiting> {
        let queue = self.owners.get_mut(owner)?;
        let next = queue.pop_front();
        if next.is_none() {
            self.owners.remove(owner);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(task: usize) -> Waiting {
        Waiting { run: 0, task, check: ConditionCheck::new("true".into(), Vec::new()) }
    }

    #[test]
    fn each_owner_has_one_check_in_flight_and_the_rest_wait_in_order() {
        let (alice, bob) = (Some(Arc::from("alice")), Some(Arc::from("bob")));
        let mut conditions = Conditions::default();
        assert_eq!(conditions.queue(&alice, waiting(1)).map(|w| w.task), Some(1));
        assert!(conditions.queue(&alice, waiting(2)).is_none());
        assert!(conditions.queue(&alice, waiting(3)).is_none());
        assert_eq!(conditions.queue(&bob, waiting(7)).map(|w| w.task), Some(7), "bob does not wait for alice");
        assert_eq!(conditions.next(&alice).map(|w| w.task), Some(2));
        assert_eq!(conditions.next(&alice).map(|w| w.task), Some(3));
        assert!(conditions.next(&alice).is_none());
        assert_eq!(conditions.queue(&alice, waiting(4)).map(|w| w.task), Some(4), "alice's turn is free again");
        assert!(conditions.next(&bob).is_none());
        assert_eq!(conditions.queue(&None, waiting(9)).map(|w| w.task), Some(9));
    }
}
