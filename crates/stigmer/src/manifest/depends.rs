//! `depends_on`: which services a service waits for, and how far each must
//! have got.
//!
//! Two forms, as in compose: a list of names, each meaning `"healthy"`,
//! and a table from name to condition:
//!
//! ```toml
//! depends_on = ["api"]
//! depends_on = { migrate = "completed_successfully", api = "healthy", cache = "started" }
//! ```
//!
//! This module reads the value; `order` in the parent checks the names
//! (unknown, itself, cycles) for both forms alike.

use std::fmt;

use super::key::Key;
use super::problem::{ProblemKind, one_line};

/// How far a dependency must have got before its dependent starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Condition {
    /// `"started"`: it has been spawned (its readiness check may still be
    /// running).
    Started,
    /// `"healthy"`: it passed its readiness check (without one: it has
    /// been spawned). What the list form means.
    Healthy,
    /// `"completed_successfully"`: it ran, exited with status 0, and its
    /// restart policy does not run it again: a one-shot job, such as a
    /// migration.
    CompletedSuccessfully,
}

impl Condition {
    /// Every condition, in the order messages list them.
    pub const ALL: [Condition; 3] =
        [Condition::Started, Condition::Healthy, Condition::CompletedSuccessfully];

    /// The condition as the manifest writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::CompletedSuccessfully => "completed_successfully",
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One service another waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dependency {
    /// The service waited for: another service of the manifest.
    pub name: String,
    /// How far it must have got.
    pub condition: Condition,
}

impl Dependency {
    /// Waiting for `name` to meet `condition`.
    pub fn new(name: impl Into<String>, condition: Condition) -> Dependency {
        Dependency { name: name.into(), condition }
    }
}

/// Reads a `depends_on` value: a list of names (each `healthy`) in the order
/// written, or a table of conditions in name order. Every problem is pushed,
/// and the dependencies that could be read are returned, so the graph is
/// checked in the same run.
pub(super) fn read(value: &toml::Value, problems: &mut Vec<ProblemKind>) -> Vec<Dependency> {
    match value {
        toml::Value::Array(_) => match value.clone().try_into::<Vec<String>>() {
            Ok(names) => {
                names.into_iter().map(|n| Dependency::new(n, Condition::Healthy)).collect()
            }
            Err(e) => {
                problems.push(ProblemKind::WrongType {
                    key: Key::DependsOn,
                    message: one_line(e.message()),
                });
                Vec::new()
            }
        },
        toml::Value::Table(table) => {
            let mut deps = Vec::with_capacity(table.len());
            for (name, condition) in table {
                let Some(text) = condition.as_str() else {
                    let message = format!(
                        "{name:?}: invalid type: {}, expected a condition string",
                        condition.type_str()
                    );
                    problems.push(ProblemKind::WrongType { key: Key::DependsOn, message });
                    // The name still counts for the graph checks.
                    deps.push(Dependency::new(name.clone(), Condition::Healthy));
                    continue;
                };
                match Condition::ALL.into_iter().find(|c| c.as_str() == text) {
                    Some(condition) => deps.push(Dependency::new(name.clone(), condition)),
                    None => {
                        problems.push(ProblemKind::UnknownCondition {
                            name: name.clone(),
                            value: text.to_owned(),
                        });
                        deps.push(Dependency::new(name.clone(), Condition::Healthy));
                    }
                }
            }
            deps
        }
        other => {
            let message = format!(
                "invalid type: {}, expected a list of service names or a table of conditions",
                other.type_str()
            );
            problems.push(ProblemKind::WrongType { key: Key::DependsOn, message });
            Vec::new()
        }
    }
}
