//! Simulated users: people with two devices (browsers) each, who sign in, keep their session
//! alive at their tick, go idle for a while or for longer than the idle timeout, log out, log
//! out everywhere and rotate their session's id; and who try the cookies they saw end for a
//! while afterwards, as a stolen cookie would be tried, so that a session an instance brings
//! back shows up in the history.
//!
//! A device makes one request at a time, so its requests are ordered in time; the two devices
//! of a person run side by side. Every request goes into the history with its times, the
//! instance that answered and the answer. Browser requests go through nginx when there is one,
//! else to the instances in turn (a refused connection is tried on the next instance, as a
//! load balancer would); the backend API's requests (a creation for a user, "log out
//! everywhere") go to the instances in turn, as an application's servers call keepalive.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::client::{self, Answer, Call, Failure};
use super::history::{History, Micros, Op, Outcome, Record, now_us, parse_time};

/// How long a device keeps trying a cookie it saw end, past the idle timeout.
const PROBE_PAST_IDLE: Duration = Duration::from_secs(10);
/// How many times a "log out everywhere" answered 503 (Redis offline) is tried again.
const END_ALL_TRIES: u32 = 15;

/// Where requests go.
pub struct Routes {
    /// The instances, in index order.
    pub instances: Vec<SocketAddr>,
    /// nginx, for the browser's requests.
    pub proxy: Option<SocketAddr>,
    /// The limit for one request.
    pub limit: Duration,
    next: AtomicUsize,
}

impl Routes {
    pub fn new(instances: Vec<SocketAddr>, proxy: Option<SocketAddr>, limit: Duration) -> Self {
        Self {
            instances,
            proxy,
            limit,
            next: AtomicUsize::new(0),
        }
    }

    /// The next instance in turn.
    fn next_instance(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.instances.len().max(1)
    }

    /// The instance an nginx answer came from: the last address of `X-Checker-Upstream`.
    fn instance_of(&self, upstream: &str) -> Option<usize> {
        let last = upstream
            .split([',', ' '])
            .rfind(|part| part.contains(':'))?;
        let addr: SocketAddr = last.trim().parse().ok()?;
        self.instances.iter().position(|a| *a == addr)
    }
}

/// What every device shares.
pub struct Shared {
    pub history: Mutex<History>,
    pub routes: Routes,
    pub cookie_name: String,
    pub backend_token: String,
    pub tick: Duration,
    pub idle: Duration,
}

impl Shared {
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which door a request goes through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Door {
    /// The browser's routes: nginx, or the instances in turn.
    Browser,
    /// The backend API: the instances in turn, never nginx.
    Backend,
}

/// A session a device holds: its index in the history and its token.
#[derive(Clone)]
struct Held {
    session: usize,
    token: String,
}

/// A cookie the device saw end, tried until `until`.
struct Ended {
    held: Held,
    until: Micros,
}

/// One device of a person.
pub struct Device {
    shared: std::sync::Arc<Shared>,
    person: usize,
    device: usize,
    user: String,
    /// A calm device only keeps its session alive (it still sees its person's "log out
    /// everywhere"), so that some sessions live to their absolute lifetime.
    calm: bool,
    rng: StdRng,
    current: Option<Held>,
    ended: Vec<Ended>,
}

impl Device {
    pub fn new(
        shared: std::sync::Arc<Shared>,
        person: usize,
        device: usize,
        calm: bool,
        seed: u64,
    ) -> Self {
        Self {
            shared,
            person,
            device,
            user: format!("person-{person}"),
            calm,
            rng: StdRng::seed_from_u64(seed),
            current: None,
            ended: Vec::new(),
        }
    }

    /// Runs until `stop` turns true; a request under way is finished and recorded.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Devices start spread over one tick, not all at once.
        let first = self.jitter(self.shared.tick);
        if !pause(first, &mut stop).await {
            return;
        }
        let tick = self.shared.tick;
        let idle = self.shared.idle;
        while !*stop.borrow() {
            if self.current.is_none() {
                self.log_in().await;
                if !pause(self.jitter(tick), &mut stop).await {
                    return;
                }
                continue;
            }
            let roll: f64 = if self.calm { 1.0 } else { self.rng.random() };
            match roll {
                r if r < 0.015 => self.log_out().await,
                r if r < 0.025 => self.rotate().await,
                r if r < 0.035 => self.end_all(&mut stop).await,
                r if r < 0.055 => {
                    // Idle well within the idle timeout: the next keepalive must succeed.
                    let low = Duration::from_secs(3).min(idle / 2);
                    let high = idle.saturating_sub(Duration::from_secs(5)).max(low);
                    let quiet = self.between(low, high);
                    if !pause(quiet, &mut stop).await {
                        return;
                    }
                    self.keepalive().await;
                }
                r if r < 0.07 => {
                    // Idle well past the idle timeout: the session must be gone.
                    let quiet = self.between(
                        idle + Duration::from_secs(5),
                        idle + Duration::from_secs(15),
                    );
                    if !pause(quiet, &mut stop).await {
                        return;
                    }
                    self.keepalive().await;
                }
                _ => self.keepalive().await,
            }
            if self.rng.random_bool(0.3) {
                self.probe().await;
            }
            if !pause(self.jitter(tick), &mut stop).await {
                return;
            }
        }
    }

    /// `base` give or take a fifth.
    fn jitter(&mut self, base: Duration) -> Duration {
        base.mul_f64(self.rng.random_range(0.8..1.2))
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        if high <= low {
            return low;
        }
        Duration::from_millis(
            self.rng
                .random_range(low.as_millis() as u64..=high.as_millis() as u64),
        )
    }

    fn cookie(&self, held: &Held) -> String {
        format!("{}={}", self.shared.cookie_name, held.token)
    }

    /// Signs in: anonymously as a browser does (a third of the time), or through the
    /// application's login, which creates the session for the person.
    async fn log_in(&mut self) {
        let sent = now_us();
        if self.rng.random_bool(1.0 / 3.0) {
            let record = Record::new(self.person, self.device, Op::Create, sent);
            let call = Call {
                method: Method::POST,
                path: "/api/v1/session",
                cookie: None,
                bearer: None,
                json: None,
            };
            let (index, answer) = self.exchange(Door::Browser, &call, record).await;
            let token = answer
                .filter(|a| a.status == 201)
                .and_then(|a| a.cookie(&self.shared.cookie_name));
            if let Some(token) = token {
                let mut history = self.shared.history();
                let session = history.session(&token, None, index);
                history.records[index].session = Some(session);
                drop(history);
                self.current = Some(Held { session, token });
            }
        } else {
            let mut record = Record::new(self.person, self.device, Op::CreateForUser, sent);
            record.user = Some(self.user.clone());
            let call = Call {
                method: Method::POST,
                path: "/api/v1/backend/sessions",
                cookie: None,
                bearer: Some(&self.shared.backend_token),
                json: Some(serde_json::json!({ "user": self.user })),
            };
            let (index, answer) = self.exchange(Door::Backend, &call, record).await;
            let token = answer
                .filter(|a| a.status == 201)
                .and_then(|a| a.json?["token"].as_str().map(str::to_owned));
            if let Some(token) = token {
                let mut history = self.shared.history();
                let session = history.session(&token, Some(&self.user), index);
                history.records[index].session = Some(session);
                drop(history);
                self.current = Some(Held { session, token });
            }
        }
    }

    /// A keepalive with the current session; a 401 means signing in again.
    async fn keepalive(&mut self) {
        let Some(held) = self.current.clone() else {
            return;
        };
        if self.ping(&held, false).await == Some(401) {
            self.current = None;
        }
    }

    /// A keepalive with a cookie the device saw end, while it is still tried.
    async fn probe(&mut self) {
        let now = now_us();
        self.ended.retain(|e| e.until > now);
        let Some(held) = self.ended.first().map(|e| e.held.clone()) else {
            return;
        };
        // The oldest goes to the back: every ended cookie gets its turn.
        self.ended.rotate_left(1);
        self.ping(&held, true).await;
    }

    /// `GET /api/v1/keepalive/` with `held`'s cookie; the status, if answered.
    async fn ping(&mut self, held: &Held, probe: bool) -> Option<u16> {
        let mut record = Record::new(self.person, self.device, Op::Keepalive, now_us());
        record.session = Some(held.session);
        record.probe = probe;
        let cookie = self.cookie(held);
        let call = Call {
            method: Method::GET,
            path: "/api/v1/keepalive/",
            cookie: Some(&cookie),
            bearer: None,
            json: None,
        };
        let (_, answer) = self.exchange(Door::Browser, &call, record).await;
        answer.map(|a| a.status)
    }

    /// Remembers `held` as ended, to be tried for a while.
    fn ended(&mut self, held: Held) {
        let until = now_us() + micros(self.shared.idle + PROBE_PAST_IDLE);
        self.ended.push(Ended { held, until });
    }

    /// `DELETE /api/v1/session`.
    async fn log_out(&mut self) {
        let Some(held) = self.current.clone() else {
            return;
        };
        let mut record = Record::new(self.person, self.device, Op::Logout, now_us());
        record.session = Some(held.session);
        let cookie = self.cookie(&held);
        let call = Call {
            method: Method::DELETE,
            path: "/api/v1/session",
            cookie: Some(&cookie),
            bearer: None,
            json: None,
        };
        let (index, _) = self.exchange(Door::Browser, &call, record).await;
        // Unless nothing reached a server, the session is over as far as this device goes.
        if !matches!(
            self.shared.history().records[index].outcome,
            Outcome::Refused(_)
        ) {
            self.current = None;
            self.ended(held);
        }
    }

    /// `POST /api/v1/session/rotate`: a new id; the old one is tried for a while.
    async fn rotate(&mut self) {
        let Some(held) = self.current.clone() else {
            return;
        };
        let mut record = Record::new(self.person, self.device, Op::Rotate, now_us());
        record.session = Some(held.session);
        let cookie = self.cookie(&held);
        let call = Call {
            method: Method::POST,
            path: "/api/v1/session/rotate",
            cookie: Some(&cookie),
            bearer: None,
            json: None,
        };
        let (index, answer) = self.exchange(Door::Browser, &call, record).await;
        match answer {
            Some(a) if a.status == 200 => {
                if let Some(token) = a.cookie(&self.shared.cookie_name) {
                    let mut history = self.shared.history();
                    let user = history.sessions[held.session].user.clone();
                    let session = history.session(&token, user.as_deref(), index);
                    history.records[index].created = Some(session);
                    drop(history);
                    self.current = Some(Held { session, token });
                    self.ended(held);
                }
            }
            Some(a) if a.status == 401 => self.current = None,
            // No answer: the browser keeps the cookie it has, as a browser would.
            _ => {}
        }
    }

    /// "Log out everywhere" for the person, through the backend API, tried again while it
    /// answers 503 (Redis offline) or no answer comes.
    async fn end_all(&mut self, stop: &mut watch::Receiver<bool>) {
        let Some(held) = self.current.clone() else {
            return;
        };
        if self.shared.history().sessions[held.session].user.is_none() {
            // An anonymous session has no one to log out everywhere.
            return self.keepalive().await;
        }
        let path = format!("/api/v1/backend/users/{}/sessions", self.user);
        for _ in 0..END_ALL_TRIES {
            let mut record = Record::new(self.person, self.device, Op::EndAll, now_us());
            record.user = Some(self.user.clone());
            let call = Call {
                method: Method::DELETE,
                path: &path,
                cookie: None,
                bearer: Some(&self.shared.backend_token),
                json: None,
            };
            let (_, answer) = self.exchange(Door::Backend, &call, record).await;
            if answer.is_some_and(|a| a.status == 200) {
                break;
            }
            if !pause(Duration::from_secs(1), stop).await {
                break;
            }
        }
        self.current = None;
        self.ended(held);
    }

    /// Sends `call`, records it (each refused attempt too) and returns the record's index and
    /// the answer, if any.
    async fn exchange(
        &self,
        door: Door,
        call: &Call<'_>,
        template: Record,
    ) -> (usize, Option<Answer>) {
        let routes = &self.shared.routes;
        let proxy = routes.proxy.filter(|_| door == Door::Browser);
        let attempts = if proxy.is_some() {
            1
        } else {
            routes.instances.len().max(1)
        };
        let mut last = None;
        for attempt in 0..attempts {
            let mut record = template.clone();
            let (addr, instance) = match proxy {
                Some(addr) => (addr, None),
                None => {
                    let index = routes.next_instance();
                    (routes.instances[index], Some(index))
                }
            };
            record.sent = if attempt == 0 {
                template.sent
            } else {
                now_us()
            };
            record.via_proxy = proxy.is_some();
            record.instance = instance;
            let result = client::send(addr, call, routes.limit).await;
            record.answered = now_us();
            let (outcome, answer) = match result {
                Ok(answer) => {
                    if let Some(upstream) = &answer.upstream {
                        record.instance = routes.instance_of(upstream);
                    }
                    fill(&mut record, &answer);
                    let outcome = Outcome::Answer {
                        status: answer.status,
                        error: answer.error(),
                        proxy: proxy.is_some() && answer.not_json && answer.status >= 500,
                    };
                    (outcome, Some(answer))
                }
                Err(Failure::Refused(why)) => (Outcome::Refused(why), None),
                Err(Failure::Lost(why)) => (Outcome::Lost(why), None),
            };
            let refused = matches!(outcome, Outcome::Refused(_));
            record.outcome = outcome;
            let index = self.shared.history().push(record);
            last = Some(index);
            if !refused {
                return (index, answer);
            }
        }
        (last.unwrap_or_default(), None)
    }
}

/// Copies the session's expiries and the Redis check from an answer into its record.
fn fill(record: &mut Record, answer: &Answer) {
    let Some(json) = &answer.json else {
        return;
    };
    let session = &json["session"];
    record.expires_at = session["expiresAt"].as_str().and_then(parse_time);
    record.absolute_at = session["absoluteExpiresAt"].as_str().and_then(parse_time);
    record.redis = json["serverHealth"]["checks"]["redis"]
        .as_str()
        .map(str::to_owned);
}

/// Sleeps `how_long`; `false` (at once) when `stop` turns true first.
async fn pause(how_long: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep(how_long) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// A duration in microseconds.
pub fn micros(d: Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answering_instance_is_the_last_upstream_nginx_tried() {
        let routes = Routes::new(
            vec![
                "127.0.0.1:4001".parse().expect("addr"),
                "127.0.0.1:4002".parse().expect("addr"),
            ],
            None,
            Duration::from_secs(1),
        );
        assert_eq!(routes.instance_of("127.0.0.1:4002"), Some(1));
        assert_eq!(
            routes.instance_of("127.0.0.1:4001, 127.0.0.1:4002"),
            Some(1)
        );
        assert_eq!(routes.instance_of("127.0.0.1:4009"), None);
        assert_eq!(routes.instance_of(""), None);
    }

    #[test]
    fn instances_are_taken_in_turn() {
        let routes = Routes::new(
            vec!["127.0.0.1:1".parse().expect("addr"); 3],
            None,
            Duration::from_secs(1),
        );
        let turns: Vec<usize> = (0..5).map(|_| routes.next_instance()).collect();
        assert_eq!(turns, [0, 1, 2, 0, 1]);
    }
}
