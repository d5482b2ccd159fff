//! Who may do what: the scopes of API keys, the roles of dashboard
//! operators, every action either may take with what it needs, and the
//! audit log's record of who took one. Pure: the HTTP layer asks
//! [`Grant::allows`], the store keeps keys and audit entries.

pub mod client;
pub mod keys;
pub mod sso;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

pub use self::keys::{ApiKey, IssuedKey, KeyState};
use crate::names::named_enum;

named_enum! {
    /// What an API key may do. A key holds any set of them.
    Scope, "scope" {
        /// Open runs and report stages: what the app's SDK needs.
        Report => "report",
        /// Read runs, incidents, drills.
        Read => "read",
        /// Acknowledge and resolve incidents, start drills.
        Operate => "operate",
        /// Manage keys; read the audit log.
        Admin => "admin",
    }
}

named_enum! {
    /// What a dashboard operator may do in a project; each role may do
    /// what the ones before it may.
    Role, "role" {
        /// Read.
        Viewer => "viewer",
        /// Also acknowledge, resolve, run drills.
        Responder => "responder",
        /// Also manage keys, read the audit log.
        Admin => "admin",
    }
}

named_enum! {
    /// Everything a caller does through the API or the dashboard.
    Action, "action" {
        OpenRun => "open_run",
        ReportStage => "report_stage",
        ReadRuns => "read_runs",
        ReadIncidents => "read_incidents",
        AcknowledgeIncident => "acknowledge_incident",
        ResolveIncident => "resolve_incident",
        ReadDrills => "read_drills",
        StartDrill => "start_drill",
        ManageKeys => "manage_keys",
        ReadAudit => "read_audit",
    }
}

impl Action {
    /// The scope an API key needs for it.
    pub fn scope(self) -> Scope {
        match self {
            Action::OpenRun | Action::ReportStage => Scope::Report,
            Action::ReadRuns | Action::ReadIncidents | Action::ReadDrills => Scope::Read,
            Action::AcknowledgeIncident | Action::ResolveIncident | Action::StartDrill => {
                Scope::Operate
            }
            Action::ManageKeys | Action::ReadAudit => Scope::Admin,
        }
    }

    /// The least role an operator needs for it on the dashboard; `None`:
    /// not a dashboard action (the app's SDK reports, no operator does).
    pub fn role(self) -> Option<Role> {
        match self.scope() {
            Scope::Report => None,
            Scope::Read => Some(Role::Viewer),
            Scope::Operate => Some(Role::Responder),
            Scope::Admin => Some(Role::Admin),
        }
    }

    /// The action in words, for a refusal: "acknowledging an incident".
    pub fn doing(self) -> &'static str {
        match self {
            Action::OpenRun => "opening a run",
            Action::ReportStage => "reporting a stage",
            Action::ReadRuns => "reading runs",
            Action::ReadIncidents => "reading incidents",
            Action::AcknowledgeIncident => "acknowledging an incident",
            Action::ResolveIncident => "resolving an incident",
            Action::ReadDrills => "reading drills",
            Action::StartDrill => "starting a drill",
            Action::ManageKeys => "managing API keys",
            Action::ReadAudit => "reading the audit log",
        }
    }
}

/// What a caller is granted in one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// An API key with these scopes.
    Key(Vec<Scope>),
    /// A dashboard operator with this role.
    Operator(Role),
}

impl Grant {
    /// Every scope: the key the configuration gives (`ASSAY_API_KEY`).
    pub fn every_scope() -> Grant {
        Grant::Key(Scope::ALL.to_vec())
    }

    pub fn allows(&self, action: Action) -> bool {
        match self {
            Grant::Key(scopes) => scopes.contains(&action.scope()),
            Grant::Operator(role) => action.role().is_some_and(|needed| *role >= needed),
        }
    }

    /// Why `action` is refused, in words that name what it needs.
    pub fn refusal(&self, action: Action) -> String {
        match (self, action.role()) {
            (Grant::Key(_), _) => format!(
                "this API key lacks the `{}` scope, which {} needs",
                action.scope(),
                action.doing()
            ),
            (Grant::Operator(role), Some(needed)) => format!(
                "your role here is `{role}`; {} needs `{needed}`",
                action.doing()
            ),
            (Grant::Operator(_), None) => {
                format!(
                    "{} is for the app's API key, not an operator",
                    action.doing()
                )
            }
        }
    }
}

named_enum! {
    /// Who acted, by kind.
    ActorKind, "actor kind" {
        /// A dashboard operator, by name.
        Operator => "operator",
        /// An API key, by prefix.
        Key => "key",
        /// The command line, on the database directly.
        Cli => "cli",
        /// Assay itself (a scheduled drill).
        System => "system",
    }
}

/// Who acted, and from which address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Actor {
    pub kind: ActorKind,
    /// The operator's name, the key's prefix, `cli` or `assay`.
    pub name: String,
    pub address: Option<String>,
}

impl Actor {
    pub fn cli() -> Actor {
        Actor {
            kind: ActorKind::Cli,
            name: "cli".into(),
            address: None,
        }
    }

    pub fn system() -> Actor {
        Actor {
            kind: ActorKind::System,
            name: "assay".into(),
            address: None,
        }
    }
}

named_enum! {
    /// What an audit entry records.
    AuditAction, "audit action" {
        IncidentAcknowledged => "incident_acknowledged",
        IncidentResolved => "incident_resolved",
        DrillStarted => "drill_started",
        KeyCreated => "key_created",
        KeyRevoked => "key_revoked",
        SignedIn => "signed_in",
        SignInFailed => "sign_in_failed",
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    /// The project acted in; none for a sign-in.
    pub project: Option<String>,
    #[serde(with = "crate::time::millis")]
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub action: AuditAction,
    /// What was acted on: an incident's, drill's or key's id.
    pub target: Option<String>,
    /// The state before and after, where the action changes one.
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl AuditEntry {
    pub fn new(
        project: Option<&str>,
        actor: &Actor,
        action: AuditAction,
        target: Option<String>,
        at: DateTime<Utc>,
    ) -> AuditEntry {
        AuditEntry {
            id: Uuid::now_v7(),
            project: project.map(str::to_owned),
            at,
            actor: actor.clone(),
            action,
            target,
            before: None,
            after: None,
        }
    }

    pub fn changed(mut self, before: Option<Value>, after: Option<Value>) -> AuditEntry {
        self.before = before;
        self.after = after;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_do_what_the_ones_before_it_may() {
        for action in Action::ALL {
            let allowed: Vec<bool> = Role::ALL
                .iter()
                .map(|role| Grant::Operator(*role).allows(*action))
                .collect();
            let mut sorted = allowed.clone();
            sorted.sort();
            assert_eq!(allowed, sorted, "{action}: a higher role may do less");
        }
        assert!(!Grant::Operator(Role::Admin).allows(Action::ReportStage));
        assert!(Grant::Operator(Role::Viewer).allows(Action::ReadRuns));
        assert!(!Grant::Operator(Role::Viewer).allows(Action::ResolveIncident));
    }

    #[test]
    fn a_key_may_do_exactly_what_its_scopes_name() {
        let report = Grant::Key(vec![Scope::Report]);
        assert!(report.allows(Action::OpenRun));
        assert!(report.allows(Action::ReportStage));
        assert!(!report.allows(Action::ReadRuns));
        assert_eq!(
            report.refusal(Action::ReadRuns),
            "this API key lacks the `read` scope, which reading runs needs"
        );
        assert!(Action::ALL.iter().all(|a| Grant::every_scope().allows(*a)));
    }
}
