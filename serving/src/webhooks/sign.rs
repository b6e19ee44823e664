//! Standard Webhooks 1.0 signatures: `webhook-signature` is `v1,` and the base64 of
//! HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the bytes of a
//! `whsec_` secret (base64 after the prefix). During a secret rotation a message carries one
//! signature per secret, separated by spaces, and a receiver accepts any of them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The prefix of a Standard Webhooks secret.
const PREFIX: &str = "whsec_";

/// Fewest key bytes a secret may have (the specification asks for 24 to 64).
const MIN_KEY_BYTES: usize = 24;
/// Most key bytes a secret may have.
const MAX_KEY_BYTES: usize = 64;

/// A signing secret, from its `whsec_...` form.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed: logs and errors show that a secret is there, not what it is.
        f.write_str("Secret(..)")
    }
}

/// A secret that is not a Standard Webhooks secret; the message says why, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(String);

impl Secret {
    /// Parses `whsec_` followed by the base64 of 24 to 64 key bytes.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let Some(encoded) = text.strip_prefix(PREFIX) else {
            return Err(SecretError(format!(
                "a webhook secret starts with {PREFIX:?} followed by base64"
            )));
        };
        let key = STANDARD.decode(encoded).map_err(|e| {
            SecretError(format!(
                "a webhook secret is {PREFIX:?} followed by base64: {e}"
            ))
        })?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError(format!(
                "a webhook secret holds {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, this one {}",
                key.len()
            )));
        }
        Ok(Secret { key })
    }

    /// A new random secret in its `whsec_` form (for the admin route that rotates one).
    pub fn generate() -> std::io::Result<String> {
        let mut key = [0u8; 32];
        getrandom(&mut key)?;
        Ok(format!("{PREFIX}{}", STANDARD.encode(key)))
    }

    /// This secret's `v1,` signature of a message.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            // HMAC takes a key of any length.
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header of a message: one signature per secret, space-separated.
pub fn signature_header(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.signature(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fills `buf` with random bytes from the operating system.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_reference_example() {
        let secret = Secret::parse(SECRET).expect("secret");
        assert_eq!(secret.signature(ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn one_signature_per_secret_during_a_rotation() {
        let old = Secret::parse(SECRET).expect("secret");
        let new = Secret::parse(&Secret::generate().expect("random")).expect("generated");
        let header = signature_header(&[&old, &new], ID, TIMESTAMP, BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], SIGNATURE);
        assert_eq!(parts[1], new.signature(ID, TIMESTAMP, BODY));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn any_change_to_the_message_changes_the_signature() {
        let secret = Secret::parse(SECRET).expect("secret");
        assert_ne!(secret.signature("msg_other", TIMESTAMP, BODY), SIGNATURE);
        assert_ne!(secret.signature(ID, TIMESTAMP + 1, BODY), SIGNATURE);
        assert_ne!(
            secret.signature(ID, TIMESTAMP, br#"{"test": 2432232315}"#),
            SIGNATURE
        );
    }

    /// The README's receiver example, as written there (keep the two the same).
    mod readme_receiver {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        use hmac::{Hmac, KeyInit, Mac};

        /// Whether a message is from leadscore: the endpoint's `whsec_` secret, the three headers,
        /// the body as received, and now (Unix seconds).
        pub fn verify(
            secret: &str,
            id: &str,
            timestamp: &str,
            signatures: &str,
            body: &[u8],
            now: i64,
        ) -> bool {
            let Some(key) = secret
                .strip_prefix("whsec_")
                .and_then(|k| STANDARD.decode(k).ok())
            else {
                return false;
            };
            match timestamp.parse::<i64>() {
                Ok(t) if (now - t).abs() <= 300 => {} // older or newer than 5 minutes: a replay
                _ => return false,
            }
            let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&key) else {
                return false;
            };
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            // Several signatures during a secret rotation: one must match (compared in constant time).
            signatures
                .split(' ')
                .filter_map(|s| s.strip_prefix("v1,"))
                .filter_map(|s| STANDARD.decode(s).ok())
                .any(|s| mac.clone().verify_slice(&s).is_ok())
        }
    }

    #[test]
    fn the_readme_receiver_verifies_what_the_server_signs() {
        use readme_receiver::verify;
        let ts = TIMESTAMP.to_string();
        let now = TIMESTAMP + 10;
        assert!(verify(SECRET, ID, &ts, SIGNATURE, BODY, now));
        let new = Secret::parse(&Secret::generate().expect("random")).expect("generated");
        let old = Secret::parse(SECRET).expect("secret");
        let both = signature_header(&[&new, &old], ID, TIMESTAMP, BODY);
        assert!(
            verify(SECRET, ID, &ts, &both, BODY, now),
            "during a rotation"
        );
        assert!(!verify(SECRET, ID, &ts, SIGNATURE, b"{\"test\": 1}", now));
        assert!(!verify(SECRET, "msg_other", &ts, SIGNATURE, BODY, now));
        assert!(
            !verify(SECRET, ID, &ts, SIGNATURE, BODY, TIMESTAMP + 301),
            "stale"
        );
        let other = Secret::generate().expect("random");
        assert!(!verify(&other, ID, &ts, SIGNATURE, BODY, now));
    }

    #[test]
    fn bad_secrets_are_refused_without_showing_them() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            "whsec_c2hvcnQ=",
        ] {
            let err = Secret::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("webhook secret"), "{err}");
            assert!(
                !err.contains(bad),
                "the secret is not in the message: {err}"
            );
        }
        let secret = Secret::parse(SECRET).expect("secret");
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }
}
