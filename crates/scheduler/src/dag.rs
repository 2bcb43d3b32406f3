//! The DAG rule's check: is a candidate parent the child itself or one of its descendants?
//! Offering such a peer would close a cycle in the parent graph.
//!
//! A decision asks this of several candidates for one child, so the child's descendants are
//! gathered once, walking down its recorded children. A peer that has just registered has
//! none, which makes its first decision free; walking up every candidate's ancestors, as
//! before, cost a whole walk per candidate in a dense graph. A child with more than
//! [`WALK_LIMIT`] descendants has each candidate checked by walking up its ancestors instead,
//! and that walk, past [`WALK_LIMIT`] peers, answers "descendant" (never offered).

use std::collections::HashSet;

use crate::model::Task;

/// Most peers walked in one direction before the check turns conservative.
pub const WALK_LIMIT: usize = 512;

/// The descendants of one child, for checking many candidates against.
pub struct Descendants {
    child: u32,
    /// Every descendant, or `None` when there are more than [`WALK_LIMIT`].
    below: Option<HashSet<u32>>,
}

impl Descendants {
    /// Walks down from `child` through the recorded children.
    pub fn of(task: &Task, child: u32) -> Self {
        let mut below = HashSet::new();
        let mut stack = vec![child];
        while let Some(slot) = stack.pop() {
            let Some(p) = task.peers.at(slot) else {
                continue;
            };
            for &c in &p.children {
                if c != child && below.insert(c) {
                    if below.len() > WALK_LIMIT {
                        return Self { child, below: None };
                    }
                    stack.push(c);
                }
            }
        }
        Self {
            child,
            below: Some(below),
        }
    }

    /// True when `candidate` is the child or one of its descendants.
    pub fn contains(&self, task: &Task, candidate: u32) -> bool {
        if candidate == self.child {
            return true;
        }
        match &self.below {
            Some(below) => below.contains(&candidate),
            None => reaches_upward(task, candidate, self.child),
        }
    }
}

/// True when walking parent edges up from `from` reaches `to`; past [`WALK_LIMIT`] peers,
/// answers true.
pub fn reaches_upward(task: &Task, from: u32, to: u32) -> bool {
    let mut stack = vec![from];
    let mut seen = HashSet::new();
    while let Some(slot) = stack.pop() {
        if slot == to {
            return true;
        }
        if !seen.insert(slot) {
            continue;
        }
        if seen.len() > WALK_LIMIT {
            return true;
        }
        if let Some(p) = task.peers.at(slot) {
            stack.extend(p.parents.iter().copied());
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use pollen_proto::scheduler::TaskRequest;

    use super::*;
    use crate::model::Peer;

    /// A task with `n` peers, slot i for peer "p{i}".
    fn task(n: usize) -> Task {
        let mut t = Task::new(TaskRequest::default(), Instant::now());
        for i in 0..n {
            t.add_peer(Peer::new(format!("p{i}"), format!("h{i}"), None), false);
        }
        t
    }

    #[test]
    fn a_childs_descendants_are_found_below_it_and_nothing_else() {
        let mut t = task(5);
        // 0 <- 1 <- 2, 1 <- 3 (3's parent is 1), 4 alone; 2 also names 4 as a parent.
        t.set_parents(1, vec![0]);
        t.set_parents(2, vec![1, 4]);
        t.set_parents(3, vec![1]);
        let d = Descendants::of(&t, 1);
        assert!(d.contains(&t, 1), "the child itself");
        assert!(d.contains(&t, 2) && d.contains(&t, 3));
        assert!(!d.contains(&t, 0) && !d.contains(&t, 4));
        // Each answer agrees with the walk upward.
        for c in 0..5 {
            assert_eq!(d.contains(&t, c), reaches_upward(&t, c, 1), "candidate {c}");
        }
    }

    #[test]
    fn replacing_and_removing_parents_keeps_children_the_inverse() {
        let mut t = task(4);
        t.set_parents(1, vec![0]);
        t.set_parents(2, vec![0, 1]);
        assert_eq!(t.set_parents(2, vec![3]), vec![0, 1]);
        assert_eq!(t.peers.at(0).map(|p| p.children.clone()), Some(vec![1]));
        assert!(t.peers.at(1).is_some_and(|p| p.children.is_empty()));
        assert_eq!(t.peers.at(3).map(|p| p.children.clone()), Some(vec![2]));
        // A peer removed while it has parents leaves their child lists; one removed while it
        // is a parent leaves its children's parent lists.
        t.remove_peer("p1");
        assert!(t.peers.at(0).is_some_and(|p| p.children.is_empty()));
        t.remove_peer("p3");
        assert!(t.peers.at(2).is_some_and(|p| p.parents.is_empty()));
        assert!(!Descendants::of(&t, 0).contains(&t, 2));
    }

    #[test]
    fn past_the_walk_limit_a_candidate_is_checked_upward() {
        // A chain 0 <- 1 <- ... longer than the limit: 0 has too many descendants to list.
        let n = WALK_LIMIT + 10;
        let mut t = task(n + 1);
        for i in 1..n {
            t.set_parents(i as u32, vec![i as u32 - 1]);
        }
        let d = Descendants::of(&t, 0);
        assert!(d.below.is_none());
        // Peer n has no parent: not a descendant. Peer 3 is, and near enough to be found.
        assert!(!d.contains(&t, n as u32));
        assert!(d.contains(&t, 3));
        // One too far up to walk is refused, conservatively.
        assert!(d.contains(&t, (n - 1) as u32));
    }
}
