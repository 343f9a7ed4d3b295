//! The one table that says who may call what. The guard enforces it, the OpenAPI document is checked against
//! it, and the role × endpoint test walks it: a route is not served until it has a row here.

use axum::http::Method;

use super::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: liveness, readiness, metrics, the API description.
    Public,
    /// Authenticated by the project's webhook signature; a producer key, when presented, must cover the project.
    Webhook,
    /// Any authenticated caller, whatever the role: who am I, and the caller's own subscriber (`/api/v1/me`).
    Signed,
    /// Projects, builds, subscriptions and analytics: readers, operators, admins.
    Read,
    /// The notification trail: auditors and admins.
    Audit,
    /// Running Herald (dead letters, rebuilds, dry runs, status, subscriptions): operators and admins.
    Operate,
    /// Projects, configuration and API keys: admins.
    Admin,
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public => true,
            Access::Webhook => matches!(role, Role::Admin | Role::Producer),
            Access::Signed => true,
            Access::Read => matches!(role, Role::Admin | Role::Operator | Role::Reader),
            Access::Audit => matches!(role, Role::Admin | Role::Auditor),
            Access::Operate => matches!(role, Role::Admin | Role::Operator),
            Access::Admin => role == Role::Admin,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Access::Public => "call public endpoints",
            Access::Webhook => "post webhooks",
            Access::Signed => "use the API",
            Access::Read => "read projects and builds",
            Access::Audit => "read the notification trail",
            Access::Operate => "operate Herald",
            Access::Admin => "administer Herald",
        }
    }
}

/// One route: method, axum path pattern, who may call it.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn rule(method: &'static str, path: &'static str, access: Access) -> Rule {
    Rule {
        method,
        path,
        access,
    }
}

use Access::*;

/// Every route Herald serves.
pub const POLICY: &[Rule] = &[
    rule("GET", "/health", Public),
    rule("GET", "/ready", Public),
    rule("GET", "/metrics", Public),
    rule("GET", "/api/v1/openapi.json", Public),
    rule("GET", "/api/v1/docs", Public),
    rule("POST", "/api/v1/webhooks/{provider}/{project}", Webhook),
    // The dashboard: its files, and logging in with an API key (which is the credential).
    rule("GET", "/", Public),
    rule("GET", "/ui/", Public),
    rule("GET", "/ui/{file}", Public),
    rule("POST", "/api/v1/session", Public),
    rule("DELETE", "/api/v1/session", Public),
    // Who am I; the caller's own subscriber, for keys that stand for one.
    rule("GET", "/api/v1/me", Signed),
    rule("GET", "/api/v1/me/subscriber", Signed),
    rule("PUT", "/api/v1/me/preferences", Signed),
    rule("POST", "/api/v1/me/link-codes", Signed),
    rule("GET", "/api/v1/me/subscriptions", Signed),
    rule("POST", "/api/v1/me/subscriptions", Signed),
    rule("DELETE", "/api/v1/me/subscriptions/{id}", Signed),
    rule("GET", "/api/v1/projects", Read),
    rule("POST", "/api/v1/projects", Admin),
    rule("GET", "/api/v1/projects/{id}", Read),
    rule("PATCH", "/api/v1/projects/{id}", Admin),
    rule("DELETE", "/api/v1/projects/{id}", Admin),
    rule("POST", "/api/v1/projects/{id}/secret", Admin),
    rule("GET", "/api/v1/projects/{id}/builds", Read),
    rule("GET", "/api/v1/projects/{id}/statistics", Read),
    rule("GET", "/api/v1/projects/{id}/timeseries", Read),
    rule("GET", "/api/v1/dashboard/overview", Read),
    rule("GET", "/api/v1/builds", Read),
    rule("GET", "/api/v1/builds/export", Read),
    rule("GET", "/api/v1/builds/analytics", Read),
    rule("GET", "/api/v1/notifications/metrics", Read),
    rule("GET", "/api/v1/stream", Read),
    rule("GET", "/api/v1/stream/ws", Read),
    rule("GET", "/api/v1/projects/{id}/deliveries", Operate),
    rule("POST", "/api/v1/telegram/webhook", Public),
    rule("GET", "/api/v1/subscriptions", Read),
    rule("POST", "/api/v1/subscriptions", Operate),
    rule("GET", "/api/v1/subscriptions/{id}", Read),
    rule("DELETE", "/api/v1/subscriptions/{id}", Operate),
    rule("GET", "/api/v1/subscribers", Read),
    rule("POST", "/api/v1/subscribers", Operate),
    rule("GET", "/api/v1/subscribers/{id}", Read),
    rule("PUT", "/api/v1/subscribers/{id}/preferences", Operate),
    rule("POST", "/api/v1/subscribers/{id}/mute", Operate),
    rule("DELETE", "/api/v1/subscribers/{id}/mute", Operate),
    rule("POST", "/api/v1/subscribers/{id}/contacts", Operate),
    rule(
        "DELETE",
        "/api/v1/subscribers/{id}/contacts/{contact_id}",
        Operate,
    ),
    rule(
        "POST",
        "/api/v1/subscribers/{id}/contacts/{contact_id}/verification",
        Operate,
    ),
    rule(
        "POST",
        "/api/v1/subscribers/{id}/contacts/{contact_id}/enable",
        Operate,
    ),
    rule(
        "POST",
        "/api/v1/subscribers/{id}/contacts/{contact_id}/disable",
        Operate,
    ),
    rule("POST", "/api/v1/subscribers/{id}/link-codes", Operate),
    // The link in a verification email: its token is the credential.
    rule("GET", "/api/v1/contacts/verify", Public),
    // Bounce and complaint reports from mail systems (which may send the key as Basic auth's password).
    rule("POST", "/api/v1/email/events", Operate),
    rule("POST", "/api/v1/email/dsn", Operate),
    // The one-click unsubscribe link in every email: its signed token is the credential.
    rule("GET", "/api/v1/unsubscribe/{token}", Public),
    rule("POST", "/api/v1/unsubscribe/{token}", Public),
    rule("GET", "/api/v1/audit", Audit),
    rule("GET", "/api/v1/audit/builds/{*build_run_id}", Audit),
    rule("GET", "/api/v1/audit/projects/{id}", Audit),
    rule("GET", "/api/v1/audit/subscriptions/{id}", Audit),
    rule("GET", "/api/v1/dlq", Operate),
    rule("GET", "/api/v1/dlq/{id}", Operate),
    rule("POST", "/api/v1/dlq/{id}/redrive", Operate),
    rule("POST", "/api/v1/dlq/{id}/discard", Operate),
    rule("GET", "/api/v1/operations/rebuilds", Operate),
    rule("POST", "/api/v1/operations/rebuilds", Operate),
    rule("POST", "/api/v1/operations/dry-run", Operate),
    rule("GET", "/api/v1/operations/status", Operate),
    rule("GET", "/api/v1/config", Admin),
    rule("POST", "/api/v1/config", Admin),
    rule("GET", "/api/v1/templates", Read),
    rule("GET", "/api/v1/templates/{id}", Read),
    rule("PUT", "/api/v1/templates/{id}", Admin),
    rule("DELETE", "/api/v1/templates/{id}", Admin),
    rule("GET", "/api/v1/templates/{id}/versions", Read),
    rule("GET", "/api/v1/templates/{id}/versions/{version}", Read),
    rule("POST", "/api/v1/templates/{id}/preview", Read),
    rule("GET", "/api/v1/keys", Admin),
    rule("POST", "/api/v1/keys", Admin),
    rule("DELETE", "/api/v1/keys/{id}", Admin),
];

/// The access rule for a matched route, if the table has one.
pub fn access(method: &Method, path: &str) -> Option<Access> {
    // HEAD is answered by the GET handler, so it has GET's rule.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    POLICY
        .iter()
        .find(|r| r.method == method && r.path == path)
        .map(|r| r.access)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_one_rule() {
        for (i, a) in POLICY.iter().enumerate() {
            for b in &POLICY[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} appears twice",
                    a.method,
                    a.path
                );
            }
        }
    }

    #[test]
    fn only_admins_administer_and_auditors_only_audit() {
        for role in Role::ALL {
            assert_eq!(Admin.allows(role), role == Role::Admin);
            assert_eq!(
                Audit.allows(role),
                matches!(role, Role::Admin | Role::Auditor)
            );
        }
        assert!(!Read.allows(Role::Auditor));
        assert!(!Operate.allows(Role::Auditor));
        assert!(!Read.allows(Role::Producer));
    }

    #[test]
    fn head_follows_get() {
        assert_eq!(access(&Method::HEAD, "/health"), Some(Public));
        assert_eq!(access(&Method::PUT, "/health"), None);
    }
}
