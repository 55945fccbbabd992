//! The built-in balancer in a compose project on the real Docker Engine:
//! the classic `dockercloud/haproxy` frontend served without its image,
//! scaling under load with no failed request, pickup of new replicas, and
//! the statistics page in a headless browser. Traffic goes only to
//! loopback ports published by the test's own containers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rcompose_tests::{engine_ready, require, stderr, stdout, TestProject, IMAGE};

/// A web service whose replicas answer with their own hostname.
fn web_service() -> String {
    format!(
        r#"  web:
    image: {IMAGE}
    command: ["sh", "-c", "hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    expose: ["80"]
    tmpfs: [/www]
    stop_grace_period: 2s
"#
    )
}

/// The seed's frontend, unchanged but for random host ports.
fn seed_stack() -> String {
    format!(
        r#"services:
{}  frontend:
    image: dockercloud/haproxy
    links:
      - web
    ports:
      - "80"
      - "1936"
    environment:
      BALANCE: roundrobin
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
"#,
        web_service()
    )
}

/// The loopback address a service's container port is published on.
fn published(p: &TestProject, service: &str, port: &str) -> String {
    let out = p.ok(&["port", service, port]);
    let line = out.lines().next().unwrap_or_default().trim().to_string();
    let port = line.rsplit(':').next().unwrap_or_default();
    format!("127.0.0.1:{port}")
}

/// One HTTP/1.1 response: status and body.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).trim().to_string()))
}

/// A keep-alive HTTP client that reconnects after an error.
struct Client {
    addr: String,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Client {
    fn new(addr: &str) -> Client {
        Client {
            addr: addr.to_string(),
            conn: None,
        }
    }

    fn get(&mut self, path: &str, headers: &str) -> std::io::Result<(u16, String)> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            let reader = BufReader::new(stream.try_clone()?);
            self.conn = Some((stream, reader));
        }
        let result = match self.conn.as_mut() {
            Some((stream, reader)) => stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n").as_bytes())
                .and_then(|()| read_response(reader)),
            None => unreachable!("connected above"),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// Polls until the frontend answers 200 (the balancer has found a replica).
fn wait_served(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match Client::new(addr).get("/", "") {
            Ok((200, body)) => return body,
            Ok((status, body)) => last = format!("{status} {body}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the frontend at {addr} never answered 200; last: {last}");
}

fn docker(args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

/// The hostname (short id) of a container, which is what it answers.
fn hostname_of(container: &str) -> String {
    docker(&["inspect", "-f", "{{.Config.Hostname}}", container])
        .trim()
        .to_string()
}

fn started_at(container: &str) -> SystemTime {
    let text = docker(&["inspect", "-f", "{{.State.StartedAt}}", container]);
    let time: jiff::Timestamp = text
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("cannot read StartedAt {text:?}: {e}"));
    SystemTime::from(time)
}

#[test]
fn the_seed_frontend_serves_alternating_replicas_right_after_scale() {
    if !engine_ready() {
        return;
    }
    let p = TestProject::new("lb-seed", &seed_stack());
    p.ok(&["up", "-d"]);
    let ps = p.ok(&["ps"]);
    assert!(
        ps.contains("frontend"),
        "the balancer is a service of the project:\n{ps}"
    );
    let addr = published(&p, "frontend", "80");
    let first = wait_served(&addr);

    let scaled = p.rc(&["--progress", "plain", "scale", "web=2"]);
    eprintln!("{}", rcompose_tests::stderr(&scaled));
    assert!(scaled.status.success());
    // No waiting: scale returns with the new replica in rotation.
    let mut client = Client::new(&addr);
    let bodies: Vec<String> = (0..4)
        .map(|_| {
            let (status, body) = client.get("/", "").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect();
    eprintln!("answers after scale web=2: {bodies:?}");
    assert_ne!(bodies[0], bodies[1], "two replicas in turn: {bodies:?}");
    assert_eq!(bodies[0], bodies[2], "{bodies:?}");
    assert_eq!(bodies[1], bodies[3], "{bodies:?}");
    assert!(bodies.contains(&first), "{bodies:?}");

    // Reachable by its service name from the other services.
    let inside = p.ok(&["exec", "-T", "web", "wget", "-qO-", "http://frontend/"]);
    assert!(
        bodies.contains(&inside.trim().to_string()),
        "{inside:?} from inside"
    );

    // The statistics of the image's default settings, with its credentials.
    let stats = published(&p, "frontend", "1936");
    let (status, _) = Client::new(&stats)
        .get("/stats.json", "")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 401, "stats need the credentials");
    let (status, json) = Client::new(&stats)
        .get("/stats.json", "Authorization: Basic c3RhdHM6c3RhdHM=\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);
    let snapshot: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let endpoints = &snapshot["backends"][0]["endpoints"];
    assert_eq!(endpoints.as_array().map(Vec::len), Some(2), "{json}");

    let logs = p.ok(&["logs", "frontend"]);
    assert!(logs.contains("endpoint added"), "{logs}");
    p.ok(&["down", "-t", "1"]);
    assert!(
        p.containers(true).is_empty(),
        "down removes the balancer too"
    );
}

/// Clients that send requests in a loop until told to stop, counting.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<(SystemTime, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, clients: usize) -> Load {
        let load = Load {
            stop: Arc::default(),
            ok: Arc::default(),
            failed: Arc::default(),
            failures: Arc::default(),
            seen: Arc::default(),
            threads: Vec::new(),
        };
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (load.stop.clone(), load.ok.clone(), load.failed.clone());
                let (failures, seen) = (load.failures.clone(), load.seen.clone());
                let addr = addr.to_string();
                std::thread::spawn(move || {
                    let mut client = Client::new(&addr);
                    let mut last = String::new();
                    while !stop.load(Relaxed) {
                        match client.get("/", "") {
                            Ok((200, body)) => {
                                ok.fetch_add(1, Relaxed);
                                if body != last {
                                    if let Ok(mut s) = seen.lock() {
                                        s.push((SystemTime::now(), body.clone()));
                                    }
                                    last = body;
                                }
                            }
                            Ok((status, body)) => {
                                failed.fetch_add(1, Relaxed);
                                if let Ok(mut f) = failures.lock() {
                                    f.push(format!("{status} {body}"));
                                }
                            }
                            Err(e) => {
                                failed.fetch_add(1, Relaxed);
                                if let Ok(mut f) = failures.lock() {
                                    f.push(e.to_string());
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load { threads, ..load }
    }

    /// Waits until `n` more requests than now have been answered (well or
    /// not), so that each step of a test is seen under load however fast
    /// the machine is; `after` names the step in the failure.
    fn answered(&self, n: u64, after: &str) {
        let count = || self.ok.load(Relaxed) + self.failed.load(Relaxed);
        let target = count() + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while count() < target {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} requests answered in 60 s after {after}",
                n + count() - target
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        (self.ok.load(Relaxed), self.failed.load(Relaxed), failures)
    }
}

#[test]
fn scaling_and_a_killed_replica_fail_no_request_under_load() {
    if !engine_ready() {
        return;
    }
    let p = TestProject::new("lb-load", &seed_stack());
    p.ok(&["up", "-d"]);
    let addr = published(&p, "frontend", "80");
    wait_served(&addr);

    // Each step is taken with requests in flight, and followed by enough
    // of them to meet whatever it left behind.
    let load = Load::start(&addr, 4);
    load.answered(50, "the start");
    for step in ["web=4", "web=1", "web=2"] {
        scale_telling_the_balancer(&p, step);
        load.answered(200, &format!("scale {step}"));
    }
    // A crash that rcompose did not cause.
    docker(&["kill", "-s", "KILL", &format!("{}-web-2", p.name)]);
    load.answered(200, "the kill");
    scale_telling_the_balancer(&p, "web=1");
    load.answered(200, "scale web=1");
    let (ok, failed, failures) = load.finish();
    eprintln!("under load, scaling 1 -> 4 -> 1 -> 2, SIGKILL of a replica, -> 1: {ok} requests succeeded, {failed} failed");
    assert_eq!(failed, 0, "failed requests: {failures:?}");
}

/// Runs `rcompose scale`, which must have told the balancer (it says so on
/// stderr when it could not, and goes on).
fn scale_telling_the_balancer(p: &TestProject, arg: &str) {
    let scaled = p.rc(&["scale", arg]);
    let said = stderr(&scaled);
    assert!(scaled.status.success(), "scale {arg} failed: {said}");
    assert!(
        !said.contains("balancer not told"),
        "scale {arg} could not tell the balancer: {said}"
    );
}

#[test]
fn a_new_replica_gets_traffic_as_soon_as_it_is_ready() {
    if !engine_ready() {
        return;
    }
    let p = TestProject::new("lb-pickup", &seed_stack());
    p.ok(&["up", "-d"]);
    let addr = published(&p, "frontend", "80");
    wait_served(&addr);

    // Through rcompose: scale tells the balancer before it returns.
    let load = Load::start(&addr, 2);
    scale_telling_the_balancer(&p, "web=2");
    let returned = SystemTime::now();
    // What the balancer held when scale returned (a diagnostic: timings on
    // a loaded machine include the clients' own scheduling).
    let stats = published(&p, "frontend", "1936");
    let states = Client::new(&stats)
        .get("/stats.json", "Authorization: Basic c3RhdHM6c3RhdHM=\r\n")
        .ok()
        .and_then(|(_, json)| serde_json::from_str::<serde_json::Value>(&json).ok())
        .map(|snapshot| {
            snapshot["backends"][0]["endpoints"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|e| e["state"].as_str().unwrap_or("?").to_string())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    eprintln!("endpoints in the balancer when scale returned: {states:?}");
    let replica = format!("{}-web-2", p.name);
    let host = hostname_of(&replica);
    let ready = started_at(&replica);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first_seen = loop {
        let seen = load.seen.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some((at, _)) = seen.iter().find(|(_, body)| *body == host) {
            break *at;
        }
        assert!(
            Instant::now() < deadline,
            "the new replica {host} never got a request"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let pickup = first_seen.duration_since(ready).unwrap_or_default();
    let after_return = first_seen.duration_since(returned).unwrap_or_default();
    eprintln!(
        "pickup through scale: first proxied request {:.1} ms after the replica started (target < 100 ms), {:.1} ms after scale returned",
        pickup.as_secs_f64() * 1000.0,
        after_return.as_secs_f64() * 1000.0
    );

    // Outside rcompose: a replica stopped and started by hand is followed
    // through the engine's events.
    docker(&["stop", "-t", "1", &replica]);
    docker(&["start", &replica]);
    let ready = started_at(&replica);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first_seen = loop {
        let seen = load.seen.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some((at, _)) = seen.iter().find(|(at, body)| *body == host && *at > ready) {
            break *at;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted replica {host} never got a request"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let (ok, failed, failures) = load.finish();
    eprintln!(
        "pickup through engine events: first proxied request {:.1} ms after the replica started (target < 100 ms); {ok} requests, {failed} failed",
        first_seen.duration_since(ready).unwrap_or_default().as_secs_f64() * 1000.0
    );
    assert_eq!(failed, 0, "failed requests: {failures:?}");
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

#[test]
fn the_stats_page_renders_in_a_headless_browser() {
    if !engine_ready() {
        return;
    }
    let Some(browser) = chromium() else {
        require(false, "chromium (headless browser)");
        return;
    };
    // The first-class spelling, with the statistics listener turned on.
    let compose = format!(
        r#"services:
{}  lb:
    image: rcompose/balancer
    depends_on: [web]
    ports:
      - "80"
      - "8404"
    x-rcompose-balancer:
      balance: least_conn
      stats:
        port: 8404
"#,
        web_service()
    );
    let p = TestProject::new("lb-stats", &compose);
    p.ok(&["up", "-d", "--scale", "web=2"]);
    let addr = published(&p, "lb", "80");
    wait_served(&addr);
    let mut client = Client::new(&addr);
    for _ in 0..10 {
        let _ = client.get("/", "");
    }
    let stats = published(&p, "lb", "8404");
    let shot = p.dir.join("stats.png");
    let profile = p.dir.join("chromium-profile");
    let run = |extra: &str| {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                &format!("--user-data-dir={}", profile.display()),
                extra,
                &format!("http://{stats}/"),
            ])
            .output()
            .unwrap_or_else(|e| panic!("running {browser}: {e}"))
    };
    let dom = stdout(&run("--dump-dom"));
    assert!(dom.contains("<title>rcompose balancer</title>"), "{dom}");
    assert!(dom.contains("Backend default"), "{dom}");
    let up_rows = dom.matches("class=\"l up\"").count();
    assert_eq!(up_rows, 2, "two replicas shown up:\n{dom}");
    let _ = run(&format!("--screenshot={}", shot.display()));
    if let Ok(keep) = std::env::var("RCOMPOSE_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }
    assert!(
        shot.exists(),
        "the browser rendered the page to {}",
        shot.display()
    );
}

#[test]
fn a_bad_balancer_setting_is_refused_before_anything_runs() {
    let p = TestProject::new(
        "lb-bad",
        "services:\n  web:\n    image: web:1\n  frontend:\n    image: dockercloud/haproxy\n    links: [web]\n    environment:\n      BALANCE: fastest\n",
    );
    let o = p.rc(&["up", "-d"]);
    assert!(!o.status.success());
    let err = rcompose_tests::stderr(&o);
    assert!(
        err.contains(
            "compose.yaml:8:7: service \"frontend\": BALANCE=\"fastest\" is not a balancing algorithm"
        ),
        "{err}"
    );
    // The list form points at the entry.
    let p = TestProject::new(
        "lb-bad-list",
        "services:\n  web:\n    image: web:1\n  frontend:\n    image: dockercloud/haproxy\n    links: [web]\n    environment:\n      - MODE=http\n      - TIMEOUT=connect soon\n",
    );
    let o = p.rc(&["up", "-d"]);
    assert!(!o.status.success());
    let err = rcompose_tests::stderr(&o);
    assert!(
        err.contains(
            "compose.yaml:9:9: service \"frontend\": TIMEOUT: cannot read \"connect soon\""
        ),
        "{err}"
    );
}

/// The distinct bodies (replica hostnames) served within `limit`, stopping
/// as soon as all of `want` were seen.
fn served_within(addr: &str, want: &[String], limit: Duration) -> (Vec<String>, Duration) {
    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let mut client = Client::new(addr);
    while started.elapsed() < limit {
        if let Ok((200, body)) = client.get("/", "") {
            if !seen.contains(&body) {
                seen.push(body);
            }
        }
        if want.iter().all(|w| seen.contains(w)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (seen, started.elapsed())
}

/// The endpoints a balancer's statistics list for its first backend.
fn endpoint_states(stats: &str) -> Vec<String> {
    Client::new(stats)
        .get("/stats.json", "")
        .ok()
        .and_then(|(_, json)| serde_json::from_str::<serde_json::Value>(&json).ok())
        .and_then(|v| v["backends"][0]["endpoints"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["id"].as_str().unwrap_or("?"),
                e["state"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn a_balancer_without_the_engine_socket_runs_unprivileged_and_follows_every_replica() {
    if !engine_ready() {
        return;
    }
    let compose = format!(
        r#"services:
{}  lb:
    image: {IMAGE}
    depends_on: [web]
    ports:
      - "80"
      - "8404"
    x-rcompose-balancer:
      stats:
        port: 8404
"#,
        web_service()
    );
    let p = TestProject::new("lb-nosock", &compose);
    p.ok(&["up", "-d"]);
    let lb = format!("{}-lb-1", p.name);
    let mounts = docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Destination}} {{end}}",
        &lb,
    ]);
    assert!(!mounts.contains("docker.sock"), "mounts: {mounts}");
    let confinement = docker(&[
        "inspect",
        "-f",
        "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}",
        &lb,
    ]);
    assert_eq!(
        confinement.trim(),
        "65534:65534 true [ALL] [no-new-privileges:true]"
    );

    // The control channel is on no network: a container of the project
    // cannot reach the old control port, nor any port of the balancer but
    // the ones it serves.
    let network = format!("{}_default", p.name);
    let probe = docker(&[
        "run",
        "--rm",
        "--network",
        &network,
        IMAGE,
        "sh",
        "-c",
        "wget -q -T 2 -O- http://lb:19736/v1/state 2>&1; echo rc=$?",
    ]);
    // Refused, not merely unauthorized: nothing listens there.
    assert!(
        !probe.contains("rc=0") && !probe.contains("HTTP/"),
        "the control port answered: {probe}"
    );
    // On the host, the control directory is its owner's alone.
    let root = std::path::Path::new("/var/lib/rcompose/balancers");
    if let Ok(meta) = std::fs::metadata(root) {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o700,
            "{}",
            root.display()
        );
    }

    let addr = published(&p, "lb", "80");
    let stats = published(&p, "lb", "8404");
    wait_served(&addr);
    // rcompose's own scale is announced.
    scale_telling_the_balancer(&p, "web=2");
    let two: Vec<String> = (1..=2)
        .map(|i| hostname_of(&format!("{}-web-{i}", p.name)))
        .collect();
    let (seen, took) = served_within(&addr, &two, Duration::from_secs(5));
    assert!(
        two.iter().all(|h| seen.contains(h)),
        "after scale: {seen:?}, want {two:?}"
    );
    eprintln!(
        "no socket: both replicas served {:.0} ms after scale returned",
        took.as_secs_f64() * 1000.0
    );

    // A replica killed behind rcompose's back leaves the rotation.
    docker(&["kill", "-s", "KILL", &format!("{}-web-2", p.name)]);
    let killed = Instant::now();
    let gone = loop {
        let states = endpoint_states(&stats);
        if states.len() == 1 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the killed replica is still listed after 5 s: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "no socket: a SIGKILLed replica left the balancer {:.0} ms after the kill",
        gone.as_secs_f64() * 1000.0
    );

    // Replicas started by another tool join it.
    if !require(
        rcompose_tests::reference_available(),
        "the reference docker compose",
    ) {
        return;
    }
    let o = rcompose_tests::reference(
        &p.dir,
        &[
            "-p",
            &p.name,
            "up",
            "-d",
            "--no-deps",
            "--no-recreate",
            "--scale",
            "web=3",
            "web",
        ],
    );
    assert!(
        o.status.success(),
        "docker compose up --scale: {}",
        stderr(&o)
    );
    let started = Instant::now();
    let three: Vec<String> = (1..=3)
        .map(|i| hostname_of(&format!("{}-web-{i}", p.name)))
        .collect();
    let (seen, _) = served_within(&addr, &three, Duration::from_secs(5));
    assert!(
        three.iter().all(|h| seen.contains(h)),
        "after docker compose --scale web=3: {seen:?}, want {three:?}; balancer: {:?}",
        endpoint_states(&stats)
    );
    eprintln!(
        "no socket: replicas started by docker compose served within {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    p.ok(&["down", "-t", "1"]);
    assert!(
        !root.join(&p.name).exists(),
        "down removes the balancer's control directory"
    );
}

/// Runs curl (Debian's, installed by the test script) and returns its output.
fn curl(args: &[&str]) -> String {
    let o = Command::new("curl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl {args:?}: {e}"));
    stdout(&o)
}

#[test]
fn the_seed_frontend_serves_https_with_ssl_cert_and_forces_it() {
    if !engine_ready() {
        return;
    }
    let made = rcgen::generate_simple_self_signed(vec!["site.test".to_string()])
        .unwrap_or_else(|e| panic!("making a certificate: {e}"));
    let pem = format!("{}{}", made.cert.pem(), made.signing_key.serialize_pem());
    // As the image takes it: one line, with \n for each line break.
    let one_line = pem.trim_end().replace('\n', "\\n");
    let compose = format!(
        r#"services:
  web:
    image: {IMAGE}
    command: ["sh", "-c", "hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    expose: ["80"]
    tmpfs: [/www]
    environment:
      FORCE_SSL: "yes"
  frontend:
    image: dockercloud/haproxy
    links:
      - web
    ports:
      - "80"
      - "443"
    environment:
      DEFAULT_SSL_CERT: '{one_line}'
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
"#
    );
    let p = TestProject::new("lb-tls", &compose);
    std::fs::write(p.dir.join("ca.pem"), made.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    p.ok(&["up", "-d"]);
    let https = published(&p, "frontend", "443");
    let port = https.rsplit(':').next().unwrap_or_default().to_string();
    let resolve = format!("site.test:{port}:127.0.0.1");
    let url = format!("https://site.test:{port}/");
    let ca = p.dir.join("ca.pem").display().to_string();
    let host = hostname_of(&format!("{}-web-1", p.name));
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = curl(&[
            "-s",
            "--max-time",
            "5",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            &url,
        ]);
        if body.trim() == host || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        body.trim(),
        host,
        "over https, verified against the certificate"
    );
    let alpn = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        "--http2",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        &url,
    ]);
    assert_eq!(alpn, "2", "h2 is offered by ALPN");
    // FORCE_SSL: plain HTTP is redirected.
    let http = published(&p, "frontend", "80");
    let redirect = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "Host: site.test",
        &format!("http://{http}/page?x=1"),
    ]);
    assert_eq!(redirect, "301 https://site.test/page?x=1");
    p.ok(&["down", "-t", "1"]);
}
