//! A logout that races a rotation of the same session ends both ids, everywhere.

use reqwest::header::{COOKIE, SET_COOKIE};

use super::*;
use crate::harness::{Store, logout};

/// `POST /api/v1/session/rotate` as the browser sends it: the status, and the new session on
/// 200.
async fn browser_rotate(base: &str, session: &Session) -> (u16, Option<Session>) {
    let response = client()
        .post(format!("{base}/api/v1/session/rotate"))
        .header(COOKIE, &session.cookie)
        .send()
        .await
        .expect("rotate");
    let status = response.status().as_u16();
    let rotated = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|pair| Session {
            token: pair.split_once('=').expect("pair").1.to_owned(),
            cookie: pair.to_owned(),
        });
    (status, rotated.filter(|_| status == 200))
}

/// "A session logged out while its id is being rotated stays logged out, under both ids, in
/// every store": whichever of the two Redis carries out first, on the instance that rotates or
/// on another one, and during an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_racing_a_rotation_ends_both_ids_everywhere() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    // Redis is paused below for longer than the default operation timeout.
    let slow = ("KEEPALIVE_REDIS_TIMEOUT", "3s");
    let one = start(&url, &[slow]).await;
    let two = start(&url, &[slow]).await;
    let both = [&one, &two];

    // 1. The logout reaches Redis between the rotation's creation of the new id and its end
    //    of the old one: Redis's writes are paused while both are on their way, then carried
    //    out in the order they came.
    let first = browser_session(&one).await;
    assert_eq!(
        kept_alive(&two, &first).await,
        200,
        "instance two has a copy"
    );
    let _: () = redis.query(
        redis::cmd("CLIENT").arg("PAUSE").arg(800).arg("WRITE"),
        "CLIENT PAUSE",
    );
    let rotating = tokio::spawn({
        let (base, session) = (one.base.clone(), first.clone());
        async move { browser_rotate(&base, &session).await }
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    let logging_out = tokio::spawn({
        let (base, cookie) = (one.base.clone(), first.cookie.clone());
        async move { logout(&base, &cookie).await }
    });
    let (rotated, logged_out) = (
        rotating.await.expect("rotate"),
        logging_out.await.expect("logout"),
    );
    assert_eq!(logged_out, 204);
    let mut ids = vec![first.clone()];
    ids.extend(rotated.1.clone());
    ended_everywhere(&redis, &both, &ids, "logout between the rotation's steps").await;

    // 2. The logout of the old id comes right after the rotation answered (the browser sent
    //    it before the answer arrived), through the other instance.
    let second = browser_session(&one).await;
    assert_eq!(kept_alive(&two, &second).await, 200);
    let (status, renewed) = browser_rotate(&one.base, &second).await;
    assert_eq!(status, 200);
    let renewed = renewed.expect("new id");
    assert_eq!(logout(&two.base, &second.cookie).await, 204);
    let pair = [second.clone(), renewed.clone()];
    ended_everywhere(
        &redis,
        &both,
        &pair,
        "logout of the old id after the rotation",
    )
    .await;
    ids.extend(pair);

    // 3. During an outage, on the instance that rotates: the logout of the old id ends the
    //    new one there, and once Redis is back, everywhere.
    let third = login(&one, "carol").await;
    assert_eq!(kept_alive(&two, &third).await, 200);
    let heard_before = remote_logouts(&two).await;
    redis.kill();
    sees_redis(&one, "offline").await;
    let (status, offline_new) = backend_rotate(&one, &third).await;
    assert_eq!(status, 200);
    let offline_new = offline_new.expect("new id");
    assert_eq!(logout(&one.base, &third.cookie).await, 204);
    assert_eq!(
        kept_alive(&one, &offline_new).await,
        401,
        "the new id of a session logged out during its rotation, offline"
    );
    redis.start_again();
    sees_redis(&one, "ok").await;
    sees_redis(&two, "ok").await;
    ids.push(third.clone());
    ids.push(offline_new.clone());
    let markers: Vec<String> = [&third, &offline_new].iter().map(|s| s.marker()).collect();
    all_in_redis(
        &redis,
        &markers,
        Duration::from_secs(3),
        "both logouts marked",
    )
    .await;
    // Instance two ends its copy of the old id once it hears (or looks up) that logout.
    within(
        Duration::from_secs(3),
        "instance two ends its copy of the session logged out during the outage",
        || async { remote_logouts(&two).await > heard_before },
    )
    .await;

    // Every store: Redis, and each instance's copies, which a later outage would serve.
    redis.freeze();
    sees_redis(&one, "offline").await;
    sees_redis(&two, "offline").await;
    // Instance two never served the new ids: it holds neither a copy nor the logout of one,
    // and cannot tell such a session from one kept alive elsewhere, so it answers 503 (the
    // client retries); it knows every id it served is over. Instance one knows every id.
    let unseen_by_two: Vec<&Session> = [rotated.1.as_ref(), Some(&renewed), Some(&offline_new)]
        .into_iter()
        .flatten()
        .collect();
    let mut wrong = Vec::new();
    for session in &ids {
        for (n, server) in both.iter().enumerate() {
            let unseen = n == 1 && unseen_by_two.iter().any(|s| s.token == session.token);
            let expected = if unseen { 503 } else { 401 };
            let status = kept_alive(server, session).await;
            if status != expected {
                wrong.push(format!(
                    "{} on instance {}: {status}, expected {expected}",
                    session.token,
                    n + 1
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "in a later outage: {wrong:#?}");
    redis.thaw();
    one.stop().await;
    two.stop().await;
}

/// The local store on its own (no Redis) holds the same rule: a logout of the old id sent just
/// after its rotation ends the new id too, and a rotation of a session logged out meanwhile
/// gives nothing.
#[tokio::test]
async fn without_redis_a_logout_of_the_old_id_ends_the_new_one() {
    let server = Store::Local.start(&[]).await;
    let old = browser_session(&server).await;
    let (status, new) = browser_rotate(&server.base, &old).await;
    assert_eq!(status, 200);
    let new = new.expect("new id");
    assert_eq!(kept_alive(&server, &new).await, 200);
    assert_eq!(logout(&server.base, &old.cookie).await, 204);
    assert_eq!(
        kept_alive(&server, &new).await,
        401,
        "the new id of a session logged out with its old id just after the rotation"
    );

    // Past the window, the old id names a dead session only.
    let older = browser_session(&server).await;
    let (_, newer) = browser_rotate(&server.base, &older).await;
    let newer = newer.expect("new id");
    server
        .clock
        .advance(keepalive::session::OLD_ID_LOGOUT_WINDOW);
    assert_eq!(logout(&server.base, &older.cookie).await, 204);
    assert_eq!(kept_alive(&server, &newer).await, 200);

    // Logged out first: the rotation finds nothing to rotate.
    let gone = browser_session(&server).await;
    assert_eq!(logout(&server.base, &gone.cookie).await, 204);
    assert_eq!(browser_rotate(&server.base, &gone).await.0, 401);
    server.stop().await;
}

/// A session rotated on an instance that then crashes and starts again: its start writes back
/// every record it keeps, the old id's end among them, and that write-back must not end the new
/// id, as a logout of the old id within the rotation's window would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_session_survives_a_crash_of_the_instance_that_rotated_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = [("REDIS_URL", url.as_str())];
    let process = Process::start(dir.path(), &vars);
    let old = session_at(&process.base).await;
    let (status, new) = browser_rotate(&process.base, &old).await;
    assert_eq!(status, 200);
    let new = new.expect("new id");
    // On disk before the crash: the local store's batches are written every 100 ms here.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let process = crash_and_restart(process, dir.path(), &vars).await;
    assert_eq!(
        keepalive(&process.base, Some(&new.cookie)).await.0,
        200,
        "the rotated session after the restart of the instance that rotated it"
    );
    assert!(redis.exists(&new.key()), "the new id in Redis");
    assert_eq!(keepalive(&process.base, Some(&old.cookie)).await.0, 401);
}
