//! Single sign-on: which operator, with which roles, an identity that the
//! team's OpenID provider vouches for signs in as. Pure: the dashboard runs
//! the protocol (`dashboard::sso`), the configuration gives the rules.
//!
//! An identity signs in as the configured operator whose `email` is its
//! verified email, with that operator's roles; else, if it is in groups that
//! `sso.groups` maps to roles, as itself (named by its email) with the
//! highest role any of those groups gives in each project; else not at all.
//! Either way the roles are read from the configuration at each request: a
//! group member's session keeps the groups that gave it roles, not the
//! roles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Role;

/// The roles of an operator: one in every project, and others in the
/// projects named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// In every project not named in `projects`.
    pub everywhere: Option<Role>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projects: BTreeMap<String, Role>,
}

impl Roles {
    pub fn everywhere(role: Role) -> Roles {
        Roles {
            everywhere: Some(role),
            projects: BTreeMap::new(),
        }
    }

    /// The role in `project`, if there is one.
    pub fn in_project(&self, project: &str) -> Option<Role> {
        self.projects.get(project).copied().or(self.everywhere)
    }

    /// The higher of the two in every project.
    fn highest(mut self, other: &Roles) -> Roles {
        let projects: Vec<String> = self
            .projects
            .keys()
            .chain(other.projects.keys())
            .cloned()
            .collect();
        let in_both = |p: &str| self.in_project(p).max(other.in_project(p));
        let merged: BTreeMap<String, Role> = projects
            .iter()
            .filter_map(|p| in_both(p).map(|role| (p.clone(), role)))
            .collect();
        self.everywhere = self.everywhere.max(other.everywhere);
        self.projects = merged;
        self
    }
}

/// A group of the identity provider's and the roles its members have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRule {
    pub group: String,
    pub roles: Roles,
}

/// Who the provider says signed in, from an ID token whose signature and
/// claims were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's `sub`: stable, unique at that provider.
    pub subject: String,
    pub email: Option<String>,
    /// The `email_verified` claim, when the provider gives one.
    pub email_verified: Option<bool>,
    pub groups: Vec<String>,
}

impl Identity {
    /// The email that identifies this person: given, and verified by the
    /// provider. A provider that says nothing (`email_verified` absent, as
    /// some leave it for addresses their users may edit) is trusted only
    /// when the settings say so.
    fn trusted_email(&self, rules: &Rules<'_>) -> Option<String> {
        let verified = match self.email_verified {
            Some(verified) => verified,
            None => !rules.require_verified_email,
        };
        self.email
            .as_deref()
            .filter(|_| verified)
            .map(|email| email.trim().to_ascii_lowercase())
            .filter(|email| !email.is_empty())
    }

    /// The name the audit log gives this identity: its trusted email, else
    /// the provider's subject.
    pub fn name(&self, rules: &Rules<'_>) -> String {
        self.trusted_email(rules)
            .unwrap_or_else(|| self.subject.clone())
    }
}

/// How identities are mapped: the settings' group rules and whether an
/// email must be marked verified.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub groups: &'a [GroupRule],
    pub require_verified_email: bool,
}

/// The roles `groups` give under `rules` (the highest in each project),
/// with the groups that gave them; `None` when none of them is given a
/// role.
pub fn roles_for_groups(groups: &[String], rules: &[GroupRule]) -> Option<(Roles, Vec<String>)> {
    let matching: Vec<&GroupRule> = rules
        .iter()
        .filter(|rule| groups.contains(&rule.group))
        .collect();
    let roles = matching.iter().fold(None, |roles: Option<Roles>, rule| {
        Some(match roles {
            Some(roles) => roles.highest(&rule.roles),
            None => rule.roles.clone(),
        })
    })?;
    let mut named: Vec<String> = matching.iter().map(|rule| rule.group.clone()).collect();
    named.dedup();
    Some((roles, named))
}

/// Whom an identity signs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInAs {
    pub operator: String,
    /// For a group member, the groups that give them roles, and those
    /// roles now; `None` for a configured operator.
    pub groups: Option<(Vec<String>, Roles)>,
}

/// Why an identity the provider vouched for does not sign in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the identity provider says the email `{0}` is not verified")]
    UnverifiedEmail(String),
    #[error(
        "`{0}` is not an Assay operator: no operator has this email and none of its groups is given a role"
    )]
    NotAnOperator(String),
    #[error(
        "`{0}` is the name of a configured operator; give that operator `email = \"{0}\"` for it to sign in through the identity provider"
    )]
    NameTaken(String),
    #[error("the identity provider's name for this account is not usable as an operator name")]
    UnusableName,
}

/// Whom `identity` signs in as. `operator_with_email` finds the configured
/// operator an email belongs to; `operator_named` tells whether a name is a
/// configured operator's (a group member may not take it).
pub fn sign_in_as(
    identity: &Identity,
    operator_with_email: impl Fn(&str) -> Option<String>,
    operator_named: impl Fn(&str) -> bool,
    rules: &Rules<'_>,
) -> Result<SignInAs, Refusal> {
    let email = identity.trusted_email(rules);
    if let Some(operator) = email.as_deref().and_then(&operator_with_email) {
        return Ok(SignInAs {
            operator,
            groups: None,
        });
    }
    let who = identity.name(rules);
    let Some(groups) = roles_for_groups(&identity.groups, rules.groups) else {
        // An untrusted email that names an operator is why, if it does.
        return Err(match &identity.email {
            Some(given)
                if email.is_none()
                    && operator_with_email(&given.trim().to_ascii_lowercase()).is_some() =>
            {
                Refusal::UnverifiedEmail(given.clone())
            }
            _ => Refusal::NotAnOperator(who),
        });
    };
    if who.is_empty() || who.len() > 254 || who.chars().any(char::is_control) {
        return Err(Refusal::UnusableName);
    }
    if operator_named(&who) {
        return Err(Refusal::NameTaken(who));
    }
    Ok(SignInAs {
        operator: who,
        groups: Some((groups.1, groups.0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(email: Option<&str>, verified: Option<bool>, groups: &[&str]) -> Identity {
        Identity {
            subject: "sub-1".into(),
            email: email.map(str::to_owned),
            email_verified: verified,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn rules() -> Vec<GroupRule> {
        vec![
            GroupRule {
                group: "support".into(),
                roles: Roles::everywhere(Role::Viewer),
            },
            GroupRule {
                group: "oncall".into(),
                roles: Roles {
                    everywhere: None,
                    projects: [("billing".to_owned(), Role::Responder)].into(),
                },
            },
            GroupRule {
                group: "leads".into(),
                roles: Roles {
                    everywhere: Some(Role::Responder),
                    projects: [("billing".to_owned(), Role::Admin)].into(),
                },
            },
        ]
    }

    fn strict(groups: &[GroupRule]) -> Rules<'_> {
        Rules {
            groups,
            require_verified_email: true,
        }
    }

    fn alice(email: &str) -> Option<String> {
        (email == "alice@example.com").then(|| "alice".to_owned())
    }

    fn configured(name: &str) -> bool {
        ["alice", "ops@example.com"].contains(&name)
    }

    #[test]
    fn a_configured_email_signs_in_as_its_operator_with_the_configured_roles() {
        let signed = sign_in_as(
            &identity(Some("Alice@Example.com"), Some(true), &["support"]),
            alice,
            configured,
            &strict(&rules()),
        );
        assert_eq!(
            signed,
            Ok(SignInAs {
                operator: "alice".into(),
                groups: None
            })
        );
    }

    #[test]
    fn groups_give_the_highest_role_in_each_project() {
        let signed = sign_in_as(
            &identity(Some("bob@example.com"), Some(true), &["support", "oncall"]),
            alice,
            configured,
            &strict(&rules()),
        )
        .unwrap();
        assert_eq!(signed.operator, "bob@example.com");
        let (groups, roles) = signed.groups.unwrap();
        assert_eq!(groups, ["support", "oncall"]);
        assert_eq!(roles.in_project("billing"), Some(Role::Responder));
        assert_eq!(roles.in_project("other"), Some(Role::Viewer));

        let lead = sign_in_as(
            &identity(Some("cy@example.com"), Some(true), &["oncall", "leads"]),
            alice,
            configured,
            &strict(&rules()),
        )
        .unwrap()
        .groups
        .unwrap()
        .1;
        assert_eq!(lead.in_project("billing"), Some(Role::Admin));
        assert_eq!(lead.in_project("other"), Some(Role::Responder));

        let only_billing = sign_in_as(
            &identity(Some("dee@example.com"), Some(true), &["oncall"]),
            alice,
            configured,
            &strict(&rules()),
        )
        .unwrap()
        .groups
        .unwrap()
        .1;
        assert_eq!(only_billing.in_project("other"), None);
    }

    #[test]
    fn nobody_unmapped_signs_in() {
        assert_eq!(
            sign_in_as(
                &identity(Some("eve@example.com"), Some(true), &["marketing"]),
                alice,
                configured,
                &strict(&rules()),
            ),
            Err(Refusal::NotAnOperator("eve@example.com".into()))
        );
        assert_eq!(
            sign_in_as(
                &identity(None, None, &[]),
                alice,
                configured,
                &strict(&rules())
            ),
            Err(Refusal::NotAnOperator("sub-1".into()))
        );
    }

    #[test]
    fn an_unverified_email_is_not_trusted() {
        assert_eq!(
            sign_in_as(
                &identity(Some("alice@example.com"), Some(false), &[]),
                alice,
                configured,
                &strict(&rules()),
            ),
            Err(Refusal::UnverifiedEmail("alice@example.com".into()))
        );
        // Its groups still count, under the subject's name.
        let signed = sign_in_as(
            &identity(Some("alice@example.com"), Some(false), &["support"]),
            alice,
            configured,
            &strict(&rules()),
        )
        .unwrap();
        assert_eq!(signed.operator, "sub-1");

        // An email the provider says nothing about is trusted only when
        // the settings allow it.
        let silent = identity(Some("alice@example.com"), None, &[]);
        assert_eq!(
            sign_in_as(&silent, alice, configured, &strict(&rules())),
            Err(Refusal::UnverifiedEmail("alice@example.com".into()))
        );
        let lenient = Rules {
            groups: &[],
            require_verified_email: false,
        };
        assert_eq!(
            sign_in_as(&silent, alice, configured, &lenient).map(|s| s.operator),
            Ok("alice".to_owned())
        );
    }

    #[test]
    fn a_group_member_cannot_take_a_configured_operators_name() {
        assert_eq!(
            sign_in_as(
                &identity(Some("ops@example.com"), Some(true), &["leads"]),
                alice,
                configured,
                &strict(&rules()),
            ),
            Err(Refusal::NameTaken("ops@example.com".into()))
        );
    }
}
