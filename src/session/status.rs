//! Whether the shared store answers: what the failover store knows of Redis, read by the health
//! check and by "log out everywhere".
//!
//! It is not on the store trait: storing sessions and reporting on a dependency are two jobs,
//! and a store that has no shared store behind it has nothing to report. The failover store
//! owns the one flag that says it (it flips it when Redis goes away and once a re-sync brought
//! it back); everything else holds a [`SharedStatus`] that reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the health check reports about the shared (Redis) store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedStoreState {
    /// No shared store is configured.
    Disabled,
    /// The shared store answers.
    Ok,
    /// The shared store does not answer; sessions are served locally.
    Offline,
}

/// A reader (and, for its owner, the writer) of the shared store's state; cheap to clone and
/// to read on every request.
#[derive(Debug, Clone, Default)]
pub struct SharedStatus(Option<Arc<Flags>>);

#[derive(Debug, Default)]
struct Flags {
    online: AtomicBool,
    /// This instance writes its local sessions back to the shared store in the background.
    writing_back: AtomicBool,
}

impl SharedStatus {
    /// No shared store: always [`SharedStoreState::Disabled`].
    pub fn disabled() -> Self {
        Self(None)
    }

    /// A shared store that has not answered yet: offline until [`set_online`](Self::set_online).
    pub fn offline() -> Self {
        Self(Some(Arc::new(Flags::default())))
    }

    /// The state now.
    pub fn state(&self) -> SharedStoreState {
        match &self.0 {
            None => SharedStoreState::Disabled,
            Some(flags) if flags.online.load(Ordering::Acquire) => SharedStoreState::Ok,
            Some(_) => SharedStoreState::Offline,
        }
    }

    /// Whether the shared store answers (false without one).
    pub fn is_online(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|f| f.online.load(Ordering::Acquire))
    }

    /// Records whether the shared store answers; returns what was recorded before. Only its
    /// owner, the failover store, calls this.
    pub fn set_online(&self, online: bool) -> bool {
        self.0
            .as_ref()
            .is_some_and(|f| f.online.swap(online, Ordering::AcqRel))
    }

    /// Whether this instance writes its local sessions back to the shared store in the
    /// background, while it serves from it (after it stopped without a clean stop).
    pub fn writing_back(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|f| f.writing_back.load(Ordering::Acquire))
    }

    /// Records whether a background write-back runs. Only its owner, the failover store,
    /// calls this.
    pub fn set_writing_back(&self, running: bool) {
        if let Some(flags) = &self.0 {
            flags.writing_back.store(running, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clone_reads_what_the_owner_set() {
        let owner = SharedStatus::offline();
        let reader = owner.clone();
        assert_eq!(reader.state(), SharedStoreState::Offline);
        assert!(!owner.set_online(true));
        assert_eq!(reader.state(), SharedStoreState::Ok);
        assert!(reader.is_online());
        assert!(owner.set_online(false));
        assert_eq!(reader.state(), SharedStoreState::Offline);

        let none = SharedStatus::disabled();
        assert!(!none.set_online(true), "nothing to record");
        assert_eq!(none.state(), SharedStoreState::Disabled);
        assert!(!none.is_online());

        assert!(!reader.writing_back());
        owner.set_writing_back(true);
        assert!(reader.writing_back());
    }
}
