//! A table of values named by string ids but held in a vector and addressed by slot number.
//!
//! The evaluator touches dozens of candidate peers and their hosts per decision. Looking each
//! up by its string id costs a hash of the string and a comparison with the stored key, and
//! both read memory that is cold in a large model: in the decision benchmark those two steps
//! were most of a decision's time. Peers keep their host's slot, tasks keep their peers'
//! slots in join order, and parent edges are slots too, so a decision reaches every candidate
//! and its host by indexing. The string index is only for messages arriving from daemons.
//!
//! A slot freed by [`Slots::remove`] is reused by a later insert; whoever holds slot numbers
//! must drop those of a removed value (the model removes every edge to a peer it forgets, and
//! every peer of a host it forgets).

use std::collections::HashMap;

/// Values by string id and by slot.
#[derive(Debug)]
pub struct Slots<T> {
    values: Vec<Option<T>>,
    index: HashMap<String, u32>,
    free: Vec<u32>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    /// Stores `value` under `id`, replacing any value already there (which keeps its slot).
    /// Returns the slot.
    pub fn insert(&mut self, id: &str, value: T) -> u32 {
        if let Some(&slot) = self.index.get(id) {
            self.values[slot as usize] = Some(value);
            return slot;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.values[slot as usize] = Some(value);
                slot
            }
            None => {
                self.values.push(Some(value));
                (self.values.len() - 1) as u32
            }
        };
        self.index.insert(id.to_string(), slot);
        slot
    }

    /// Removes the value under `id`, returning its slot and the value.
    pub fn remove(&mut self, id: &str) -> Option<(u32, T)> {
        let slot = self.index.remove(id)?;
        let value = self.values[slot as usize].take()?;
        self.free.push(slot);
        Some((slot, value))
    }

    /// The slot of `id`.
    pub fn slot_of(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The value under `id`.
    pub fn get(&self, id: &str) -> Option<&T> {
        self.at(self.slot_of(id)?)
    }

    /// The value under `id`, mutably.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        let slot = self.slot_of(id)?;
        self.at_mut(slot)
    }

    /// Whether `id` has a value.
    pub fn contains_key(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// The value in `slot`, if the slot is in use.
    pub fn at(&self, slot: u32) -> Option<&T> {
        self.values.get(slot as usize)?.as_ref()
    }

    /// The value in `slot`, mutably.
    pub fn at_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.values.get_mut(slot as usize)?.as_mut()
    }

    /// Every value, in slot order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.values.iter().flatten()
    }

    /// Every value, mutably, in slot order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.values.iter_mut().flatten()
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_and_reused_after_removal() {
        let mut t = Slots::default();
        let a = t.insert("a", 1);
        let b = t.insert("b", 2);
        assert_ne!(a, b);
        assert_eq!(t.insert("a", 10), a, "replacing keeps the slot");
        assert_eq!(t.get("a"), Some(&10));
        assert_eq!(t.at(b), Some(&2));
        assert_eq!(t.remove("a"), Some((a, 10)));
        assert_eq!(t.at(a), None);
        assert!(!t.contains_key("a"));
        assert_eq!(t.insert("c", 3), a, "a freed slot is reused");
        assert_eq!(t.len(), 2);
        let mut all: Vec<_> = t.values().copied().collect();
        all.sort();
        assert_eq!(all, vec![2, 3]);
        assert_eq!(t.remove("zz"), None);
        *t.get_mut("b").expect("b") += 1;
        assert_eq!(t.get("b"), Some(&3));
    }
}
