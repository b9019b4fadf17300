//! What [`Rooms`](super::Rooms)(super::Rooms) enforces: its limits, who may join which
//! room, and when TURN credentials go out.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use subtle::ConstantTimeEq;

/// Limits enforced by [`Rooms`](super::Rooms). `Limits::default()` suits a public server.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most peers in one room. Default 8.
    pub max_room_size: usize,
    /// Most rooms one connection may be in at once. Default 4.
    pub max_rooms_per_conn: usize,
    /// Most rooms on the server. Default 10 000.
    pub max_rooms: usize,
    /// Most simultaneous connections. Default 10 000.
    pub max_connections: usize,
    /// Largest text frame accepted, in bytes. Default 64 KiB (an SDP offer is
    /// a few KiB). The WebSocket layer of the server enforces a hard cap above it.
    pub max_message_size: usize,
    /// Sustained messages per second per connection (token bucket refill). Default 20.
    pub rate_per_second: f64,
    /// Token bucket size: messages a connection may send in a burst. Default 50.
    pub burst: f64,
    /// A connection with no activity (message or WebSocket pong) for this long
    /// is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// When TURN credentials (ICE server entries with a username or
    /// credential) are handed out. Default [`CredentialPolicy::Join`].
    pub credential_policy: CredentialPolicy,
    /// TURN credentials handed to one client address (see [`AddrKey`](crate::AddrKey)) per
    /// minute, sustained (token bucket refill). Default 10.
    pub credentials_per_minute: f64,
    /// TURN credentials one client address may get in a burst. Default 20.
    pub credential_burst: f64,
    /// Wrong room tokens one client address may try per minute, sustained,
    /// once its burst is spent. Default 6. Past it, a join from that
    /// address to a room that takes a token is refused (`rate-limited`,
    /// with the wait) without the token being checked, so a right guess
    /// cannot be told apart. Rooms without a token are not affected.
    pub token_guesses_per_minute: f64,
    /// Wrong room tokens one client address may try in a burst. Default 10.
    pub token_guess_burst: f64,
}

/// When the TURN credentials of the ICE servers (entries with a username or
/// credential) go out; entries without credentials (STUN) always go out in
/// the `welcome`. Every policy is also rate limited per client address
/// ([`Limits::credentials_per_minute`], [`Limits::credential_burst`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CredentialPolicy {
    /// In the `welcome` of every connection, before it has joined anything.
    Welcome,
    /// In the `joined` of every successful join: only room members get them.
    #[default]
    Join,
    /// In the `joined` of a join that needed a token (a room's own token or
    /// the global one): only holders of a token get them.
    Token,
    /// Never: clients get the entries without credentials only.
    Never,
}

impl CredentialPolicy {
    /// The policy's name in configuration files: `welcome`, `join`, `token`, `never`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialPolicy::Welcome => "welcome",
            CredentialPolicy::Join => "join",
            CredentialPolicy::Token => "token",
            CredentialPolicy::Never => "never",
        }
    }
}

impl std::str::FromStr for CredentialPolicy {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<CredentialPolicy, &'static str> {
        match s {
            "welcome" => Ok(CredentialPolicy::Welcome),
            "join" => Ok(CredentialPolicy::Join),
            "token" => Ok(CredentialPolicy::Token),
            "never" => Ok(CredentialPolicy::Never),
            _ => Err("expected one of welcome, join, token, never"),
        }
    }
}

impl std::fmt::Display for CredentialPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_room_size: 8,
            max_rooms_per_conn: 4,
            max_rooms: 10_000,
            max_connections: 10_000,
            max_message_size: 64 * 1024,
            rate_per_second: 20.0,
            burst: 50.0,
            idle_timeout: Duration::from_secs(60),
            credential_policy: CredentialPolicy::Join,
            credentials_per_minute: 10.0,
            credential_burst: 20.0,
            token_guesses_per_minute: 6.0,
            token_guess_burst: 10.0,
        }
    }
}

/// Who may join which room.
///
/// A room with its own token needs that token; any other room needs the
/// global token when one is set, and is open otherwise.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// Token for rooms without their own token. `None`: those rooms are open.
    pub global_token: Option<String>,
    /// Per-room tokens.
    pub room_tokens: HashMap<String, String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rooms: BTreeSet<&String> = self.room_tokens.keys().collect();
        f.debug_struct("Auth")
            .field(
                "global_token",
                &self.global_token.as_ref().map(|_| "<redacted>"),
            )
            .field("rooms_with_tokens", &rooms)
            .finish()
    }
}

impl Auth {
    /// Every room is open.
    pub fn open() -> Auth {
        Auth::default()
    }

    /// Every room needs `token` (unless it has its own).
    pub fn global(token: impl Into<String>) -> Auth {
        Auth {
            global_token: Some(token.into()),
            room_tokens: HashMap::new(),
        }
    }

    /// Adds a token for one room.
    pub fn with_room_token(mut self, room: impl Into<String>, token: impl Into<String>) -> Auth {
        self.room_tokens.insert(room.into(), token.into());
        self
    }

    /// Whether joining `room` needs a token.
    pub fn needs_token(&self, room: &str) -> bool {
        self.room_tokens.contains_key(room) || self.global_token.is_some()
    }

    /// Whether any room needs a token.
    pub fn any_token(&self) -> bool {
        self.global_token.is_some() || !self.room_tokens.is_empty()
    }

    pub(super) fn allows(&self, room: &str, token: Option<&str>) -> bool {
        let needed = match self.room_tokens.get(room) {
            Some(t) => t.as_str(),
            None => match &self.global_token {
                Some(t) => t.as_str(),
                None => return true,
            },
        };
        let given = token.unwrap_or("");
        !needed.is_empty() && bool::from(needed.as_bytes().ct_eq(given.as_bytes()))
    }
}
