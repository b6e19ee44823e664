//! API-key authentication: the score routes take a client key, the admin routes an admin
//! key, sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
//!
//! Keys are kept as SHA-256 digests and a presented key is compared, by its digest, with
//! every configured key in constant time ([`subtle`]), so neither the position of the first
//! differing byte nor which key matched shows in the response time. An admin key is also
//! accepted on the score routes.

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

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, key) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
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
