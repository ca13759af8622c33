//! Outgoing HTTP (alert webhooks, `check`, `doctor`): one place that builds clients, after
//! making sure TLS has its crypto provider.
//!
//! rustls needs a process-wide crypto provider; the project uses ring (it builds with a C
//! compiler alone). Installing it here, rather than only in `main`, keeps the library usable
//! when embedded in another program or driven by tests.

use std::sync::Once;

/// Installs ring as the process's TLS crypto provider, once. A provider installed earlier by
/// the embedding program is kept.
pub fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A builder for an HTTP client, ready for HTTPS.
pub fn client_builder() -> reqwest::ClientBuilder {
    ensure_crypto_provider();
    reqwest::Client::builder()
}
