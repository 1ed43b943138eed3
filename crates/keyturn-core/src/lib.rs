//! The pure domain core of keyturn: the token format, the pepper ring, policies, key records and
//! their state at an instant, the migration status of a rotated key, verification outcomes,
//! problem responses, audit event types and the choice of a request's client address behind
//! trusted proxies.
//!
//! Nothing in this crate performs I/O, spawns threads or awaits: every time-dependent decision
//! takes its instant from an injected [`Clock`], and randomness comes from a caller-supplied
//! CSPRNG. Storage lives in `keyturn-store` and the service layer in `keyturn`.
//!
//! No type in this crate prints a token, a secret or a pepper through `Debug` or `Display`, and
//! no error message contains one: errors name the key id or the rule that was broken instead.

pub mod audit;
pub mod chain;
pub mod client_addr;
pub mod credentials;
mod error;
pub mod key;
pub mod migration;
pub mod named_policy;
pub mod outcome;
pub mod pepper;
pub mod policy;
pub mod problem;
pub mod schedule;
pub mod scope;
pub mod secret;
pub mod self_rotation;
pub mod time;
pub mod token;
pub mod webhook;

pub use crate::audit::{Actor, AuditEvent, AuditEventType, NewAuditEvent};
pub use crate::chain::{AuditKey, ChainBreak, ChainSummary, ChainVerifier, Checkpoint};
pub use crate::client_addr::TrustedProxies;
pub use crate::credentials::{extract_credential, Credential, CredentialConfig, RequestError};
pub use crate::error::{quote_value, Error};
pub use crate::key::{KeyRecord, KeyState};
pub use crate::migration::MigrationStatus;
pub use crate::named_policy::{FieldChange, NamedPolicy, PolicyName, DEFAULT_POLICY};
pub use crate::outcome::{Decision, Outcome};
pub use crate::pepper::{PepperId, PepperRing, TokenHash};
pub use crate::policy::{Expiry, Policy, DEFAULT_MAX_CHAIN_LIFETIME};
pub use crate::problem::{HttpResponse, ProblemCode, ResponseConfig};
pub use crate::schedule::TimedEvent;
pub use crate::scope::{Scope, Scopes};
pub use crate::secret::{Pepper, Token};
pub use crate::self_rotation::{SelfRotationDenied, SelfRotationPlan};
pub use crate::time::{Clock, Duration, Instant, ManualClock, SystemClock};
pub use crate::token::{KeyId, ParsedToken, TokenFormat};
