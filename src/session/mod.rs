//! Sessions: identifiers, records, the store trait, and [`Sessions`], which applies the
//! configured lifetimes on top of a store.

pub mod express;
mod id;
mod record;
mod status;
mod store;

use std::sync::Arc;
use std::time::Duration;

pub use id::{ID_BYTES, ID_TEXT_LEN, IdKind, MAX_ID_BYTES, RandomError, SessionId};
pub use record::{Expiry, SessionRecord};
pub use status::{SharedStatus, SharedStoreState};
pub use store::{SessionStore, StoreError};

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
    /// The user id is not one keepalive can carry.
    #[error(transparent)]
    InvalidUser(#[from] InvalidUser),
}

/// How long after a rotation a logout of the old id ends the new one too, in every store: a
/// logout the browser sent with the old cookie while the rotation was on its way (it did not
/// have the new cookie yet) must not leave the session signed in under its new id. Past it the
/// old id only names a dead session, and cannot end the one that replaced it.
pub const OLD_ID_LOGOUT_WINDOW: Duration = Duration::from_secs(60);

/// Longest user id, in bytes.
pub const MAX_USER_LEN: usize = 256;

/// Why a user id was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "a user id is 1 to {MAX_USER_LEN} visible ASCII characters (no spaces or control characters), such as a numeric id, a UUID or an e-mail address"
)]
pub struct InvalidUser;

/// Checks a user id: 1 to 256 visible ASCII characters. The user travels in HTTP headers
/// (forward authentication), so nothing that could end or split a header gets in.
pub fn check_user(user: &str) -> Result<(), InvalidUser> {
    let visible = |b: &u8| (0x21..=0x7e).contains(b);
    if (1..=MAX_USER_LEN).contains(&user.len()) && user.bytes().all(|b| visible(&b)) {
        Ok(())
    } else {
        Err(InvalidUser)
    }
}

/// What "log out everywhere" did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedAll {
    /// Sessions ended.
    pub ended: usize,
    /// Whether every instance's sessions were reached: false while the shared store is
    /// offline, when only this instance's sessions could be ended (their logouts reach the
    /// shared store when it returns).
    pub complete: bool,
}

/// The session lifecycle over one store: create, keep alive, end.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    /// Whether the shared store answers, for "log out everywhere".
    shared: SharedStatus,
    clock: Arc<dyn Clock>,
    settings: SessionSettings,
}

impl Sessions {
    /// Sessions kept in `store`, whose shared store (if any) `shared` reports on, timed by
    /// `clock`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        shared: SharedStatus,
        clock: Arc<dyn Clock>,
        settings: SessionSettings,
    ) -> Self {
        Self {
            store,
            shared,
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

    /// Whether the shared store answers.
    pub fn shared_status(&self) -> &SharedStatus {
        &self.shared
    }

    /// The current time on the sessions' clock.
    pub fn now(&self) -> crate::clock::Millis {
        self.clock.now()
    }

    /// How many sessions the store holds live now (see [`SessionStore::live_count`]).
    pub async fn live_count(&self) -> Result<Option<u64>, StoreError> {
        self.store.live_count(self.now()).await
    }

    /// Creates and durably stores a session carrying `data` (JSON object text, or empty).
    pub async fn create(&self, data: String) -> Result<SessionRecord, SessionError> {
        self.create_with(None, data).await
    }

    /// Creates and durably stores a session for a signed-in `user`, carrying `data`.
    pub async fn create_for_user(
        &self,
        user: &str,
        data: String,
    ) -> Result<SessionRecord, SessionError> {
        check_user(user)?;
        self.create_with(Some(user.to_owned()), data).await
    }

    async fn create_with(
        &self,
        user: Option<String>,
        data: String,
    ) -> Result<SessionRecord, SessionError> {
        let record = SessionRecord::new(
            SessionId::generate()?,
            self.clock.now(),
            self.settings.idle_timeout,
            self.settings.absolute_lifetime,
            data,
        )
        .with_user(user);
        self.store.create(record.clone()).await?;
        Ok(record)
    }

    /// Replaces a live session's data; `None` when it is unknown or expired.
    pub async fn update(
        &self,
        id: &SessionId,
        data: String,
    ) -> Result<Option<SessionRecord>, SessionError> {
        Ok(self.store.update(id, data, self.clock.now()).await?)
    }

    /// The live sessions of `user`, oldest first.
    pub async fn list_user(&self, user: &str) -> Result<Vec<SessionRecord>, SessionError> {
        check_user(user)?;
        Ok(self.store.list_user(user, self.clock.now()).await?)
    }

    /// Ends every session of `user` ("log out everywhere").
    pub async fn end_user(&self, user: &str) -> Result<EndedAll, SessionError> {
        check_user(user)?;
        let complete = self.shared.state() != SharedStoreState::Offline;
        let ended = self.store.end_user(user, self.clock.now()).await? as usize;
        // An outage that began meanwhile also leaves other instances' sessions out.
        let complete = complete && self.shared.state() != SharedStoreState::Offline;
        Ok(EndedAll { ended, complete })
    }

    /// Keeps a session alive; `None` when it is unknown or expired.
    pub async fn keep_alive(&self, id: &SessionId) -> Result<Option<SessionRecord>, SessionError> {
        Ok(self
            .store
            .touch(id, self.clock.now(), self.settings.idle_timeout)
            .await?)
    }

    /// Keeps a session alive and answers its new expiries only; `None` when it is unknown or
    /// expired. Cheaper than [`keep_alive`](Self::keep_alive) where the store keeps the times
    /// apart from the session (the embedded store on its own).
    pub async fn extend(&self, id: &SessionId) -> Result<Option<Expiry>, SessionError> {
        Ok(self
            .store
            .extend(id, self.clock.now(), self.settings.idle_timeout)
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
