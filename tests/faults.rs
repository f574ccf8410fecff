//! Proof under faults. Users go through the shipped edX preset (`lethe run`, the binary)
//! against the real MariaDB, the real PostgreSQL store, a local SMTP server, wiremock
//! Sarbacane and a webhook receiver, the downstream services pulling and acknowledging
//! through the API, while the daemon is killed with SIGKILL and restarted, two daemons
//! share the store for a while, SMTP refuses and drops mail, the edX connection is cut in
//! the middle of deletions, the HTTP services fail, throttle and stall, the store's
//! connection goes away for seconds, and users log in during their grace period. Then the
//! invariants are checked against the databases (tests/common/invariants.rs).
//!
//! `cargo test --release --test faults`; `LETHE_FAULTS_USERS=5000 LETHE_FAULTS_KILLS=20`
//! for the full size (the default fits in CI).

mod common;

use common::invariants::{self, Expect, Fleet, Report};
use common::proxy::Proxy;
use common::smtp::{Fault, SmtpServer};
use common::target::Fixture;
use common::{Kind, TestDb, api_keys, edx, exec, key, mocks, repo_root};
use lethe::sql::Dialect;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const HASH_KEY: &str = "test-key-0123456789";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const GRACE_SECS: i64 = 3;
const SERVICE_KEYS: [(&str, &str, &str); 3] = [
    ("joanie", "service:joanie", "key-joanie-0123456789"),
    ("ashley", "service:ashley", "key-ashley-0123456789"),
    ("ops", "operator", "key-ops-0123456789"),
];

fn size() -> (i64, usize) {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        env("LETHE_FAULTS_USERS", 60) as i64,
        env("LETHE_FAULTS_KILLS", 3),
    )
}

/// A small deterministic generator (xorshift): the run prints its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Everything one run needs, dropped (databases, servers, directory) at the end.
struct World {
    fleet: Fleet,
    edx: Fixture,
    store: TestDb,
    smtp: SmtpServer,
    sarbacane: MockServer,
    joanie: MockServer,
    edx_proxy: Proxy,
    store_proxy: Proxy,
    dir: PathBuf,
}

impl World {
    async fn new(inactive: i64, active: i64) -> World {
        let fleet = Fleet::new(inactive, active);
        let edx = Fixture::with(
            Dialect::MySql,
            &edx::ddl(Dialect::MySql),
            &fleet.seed(),
            Default::default(),
        )
        .await;
        let store = TestDb::new(Kind::Postgres).await;
        let smtp = SmtpServer::start().await;
        let sarbacane = mocks::sarbacane("key-1").await;
        let joanie = mocks::webhook_receiver().await;
        let edx_proxy = Proxy::start(&host_port(&edx.url)).await;
        let store_proxy = Proxy::start(&host_port(&store.url)).await;
        let dir = std::env::temp_dir().join(format!(
            "lethe-faults-{}-{}",
            std::process::id(),
            store_proxy.port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let world = World {
            fleet,
            edx,
            store,
            smtp,
            sarbacane,
            joanie,
            edx_proxy,
            store_proxy,
            dir,
        };
        world.write_config();
        world
    }

    /// The shipped preset with its periods compressed and its URLs pointed here.
    fn write_config(&self) {
        let shipped = std::fs::read_to_string(repo_root().join("pipeline.toml")).unwrap();
        let overlay = format!(
            r#"
[policy]
grace_period = "{GRACE_SECS}s"
retry_base = "100ms"
retry_cap = "1s"
max_attempts = 50

[driver]
poll_interval = "50ms"
lease = "3s"
shutdown_grace = "1s"
batch_size = 50

[[stage]]
state = "WARNED"
reminders = ["1s"]
recheck = true

[[stage]]
state = "RETIRING_SARBACANE"
url = "{sarbacane}/v1"
timeout = "1s"

[[stage]]
state = "NOTIFIED"
recheck = "1s"
timeout = "1s"

[email]
host = "127.0.0.1"
port = {smtp}
tls = "none"
templates = "{templates}"
timeout = "2s"
rate_per_minute = 100000

[source]
scan_interval = "1s"
max_new_per_scan = 100000
max_new_share = 1.0

[[service]]
name = "joanie"
webhook_url = "{joanie}/hook"

[api]
listen = "127.0.0.1:0"
"#,
            sarbacane = self.sarbacane.uri(),
            smtp = self.smtp.port(),
            templates = repo_root().join("templates").display(),
            joanie = self.joanie.uri(),
        );
        let mut pipeline: toml::Value = toml::from_str(&shipped).unwrap();
        lethe::demo::merge(&mut pipeline, &toml::from_str(&overlay).unwrap());
        let text = format!(
            "{}\n{}",
            toml::to_string(&pipeline).unwrap(),
            api_keys(&SERVICE_KEYS)
        );
        std::fs::write(self.dir.join("pipeline.toml"), text).unwrap();
        std::fs::copy(
            repo_root().join("states.toml"),
            self.dir.join("states.toml"),
        )
        .unwrap();
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LETHE_HASH_KEY", HASH_KEY.into()),
            ("LETHE_STORE_URL", self.store_proxy.url(&self.store.url)),
            ("LETHE_SOURCE_URL", self.edx.url.clone()),
            ("LETHE_TARGET_EDX_URL", self.edx_proxy.url(&self.edx.url)),
            ("LETHE_SARBACANE_ACCOUNT_ID", "acc-1".into()),
            ("LETHE_SARBACANE_API_KEY", "key-1".into()),
            ("LETHE_SERVICE_JOANIE_SECRET", SECRET.into()),
        ]
    }

    /// `lethe ARGS` in the deployment's directory, its output appended to `log`.
    fn lethe(&self, args: &[&str], log: &str) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lethe"));
        cmd.current_dir(&self.dir)
            .args(args)
            .envs(self.env())
            .env_remove("LETHE_LOG")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        cmd
    }

    async fn check(&self) -> Report {
        invariants::check(
            &self.fleet,
            &self.edx.url,
            &self.store.url,
            &key(),
            chrono::Duration::seconds(GRACE_SECS),
            &self.smtp.messages(),
        )
        .await
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn host_port(url: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `lethe run` process and the port its API listens on.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(world: &World, log: &str) -> Daemon {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = world
            .lethe(&["run", "--listen", &listen], log)
            .spawn()
            .unwrap();
        Daemon { child, port }
    }

    fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The downstream services: each pulls its `to_delete` users from whichever daemon
/// answers and acknowledges them, until told to stop; failures (a killed daemon) are
/// retried on the next round.
async fn consume(ports: Arc<std::sync::Mutex<Vec<u16>>>, stop: Arc<AtomicBool>) -> usize {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut acked = 0;
    let mut round = 0usize;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let port = {
            let ports = ports.lock().unwrap();
            match ports.len() {
                0 => None,
                n => Some(ports[round % n]),
            }
        };
        if let Some(port) = port {
            for (service, _, key) in &SERVICE_KEYS[..2] {
                acked += pull_and_ack(&client, port, service, key).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acked
}

async fn pull_and_ack(client: &reqwest::Client, port: u16, service: &str, key: &str) -> usize {
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/v1/users?service={service}&deletion_status=to_delete&limit=100");
    let Ok(response) = client.get(&url).header("X-API-Key", key).send().await else {
        return 0;
    };
    let Ok(users) = response.json::<serde_json::Value>().await else {
        return 0;
    };
    let mut acked = 0;
    for user in users.as_array().into_iter().flatten() {
        let Some(id) = user["id"].as_str() else {
            continue;
        };
        let ack = client
            .patch(format!("{base}/v1/users/{id}/status/{service}"))
            .header("X-API-Key", key)
            .json(&serde_json::json!({"deletion_status": "deleted"}))
            .send()
            .await;
        if ack.is_ok_and(|r| r.status().is_success()) {
            acked += 1;
        }
    }
    acked
}

async fn store_count(url: &str, sql: &str) -> i64 {
    common::scalar(url, sql.to_string()).await
}

/// Open retirements not yet at rest: anything but COMPLETE, ABORTED and ERRORED.
const MOVING: &str =
    "SELECT COUNT(*) FROM retirement WHERE state NOT IN ('COMPLETE', 'ABORTED', 'ERRORED')";

/// Which faults a run injects.
struct Chaos {
    kills: usize,
    faults: bool,
}

/// Runs the fleet through the pipeline under `chaos` until every retirement is at rest
/// (bounded), then stops the daemons. Returns the SIGKILLs delivered.
/// What a run did to the system under test.
struct Injected {
    kills: usize,
    edx_cuts: usize,
    store_cuts: usize,
    logins: usize,
}

async fn run(world: &mut World, chaos: Chaos, seed: u64) -> Injected {
    let mut dice = Dice(seed | 1);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    if chaos.faults {
        world.smtp.script([
            Fault::AtRcpt(451, "4.3.0 try later"),
            Fault::AtRcpt(451, "4.3.0 try later"),
            Fault::AtDataEnd(451, "4.3.0 try later"),
            Fault::DropMidData,
            Fault::AtRcpt(451, "4.3.0 try later"),
            Fault::DropMidData,
        ]);
        // Sarbacane fails, then throttles, then answers; the webhook fails, then stalls
        // past the stage's 1 s timeout, then answers.
        for (status, times) in [(500, 4), (429, 4)] {
            Mock::given(method("DELETE"))
                .respond_with(ResponseTemplate::new(status).insert_header("Retry-After", "1"))
                .up_to_n_times(times)
                .with_priority(1)
                .mount(&world.sarbacane)
                .await;
        }
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(500))
            .up_to_n_times(3)
            .with_priority(1)
            .mount(&world.joanie)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(3)))
            .up_to_n_times(2)
            .with_priority(2)
            .mount(&world.joanie)
            .await;
    }
    let ports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = tokio::spawn(consume(ports.clone(), stop.clone()));

    let mut main = Daemon::start(world, "daemon.log");
    // Two daemons on one store for the first part of the run.
    let mut second = chaos.faults.then(|| Daemon::start(world, "second.log"));
    let publish = |main: &Daemon, second: &Option<Daemon>| {
        let mut list = vec![main.port];
        list.extend(second.as_ref().map(|d| d.port));
        *ports.lock().unwrap() = list;
    };
    publish(&main, &second);

    let store_url = world.store.url.clone();
    let edx_url = world.edx.url.clone();
    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(1500 + dice.below(2500));
    let mut store_cut = chaos.faults;
    let mut edx_cuts = if chaos.faults { 3 } else { 0 };
    let mut logged_in: std::collections::BTreeSet<i64> = Default::default();
    let mut racing = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "the run did not come to rest in 10 minutes"
        );
        // Users who come back: every tenth inactive user logs in once warned; one logs in
        // while its deletion may be in flight.
        let warned: Vec<(String, String)> = sqlx_rows(
            &store_url,
            "SELECT subject, state FROM retirement WHERE subject IS NOT NULL \
             AND state IN ('PENDING', 'WARNED', 'RETIRING_EDX')",
        )
        .await;
        for (subject, state) in warned {
            let Ok(u) = subject.parse::<i64>() else {
                continue;
            };
            let comes_back = chaos.faults && u % 10 == 5 && u <= world.fleet.inactive;
            if comes_back && state == "WARNED" && logged_in.insert(u) {
                exec(
                    &edx_url,
                    &[format!(
                        "UPDATE auth_user SET last_login = NOW(6) WHERE id = {u}"
                    )],
                )
                .await;
                println!(
                    "faults: user {u} logs in at {} (WARNED)",
                    chrono::Utc::now().format("%H:%M:%S%.3f")
                );
                world.fleet.expect.insert(u, Expect::Aborted);
            }
            let racer = chaos.faults && racing.is_none() && !comes_back;
            if racer && state == "RETIRING_EDX" && u <= world.fleet.inactive {
                exec(
                    &edx_url,
                    &[format!(
                        "UPDATE auth_user SET last_login = NOW(6) WHERE id = {u}"
                    )],
                )
                .await;
                world.fleet.expect.insert(u, Expect::Either);
                racing = Some(u);
            }
        }
        if chaos.faults {
            let warned_any = store_count(
                &store_url,
                "SELECT COUNT(*) FROM retirement WHERE warned_at IS NOT NULL",
            )
            .await;
            // Armed once deletions are near: the cut lands in whatever the target is doing then.
            if warned_any > 0 && edx_cuts > 0 && world.edx_proxy.cut_done() {
                world.edx_proxy.cut_after(500 + dice.below(4000) as i64);
                edx_cuts -= 1;
            }
            if store_cut && warned_any > 0 {
                store_cut = false;
                world.store_proxy.outage(Duration::from_secs(3)).await;
            }
        }
        if kills < chaos.kills && Instant::now() >= next_kill {
            // Kill one of the daemons running; the second one is not restarted.
            if second.is_some() && dice.below(2) == 0 {
                if let Some(daemon) = second.take() {
                    daemon.kill();
                }
            } else {
                main.kill_in_place(world);
            }
            kills += 1;
            publish(&main, &second);
            next_kill = Instant::now() + Duration::from_millis(1000 + dice.below(3000));
        }
        let moving = store_count(&store_url, MOVING).await;
        let opened = store_count(&store_url, "SELECT COUNT(*) FROM retirement").await;
        let expected = world.fleet.opened() as i64;
        if moving == 0 && opened >= expected && kills >= chaos.kills {
            break;
        }
        assert!(!consumer.is_finished(), "the downstream services stopped");
        if let Some(status) = main.child.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}); its log:\n{}",
                std::fs::read_to_string(world.dir.join("daemon.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let _ = consumer.await;
    main.kill();
    if let Some(daemon) = second {
        daemon.kill();
    }
    let injected = Injected {
        kills,
        edx_cuts: world.edx_proxy.cuts(),
        store_cuts: world.store_proxy.cuts(),
        logins: logged_in.len(),
    };
    println!(
        "faults: at rest after {:.1} s, {kills} kills, {} edX connections cut, {} store cuts, {} logins while warned",
        started.elapsed().as_secs_f64(),
        injected.edx_cuts,
        injected.store_cuts,
        injected.logins,
    );
    injected
}

impl Daemon {
    /// SIGKILL, then a new daemon in its place.
    fn kill_in_place(&mut self, world: &World) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Daemon::start(world, "daemon.log");
    }
}

async fn sqlx_rows(url: &str, sql: &'static str) -> Vec<(String, String)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let rows = sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
    let _ = conn.close().await;
    rows
}

fn seed() -> u64 {
    std::env::var("LETHE_FAULTS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        })
}

fn migrate(world: &World) {
    let out = world.lethe(&["migrate"], "migrate.log").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        std::fs::read_to_string(world.dir.join("migrate.log")).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invariant_holds_under_kills_and_faults() {
    let (users, kills) = size();
    let seed = seed();
    println!("faults: {users} users, {kills} kills, seed {seed} (LETHE_FAULTS_SEED)");
    let mut world = World::new(users, (users / 4).max(10)).await;
    migrate(&world);
    let injected = run(
        &mut world,
        Chaos {
            kills,
            faults: true,
        },
        seed,
    )
    .await;
    // Each fault must have happened, or the run proves nothing about it.
    assert!(injected.edx_cuts > 0, "no edX connection was cut");
    assert!(injected.store_cuts > 0, "the store was never cut");
    assert!(injected.logins > 0, "nobody logged in while warned");
    let kills = injected.kills;
    let report = world.check().await;
    println!(
        "RESULT bench=faults users={users} kills={kills} lost={} wrong_deletions={} half_deleted={} duplicate_warnings={} missing_events={}",
        report.lost,
        report.wrong_deletions + report.active_deleted,
        report.half_deleted,
        report.duplicate_warnings,
        report.missing_events
    );
    let broken = report.broken(kills);
    assert!(
        broken.is_empty(),
        "broken: {broken:?}\n{}",
        report.findings.join("\n")
    );
}

/// The checker is shown to fail: after a clean run, each corruption of the databases is
/// reported by its invariant's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_reports_each_broken_invariant() {
    let mut world = World::new(6, 10).await;
    migrate(&world);
    run(
        &mut world,
        Chaos {
            kills: 0,
            faults: false,
        },
        1,
    )
    .await;
    let clean = world.check().await;
    assert!(
        clean.broken(0).is_empty(),
        "{:?}\n{}",
        clean.broken(0),
        clean.findings.join("\n")
    );

    let active = world.fleet.total(); // the last user is active
    let store = world.store.url.clone();
    let edx_url = world.edx.url.clone();
    // An active user deleted (their rows, then the user).
    exec(
        &edx_url,
        &[
            format!("DELETE FROM student_courseenrollmentattribute WHERE id DIV 1000 = {active}"),
            format!("DELETE FROM student_manualenrollmentaudit WHERE id DIV 1000 = {active}"),
            format!("DELETE FROM student_courseenrollment WHERE user_id = {active}"),
            format!("DELETE FROM courseware_studentmodulehistory WHERE id DIV 1000 = {active}"),
            format!("DELETE FROM courseware_studentmodule WHERE student_id = {active}"),
            format!("UPDATE student_manualenrollmentaudit SET enrolled_by_id = NULL WHERE enrolled_by_id = {active}"),
            format!("UPDATE verify_student_softwaresecurephotoverification SET reviewing_user_id = NULL WHERE reviewing_user_id = {active}"),
            format!("DELETE FROM verify_student_softwaresecurephotoverification WHERE user_id = {active}"),
            format!("DELETE FROM auth_userprofile WHERE user_id = {active}"),
            format!("DELETE FROM user_api_userpreference WHERE user_id = {active}"),
            format!("DELETE FROM student_historicalcourseenrollment WHERE user_id = {active}"),
            format!("DELETE FROM student_courseenrollmentallowed WHERE id DIV 1000 = {active}"),
            format!("DELETE FROM forum_post WHERE author_id = {active}"),
            format!("DELETE FROM auth_user WHERE id = {active}"),
        ],
    )
    .await;
    assert_broken(&world, &["active_deleted"]).await;
    // A row of another (active) user deleted.
    exec(
        &edx_url,
        &[format!(
            "DELETE FROM user_api_userpreference WHERE user_id = {}",
            active - 1
        )],
    )
    .await;
    assert_broken(&world, &["wrong_deletions"]).await;
    // One child row of a retired user left behind.
    exec(&edx_url, &["INSERT INTO student_courseenrollmentallowed (id, data, email) VALUES (1001, 'x', 'user1@example.org')"]).await;
    assert_broken(&world, &["half_deleted"]).await;
    // An event removed (the table is append-only: its trigger is switched off to do it).
    exec(
        &store,
        &[
            "ALTER TABLE retirement_event DISABLE TRIGGER retirement_event_append_only",
            "DELETE FROM retirement_event WHERE id = (SELECT id FROM retirement_event \
             WHERE to_state = 'RETIRING_SARBACANE' ORDER BY id LIMIT 1)",
            "ALTER TABLE retirement_event ENABLE TRIGGER retirement_event_append_only",
        ],
    )
    .await;
    assert_broken(&world, &["missing_events"]).await;
    // An unacknowledged retirement marked COMPLETE: the protected user's.
    exec(
        &store,
        &[format!(
            "UPDATE retirement SET state = 'COMPLETE' WHERE subject_hash = '{}'",
            key().subject(&world.fleet.protected().to_string())
        )],
    )
    .await;
    assert_broken(&world, &["unacknowledged_complete"]).await;
}

/// The checker names each of `names` (among what earlier corruptions already broke).
async fn assert_broken(world: &World, names: &[&str]) {
    let report = world.check().await;
    let broken = report.broken(0);
    for name in names {
        assert!(
            broken.contains(name),
            "{name} not reported: {broken:?}\n{}",
            report.findings.join("\n")
        );
    }
}
