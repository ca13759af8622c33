//! `keepalive config`: every setting's effective value and origin, secrets redacted; exits 64
//! when the configuration would not start.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::config::{KEYS, Layers};

use super::EXIT_CONFIG;

/// Prints the configuration; returns the exit code.
pub fn run(file: Option<PathBuf>, as_json: bool) -> ExitCode {
    let layers = match Layers::read(file) {
        Ok(layers) => layers,
        Err(err) => {
            eprintln!("keepalive: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let verdict = layers.validate();
    if as_json {
        let settings: serde_json::Map<String, serde_json::Value> = KEYS
            .iter()
            .map(|key| {
                let value = layers.display_value(key);
                (
                    key.to_string(),
                    json!({"value": value, "source": layers.origin(key).to_string()}),
                )
            })
            .collect();
        let doc = json!({
            "environment": layers.environment().as_str(),
            "valid": verdict.is_ok(),
            "error": verdict.as_ref().err().map(ToString::to_string),
            "unknownVariables": layers.unknown_vars(),
            "environmentNote": layers.environment_note(),
            "ignoredServiceLinks": layers.service_links(),
            "settings": settings,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!("environment: {}", layers.environment());
        let width = KEYS.iter().map(|k| k.len()).max().unwrap_or(0);
        for key in KEYS {
            let value = layers
                .display_value(key)
                .unwrap_or_else(|| "(not set)".to_owned());
            println!("{key:<width$}  {value:<24}  {}", layers.origin(key));
        }
        for var in layers.unknown_vars() {
            println!("warning: {var} names no setting and is ignored");
        }
        if let Some(note) = layers.environment_note() {
            println!("note: {note}");
        }
        if !layers.service_links().is_empty() {
            println!(
                "note: {} are Kubernetes service links and are ignored",
                layers.service_links().join(", ")
            );
        }
    }
    match verdict {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keepalive: {err}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
