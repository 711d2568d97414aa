//! The generator itself: a tokio runtime of its own, a driver that starts requests (on an arrival
//! schedule, or from N looping clients), and a collector on the caller's thread that tallies every
//! record, hands it to the caller's sink and reports progress. Running the collector on the caller's
//! thread is what lets a sink (say a DuckDB appender) be neither `Send` nor `Sync`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderValue, CONNECTION, HOST};
use hyper::{Method, Request, Uri};

use crate::config::{parse_http_url, weighted_cycle, LoadConfig, Model};
use crate::connection::{classify_hyper, connect, Clock, Conn, Pool};
use crate::error::LoadError;
use crate::records::{ErrorKind, LoadReport, RequestRecord};
use crate::tally::Tally;

/// Live figures, handed to the progress callback every `progress_every`.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Time since the run started.
    pub elapsed: Duration,
    /// Requests finished so far (responses and errors).
    pub requests: u64,
    /// Requests failed so far.
    pub errors: u64,
    /// Requests finished per second since the previous progress call.
    pub requests_per_s: f64,
    /// Latency percentiles over all responses so far, all classes.
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    /// TCP connections opened so far.
    pub connections_opened: u64,
}

/// The error a [`RecordSink`] may return; it stops the run.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where per-request records go (a database appender, a `Vec`, nowhere). Called on the thread that
/// called [`run_load`], in the order requests finished.
pub trait RecordSink {
    /// Takes one record.
    fn record(&mut self, record: RequestRecord) -> Result<(), SinkError>;

    /// Takes one record by reference; what the generator calls. A sink that only reads the record
    /// (a database appender) implements this too, so that no record is cloned: the generator
    /// reuses one record per URL and allocates nothing per request.
    fn record_ref(&mut self, record: &RequestRecord) -> Result<(), SinkError> {
        self.record(record.clone())
    }
}

impl RecordSink for Vec<RequestRecord> {
    fn record(&mut self, record: RequestRecord) -> Result<(), SinkError> {
        self.push(record);
        Ok(())
    }
}

impl<F: FnMut(RequestRecord) -> Result<(), SinkError>> RecordSink for F {
    fn record(&mut self, record: RequestRecord) -> Result<(), SinkError> {
        self(record)
    }
}

/// A sink that keeps nothing: only the summaries are wanted.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardRecords;

impl RecordSink for DiscardRecords {
    fn record(&mut self, _record: RequestRecord) -> Result<(), SinkError> {
        Ok(())
    }

    fn record_ref(&mut self, _record: &RequestRecord) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Runs the load described by `config` to its end (duration, request count or stop flag) and
/// returns the report. Blocks the calling thread, which collects the records; the requests run on
/// `config.threads` threads of its own, each with a single-threaded tokio runtime and its share of
/// the connections (as wrk does: no task ever hops between threads). Must not be called from
/// inside an async runtime.
pub fn run_load(
    config: &LoadConfig,
    progress: &mut dyn FnMut(&Progress),
    sink: &mut dyn RecordSink,
) -> Result<LoadReport, LoadError> {
    config.validate()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(LoadError::InsideRuntime);
    }
    let plan = Plan::new(config)?;
    let classes = plan.classes.clone();
    let clock = Clock::start();
    let start = clock.base();
    let stop = config.stop.clone().unwrap_or_default();
    let connections_opened = Arc::new(AtomicU64::new(0));
    let threads = thread_count(config);
    let shared = Arc::new(Shared {
        plan,
        model: config.model,
        threads,
        keepalive: config.keepalive,
        timeout: config.timeout,
        max_requests: config.max_requests,
        deadline: start + config.duration,
        pools: split(config.connections, threads).map(|size| Arc::new(Pool::new(size))).collect(),
        clock,
        connections_opened: Arc::clone(&connections_opened),
        next_request_id: AtomicU64::new(0),
        stop: Arc::clone(&stop),
        outboxes: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
    });
    let mut workers = Vec::with_capacity(threads as usize);
    for thread_index in 0..threads {
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("peel-load-{thread_index}"))
            .spawn(move || run_thread(thread_shared, thread_index));
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(err) => {
                stop.store(true, Ordering::Relaxed);
                drop(shared);
                join_all(workers);
                return Err(LoadError::Runtime(err));
            }
        }
    }
    let mut collector = Collector::new(&shared.plan, sink, Arc::clone(&stop));
    let mut next_progress = start + config.progress_every;
    let mut last_progress = (start, 0u64);
    loop {
        // Read before draining: once every thread has ended, one more drain takes the last records.
        let finished = workers.iter().all(std::thread::JoinHandle::is_finished);
        collector.drain(&shared.outboxes);
        if finished {
            break;
        }
        let now = Instant::now();
        if now >= next_progress {
            let figures = collector.progress(now, start, last_progress, &connections_opened);
            progress(&figures);
            last_progress = (now, figures.requests);
            while next_progress <= now {
                next_progress += config.progress_every;
            }
        }
        std::thread::sleep(COLLECT_EVERY);
    }
    let end = Instant::now();
    if let Some(err) = join_all(workers) {
        return Err(LoadError::Runtime(err));
    }
    drop(shared);
    let Collector { tallies, total, sink_error, .. } = collector;
    if let Some((request_id, source)) = sink_error {
        return Err(LoadError::Sink { request_id, source });
    }
    let elapsed = end.duration_since(start);
    let (rate_per_s, concurrency) = match config.model {
        Model::Open { rate_per_s } => (Some(rate_per_s), None),
        Model::Closed { concurrency } => (None, Some(concurrency)),
    };
    Ok(LoadReport {
        model: config.model.name().to_string(),
        rate_per_s,
        concurrency,
        connections: config.connections,
        keepalive: config.keepalive,
        duration_us: duration_us(config.duration),
        timeout_us: duration_us(config.timeout),
        started_ts_ns: clock.unix_ns(start),
        ended_ts_ns: clock.unix_ns(end),
        elapsed_us: duration_us(elapsed),
        connections_opened: connections_opened.load(Ordering::Relaxed),
        stopped_early: stop.load(Ordering::Relaxed),
        classes: classes.iter().zip(&tallies).map(|(class, t)| t.summary(class, elapsed)).collect(),
        total: total.summary("total", elapsed),
        statuses: classes
            .iter()
            .zip(&tallies)
            .flat_map(|(class, t)| t.status_counts(class))
            .collect(),
    })
}

/// Threads to use: as configured, but never more than connections (each thread needs one) nor,
/// in the closed model, more than clients.
fn thread_count(config: &LoadConfig) -> u32 {
    let mut threads = config.threads.max(1).min(config.connections);
    if let Model::Closed { concurrency } = config.model {
        threads = threads.min(concurrency);
    }
    threads.max(1)
}

/// `total` split into `parts` near-equal shares (the first ones get the remainder).
fn split(total: u32, parts: u32) -> impl Iterator<Item = u32> {
    (0..parts).map(move |i| total / parts + u32::from(i < total % parts))
}

/// Waits for every worker thread; returns the first runtime error (a panic counts as one).
fn join_all(workers: Vec<std::thread::JoinHandle<std::io::Result<()>>>) -> Option<std::io::Error> {
    let mut first_error = None;
    for worker in workers {
        let result =
            worker.join().unwrap_or_else(|_| Err(std::io::Error::other("a load thread panicked")));
        if let (Err(err), None) = (result, &first_error) {
            first_error = Some(err);
        }
    }
    first_error
}

/// One worker thread: a single-threaded runtime that drives this thread's share of the load and
/// returns when every request it started has finished.
fn run_thread(shared: Arc<Shared>, thread_index: u32) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        match shared.model {
            Model::Open { rate_per_s } => {
                drive_open(&shared, thread_index, rate_per_s, &mut tasks).await
            }
            Model::Closed { concurrency } => {
                for _ in (thread_index..concurrency).step_by(shared.threads as usize) {
                    tasks.spawn(drive_closed_client(Arc::clone(&shared), thread_index));
                }
            }
        }
        drop(shared);
        while tasks.join_next().await.is_some() {}
    });
    // Idle keep-alive connections' tasks end when the runtime drops them.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// The validated, resolved form of the targets.
#[derive(Debug)]
struct Plan {
    targets: Vec<PreparedTarget>,
    cycle: Vec<usize>,
    addrs: Vec<SocketAddr>,
    host: HeaderValue,
    classes: Vec<String>,
}

#[derive(Debug)]
struct PreparedTarget {
    url: String,
    url_class: String,
    path_and_query: Uri,
}

impl Plan {
    fn new(config: &LoadConfig) -> Result<Plan, LoadError> {
        let mut targets = Vec::with_capacity(config.targets.len());
        let mut authority: Option<(String, u16)> = None;
        for target in &config.targets {
            let uri = parse_http_url(&target.url)?;
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(80);
            match &authority {
                None => authority = Some((host, port)),
                Some((first_host, first_port)) if (first_host, *first_port) != (&host, port) => {
                    return Err(LoadError::MixedAuthorities {
                        first: format!("{first_host}:{first_port}"),
                        other: format!("{host}:{port}"),
                    });
                }
                Some(_) => {}
            }
            let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
            let path_and_query: Uri =
                path_and_query.parse().map_err(|e: hyper::http::uri::InvalidUri| {
                    LoadError::InvalidUrl { url: target.url.clone(), reason: e.to_string() }
                })?;
            targets.push(PreparedTarget {
                url: target.url.clone(),
                url_class: target.url_class.clone(),
                path_and_query,
            });
        }
        let (host, port) = authority.ok_or(LoadError::InvalidConfig {
            field: "targets",
            reason: "at least one URL is needed",
        })?;
        let authority = format!("{host}:{port}");
        let addrs: Vec<SocketAddr> = authority
            .to_socket_addrs()
            .map_err(|source| LoadError::Resolve { authority: authority.clone(), source })?
            .collect();
        if addrs.is_empty() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses");
            return Err(LoadError::Resolve { authority, source });
        }
        let host_header = HeaderValue::from_str(&authority).map_err(|_| LoadError::InvalidUrl {
            url: config.targets[0].url.clone(),
            reason: "the host cannot be sent as a Host header".into(),
        })?;
        let weights: Vec<u32> = config.targets.iter().map(|t| t.weight).collect();
        let cycle = weighted_cycle(&weights)?;
        let mut classes: Vec<String> = Vec::new();
        for target in &targets {
            if !classes.contains(&target.url_class) {
                classes.push(target.url_class.clone());
            }
        }
        Ok(Plan { targets, cycle, addrs, host: host_header, classes })
    }
}

/// What every request task shares.
#[derive(Debug)]
struct Shared {
    plan: Plan,
    model: Model,
    threads: u32,
    keepalive: bool,
    timeout: Duration,
    max_requests: u64,
    deadline: Instant,
    /// One pool per worker thread, with that thread's share of the connections.
    pools: Vec<Arc<Pool>>,
    clock: Clock,
    connections_opened: Arc<AtomicU64>,
    next_request_id: AtomicU64,
    stop: Arc<AtomicBool>,
    /// One per worker thread: the requests it finished since the collector last looked.
    outboxes: Vec<Mutex<Vec<Finished>>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How often the collecting thread drains the worker threads' outboxes. Polling instead of waking
/// the collector spares request tasks a cross-thread wake-up per record, which costs more than the
/// request itself at tens of thousands of requests per second.
const COLLECT_EVERY: Duration = Duration::from_millis(2);

/// A request's strings, kept once per target by the collector: worker threads hand records over
/// with empty strings (which allocate nothing) and the collector lends these to each record while
/// the tallies and the sink look at it.
#[derive(Debug)]
struct Names {
    url_class: String,
    method: String,
    url: String,
}

impl Names {
    /// Exchanges these strings with the record's; called twice, it puts everything back.
    fn swap(&mut self, record: &mut RequestRecord) {
        std::mem::swap(&mut self.url_class, &mut record.url_class);
        std::mem::swap(&mut self.method, &mut record.method);
        std::mem::swap(&mut self.url, &mut record.url);
    }
}

/// A finished request on its way to the collector: the index of its target in `Plan::targets`
/// and its record without strings.
type Finished = (usize, RequestRecord);

/// Tallies every record per class and overall, and passes it on to the caller's sink.
struct Collector<'s> {
    /// Per target: its strings and its class (index into `tallies`).
    targets: Vec<(Names, usize)>,
    tallies: Vec<Tally>,
    total: Tally,
    sink: &'s mut dyn RecordSink,
    sink_error: Option<(u64, SinkError)>,
    stop: Arc<AtomicBool>,
    /// The batch being handed to the sink; swapped with an outbox's so both keep their capacity.
    batch: Vec<Finished>,
}

impl<'s> Collector<'s> {
    fn new(plan: &Plan, sink: &'s mut dyn RecordSink, stop: Arc<AtomicBool>) -> Self {
        let targets = plan
            .targets
            .iter()
            .map(|target| {
                let names = Names {
                    url_class: target.url_class.clone(),
                    method: Method::GET.as_str().to_string(),
                    url: target.url.clone(),
                };
                let class = plan
                    .classes
                    .iter()
                    .position(|class| *class == target.url_class)
                    .expect("invariant: every target's class is in the plan's classes");
                (names, class)
            })
            .collect();
        Collector {
            targets,
            tallies: plan.classes.iter().map(|_| Tally::new()).collect(),
            total: Tally::new(),
            sink,
            sink_error: None,
            stop,
            batch: Vec::new(),
        }
    }

    /// Takes every record waiting in the outboxes, in the order the requests ended.
    fn drain(&mut self, outboxes: &[Mutex<Vec<Finished>>]) {
        let mut batch = std::mem::take(&mut self.batch);
        for outbox in outboxes {
            let mut waiting = outbox.lock().unwrap_or_else(PoisonError::into_inner);
            if batch.is_empty() {
                std::mem::swap(&mut batch, &mut *waiting);
            } else {
                batch.append(&mut waiting);
            }
        }
        if outboxes.len() > 1 {
            batch.sort_by_key(|(_, record)| record.end_ts_ns);
        }
        for (target, mut record) in batch.drain(..) {
            let (names, class) = &mut self.targets[target];
            names.swap(&mut record);
            self.total.add(&record);
            self.tallies[*class].add(&record);
            if self.sink_error.is_none() {
                if let Err(err) = self.sink.record_ref(&record) {
                    // Stop starting requests; the ones in flight still finish and are tallied.
                    self.sink_error = Some((record.request_id, err));
                    self.stop.store(true, Ordering::Relaxed);
                }
            }
            names.swap(&mut record);
        }
        self.batch = batch;
    }

    fn progress(
        &self,
        now: Instant,
        start: Instant,
        (last_at, last_requests): (Instant, u64),
        connections_opened: &AtomicU64,
    ) -> Progress {
        let interval_s = now.duration_since(last_at).as_secs_f64();
        let requests = self.total.requests();
        Progress {
            elapsed: now.duration_since(start),
            requests,
            errors: self.total.errors(),
            requests_per_s: if interval_s > 0.0 {
                requests.saturating_sub(last_requests) as f64 / interval_s
            } else {
                0.0
            },
            latency_p50_us: self.total.latency_at_us(0.50),
            latency_p99_us: self.total.latency_at_us(0.99),
            connections_opened: connections_opened.load(Ordering::Relaxed),
        }
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Open model: request `i` is due at `start + i / rate`, whatever happened to earlier requests;
/// worker thread `t` of `T` starts requests `t, t + T, t + 2T, ...`. Each request is its own task,
/// so a stalled server makes requests queue for a connection (and that wait counts in their
/// latency) instead of slowing the schedule down.
async fn drive_open(
    shared: &Arc<Shared>,
    thread_index: u32,
    rate_per_s: f64,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let start = shared.clock.base();
    let interval_ns = 1e9 / rate_per_s;
    let first = u64::from(thread_index);
    for request_id in (first..shared.max_requests).step_by(shared.threads as usize) {
        if shared.stopped() {
            break;
        }
        // `as` saturates for floats: a huge offset simply lands past the deadline.
        let offset = Duration::from_nanos((request_id as f64 * interval_ns) as u64);
        let due = match start.checked_add(offset) {
            Some(due) if due < shared.deadline => due,
            _ => break,
        };
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let shared = Arc::clone(shared);
        tasks.spawn(async move { execute(&shared, thread_index, request_id, due).await });
        // Reap finished requests so a long run does not keep one entry per request.
        while tasks.try_join_next().is_some() {}
    }
}

/// Closed model: one client sends a request, waits for its end, sends the next.
async fn drive_closed_client(shared: Arc<Shared>, thread_index: u32) {
    loop {
        let now = Instant::now();
        if shared.stopped() || now >= shared.deadline {
            break;
        }
        let request_id = shared.next_request_id.fetch_add(1, Ordering::Relaxed);
        if request_id >= shared.max_requests {
            break;
        }
        execute(&shared, thread_index, request_id, now).await;
    }
}

/// What is known about a request while it runs; filled in step by step so that a request cut off by
/// its timeout still reports how far it got.
#[derive(Debug, Default)]
struct Attempt {
    start: Option<Instant>,
    connection_id: Option<u64>,
    local_port: Option<u16>,
    reused: bool,
    first_byte_ns: Option<Arc<AtomicU64>>,
    status: Option<u16>,
    response_body_bytes: u64,
}

/// Runs one request on worker thread `thread`'s pool and hands its record to that thread's outbox.
async fn execute(shared: &Shared, thread: u32, request_id: u64, scheduled: Instant) {
    let thread = thread as usize;
    let cycle = &shared.plan.cycle;
    let target_index = cycle[(request_id % cycle.len() as u64) as usize];
    let target = &shared.plan.targets[target_index];
    let pool = &shared.pools[thread];
    let mut attempt = Attempt::default();
    let deadline = scheduled + shared.timeout;
    let outcome =
        tokio::time::timeout_at(deadline.into(), send(shared, pool, target, &mut attempt)).await;
    let end = Instant::now();
    let error_kind = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(kind)) => Some(kind),
        Err(_elapsed) => Some(ErrorKind::Timeout),
    };
    let clock = shared.clock;
    let first_byte_ts_ns =
        attempt.first_byte_ns.map(|ns| ns.load(Ordering::Relaxed)).filter(|&ns| ns != 0);
    let record = RequestRecord {
        request_id,
        // The collector fills in the strings (see `Names`).
        url_class: String::new(),
        method: String::new(),
        url: String::new(),
        scheduled_ts_ns: clock.unix_ns(scheduled),
        start_ts_ns: clock.unix_ns(attempt.start.unwrap_or(end)),
        first_byte_ts_ns,
        end_ts_ns: clock.unix_ns(end),
        latency_us: duration_us(end.saturating_duration_since(scheduled)),
        status: attempt.status,
        response_body_bytes: attempt.response_body_bytes,
        error_kind,
        connection_id: attempt.connection_id,
        local_port: attempt.local_port,
        reused: attempt.reused,
    };
    shared.outboxes[thread]
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((target_index, record));
}

async fn send(
    shared: &Shared,
    pool: &Arc<Pool>,
    target: &PreparedTarget,
    attempt: &mut Attempt,
) -> Result<(), ErrorKind> {
    let mut slot = pool.acquire().await;
    attempt.start = Some(Instant::now());
    let mut conn = ready_connection(shared, slot.take()).await?;
    attempt.connection_id = Some(conn.id);
    attempt.local_port = conn.local_port;
    attempt.reused = conn.requests_done > 0;
    conn.first_byte_ns.store(0, Ordering::Relaxed);
    attempt.first_byte_ns = Some(Arc::clone(&conn.first_byte_ns));

    // GET is `Request::new`'s method; building the parts directly skips the builder's checks of
    // values that were validated once, in `Plan::new`.
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = target.path_and_query.clone();
    let headers = request.headers_mut();
    headers.insert(HOST, shared.plan.host.clone());
    if !shared.keepalive {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let response = conn.sender.send_request(request).await.map_err(|e| classify_hyper(&e))?;
    attempt.status = Some(response.status().as_u16());
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify_hyper(&e))?;
        if let Some(data) = frame.data_ref() {
            attempt.response_body_bytes += data.len() as u64;
        }
    }
    conn.requests_done += 1;
    if shared.keepalive {
        slot.keep(conn);
    }
    Ok(())
}

/// The slot's connection if it is still usable, else a new one. A kept connection the server has
/// closed in the meantime is replaced before anything is sent on it, as any HTTP client would.
async fn ready_connection(shared: &Shared, kept: Option<Conn>) -> Result<Conn, ErrorKind> {
    if let Some(mut conn) = kept {
        if !conn.sender.is_closed() && conn.sender.ready().await.is_ok() {
            return Ok(conn);
        }
    }
    let conn = connect(&shared.plan.addrs, shared.clock, &shared.connections_opened).await?;
    let mut conn = conn;
    conn.sender.ready().await.map_err(|e| classify_hyper(&e))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Target;

    #[test]
    fn split_shares_connections_near_equally() {
        let cases: &[(u32, u32, &[u32])] = &[
            (4, 2, &[2, 2]),
            (5, 2, &[3, 2]),
            (1, 1, &[1]),
            (7, 3, &[3, 2, 2]),
            (64, 4, &[16, 16, 16, 16]),
        ];
        for (total, parts, expected) in cases {
            assert_eq!(split(*total, *parts).collect::<Vec<_>>(), *expected, "{total}/{parts}");
        }
    }

    #[test]
    fn threads_never_exceed_connections_or_clients() {
        let targets = vec![Target::new("http://127.0.0.1:1/").unwrap()];
        let mut config =
            LoadConfig::new(targets, Model::Closed { concurrency: 3 }, Duration::from_secs(1));
        config.threads = 8;
        config.connections = 5;
        assert_eq!(thread_count(&config), 3, "clients");
        config.connections = 2;
        assert_eq!(thread_count(&config), 2, "connections");
        config.model = Model::Open { rate_per_s: 10.0 };
        config.connections = 64;
        assert_eq!(thread_count(&config), 8);
        config.threads = 0;
        assert_eq!(thread_count(&config), 1);
    }
}
