//! Webhooks: the CRM hears the moment a lead turns hot. Messages are signed as Standard
//! Webhooks 1.0 says ([`sign`]).
//!
//! The outbox, the delivery worker and the subscriptions follow (issue 15); this module has
//! only the signing so far.

pub mod sign;
