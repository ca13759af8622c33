//! The Redis store as the failover's primary: each of
//! [`crate::store::failover::Primary`]'s operations is one of the store's own.

use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Millis;
use crate::session::{SessionId, SessionRecord, StoreError};
use crate::store::failover::{DataSet, Ended, LogoutMark, Logouts, LogoutsRecord, Over, Primary};

use super::RedisStore;

#[async_trait]
impl Primary for RedisStore {
    async fn connect(&self) -> Result<DataSet, StoreError> {
        RedisStore::connect(self).await
    }

    fn disconnect(&self) {
        RedisStore::disconnect(self);
    }

    async fn probe(&self) -> Result<DataSet, StoreError> {
        RedisStore::probe(self).await
    }

    fn place(&self) -> String {
        RedisStore::place(self)
    }

    /// keepalive's sessions leave a mark at every logout, so a missing one is written back
    /// whether Redis lost its data or not (it expired there while kept alive here).
    async fn merge(
        &self,
        record: &SessionRecord,
        now: Millis,
        _data_lost: bool,
    ) -> Result<bool, StoreError> {
        RedisStore::merge(self, record, now).await
    }

    async fn end(&self, id: &SessionId, now: Millis) -> Result<bool, StoreError> {
        RedisStore::end_recorded(self, id, now).await
    }

    async fn log_out(
        &self,
        id: &SessionId,
        now: Millis,
        mark_unknown: bool,
    ) -> Result<bool, StoreError> {
        RedisStore::end_marking(self, id, now, mark_unknown).await
    }

    async fn mark_user_ended(&self, user: &str, at: Millis) -> Result<Vec<SessionId>, StoreError> {
        RedisStore::mark_user_ended(self, user, at).await
    }

    async fn announce_user_ended(&self, user: &str, at: Millis) -> Result<(), StoreError> {
        RedisStore::announce_user_ended(self, user, at).await
    }

    /// Every logout of keepalive's own sessions leaves its mark: a session gone without one
    /// expired, or Redis lost it.
    async fn over(&self, id: &SessionId) -> Result<Over, StoreError> {
        Ok(if RedisStore::is_ended(self, id).await? {
            Over::Marked
        } else {
            Over::No
        })
    }

    async fn announce_write_back(&self, lasting: Duration) -> Result<(), StoreError> {
        self.link.announce_write_back(lasting).await
    }

    async fn write_back_under_way(&self) -> Result<bool, StoreError> {
        self.link.write_back_under_way().await
    }

    async fn logouts_record(&self) -> Result<Option<LogoutsRecord>, StoreError> {
        RedisStore::logouts_record(self).await.map(Some)
    }

    async fn logouts_after(
        &self,
        after: LogoutMark,
        upto: LogoutMark,
        count: usize,
    ) -> Result<(Vec<Ended>, Option<LogoutMark>), StoreError> {
        RedisStore::logouts_after(self, after, upto, count).await
    }

    async fn subscribe_ended(&self) -> Result<Logouts, StoreError> {
        RedisStore::subscribe_ended(self).await
    }
}
