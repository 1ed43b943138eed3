//! Named policies in the service layer: resolving the policy a new key is created under, and
//! planning and applying a set of policy changes. A plan compares the wanted policies with the
//! stored ones field by field, so `--dry-run` can print it and apply writes exactly what it
//! printed, in one store transaction with one `authz_policy_changed` event per changed policy.

use keyturn_core::{AuditEventType, FieldChange, NamedPolicy, NewAuditEvent, PolicyName};
use keyturn_store::{PolicyChange, PolicyUpdate};
use serde_json::{json, Value};

use crate::{Caller, Error, Keyring};

/// The changes that applying a set of policies makes.
#[derive(Debug, Clone, Default)]
pub struct PolicyPlan {
    pub added: Vec<PlannedPolicy>,
    pub changed: Vec<PlannedPolicy>,
    pub removed: Vec<PlannedPolicy>,
    pub unchanged: Vec<PolicyName>,
    /// Whether changed policies are written into their live keys.
    pub apply_to_existing: bool,
}

/// One policy that a plan adds, changes or removes.
#[derive(Debug, Clone)]
pub struct PlannedPolicy {
    pub name: PolicyName,
    pub old: Option<NamedPolicy>,
    pub new: Option<NamedPolicy>,
    /// The fields that differ, for a changed policy.
    pub fields: Vec<FieldChange>,
    /// The live keys that receive new instants: nonzero only for a changed policy applied to
    /// existing keys. After [`Keyring::apply_policies`], the number the store updated.
    pub keys_affected: u64,
}

impl PolicyPlan {
    /// Returns whether applying the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl Keyring {
    /// Returns the policy `name`: the stored version, or for `default` the built-in policy when
    /// the store holds none.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPolicy`] when no such policy exists.
    pub async fn policy(&self, name: &PolicyName) -> Result<NamedPolicy, Error> {
        match self.store.get_policy(name).await? {
            Some(policy) => Ok(policy),
            None if name.is_default() => Ok(self.builtin_default_policy()),
            None => Err(Error::UnknownPolicy(name.to_string())),
        }
    }

    /// Returns the policy that rotations of a key created under `name` follow: the stored
    /// version, or the built-in `default` when that policy was removed since.
    pub(crate) async fn rotation_policy(&self, name: &PolicyName) -> Result<NamedPolicy, Error> {
        let stored = self.store.get_policy(name).await?;
        Ok(stored.unwrap_or_else(|| self.builtin_default_policy()))
    }

    /// Lists the policies by name, with the built-in `default` unless the store contains a version.
    pub async fn policies(&self) -> Result<Vec<NamedPolicy>, Error> {
        let mut policies = self.store.list_policies().await?;
        if !policies.iter().any(|policy| policy.name.is_default()) {
            policies.push(self.builtin_default_policy());
            policies.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(policies)
    }

    /// Returns the built-in `default` policy: the keyring's configured policy.
    pub fn builtin_default_policy(&self) -> NamedPolicy {
        NamedPolicy::from_policy(PolicyName::default_name(), &self.config.policy)
    }

    /// Compares `wanted` with the stored policies. A stored policy missing from `wanted` is
    /// removed, except a stored `default`, which stays as it is. A first stored version of
    /// `default` is planned as a change from the built-in one, so `apply_to_existing` reaches the
    /// keys that follow it.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when a policy breaks a rule, [`Error::InvalidInput`] when a name
    /// appears twice, and [`keyturn_store::StoreError::PolicyInUse`] when a policy to remove is
    /// still referenced by a key that is not revoked.
    pub async fn plan_policies(&self, wanted: &[NamedPolicy], apply_to_existing: bool) -> Result<PolicyPlan, Error> {
        for (index, policy) in wanted.iter().enumerate() {
            policy.validate()?;
            if wanted[..index].iter().any(|other| other.name == policy.name) {
                return Err(Error::InvalidInput {
                    field: "policies",
                    reason: format!("policy {} is declared twice; declare each name once", policy.name),
                });
            }
        }
        let stored = self.store.list_policies().await?;
        let now = self.clock.now();

        let mut plan = PolicyPlan { apply_to_existing, ..PolicyPlan::default() };
        for policy in wanted {
            let old = stored.iter().find(|stored| stored.name == policy.name);
            self.plan_one(&mut plan, old, policy, now).await?;
        }
        let missing = stored.iter().filter(|old| !wanted.iter().any(|policy| policy.name == old.name));
        for old in missing.filter(|old| !old.name.is_default()) {
            // Refused here as the store would refuse it, so that a dry run shows the refusal too.
            let keys = self.store.count_policy_keys(&old.name, now).await?.not_revoked;
            if keys > 0 {
                return Err(keyturn_store::StoreError::PolicyInUse { name: old.name.to_string(), keys }.into());
            }
            plan.removed.push(PlannedPolicy {
                name: old.name.clone(),
                old: Some(old.clone()),
                new: None,
                fields: Vec::new(),
                keys_affected: 0,
            });
        }
        Ok(plan)
    }

    /// Plans storing one policy, leaving every other policy as it is.
    pub async fn plan_policy(&self, policy: &NamedPolicy, apply_to_existing: bool) -> Result<PolicyPlan, Error> {
        policy.validate()?;
        let old = self.store.get_policy(&policy.name).await?;
        let mut plan = PolicyPlan { apply_to_existing, ..PolicyPlan::default() };
        self.plan_one(&mut plan, old.as_ref(), policy, self.clock.now()).await?;
        Ok(plan)
    }

    /// Adds `policy` to the plan as added, changed or unchanged against its stored version `old`.
    async fn plan_one(
        &self,
        plan: &mut PolicyPlan,
        old: Option<&NamedPolicy>,
        policy: &NamedPolicy,
        now: keyturn_core::Instant,
    ) -> Result<(), Error> {
        let planned = |old: Option<&NamedPolicy>, fields| PlannedPolicy {
            name: policy.name.clone(),
            old: old.cloned(),
            new: Some(policy.clone()),
            fields,
            keys_affected: 0,
        };
        // Keys under `default` already follow the built-in version, so storing a first version
        // of it changes their policy rather than adding one.
        let builtin = (old.is_none() && policy.name.is_default()).then(|| self.builtin_default_policy());
        let compared = old.or(builtin.as_ref());
        match compared {
            None => plan.added.push(planned(None, Vec::new())),
            Some(current) if current == policy => plan.unchanged.push(policy.name.clone()),
            Some(current) => {
                let mut change = planned(old, current.changes(policy));
                if plan.apply_to_existing {
                    change.keys_affected = self.store.count_policy_keys(&policy.name, now).await?.live;
                }
                plan.changed.push(change);
            }
        }
        Ok(())
    }

    /// Writes a plan in one store transaction and returns it with the number of keys each
    /// changed policy updated. A plan computed from policies that changed since fails with
    /// [`keyturn_store::StoreError::PolicyConflict`] and writes nothing.
    pub async fn apply_policies(&self, mut plan: PolicyPlan, caller: &Caller) -> Result<PolicyPlan, Error> {
        let now = self.clock.now();
        let apply_to_existing = plan.apply_to_existing;
        let added = plan.added.iter().map(|planned| (planned, "added", false));
        let changed = plan.changed.iter().map(|planned| (planned, "changed", apply_to_existing));
        let removed = plan.removed.iter().map(|planned| (planned, "removed", false));
        let changes: Vec<PolicyChange> = added
            .chain(changed)
            .chain(removed)
            .map(|(planned, action, apply_to_existing)| PolicyChange {
                name: planned.name.clone(),
                old: planned.old.clone(),
                new: planned.new.clone(),
                apply_to_existing,
                event: self.policy_event(planned, action, apply_to_existing, now, caller),
            })
            .collect();
        if changes.is_empty() {
            return Ok(plan);
        }

        let counts = self.store.apply_policy_update(&PolicyUpdate { at: now, changes }).await?;
        if counts.iter().any(|&count| count > 0) {
            // The store names no updated key, so this process drops every cached record to see
            // the new instants at once; other processes follow the change feed.
            self.cache.clear();
        }
        let mut counts = counts.into_iter();
        for planned in plan.added.iter_mut().chain(&mut plan.changed).chain(&mut plan.removed) {
            planned.keys_affected = counts.next().unwrap_or(0);
        }
        tracing::info!(
            target: "keyturn::keyring", added = plan.added.len(), changed = plan.changed.len(),
            removed = plan.removed.len(), actor = %caller.actor.to_stored(), "policies applied"
        );
        Ok(plan)
    }

    fn policy_event(
        &self,
        planned: &PlannedPolicy,
        action: &str,
        apply_to_existing: bool,
        now: keyturn_core::Instant,
        caller: &Caller,
    ) -> NewAuditEvent {
        let old = match (&planned.old, action) {
            (None, "changed") => Some(self.builtin_default_policy()),
            (old, _) => old.clone(),
        };
        let mut event = NewAuditEvent::new(AuditEventType::AuthzPolicyChanged, now, None, caller.actor.clone())
            .with_details(json!({
                "policy": planned.name.as_str(),
                "action": action,
                "old": old.as_ref().map(policy_json),
                "new": planned.new.as_ref().map(policy_json),
                "apply_to_existing": apply_to_existing,
            }));
        event.client_addr = caller.client_addr.clone();
        event
    }
}

/// Writes a policy as JSON, with durations in the notation the CLI reads, such as `90d`.
pub fn policy_json(policy: &NamedPolicy) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("name".to_owned(), Value::String(policy.name.to_string()));
    for (field, value) in policy.fields() {
        let value = match (field, value.as_str()) {
            ("self_rotation", text) => Value::Bool(text == "true"),
            (_, "none") => Value::Null,
            (_, text) => Value::String(text.to_owned()),
        };
        object.insert(field.to_owned(), value);
    }
    Value::Object(object)
}
