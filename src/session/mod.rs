//! Sessions: identifiers, records, the store trait, and [`Sessions`], which applies the
//! configured lifetimes on top of a store.

mod id;
mod record;
mod store;

use std::sync::Arc;

pub use id::{ID_BYTES, ID_TEXT_LEN, RandomError, SessionId};
pub use record::SessionRecord;
pub use store::{SessionStore, SharedStoreState, StoreError};

use crate::clock::Clock;
use crate::config::SessionSettings;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No identifier could be generated.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// The session lifecycle over one store: create, keep alive, end.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    settings: SessionSettings,
}

impl Sessions {
    /// Sessions kept in `store`, timed by `clock`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        clock: Arc<dyn Clock>,
        settings: SessionSettings,
    ) -> Self {
        Self {
            store,
            clock,
            settings,
        }
    }

    /// The lifetimes and cookie settings.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The current time on the sessions' clock.
    pub fn now(&self) -> crate::clock::Millis {
        self.clock.now()
    }

    /// Creates and durably stores a session carrying `data` (JSON object text, or empty).
    pub async fn create(&self, data: String) -> Result<SessionRecord, SessionError> {
        let record = SessionRecord::new(
            SessionId::generate()?,
            self.clock.now(),
            self.settings.idle_timeout,
            self.settings.absolute_lifetime,
            data,
        );
        self.store.create(record.clone()).await?;
        Ok(record)
    }

    /// Keeps a session alive; `None` when it is unknown or expired.
    pub async fn keep_alive(&self, id: &SessionId) -> Result<Option<SessionRecord>, SessionError> {
        Ok(self
            .store
            .touch(id, self.clock.now(), self.settings.idle_timeout)
            .await?)
    }

    /// The live session, not extended.
    pub async fn get(&self, id: &SessionId) -> Result<Option<SessionRecord>, SessionError> {
        Ok(self.store.load(id, self.clock.now()).await?)
    }

    /// Ends a session; returns whether it existed.
    pub async fn end(&self, id: &SessionId) -> Result<bool, SessionError> {
        Ok(self.store.delete(id).await?)
    }

    /// Gives a live session a fresh id, invalidating the old one (OWASP: renew the id when
    /// privileges change); `None` when the session is unknown or expired.
    pub async fn rotate(&self, id: &SessionId) -> Result<Option<SessionRecord>, SessionError> {
        Ok(self
            .store
            .rotate(id, SessionId::generate()?, self.clock.now())
            .await?)
    }
}
