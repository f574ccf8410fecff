//! The order of a plan's steps.

use super::{Action, Step};

/// Steps with the order the foreign keys require between them.
#[derive(Default)]
pub(super) struct Dag {
    steps: Vec<Step>,
    before: Vec<Vec<usize>>,
    waits: Vec<usize>,
}

impl Dag {
    pub(super) fn add(&mut self, step: Step) -> usize {
        self.steps.push(step);
        self.before.push(Vec::new());
        self.waits.push(0);
        self.steps.len() - 1
    }

    /// `first` runs before `then`.
    pub(super) fn edge(&mut self, first: usize, then: usize) {
        self.before[first].push(then);
        self.waits[then] += 1;
    }

    /// A topological order that runs every ready deletion before any ready update (in
    /// the order they were planned): an update then only touches rows that stay, and a
    /// table's owner link deletes its rows before an actor link reaches them.
    pub(super) fn schedule(mut self) -> Vec<Step> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let rank = |s: &Step| u8::from(s.action != Action::Delete);
        let mut ready: BinaryHeap<Reverse<(u8, usize)>> = (0..self.steps.len())
            .filter(|&i| self.waits[i] == 0)
            .map(|i| Reverse((rank(&self.steps[i]), i)))
            .collect();
        let mut order = Vec::with_capacity(self.steps.len());
        while let Some(Reverse((_, i))) = ready.pop() {
            order.push(i);
            for then in std::mem::take(&mut self.before[i]) {
                self.waits[then] -= 1;
                if self.waits[then] == 0 {
                    ready.push(Reverse((rank(&self.steps[then]), then)));
                }
            }
        }
        let mut slots: Vec<Option<Step>> = self.steps.into_iter().map(Some).collect();
        order.into_iter().filter_map(|i| slots[i].take()).collect()
    }
}
