//! The app tier: N synchronous workers sharing one listen socket, like gunicorn's sync workers.
//!
//! Each worker accepts one connection and serves it to the end before accepting the next, so a
//! slow request (waiting for a database connection) holds a whole worker, and everything else waits
//! in the kernel's accept queue. Workers are threads, not processes: what matters to the outage is
//! the one-request-at-a-time discipline and the shared accept queue, both of which are real here.
//!
//! Routes: `/cached` (no database), `/db` (one query), anything else 404.

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::DbMode;
use crate::counters::Counters;
use crate::db::{DbTarget, WorkerDb, ITEM_ROWS};
use crate::http;
use crate::tier::{self, Stop};

/// What the workers need to know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AppSettings {
    pub(crate) workers: usize,
    pub(crate) db: DbTarget,
    pub(crate) db_mode: DbMode,
    pub(crate) io_timeout: Duration,
}

/// Starts the workers on an already listening socket.
pub(crate) fn start(
    listener: &TcpListener,
    settings: AppSettings,
    stop: &Arc<Stop>,
    counters: &Arc<Counters>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let next_id = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::with_capacity(settings.workers);
    for index in 0..settings.workers {
        let (shared_socket, worker_stop, counters, next_id) =
            (listener.try_clone()?, Arc::clone(stop), Arc::clone(counters), Arc::clone(&next_id));
        let worker =
            std::thread::Builder::new().name(format!("lab-app-worker-{index}")).spawn(move || {
                let stop = worker_stop;
                let mut db = WorkerDb::new(settings.db, settings.db_mode, settings.io_timeout);
                while !stop.is_stopping() {
                    match shared_socket.accept() {
                        Ok((stream, _)) => {
                            Counters::bump(&counters.app_connections);
                            serve(stream, &settings, &stop, &counters, &mut db, &next_id);
                        }
                        Err(_) if stop.is_stopping() => break,
                        Err(_) => std::thread::sleep(Duration::from_millis(5)), // EMFILE and friends
                    }
                }
                db.close();
            });
        match worker {
            Ok(worker) => workers.push(worker),
            Err(err) => {
                // Stop and join the ones already started: the caller gets a clean failure.
                stop.begin();
                tier::wake_acceptors(listener);
                for worker in workers {
                    let _ = worker.join();
                }
                return Err(err);
            }
        }
    }
    Ok(workers)
}

/// Serves one connection to its end: keep-alive requests in order, then the close.
fn serve(
    stream: TcpStream,
    settings: &AppSettings,
    stop: &Arc<Stop>,
    counters: &Counters,
    db: &mut WorkerDb,
    next_id: &AtomicU32,
) {
    let Some(_tracked) = stop.track(&stream) else { return };
    if tier::tune(&stream, settings.io_timeout).is_err() {
        return;
    }
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    while let Ok(Some(head)) = http::read_head(&mut reader) {
        if http::read_body(&mut reader, head.content_length).is_err() {
            break;
        }
        let path = head.second.split('?').next().unwrap_or("");
        let (status, body) = match path {
            "/cached" => {
                Counters::bump(&counters.app_requests_cached);
                (200, "cached item\n".to_string())
            }
            "/db" => {
                Counters::bump(&counters.app_requests_db);
                let id = next_id.fetch_add(1, Ordering::Relaxed) % ITEM_ROWS + 1;
                match db.query(id, counters) {
                    Ok(row) => (200, format!("{row}\n")),
                    Err(err) => (503, format!("{err}\n")),
                }
            }
            _ => {
                Counters::bump(&counters.app_requests_other);
                (404, "not found: try /cached or /db\n".to_string())
            }
        };
        let close = head.close || stop.is_stopping();
        if http::write_response(&mut writer, status, body.as_bytes(), close).is_err() || close {
            break;
        }
    }
    // The server closes first after `Connection: close`, as gunicorn's sync worker does.
    let _ = writer.flush();
    let _ = writer.shutdown(Shutdown::Write);
}
