//! `keepalive doctor`: the operator's troubleshooting, automated, for the configuration keepalive
//! would run with. It replaces the old guide's five manual steps (is Redis running, can it be
//! reached, is `REDIS_URL` right, restart it, ...): each step prints one line, and the first
//! failure is named as the cause with its fix. Secrets are never printed.
//!
//! Exit codes: 0 nothing wrong (warnings allowed), 1 something is wrong, 64 the configuration is
//! invalid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpStream;

use crate::config::RedisTarget as Target;
use crate::config::{Config, ExpressSettings, Layers, RedisSettings};
use crate::health::memory;
use crate::session::SessionId;
use crate::store::redis::{Conn, Diagnosis, open};

use super::{EXIT_CONFIG, EXIT_FAILURE};

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Step {
    name: String,
    status: Level,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Default)]
struct Report {
    steps: Vec<Step>,
}

impl Report {
    fn ok(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.steps.push(Step {
            name: name.into(),
            status: Level::Ok,
            detail: detail.into(),
            fix: None,
        });
    }

    fn warn(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) {
        self.steps.push(Step {
            name: name.into(),
            status: Level::Warn,
            detail: detail.into(),
            fix,
        });
    }

    fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.steps.push(Step {
            name: name.into(),
            status: Level::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        });
    }

    fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.status == Level::Fail)
    }
}

/// Runs every check; returns the exit code.
pub fn run(file: Option<PathBuf>, as_json: bool) -> ExitCode {
    let mut report = Report::default();
    let config = check_config(file, &mut report);
    if let Some(config) = &config {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(async {
                match &config.redis {
                    Some(redis) => {
                        check_redis(redis, config.express.as_ref(), &mut report).await
                    }
                    None => report.ok("redis", "not configured: sessions live in the local store only (set REDIS_URL to share them)"),
                }
                check_port(config.server.listen, &mut report).await;
            }),
            Err(err) => report.fail("runtime", err.to_string(), "report this as a bug"),
        }
        check_memory(config, &mut report);
        check_data_dir(&config.store.data_dir, &mut report);
    }

    let cause = report.steps.iter().find(|s| s.status == Level::Fail);
    if as_json {
        let doc = serde_json::json!({
            "ok": !report.failed(),
            "cause": cause.map(|s| &s.detail),
            "fix": cause.and_then(|s| s.fix.as_ref()),
            "steps": report.steps,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        for step in &report.steps {
            let mark = match step.status {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            match &step.fix {
                Some(fix) => println!("{mark}  {}: {} -> {fix}", step.name, step.detail),
                None => println!("{mark}  {}: {}", step.name, step.detail),
            }
        }
        match cause {
            Some(step) => println!(
                "\ncause: {}\nfix:   {}",
                step.detail,
                step.fix.as_deref().unwrap_or("")
            ),
            None => println!("\nno problem found"),
        }
    }
    if config.is_none() {
        ExitCode::from(EXIT_CONFIG)
    } else if report.failed() {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

fn check_config(file: Option<PathBuf>, report: &mut Report) -> Option<Config> {
    let layers = match Layers::read(file) {
        Ok(layers) => layers,
        Err(err) => {
            report.fail(
                "configuration",
                err.to_string(),
                "fix the file, or run `keepalive config` to see every setting",
            );
            return None;
        }
    };
    for var in layers.unknown_vars() {
        report.warn(
            "environment",
            format!("{var} names no setting and is ignored"),
            Some("check its spelling against `keepalive config`".to_owned()),
        );
    }
    match layers.validate() {
        Ok(config) => {
            let env_source = layers.origin("env");
            report.ok(
                "configuration",
                format!(
                    "valid; environment {} (from {env_source})",
                    config.environment
                ),
            );
            Some(config)
        }
        Err(err) => {
            report.fail(
                "configuration",
                err.to_string(),
                "correct that value; `keepalive config` shows where each value comes from",
            );
            None
        }
    }
}

/// Host and port of each Redis node the URL names (sentinels for a sentinel URL).
fn endpoints(target: &Target) -> Vec<(String, u16)> {
    let urls: Vec<&String> = match target {
        Target::Single(url) => vec![url],
        Target::Cluster(urls) => urls.iter().collect(),
        Target::Sentinel { sentinels, .. } => sentinels.iter().collect(),
    };
    urls.iter()
        .filter_map(|url| {
            let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).ok()?;
            match info.addr() {
                redis::ConnectionAddr::Tcp(host, port)
                | redis::ConnectionAddr::TcpTls { host, port, .. } => Some((host.clone(), *port)),
                _ => None,
            }
        })
        .collect()
}

async fn check_redis(
    settings: &RedisSettings,
    express: Option<&ExpressSettings>,
    report: &mut Report,
) {
    let kind = match &settings.target {
        Target::Single(_) => "one server",
        Target::Cluster(_) => "cluster seeds",
        Target::Sentinel { .. } => "sentinels",
    };
    report.ok("REDIS_URL", format!("{} ({kind})", settings.display_url));

    for (host, port) in endpoints(&settings.target) {
        let resolved = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await;
        let addrs: Vec<SocketAddr> = match resolved {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(err)) => {
                report.fail(
                    format!("resolve {host}"),
                    format!("the Redis host name {host} is unknown ({err})"),
                    "check the host in REDIS_URL; with docker compose it is the Redis service's name, and both services must share a network",
                );
                return;
            }
            Err(_) => {
                report.fail(
                    format!("resolve {host}"),
                    format!("resolving {host} took over {}s", RESOLVE_TIMEOUT.as_secs()),
                    "check the DNS configuration of this host or container",
                );
                return;
            }
        };
        let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        report.ok(format!("resolve {host}"), shown.join(", "));

        let Some(addr) = addrs.first().copied() else {
            report.fail(
                format!("resolve {host}"),
                format!("{host} resolves to no address"),
                "check the host in REDIS_URL",
            );
            return;
        };
        match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => report.ok(format!("connect {host}:{port}"), "TCP connection accepted"),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                report.fail(
                    format!("connect {host}:{port}"),
                    format!("Redis is not running: nothing listens on {addr} (connection refused)"),
                    "start Redis (docker compose up -d redis, or systemctl start redis-server) or correct the port in REDIS_URL",
                );
                return;
            }
            Ok(Err(err)) => {
                report.fail(format!("connect {host}:{port}"), format!("cannot reach {addr}: {err}"), "check the network between keepalive and Redis (routes, firewall, network policies)");
                return;
            }
            Err(_) => {
                report.fail(
                    format!("connect {host}:{port}"),
                    format!("{addr} is unreachable: no answer to the connection within {}", humantime::format_duration(settings.connect_timeout)),
                    "check the network between keepalive and Redis (routes, firewall, network policies)",
                );
                return;
            }
        }
    }

    // Authentication and PING over the connection the server itself would open: to the one
    // server, to the cluster's masters, or to the master the sentinels name.
    let answer_budget = Duration::from_secs(2).max(settings.timeout);
    if let Target::Sentinel {
        sentinels, master, ..
    } = &settings.target
        && !check_sentinels(sentinels, master, settings.connect_timeout, report).await
    {
        return;
    }
    let started = Instant::now();
    let connection = tokio::time::timeout(
        settings.connect_timeout + answer_budget,
        open(&settings.target, settings.connect_timeout, answer_budget),
    )
    .await;
    let mut conn = match connection {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => return redis_error(report, &err),
        Err(_) => return frozen(report, answer_budget),
    };
    let ping = tokio::time::timeout(
        answer_budget,
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    match ping {
        Ok(Ok(pong)) => report.ok(
            "ping",
            format!(
                "{pong} in {:.1} ms (authenticated)",
                started.elapsed().as_secs_f64() * 1000.0
            ),
        ),
        Ok(Err(err)) => return redis_error(report, &err),
        Err(_) => return frozen(report, answer_budget),
    }
    let latency_started = Instant::now();
    if let Ok(Ok(_)) = tokio::time::timeout(
        answer_budget,
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await
    {
        let ms = latency_started.elapsed().as_secs_f64() * 1000.0;
        if ms > settings.timeout.as_secs_f64() * 1000.0 / 2.0 {
            report.warn("latency", format!("PING took {ms:.1} ms, close to the {} operation timeout", humantime::format_duration(settings.timeout)), Some("Redis is slow: check its load (redis-cli --latency, SLOWLOG GET) or raise KEEPALIVE_REDIS_TIMEOUT".to_owned()));
        } else {
            report.ok(
                "latency",
                format!(
                    "PING {ms:.2} ms (operation timeout {})",
                    humantime::format_duration(settings.timeout)
                ),
            );
        }
    }
    if matches!(settings.target, Target::Cluster(_)) {
        check_cluster(&mut conn, answer_budget, report).await;
    }
    match tokio::time::timeout(
        answer_budget,
        redis::cmd("INFO").query_async::<String>(&mut conn),
    )
    .await
    {
        Ok(Ok(info)) => {
            let field = |name: &str| info_field(&info, name).unwrap_or_else(|| "?".to_owned());
            let maxmemory = match field("maxmemory_human").as_str() {
                "0B" => "no maxmemory".to_owned(),
                other => format!("maxmemory {other}, policy {}", field("maxmemory_policy")),
            };
            report.ok(
                "info",
                format!(
                    "Redis {} ({}), memory {} ({maxmemory}), {} clients, up {}s",
                    field("redis_version"),
                    field("role"),
                    field("used_memory_human"),
                    field("connected_clients"),
                    field("uptime_in_seconds")
                ),
            );
            let version = field("redis_version");
            if older_than_seven(&version) {
                report.warn(
                    "version",
                    format!("Redis {version}: its streams do not count the entries added, so the record of logouts cannot tell an instance what it missed; each start and outage looks up the mark of every session the instance mirrors (one EXISTS each)"),
                    Some("use Redis 7.0 or later".to_owned()),
                );
            }
        }
        _ => report.warn("info", "INFO did not answer", None),
    }
    check_eviction(&mut conn, answer_budget, report).await;
    if let Some(express) = express {
        check_express(&mut conn, express, answer_budget, report).await;
    }
}

/// Whether `version` (`INFO`'s `redis_version`) is older than 7.0, when streams began to
/// count the entries added (`XINFO STREAM`'s `entries-added`).
fn older_than_seven(version: &str) -> bool {
    version
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major < 7)
}

/// Sessions keepalive would serve in express mode: some under the prefix, in a form it reads
/// (express-session's JSON, an id of the kind express-session makes). A sample, not a scan of
/// the whole database.
async fn check_express(
    conn: &mut Conn,
    express: &ExpressSettings,
    budget: Duration,
    report: &mut Report,
) {
    const SAMPLE: usize = 50;
    let pattern = format!("{}*", express.prefix);
    let scanned = tokio::time::timeout(
        budget,
        redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async::<(String, Vec<String>)>(conn),
    )
    .await;
    let keys = match scanned {
        Ok(Ok((_, keys))) => keys,
        Ok(Err(err)) => return redis_error(report, &err),
        Err(_) => return report.warn("express", "SCAN did not answer in time", None),
    };
    if keys.is_empty() {
        report.warn(
            "express",
            format!("no session under `{}` in the first keys of this database", express.prefix),
            Some("if the application has signed-in users, REDIS_URL must name its Redis and database, and KEEPALIVE_EXPRESS_PREFIX its connect-redis prefix".to_owned()),
        );
        return;
    }
    let mut readable = 0;
    let mut foreign_ids = 0;
    let mut foreign_values = 0;
    let sample: Vec<&String> = keys.iter().take(SAMPLE).collect();
    for key in &sample {
        let id = key.strip_prefix(express.prefix.as_str()).unwrap_or(key);
        if SessionId::parse_express(id).is_none() {
            foreign_ids += 1;
            continue;
        }
        let value = tokio::time::timeout(
            budget,
            redis::cmd("GET")
                .arg(key.as_str())
                .query_async::<Option<String>>(conn),
        )
        .await;
        match value {
            Ok(Ok(Some(json)))
                if serde_json::from_str::<serde_json::Value>(&json)
                    .is_ok_and(|v| v.get("cookie").is_some_and(serde_json::Value::is_object)) =>
            {
                readable += 1
            }
            Ok(Ok(None)) => {}
            _ => foreign_values += 1,
        }
    }
    let detail = format!(
        "{} sessions sampled under `{}`: {readable} in express-session's form",
        sample.len(),
        express.prefix
    );
    if foreign_ids > 0 {
        report.warn(
            "express",
            format!("{detail}; {foreign_ids} with an id keepalive does not read (a custom genid: keepalive reads ids of 1 to 32 bytes in base64url, as uid-safe and UUIDs are)"),
            Some("those sessions get 401 from keepalive; keep the application's default genid, or route their pings to the application".to_owned()),
        );
    } else if foreign_values > 0 {
        report.warn(
            "express",
            format!("{detail}; {foreign_values} not express-session JSON with a cookie (another serializer, or other keys under the prefix)"),
            Some("keepalive reads connect-redis's default JSON serializer; set KEEPALIVE_EXPRESS_PREFIX to the application's prefix".to_owned()),
        );
    } else {
        report.ok("express", detail);
    }
}

/// Whether Redis may evict keepalive's keys when it reaches `maxmemory`: every session and
/// logout mark has a TTL, which the `volatile-*` policies evict, and the `allkeys-*` policies
/// evict anything. keepalive puts back an evicted session it holds a copy of, but a session
/// held nowhere else is lost, and an evicted logout mark no longer keeps stale copies out. The
/// policy comes from `INFO memory` (which managed Redis services answer), else from `CONFIG GET`
/// (which they often refuse).
async fn check_eviction(conn: &mut Conn, budget: Duration, report: &mut Report) {
    let info = tokio::time::timeout(
        budget,
        redis::cmd("INFO")
            .arg("memory")
            .query_async::<redis::Value>(conn),
    )
    .await;
    let texts: Vec<String> = match info {
        Ok(Ok(redis::Value::Map(answers))) => answers.iter().map(|(_, v)| text(v)).collect(),
        Ok(Ok(answer)) => vec![text(&answer)],
        _ => Vec::new(),
    };
    let mut policies: Vec<String> = texts
        .iter()
        .filter_map(|t| info_field(t, "maxmemory_policy"))
        .collect();
    if policies.is_empty() {
        let asked = tokio::time::timeout(
            budget,
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async::<Vec<String>>(conn),
        )
        .await;
        match asked {
            Ok(Ok(pair)) if pair.len() == 2 => policies.push(pair[1].clone()),
            Ok(Err(err)) => {
                let code = err.code().map(|c| format!(" [{c}]")).unwrap_or_default();
                return report.warn(
                    "eviction",
                    format!("cannot read maxmemory-policy: Redis refused CONFIG GET{code} (managed Redis services often do) and INFO memory did not say it"),
                    Some("check in the provider's settings (its parameter group or configuration) that maxmemory-policy is noeviction: any other policy can evict session keys".to_owned()),
                );
            }
            _ => {
                return report.warn(
                    "eviction",
                    "cannot read maxmemory-policy: neither INFO memory nor CONFIG GET answered",
                    Some("check that maxmemory-policy is noeviction: any other policy can evict session keys".to_owned()),
                );
            }
        }
    }
    policies.sort_unstable();
    policies.dedup();
    let evicting: Vec<&String> = policies.iter().filter(|p| *p != "noeviction").collect();
    if evicting.is_empty() {
        report.ok(
            "eviction",
            "maxmemory-policy noeviction: at maxmemory Redis refuses writes rather than evict sessions",
        );
        return;
    }
    let names: Vec<&str> = evicting.iter().map(|p| p.as_str()).collect();
    let what = if names.iter().all(|p| p.starts_with("volatile-")) {
        "keys with a TTL, which every session and logout mark has"
    } else {
        "any key, sessions and logout marks included"
    };
    report.warn(
        "eviction",
        format!(
            "maxmemory-policy {}: at maxmemory Redis evicts {what}; keepalive puts back the sessions an instance holds a copy of, but a session held nowhere else is lost, and an evicted logout mark no longer keeps copies out",
            names.join(", ")
        ),
        Some("set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction and in redis.conf; on a managed Redis, in its parameter group) and give Redis memory for every session".to_owned()),
    );
}

/// The text of an `INFO` answer.
fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::SimpleString(text) => text.clone(),
        _ => String::new(),
    }
}

/// The value of `name` in an `INFO` or `CLUSTER INFO` answer.
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(':')
            .map(|v| v.trim().to_owned())
    })
}

/// Asks the sentinels which server is `master` now; false (and a failed step) when none can
/// say.
async fn check_sentinels(
    sentinels: &[String],
    master: &str,
    timeout: Duration,
    report: &mut Report,
) -> bool {
    let mut last = None;
    for url in sentinels {
        let asked = async {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(Some((host, port)))) => {
                report.ok(
                    "sentinel",
                    format!("master {master} is {host}:{port}, as the sentinels name it"),
                );
                return true;
            }
            Ok(Ok(None)) => {
                report.fail(
                    "sentinel",
                    format!("the sentinels know no master named {master}"),
                    "correct the master name after the hosts in REDIS_URL (redis+sentinel://host:26379/NAME), as in the sentinels' `sentinel monitor` line",
                );
                return false;
            }
            Ok(Err(err)) => last = Some(Diagnosis::of(&err)),
            Err(_) => {
                last = Some(Diagnosis {
                    cause: format!(
                        "a sentinel did not answer within {}",
                        humantime::format_duration(timeout)
                    ),
                    fix: "check the sentinels (redis-cli -p 26379 PING) and the network to them",
                })
            }
        }
    }
    let last = last.unwrap_or_else(|| Diagnosis {
        cause: "REDIS_URL names no sentinel".to_owned(),
        fix: "list the sentinels in REDIS_URL: redis+sentinel://host1:26379,host2:26379/master",
    });
    report.fail("sentinel", last.cause, last.fix);
    false
}

/// The cluster's own view of itself: whether every slot is served.
async fn check_cluster(conn: &mut Conn, budget: Duration, report: &mut Report) {
    let info = tokio::time::timeout(
        budget,
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async::<String>(conn),
    )
    .await;
    match info {
        Ok(Ok(info)) => {
            let state = info_field(&info, "cluster_state").unwrap_or_else(|| "?".to_owned());
            let masters = info_field(&info, "cluster_size").unwrap_or_else(|| "?".to_owned());
            let nodes = info_field(&info, "cluster_known_nodes").unwrap_or_else(|| "?".to_owned());
            let detail = format!("state {state}, {masters} masters, {nodes} nodes");
            if state == "ok" {
                report.ok("cluster", detail);
            } else {
                report.fail(
                    "cluster",
                    format!("the cluster does not serve every slot: {detail}"),
                    "check CLUSTER NODES for failed masters, and that every slot is assigned (redis-cli --cluster check)",
                );
            }
        }
        Ok(Err(err)) => redis_error(report, &err),
        Err(_) => report.warn("cluster", "CLUSTER INFO did not answer", None),
    }
}

fn frozen(report: &mut Report, budget: Duration) {
    report.fail(
        "ping",
        format!("Redis accepts connections but does not answer within {}: it is frozen or overloaded", humantime::format_duration(budget)),
        "look at the Redis process: is it stopped (SIGSTOP, a debugger), swapping, or busy (redis-cli --latency, SLOWLOG GET, a long fork for persistence)? Restart it if it is hung",
    );
}

/// A failure of the Redis client, in the words the server's own log uses.
fn redis_error(report: &mut Report, err: &redis::RedisError) {
    let diagnosis = Diagnosis::of(err);
    report.fail("ping", diagnosis.cause, diagnosis.fix);
}

async fn check_port(listen: SocketAddr, report: &mut Report) {
    match std::net::TcpListener::bind(listen) {
        Ok(_) => report.ok("port", format!("{listen} is free")),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            let url = format!("http://127.0.0.1:{}/livez", listen.port());
            let keepalive = match crate::outbound::client_builder()
                .timeout(Duration::from_secs(2))
                .build()
            {
                Ok(client) => {
                    matches!(client.get(&url).send().await, Ok(r) if r.status().is_success())
                }
                Err(_) => false,
            };
            if keepalive {
                report.warn(
                    "port",
                    format!("{listen} is in use by a running keepalive (it answers /livez)"),
                    None,
                );
            } else {
                report.fail(
                    "port",
                    format!("{listen} is in use by another program"),
                    "stop that program or choose another port with PORT",
                );
            }
        }
        Err(err) => report.fail(
            "port",
            format!("cannot listen on {listen}: {err}"),
            "choose another address with KEEPALIVE_BIND / PORT",
        ),
    }
}

fn check_memory(config: &Config, report: &mut Report) {
    match memory::read(Path::new("/")) {
        Ok(reading) => {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let percent = reading.percent();
            let detail = format!(
                "{:.0} MiB used of {:.0} MiB ({}) = {percent:.1} %; warning at {} %, critical at {} %",
                mib(reading.used_bytes),
                mib(reading.limit_bytes),
                reading.source.as_str(),
                config.health.memory_warning,
                config.health.memory_critical
            );
            if percent >= config.health.memory_critical {
                report.fail("memory", detail, "raise the container's memory limit, or find what holds memory and restart the container");
            } else if percent >= config.health.memory_warning {
                report.warn(
                    "memory",
                    detail,
                    Some("watch it: raise the memory limit before it reaches critical".to_owned()),
                );
            } else {
                report.ok("memory", detail);
            }
        }
        Err(err) => report.warn("memory", format!("cannot read memory use: {err}"), None),
    }
}

fn check_data_dir(dir: &Path, report: &mut Report) {
    let probe = dir.join(".keepalive-doctor");
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    match result {
        Ok(()) => report.ok("data directory", format!("{} is writable", dir.display())),
        Err(err) => report.fail(
            "data directory",
            format!("{} is not writable: {err}", dir.display()),
            "give the keepalive user write access to it, or set KEEPALIVE_DATA_DIR to a writable volume",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::older_than_seven;

    #[test]
    fn versions_before_seven_are_told_apart() {
        for old in ["6.2.14", "5.0.7", "6"] {
            assert!(older_than_seven(old), "{old}");
        }
        for new in ["7.0.15", "7.2.4", "8.0.0", "?"] {
            assert!(!older_than_seven(new), "{new}");
        }
    }
}
