//! The daemon loop: claim due retirements, run their stage handlers, write outcomes back.
//!
//! Invariants: no transaction is held while a handler runs (claims and write-backs are
//! their own short transactions); leases are renewed while a handler runs; a write-back
//! that lost its lease changes nothing (the store fences it) and is logged; on shutdown
//! no new work is claimed and in-flight batches finish or are released.

mod inflight;
pub mod scan;

use crate::clock::Clock;
use inflight::InFlight;

use crate::config::{DriverTuning, Policy};
use crate::domain::{Outcome, StageResult, StateGraph, Transition, plan_outcome, retry_entropy};
use crate::stages::{Handlers, Reporter};
use crate::store::{Applied, Claimed, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// A batch writes back the outcomes its handlers hand over early once this many wait...
pub const FLUSH_OUTCOMES: usize = 64;

/// ...or once the oldest of them has waited this long: a crash loses at most one window.
pub const FLUSH_AFTER: Duration = Duration::from_millis(250);

/// Counts of what a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunReport {
    /// Retirements claimed.
    pub claimed: u64,
    /// Outcomes applied.
    pub applied: u64,
    /// Outcomes not applied because their write-back lost its lease.
    pub lost: u64,
    /// Retirements released untouched at shutdown.
    pub released: u64,
    /// Applied outcomes by label (done, wait, retry, fail, cancel).
    pub outcomes: BTreeMap<String, u64>,
}

impl RunReport {
    fn merge(&mut self, other: RunReport) {
        self.claimed += other.claimed;
        self.applied += other.applied;
        self.lost += other.lost;
        self.released += other.released;
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }
}

/// An early write-back in progress: the rows it relayed and what it applied.
type Flushing<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Vec<InFlight>, RunReport)> + Send + 'a>>;

/// Adds what an early write-back did to the batch's rows going on and its report.
fn absorb(later: &mut Vec<InFlight>, report: &mut RunReport, done: (Vec<InFlight>, RunReport)) {
    let (relayed, applied) = done;
    later.extend(relayed);
    report.merge(applied);
}

/// Waits for a running early write-back, then takes every outcome still queued into
/// `early`.
async fn settle_early(
    flushing: &mut Option<Flushing<'_>>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(i64, StageResult)>,
    early: &mut HashMap<i64, StageResult>,
    later: &mut Vec<InFlight>,
    report: &mut RunReport,
) {
    if let Some(f) = flushing.take() {
        absorb(later, report, f.await);
    }
    while let Ok((id, result)) = rx.try_recv() {
        early.insert(id, result);
    }
}

/// Driver failure that stops the loop.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::Classified for DriverError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            DriverError::Store(e) => crate::error::Classified::kind(e),
        }
    }
}

/// Advances retirements through their stages.
pub struct Driver {
    store: Arc<dyn Store>,
    graph: StateGraph,
    policy: Policy,
    tuning: DriverTuning,
    handlers: Handlers,
    owner: String,
    clock: Arc<dyn Clock>,
}

/// A lease owner name unique to this process: host, pid and a random suffix.
pub fn unique_owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        crate::domain::mix(nanos) as u32
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Daemon,
    Once,
}

impl Driver {
    /// A driver; `owner` must be unique among drivers sharing the store.
    pub fn new(
        store: Arc<dyn Store>,
        graph: StateGraph,
        policy: Policy,
        tuning: DriverTuning,
        handlers: Handlers,
        owner: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            graph,
            policy,
            tuning,
            handlers,
            owner,
            clock,
        }
    }

    /// This driver's lease owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RunReport, DriverError> {
        self.drive(Mode::Daemon, shutdown).await
    }

    /// Processes everything due now (including what becomes due as stages complete), then returns.
    pub async fn run_once(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RunReport, DriverError> {
        self.drive(Mode::Once, shutdown).await
    }

    async fn drive(
        self: &Arc<Self>,
        mode: Mode,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<RunReport, DriverError> {
        // Only the daemon waits for new work; `--once` never idles.
        let wake = match mode {
            Mode::Daemon => self.store.subscribe().await.unwrap_or_else(|error| {
                tracing::warn!(%error, "no wake-up listener; polling only");
                None
            }),
            Mode::Once => None,
        };
        let permits = Arc::new(Semaphore::new(self.tuning.concurrency));
        let mut tasks: JoinSet<RunReport> = JoinSet::new();
        let mut report = RunReport::default();
        tracing::info!(owner = %self.owner, "driver started");
        loop {
            while let Some(done) = tasks.try_join_next() {
                report.merge(task_report(done));
            }
            if *shutdown.borrow() {
                break;
            }
            if self.policy.paused {
                if mode == Mode::Once {
                    tracing::warn!("policy.paused = true: nothing is claimed");
                    break;
                }
                self.idle(None, &wake, &mut shutdown, &mut tasks, &mut report)
                    .await;
                continue;
            }
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = shutdown.changed() => continue,
            };
            let now = self.clock.now();
            let batch = match self
                .store
                .claim(&self.owner, now, self.tuning.lease, self.tuning.batch_size)
                .await
            {
                Ok(batch) => batch,
                Err(error) if mode == Mode::Daemon => {
                    tracing::error!(%error, "claim failed; retrying after the poll interval");
                    drop(permit);
                    self.idle(Some(now), &wake, &mut shutdown, &mut tasks, &mut report)
                        .await;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            if batch.is_empty() {
                drop(permit);
                if mode == Mode::Once {
                    match tasks.join_next().await {
                        Some(done) => {
                            report.merge(task_report(done));
                            continue;
                        }
                        None => break,
                    }
                }
                self.idle(Some(now), &wake, &mut shutdown, &mut tasks, &mut report)
                    .await;
                continue;
            }
            let driver = self.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let _permit = permit;
                driver.process(batch, stop).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            report.merge(task_report(done));
        }
        tracing::info!(owner = %self.owner, claimed = report.claimed, applied = report.applied,
            lost = report.lost, released = report.released, "driver stopped");
        Ok(report)
    }

    /// Sleeps until the poll interval, the next due time, a wake-up, a finished batch or shutdown.
    async fn idle(
        &self,
        now: Option<chrono::DateTime<chrono::Utc>>,
        wake: &Option<crate::store::Wakeup>,
        shutdown: &mut watch::Receiver<bool>,
        tasks: &mut JoinSet<RunReport>,
        report: &mut RunReport,
    ) {
        let mut pause = self.tuning.poll_interval;
        if let (Some(now), Ok(Some(due))) = (now, self.store.next_due().await) {
            let until_due = (due - now).to_std().unwrap_or(Duration::ZERO);
            pause = pause.min(until_due.max(Duration::from_millis(10)));
        }
        let notified = async {
            match wake {
                Some(wake) => wake.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = notified => {}
            _ = shutdown.changed() => {}
            Some(done) = tasks.join_next() => report.merge(task_report(done)),
        }
    }

    /// Runs one claimed batch through its handlers and writes the outcomes back. Rows that
    /// are Done and due at once in their next state keep their lease in the same write-back
    /// and go on through the next stage here, without being released and claimed again.
    /// When that next stage is quick, the Done is not written yet: it is carried in memory
    /// and written with the quick stage's outcome, one write-back for both. Outcomes a
    /// handler hands over early are written while it runs (see [`FLUSH_OUTCOMES`]).
    pub async fn process(
        &self,
        batch: Vec<Claimed>,
        mut shutdown: watch::Receiver<bool>,
    ) -> RunReport {
        let mut report = RunReport {
            claimed: batch.len() as u64,
            ..RunReport::default()
        };
        let mut batch: Vec<InFlight> = batch.into_iter().map(InFlight::claimed).collect();
        while !batch.is_empty() {
            // Rows written early with a relay: they go on with the next pass.
            let mut later = Vec::new();
            let results = self
                .run_with_renewal(&mut batch, &mut later, &mut shutdown, &mut report)
                .await;
            let Some(results) = results else {
                batch.append(&mut later);
                self.release(batch, &mut report).await;
                return report;
            };
            let stopping = *shutdown.borrow();
            let mut next = self
                .settle(batch, results, self.clock.now(), stopping, &mut report)
                .await
                .unwrap_or_default();
            next.append(&mut later);
            batch = next;
        }
        report
    }

    /// Plans each row's outcome from `results`, writes them back fenced, and returns the
    /// rows that go on to a stage due at once: carried ones (moved on in memory, written
    /// with their next outcome) and relayed ones (written, lease kept). `None` when the
    /// write-back failed (the leases expire and another claim retries the rows).
    async fn settle(
        &self,
        batch: Vec<InFlight>,
        mut results: HashMap<i64, StageResult>,
        now: chrono::DateTime<chrono::Utc>,
        stopping: bool,
        report: &mut RunReport,
    ) -> Option<Vec<InFlight>> {
        let planned: Vec<(InFlight, Transition)> = batch
            .into_iter()
            .map(|f| {
                let result = results.remove(&f.row.id).unwrap_or_else(no_outcome);
                let transition = self.plan(&f.row, &result, now);
                (f, transition)
            })
            .collect();
        // At shutdown nothing goes on: every row is written and its lease let go.
        let goes_on = |t: &Transition| !stopping && t.goes_on_at(now);
        // Carry only when every row going on runs a quick stage next: in a pass that
        // also runs a slow stage (a deletion), a carried outcome would wait behind it.
        let carry = planned
            .iter()
            .all(|(_, t)| !goes_on(t) || self.handlers.get(&t.to_state).is_some_and(|h| h.quick()));
        let relay_until = crate::domain::after(now, self.tuning.lease);
        let mut next = Vec::new();
        let mut writes: Vec<Applied> = Vec::with_capacity(planned.len());
        // For each write, the row that goes on if it lands.
        let mut relays: Vec<Option<InFlight>> = Vec::with_capacity(planned.len());
        for (f, transition) in planned {
            match (goes_on(&transition), carry) {
                (true, true) => next.push(f.carry(transition, now)),
                (true, false) => {
                    relays.push(Some(InFlight::relayed(f.row.clone(), &transition)));
                    writes.push(f.into_applied(transition, Some(relay_until)));
                }
                (false, _) => {
                    relays.push(None);
                    writes.push(f.into_applied(transition, None));
                }
            }
        }
        if writes.is_empty() {
            return Some(next);
        }
        let landed: std::collections::HashSet<i64> = match self
            .store
            .write_back(&self.owner, &writes, now)
            .await
        {
            Ok(landed) => landed.into_iter().collect(),
            Err(error) => {
                // The leases expire and another claim retries the rows: handlers are idempotent.
                tracing::error!(%error, rows = writes.len(), "write-back failed; the rows will be retried after their lease");
                return None;
            }
        };
        for (a, relay) in writes.iter().zip(relays) {
            if !landed.contains(&a.id) {
                report.lost += 1 + a.carried.len() as u64;
                tracing::warn!(retirement_id = a.id, state = %a.from_state, attempt = a.attempt,
                    "write-back lost its lease; it changed nothing");
                continue;
            }
            count_applied(report, a);
            tracing::debug!(retirement_id = a.id, state = %a.from_state, to = %a.transition.to_state,
                attempt = a.attempt, outcome = a.transition.outcome.as_str(), carried = a.carried.len(), "outcome applied");
            next.extend(relay);
        }
        Some(next)
    }

    /// The transition `result` causes for row `c`.
    fn plan(
        &self,
        c: &Claimed,
        result: &StageResult,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Transition {
        let transition = plan_outcome(
            &self.graph,
            &self.policy.retry,
            self.policy.max_attempts,
            &c.state,
            // Failures only: claims that never came back are the crash guard's.
            c.attempt - c.lost_leases,
            result,
            now,
            retry_entropy(c.id, c.attempt, now),
        );
        let outcome = transition.outcome.as_str();
        crate::metrics::count(
            "lethe_transitions_total",
            &[("stage", &c.state), ("outcome", outcome)],
            1,
        );
        if let Outcome::Retry { .. } | Outcome::Fail { .. } = &result.outcome {
            let kind = match &result.outcome {
                Outcome::Retry { .. } => "retry",
                _ => "fail",
            };
            crate::metrics::count(
                "lethe_failures_total",
                &[("stage", &c.state), ("kind", kind)],
                1,
            );
        }
        transition
    }

    /// Starts writing back the outcomes handed over early (`early`), taking their rows out
    /// of `batch` so that the batch's own write-back covers only the rest. The handler goes
    /// on sending while this runs.
    fn start_flush<'a>(
        &'a self,
        batch: &mut Vec<InFlight>,
        early: &mut HashMap<i64, StageResult>,
        stopping: bool,
    ) -> Flushing<'a> {
        let (rows, rest): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(batch)
            .into_iter()
            .partition(|f| early.contains_key(&f.row.id));
        *batch = rest;
        Box::pin(self.write_early(rows, std::mem::take(early), stopping))
    }

    /// Writes back rows whose outcomes came early. A row carried into a quick stage runs it
    /// now and is written with it, as in a pass; rows written with a relay are returned, for
    /// the batch's next pass.
    async fn write_early(
        &self,
        mut rows: Vec<InFlight>,
        mut results: HashMap<i64, StageResult>,
        stopping: bool,
    ) -> (Vec<InFlight>, RunReport) {
        let mut report = RunReport::default();
        let mut later = Vec::new();
        tracing::debug!(rows = rows.len(), "writing outcomes handed over early");
        while !rows.is_empty() {
            let now = self.clock.now();
            let Some(next) = self.settle(rows, results, now, stopping, &mut report).await else {
                break;
            };
            let (carried, relayed): (Vec<InFlight>, Vec<InFlight>) =
                next.into_iter().partition(|f| !f.carried.is_empty());
            later.extend(relayed);
            let claimed: Vec<Claimed> = carried.iter().map(|f| f.row.clone()).collect();
            results = self.run_handlers(&claimed, Reporter::none()).await;
            rows = carried;
        }
        (later, report)
    }

    /// Releases a batch whose handlers outlived the shutdown grace. Outcomes carried in
    /// memory are written first (the work they record is done), then every lease is let go.
    async fn release(&self, batch: Vec<InFlight>, report: &mut RunReport) {
        let now = self.clock.now();
        let until = crate::domain::after(now, self.tuning.lease);
        // The attempt the store holds: the claim's, unless a carried write-back moved the row.
        let mut fences: std::collections::HashMap<i64, i32> =
            batch.iter().map(|f| (f.row.id, f.fence_attempt)).collect();
        let carried: Vec<Applied> = batch
            .into_iter()
            .filter_map(|mut f| {
                let last = f.carried.pop()?;
                Some(f.into_applied(last.transition, Some(until)))
            })
            .collect();
        if !carried.is_empty() {
            match self.store.write_back(&self.owner, &carried, now).await {
                Ok(done) => {
                    let done: std::collections::HashSet<i64> = done.into_iter().collect();
                    for a in carried.iter().filter(|a| done.contains(&a.id)) {
                        fences.insert(a.id, 1);
                        count_applied(report, a);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "writing carried outcomes failed; their work will be redone")
                }
            }
        }
        let fences: Vec<(i64, i32)> = fences.into_iter().collect();
        match self.store.release(&self.owner, &fences, now).await {
            Ok(released) => report.released += released,
            Err(error) => tracing::warn!(%error, "release failed; the leases will expire"),
        }
    }

    /// Runs the handlers while renewing the leases of `batch` (and `later`), writing back
    /// the outcomes they hand over early every [`FLUSH_AFTER`] or [`FLUSH_OUTCOMES`];
    /// returns the results of the rows left in `batch`, or `None` when a shutdown's
    /// grace period ran out first (outcomes handed over are written, the caller releases
    /// the rest).
    async fn run_with_renewal(
        &self,
        batch: &mut Vec<InFlight>,
        later: &mut Vec<InFlight>,
        shutdown: &mut watch::Receiver<bool>,
        report: &mut RunReport,
    ) -> Option<HashMap<i64, StageResult>> {
        let claimed: Vec<Claimed> = batch.iter().map(|f| f.row.clone()).collect();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let work = self.run_handlers(&claimed, Reporter::new(tx));
        tokio::pin!(work);
        let mut early: HashMap<i64, StageResult> = HashMap::new();
        let mut flush_at: Option<tokio::time::Instant> = None;
        // At most one early write-back at a time, polled beside the handler.
        let mut flushing: Option<Flushing<'_>> = None;
        let mut renew =
            tokio::time::interval((self.tuning.lease / 3).max(Duration::from_millis(100)));
        renew.tick().await;
        let mut stopping: Option<tokio::time::Instant> =
            (*shutdown.borrow()).then(|| tokio::time::Instant::now() + self.tuning.shutdown_grace);
        loop {
            let idle = flushing.is_none();
            let deadline = async {
                match stopping {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let flush_due = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let flushed = async {
                match flushing.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                mut results = &mut work => {
                    // What was handed over and not flushed yet goes with the batch's write-back.
                    settle_early(&mut flushing, &mut rx, &mut early, later, report).await;
                    results.extend(early);
                    return Some(results);
                }
                done = flushed => {
                    flushing = None;
                    absorb(later, report, done);
                }
                Some((id, result)) = rx.recv() => {
                    early.insert(id, result);
                    flush_at.get_or_insert_with(|| tokio::time::Instant::now() + FLUSH_AFTER);
                }
                _ = flush_due, if idle => {}
                _ = renew.tick() => {
                    let ids: Vec<i64> = batch.iter().chain(later.iter()).map(|f| f.row.id).collect();
                    let until = crate::domain::after(self.clock.now(), self.tuning.lease);
                    match self.store.renew(&self.owner, &ids, until).await {
                        Ok(held) if held < ids.len() as u64 => tracing::warn!(held, claimed = ids.len(), "some leases were lost while the handler ran"),
                        Ok(_) => {}
                        Err(error) => tracing::warn!(%error, "lease renewal failed"),
                    }
                }
                _ = shutdown.changed(), if stopping.is_none() => {
                    stopping = Some(tokio::time::Instant::now() + self.tuning.shutdown_grace);
                }
                _ = deadline => {
                    settle_early(&mut flushing, &mut rx, &mut early, later, report).await;
                    if !early.is_empty() {
                        let done = self.start_flush(batch, &mut early, true).await;
                        absorb(later, report, done);
                    }
                    return None;
                }
            }
            // One rule for starting a flush: none running, and enough waiting or waited long enough.
            let due = flush_at.is_some_and(|at| at <= tokio::time::Instant::now());
            if flushing.is_none() && !early.is_empty() && (early.len() >= FLUSH_OUTCOMES || due) {
                flushing = Some(self.start_flush(batch, &mut early, stopping.is_some()));
                flush_at = None;
            }
        }
    }

    /// Calls each state's handler with its part of the batch (handing `reporter` on); a
    /// result per claimed row, except those the handlers reported through `reporter`.
    async fn run_handlers(
        &self,
        batch: &[Claimed],
        reporter: Reporter,
    ) -> HashMap<i64, StageResult> {
        let mut by_state: BTreeMap<&str, Vec<Claimed>> = BTreeMap::new();
        let mut results: HashMap<i64, StageResult> = HashMap::new();
        for c in batch {
            if let Some(parked) =
                crate::domain::crash_guard(&c.state, c.lost_leases, self.tuning.max_lost_leases)
            {
                results.insert(c.id, parked);
            } else {
                by_state
                    .entry(c.state.as_str())
                    .or_default()
                    .push(c.clone());
            }
        }
        for (state, part) in by_state {
            let Some(handler) = self.handlers.get(state) else {
                for c in &part {
                    results.insert(
                        c.id,
                        Outcome::Fail {
                            error: format!("no stage handles state {state} in this configuration"),
                        }
                        .into(),
                    );
                }
                continue;
            };
            let span = tracing::info_span!("stage", state, size = part.len());
            let _entered = span.enter();
            let started = std::time::Instant::now();
            let answered = handler.handle_reporting(&part, &reporter).await;
            crate::metrics::observe(
                "lethe_handler_seconds",
                &[("stage", state)],
                started.elapsed().as_secs_f64(),
            );
            match answered {
                Ok(answers) => results.extend(answers),
                Err(error) => {
                    crate::metrics::count(
                        "lethe_failures_total",
                        &[("stage", state), ("kind", "batch")],
                        1,
                    );
                    tracing::warn!(%error, state, "handler failed for its whole batch");
                    for c in &part {
                        results.insert(
                            c.id,
                            Outcome::Retry {
                                error: error.to_string(),
                            }
                            .into(),
                        );
                    }
                }
            }
        }
        results
    }
}

/// A Retry for a row whose handler gave no outcome (one handed over early is final).
fn no_outcome() -> StageResult {
    Outcome::Retry {
        error: "the handler returned no outcome for this retirement".into(),
    }
    .into()
}

/// Counts every transition a write-back applied for `a`, carried ones included.
fn count_applied(report: &mut RunReport, a: &Applied) {
    for step in a
        .carried
        .iter()
        .map(|s| &s.transition)
        .chain([&a.transition])
    {
        report.applied += 1;
        *report.outcomes.entry(step.outcome.to_string()).or_default() += 1;
    }
}

fn task_report(done: Result<RunReport, tokio::task::JoinError>) -> RunReport {
    done.unwrap_or_else(|error| {
        tracing::error!(%error, "a batch task panicked; its leases will expire and it will be retried");
        RunReport::default()
    })
}
