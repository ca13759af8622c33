//! Recent rotations, in memory: which new id replaced an old one, and until when a logout of
//! the old id ends the new one too (see [`crate::session::OLD_ID_LOGOUT_WINDOW`]).
//!
//! A rotation notes itself under the old id's lock, in the same step as it removes the old
//! id, and a logout reads the note under that same lock after its own removal: whichever of
//! the two comes first, the other sees it. Entries past their time are dropped at the next
//! note, so the map holds the rotations of the last window, no more. A restart forgets them:
//! a logout of an old id then ends only that id.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::Millis;
use crate::session::SessionId;

/// The rotations of the last window.
#[derive(Default)]
pub struct Rotations(Mutex<HashMap<SessionId, (SessionId, Millis)>>);

impl Rotations {
    /// `old` was replaced by `new` at `now`; a logout of `old` ends `new` until `until`.
    pub fn note(&self, old: SessionId, new: SessionId, until: Millis, now: Millis) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, upto)| *upto > now);
        map.insert(old, (new, until));
    }

    /// The id that replaced `old`, if a logout of `old` at `now` ends it too.
    pub fn successor(&self, old: &SessionId, now: Millis) -> Option<SessionId> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(old)
            .filter(|(_, until)| *until > now)
            .map(|(new, _)| *new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_is_named_until_its_time_and_then_forgotten() {
        let rotations = Rotations::default();
        let (old, new) = (
            SessionId::from_bytes([1; 16]),
            SessionId::from_bytes([2; 16]),
        );
        rotations.note(old, new, 1_000, 0);
        assert_eq!(rotations.successor(&old, 999), Some(new));
        assert_eq!(rotations.successor(&old, 1_000), None, "past its time");
        assert_eq!(rotations.successor(&new, 0), None);
        // The next note drops it.
        let other = SessionId::from_bytes([3; 16]);
        rotations.note(new, other, 3_000, 2_000);
        assert_eq!(rotations.0.lock().expect("lock").len(), 1);
    }
}
