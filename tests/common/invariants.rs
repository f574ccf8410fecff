//! The fault suite's fleet of edX users and the checker of the design's invariants, read
//! from the databases themselves (the MariaDB edX database and the PostgreSQL store), never
//! from lethe's own report.
//!
//! Every seeded row's id is `owner * 1000 + k`, so whose row it is survives the deletion of
//! any link; the checker compares what is there with what was seeded.
#![allow(dead_code)]

use super::smtp::Received;
use lethe::pii::HashKey;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The warning's subject line (templates/en/warning.toml with the preset's site name).
pub const WARNING_SUBJECT: &str = "Your Example Learning account will be deleted";

/// The downstream services of the edX preset, each of which must acknowledge.
pub const SERVICES: [&str; 2] = ["joanie", "ashley"];

/// A seeded table: its name, the SQL expression of its row's owner, rows per user, and
/// whether the owner's retirement deletes the row (forum posts stay, their author nulled).
struct Owned {
    table: &'static str,
    owner: &'static str,
    per_user: i64,
    deleted: bool,
}

const OWNED: &[Owned] = &[
    owned("auth_userprofile", "user_id", 1),
    owned("student_courseenrollment", "user_id", 2),
    owned(
        "student_courseenrollmentattribute",
        "enrollment_id DIV 1000",
        2,
    ),
    owned("student_manualenrollmentaudit", "enrollment_id DIV 1000", 2),
    owned("courseware_studentmodule", "student_id", 3),
    owned(
        "courseware_studentmodulehistory",
        "student_module_id DIV 1000",
        6,
    ),
    owned(
        "verify_student_softwaresecurephotoverification",
        "user_id",
        1,
    ),
    owned("user_api_userpreference", "user_id", 2),
    owned("student_historicalcourseenrollment", "user_id", 1),
    owned("student_courseenrollmentallowed", "id DIV 1000", 1),
    Owned {
        table: "forum_post",
        owner: "author_id",
        per_user: 1,
        deleted: false,
    },
];

const fn owned(table: &'static str, owner: &'static str, per_user: i64) -> Owned {
    Owned {
        table,
        owner,
        per_user,
        deleted: true,
    }
}

/// Columns naming another user as an actor: nulled, never deleted, when that user goes.
const ACTOR_LINKS: &[(&str, &str)] = &[
    ("student_manualenrollmentaudit", "enrolled_by_id"),
    (
        "verify_student_softwaresecurephotoverification",
        "reviewing_user_id",
    ),
    ("forum_post", "author_id"),
];

/// What should become of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Inactive: warned, deleted everywhere, acknowledged, COMPLETE.
    Complete,
    /// Logged in during the grace period: ABORTED, nothing deleted.
    Aborted,
    /// Holds a protected row: ERRORED "protected", nothing deleted.
    Protected,
    /// Logged in while its deletion may have been in flight: ABORTED with everything, or
    /// COMPLETE with nothing, never in between.
    Either,
    /// Active or staff: never opened, never touched.
    Untouched,
}

/// The users of one run.
pub struct Fleet {
    /// Inactive users: 1..=inactive.
    pub inactive: i64,
    /// Active users after the inactive, protected and staff ones.
    pub active: i64,
    /// What each user should end as.
    pub expect: BTreeMap<i64, Expect>,
}

impl Fleet {
    /// `inactive` inactive users, one protected, two inactive staff and `active` active.
    pub fn new(inactive: i64, active: i64) -> Fleet {
        let mut expect = BTreeMap::new();
        for u in 1..=inactive {
            expect.insert(u, Expect::Complete);
        }
        expect.insert(inactive + 1, Expect::Protected);
        for u in inactive + 2..=inactive + 3 + active {
            expect.insert(u, Expect::Untouched);
        }
        Fleet {
            inactive,
            active,
            expect,
        }
    }

    /// The protected user.
    pub fn protected(&self) -> i64 {
        self.inactive + 1
    }

    /// Every user.
    pub fn total(&self) -> i64 {
        self.inactive + 3 + self.active
    }

    /// The retirements the scans should open.
    pub fn opened(&self) -> usize {
        self.expect
            .values()
            .filter(|e| **e != Expect::Untouched)
            .count()
    }

    /// The email of user `u`.
    pub fn email(u: i64) -> String {
        format!("user{u}@example.org")
    }

    /// The SQL that seeds the fleet (after the edX fixture's DDL): every user owns rows in
    /// every table of [`OWNED`]; inactive users' actor columns name active users and active
    /// users' name inactive ones (so retiring a user nulls other users' columns).
    pub fn seed(&self) -> Vec<String> {
        let (n, a, total) = (self.inactive, self.active, self.total());
        let actor = |u: &str| {
            format!(
                "CASE WHEN {u} > {} THEN ({u} % {n}) + 1 ELSE {} + ({u} % {a}) END",
                n + 3,
                n + 4
            )
        };
        let users = format!("seq_1_to_{total}");
        vec![
            "CREATE TABLE student_historicalcourseenrollment (id BIGINT PRIMARY KEY, data VARCHAR(255) NULL, \
             user_id BIGINT NULL, FOREIGN KEY (user_id) REFERENCES auth_user (id))"
                .into(),
            format!(
                "INSERT INTO auth_user (id, username, email, is_staff, is_superuser, last_login, date_joined) \
                 SELECT seq, CONCAT('user', seq), CONCAT('user', seq, '@example.org'), 0, 0, \
                 '2015-01-01', '2014-01-01' FROM {users}"
            ),
            format!("UPDATE auth_user SET is_staff = 1 WHERE id IN ({}, {})", n + 2, n + 3),
            format!("UPDATE auth_user SET last_login = NOW() WHERE id > {}", n + 3),
            format!("INSERT INTO auth_userprofile (id, data, user_id) SELECT seq * 1000 + 1, 'x', seq FROM {users}"),
            format!(
                "INSERT INTO student_courseenrollment (id, data, user_id) SELECT u.seq * 1000 + k.seq, 'x', u.seq \
                 FROM {users} u, seq_1_to_2 k"
            ),
            "INSERT INTO student_courseenrollmentattribute (id, data, enrollment_id) \
             SELECT id, 'x', id FROM student_courseenrollment"
                .into(),
            format!(
                "INSERT INTO student_manualenrollmentaudit (id, data, enrollment_id, enrolled_by_id) \
                 SELECT id, 'x', id, {} FROM student_courseenrollment",
                actor("(id DIV 1000)")
            ),
            format!(
                "INSERT INTO courseware_studentmodule (id, data, student_id) SELECT u.seq * 1000 + k.seq, 'x', u.seq \
                 FROM {users} u, seq_1_to_3 k"
            ),
            format!(
                "INSERT INTO courseware_studentmodulehistory (id, data, student_module_id) \
                 SELECT u.seq * 1000 + k.seq, 'x', u.seq * 1000 + (k.seq + 1) DIV 2 FROM {users} u, seq_1_to_6 k"
            ),
            format!(
                "INSERT INTO verify_student_softwaresecurephotoverification (id, data, user_id, reviewing_user_id) \
                 SELECT seq * 1000 + 1, 'x', seq, {} FROM {users}",
                actor("seq")
            ),
            format!(
                "INSERT INTO user_api_userpreference (id, data, user_id) SELECT u.seq * 1000 + k.seq, 'x', u.seq \
                 FROM {users} u, seq_1_to_2 k"
            ),
            format!(
                "INSERT INTO student_historicalcourseenrollment (id, data, user_id) SELECT seq * 1000 + 1, 'x', seq FROM {users}"
            ),
            format!(
                "INSERT INTO student_courseenrollmentallowed (id, data, email) \
                 SELECT seq * 1000 + 1, 'x', CONCAT('user', seq, '@example.org') FROM {users}"
            ),
            format!("INSERT INTO forum_post (id, data, author_id) SELECT seq * 1000 + 1, 'x', seq FROM {users}"),
            format!(
                "INSERT INTO authtoken_token (id, data, user_id) VALUES ({p} * 1000 + 1, 'x', {p})",
                p = self.protected()
            ),
        ]
    }
}

/// What the checker found, each count by the invariant's name.
#[derive(Debug, Default)]
pub struct Report {
    /// Users not in the state they should have ended in.
    pub lost: usize,
    /// Active, staff, protected or aborted users whose auth_user row is gone.
    pub active_deleted: usize,
    /// Rows of users who were not retired, missing or changed beyond a nulled actor column.
    pub wrong_deletions: usize,
    /// Users with some of their rows deleted and some left.
    pub half_deleted: usize,
    /// Deleted users without a warning accepted at least the grace period earlier.
    pub deleted_without_notice: usize,
    /// Retirements whose events do not chain from their opening to their state.
    pub missing_events: usize,
    /// COMPLETE retirements some service has not acknowledged.
    pub unacknowledged_complete: usize,
    /// Ended retirements still holding an email, username or subject.
    pub pii_kept: usize,
    /// Warnings accepted by the SMTP server beyond one per user.
    pub duplicate_warnings: usize,
    /// One line per finding, naming the user or retirement (ids only).
    pub findings: Vec<String>,
}

impl Report {
    /// The invariants broken, by name; duplicate warnings count only beyond `kills`.
    pub fn broken(&self, kills: usize) -> Vec<&'static str> {
        [
            ("lost", self.lost),
            ("active_deleted", self.active_deleted),
            ("wrong_deletions", self.wrong_deletions),
            ("half_deleted", self.half_deleted),
            ("deleted_without_notice", self.deleted_without_notice),
            ("missing_events", self.missing_events),
            ("unacknowledged_complete", self.unacknowledged_complete),
            ("pii_kept", self.pii_kept),
            (
                "duplicate_warnings",
                self.duplicate_warnings.saturating_sub(kills),
            ),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, _)| name)
        .collect()
    }

    fn find(&mut self, line: String) {
        if self.findings.len() < 50 {
            self.findings.push(line);
        }
    }
}

/// One retirement as the store has it.
struct Retirement {
    id: i64,
    state: String,
    last_error: Option<String>,
    warned_at: Option<chrono::DateTime<chrono::Utc>>,
    pii: bool,
    ended: bool,
}

/// Checks every invariant against the edX database (`edx_url`), the store (`store_url`)
/// and the messages the SMTP server accepted.
pub async fn check(
    fleet: &Fleet,
    edx_url: &str,
    store_url: &str,
    key: &HashKey,
    grace: chrono::Duration,
    mail: &[Received],
) -> Report {
    let mut report = Report::default();
    let edx = sqlx::MySqlPool::connect(edx_url).await.unwrap();
    let store = sqlx::PgPool::connect(store_url).await.unwrap();

    let roots: BTreeSet<i64> = sqlx::query_scalar("SELECT id FROM auth_user")
        .fetch_all(&edx)
        .await
        .unwrap()
        .into_iter()
        .collect();
    // Rows per owner and table, and those changed beyond a nulled actor column.
    let mut rows: HashMap<(&str, i64), (i64, i64)> = HashMap::new();
    for t in OWNED {
        let sql = format!(
            "SELECT id DIV 1000 AS owner, COUNT(*) AS n, \
             CAST(SUM(COALESCE(data, '') <> 'x' OR COALESCE({}, -1) <> id DIV 1000) AS SIGNED) AS changed \
             FROM {} GROUP BY id DIV 1000",
            t.owner, t.table
        );
        for row in sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&edx)
            .await
            .unwrap()
        {
            let owner: i64 = row.get("owner");
            rows.insert((t.table, owner), (row.get("n"), row.get("changed")));
        }
    }
    // Links still naming a user: an actor column, or the email of an invitation.
    let mut links: HashMap<i64, i64> = HashMap::new();
    for (table, column) in ACTOR_LINKS {
        let sql = format!(
            "SELECT {column} AS u, COUNT(*) AS n FROM {table} WHERE {column} IS NOT NULL GROUP BY {column}"
        );
        for row in sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&edx)
            .await
            .unwrap()
        {
            *links.entry(row.get("u")).or_default() += row.get::<i64, _>("n");
        }
    }

    let retirements = retirements(&store, fleet, key).await;
    let warnings = warnings_by_email(mail);
    for (&u, &expect) in &fleet.expect {
        let root = roots.contains(&u);
        let mut present = 0;
        let mut seeded = 0;
        for t in OWNED.iter().filter(|t| t.deleted) {
            present += rows.get(&(t.table, u)).map_or(0, |r| r.0);
            seeded += t.per_user;
        }
        let gone = !root && present == 0 && links.get(&u).copied().unwrap_or(0) == 0;
        let whole = root && present == seeded;
        if !gone && !whole {
            report.half_deleted += 1;
            report.find(format!(
                "user {u}: half deleted (auth_user {}, {present} of {seeded} rows, {} links)",
                if root { "present" } else { "gone" },
                links.get(&u).copied().unwrap_or(0)
            ));
        }
        let retired = retirements.get(&u);
        let state = retired.map(|r| r.state.as_str());
        let kept = match expect {
            Expect::Complete => false,
            Expect::Either => state != Some("COMPLETE"),
            _ => true,
        };
        if kept {
            if !root {
                report.active_deleted += 1;
                report.find(format!("user {u}: auth_user row deleted ({expect:?})"));
            }
            for t in OWNED {
                let (n, changed) = rows.get(&(t.table, u)).copied().unwrap_or((0, 0));
                let wrong = (t.per_user - n).max(0) + changed;
                if wrong > 0 {
                    report.wrong_deletions += wrong as usize;
                    report.find(format!(
                        "user {u}: {wrong} rows of {} deleted or changed",
                        t.table
                    ));
                }
            }
        }
        let ok = match (expect, state) {
            (Expect::Complete, Some("COMPLETE")) => gone,
            (Expect::Aborted, Some("ABORTED")) => whole,
            (Expect::Either, Some("COMPLETE")) => gone,
            (Expect::Either, Some("ABORTED")) => whole,
            (Expect::Protected, Some("ERRORED")) => {
                whole
                    && retired
                        .and_then(|r| r.last_error.as_deref())
                        .is_some_and(|e| e.contains("protected: authtoken_token.user_id"))
            }
            (Expect::Untouched, None) => whole,
            _ => false,
        };
        if !ok {
            report.lost += 1;
            let trail = match retired {
                Some(r) => trail(&store, r.id).await,
                None => String::new(),
            };
            report.find(format!(
                "user {u}: expected {expect:?}, found {state:?} (rows {}){trail}",
                if gone {
                    "gone"
                } else if whole {
                    "all there"
                } else {
                    "partly gone"
                }
            ));
        }
        if !root {
            let noticed = retired.and_then(|r| r.warned_at).is_some()
                && warnings.get(&Fleet::email(u)).copied().unwrap_or(0) > 0;
            let entered = match retired {
                Some(r) => first_entry(&store, r.id, "RETIRING_EDX").await,
                None => None,
            };
            let waited = match (retired.and_then(|r| r.warned_at), entered) {
                (Some(warned), Some(entered)) => entered >= warned + grace,
                _ => false,
            };
            if !noticed || !waited {
                report.deleted_without_notice += 1;
                report.find(format!(
                    "user {u}: deleted without a notice the grace period before (warned {noticed}, waited {waited})"
                ));
            }
        }
    }
    for (email, n) in &warnings {
        if *n > 1 {
            report.duplicate_warnings += n - 1;
            let user = email.trim_start_matches("user").split('@').next();
            report.find(format!("user {}: {n} warnings", user.unwrap_or("?")));
        }
    }
    check_events(&store, &mut report).await;
    check_completion(&store, &retirements, &mut report).await;
    edx.close().await;
    store.close().await;
    report
}

/// The latest retirement of each fleet user, found through the subject hash (the subject
/// itself is erased when a retirement ends).
async fn retirements(
    store: &sqlx::PgPool,
    fleet: &Fleet,
    key: &HashKey,
) -> BTreeMap<i64, Retirement> {
    let by_hash: HashMap<String, i64> = fleet
        .expect
        .keys()
        .map(|u| (key.subject(&u.to_string()), *u))
        .collect();
    let rows = sqlx::query(
        "SELECT id, subject_hash, state, last_error, warned_at, ended_at IS NOT NULL AS ended, \
         (email IS NOT NULL OR username IS NOT NULL OR subject IS NOT NULL) AS pii \
         FROM retirement ORDER BY id",
    )
    .fetch_all(store)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for row in rows {
        let hash: String = row.get("subject_hash");
        if let Some(u) = by_hash.get(&hash) {
            out.insert(
                *u,
                Retirement {
                    id: row.get("id"),
                    state: row.get("state"),
                    last_error: row.get("last_error"),
                    warned_at: row.get("warned_at"),
                    pii: row.get("pii"),
                    ended: row.get("ended"),
                },
            );
        }
    }
    out
}

/// Warnings accepted per recipient.
fn warnings_by_email(mail: &[Received]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for message in mail {
        let warning = message
            .header("Subject")
            .is_some_and(|s| s.starts_with(WARNING_SUBJECT));
        if warning {
            for to in &message.to {
                *out.entry(to.clone()).or_default() += 1;
            }
        }
    }
    out
}

/// Retirement `id`'s events, one per line, for a finding.
async fn trail(store: &sqlx::PgPool, id: i64) -> String {
    let rows = sqlx::query(
        "SELECT to_char(at, 'HH24:MI:SS.MS') AS at, actor, from_state, to_state, outcome, detail \
         FROM retirement_event WHERE retirement_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(store)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            format!(
                "\n    {} {} {:?} -> {} {} {}",
                r.get::<String, _>("at"),
                r.get::<String, _>("actor"),
                r.get::<Option<String>, _>("from_state"),
                r.get::<String, _>("to_state"),
                r.get::<String, _>("outcome"),
                r.get::<String, _>("detail"),
            )
        })
        .collect()
}

/// When retirement `id` first entered `state`.
async fn first_entry(
    store: &sqlx::PgPool,
    id: i64,
    state: &str,
) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar(
        "SELECT MIN(at) FROM retirement_event WHERE retirement_id = $1 AND to_state = $2 \
         AND from_state IS DISTINCT FROM $2",
    )
    .bind(id)
    .bind(state)
    .fetch_one(store)
    .await
    .unwrap()
}

/// One event's (from, to) states.
type Transition = (Option<String>, Option<String>);

/// Every retirement's events chain from its opening (no from-state) to its current state,
/// each event starting where the one before ended: a transition lost or recorded twice
/// breaks the chain.
async fn check_events(store: &sqlx::PgPool, report: &mut Report) {
    let rows = sqlx::query(
        "SELECT r.id, r.state, e.from_state, e.to_state FROM retirement r \
         LEFT JOIN retirement_event e ON e.retirement_id = r.id ORDER BY r.id, e.id",
    )
    .fetch_all(store)
    .await
    .unwrap();
    let mut chains: BTreeMap<i64, (String, Vec<Transition>)> = BTreeMap::new();
    for row in rows {
        let entry = chains
            .entry(row.get("id"))
            .or_insert_with(|| (row.get("state"), Vec::new()));
        entry.1.push((row.get("from_state"), row.get("to_state")));
    }
    for (id, (state, events)) in chains {
        let mut at: Option<String> = None;
        let mut broken = events.first().is_none_or(|e| e.0.is_some());
        for (from, to) in &events {
            if at.is_some() && from.as_ref() != at.as_ref() {
                broken = true;
            }
            at = to.clone();
        }
        if broken || at.as_deref() != Some(state.as_str()) {
            report.missing_events += 1;
            report.find(format!(
                "retirement {id}: its events do not chain to {state}"
            ));
        }
    }
}

/// COMPLETE retirements are acknowledged by every service; ended ones hold no PII.
async fn check_completion(
    store: &sqlx::PgPool,
    retirements: &BTreeMap<i64, Retirement>,
    report: &mut Report,
) {
    let acked: BTreeSet<(i64, String)> =
        sqlx::query("SELECT retirement_id, service FROM service_ack WHERE status = 'deleted'")
            .fetch_all(store)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.get("retirement_id"), row.get("service")))
            .collect();
    for (u, r) in retirements {
        if r.state == "COMPLETE" {
            for service in SERVICES {
                if !acked.contains(&(r.id, service.to_string())) {
                    report.unacknowledged_complete += 1;
                    report.find(format!(
                        "user {u}: COMPLETE without {service}'s acknowledgement"
                    ));
                }
            }
        }
        if r.ended && r.pii {
            report.pii_kept += 1;
            report.find(format!("user {u}: ended ({}) with its PII kept", r.state));
        }
    }
}
