//! A throw-away PostgreSQL server for tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::{free_tcp_port, in_ci, temp_dir, wait_for_tcp};

/// The superuser's password: TCP connections authenticate with SCRAM, so
/// tests exercise the password path.
pub const POSTGRES_PASSWORD: &str = "coapgate-test";

/// A PostgreSQL server of its own on 127.0.0.1, on a free port: `initdb`
/// into a temporary directory (the unix socket lives there too), stopped
/// and removed on drop.
///
/// As root it runs as the `postgres` system user (PostgreSQL refuses to run
/// as root), which owns the directory. TCP connections need the password
/// ([`POSTGRES_PASSWORD`], SCRAM); the unix socket trusts. Durability is
/// off (`fsync=off`): a crash loses the data, a [`stop`](Self::stop) does
/// not.
pub struct Postgres {
    bin: PathBuf,
    /// The TCP port; the same across [`restart`](Self::restart).
    pub port: u16,
    dir: PathBuf,
    /// `Some("postgres")` when running as root.
    user: Option<&'static str>,
    running: bool,
}

/// The directory of `initdb`, `pg_ctl` and `psql`: Debian's newest
/// `/usr/lib/postgresql/N/bin`, else wherever `PATH` has `pg_ctl`.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("pg_ctl").is_file() && dir.join("initdb").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

impl Postgres {
    /// Initialises and starts a server; `None` when PostgreSQL is not
    /// installed outside CI (a loud SKIPPED line, as [`crate::require`]).
    /// Takes about a second.
    pub fn start(test: &str) -> Option<Self> {
        let Some(bin) = find_bin() else {
            if in_ci() {
                panic!(
                    "PostgreSQL (initdb, pg_ctl) is not installed and CI=true: {test} cannot run (see scripts/test.sh)"
                );
            }
            eprintln!(
                "\n***** SKIPPED {test}: PostgreSQL is not installed (apt-get install postgresql; CI=true makes this a failure) *****\n"
            );
            return None;
        };
        let user = is_root().then_some("postgres");
        let dir = temp_dir("postgres");
        let mut pg = Postgres {
            bin,
            port: free_tcp_port(),
            dir,
            user,
            running: false,
        };
        pg.init();
        pg.restart();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command running `program` of the PostgreSQL binaries as the
    /// server's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.user {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }

    fn run(&self, mut cmd: Command, what: &str) -> Output {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn init(&self) {
        if let Some(user) = self.user {
            self.run(
                {
                    let mut cmd = Command::new("chown");
                    cmd.arg(format!("{user}:")).arg(&self.dir);
                    cmd
                },
                "chown the PostgreSQL directory",
            );
        }
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, POSTGRES_PASSWORD).unwrap();
        if let Some(user) = self.user {
            Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&pwfile)
                .status()
                .unwrap();
        }
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(self.data())
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        self.run(cmd, "initdb");
    }

    /// Starts the server (again) on the same port with the same data; stops
    /// it first if it runs. Waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "30", "-o", &options, "start"]);
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        self.running = true;
        assert!(
            wait_for_tcp(self.port, Duration::from_secs(10)),
            "PostgreSQL does not listen on {}: {}",
            self.port,
            self.log()
        );
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended, data
    /// kept). A no-op when it is not running.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "30", "stop"]);
        let _ = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.running = false;
    }

    /// Turns TLS on with this certificate chain and key (PEM files), which
    /// are copied into the data directory; takes effect at once (a reload).
    pub fn enable_tls(&self, cert: &Path, key: &Path) {
        let data = self.data();
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            std::fs::copy(from, data.join(to)).unwrap();
            if let Some(user) = self.user {
                Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(data.join(to))
                    .status()
                    .unwrap();
            }
            Command::new("chmod")
                .arg("600")
                .arg(data.join(to))
                .status()
                .unwrap();
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql("postgres", "SELECT pg_reload_conf()");
        // The reload is asynchronous: wait until the server says it is on.
        for _ in 0..100 {
            if self.psql("postgres", "SHOW ssl") == "on" {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PostgreSQL did not turn TLS on: {}", self.log());
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/DATABASE?sslmode=disable`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{POSTGRES_PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Creates an empty database and returns its [`url`](Self::url).
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs SQL with `psql` over the unix socket (as the superuser) and
    /// returns its unaligned output; panics when it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-h",
        ])
        .arg(&self.dir)
        .args(["-p", &self.port.to_string(), "-d", database, "-c", sql]);
        let out = self.run(cmd, "psql");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The directory holding the data directory, the socket and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let mut cmd = self.command("pg_ctl");
            cmd.arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "-t", "10", "stop"]);
            let _ = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
