//! The guide `docs/deployment.md`: what it promises matches what the server does.

use super::*;

#[test]
fn deployment_guide_covers_statuses_alerts_logs_and_shutdown() {
    let guide = read("docs/deployment.md");
    let anchors = anchors(&guide);
    for anchor in [
        "quick-start",
        "degraded-redis-offline",
        "degraded-memory-warning",
        "critical-memory",
        "keepalive-down",
        "graceful-shutdown-and-rolling-updates",
        "troubleshooting",
        "faq",
    ] {
        assert!(
            anchors.contains(anchor),
            "docs/deployment.md has no #{anchor}: {anchors:?}"
        );
    }
    for text in [
        "Server health: degraded {redis: offline, memory: ok}",
        "[redis] connection lost:",
        "[redis] degraded mode on",
        "[redis] re-sync done:",
        "keepalive doctor",
        "keepalive check",
        "terminationGracePeriodSeconds",
        "KEEPALIVE_DRAIN_DELAY",
        "docker build -f deploy/docker/Dockerfile",
        "alert: [FIRING] KeepaliveRedisOffline",
    ] {
        assert!(
            guide.contains(text),
            "docs/deployment.md does not mention {text:?}"
        );
    }
    // The log lines it quotes are the ones the server writes.
    for (source, text) in [
        (
            "src/store/failover/mod.rs",
            "[redis] connection lost: {reason}",
        ),
        ("src/store/failover/mod.rs", "[redis] degraded mode on:"),
        (
            "src/store/failover/link.rs",
            "[redis] re-sync done: {sessions} sessions and {logouts} logouts written back",
        ),
        ("src/alert/mod.rs", "\"alert: {}\""),
        ("src/alert/mod.rs", "Transition::Firing => \"FIRING\""),
        (
            "src/health/monitor.rs",
            "\"Server health: {} {{redis: {}, memory: {}}}\"",
        ),
    ] {
        assert!(
            read(source).contains(text),
            "{source} no longer logs {text:?}: update the guide"
        );
    }
    // It links only to files that exist.
    for link in guide.split("](").skip(1) {
        let target = link.split(')').next().expect("link target");
        let path = target.split('#').next().expect("path");
        if path.is_empty() || path.contains("://") {
            continue;
        }
        assert!(
            root().join("docs").join(path).exists(),
            "broken link {target}"
        );
    }
    // Nothing of the machine it was written on, nor of the old production host.
    for leak in ["/work/", "/root/", "/tmp/", "hitbet777"] {
        assert!(
            !guide.contains(leak),
            "docs/deployment.md contains {leak:?}"
        );
    }
}
