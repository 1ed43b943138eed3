//! Verification: from a token, or from a request's headers and query, to a [`Decision`] and the
//! exact response a front end sends. On a cache hit this computes one HMAC and writes nothing to
//! the store; usage, rehashes and exposure reports are queued for the background writer.

use std::sync::Arc;

use keyturn_core::{extract_credential, Decision, HttpResponse, KeyId, KeyRecord, Scopes};

use crate::cache::{CacheStats, Cached};
use crate::{Error, Keyring};

/// The parts of an HTTP request that authentication reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthRequest<'a> {
    /// Every `Authorization` header value.
    pub authorization: &'a [&'a str],
    /// Every value of the configured API key header (`X-API-Key` by default).
    pub api_key: &'a [&'a str],
    /// The decoded query parameters, checked for a misplaced token.
    pub query: &'a [(&'a str, &'a str)],
    /// The client address used for usage records.
    pub client_addr: Option<&'a str>,
}

/// What a front end does with a request.
#[derive(Debug)]
pub enum Authentication {
    /// Serve the request, adding `headers` (the lifecycle headers) to the response.
    Allowed { decision: Decision, headers: Vec<(&'static str, String)> },
    /// Send `response` as it is. `decision` is present when a token was verified.
    Rejected { response: HttpResponse, decision: Option<Decision> },
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
        let Ok(parsed) = self.config.format.parse(token) else {
            tracing::debug!(target: "keyturn::verify", outcome = "invalid", "malformed token");
            return Ok(Decision::invalid(required));
        };
        let key_id = parsed.key_id();
        let Some(record) = self.lookup(key_id).await? else {
            tracing::debug!(target: "keyturn::verify", key_id = %key_id, outcome = "invalid", "unknown key id");
            return Ok(Decision::invalid(required));
        };

        let Some(hash) = self.peppers.hash_with(&record.pepper_id, token) else {
            tracing::error!(
                target: "keyturn::verify", key_id = %key_id, pepper_id = %record.pepper_id,
                "key is hashed under a pepper missing from the ring; add that pepper back to verify it"
            );
            return Ok(Decision::invalid(required));
        };
        if hash != record.hash {
            tracing::debug!(target: "keyturn::verify", key_id = %key_id, outcome = "invalid", "secret mismatch");
            return Ok(Decision::invalid(required));
        }

        let decision = Decision::evaluate(Arc::clone(&record), now, required);
        self.pending.note_usage(key_id, decision.outcome, now, client_addr);
        self.pending.note_observation(key_id, &decision, now, client_addr);
        if record.first_used_at.is_none() && self.pending.note_first_use(key_id) {
            self.flush_now.notify_one();
        }
        if record.pepper_id != *self.peppers.current_id() {
            self.pending.queue_rehash(key_id, &record.pepper_id, token);
        }
        tracing::debug!(target: "keyturn::verify", key_id = %key_id, outcome = decision.code(), "verified");
        Ok(decision)
    }

    /// Authenticates a request: finds its API key, verifies it and builds the response. The
    /// result for the same request at the same instant is identical in every front end.
    pub async fn authenticate(&self, request: &AuthRequest<'_>, required: &Scopes) -> Authentication {
        let responses = &self.config.responses;
        let reject = |response| Authentication::Rejected { response, decision: None };

        if let Some(response) = self.check_query(request.query, request.client_addr) {
            return reject(response);
        }
        let credential = match extract_credential(request.authorization, request.api_key, responses.api_key_header()) {
            Ok(Some(credential)) => credential,
            Ok(None) => return reject(responses.missing_credentials()),
            Err(error) => return reject(responses.invalid_request(&error.to_string())),
        };

        match self.verify(credential.as_str(), required, request.client_addr).await {
            Ok(decision) => match responses.rejection(&decision) {
                None => Authentication::Allowed { headers: decision.lifecycle_headers(), decision },
                Some(response) => Authentication::Rejected { response, decision: Some(decision) },
            },
            Err(error) => {
                tracing::warn!(target: "keyturn::verify", error = %error, "store unavailable during verification");
                reject(responses.store_unavailable())
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

    /// Returns the verification cache's hit and miss counts since this keyring was created, and
    /// whether the cache may serve lookups now. Malformed tokens are rejected before the cache and
    /// count as neither.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Finds a key record, from the cache while it is fresh, else from the store. Concurrent store
    /// reads are bounded so that a flood of unknown ids cannot overload the store. Counts a cache
    /// hit when the cache returns the result, and a cache miss before reading the store.
    async fn lookup(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, Error> {
        match self.cache.lookup(key_id) {
            Cached::Known(record) => {
                self.cache.count_hit();
                return Ok(Some(record));
            }
            Cached::Unknown => {
                self.cache.count_hit();
                return Ok(None);
            }
            Cached::Miss => {}
        }
        let timeout = self.config.lookup_timeout;
        tokio::time::timeout(timeout, self.read_through(key_id)).await.unwrap_or_else(|_| {
            Err(Error::StoreUnavailable(format!("reading key {key_id} took longer than {}ms", timeout.as_millis())))
        })
    }

    /// Reads a key record from the store and caches the answer.
    async fn read_through(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, Error> {
        let _permit = self.lookups.acquire().await.map_err(|_| Error::StoreUnavailable("keyring closed".into()))?;
        // Another verification may have loaded the record while this one waited for the permit.
        if let Cached::Known(record) = self.cache.lookup(key_id) {
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
