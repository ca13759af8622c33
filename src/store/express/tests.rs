//! The Express store over a real `redis-server`: what a keepalive, a logout and a write-back
//! do to a session laid out as connect-redis lays it out, written here as the application
//! would write it.

use std::sync::Arc;
use std::time::Duration;

use keepalive_testkit::redis::RedisServer;

use super::*;
use crate::clock::SystemClock;
use crate::session::express::StoredCookie;
use crate::store::failover::Primary;

const HOUR_MS: i64 = 3_600_000;

fn store(redis: &RedisServer) -> ExpressStore {
    ExpressStore::new(
        Target::parse(&redis.url()).expect("url"),
        ExpressOptions {
            prefix: "sess:".to_owned(),
            own_prefix: "keepalive:".to_owned(),
            format: ExpressFormat {
                ttl: Duration::from_secs(86_400),
                rolling: false,
                user_field: vec!["passport".to_owned(), "user".to_owned()],
            },
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            connection_per_thread: false,
            mark_lifetime: Duration::from_secs(12 * 3600),
        },
        Arc::new(SystemClock),
        Arc::new(Metrics::new()),
    )
}

/// A session as express-session with connect-redis writes it: its JSON under `sess:<id>`,
/// with the TTL of its cookie. Returns its id and text.
fn written_by_the_app(redis: &RedisServer, max_age: Option<i64>) -> (SessionId, String) {
    let id = SessionId::from_parts(crate::session::IdKind::Express, &rand_bytes()).expect("id");
    let now = SystemClock.now();
    let cookie = match max_age {
        Some(ms) => format!(
            r#"{{"originalMaxAge":{ms},"expires":"{}","httpOnly":true,"path":"/"}}"#,
            crate::clock::rfc3339(now + ms)
        ),
        None => r#"{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}"#.to_owned(),
    };
    let json = format!(r#"{{"cookie":{cookie},"passport":{{"user":"ana"}}}}"#);
    let ttl = max_age.map_or(86_400, |ms| ms / 1000);
    let _: () = redis.query(
        redis::cmd("SET")
            .arg(format!("sess:{id}"))
            .arg(&json)
            .arg("EX")
            .arg(ttl),
        "SET",
    );
    (id, json)
}

fn rand_bytes() -> [u8; 24] {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("rng");
    bytes
}

#[tokio::test]
async fn a_keepalive_moves_the_ttl_as_connect_redis_does_and_keeps_the_value() {
    let redis = RedisServer::start();
    let store = store(&redis);
    store.connect().await.expect("connect");
    let (id, json) = written_by_the_app(&redis, Some(HOUR_MS));
    let key = format!("sess:{id}");
    let _: () = redis.query(redis::cmd("PEXPIRE").arg(&key).arg(60_000), "PEXPIRE");
    let now = SystemClock.now();
    let touched = store
        .touch(&id, now, Duration::from_secs(600))
        .await
        .expect("touch")
        .expect("live");
    assert_eq!(touched.data, json);
    assert_eq!(touched.user.as_deref(), Some("ana"));
    let pttl = redis.pttl(&key);
    assert!((HOUR_MS - 1_000..=HOUR_MS).contains(&pttl), "{pttl}");
    assert_eq!(redis.get(&key).expect("there"), json.as_bytes());

    // A browser-session cookie: connect-redis's ttl.
    let (id, _) = written_by_the_app(&redis, None);
    store
        .touch(&id, now, Duration::from_secs(600))
        .await
        .expect("touch")
        .expect("live");
    let pttl = redis.pttl(&format!("sess:{id}"));
    assert!((86_399_000..=86_400_000).contains(&pttl), "{pttl}");

    // Unknown and malformed values: no session, nothing written.
    let unknown =
        SessionId::from_parts(crate::session::IdKind::Express, &rand_bytes()).expect("id");
    assert!(
        store
            .touch(&unknown, now, Duration::from_secs(1))
            .await
            .expect("touch")
            .is_none()
    );
    assert!(!redis.exists(&format!("sess:{unknown}")));
    let _: () = redis.query(
        redis::cmd("LPUSH").arg(format!("sess:{unknown}")).arg("x"),
        "LPUSH",
    );
    // Another type is a corrupt session whether the keepalive is a GETEX (a lifetime learnt,
    // as here) or the script (nothing learnt yet, a fresh store).
    assert!(matches!(
        store.touch(&unknown, now, Duration::from_secs(1)).await,
        Err(StoreError::Corrupt(_))
    ));
    let fresh = self::store(&redis);
    fresh.connect().await.expect("connect");
    assert!(matches!(
        fresh.touch(&unknown, now, Duration::from_secs(1)).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn the_ttl_redis_sets_is_the_one_keepalive_reads_for_any_text() {
    // The touch script reads the cookie from the head of the text when express-session put
    // it there, and decodes the whole text otherwise; keepalive reads it the same two ways.
    // All must agree, or a session's key would live longer or shorter than its answer says,
    // and a keepalive by GETEX (the lifetime known beforehand) would set another TTL than the
    // script.
    let redis = RedisServer::start();
    let store = store(&redis);
    store.connect().await.expect("connect");
    let at = crate::clock::rfc3339(SystemClock.now() + HOUR_MS);
    let texts = [
        // As express-session writes it, with and without the attributes that come between.
        format!(r#"{{"cookie":{{"originalMaxAge":3600000,"expires":"{at}","httpOnly":true,"path":"/"}},"u":1}}"#),
        format!(r#"{{"cookie":{{"originalMaxAge":1500,"partitioned":true,"priority":"high","expires":"{at}","path":"/"}}}}"#),
        format!(r#"{{"cookie":{{"originalMaxAge":7200000,"priority":"low","expires":"{at}"}}}}"#),
        format!(r#"{{"cookie":{{"originalMaxAge":7200000,"partitioned":false,"expires":"{at}"}}}}"#),
        // Anything else: decoded whole.
        format!(r#"{{"u":1,"cookie":{{"originalMaxAge":60000,"expires":"{at}"}}}}"#),
        format!(r#"{{"cookie":{{"expires":"{at}","originalMaxAge":120000}}}}"#),
        format!(r#"{{ "cookie": {{ "originalMaxAge": 5000, "expires": "{at}" }} }}"#),
        format!(r#"{{"cookie":{{"originalMaxAge":1000.5,"expires":"{at}"}}}}"#),
        format!(r#"{{"cookie":{{"originalMaxAge":3.6e6,"expires":"{at}"}}}}"#),
        // No expiry: connect-redis's ttl.
        r#"{"cookie":{"originalMaxAge":3600000,"expires":null}}"#.to_owned(),
        r#"{"cookie":{"originalMaxAge":null,"expires":null,"path":"/"}}"#.to_owned(),
        r#"{"cookie":{"originalMaxAge":null,"expires":null},"x":"{\"cookie\":{\"originalMaxAge\":5000,\"expires\":\"x\"}"}"#.to_owned(),
        r#"{"u":1}"#.to_owned(),
        "not JSON".to_owned(),
    ];
    let expected = [
        3600, 2, 7200, 7200, 60, 120, 5, 1, 3600, 86_400, 86_400, 86_400, 86_400, 86_400,
    ];
    for (text, expected) in texts.iter().zip(expected) {
        let id = SessionId::from_parts(crate::session::IdKind::Express, &rand_bytes()).expect("id");
        let key = format!("sess:{id}");
        let _: () = redis.query(
            redis::cmd("SET").arg(&key).arg(text).arg("EX").arg(10),
            "SET",
        );
        let read = store.format().ttl_secs(&StoredCookie::of_session(text));
        assert_eq!(read, expected, "keepalive's reading of {text}");
        assert_eq!(
            store.format().ttl_of(text),
            expected,
            "from the head: {text}"
        );
        // The first keepalive of the session, then one with its lifetime learnt.
        for _ in 0..2 {
            let _: () = redis.query(redis::cmd("EXPIRE").arg(&key).arg(10), "EXPIRE");
            store
                .touch(&id, SystemClock.now(), Duration::from_secs(1))
                .await
                .expect("touch")
                .expect("live");
            let ttl: i64 = redis.query(redis::cmd("TTL").arg(&key), "TTL");
            assert_eq!(ttl, expected, "the TTL a keepalive set for {text}");
            assert_eq!(redis.get(&key).expect("kept"), text.as_bytes());
        }
    }
}

#[tokio::test]
async fn a_write_back_never_overwrites_and_revives_only_into_a_redis_that_lost_its_data() {
    let redis = RedisServer::start();
    let store = store(&redis);
    store.connect().await.expect("connect");
    let now = SystemClock.now();

    // The application changed the session meanwhile: only the TTL may move, later, never the
    // value; an earlier expiry moves nothing.
    let (id, _) = written_by_the_app(&redis, Some(HOUR_MS));
    let key = format!("sess:{id}");
    let changed =
        r#"{"cookie":{"originalMaxAge":3600000,"expires":"2030-01-01T00:00:00.000Z"},"cart":[9]}"#;
    let _: () = redis.query(
        redis::cmd("SET").arg(&key).arg(changed).arg("KEEPTTL"),
        "SET",
    );
    let mut copy = store
        .format()
        .record(id, "stale copy".to_owned(), 3600, now);
    copy.expires_at = now + 2 * HOUR_MS;
    assert!(store.merge(&copy, now, false).await.expect("merge"));
    assert_eq!(redis.get(&key).expect("there"), changed.as_bytes());
    assert!(
        redis.pttl(&key) > HOUR_MS + 1_000,
        "extended to the copy's expiry"
    );
    copy.expires_at = now + 60_000;
    assert!(
        !store.merge(&copy, now, false).await.expect("merge"),
        "earlier: nothing"
    );

    // Gone from a Redis that kept its data: the application destroyed it (or it expired);
    // never revived.
    let (gone, json) = written_by_the_app(&redis, Some(HOUR_MS));
    let _: () = redis.query(redis::cmd("DEL").arg(format!("sess:{gone}")), "DEL");
    let copy = store.format().record(gone, json.clone(), 3600, now);
    assert!(!store.merge(&copy, now, false).await.expect("merge"));
    assert!(!redis.exists(&format!("sess:{gone}")));
    // Gone from a Redis that came back empty: written back as it was.
    assert!(store.merge(&copy, now, true).await.expect("merge"));
    assert_eq!(
        redis.get(&format!("sess:{gone}")).expect("back"),
        json.as_bytes()
    );

    // A logout through keepalive wins over any copy, also in a Redis that lost its data.
    let (ended, json) = written_by_the_app(&redis, Some(HOUR_MS));
    assert!(store.end(&ended, now).await.expect("end"));
    assert!(!redis.exists(&format!("sess:{ended}")));
    assert_eq!(store.over(&ended).await.expect("marked"), Over::Marked);
    let copy = store.format().record(ended, json, 3600, now);
    assert!(!store.merge(&copy, now, true).await.expect("merge"));
    assert!(!redis.exists(&format!("sess:{ended}")));
    // The mark shares the session's hash tag, and lives at least as long as the session.
    let mark = store.mark_key(&ended);
    assert_eq!(mark, format!("keepalive:{{sess:{ended}}}:ended"));
    assert!(redis.pttl(&mark) > HOUR_MS - 1_000);
}

#[tokio::test]
async fn a_session_gone_from_redis_is_over_without_a_mark() {
    let redis = RedisServer::start();
    let store = store(&redis);
    store.connect().await.expect("connect");
    let (live, _) = written_by_the_app(&redis, Some(HOUR_MS));
    assert_eq!(store.over(&live).await.expect("over"), Over::No);
    let (destroyed, _) = written_by_the_app(&redis, Some(HOUR_MS));
    let _: () = redis.query(redis::cmd("DEL").arg(format!("sess:{destroyed}")), "DEL");
    assert_eq!(store.over(&destroyed).await.expect("over"), Over::Gone);
    // The operations the application keeps for itself are refused, not failed.
    let now = SystemClock.now();
    assert!(matches!(
        store.update(&live, String::new(), now).await,
        Err(StoreError::Unsupported(_))
    ));
    assert!(matches!(
        store.list_user("ana", now).await,
        Err(StoreError::Unsupported(_))
    ));
}
