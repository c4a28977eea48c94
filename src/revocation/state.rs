//! The list as held in memory, and what it weighs.

use crate::userdata::table_bytes;
use std::collections::HashMap;
use std::mem::size_of;
use std::time::SystemTime;

/// One listing document.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Listed {
    pub jti: Box<str>,
    pub expires: Option<SystemTime>,
}

/// `revocation.max_bytes` and `max_entries` (`usize::MAX` when unset).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub max_bytes: usize,
    pub max_entries: usize,
}

#[derive(Default)]
pub(super) struct State {
    /// Listing document `_id` (canonical text) → what it lists: a delete event carries only the
    /// `_id`, and two documents may list the same `jti`.
    pub by_doc: HashMap<Box<str>, Listed>,
    /// `jti` → how many documents list it.
    pub by_jti: HashMap<Box<str>, u32>,
    /// Heap bytes of the strings the two maps hold (their tables are weighed from capacity).
    pub strings: usize,
    pub loaded: bool,
    /// A document was left out for a bound: the list is incomplete until a reload fits.
    pub overflow: bool,
    /// Since when the change stream has been down (`None`: open, or not opened yet).
    pub down_since: Option<std::time::Instant>,
}

const DOC_SLOT: usize = size_of::<(Box<str>, Listed)>();
const JTI_SLOT: usize = size_of::<(Box<str>, u32)>();

impl State {
    /// Heap bytes of the list: both hash tables at their current capacity and every string.
    pub(super) fn bytes(&self) -> usize {
        self.strings
            + table_bytes(self.by_doc.capacity(), DOC_SLOT)
            + table_bytes(self.by_jti.capacity(), JTI_SLOT)
    }

    pub(super) fn put(&mut self, doc_id: Box<str>, listed: Listed, bounds: Bounds) {
        let replaces = self.by_doc.get(&doc_id).map(|old| old.jti.len());
        if replaces.is_none() && self.by_doc.len() >= bounds.max_entries {
            self.overflow = true;
            return;
        }
        if self.bytes_after(&doc_id, &listed, replaces) > bounds.max_bytes {
            self.overflow = true;
            return;
        }
        if let Some(count) = self.by_jti.get_mut(&listed.jti) {
            *count += 1;
        } else {
            self.strings += listed.jti.len();
            self.by_jti.insert(listed.jti.clone(), 1);
        }
        self.strings += listed.jti.len();
        if replaces.is_none() {
            self.strings += doc_id.len();
        }
        if let Some(old) = self.by_doc.insert(doc_id, listed) {
            self.strings -= old.jti.len();
            self.forget(&old.jti);
        }
    }

    /// What `bytes` would be after the put, counting a table's growth before it happens. Errs on
    /// the high side (a replaced `jti` is not credited), which only fails closed sooner.
    fn bytes_after(&self, doc_id: &str, listed: &Listed, replaces: Option<usize>) -> usize {
        let grown = |len: usize, capacity: usize| {
            if len == capacity {
                capacity + 1
            } else {
                capacity
            }
        };
        let new_jti = !self.by_jti.contains_key(&listed.jti);
        let mut strings = self.strings + listed.jti.len();
        let mut jti_capacity = self.by_jti.capacity();
        if new_jti {
            strings += listed.jti.len();
            jti_capacity = grown(self.by_jti.len(), jti_capacity);
        }
        let mut doc_capacity = self.by_doc.capacity();
        if replaces.is_none() {
            strings += doc_id.len();
            doc_capacity = grown(self.by_doc.len(), doc_capacity);
        }
        strings + table_bytes(doc_capacity, DOC_SLOT) + table_bytes(jti_capacity, JTI_SLOT)
    }

    pub(super) fn remove(&mut self, doc_id: &str) {
        if let Some(old) = self.by_doc.remove(doc_id) {
            self.strings -= doc_id.len() + old.jti.len();
            self.forget(&old.jti);
        }
    }

    fn forget(&mut self, jti: &str) {
        if let Some(count) = self.by_jti.get_mut(jti) {
            *count -= 1;
            if *count == 0 {
                self.by_jti.remove(jti);
                self.strings -= jti.len();
            }
        }
    }

    /// Drops entries whose expiry has passed: the tokens they revoke are expired anyway.
    pub(super) fn prune(&mut self, now: SystemTime) {
        let past: Vec<Box<str>> = self
            .by_doc
            .iter()
            .filter(|(_, l)| l.expires.is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in past {
            self.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ROOMY: Bounds = Bounds {
        max_bytes: usize::MAX,
        max_entries: usize::MAX,
    };

    fn entries(n: usize) -> Bounds {
        Bounds {
            max_entries: n,
            ..ROOMY
        }
    }

    fn listed(jti: &str, expires: Option<SystemTime>) -> Listed {
        Listed {
            jti: jti.into(),
            expires,
        }
    }

    #[test]
    fn a_jti_stays_listed_while_any_document_lists_it() {
        let mut s = State::default();
        s.put("1".into(), listed("a", None), ROOMY);
        s.put("2".into(), listed("a", None), ROOMY);
        s.remove("1");
        assert!(s.by_jti.contains_key("a"));
        // An update that changes the listed jti unlists the old one.
        s.put("2".into(), listed("b", None), ROOMY);
        assert!(!s.by_jti.contains_key("a") && s.by_jti.contains_key("b"));
        s.remove("2");
        assert!(s.by_jti.is_empty() && s.by_doc.is_empty());
    }

    #[test]
    fn over_the_bound_the_list_is_marked_incomplete() {
        let mut s = State::default();
        s.put("1".into(), listed("a", None), entries(1));
        s.put("1".into(), listed("a2", None), entries(1));
        assert!(!s.overflow, "replacing an entry is not growth");
        s.put("2".into(), listed("b", None), entries(1));
        assert!(s.overflow && !s.by_jti.contains_key("b"));
    }

    #[test]
    fn expired_entries_are_pruned() {
        let now = SystemTime::now();
        let mut s = State::default();
        s.put(
            "1".into(),
            listed("old", Some(now - Duration::from_secs(1))),
            ROOMY,
        );
        s.put(
            "2".into(),
            listed("new", Some(now + Duration::from_secs(60))),
            ROOMY,
        );
        s.put("3".into(), listed("forever", None), ROOMY);
        s.prune(now);
        let mut left: Vec<_> = s.by_jti.keys().map(|k| k.to_string()).collect();
        left.sort();
        assert_eq!(left, ["forever", "new"]);
    }

    #[test]
    fn the_byte_bound_holds_and_marks_the_list_incomplete() {
        let bounds = Bounds {
            max_bytes: 4096,
            ..ROOMY
        };
        let mut s = State::default();
        let mut admitted = 0;
        for i in 0..1000 {
            s.put(
                format!("{i:024x}").into(),
                listed(&format!("jti-{i:032}"), None),
                bounds,
            );
            assert!(s.bytes() <= bounds.max_bytes, "{} > max_bytes", s.bytes());
            if s.overflow {
                break;
            }
            admitted += 1;
        }
        assert!(s.overflow && admitted > 10, "admitted {admitted}");
        assert_eq!(s.by_doc.len(), admitted);
        for i in 0..admitted {
            s.remove(&format!("{i:024x}"));
        }
        assert_eq!(
            s.bytes(),
            table_bytes(s.by_doc.capacity(), DOC_SLOT) + table_bytes(s.by_jti.capacity(), JTI_SLOT)
        );
    }
}
