//! Wires the parts together and serves until shut down.
//!
//! [`Keepalive`] owns the running parts: the store, the health monitor, the alert rules and the
//! rate limits' sweeper. The standalone server ([`run`]) serves its router; an application
//! written with axum can instead merge [`Keepalive::router`] into its own and read sessions in
//! its handlers with [`CurrentSession`](crate::http::CurrentSession).
//!
//! Start: open the store, run the first health check, start the monitor and the alert rules,
//! mark ready, serve.
//! Shutdown (the `shutdown` future resolves, on SIGTERM or SIGINT in the binary): `/readyz`
//! turns 503, the listener keeps accepting for the drain delay so load balancers move away,
//! then closes; in-flight requests get the shutdown timeout to finish; alerts and the monitor
//! stop; the store writes what is pending and closes. `run` returns only when all of that is
//! done.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alert::{self, AlertOptions, Alerts, HealthSource, Webhook, WebhookKind};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::health::{HealthMonitor, HealthOptions};
use crate::http::cookie::{ExpressCookie, SessionCookie};
use crate::http::{self, AppState, RateLimits, Readiness, RouterOptions};
use crate::metrics::Metrics;
use crate::session::express::ExpressFormat;
use crate::session::{SessionStore, Sessions, SharedStatus, StoreError};
use crate::store::express::{ExpressOptions, ExpressStore};
use crate::store::failover::{FailoverOptions, FailoverStore};
use crate::store::local::{CACHE_BYTES, LocalStore, LocalStoreOptions, MIRROR_CACHE_BYTES};
use crate::store::redis::{RedisOptions, RedisStore};
use crate::task::Tasks;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The session store could not be opened.
    #[error("cannot open the session store: {0}")]
    Store(#[from] StoreError),
    /// Serving failed.
    #[error("serving HTTP failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// What a test may replace: the clock and the root of `/proc` and `/sys`.
#[derive(Clone)]
pub struct Environment {
    /// The wall clock sessions are timed by.
    pub clock: Arc<dyn Clock>,
    /// Root of `/proc` and `/sys` for the memory check.
    pub proc_root: PathBuf,
}

/// How the parts are put together, beyond the configuration: what depends on who runs them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Assembly {
    /// Whether each thread that serves requests gets a Redis connection (and a batcher of
    /// keepalives) of its own, so a keepalive never leaves its thread. The standalone server
    /// ([`run`]) turns it on: it serves HTTP on one single-threaded event loop per CPU. Off by
    /// default, for an application that serves keepalive's routes on its own runtime: its
    /// keepalives share one connection, and no connection is opened that it did not ask for.
    pub redis_connection_per_thread: bool,
}

impl Default for Environment {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            proc_root: PathBuf::from("/"),
        }
    }
}

/// Serves on `listener` until `shutdown` resolves, then shuts down cleanly.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    run_with(config, listener, shutdown, Environment::default()).await
}

/// keepalive's running parts: sessions, health, alerts, and the routes that serve them.
///
/// Used by the standalone server, and by an axum application that embeds keepalive:
///
/// ```no_run
/// # async fn demo(config: keepalive::config::Config) -> Result<(), keepalive::server::ServerError> {
/// use axum::{Router, routing::get};
/// use keepalive::http::CurrentSession;
///
/// let keepalive = keepalive::server::Keepalive::start(config).await?;
/// let app: Router = Router::new()
///     .route("/me", get(|session: CurrentSession| async move {
///         session.user().unwrap_or("anonymous").to_owned()
///     }))
///     .layer(keepalive.layer())
///     .merge(keepalive.router());
/// // serve `app`, then:
/// keepalive.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Keepalive {
    state: AppState,
    options: RouterOptions,
    store: Arc<dyn SessionStore>,
    monitor: HealthMonitor,
    alerts: Alerts,
    /// The rate limits' sweeper.
    sweeper: Tasks,
}

impl Keepalive {
    /// Opens the stores (connecting to Redis if configured), runs the first health check and
    /// starts the background tasks. Not ready until [`set_ready`](Self::set_ready).
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        Self::start_with(config, Environment::default()).await
    }

    /// [`start`](Self::start) with a chosen clock and `/proc` root.
    pub async fn start_with(config: Config, env: Environment) -> Result<Self, ServerError> {
        Self::assemble(config, env, Assembly::default()).await
    }

    /// [`start_with`](Self::start_with), put together as `assembly` says.
    pub async fn assemble(
        config: Config,
        env: Environment,
        assembly: Assembly,
    ) -> Result<Self, ServerError> {
        crate::outbound::ensure_crypto_provider();
        let metrics = Arc::new(Metrics::new());
        let local = LocalStore::open(
            &config.store.data_dir,
            LocalStoreOptions {
                cache_bytes: if config.redis.is_some() {
                    MIRROR_CACHE_BYTES
                } else {
                    CACHE_BYTES
                },
                flush_interval: config.store.flush_interval,
                purge_interval: config.store.purge_interval,
                times_in_memory: config.redis.is_none(),
                fine_expiry_order: config
                    .redis
                    .as_ref()
                    .is_some_and(|redis| redis.mirror_max_sessions > 0),
            },
            Arc::clone(&env.clock),
            Arc::clone(&metrics),
        )
        .await?;
        tracing::info!(path = %local.path().display(), "local session store opened");
        let (store, shared): (Arc<dyn SessionStore>, SharedStatus) = match &config.redis {
            None => (Arc::new(local), SharedStatus::disabled()),
            Some(redis) => {
                metrics.track_redis();
                let options = FailoverOptions {
                    probe_interval: redis.probe_interval,
                    backoff_max: redis.backoff_max,
                    write_back_rate: redis.write_back_rate,
                    mirror_max_sessions: redis.mirror_max_sessions,
                    absolute_lifetime: config.session.absolute_lifetime,
                };
                let failover = match &config.express {
                    Some(express) => {
                        let remote = ExpressStore::new(
                            redis.target.clone(),
                            ExpressOptions {
                                prefix: express.prefix.clone(),
                                own_prefix: redis.prefix.clone(),
                                format: express_format(express),
                                timeout: redis.timeout,
                                connect_timeout: redis.connect_timeout,
                                connection_per_thread: assembly.redis_connection_per_thread,
                                mark_lifetime: config.session.absolute_lifetime,
                            },
                            Arc::clone(&env.clock),
                            Arc::clone(&metrics),
                        );
                        tracing::info!(url = %redis.display_url, prefix = %express.prefix, "serving an Express application's sessions (express-session + connect-redis) from its Redis, mirrored in the local store");
                        FailoverStore::start_express(
                            remote,
                            local,
                            options,
                            Arc::clone(&env.clock),
                            Arc::clone(&metrics),
                        )
                        .await
                    }
                    None => {
                        let remote = RedisStore::new(
                            redis.target.clone(),
                            RedisOptions {
                                prefix: redis.prefix.clone(),
                                timeout: redis.timeout,
                                connect_timeout: redis.connect_timeout,
                                absolute_lifetime: config.session.absolute_lifetime,
                                connection_per_thread: assembly.redis_connection_per_thread,
                                logout_record_cap: redis.logout_record_cap,
                            },
                            Arc::clone(&env.clock),
                            Arc::clone(&metrics),
                        );
                        tracing::info!(url = %redis.display_url, "sessions live in Redis, mirrored in the local store");
                        FailoverStore::start(
                            remote,
                            local,
                            options,
                            Arc::clone(&env.clock),
                            Arc::clone(&metrics),
                        )
                        .await
                    }
                };
                let status = failover.status();
                (Arc::new(failover), status)
            }
        };

        let monitor = HealthMonitor::start(
            HealthOptions {
                interval: config.health.interval,
                memory_warning: config.health.memory_warning,
                memory_critical: config.health.memory_critical,
                root: env.proc_root.clone(),
            },
            shared.clone(),
            Arc::clone(&env.clock),
            Arc::clone(&metrics),
        )
        .await;

        let alerts = {
            let latest = monitor.subscribe();
            let shared = shared.clone();
            let source: HealthSource =
                Arc::new(move || latest.borrow().summary.with_redis(shared.state().into()));
            let mut webhooks = Vec::new();
            if let Some(url) = &config.alerts.webhook_url {
                webhooks.push(Webhook {
                    kind: WebhookKind::Alertmanager,
                    url: url.clone(),
                });
            }
            if let Some(url) = &config.alerts.slack_webhook_url {
                webhooks.push(Webhook {
                    kind: WebhookKind::Slack,
                    url: url.clone(),
                });
            }
            Alerts::start(
                AlertOptions {
                    timings: config.alerts.timings,
                    interval: config.health.interval,
                    webhooks,
                    instance: alert::instance_name(),
                },
                source,
                Arc::clone(&env.clock),
                Arc::clone(&metrics),
            )
        };

        let readiness = Readiness::default();
        let limits = Arc::new(RateLimits::new(&config.server.rate_limits));
        // The limiters forget quiet clients every minute, so their memory follows active clients.
        let mut sweeper = Tasks::new();
        {
            let limits = Arc::clone(&limits);
            sweeper.spawn("rate limit sweeper", |stop| async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tick.tick() => limits.sweep(),
                    }
                }
            });
        }
        let state = AppState::new(http::Shared {
            sessions: Sessions::new(
                Arc::clone(&store),
                shared,
                Arc::clone(&env.clock),
                config.session.clone(),
            ),
            health: monitor.subscribe(),
            client: config.client,
            health_token: config.health.token.clone(),
            metrics: Arc::clone(&metrics),
            readiness: readiness.clone(),
            limits: Arc::clone(&limits),
            metrics_token: config.server.metrics_token.clone(),
            backend_token: config.integration.backend_token.clone(),
            forward_auth_extend: config.integration.forward_auth_extend,
            cookie: match &config.express {
                Some(express) => SessionCookie::Express {
                    cookie: ExpressCookie::new(
                        express.cookie_name.clone(),
                        express.secrets.clone(),
                    ),
                    format: express_format(express),
                },
                None => SessionCookie::Native(config.session.clone()),
            },
        });
        let options = RouterOptions {
            request_timeout: config.server.request_timeout,
            cors_origins: config.server.cors_origins.clone(),
        };
        Ok(Keepalive {
            state,
            options,
            store,
            monitor,
            alerts,
            sweeper,
        })
    }

    /// keepalive's routes (the session API, keepalive, forward authentication, the backend API,
    /// probes, metrics and the browser client) with their layers and no fallback, to merge into
    /// an application's router.
    pub fn router(&self) -> axum::Router {
        http::routes(self.state.clone(), &self.options)
    }

    /// The standalone server's router: [`router`](Self::router) plus a JSON 404.
    pub fn app(&self) -> axum::Router {
        http::app(self.state.clone(), &self.options)
    }

    /// The layer that lets an application's handlers take
    /// [`CurrentSession`](crate::http::CurrentSession).
    pub fn layer(&self) -> axum::Extension<AppState> {
        axum::Extension(self.state.clone())
    }

    /// The sessions: create one for a user at login, end it at logout.
    pub fn sessions(&self) -> &Sessions {
        &self.state.sessions
    }

    /// Marks the instance ready (`/readyz` 200) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready_switch().set(ready);
    }

    /// A handle that marks the instance ready or not, for a shutdown signal handler: turn
    /// `/readyz` to 503 first, give the load balancer a moment to notice, then stop serving.
    pub fn ready_switch(&self) -> ReadySwitch {
        ReadySwitch {
            readiness: self.state.readiness.clone(),
            metrics: Arc::clone(&self.state.metrics),
        }
    }

    /// The origins configured in `cors_origins`: what keepalive's own state-changing routes
    /// accept from other sites' pages, for the application's own check of its forms with
    /// [`http::csrf::is_cross_site`].
    pub fn cors_origins(&self) -> &[String] {
        &self.options.cors_origins
    }

    /// Stops the background tasks and closes the store, writing what is pending.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.set_ready(false);
        self.sweeper.stop().await;
        self.alerts.stop().await;
        self.monitor.stop().await;
        self.store.close().await?;
        Ok(())
    }
}

/// How the Express application's sessions are read, from its settings.
fn express_format(settings: &crate::config::ExpressSettings) -> ExpressFormat {
    ExpressFormat {
        ttl: settings.ttl,
        rolling: settings.rolling,
        user_field: settings.user_field.clone(),
    }
}

/// Marks a [`Keepalive`] ready (`/readyz` 200, `keepalive_ready` 1) or not; cheap to clone.
#[derive(Clone)]
pub struct ReadySwitch {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

impl ReadySwitch {
    /// Marks the instance ready or not.
    pub fn set(&self, ready: bool) {
        self.readiness.set(ready);
        self.metrics.ready.set(i64::from(ready));
    }
}

/// [`run`] with a chosen clock and `/proc` root.
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    env: Environment,
) -> Result<(), ServerError> {
    // Requests are served on the event loops of `http::serve`, one single-threaded runtime per
    // CPU: each gets its own Redis connection.
    let assembly = Assembly {
        redis_connection_per_thread: true,
    };
    let keepalive = Keepalive::assemble(config.clone(), env, assembly).await?;
    let router = keepalive.app();
    let metrics = Arc::clone(&keepalive.state.metrics);
    let draining = CancellationToken::new();
    let graceful = {
        let draining = draining.clone();
        let ready = keepalive.ready_switch();
        let drain_delay = config.server.drain_delay;
        async move {
            shutdown.await;
            ready.set(false);
            tell_systemd(&[sd_notify::NotifyState::Stopping], "stopping");
            draining.cancel();
            tracing::info!(drain_delay = %humantime::format_duration(drain_delay), "shutting down: no longer ready, draining");
            tokio::time::sleep(drain_delay).await;
        }
    };
    let deadline = {
        let draining = draining.clone();
        let limit = config.server.drain_delay + config.server.shutdown_timeout;
        async move {
            draining.cancelled().await;
            tokio::time::sleep(limit).await;
        }
    };

    tracing::info!(addr = %listener.local_addr()?, "listening on {}", listener.local_addr()?);
    keepalive.set_ready(true);
    tell_systemd(&[sd_notify::NotifyState::Ready], "ready");
    let served = http::serve(
        listener,
        router,
        config.server.limits,
        &config.server.rate_limits.trusted_proxies,
        config.server.workers,
        Arc::clone(&metrics),
        graceful,
    );
    let result = tokio::select! {
        result = served => result,
        () = deadline => {
            tracing::warn!(shutdown_timeout = %humantime::format_duration(config.server.shutdown_timeout), "in-flight requests did not finish in time; closing them");
            Ok(())
        }
    };

    let closed = keepalive.shutdown().await;
    result?;
    closed?;
    tracing::info!("stopped; sessions flushed to the local store");
    Ok(())
}

/// Tells the service manager where the server is, for a systemd unit of `Type=notify`:
/// `systemctl start` returns once the server serves, and `systemctl status` shows a stop in
/// progress. Nothing happens without `NOTIFY_SOCKET` (not run by systemd).
fn tell_systemd(state: &[sd_notify::NotifyState], what: &str) {
    if let Err(err) = sd_notify::notify(state) {
        tracing::warn!(error = %err, "cannot tell systemd the server is {what} (NOTIFY_SOCKET)");
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the shutdown future of the binary, and of an
/// application that embeds keepalive.
///
/// The handlers are installed when this is called, not when the future is first polled: the
/// server polls it only once it serves, and a SIGTERM that came before (an orchestrator
/// stopping a pod that has just started) would otherwise kill the process without a clean
/// stop. Must be called inside a Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for {name}");
                None
            }
        };
        (
            install(SignalKind::terminate(), "SIGTERM"),
            install(SignalKind::interrupt(), "SIGINT"),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut terminate, mut interrupt) = handlers;
            tokio::select! {
                () = received(interrupt.as_mut()) => tracing::info!("SIGINT received"),
                () = received(terminate.as_mut()) => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("Ctrl-C received"),
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The next signal on `stream`; never, without a handler.
#[cfg(unix)]
async fn received(stream: Option<&mut tokio::signal::unix::Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}
