//! Wires the parts together and serves until shut down.
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
use crate::http::{self, AppState, RateLimits, Readiness, RouterOptions};
use crate::metrics::Metrics;
use crate::session::{SessionStore, Sessions, StoreError};
use crate::store::failover::{FailoverOptions, FailoverStore};
use crate::store::local::{LocalStore, LocalStoreOptions};
use crate::store::redis::{RedisOptions, RedisStore};

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

/// [`run`] with a chosen clock and `/proc` root.
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    env: Environment,
) -> Result<(), ServerError> {
    crate::outbound::ensure_crypto_provider();
    let metrics = Arc::new(Metrics::new());
    let local = LocalStore::open(
        &config.store.data_dir,
        LocalStoreOptions {
            flush_interval: config.store.flush_interval,
            purge_interval: config.store.purge_interval,
        },
        Arc::clone(&env.clock),
        Arc::clone(&metrics),
    )
    .await?;
    tracing::info!(path = %local.path().display(), "local session store opened");
    let store: Arc<dyn SessionStore> = match &config.redis {
        None => Arc::new(local),
        Some(redis) => {
            metrics.track_redis();
            let remote = RedisStore::new(
                redis.target.clone(),
                RedisOptions {
                    prefix: redis.prefix.clone(),
                    timeout: redis.timeout,
                    connect_timeout: redis.connect_timeout,
                    absolute_lifetime: config.session.absolute_lifetime,
                },
                Arc::clone(&env.clock),
                Arc::clone(&metrics),
            );
            tracing::info!(url = %redis.display_url, "sessions live in Redis, mirrored in the local store");
            Arc::new(
                FailoverStore::start(
                    remote,
                    local,
                    FailoverOptions {
                        probe_interval: redis.probe_interval,
                        backoff_max: redis.backoff_max,
                        absolute_lifetime: config.session.absolute_lifetime,
                    },
                    Arc::clone(&env.clock),
                    Arc::clone(&metrics),
                )
                .await,
            )
        }
    };

    let monitor = HealthMonitor::start(
        HealthOptions {
            interval: config.health.interval,
            memory_warning: config.health.memory_warning,
            memory_critical: config.health.memory_critical,
            root: env.proc_root.clone(),
        },
        Arc::clone(&store),
        Arc::clone(&env.clock),
        Arc::clone(&metrics),
    )
    .await;

    let alerts = {
        let latest = monitor.subscribe();
        let store = Arc::clone(&store);
        let source: HealthSource = Arc::new(move || {
            latest
                .borrow()
                .summary
                .with_redis(store.shared_state().into())
        });
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
    let sweeper = {
        let limits = Arc::clone(&limits);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tick.tick() => limits.sweep(),
                    }
                }
            }
        });
        (stop, task)
    };
    let state = AppState::new(http::Shared {
        sessions: Sessions::new(
            Arc::clone(&store),
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
    });
    let router = http::app(
        state,
        &RouterOptions {
            request_timeout: config.server.request_timeout,
            cors_origins: config.server.cors_origins.clone(),
        },
    );

    let draining = CancellationToken::new();
    let graceful = {
        let draining = draining.clone();
        let readiness = readiness.clone();
        let metrics = Arc::clone(&metrics);
        let drain_delay = config.server.drain_delay;
        async move {
            shutdown.await;
            readiness.set(false);
            metrics.ready.set(0);
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
    readiness.set(true);
    metrics.ready.set(1);
    let served = http::serve(
        listener,
        router,
        config.server.limits,
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

    sweeper.0.cancel();
    if let Err(err) = sweeper.1.await {
        tracing::warn!(error = %err, "rate limit sweeper ended abnormally");
    }
    alerts.stop().await;
    monitor.stop().await;
    let closed = store.close().await;
    result?;
    closed?;
    tracing::info!("stopped; sessions flushed to the local store");
    Ok(())
}
