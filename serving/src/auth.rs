//! API-key authentication: the score routes take a client key, the admin routes an admin
//! key, sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
//!
//! Keys are kept as SHA-256 digests and a presented key is compared, by its digest, with
//! every configured key in constant time ([`subtle`]), so neither the position of the first
//! differing byte nor which key matched shows in the response time. An admin key is also
//! accepted on the score routes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Which routes a key opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Scoring and model listing.
    Client,
    /// Reload and the rest of `/admin`.
    Admin,
}

type KeyDigest = [u8; 32];

/// The configured keys (digests only), or authentication turned off.
#[derive(Clone)]
pub struct KeySet {
    client: Vec<KeyDigest>,
    admin: Vec<KeyDigest>,
    enabled: bool,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("client_keys", &self.client.len())
            .field("admin_keys", &self.admin.len())
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// The shortest key accepted in the configuration.
pub const MIN_KEY_LEN: usize = 16;

impl KeySet {
    /// Client and admin keys. Each key must have at least [`MIN_KEY_LEN`] characters and no
    /// whitespace; at least one admin key is needed (reload must be protectable), client
    /// keys may be none (then only admin keys score).
    pub fn new(client: &[String], admin: &[String]) -> Result<Self, String> {
        if admin.is_empty() {
            return Err("no admin key configured".into());
        }
        for (what, keys) in [("client", client), ("admin", admin)] {
            for (i, key) in keys.iter().enumerate() {
                if key.chars().count() < MIN_KEY_LEN || key.chars().any(char::is_whitespace) {
                    return Err(format!(
                        "{what} key {} must have at least {MIN_KEY_LEN} characters and no whitespace",
                        i + 1
                    ));
                }
            }
        }
        Ok(KeySet {
            client: client.iter().map(|k| digest(k)).collect(),
            admin: admin.iter().map(|k| digest(k)).collect(),
            enabled: true,
        })
    }

    /// No authentication at all (`--no-auth`, for a server only reachable by its caller).
    pub fn disabled() -> Self {
        KeySet {
            client: Vec::new(),
            admin: Vec::new(),
            enabled: false,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Checks the request's key for `scope`.
    pub fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(presented) = presented_key(headers) else {
            return Err(ApiError::Unauthorized {
                message:
                    "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
                        .into(),
            });
        };
        let presented = digest(presented);
        let admin = matches_any(&self.admin, &presented);
        let client = matches_any(&self.client, &presented);
        let ok = match scope {
            Scope::Admin => admin,
            Scope::Client => admin | client,
        };
        if bool::from(ok) {
            Ok(())
        } else if scope == Scope::Admin && bool::from(client) {
            Err(ApiError::Forbidden {
                message: "this route needs an admin key".into(),
            })
        } else {
            Err(ApiError::Unauthorized {
                message: "invalid API key".into(),
            })
        }
    }
}

fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// Compares with every key, without stopping at a match.
fn matches_any(keys: &[KeyDigest], presented: &KeyDigest) -> subtle::Choice {
    keys.iter().fold(subtle::Choice::from(0), |found, key| {
        found | key.ct_eq(presented)
    })
}

/// The key of `Authorization: Bearer`, else of `X-API-Key`. An `Authorization` header of
/// another scheme (a proxy's `Basic` credentials, say) is not ours and hides nothing.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|value| {
            let (scheme, key) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
    bearer.or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })
}

/// Slows down key guessing: an address that sent `max_failures` requests with a missing or
/// wrong key within `window` is answered 429 (with `Retry-After`) until the window that
/// began with its first failure ends, whatever key it sends meanwhile.
///
/// The request path pays a clock read and one atomic load unless some address is held back
/// right now; only then is the table locked. It holds at most
/// [`AuthThrottle::MAX_ADDRESSES`] addresses: past that, expired entries are dropped, and if
/// it is still full the oldest windows go first.
#[derive(Debug)]
pub struct AuthThrottle {
    max_failures: u32,
    window: Duration,
    /// Milliseconds after `epoch` until which some address may be held back.
    held_until_ms: AtomicU64,
    epoch: Instant,
    table: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthThrottle {
    /// Most addresses tracked at once.
    pub const MAX_ADDRESSES: usize = 65_536;

    /// `max_failures` of 0 turns the throttle off.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        AuthThrottle {
            max_failures,
            window,
            held_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err` with the seconds to wait when `addr` is held back.
    pub fn admit(&self, addr: IpAddr) -> Result<(), ApiError> {
        if self.max_failures == 0
            || self.since_epoch_ms(Instant::now()) >= self.held_until_ms.load(Ordering::Relaxed)
        {
            return Ok(());
        }
        let table = self.table();
        match table.get(&addr) {
            Some(&(start, failures)) if failures >= self.max_failures => {
                let left = self.window.saturating_sub(start.elapsed());
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(ApiError::TooManyRequests {
                        retry_after_secs: left.as_secs().max(1),
                    })
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a request from `addr` whose key was missing or wrong.
    pub fn failed(&self, addr: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        let mut table = self.table();
        if table.len() >= Self::MAX_ADDRESSES && !table.contains_key(&addr) {
            table.retain(|_, (start, _)| start.elapsed() < self.window);
            if table.len() >= Self::MAX_ADDRESSES {
                let mut starts: Vec<Instant> = table.values().map(|(s, _)| *s).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                table.retain(|_, (start, _)| *start > cut);
            }
        }
        let entry = table.entry(addr).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 >= self.max_failures {
            let until = self.since_epoch_ms(entry.0 + self.window);
            self.held_until_ms.fetch_max(until, Ordering::Relaxed);
        }
    }

    fn since_epoch_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::error::ErrorKind;

    const CLIENT: &str = "client-key-0123456789";
    const ADMIN: &str = "admin-key-0123456789";

    fn keys() -> KeySet {
        KeySet::new(&[CLIENT.into()], &[ADMIN.into()]).unwrap()
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn keys_open_their_scope() {
        let k = keys();
        let bearer = |key: &str| headers("authorization", &format!("Bearer {key}"));
        assert!(k.check(&bearer(CLIENT), Scope::Client).is_ok());
        assert!(
            k.check(&headers("x-api-key", CLIENT), Scope::Client)
                .is_ok()
        );
        assert!(k.check(&bearer(ADMIN), Scope::Client).is_ok());
        assert!(k.check(&bearer(ADMIN), Scope::Admin).is_ok());
        assert_eq!(
            k.check(&bearer(CLIENT), Scope::Admin).unwrap_err().kind(),
            ErrorKind::Forbidden
        );
        for bad in [
            HeaderMap::new(),
            bearer("client-key-012345678"),
            bearer(&format!("{CLIENT}x")),
            headers("authorization", &format!("Basic {CLIENT}")),
        ] {
            assert_eq!(
                k.check(&bad, Scope::Client).unwrap_err().kind(),
                ErrorKind::Unauthorized,
                "{bad:?}"
            );
        }
        assert!(
            KeySet::disabled()
                .check(&HeaderMap::new(), Scope::Admin)
                .is_ok()
        );
    }

    #[test]
    fn a_foreign_authorization_scheme_does_not_hide_the_api_key_header() {
        let k = keys();
        let mut h = headers("authorization", "Basic dXNlcjpwYXNz");
        h.insert("x-api-key", HeaderValue::from_static(CLIENT));
        assert!(k.check(&h, Scope::Client).is_ok());
        // A Bearer key is the one presented, even beside another X-API-Key.
        let mut h = headers("authorization", "Bearer wrong-key-0123456789");
        h.insert("x-api-key", HeaderValue::from_static(CLIENT));
        assert_eq!(
            k.check(&h, Scope::Client).unwrap_err().kind(),
            ErrorKind::Unauthorized
        );
    }

    #[test]
    fn repeated_wrong_keys_are_held_back_for_the_window() {
        let throttle = AuthThrottle::new(3, Duration::from_millis(300));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(throttle.admit(a).is_ok());
            throttle.failed(a);
        }
        let err = throttle.admit(a).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooManyRequests);
        assert!(
            throttle.admit(b).is_ok(),
            "another address is not held back"
        );
        std::thread::sleep(Duration::from_millis(350));
        assert!(throttle.admit(a).is_ok(), "the window ended");
        throttle.failed(a);
        assert!(throttle.admit(a).is_ok(), "a new window counts afresh");
        let off = AuthThrottle::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            off.failed(a);
        }
        assert!(off.admit(a).is_ok());
    }

    #[test]
    fn weak_key_configurations_are_refused() {
        assert!(
            KeySet::new(&[CLIENT.into()], &[])
                .unwrap_err()
                .contains("no admin key")
        );
        let err = KeySet::new(&["short".into()], &[ADMIN.into()]).unwrap_err();
        assert!(err.contains("client key 1 must have at least 16"), "{err}");
        let err = KeySet::new(&[], &["admin key with spaces!!".into()]).unwrap_err();
        assert!(err.contains("admin key 1"), "{err}");
    }
}
