//! The names of keepalive's keys and channel in Redis, written once: the store, its scripts'
//! callers, the tests and the benchmark all name keys through [`Keys`].
//!
//! | name | holds |
//! |---|---|
//! | `{prefix}{<id>}` | a session (the layout of [`super::value`]) |
//! | `{prefix}{<id>}:ended` | the mark a logout leaves until the session's absolute expiry |
//! | `{prefix}user:{<user>}` | the ids of a user's sessions (a sorted set) |
//! | `{prefix}user:{<user>}:ended` | when the user was last logged out everywhere (Unix ms) |
//! | `{prefix}ended` | the channel every logout is announced on (the id as the message; `user <ms> <user>` for "log out everywhere") |
//! | `{prefix}logouts` | a stream that records each announcement (field `m`: the channel's message), capped, read by an instance that was not listening |
//! | `{prefix}epoch` | the epoch: a token whose loss shows Redis lost its data (in a cluster, `{prefix}epoch:{<tag>}`, one per master) |
//!
//! The id sits in braces, a cluster hash tag, so a session and its mark share a slot.

use crate::session::SessionId;

/// The key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix` (`KEEPALIVE_REDIS_PREFIX`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of session `id`.
    pub fn session(&self, id: &SessionId) -> String {
        self.session_named(&id.to_string())
    }

    /// The key of the session whose id is written `id` (as in its cookie).
    pub fn session_named(&self, id: &str) -> String {
        format!("{}{{{id}}}", self.prefix)
    }

    /// The key of session `id`'s logout mark.
    pub fn marker(&self, id: &SessionId) -> String {
        format!("{}{{{id}}}:ended", self.prefix)
    }

    /// The key of `user`'s set of sessions.
    pub fn user(&self, user: &str) -> String {
        format!("{}user:{{{user}}}", self.prefix)
    }

    /// The key of the time `user` was last logged out everywhere: it shares the hash tag of
    /// the user's set, so one script reads both.
    pub fn user_ended(&self, user: &str) -> String {
        format!("{}user:{{{user}}}:ended", self.prefix)
    }

    /// Whether `user`'s set and "log out everywhere" time share a cluster slot: they do
    /// unless the set's name holds an empty hash tag (`{}`, a user id that begins with `}`
    /// right after the prefix's `user:{`), when Redis hashes each whole name instead.
    pub fn user_keys_share_slot(&self, user: &str) -> bool {
        let set = self.user(user);
        set.find('{')
            .is_none_or(|open| !set[open + 1..].starts_with('}'))
    }

    /// The channel logouts are announced on.
    pub fn logout_channel(&self) -> String {
        format!("{}ended", self.prefix)
    }

    /// The stream that records each logout announced on the channel.
    pub fn logout_stream(&self) -> String {
        format!("{}logouts", self.prefix)
    }

    /// The epoch key (in a cluster, the base of one per master).
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// The key an instance keeps while it puts back sessions Redis lost (see
    /// `Link::announce_write_back`).
    pub fn write_back(&self) -> String {
        format!("{}writing-back", self.prefix)
    }

    /// The pattern (for `SCAN` or `KEYS`) that matches every session and mark.
    pub fn sessions_pattern(&self) -> String {
        format!("{}{{*}}*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_and_its_mark_share_a_hash_tag() {
        let keys = Keys::new("keepalive:");
        let id = SessionId::from_bytes([7; 16]);
        assert_eq!(keys.session(&id), format!("keepalive:{{{id}}}"));
        assert_eq!(keys.marker(&id), format!("keepalive:{{{id}}}:ended"));
        assert_eq!(keys.session_named(&id.to_string()), keys.session(&id));
        assert_eq!(keys.user("ana@x"), "keepalive:user:{ana@x}");
        assert_eq!(keys.user_ended("ana@x"), "keepalive:user:{ana@x}:ended");
        assert!(keys.user_keys_share_slot("ana@x"));
        assert!(
            keys.user_keys_share_slot("a}b"),
            "tag `a`, the same in both"
        );
        assert!(!keys.user_keys_share_slot("}ana"), "an empty tag");
        assert!(
            Keys::new("app{1}:").user_keys_share_slot("}ana"),
            "the prefix's tag"
        );
        assert_eq!(keys.logout_channel(), "keepalive:ended");
        assert_eq!(keys.logout_stream(), "keepalive:logouts");
        assert_eq!(keys.sessions_pattern(), "keepalive:{*}*");
        assert_eq!(keys.epoch(), "keepalive:epoch");
    }
}
