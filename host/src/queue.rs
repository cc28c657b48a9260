//! The ready queue: four priority lanes (`urgent > high > normal > low`), FIFO
//! within a lane, shared by every workflow.
//!
//! It only orders; it knows nothing of concurrency limits or providers (the
//! engine decides when to pop).

use crate::model::Priority;
use std::collections::VecDeque;

#[derive(Debug)]
pub struct PriorityQueue<T> {
    lanes: [VecDeque<T>; 4],
}

impl<T> Default for PriorityQueue<T> {
    fn default() -> Self {
        Self { lanes: Default::default() }
    }
}

impl<T> PriorityQueue<T> {
    pub fn push(&mut self, priority: Priority, item: T) {
        self.lanes[priority.rank()].push_back(item);
    }

    /// The oldest item of the most urgent non-empty lane.
    pub fn pop(&mut self) -> Option<(Priority, T)> {
        let (rank, lane) = self.lanes.iter_mut().enumerate().find(|(_, lane)| !lane.is_empty())?;
        lane.pop_front().map(|item| (Priority::ALL[rank], item))
    }

    /// Put back an item just popped, ahead of its lane.
    pub fn push_front(&mut self, priority: Priority, item: T) {
        self.lanes[priority.rank()].push_front(item);
    }

    /// Every item, most urgent lane first, oldest first within a lane.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.lanes.iter().flatten()
    }

    /// Keep only the items for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for lane in &mut self.lanes {
            lane.retain(&mut keep);
        }
    }

    /// How many items each lane holds, most urgent first.
    pub fn lane_lengths(&self) -> [usize; 4] {
        self.lanes.each_ref().map(VecDeque::len)
    }

    pub fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_priority_then_arrival() {
        let mut q = PriorityQueue::default();
        q.push(Priority::Low, "low-1");
        q.push(Priority::Normal, "normal-1");
        q.push(Priority::Urgent, "urgent-1");
        q.push(Priority::Low, "low-2");
        q.push(Priority::High, "high-1");
        q.push(Priority::Urgent, "urgent-2");
        assert_eq!(q.len(), 6);
        let listed: Vec<_> = q.iter().copied().collect();
        assert_eq!(listed, ["urgent-1", "urgent-2", "high-1", "normal-1", "low-1", "low-2"]);
        q.retain(|item| *item != "normal-1");
        q.push(Priority::Normal, "normal-1");
        let (priority, first) = q.pop().unwrap();
        assert_eq!((priority, first), (Priority::Urgent, "urgent-1"));
        q.push_front(priority, first);
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, item)| item)).collect();
        assert_eq!(order, ["urgent-1", "urgent-2", "high-1", "normal-1", "low-1", "low-2"]);
        assert!(q.is_empty());
    }
}
