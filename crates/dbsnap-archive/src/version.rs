//! Schema versions: the set of applied migrations of a database, as read
//! from its migration tool's table, and how two of them compare.
//!
//! Pure data and logic: reading the table is the pg crate's job.

use serde::{Deserialize, Serialize};

/// How a tool records its history, which decides how versions compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionModel {
    /// Every applied migration is a row: compare as sets.
    Set,
    /// Only the current version is stored (golang-migrate): compare in order.
    Linear,
    /// Only the heads of a migration graph are stored (Alembic): only
    /// equality can be told without the migration scripts.
    Heads,
}

/// The schema version of one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// Tool name (`golang-migrate`, `flyway`, ..., or `custom`).
    pub tool: String,
    /// Qualified table (or `query` for a custom query).
    pub source: String,
    /// How versions of this tool compare.
    pub model: VersionModel,
    /// Applied migration ids, in the order they were applied.
    pub applied: Vec<String>,
    /// True when the tool records a failed or half-applied migration.
    pub dirty: bool,
    /// Ids of failed or in-progress migrations, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// Result of comparing a live database's version with a snapshot's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// Same migrations applied.
    Equal,
    /// Live has everything the snapshot has, and more.
    LiveNewer,
    /// Live lacks migrations the snapshot has (and has none it lacks).
    LiveOlder,
    /// Each has migrations the other lacks.
    Diverged,
    /// Cannot be told (different tools, no version, heads-only history).
    Unknown,
}

impl SchemaVersion {
    /// The display string: the latest applied id (`none` when empty), with a
    /// `(dirty)` mark.
    pub fn display(&self) -> String {
        let latest = match self.model {
            VersionModel::Heads => {
                let mut heads = self.applied.clone();
                heads.sort();
                heads.join("+")
            }
            _ => self.applied.last().cloned().unwrap_or_default(),
        };
        let latest = if latest.is_empty() {
            "none".to_string()
        } else {
            latest
        };
        if self.dirty {
            format!("{latest} (dirty)")
        } else {
            latest
        }
    }

    /// A short form fit for a file name: `[A-Za-z0-9._-]`, at most 40 chars.
    pub fn file_token(&self) -> String {
        let latest = match self.model {
            VersionModel::Heads => self.display(),
            _ => self
                .applied
                .last()
                .cloned()
                .unwrap_or_else(|| "none".into()),
        };
        sanitize_token(&latest)
    }

    /// Compares `self` (live) with `snapshot`.
    pub fn compare(&self, snapshot: &SchemaVersion) -> Comparison {
        if self.tool != snapshot.tool || self.model != snapshot.model {
            return Comparison::Unknown;
        }
        match self.model {
            VersionModel::Linear => {
                let (a, b) = (self.applied.last(), snapshot.applied.last());
                match (a, b) {
                    (None, None) => Comparison::Equal,
                    (Some(_), None) => Comparison::LiveNewer,
                    (None, Some(_)) => Comparison::LiveOlder,
                    (Some(a), Some(b)) => match natural_cmp(a, b) {
                        std::cmp::Ordering::Equal => Comparison::Equal,
                        std::cmp::Ordering::Greater => Comparison::LiveNewer,
                        std::cmp::Ordering::Less => Comparison::LiveOlder,
                    },
                }
            }
            VersionModel::Heads => {
                let mut a = self.applied.clone();
                let mut b = snapshot.applied.clone();
                a.sort();
                b.sort();
                if a == b {
                    Comparison::Equal
                } else {
                    Comparison::Unknown
                }
            }
            VersionModel::Set => {
                use std::collections::BTreeSet;
                let a: BTreeSet<&String> = self.applied.iter().collect();
                let b: BTreeSet<&String> = snapshot.applied.iter().collect();
                match (a.is_superset(&b), b.is_superset(&a)) {
                    (true, true) => Comparison::Equal,
                    (true, false) => Comparison::LiveNewer,
                    (false, true) => Comparison::LiveOlder,
                    (false, false) => Comparison::Diverged,
                }
            }
        }
    }
}

/// Keeps `[A-Za-z0-9._-]`, maps the rest to `_`, caps the length.
pub fn sanitize_token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if t.is_empty() {
        "none".into()
    } else {
        t
    }
}

/// Orders numerically when both are integers, else as text.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u128>(), b.parse::<u128>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(model: VersionModel, ids: &[&str]) -> SchemaVersion {
        SchemaVersion {
            tool: "t".into(),
            source: "public.t".into(),
            model,
            applied: ids.iter().map(|s| s.to_string()).collect(),
            dirty: false,
            failed: vec![],
        }
    }

    #[test]
    fn set_comparison() {
        use Comparison::*;
        let s = |ids: &[&str]| v(VersionModel::Set, ids);
        assert_eq!(s(&["1", "2"]).compare(&s(&["2", "1"])), Equal);
        assert_eq!(s(&["1", "2", "3"]).compare(&s(&["1", "2"])), LiveNewer);
        assert_eq!(s(&["1"]).compare(&s(&["1", "2"])), LiveOlder);
        assert_eq!(s(&["1", "3"]).compare(&s(&["1", "2"])), Diverged);
    }

    #[test]
    fn linear_comparison_is_numeric() {
        use Comparison::*;
        let l = |ids: &[&str]| v(VersionModel::Linear, ids);
        assert_eq!(l(&["10"]).compare(&l(&["9"])), LiveNewer);
        assert_eq!(l(&["9"]).compare(&l(&["10"])), LiveOlder);
        assert_eq!(l(&["9"]).compare(&l(&["9"])), Equal);
    }

    #[test]
    fn heads_and_tools() {
        let h = |ids: &[&str]| v(VersionModel::Heads, ids);
        assert_eq!(h(&["a", "b"]).compare(&h(&["b", "a"])), Comparison::Equal);
        assert_eq!(h(&["a"]).compare(&h(&["b"])), Comparison::Unknown);
        let mut other = h(&["a"]);
        other.tool = "other".into();
        assert_eq!(h(&["a"]).compare(&other), Comparison::Unknown);
    }

    #[test]
    fn display_and_token() {
        let mut x = v(VersionModel::Set, &["0001_initial", "auth.0002 x/y"]);
        assert_eq!(x.display(), "auth.0002 x/y");
        assert_eq!(x.file_token(), "auth.0002_x_y");
        x.dirty = true;
        assert_eq!(x.display(), "auth.0002 x/y (dirty)");
        assert_eq!(v(VersionModel::Set, &[]).file_token(), "none");
    }
}
