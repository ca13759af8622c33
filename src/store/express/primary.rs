//! The Express store as the failover's primary. What differs from keepalive's own sessions is
//! decided here, not in the failover: how long a session may stay idle (its own `maxAge`),
//! when a session kept through an outage may be written back (only into a Redis that lost its
//! data), and when a copy is over (marked by keepalive, or gone from Redis).

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;

use crate::clock::Millis;
use crate::session::{SessionId, SessionRecord, StoreError};
use crate::store::failover::{DataSet, Logouts, Over, Primary};

use super::{ExpressStore, scripts};

#[async_trait]
impl Primary for ExpressStore {
    async fn connect(&self) -> Result<DataSet, StoreError> {
        ExpressStore::connect(self).await
    }

    fn disconnect(&self) {
        ExpressStore::disconnect(self);
    }

    async fn probe(&self) -> Result<DataSet, StoreError> {
        self.link.probe().await
    }

    fn place(&self) -> String {
        self.link.place(&format!(
            "express prefix={} own prefix={}",
            self.options.prefix, self.options.own_prefix
        ))
    }

    fn idle_of(&self, record: &SessionRecord, _configured: Duration) -> Duration {
        self.options.format.idle_of(&record.data)
    }

    async fn merge(
        &self,
        record: &SessionRecord,
        now: Millis,
        data_lost: bool,
    ) -> Result<bool, StoreError> {
        let mut invocation = scripts::MERGE.prepare_invoke();
        invocation
            .key(self.session_key(&record.id))
            .key(self.mark_key(&record.id))
            .arg(record.data.as_str())
            .arg(record.expires_at)
            .arg(now)
            .arg(i64::from(data_lost));
        Ok(matches!(
            self.link.invoke("merge", invocation).await?,
            Value::Int(1)
        ))
    }

    async fn end(&self, id: &SessionId, now: Millis) -> Result<bool, StoreError> {
        ExpressStore::end(self, id, now).await
    }

    async fn over(&self, id: &SessionId) -> Result<Over, StoreError> {
        ExpressStore::over(self, id).await
    }

    async fn announce_write_back(&self, lasting: Duration) -> Result<(), StoreError> {
        self.link.announce_write_back(lasting).await
    }

    async fn write_back_under_way(&self) -> Result<bool, StoreError> {
        self.link.write_back_under_way().await
    }

    async fn subscribe_ended(&self) -> Result<Logouts, StoreError> {
        ExpressStore::subscribe_ended(self).await
    }
}
