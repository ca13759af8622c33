//! A map from session ids to small values, for state kept in memory for every session an
//! instance serves (the failover's knowledge of its copies): keepalive's own ids, 16 random
//! bytes, are keyed by those bytes alone, so an entry costs the value and 16 bytes instead of
//! the 34 of a whole [`SessionId`] (built to hold any kind up to 32 bytes), which is most of
//! what such a map holds per session. Ids of other kinds (an Express application's) are kept
//! whole beside them.

use std::collections::HashMap;

use crate::session::{ID_BYTES, IdKind, SessionId};

/// Session ids to `V`.
pub(crate) struct IdMap<V> {
    native: HashMap<[u8; ID_BYTES], V>,
    other: HashMap<SessionId, V>,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        Self {
            native: HashMap::new(),
            other: HashMap::new(),
        }
    }
}

/// The 16-byte key of one of keepalive's own ids.
fn native(id: &SessionId) -> Option<[u8; ID_BYTES]> {
    match id.kind() {
        IdKind::Native => id.as_bytes().try_into().ok(),
        IdKind::Express => None,
    }
}

impl<V> IdMap<V> {
    pub(crate) fn get(&self, id: &SessionId) -> Option<&V> {
        match native(id) {
            Some(key) => self.native.get(&key),
            None => self.other.get(id),
        }
    }

    pub(crate) fn get_mut(&mut self, id: &SessionId) -> Option<&mut V> {
        match native(id) {
            Some(key) => self.native.get_mut(&key),
            None => self.other.get_mut(id),
        }
    }

    /// Changes the value of `id` with `modify`, or inserts `value` if there is none.
    pub(crate) fn upsert(&mut self, id: &SessionId, value: V, modify: impl FnOnce(&mut V)) {
        match native(id) {
            Some(key) => self.native.entry(key).and_modify(modify).or_insert(value),
            None => self.other.entry(*id).and_modify(modify).or_insert(value),
        };
    }

    pub(crate) fn remove(&mut self, id: &SessionId) -> Option<V> {
        match native(id) {
            Some(key) => self.native.remove(&key),
            None => self.other.remove(id),
        }
    }

    /// Keeps the entries whose value `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.native.retain(|_, value| keep(value));
        self.other.retain(|_, value| keep(value));
    }

    /// Every entry, with its id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SessionId, &V)> {
        let native = self
            .native
            .iter()
            .map(|(key, value)| (SessionId::from_bytes(*key), value));
        native.chain(self.other.iter().map(|(id, value)| (*id, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_every_kind_are_kept_apart_and_given_back_whole() {
        let own = SessionId::from_bytes([7; ID_BYTES]);
        // An Express id of the same 16 bytes is another session.
        let theirs = SessionId::from_parts(IdKind::Express, &[7; ID_BYTES]).expect("id");
        let long = SessionId::from_parts(IdKind::Express, &[9; 24]).expect("id");
        let mut map = IdMap::default();
        map.upsert(&own, 1, |_| unreachable!("new"));
        map.upsert(&theirs, 2, |_| unreachable!("new"));
        map.upsert(&long, 3, |_| unreachable!("new"));
        map.upsert(&own, 0, |v| *v += 10);
        assert_eq!(map.iter().count(), 3);
        assert_eq!(map.get(&own), Some(&11));
        assert_eq!(map.get(&theirs), Some(&2));
        *map.get_mut(&long).expect("kept") += 1;
        let mut all: Vec<(SessionId, i32)> = map.iter().map(|(id, v)| (id, *v)).collect();
        all.sort();
        let mut expected = vec![(own, 11), (theirs, 2), (long, 4)];
        expected.sort();
        assert_eq!(all, expected);
        map.retain(|v| *v != 2);
        assert_eq!(map.get(&theirs), None);
        assert_eq!(map.remove(&own), Some(11));
        assert_eq!(map.iter().count(), 1);
    }
}
