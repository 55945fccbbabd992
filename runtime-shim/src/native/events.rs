//! The native runtime's events: one log per project under
//! `<root>/events/<project>.jsonl` (`_.jsonl` for containers of no
//! project), appended to by the runtime (create, kill, pause, destroy) and
//! by the monitors (start, die, oom, health), read by `events`, by observe
//! and by the balancer's feed. Each event is one line written with one
//! `write` to a file opened for appending, so that writers never
//! interleave.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::logfile::Follower;
use crate::{BoxStream, ContainerEvent, EventKind, Health, LabelFilter, Result};

/// The label naming a container's project.
const PROJECT: &str = "com.docker.compose.project";

/// A log grows to this size, then starts again (the previous one kept as
/// `.1`).
const MAX_SIZE: u64 = 8 << 20;

/// One event as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Nanoseconds since the epoch.
    pub time: i64,
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Docker's action word (`start`, `die`, `health_status: healthy`).
    pub action: String,
    /// The exit code of a `die`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The signal of a `kill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl Record {
    fn kind(&self) -> Option<EventKind> {
        Some(match self.action.as_str() {
            "create" => EventKind::Created,
            "start" => EventKind::Started,
            "kill" => EventKind::Killed {
                signal: self.signal,
            },
            "die" => EventKind::Died {
                exit_code: self.exit_code.unwrap_or(0),
            },
            "stop" => EventKind::Stopped,
            "oom" => EventKind::OutOfMemory,
            "pause" => EventKind::Paused,
            "unpause" => EventKind::Unpaused,
            "health_status: healthy" => EventKind::Health(Health::Healthy),
            "health_status: unhealthy" => EventKind::Health(Health::Unhealthy),
            "health_status: starting" => EventKind::Health(Health::Starting),
            "rename" => EventKind::Renamed,
            "destroy" => EventKind::Removed,
            _ => return None,
        })
    }
}

/// The event log of the project a container with these labels belongs to.
pub fn log_for(dir: &Path, labels: &BTreeMap<String, String>) -> PathBuf {
    let project = labels
        .get(PROJECT)
        .filter(|p| !p.is_empty() && !p.contains('/') && !p.starts_with('.'))
        .map(String::as_str)
        .unwrap_or("_");
    dir.join(format!("{project}.jsonl"))
}

/// Appends an event to a log.
pub fn append(log: &Path, record: &Record) {
    let Ok(mut line) = serde_json::to_vec(record) else {
        return;
    };
    line.push(b'\n');
    if fs::metadata(log).is_ok_and(|m| m.len() > MAX_SIZE) {
        let _ = fs::rename(log, super::logfile::rotated(log, 1));
    }
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(log) {
        let _ = f.write_all(&line);
    }
}

/// How often the logs are looked at for new events.
const POLL: Duration = Duration::from_millis(25);

/// The events from now on of the containers matching every filter.
pub fn stream(dir: &Path, filter: &[LabelFilter]) -> Result<BoxStream<ContainerEvent>> {
    let _ = fs::create_dir_all(dir);
    // A filter on the project reads its log only; otherwise every log,
    // also those that appear later.
    let only = filter
        .iter()
        .find(|f| f.key == PROJECT)
        .and_then(|f| f.value.clone())
        .map(|p| log_for(dir, &BTreeMap::from([(PROJECT.to_string(), p)])));
    let dir = dir.to_path_buf();
    let filter = filter.to_vec();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ContainerEvent>>(256);
    std::thread::spawn(move || {
        let mut followers: BTreeMap<PathBuf, Follower> = BTreeMap::new();
        let scan = |followers: &mut BTreeMap<PathBuf, Follower>, start_at_end: bool| {
            let paths: Vec<PathBuf> = match &only {
                Some(p) => vec![p.clone()],
                None => fs::read_dir(&dir)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .map(|e| e.path())
                            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            for p in paths {
                followers.entry(p.clone()).or_insert_with(|| {
                    if start_at_end {
                        Follower::at_end(&p)
                    } else {
                        Follower::from_start(&p)
                    }
                });
            }
        };
        scan(&mut followers, true);
        let mut rounds = 0u32;
        loop {
            let mut batch: Vec<Record> = Vec::new();
            for f in followers.values_mut() {
                for line in f.next_lines() {
                    if let Ok(r) = serde_json::from_str::<Record>(&line) {
                        batch.push(r);
                    }
                }
            }
            batch.sort_by_key(|r| r.time);
            for r in batch {
                if !LabelFilter::all_match(&filter, &r.labels) {
                    continue;
                }
                let Some(kind) = r.kind() else { continue };
                let event = ContainerEvent {
                    time_nanos: r.time,
                    id: r.id,
                    name: r.name,
                    image: r.image,
                    labels: r.labels,
                    kind,
                };
                if tx.blocking_send(Ok(event)).is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            rounds += 1;
            if only.is_none() && rounds.is_multiple_of(8) {
                // A log that appeared since holds only new events.
                scan(&mut followers, false);
            }
            std::thread::sleep(POLL);
        }
    });
    let mut rx = rx;
    Ok(Box::pin(futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
    })))
}
