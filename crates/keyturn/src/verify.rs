//! Verification: from a token, or from a request's headers and query, to a [`Decision`] and the
//! exact response a front end sends. On a cache hit this computes one HMAC and writes nothing to
//! the store; usage, rehashes, exposure reports and the guard's audit events are queued for the
//! background writer. A failed verification also passes through the brute-force guard, which
//! may turn its rejection into 429. An allowed one never touches the guard.

use std::sync::Arc;

use keyturn_core::{
    extract_credential, Actor, AuditEventType, Credential, Decision, Duration, HttpResponse, Instant, KeyId, KeyRecord,
    NewAuditEvent, Outcome, Scopes,
};
use serde_json::json;

use crate::cache::{CacheStats, Cached};
use crate::guard::{Block, Verdict};
use crate::keyring::millis;
use crate::usage::UsageCell;
use crate::{Error, GuardStats, Keyring};

/// The parts of an HTTP request that authentication reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthRequest<'a> {
    /// Every `Authorization` header value.
    pub authorization: &'a [&'a str],
    /// Every value of the configured API key header (`X-API-Key` by default).
    pub api_key: &'a [&'a str],
    /// The decoded query parameters, checked for a misplaced token.
    pub query: &'a [(&'a str, &'a str)],
    /// The client address, for usage records and the brute-force guard, as
    /// [`Keyring::client_addr`] returns it. Failures of a request without one are not counted.
    pub client_addr: Option<&'a str>,
}

/// What a front end does with a request.
#[derive(Debug)]
pub enum Authentication {
    /// Serve the request, adding `headers` (the lifecycle headers) to the response.
    Allowed { decision: Decision, headers: Vec<(&'static str, String)> },
    /// Send `response` as it is. `decision` is present when the response is the rejection of a
    /// verified token. A throttled request (429) carries none, since its response names no key.
    Rejected { response: HttpResponse, decision: Option<Decision> },
}

/// A verification as far as the cache can take it.
enum FromCache {
    Decided(Decision),
    /// The key id is neither cached nor remembered as unknown, or the cache is stale or off.
    NeedsStore(KeyId),
}

impl Authentication {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Authentication::Allowed { .. })
    }
}

impl Keyring {
    /// Verifies a token against the scopes a route requires. Returns `Err` only when the store
    /// is needed and unreachable: never a rejection for a store fault.
    pub async fn verify(&self, token: &str, required: &Scopes, client_addr: Option<&str>) -> Result<Decision, Error> {
        let now = self.clock.now();
        let key_id = match self.verify_from_cache(token, required, client_addr, now) {
            FromCache::Decided(decision) => return Ok(decision),
            FromCache::NeedsStore(key_id) => key_id,
        };
        let Some(record) = self.read_through(&key_id).await? else {
            tracing::debug!(target: "keyturn::verify", key_id = %key_id, outcome = "invalid", "unknown key id");
            return Ok(Decision::invalid(required));
        };
        Ok(self.check_secret(token, record, None, required, client_addr, now))
    }

    /// Verifies a token like [`Keyring::verify`] when the cache can decide without the store:
    /// a malformed token, a cached key or a remembered unknown key id. Returns `None` when the
    /// verification needs a store read; then call [`Keyring::verify`]. It never awaits and
    /// takes only short in-memory locks, so a caller may run it on its own thread while holding
    /// a lock such as Python's GIL.
    pub fn verify_cached(&self, token: &str, required: &Scopes, client_addr: Option<&str>) -> Option<Decision> {
        match self.verify_from_cache(token, required, client_addr, self.clock.now()) {
            FromCache::Decided(decision) => Some(decision),
            FromCache::NeedsStore(_) => None,
        }
    }

    fn verify_from_cache(&self, token: &str, required: &Scopes, client_addr: Option<&str>, now: Instant) -> FromCache {
        let Ok(key_id) = self.config.format.parse_key_id(token) else {
            tracing::debug!(target: "keyturn::verify", outcome = "invalid", "malformed token");
            return FromCache::Decided(Decision::invalid(required));
        };
        let (record, usage) = match self.cache.lookup(key_id) {
            Cached::Known(record, usage) => (record, usage),
            Cached::Unknown => {
                self.cache.count_hit();
                tracing::debug!(target: "keyturn::verify", key_id = %key_id, outcome = "invalid", "unknown key id");
                return FromCache::Decided(Decision::invalid(required));
            }
            Cached::Miss => {
                // The parser accepted the key id, so it is well-formed; the fallback only keeps
                // this total.
                return match KeyId::parse(key_id) {
                    Ok(key_id) => FromCache::NeedsStore(key_id),
                    Err(_) => FromCache::Decided(Decision::invalid(required)),
                };
            }
        };
        self.cache.count_hit();
        FromCache::Decided(self.check_secret(token, record, usage, required, client_addr, now))
    }

    /// Compares the token's HMAC with the record's hash, evaluates the key's state and queues
    /// the usage counters and observed lifecycle events of a matching token.
    fn check_secret(
        &self,
        token: &str,
        record: Arc<KeyRecord>,
        usage: Option<Arc<UsageCell>>,
        required: &Scopes,
        client_addr: Option<&str>,
        now: Instant,
    ) -> Decision {
        let key_id = &record.key_id;
        let Some(hash) = self.peppers.hash_with(&record.pepper_id, token) else {
            tracing::error!(
                target: "keyturn::verify", key_id = %key_id, pepper_id = %record.pepper_id,
                "key is hashed under a pepper missing from the ring; add that pepper back to verify it"
            );
            return Decision::invalid(required);
        };
        if hash != record.hash {
            tracing::debug!(target: "keyturn::verify", key_id = %key_id, outcome = "invalid", "secret mismatch");
            return Decision::invalid(required);
        }

        let decision = Decision::evaluate(Arc::clone(&record), now, required);
        if self.config.track_usage {
            // A key served from the cache counts in its entry's atomic counters. A key read from
            // the store, because the cache is off, stale or missed, counts in the mutex's map.
            let first_use = match &usage {
                Some(cell) => {
                    self.pending.cells.note(cell, decision.outcome, now, client_addr);
                    record.first_used_at.is_none() && cell.note_first_use()
                }
                None => {
                    self.pending.note_usage(key_id, decision.outcome, now, client_addr);
                    record.first_used_at.is_none()
                }
            };
            if first_use && self.pending.note_first_use(key_id) {
                self.flush_now.notify_one();
            }
        }
        self.pending.note_observation(key_id, &decision, now, client_addr);
        if record.pepper_id != *self.peppers.current_id() {
            self.pending.queue_rehash(key_id, &record.pepper_id, token);
        }
        tracing::debug!(target: "keyturn::verify", key_id = %key_id, outcome = decision.code(), "verified");
        decision
    }

    /// Authenticates a request: finds its API key, verifies it and builds the response. The
    /// result for the same request at the same instant is identical in every front end.
    pub async fn authenticate(&self, request: &AuthRequest<'_>, required: &Scopes) -> Authentication {
        let credential = match self.find_credential(request) {
            Ok(credential) => credential,
            Err(response) => return Authentication::Rejected { response, decision: None },
        };
        let verified = self.verify(credential.as_str(), required, request.client_addr).await;
        self.respond(verified, request.client_addr)
    }

    /// Authenticates a request like [`Keyring::authenticate`] when that needs no store read, and
    /// returns `None` when it does; then call [`Keyring::authenticate`]. A request with a token
    /// in its query never reaches the store, so calling both queues its exposure once. Like
    /// [`Keyring::verify_cached`], it never awaits.
    pub fn authenticate_cached(&self, request: &AuthRequest<'_>, required: &Scopes) -> Option<Authentication> {
        let credential = match self.find_credential(request) {
            Ok(credential) => credential,
            Err(response) => return Some(Authentication::Rejected { response, decision: None }),
        };
        let decision = self.verify_cached(credential.as_str(), required, request.client_addr)?;
        Some(self.respond(Ok(decision), request.client_addr))
    }

    /// Returns the request's credential, or the rejection of a request with a token in its
    /// query, without a credential or with two.
    fn find_credential(&self, request: &AuthRequest<'_>) -> Result<Credential, HttpResponse> {
        let responses = &self.config.responses;
        if let Some(response) = self.check_query(request.query, request.client_addr) {
            return Err(response);
        }
        match extract_credential(request.authorization, request.api_key, responses.api_key_header()) {
            Ok(Some(credential)) => Ok(credential),
            Ok(None) => Err(responses.missing_credentials()),
            Err(error) => Err(responses.invalid_request(&error.to_string())),
        }
    }

    /// Builds the response to a verification, after counting a failure with the guard.
    fn respond(&self, verified: Result<Decision, Error>, client_addr: Option<&str>) -> Authentication {
        let responses = &self.config.responses;
        match verified {
            Ok(decision) => {
                // A throttled failure gets only the 429, so its usual rejection is never built.
                if let Some(throttled) = self.guard_failure(decision.outcome, client_addr) {
                    return Authentication::Rejected { response: throttled, decision: None };
                }
                match responses.rejection(&decision) {
                    None => Authentication::Allowed { headers: decision.lifecycle_headers(), decision },
                    Some(response) => Authentication::Rejected { response, decision: Some(decision) },
                }
            }
            Err(error) => {
                tracing::warn!(target: "keyturn::verify", error = %error, "store unavailable during verification");
                Authentication::Rejected { response: responses.store_unavailable(), decision: None }
            }
        }
    }

    /// Rejects a request whose query string carries a token, with 400 `invalid_request`, and
    /// queues an audit event for the exposed key. Front ends call this for every request, public
    /// routes and unknown paths included, because a URL ends up in proxy and access logs whatever
    /// it names. Returns `None` when the query carries no token.
    pub fn check_query(&self, query: &[(&str, &str)], client_addr: Option<&str>) -> Option<HttpResponse> {
        let (parameter, value) = self.config.credentials.find_token_in_query(&self.config.format, query)?;
        self.pending.queue_exposure(parameter, value, client_addr);
        let error = keyturn_core::RequestError::TokenInQuery { parameter: parameter.to_owned() };
        tracing::info!(target: "keyturn::verify", parameter, "rejected token in url query");
        Some(self.config.responses.invalid_request(&error.to_string()))
    }

    /// Returns the client address of a request from `peer` that carries the `X-Forwarded-For`
    /// values `forwarded_for`: `peer` itself unless it is one of the configured trusted proxies,
    /// else the right-most forwarded address that is not (see [`keyturn_core::TrustedProxies`]).
    pub fn client_addr(&self, peer: &str, forwarded_for: &[&str]) -> String {
        self.config.trusted_proxies.client_addr(peer, forwarded_for)
    }

    /// Returns the brute-force guard's counters and the number of client addresses blocked now,
    /// or `None` when the guard is off. Counting the blocked addresses reads every tracked one.
    pub fn guard_stats(&self) -> Option<GuardStats> {
        self.guard.as_ref().map(|guard| guard.stats(self.clock.now()))
    }

    /// Returns the verification cache's hit and miss counts since this keyring was created, and
    /// whether the cache may serve lookups now. Malformed tokens are rejected before the cache and
    /// count as neither.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Counts a failed verification from `client_addr` with the guard and returns the 429
    /// response when the address is blocked. Only outcomes that mean the token failed count, and
    /// each of them is a rejection. `insufficient_scope` means a valid key, so it does not count.
    /// Starting a block queues its audit event.
    fn guard_failure(&self, outcome: Outcome, client_addr: Option<&str>) -> Option<HttpResponse> {
        let failed = matches!(outcome, Outcome::Invalid | Outcome::Revoked | Outcome::Rotated | Outcome::Expired);
        let guard = self.guard.as_ref().filter(|_| failed)?;
        let client_addr = client_addr?;

        let now = self.clock.now();
        let Verdict::Throttled { retry_after_secs, block } = guard.record_failure(client_addr, now) else {
            return None;
        };
        if let Some(block) = block {
            self.report_block(client_addr, &block, now);
        }
        tracing::debug!(target: "keyturn::guard", client_addr, retry_after_secs, "failed verification throttled");
        Some(self.config.responses.too_many_requests(retry_after_secs))
    }

    /// Queues the audit event of a block that started at `now` and logs it. The row names the client address and the
    /// limits, never a token, and has no key id because the failures may name many keys. When
    /// the queue is full, neither is written here, and the writer logs how many were dropped.
    fn report_block(&self, client_addr: &str, block: &Block, now: Instant) {
        let Some(guard) = self.guard.as_ref() else { return };
        let limits = guard.config();
        let window = Duration::from_millis(millis(limits.window()));
        let cooldown = Duration::from_millis(millis(limits.cooldown()));

        let mut event =
            NewAuditEvent::new(AuditEventType::AuthnTokenFailMax, now, None, Actor::System).with_details(json!({
                "counted_as": block.client.to_string(),
                "failures": block.failures,
                "max_failures": limits.max_failures(),
                "window": window.to_string(),
                "first_failure_at": block.first_failure_at.to_rfc3339(),
                "cooldown": cooldown.to_string(),
                "blocked_until": block.blocked_until.to_rfc3339(),
            }));
        event.client_addr = Some(client_addr.to_owned());
        if !self.pending.queue_guard_event(event) {
            return;
        }
        self.flush_now.notify_one();
        tracing::warn!(
            target: "keyturn::guard", client_addr, counted_as = %block.client, failures = block.failures,
            max_failures = limits.max_failures(), window = %window, blocked_until = %block.blocked_until,
            "client blocked after too many failed verifications"
        );
    }

    /// Reads a key record from the store, within the lookup timeout, and caches the result.
    /// Concurrent store reads are bounded so that a flood of unknown ids cannot overload the
    /// store. Counts a cache miss before reading the store.
    async fn read_through(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, Error> {
        let timeout = self.config.lookup_timeout;
        tokio::time::timeout(timeout, self.read_store(key_id)).await.unwrap_or_else(|_| {
            Err(Error::StoreUnavailable(format!("reading key {key_id} took longer than {}ms", timeout.as_millis())))
        })
    }

    async fn read_store(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, Error> {
        let _permit = self.lookups.acquire().await.map_err(|_| Error::StoreUnavailable("keyring closed".into()))?;
        // Another verification may have loaded the record while this one waited for the permit.
        if let Cached::Known(record, _) = self.cache.lookup(key_id.as_str()) {
            self.cache.count_hit();
            return Ok(Some(record));
        }

        self.cache.count_miss();
        let generation = self.cache.generation();
        let record = self.store.get_key(key_id).await?.map(Arc::new);
        self.cache.insert(key_id.clone(), record.clone(), generation);
        Ok(record)
    }
}
