//! `prune`: which snapshots a retention policy keeps, and removing the
//! rest.
//!
//! The rules apply per target (snapshots taken without one form their own
//! group), newest first, as restic's `forget` does: `last N` keeps the
//! newest N; `hourly`/`daily`/`weekly`/`monthly`/`yearly N` keep the newest
//! snapshot of each of the last N hours/days/ISO weeks/months/years that
//! have one (UTC); `within D` keeps everything taken less than D ago.
//! Whatever the rules say, these are never removed: pinned snapshots; the
//! newest snapshot that passes `verify` (pruning never leaves only damaged
//! snapshots); the newest whose last `dbsnap drill` passed; files that
//! cannot be read as snapshots (not counted by any rule; `dbsnap delete`
//! removes one by name). Safety snapshots have their own rule: the newest
//! `keep_safety_snapshots` are kept.

use std::collections::BTreeSet;
use std::sync::Arc;

use dbsnap_storage::{Repository, SnapshotRef};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::error::CoreError;
use crate::inspect::{self, ListEntry};

/// How many snapshots each rule keeps (0: the rule is off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N.
    pub last: usize,
    /// The newest of each of the last N hours with a snapshot.
    pub hourly: usize,
    /// ... days.
    pub daily: usize,
    /// ... ISO weeks.
    pub weekly: usize,
    /// ... months.
    pub monthly: usize,
    /// ... years.
    pub yearly: usize,
    /// Everything taken less than this long ago.
    pub within: Option<Duration>,
    /// Safety snapshots kept (the newest N).
    pub safety: usize,
}

impl Policy {
    /// Whether no rule keeps any regular snapshot: pruning with it would
    /// remove all but the protected ones, which is refused.
    pub fn keeps_nothing(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly + self.yearly == 0
            && self.within.is_none()
    }
}

/// One snapshot as the rules see it.
#[derive(Debug, Clone)]
pub struct Item {
    /// When it was taken; None when its metadata cannot be read.
    pub time: Option<OffsetDateTime>,
    /// The group its rules apply in (its target).
    pub group: String,
    /// A safety snapshot (its own rule).
    pub safety: bool,
    /// Pinned.
    pub pinned: bool,
    /// The newest snapshot that passes `verify`.
    pub verified: bool,
    /// The newest snapshot whose last `dbsnap drill` passed.
    pub drilled: bool,
}

/// Why each item stays (same order as `items`); an empty list: it goes.
pub fn decide(items: &[Item], policy: &Policy, now: OffsetDateTime) -> Vec<Vec<String>> {
    let mut reasons = vec![Vec::new(); items.len()];
    // Newest first; unreadable ones take part in no rule.
    let mut order: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].time.is_some())
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].time));
    for (i, item) in items.iter().enumerate() {
        if item.time.is_none() {
            reasons[i].push("unreadable, not counted; `dbsnap delete` removes it".into());
        }
        if item.pinned {
            reasons[i].push("pinned".into());
        }
        if item.verified {
            reasons[i].push("newest verified".into());
        }
        if item.drilled {
            reasons[i].push("newest that passed a drill".into());
        }
    }
    let safety: Vec<usize> = order.iter().copied().filter(|&i| items[i].safety).collect();
    for &i in safety.iter().take(policy.safety) {
        reasons[i].push(format!("safety snapshot (newest {})", policy.safety));
    }
    let groups: BTreeSet<&str> = items.iter().map(|i| i.group.as_str()).collect();
    for group in groups {
        let members: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| !items[i].safety && items[i].group == group)
            .collect();
        let time = |i: usize| items[i].time.expect("only readable ones are ordered");
        for &i in members.iter().take(policy.last) {
            reasons[i].push(format!("last {}", policy.last));
        }
        for (rule, n) in [
            (Period::Hour, policy.hourly),
            (Period::Day, policy.daily),
            (Period::Week, policy.weekly),
            (Period::Month, policy.monthly),
            (Period::Year, policy.yearly),
        ] {
            let mut seen: Vec<String> = Vec::new();
            for &i in &members {
                let key = rule.bucket(time(i));
                if seen.contains(&key) {
                    continue;
                }
                if seen.len() == n {
                    break;
                }
                reasons[i].push(format!("{} {key}", rule.name()));
                seen.push(key);
            }
        }
        if let Some(within) = policy.within {
            for &i in members.iter().filter(|&&i| time(i) > now - within) {
                reasons[i].push(format!("within {}", describe(within)));
            }
        }
    }
    reasons
}

#[derive(Debug, Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// The period `t` falls in (UTC): `2026-11-23 14h`, `2026-11-23`,
    /// `2026-W47`, `2026-11`, `2026`.
    fn bucket(self, t: OffsetDateTime) -> String {
        let t = t.to_offset(time::UtcOffset::UTC);
        let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
        match self {
            Period::Hour => format!("{y}-{m:02}-{d:02} {:02}h", t.hour()),
            Period::Day => format!("{y}-{m:02}-{d:02}"),
            Period::Week => {
                let (iy, w, _) = t.to_iso_week_date();
                format!("{iy}-W{w:02}")
            }
            Period::Month => format!("{y}-{m:02}"),
            Period::Year => format!("{y}"),
        }
    }
}

/// `7d`, `36h`, `90m`: the largest unit that divides the duration.
pub fn describe(d: Duration) -> String {
    let s = d.whole_seconds();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `--keep-within` values: a number with a unit, `30m`, `12h`, `7d`,
/// `4w`, `6M` (30-day months), `1y` (365 days).
/// `what` names where the value came from (`--keep-within`, or
/// `keep_within in [prune] of FILE`).
pub fn parse_within(s: &str, what: &str) -> Result<Duration, CoreError> {
    within(s).map_err(|why| CoreError::Config {
        message: format!("{what} {s}: {why}"),
        hint: WITHIN_EXAMPLE.into(),
    })
}

/// What a good `keep_within` looks like.
pub const WITHIN_EXAMPLE: &str =
    "a number and a unit: 30m, 12h, 7d, 4w, 6M (30 days) or 1y (365 days)";

/// [`parse_within`] in words only: on a bad value, what is wrong with it.
pub fn within(s: &str) -> Result<Duration, String> {
    let bad = || "not a duration greater than 0 (at most 1000y)".to_string();
    let s = s.trim();
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let per = match unit {
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'M' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(per) {
        Some(secs) if n > 0 && secs <= 1000 * 365 * 86_400 => Ok(Duration::seconds(secs)),
        _ => Err(bad()),
    }
}

/// One snapshot's fate.
#[derive(Debug, Clone, Serialize)]
pub struct Fate {
    /// File name.
    pub name: String,
    /// Where it is.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was taken.
    pub created_at: Option<String>,
    /// Its target.
    pub target: Option<String>,
    /// Why it stays (empty for one that goes).
    pub reasons: Vec<String>,
}

/// What `prune` did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Nothing was removed.
    pub dry_run: bool,
    /// The snapshots that stay, each with why.
    pub kept: Vec<Fate>,
    /// The snapshots removed.
    pub removed: Vec<Fate>,
    /// Bytes the removed snapshots held.
    pub freed: u64,
    /// Per group where something goes, the newest snapshot that passed
    /// `verify` (kept whatever the rules say).
    pub newest_verified: Vec<String>,
    /// Snapshots found to fail `verify` on the way (newer than those):
    /// the keep rules count them, which is why the newest that verifies is
    /// kept as well.
    pub failing_verification: Vec<String>,
}

impl PruneReport {
    /// Nothing kept, nothing removed (a repository with no snapshots yet).
    pub fn empty() -> PruneReport {
        PruneReport {
            dry_run: true,
            kept: Vec::new(),
            removed: Vec::new(),
            freed: 0,
            newest_verified: Vec::new(),
            failing_verification: Vec::new(),
        }
    }
}

/// The plan of a prune: every snapshot of `repo` (of `target`, when
/// given) with why it stays or that it goes; nothing is removed.
pub fn plan(
    repo: &Arc<dyn Repository>,
    policy: &Policy,
    target: Option<&str>,
    now: OffsetDateTime,
    crypto: &crate::crypt::Crypto,
) -> Result<PruneReport, CoreError> {
    if policy.keeps_nothing() {
        return Err(CoreError::Config {
            message: "prune needs at least one rule that keeps snapshots".into(),
            hint: "e.g. --keep-last 7 --keep-daily 14 --keep-weekly 8 --keep-monthly 12, \
                   or keep_* in [prune] of dbsnap.toml"
                .into(),
        });
    }
    let rows: Vec<ListEntry> = inspect::list(repo)?
        .into_iter()
        .filter(|r| target.is_none() || r.target.as_deref() == target)
        .collect();
    let pinned = repo.pinned()?;
    let mut items: Vec<Item> = rows
        .iter()
        .map(|r| Item {
            time: (r.status == crate::inspect::Status::Ok)
                .then(|| r.created_at.as_deref().and_then(inspect::parse_time))
                .flatten(),
            group: r.target.clone().unwrap_or_default(),
            safety: r.safety,
            pinned: pinned.contains(&r.name),
            verified: false,
            drilled: false,
        })
        .collect();
    // In every group, the newest snapshot that passed a drill (the last
    // proof that a restore works) stays whatever the rules say, also when a
    // later drill of it failed for a reason not its own (a role, a check);
    // one a drill found damaged has lost it.
    let mut drilled_groups = BTreeSet::new();
    let mut order: Vec<usize> = (0..rows.len())
        .filter(|&i| items[i].time.is_some() && !items[i].safety)
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].time));
    for i in order {
        if rows[i].drill.as_ref().is_some_and(|d| d.proven())
            && drilled_groups.insert(items[i].group.clone())
        {
            items[i].drilled = true;
        }
    }
    let mut reasons = decide(&items, policy, now);
    // In every group where something would go, the newest snapshot that
    // verifies stays whatever the rules say (read in full, newest first,
    // until one passes); a group where none does loses nothing.
    let (mut newest_verified, mut failing) = (Vec::new(), Vec::new());
    let groups: BTreeSet<String> = (0..rows.len())
        .filter(|&i| reasons[i].is_empty())
        .map(|i| items[i].group.clone())
        .collect();
    for group in groups {
        let mut order: Vec<usize> = (0..rows.len())
            .filter(|&i| items[i].group == group && items[i].time.is_some() && !items[i].safety)
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(items[i].time));
        let mut verified = None;
        for i in order {
            if passes(repo, &rows[i].name, crypto)? {
                verified = Some(i);
                break;
            }
            failing.push(rows[i].name.clone());
        }
        match verified {
            Some(i) => {
                items[i].verified = true;
                newest_verified.push(rows[i].name.clone());
            }
            None => {
                return Err(CoreError::Verify {
                    file: repo.location(),
                    message: format!(
                        "no snapshot{} passes verification: prune removes nothing\n\
                         hint: `dbsnap verify FILE` says what is wrong with each; take a new snapshot, \
                         then prune again",
                        match group.as_str() {
                            "" => " taken without a target".to_string(),
                            g => format!(" of target {g}"),
                        }
                    ),
                })
            }
        }
    }
    reasons = decide(&items, policy, now);
    let mut report = PruneReport {
        newest_verified,
        failing_verification: failing.clone(),
        ..PruneReport::empty()
    };
    for (r, mut why) in rows.into_iter().zip(reasons) {
        if !why.is_empty() && failing.contains(&r.name) {
            why.push("fails verification".into());
        }
        let fate = Fate {
            name: r.name,
            path: r.path,
            size: r.size,
            created_at: r.created_at,
            target: r.target,
            reasons: why,
        };
        if fate.reasons.is_empty() {
            report.freed += fate.size;
            report.removed.push(fate);
        } else {
            report.kept.push(fate);
        }
    }
    Ok(report)
}

/// Removes what `report` (a [`plan`]) says goes, re-reading the pins
/// first (a snapshot pinned since the plan stays).
pub fn carry_out(
    repo: &Arc<dyn Repository>,
    mut report: PruneReport,
) -> Result<PruneReport, CoreError> {
    let mut removed = Vec::new();
    let pinned = repo.pinned()?;
    for fate in std::mem::take(&mut report.removed) {
        if pinned.contains(&fate.name) {
            report.freed -= fate.size;
            report.kept.push(Fate {
                reasons: vec!["pinned".into()],
                ..fate
            });
            continue;
        }
        repo.delete(&fate.name)?;
        tracing::info!("pruned {}", fate.path);
        removed.push(fate);
    }
    report.removed = removed;
    report.dry_run = false;
    Ok(report)
}

/// Whether the snapshot passes `verify` (a failure is logged).
/// Whether a snapshot verifies. A snapshot that could not be read (the
/// repository failed, not the snapshot) stops the prune: its verdict is
/// unknown, and the rule must not pass to an older one because of it.
fn passes(
    repo: &Arc<dyn Repository>,
    name: &str,
    crypto: &crate::crypt::Crypto,
) -> Result<bool, CoreError> {
    let snapshot = SnapshotRef::new(repo.clone(), name);
    let failure = match inspect::verify(&snapshot, crypto) {
        Ok(report) if report.ok => return Ok(true),
        Ok(report) => report.error.unwrap_or_default(),
        Err(e) if e.exit_code() == crate::error::exit::STORAGE => return Err(e),
        Err(e) => e.to_string(),
    };
    tracing::warn!("{} fails verification: {failure}", snapshot.display());
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn item(t: OffsetDateTime) -> Item {
        Item {
            time: Some(t),
            group: "app".into(),
            safety: false,
            pinned: false,
            verified: false,
            drilled: false,
        }
    }

    fn kept(items: &[Item], policy: &Policy, now: OffsetDateTime) -> Vec<bool> {
        decide(items, policy, now)
            .iter()
            .map(|r| !r.is_empty())
            .collect()
    }

    #[test]
    fn the_newest_drilled_snapshot_stays_whatever_the_rules_say() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let mut items = [
            item(datetime!(2026-11-23 10:00 UTC)),
            item(datetime!(2026-11-20 10:00 UTC)),
            item(datetime!(2026-11-10 10:00 UTC)),
        ];
        items[1].drilled = true;
        let policy = Policy {
            last: 1,
            ..Policy::default()
        };
        assert_eq!(kept(&items, &policy, now), [true, true, false]);
        assert_eq!(
            decide(&items, &policy, now)[1],
            ["newest that passed a drill"]
        );
    }

    #[test]
    fn daily_keeps_the_newest_of_each_of_the_last_days_with_one() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let items = [
            item(datetime!(2026-11-23 10:00 UTC)),
            item(datetime!(2026-11-23 08:00 UTC)),
            item(datetime!(2026-11-21 23:00 UTC)),
            item(datetime!(2026-11-20 01:00 UTC)),
        ];
        let policy = Policy {
            daily: 2,
            ..Policy::default()
        };
        assert_eq!(kept(&items, &policy, now), [true, false, true, false]);
        let why = decide(&items, &policy, now);
        assert_eq!(why[2], ["daily 2026-11-21"]);
    }

    #[test]
    fn rules_add_up_and_name_themselves() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let items = [
            item(datetime!(2026-11-23 10:00 UTC)),
            item(datetime!(2026-11-16 10:00 UTC)),
            item(datetime!(2026-10-01 10:00 UTC)),
            item(datetime!(2025-06-01 10:00 UTC)),
        ];
        let policy = Policy {
            last: 1,
            weekly: 2,
            monthly: 3,
            yearly: 2,
            within: Some(Duration::days(1)),
            ..Policy::default()
        };
        let why = decide(&items, &policy, now);
        assert_eq!(
            why[0],
            [
                "last 1",
                "weekly 2026-W48",
                "monthly 2026-11",
                "yearly 2026",
                "within 1d"
            ]
        );
        assert_eq!(why[1], ["weekly 2026-W47"]);
        assert_eq!(why[2], ["monthly 2026-10"]);
        assert_eq!(why[3], ["monthly 2025-06", "yearly 2025"]);
    }

    #[test]
    fn durations() {
        let within = |s: &str| parse_within(s, "--keep-within");
        assert_eq!(within("7d").unwrap(), Duration::days(7));
        assert_eq!(within("36h").unwrap(), Duration::hours(36));
        assert_eq!(within("2w").unwrap(), Duration::days(14));
        assert_eq!(describe(within("90m").unwrap()), "90m");
        for bad in [
            "",
            "7",
            "d",
            "-1d",
            "0d",
            "3x",
            "1.5d",
            "99999y",
            "10000000000m",
        ] {
            assert!(within(bad).is_err(), "{bad}");
        }
        assert!(Policy::default().keeps_nothing());
    }

    fn history() -> impl Strategy<Value = (Vec<Item>, Policy)> {
        let one = (
            0i64..(3 * 365 * 86_400),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.05),
            0..3usize,
        )
            .prop_map(|(ago, pinned, safety, unreadable, group)| Item {
                time: (!unreadable)
                    .then(|| datetime!(2026-11-23 12:00 UTC) - Duration::seconds(ago)),
                group: format!("g{group}"),
                safety,
                pinned,
                verified: false,
                drilled: false,
            });
        let policy = (
            0..5usize,
            0..5usize,
            0..10usize,
            0..6usize,
            0..13usize,
            0..3usize,
            prop::option::of(1i64..400),
            0..4usize,
        )
            .prop_map(
                |(last, hourly, daily, weekly, monthly, yearly, within, safety)| Policy {
                    last,
                    hourly,
                    daily,
                    weekly,
                    monthly,
                    yearly,
                    within: within.map(Duration::days),
                    safety,
                },
            );
        (prop::collection::vec(one, 0..60), policy)
    }

    proptest! {
        /// The rules' promises hold on any history.
        #[test]
        fn promises_hold((mut items, policy) in history(), verified in any::<prop::sample::Index>()) {
            let now = datetime!(2026-11-23 12:00 UTC);
            if !items.is_empty() {
                let i = verified.index(items.len());
                items[i].verified = true;
            }
            let keep = kept(&items, &policy, now);
            for (i, it) in items.iter().enumerate() {
                // Pinned, verified and unreadable snapshots always stay.
                if it.pinned || it.verified || it.time.is_none() {
                    prop_assert!(keep[i]);
                }
            }
            let mut groups: Vec<&str> = items.iter().map(|i| i.group.as_str()).collect();
            groups.sort();
            groups.dedup();
            for g in groups {
                let mut regular: Vec<usize> = (0..items.len())
                    .filter(|&i| items[i].group == g && !items[i].safety && items[i].time.is_some())
                    .collect();
                regular.sort_by_key(|&i| std::cmp::Reverse(items[i].time));
                // The newest `last` of the group stay.
                for &i in regular.iter().take(policy.last) {
                    prop_assert!(keep[i]);
                }
                // Everything within the window stays.
                if let Some(w) = policy.within {
                    for &i in &regular {
                        if items[i].time.unwrap() > now - w {
                            prop_assert!(keep[i]);
                        }
                    }
                }
                // The newest of each of the newest `daily` days stays, and
                // no two kept only for `daily` share a day.
                let mut days: Vec<String> = Vec::new();
                for &i in &regular {
                    let day = Period::Day.bucket(items[i].time.unwrap());
                    if !days.contains(&day) {
                        if days.len() == policy.daily {
                            break;
                        }
                        prop_assert!(keep[i]);
                        days.push(day);
                    }
                }
                // At most `daily` of the group are kept for `daily`.
                let why = decide(&items, &policy, now);
                let daily = regular
                    .iter()
                    .filter(|&&i| why[i].iter().any(|r| r.starts_with("daily ")))
                    .count();
                prop_assert!(daily <= policy.daily);
            }
            // Safety snapshots: exactly the newest `safety` of them stay
            // unless pinned, verified or unreadable.
            let mut safety: Vec<usize> = (0..items.len())
                .filter(|&i| items[i].safety && items[i].time.is_some())
                .collect();
            safety.sort_by_key(|&i| std::cmp::Reverse(items[i].time));
            for (n, &i) in safety.iter().enumerate() {
                let protected = items[i].pinned || items[i].verified;
                prop_assert_eq!(keep[i], n < policy.safety || protected);
            }
            // With no rule at all, only protected snapshots stay.
            let none = Policy::default();
            let keep = kept(&items, &none, now);
            for (i, it) in items.iter().enumerate() {
                prop_assert_eq!(keep[i], it.pinned || it.verified || it.time.is_none());
            }
        }
    }
}
