//! A min-priority queue for items that come mostly in order: events wait in it until their
//! interval closes, and most of them arrive in event-time order.
//!
//! Items not smaller than the last one in order are appended to a sorted run (taken from its front
//! in constant time); the others go to a binary min-heap. The smallest item is the smaller of the
//! run's front and the heap's top, so the order is exactly that of one heap, while an in-order item
//! costs no comparison beyond the one with the run's back (a heap compares on every level when it
//! pops). Out-of-order items cost what they cost in a heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

#[derive(Debug)]
pub struct PendingQueue<T: Ord> {
    /// Sorted ascending.
    run: VecDeque<T>,
    late: BinaryHeap<Reverse<T>>,
}

impl<T: Ord> Default for PendingQueue<T> {
    fn default() -> Self {
        PendingQueue {
            run: VecDeque::new(),
            late: BinaryHeap::new(),
        }
    }
}

impl<T: Ord> PendingQueue<T> {
    pub fn push(&mut self, item: T) {
        if self.run.back().is_none_or(|last| *last <= item) {
            self.run.push_back(item);
        } else {
            self.late.push(Reverse(item));
        }
    }

    /// The smallest item.
    pub fn peek(&self) -> Option<&T> {
        match (self.run.front(), self.late.peek()) {
            (Some(r), Some(Reverse(l))) => Some(if l < r { l } else { r }),
            (r, l) => r.or(l.map(|Reverse(l)| l)),
        }
    }

    /// Takes the smallest item.
    pub fn pop(&mut self) -> Option<T> {
        let from_late = match (self.run.front(), self.late.peek()) {
            (Some(r), Some(Reverse(l))) => l < r,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if from_late {
            self.late.pop().map(|Reverse(l)| l)
        } else {
            self.run.pop_front()
        }
    }

    pub fn len(&self) -> usize {
        self.run.len() + self.late.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_items_stay_in_the_run_and_late_ones_come_out_first() {
        let mut q = PendingQueue::default();
        for x in [1, 3, 5, 2, 6, 4, 0] {
            q.push(x);
        }
        assert_eq!((q.run.len(), q.late.len()), (4, 3));
        assert_eq!(q.peek(), Some(&0));
        let out: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(out, [0, 1, 2, 3, 4, 5, 6]);
        assert!(q.is_empty());
        assert_eq!(q.peek(), None);
    }

    proptest! {
        /// Any mix of pushes and pops gives the items in the order of a binary heap, whether they
        /// come in random order (`drift` 0) or mostly in order (values drifting up by `drift` per
        /// push, give or take 40).
        #[test]
        fn same_order_as_a_heap(ops in prop::collection::vec(prop::option::weighted(0.7, 0u32..40), 0..600), drift in 0u32..30) {
            let mut q = PendingQueue::default();
            let mut heap = BinaryHeap::new();
            for (i, op) in ops.into_iter().enumerate() {
                match op.map(|x| i as u32 * drift + x) {
                    Some(x) => {
                        q.push(x);
                        heap.push(Reverse(x));
                    }
                    None => prop_assert_eq!(q.pop(), heap.pop().map(|Reverse(x)| x)),
                }
                prop_assert_eq!(q.peek(), heap.peek().map(|Reverse(x)| x));
                prop_assert_eq!(q.len(), heap.len());
            }
        }
    }
}
