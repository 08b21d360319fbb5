//! Which tag of an image is the newest version: tags read as semantic
//! versions (`1.2.3`, `v1.2.3`, `1.2` = `1.2.0`, pre-releases such as
//! `1.3.0-rc1`); every other tag (`latest`, `main-abc123`, `18-bookworm`)
//! is ignored. Pure: no I/O.
//!
//! A pre-release ranks below its release (semver precedence) and is chosen
//! only when the repository has no release tag at all: a jump pod should
//! run a released dbsnap when there is one.

use std::cmp::Ordering;

/// A version read from a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    numbers: [u64; 3],
    pre: Vec<Identifier>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Identifier {
    // Numeric identifiers rank below alphanumeric ones (semver 11.4.3);
    // the derived order follows the variants' order.
    Number(u64),
    Text(String),
}

impl Version {
    /// Reads `[v]MAJOR.MINOR[.PATCH][-PRE]`; `None` for any other tag.
    pub fn parse(tag: &str) -> Option<Version> {
        let text = tag.strip_prefix('v').unwrap_or(tag);
        let (core, pre) = match text.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (text, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return None;
        }
        let mut numbers = [0; 3];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            *slot = number(part)?;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(pre) => pre.split('.').map(identifier).collect::<Option<Vec<_>>>()?,
        };
        Some(Version { numbers, pre })
    }

    /// Whether this is a pre-release (`1.3.0-rc1`).
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }
}

fn number(text: &str) -> Option<u64> {
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if text.is_empty() || leading_zero || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn identifier(text: &str) -> Option<Identifier> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    Some(match number(text) {
        Some(n) => Identifier::Number(n),
        None => Identifier::Text(text.to_string()),
    })
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers.cmp(&other.numbers).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            }
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The tag chosen among a repository's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest {
    /// The tag as the registry lists it.
    pub tag: String,
    /// Whether it is a pre-release (chosen because no release exists).
    pub prerelease: bool,
}

/// The newest release among `tags`, else the newest pre-release, else
/// `None`. Equal versions (`1.2` and `v1.2.0`) go to the tag that sorts
/// last, so the choice never depends on the registry's order.
pub fn newest<'a>(tags: impl IntoIterator<Item = &'a str>) -> Option<Newest> {
    let versions: Vec<(Version, &str)> = tags
        .into_iter()
        .filter_map(|t| Version::parse(t).map(|v| (v, t)))
        .collect();
    let pick = |prerelease: bool| {
        versions
            .iter()
            .filter(|(v, _)| v.is_prerelease() == prerelease)
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
            .map(|(_, tag)| Newest {
                tag: tag.to_string(),
                prerelease,
            })
    };
    pick(false).or_else(|| pick(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_tags_are_read_and_others_ignored() {
        for tag in [
            "1.2.3",
            "v1.2.3",
            "1.2",
            "1.3.0-rc1",
            "2.0.0-beta.2",
            "0.0.1",
        ] {
            assert!(Version::parse(tag).is_some(), "{tag}");
        }
        for tag in [
            "latest",
            "main-abc123",
            "18-bookworm",
            "1",
            "1.2.3.4",
            "01.2.3",
            "1.2.x",
            "v",
            "1.2.3-",
            "1.2.3-rc..1",
            "sha256-abc",
        ] {
            assert!(Version::parse(tag).is_none(), "{tag}");
        }
    }

    #[test]
    fn versions_compare_by_semver_precedence() {
        let v = |t: &str| Version::parse(t).unwrap();
        assert!(v("1.10.0") > v("1.9.3"));
        assert!(v("1.2") == v("1.2.0"));
        assert!(v("v1.10.1-rc1") < v("1.10.1"));
        assert!(v("v1.10.1-rc1") > v("1.10.0"));
        assert!(v("1.0.0-alpha") < v("1.0.0-alpha.1"));
        assert!(v("1.0.0-alpha.1") < v("1.0.0-alpha.beta"));
        assert!(v("1.0.0-beta.2") < v("1.0.0-beta.11"));
        assert!(v("1.0.0-rc.1") < v("1.0.0"));
    }

    #[test]
    fn the_newest_release_wins_and_a_prerelease_only_without_one() {
        let chosen = newest(["1.2.0", "1.10.0", "1.9.3", "latest", "v1.10.1-rc1"]).unwrap();
        assert_eq!(
            chosen,
            Newest {
                tag: "1.10.0".into(),
                prerelease: false
            }
        );
        let chosen = newest(["latest", "v1.10.1-rc1", "1.10.1-rc2", "main-abc"]).unwrap();
        assert_eq!(chosen.tag, "1.10.1-rc2");
        assert!(chosen.prerelease);
        assert_eq!(newest(["latest", "main-abc"]), None);
        assert_eq!(newest(["1.2", "v1.2.0"]).unwrap().tag, "v1.2.0");
        assert_eq!(newest(["v1.2.0", "1.2"]).unwrap().tag, "v1.2.0");
    }
}
