//! The layers of the configuration and where each value came from.
//!
//! figment merges the layers and deserializes them; this module decides what the layers are
//! and remembers, for each key, which layer gave it, so every message can say
//! "KEEPALIVE_TICK (environment variable)" rather than just "tick".

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::Environment;
use super::error::ConfigError;
use super::raw::{KEYS, RawConfig, SECRET_KEYS};

/// Prefix of the environment variables that set keepalive's settings.
pub const ENV_PREFIX: &str = "KEEPALIVE_";
/// Environment variable naming the configuration file.
pub const CONFIG_FILE_VAR: &str = "KEEPALIVE_CONFIG";

/// Variables read without the prefix, for compatibility with existing deployments. The
/// prefixed name wins when both are set.
const ALIASES: &[(&str, &str)] = &[
    ("port", "PORT"),
    ("redis_url", "REDIS_URL"),
    ("env", "NODE_ENV"),
];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The default of the environment.
    Default(Environment),
    /// The configuration file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag of `keepalive serve`, by name (`--port`).
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default(env) => write!(f, "default for {env}"),
            Self::File(path) => write!(f, "config file {}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::Flag(name) => write!(f, "command-line flag {name}"),
        }
    }
}

/// The layers of one configuration, merged but not yet validated.
#[derive(Debug)]
pub struct Layers {
    figment: Figment,
    environment: Environment,
    file: Option<(PathBuf, Dict)>,
    /// Setting name to (variable name, value), for the variables that were set.
    env: BTreeMap<String, (String, String)>,
    /// Setting name to flag name, for the command-line flags that were given.
    flags: BTreeMap<String, &'static str>,
    unknown_vars: Vec<String>,
    service_links: Vec<String>,
    environment_note: Option<String>,
}

impl Layers {
    /// Reads the process environment and the file (`file`, else `KEEPALIVE_CONFIG`).
    pub fn read(file: Option<PathBuf>) -> Result<Self, ConfigError> {
        Self::new(file, std::env::vars())
    }

    /// Builds the layers from the given variables instead of the process environment.
    pub fn new(
        file: Option<PathBuf>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect();
        let mut env = BTreeMap::new();
        let mut unknown_vars = Vec::new();
        let mut service_links = Vec::new();
        for (name, value) in &vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            if is_service_link(name, value, &vars) {
                service_links.push(name.clone());
            } else if KEYS.contains(&key.as_str()) {
                env.insert(key, (name.clone(), value.clone()));
            } else if name != CONFIG_FILE_VAR {
                unknown_vars.push(name.clone());
            }
        }
        for (key, alias) in ALIASES {
            if let (false, Some(value)) = (env.contains_key(*key), vars.get(*alias)) {
                env.insert((*key).to_owned(), ((*alias).to_owned(), value.clone()));
            }
        }

        let file = file
            .or_else(|| vars.get(CONFIG_FILE_VAR).map(PathBuf::from))
            .map(|path| read_file(&path).map(|dict| (path, dict)))
            .transpose()?;

        let (environment, environment_origin) = match (env.get("env"), file_value(&file, "env")) {
            (Some((var, value)), _) => (value.clone(), Origin::Env(var.clone())),
            (None, Some((path, value))) => (value, Origin::File(path)),
            (None, None) => (
                "development".to_owned(),
                Origin::Default(Environment::Development),
            ),
        };
        let mut environment_note = None;
        let environment = match Environment::parse(&environment) {
            Some(parsed) => parsed,
            // NODE_ENV belongs to the Node application the server is deployed with, which may
            // use any name (`qa`, `ci`, `local`...). Express treats every value but
            // `production` as development; so does keepalive, saying so, rather than refusing
            // to start. KEEPALIVE_ENV and the file are keepalive's own and stay strict.
            None if environment_origin == Origin::Env("NODE_ENV".to_owned()) => {
                // A near miss of a known name is worth pointing out: `prodution` running with
                // development's defaults (no `Secure` cookie) is not what its author meant.
                let near = ["development", "staging", "production"]
                    .into_iter()
                    .find(|name| strsim::levenshtein(&environment.to_ascii_lowercase(), name) <= 2)
                    .map(|name| format!(" (did you mean {name}?)"))
                    .unwrap_or_default();
                environment_note = Some(format!(
                    "NODE_ENV={environment} is not one of keepalive's environments (development, \
                     staging, production){near}: using the development defaults, as Express \
                     does; set KEEPALIVE_ENV to choose"
                ));
                // The value stays in the layers as text: the environment is all it sets.
                env.remove("env");
                Environment::Development
            }
            None => {
                return Err(ConfigError::Invalid {
                    key: "env",
                    value: environment.clone(),
                    origin: environment_origin,
                    rule: "must be one of development, staging, production".to_owned(),
                });
            }
        };

        let mut figment = Figment::from(Serialized::defaults(RawConfig::defaults_for(environment)));
        if let Some((path, dict)) = &file {
            figment = figment.merge(DictLayer::new(
                format!("config file {}", path.display()),
                dict.clone(),
            ));
        }
        let env_dict: Dict = env
            .iter()
            .map(|(key, (_, value))| (key.clone(), parse_env_value(key, value)))
            .collect();
        figment = figment.merge(DictLayer::new("environment variables".to_owned(), env_dict));

        Ok(Self {
            figment,
            environment,
            file,
            env,
            flags: BTreeMap::new(),
            unknown_vars,
            service_links,
            environment_note,
        })
    }

    /// Puts the command-line flags of `keepalive serve` on top of the other layers: each is
    /// (setting, flag name, value as typed).
    pub fn with_flags(mut self, flags: Vec<(&'static str, &'static str, String)>) -> Self {
        if flags.is_empty() {
            return self;
        }
        let dict: Dict = flags
            .iter()
            .map(|(key, _, value)| ((*key).to_owned(), parse_env_value(key, value)))
            .collect();
        self.figment = self
            .figment
            .merge(DictLayer::new("command-line flags".to_owned(), dict));
        for (key, flag, _) in flags {
            self.flags.insert(key.to_owned(), flag);
        }
        self
    }

    /// The environment whose defaults form the bottom layer.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// `KEEPALIVE_*` variables that name no setting (likely typos); they are ignored.
    pub fn unknown_vars(&self) -> &[String] {
        &self.unknown_vars
    }

    /// The variables Kubernetes injects for a Service named `keepalive` (`KEEPALIVE_PORT=tcp://…`,
    /// `KEEPALIVE_SERVICE_HOST`…); they are ignored.
    pub fn service_links(&self) -> &[String] {
        &self.service_links
    }

    /// Why the environment is not the one `NODE_ENV` names, when it is not.
    pub fn environment_note(&self) -> Option<&str> {
        self.environment_note.as_deref()
    }

    /// Where the value of `key` came from.
    pub fn origin(&self, key: &str) -> Origin {
        if let Some(flag) = self.flags.get(key) {
            return Origin::Flag(flag);
        }
        if let Some((var, _)) = self.env.get(key) {
            return Origin::Env(var.clone());
        }
        match &self.file {
            Some((path, dict)) if dict.contains_key(key) => Origin::File(path.clone()),
            _ => Origin::Default(self.environment),
        }
    }

    /// The merged value of `key` as text, with secrets redacted; `None` when unset.
    pub fn display_value(&self, key: &str) -> Option<String> {
        let value = self.figment.find_value(key).ok()?;
        if SECRET_KEYS.contains(&key) {
            return Some("<redacted>".to_owned());
        }
        Some(match key {
            "redis_url" => redact_url(&value_text(&value)),
            _ => value_text(&value),
        })
    }

    /// Deserializes the merged layers; errors name the key, value and origin.
    pub(super) fn extract(&self) -> Result<RawConfig, ConfigError> {
        self.figment.extract::<RawConfig>().map_err(|err| {
            let key = err.path.first().cloned().unwrap_or_default();
            let static_key = KEYS
                .iter()
                .copied()
                .find(|k| *k == key)
                .unwrap_or("configuration");
            let value = self.display_value(&key).unwrap_or_default();
            let rule = if key == "port" && value.contains("://") {
                "must be a port number; a value such as tcp://10.0.0.1:80 is a Kubernetes \
                 service link (a Service named `keepalive` sets KEEPALIVE_PORT in every pod \
                 started after it): set `enableServiceLinks: false` in the pod spec"
                    .to_owned()
            } else {
                describe_kind(&err.kind, &key)
            };
            ConfigError::Invalid {
                key: static_key,
                value,
                origin: self.origin(&key),
                rule,
            }
        })
    }
}

/// Whether `name` is one of the variables the kubelet injects for a Service (its "service
/// links"): `<SERVICE>_SERVICE_HOST`, `<SERVICE>_SERVICE_PORT[_<PORT NAME>]`, `<SERVICE>_PORT`
/// (`tcp://10.0.0.1:80`) and `<SERVICE>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`. A Service
/// named `keepalive` gives `KEEPALIVE_PORT=tcp://…`, which would otherwise be read as the port
/// and stop every pod started after the Service. Recognised only next to the
/// `<SERVICE>_SERVICE_HOST` the kubelet always sets with them, so a port set by hand is
/// still read (and refused if it is not a number).
fn is_service_link(name: &str, value: &str, vars: &BTreeMap<String, String>) -> bool {
    let has_host = |service: &str| vars.contains_key(&format!("{service}_SERVICE_HOST"));
    if let Some(service) = name.strip_suffix("_SERVICE_HOST") {
        return !service.is_empty();
    }
    if let Some((service, _)) = name.split_once("_SERVICE_PORT") {
        return has_host(service);
    }
    // `<SERVICE>_PORT` and `<SERVICE>_PORT_80_TCP...`: the service is what precedes a `_PORT`
    // followed by nothing or by `_<digits>`.
    let link_value = |v: &str| {
        ["tcp://", "udp://", "sctp://"]
            .iter()
            .any(|scheme| v.to_ascii_lowercase().starts_with(scheme))
    };
    if let Some(service) = name.strip_suffix("_PORT")
        && link_value(value)
        && has_host(service)
    {
        return true;
    }
    name.match_indices("_PORT_").any(|(index, _)| {
        let (service, rest) = (&name[..index], &name[index + "_PORT_".len()..]);
        let port = rest.split('_').next().unwrap_or_default();
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && has_host(service)
    })
}

/// Reads and parses the TOML file; a missing or malformed file is an error, not an empty layer.
fn read_file(path: &Path) -> Result<Dict, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::File {
        path: path.to_owned(),
        reason: err.to_string(),
    })?;
    let data = Toml::string(&text)
        .data()
        .map_err(|err| ConfigError::File {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
    let dict = data.into_values().next().unwrap_or_default();
    if let Some(key) = dict.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(ConfigError::File {
            path: path.to_owned(),
            reason: format!(
                "unknown setting `{key}` (known settings: {})",
                KEYS.join(", ")
            ),
        });
    }
    Ok(dict)
}

fn file_value(file: &Option<(PathBuf, Dict)>, key: &str) -> Option<(PathBuf, String)> {
    let (path, dict) = file.as_ref()?;
    dict.get(key).map(|v| (path.clone(), value_text(v)))
}

/// Environment variables are untyped: numbers and booleans are recognised as such, the rest
/// stays text (durations such as `30s` are parsed by the setting itself).
fn parse_env_value(key: &str, value: &str) -> Value {
    if SECRET_KEYS.contains(&key)
        || matches!(
            key,
            "redis_url"
                | "redis_prefix"
                | "cookie_name"
                | "express_prefix"
                | "express_cookie_name"
                | "express_user_field"
                | "express_secrets_file"
        )
    {
        return Value::from(value.to_owned());
    }
    if let Ok(b) = value.parse::<bool>() {
        return Value::from(b);
    }
    if let Ok(n) = value.parse::<u64>() {
        return Value::from(n);
    }
    if let Ok(n) = value.parse::<f64>() {
        return Value::from(n);
    }
    Value::from(value.to_owned())
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(_, s) => s.clone(),
        other => match serde_json::to_value(other) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(json) => json.to_string(),
            Err(_) => format!("{other:?}"),
        },
    }
}

/// Hides the password (and user) of a URL, keeping scheme, host, port and path.
/// By hand because cluster and sentinel URLs list several hosts, which URL parsers refuse.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://<redacted>@{host}"),
        None => url.to_owned(),
    }
}

fn describe_kind(kind: &figment::error::Kind, key: &str) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            if expected.contains("duration") || expected.contains("Duration") {
                format!(
                    "must be a duration with a unit, such as 500ms, 30s, 10m or 12h (found {actual})"
                )
            } else {
                format!("expected {expected}, found {actual}")
            }
        }
        Kind::Message(msg) => {
            if key.ends_with("timeout")
                || key.ends_with("interval")
                || key == "tick"
                || key.ends_with("lifetime")
                || key.ends_with("delay")
            {
                format!("must be a duration with a unit, such as 500ms, 30s, 10m or 12h ({msg})")
            } else {
                msg.clone()
            }
        }
        other => other.to_string(),
    }
}

/// A figment provider over an already-read dictionary, with a readable name.
struct DictLayer {
    name: String,
    dict: Dict,
}

impl DictLayer {
    fn new(name: String, dict: Dict) -> Self {
        Self { name, dict }
    }
}

impl Provider for DictLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}
