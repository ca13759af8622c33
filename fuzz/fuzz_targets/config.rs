//! Any configuration file text and environment values: loading answers with a configuration
//! or an error naming a real key, and never panics.
#![no_main]

use keepalive::config::{ConfigError, KEYS, Layers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is a TOML file; every other line `KEY=value` is an environment variable.
    let (file, env) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("keepalive.toml");
    if std::fs::write(&path, file.replace("\\n", "\n")).is_err() {
        return;
    }
    let vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    match Layers::new(Some(path), vars).and_then(|layers| layers.validate()) {
        Ok(_) | Err(ConfigError::File { .. }) => {}
        Err(ConfigError::Invalid { key, .. }) => {
            assert!(KEYS.contains(&key) || key == "configuration")
        }
    }
});
