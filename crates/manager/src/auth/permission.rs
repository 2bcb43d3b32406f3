//! Roles, token scopes and the one rule that combines them.
//!
//! | role  | may read                         | may write                              |
//! |-------|----------------------------------|----------------------------------------|
//! | admin | everything                       | everything                             |
//! | user  | clusters, peers, jobs, own tokens| jobs; own tokens and password          |
//! | guest | clusters, peers, jobs            | own tokens and password, in the console|
//!
//! A token narrows its user's rights to its scopes, and a guest's token writes nothing at
//! all: a guest creates tokens only from a console session.

use serde::{Deserialize, Serialize};

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
    Guest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
            Self::Guest => "guest",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "user" => Some(Self::User),
            "guest" => Some(Self::Guest),
            _ => None,
        }
    }
}

/// What a request touches; also the names of token scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// Scheduler and seed-peer clusters, schedulers.
    Clusters,
    /// Peers and the tasks they hold.
    Peers,
    /// Preheat, cache-delete and task-lookup jobs.
    Jobs,
    /// User accounts.
    Users,
    /// The caller's own access tokens and password.
    Account,
    /// The audit log.
    Audit,
}

impl Resource {
    pub const ALL: [Resource; 6] = [
        Self::Clusters,
        Self::Peers,
        Self::Jobs,
        Self::Users,
        Self::Account,
        Self::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clusters => "clusters",
            Self::Peers => "peers",
            Self::Jobs => "jobs",
            Self::Users => "users",
            Self::Account => "account",
            Self::Audit => "audit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Reading or changing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// How the caller proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Session {
        session_id: i64,
    },
    Token {
        token_id: i64,
        scopes: Vec<Resource>,
    },
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub role: Role,
    pub credential: Credential,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Denied {
    #[error("the {role} role cannot {verb} {what}", role = .0.as_str(), verb = verb(.2), what = .1.as_str())]
    Role(Role, Resource, Access),
    #[error("this token's scopes do not include {scope}", scope = .0.as_str())]
    Scope(Resource),
    #[error("a guest's token cannot change anything; sign in to the console instead")]
    GuestToken,
    #[error("a token can only create tokens within its own scopes, and {scope} is not among them", scope = .0.as_str())]
    BeyondOwnScopes(Resource),
}

fn verb(a: &Access) -> &'static str {
    match a {
        Access::Read => "read",
        Access::Write => "change",
    }
}

/// Whether `role` may have `access` to `resource`, before any token narrows it.
fn role_allows(role: Role, resource: Resource, access: Access) -> bool {
    use Resource::*;
    match (role, access) {
        (Role::Admin, _) => true,
        (_, Access::Read) => matches!(resource, Clusters | Peers | Jobs | Account),
        (Role::User, Access::Write) => matches!(resource, Jobs | Account),
        (Role::Guest, Access::Write) => resource == Account,
    }
}

impl Principal {
    /// Ok when this caller may have `access` to `resource`.
    pub fn check(&self, resource: Resource, access: Access) -> Result<(), Denied> {
        if !role_allows(self.role, resource, access) {
            return Err(Denied::Role(self.role, resource, access));
        }
        if let Credential::Token { scopes, .. } = &self.credential {
            if self.role == Role::Guest && access == Access::Write {
                return Err(Denied::GuestToken);
            }
            if !scopes.contains(&resource) {
                return Err(Denied::Scope(resource));
            }
        }
        Ok(())
    }

    /// Ok when this caller may hand a new token `scopes`: a token mints only within its own
    /// scopes (a leaked `account` token must not become an every-scope one); a console
    /// session mints within its role, which `check` bounds on every use anyway.
    pub fn may_grant(&self, scopes: &[Resource]) -> Result<(), Denied> {
        if let Credential::Token { scopes: own, .. } = &self.credential {
            if let Some(extra) = scopes.iter().find(|s| !own.contains(s)) {
                return Err(Denied::BeyondOwnScopes(*extra));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, credential: Credential) -> Principal {
        Principal {
            user_id: 1,
            name: "u".into(),
            role,
            credential,
        }
    }

    fn token(scopes: &[Resource]) -> Credential {
        Credential::Token {
            token_id: 1,
            scopes: scopes.to_vec(),
        }
    }

    #[test]
    fn a_guest_token_writes_nothing_even_with_every_scope() {
        let g = who(Role::Guest, token(&Resource::ALL));
        for r in Resource::ALL {
            assert!(g.check(r, Access::Write).is_err(), "{r:?}");
        }
        assert!(g.check(Resource::Clusters, Access::Read).is_ok());
        assert!(g.check(Resource::Users, Access::Read).is_err());
        let console = who(Role::Guest, Credential::Session { session_id: 1 });
        assert!(console.check(Resource::Account, Access::Write).is_ok());
        assert!(console.check(Resource::Jobs, Access::Write).is_err());
    }

    #[test]
    fn a_token_grants_only_scopes_it_holds_and_a_session_any() {
        let t = who(Role::Admin, token(&[Resource::Account, Resource::Jobs]));
        assert!(t.may_grant(&[Resource::Jobs]).is_ok());
        assert_eq!(
            t.may_grant(&[Resource::Jobs, Resource::Users]),
            Err(Denied::BeyondOwnScopes(Resource::Users))
        );
        let s = who(Role::User, Credential::Session { session_id: 1 });
        assert!(s.may_grant(&Resource::ALL).is_ok());
    }

    #[test]
    fn a_token_is_limited_to_its_scopes_and_never_beyond_its_role() {
        let u = who(Role::User, token(&[Resource::Jobs]));
        assert!(u.check(Resource::Jobs, Access::Write).is_ok());
        assert_eq!(
            u.check(Resource::Clusters, Access::Read),
            Err(Denied::Scope(Resource::Clusters))
        );
        let u = who(Role::User, token(&Resource::ALL));
        assert!(u.check(Resource::Clusters, Access::Write).is_err());
        assert!(u.check(Resource::Users, Access::Read).is_err());
        let a = who(Role::Admin, token(&[Resource::Users]));
        assert!(a.check(Resource::Users, Access::Write).is_ok());
        assert!(a.check(Resource::Clusters, Access::Write).is_err());
    }
}
