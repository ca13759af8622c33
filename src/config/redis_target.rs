//! Where Redis is, parsed from `REDIS_URL`.
//!
//! - One server: `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
//! - A cluster: `redis+cluster://[user:password@]host1:port1,host2:port2,...` (seed nodes;
//!   `rediss+cluster://` for TLS).
//! - Sentinel: `redis+sentinel://[user:password@]host1:26379,host2:26379/master-name[/db]`
//!   (`rediss+sentinel://` for TLS to the master); the credentials are the master's.

use std::fmt;

/// A parsed Redis location. Its `Debug` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, by URL.
    Single(String),
    /// A cluster, by the URLs of its seed nodes.
    Cluster(Vec<String>),
    /// A master found through sentinels.
    Sentinel {
        /// URLs of the sentinels.
        sentinels: Vec<String>,
        /// Name of the monitored master.
        master: String,
        /// URL template carrying the master's credentials, database and TLS choice.
        node: String,
    },
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |u: &String| super::redact_url(u);
        match self {
            Self::Single(url) => write!(f, "Single({})", redact(url)),
            Self::Cluster(urls) => write!(
                f,
                "Cluster({:?})",
                urls.iter().map(redact).collect::<Vec<_>>()
            ),
            Self::Sentinel {
                sentinels, master, ..
            } => {
                write!(
                    f,
                    "Sentinel({:?}, {master})",
                    sentinels.iter().map(redact).collect::<Vec<_>>()
                )
            }
        }
    }
}

const USAGE: &str = "must be redis://[user:password@]host:port[/db] (rediss:// for TLS), \
redis+cluster://host1:port1,host2:port2 or redis+sentinel://host1:26379,host2:26379/master[/db]";

impl RedisTarget {
    /// Parses a `REDIS_URL`; the error is the rule it breaks.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| USAGE.to_owned())?;
        let scheme = scheme.to_ascii_lowercase();
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((user, rest)) => (format!("{user}@"), rest),
            None => (String::new(), rest),
        };
        let (hosts, path) = match rest.split_once('/') {
            Some((hosts, path)) => (hosts, path),
            None => (rest, ""),
        };
        let hosts: Vec<&str> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if hosts.is_empty() {
            return Err(format!("names no host; it {USAGE}"));
        }
        let check_db = |db: &str| -> Result<(), String> {
            if db.is_empty() || db.parse::<u16>().is_ok() {
                Ok(())
            } else {
                Err(format!("database `{db}` is not a number; it {USAGE}"))
            }
        };
        let target = match scheme.as_str() {
            "redis" | "rediss" => {
                if hosts.len() != 1 {
                    return Err(format!(
                        "lists several hosts; for a cluster use redis+cluster://; it {USAGE}"
                    ));
                }
                check_db(path)?;
                Self::Single(url.to_owned())
            }
            "redis+cluster" | "rediss+cluster" => {
                if !path.is_empty() {
                    return Err("a cluster has only database 0: remove the path".to_owned());
                }
                let base = if scheme.starts_with("rediss") {
                    "rediss"
                } else {
                    "redis"
                };
                Self::Cluster(
                    hosts
                        .iter()
                        .map(|h| format!("{base}://{userinfo}{h}"))
                        .collect(),
                )
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let (master, db) = match path.split_once('/') {
                    Some((master, db)) => (master, db),
                    None => (path, ""),
                };
                if master.is_empty() {
                    return Err(format!("names no master after the hosts; it {USAGE}"));
                }
                check_db(db)?;
                let base = if scheme.starts_with("rediss") {
                    "rediss"
                } else {
                    "redis"
                };
                let db = if db.is_empty() { "0" } else { db };
                Self::Sentinel {
                    sentinels: hosts.iter().map(|h| format!("redis://{h}")).collect(),
                    master: master.to_owned(),
                    node: format!("{base}://{userinfo}sentinel-master/{db}"),
                }
            }
            other => return Err(format!("unknown scheme `{other}`; it {USAGE}")),
        };
        target.check_urls()?;
        Ok(target)
    }

    fn check_urls(&self) -> Result<(), String> {
        let urls: Vec<&String> = match self {
            Self::Single(url) => vec![url],
            Self::Cluster(urls) => urls.iter().collect(),
            Self::Sentinel {
                sentinels, node, ..
            } => sentinels.iter().chain(std::iter::once(node)).collect(),
        };
        for url in urls {
            redis::Client::open(url.as_str()).map_err(|err| {
                format!(
                    "is not a valid Redis URL ({}); it {USAGE}",
                    err.kind_description()
                )
            })?;
        }
        Ok(())
    }
}

trait KindDescription {
    fn kind_description(&self) -> String;
}

impl KindDescription for redis::RedisError {
    /// The error without its detail, which may quote the URL and so the password.
    fn kind_description(&self) -> String {
        format!("{:?}", self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_servers() {
        assert_eq!(
            RedisTarget::parse("redis://redis:6379"),
            Ok(RedisTarget::Single("redis://redis:6379".to_owned()))
        );
        assert!(matches!(
            RedisTarget::parse("rediss://u:p@cache.example:6380/2"),
            Ok(RedisTarget::Single(_))
        ));
        assert!(RedisTarget::parse("redis://redis:6379/x").is_err());
        assert!(RedisTarget::parse("http://redis").is_err());
        assert!(RedisTarget::parse("redis://").is_err());
        assert!(RedisTarget::parse("redis-6379").is_err());
    }

    #[test]
    fn clusters_carry_credentials_to_every_seed() {
        let target = RedisTarget::parse("redis+cluster://app:pw@n1:7000,n2:7001").expect("cluster");
        assert_eq!(
            target,
            RedisTarget::Cluster(vec![
                "redis://app:pw@n1:7000".to_owned(),
                "redis://app:pw@n2:7001".to_owned()
            ])
        );
        assert!(RedisTarget::parse("redis+cluster://n1:7000/1").is_err());
    }

    #[test]
    fn sentinels_name_their_master() {
        let target = RedisTarget::parse("redis+sentinel://:pw@s1:26379,s2:26379/mymaster/1")
            .expect("sentinel");
        match target {
            RedisTarget::Sentinel {
                sentinels,
                master,
                node,
            } => {
                assert_eq!(
                    sentinels,
                    vec!["redis://s1:26379".to_owned(), "redis://s2:26379".to_owned()]
                );
                assert_eq!(master, "mymaster");
                assert_eq!(node, "redis://:pw@sentinel-master/1");
            }
            other => panic!("{other:?}"),
        }
        assert!(RedisTarget::parse("redis+sentinel://s1:26379").is_err());
    }

    #[test]
    fn debug_hides_passwords() {
        let target = RedisTarget::parse("redis://app:hunter2@cache:6379").expect("single");
        assert!(!format!("{target:?}").contains("hunter2"));
    }
}
