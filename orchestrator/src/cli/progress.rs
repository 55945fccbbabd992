//! The progress display of plan execution, in the style users know from
//! Compose: one line per resource with its state and elapsed time.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use orchestrator::execute::Progress;
use orchestrator::plan::Plan;
use tokio::sync::mpsc::UnboundedReceiver;

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A block redrawn in place.
    Tty,
    /// One line per change.
    Plain,
    /// Nothing.
    Quiet,
    /// One JSON object per change.
    Json,
}

impl Mode {
    /// `auto` picks `tty` on a terminal, `plain` otherwise.
    pub fn parse(s: Option<&str>) -> Result<Mode, String> {
        match s.unwrap_or("auto") {
            "auto" => Ok(if std::io::stderr().is_terminal() {
                Mode::Tty
            } else {
                Mode::Plain
            }),
            "tty" => Ok(Mode::Tty),
            "plain" => Ok(Mode::Plain),
            "quiet" => Ok(Mode::Quiet),
            "json" => Ok(Mode::Json),
            other => Err(format!(
                "unsupported --progress value {other:?}: use auto, tty, plain, quiet or json"
            )),
        }
    }
}

struct Line {
    subject: String,
    status: String,
    done: bool,
    failed: bool,
    started: Instant,
    elapsed: Option<f64>,
}

/// Shows the progress of `plan` until the executor hangs up.
pub async fn render(plan: &Plan, mode: Mode, title: &str, mut rx: UnboundedReceiver<Progress>) {
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut drawn = 0usize;
    let mut notes: Vec<String> = Vec::new();
    let mut err = std::io::stderr();
    let total = plan
        .ops
        .iter()
        .map(|o| o.action.subject())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    while let Some(event) = rx.recv().await {
        let (i, status, done, failed) = match &event {
            Progress::Started(i) => (*i, plan.ops[*i].action.verbs().0.to_string(), false, false),
            Progress::Done(i) => (*i, plan.ops[*i].action.verbs().1.to_string(), true, false),
            Progress::Failed(i, e) => (*i, format!("Error {e}"), true, true),
            Progress::Skipped(i) => (*i, "Skipped".to_string(), true, true),
            Progress::Output(i, text) => {
                let subject = plan.ops[*i].action.subject();
                match mode {
                    Mode::Plain => {
                        let _ = writeln!(err, "{subject} {}", text.trim_end());
                    }
                    Mode::Json => {
                        let v = serde_json::json!({ "id": subject, "text": text.trim_end() });
                        let _ = writeln!(err, "{v}");
                    }
                    // Below the live lines once they are final.
                    Mode::Tty => notes.push(format!("{subject} {}", text.trim_end())),
                    Mode::Quiet => {}
                }
                continue;
            }
        };
        let subject = plan.ops[i].action.subject();
        let line = lines.entry(subject.clone()).or_insert_with(|| {
            order.push(subject.clone());
            Line {
                subject: subject.clone(),
                status: String::new(),
                done: false,
                failed: false,
                started: Instant::now(),
                elapsed: None,
            }
        });
        line.status = status;
        line.done = done;
        line.failed |= failed;
        line.elapsed = done.then(|| line.started.elapsed().as_secs_f64());
        match mode {
            Mode::Quiet => {}
            Mode::Plain => {
                let _ = writeln!(err, " {}  {}", line.subject, line.status);
            }
            Mode::Json => {
                let v = serde_json::json!({
                    "id": line.subject,
                    "status": line.status,
                    "done": line.done,
                    "error": line.failed,
                });
                let _ = writeln!(err, "{v}");
            }
            Mode::Tty => {
                let finished = lines.values().filter(|l| l.done).count();
                let mut out = String::new();
                if drawn > 0 {
                    out.push_str(&format!("\x1b[{drawn}A"));
                }
                out.push_str(&format!(
                    "\x1b[2K[+] {title} {finished}/{}\n",
                    total.max(finished)
                ));
                let width = order.iter().map(String::len).max().unwrap_or(0);
                for key in &order {
                    let Some(l) = lines.get(key) else { continue };
                    let mark = match (l.done, l.failed) {
                        (true, false) => "\x1b[32m✔\x1b[0m",
                        (true, true) => "\x1b[31m✘\x1b[0m",
                        _ => "\x1b[34m⠿\x1b[0m",
                    };
                    let secs = l
                        .elapsed
                        .unwrap_or_else(|| l.started.elapsed().as_secs_f64());
                    out.push_str(&format!(
                        "\x1b[2K {mark} {:<width$}  {:<12} {secs:.1}s\n",
                        l.subject, l.status
                    ));
                }
                drawn = order.len() + 1;
                let _ = err.write_all(out.as_bytes());
            }
        }
    }
    for note in notes {
        let _ = writeln!(err, "{note}");
    }
}
