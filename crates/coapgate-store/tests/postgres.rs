//! PostgreSQL only: several instances on one database (concurrent
//! bootstraps, concurrent migrations, resync), an unreachable or stopped
//! server, schema and open errors, the password and TLS settings.

#![cfg(feature = "postgres")]
// Test helpers panic to report a failure, like the #[test]s that call them.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use coapgate_bootstrap::{OsPskGenerator, Policy, PskFormat, PskRecord, PskUpdate};
use coapgate_location::{Position, PositionStore};
use coapgate_model::{Device, DeviceDirectory, DeviceStatus, Iccid, Registrations};
use coapgate_store::{SCHEMA_VERSION, Store, StoreError};
use coapgate_testkit::Postgres;
use common::Db;

fn iccid(n: u32) -> Iccid {
    format!("89882806660000{n:05}").parse().unwrap()
}

fn device(n: u32) -> Device {
    Device {
        iccid: iccid(n),
        imsi: None,
        ip: format!("10.1.{}.{}", n / 250, n % 250 + 1).parse().unwrap(),
        status: DeviceStatus::Active,
        name: None,
    }
}

fn update(who: &Iccid, at: SystemTime) -> PskUpdate {
    PskUpdate::new(who.clone(), at, Policy::default(), &mut OsPskGenerator)
}

fn postgres(test: &str) -> Option<Db> {
    Db::postgres(test)
}

/// Runs `a` and `b` on two threads released at the same moment.
fn at_once<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send + 'static,
    B: FnOnce() -> RB + Send + 'static,
    RA: Send + 'static,
    RB: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let other = barrier.clone();
    let first = std::thread::spawn(move || {
        other.wait();
        a()
    });
    barrier.wait();
    let second = b();
    (first.join().unwrap(), second)
}

#[test]
fn two_instances_bootstrapping_one_device_at_once_hand_out_one_psk() {
    let Some(db) = postgres("two_instances_bootstrapping_one_device_at_once_hand_out_one_psk")
    else {
        return;
    };
    let one = db.open();
    let two = db.open();
    let t0 = SystemTime::now();
    for n in 0..60 {
        let who = iccid(n);
        one.put_device(device(n)).unwrap();
        // A device without a PSK; then, for the same device, a PSK past its
        // 5 minutes: both calls would generate one if they did not wait
        // for each other.
        for at in [t0, t0 + Duration::from_secs(600)] {
            let (a, b) = (one.clone(), two.clone());
            let (ua, ub) = (update(&who, at), update(&who, at));
            let (ra, rb) = at_once(move || a.bootstrap(&ua), move || b.bootstrap(&ub));
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            assert_eq!(ra.psk, rb.psk, "device {n}: two PSKs handed out");
            assert_eq!(one.psk(&who).unwrap().unwrap().psk, ra.psk);
            // Both instances use the key they handed out.
            assert_eq!(
                one.psk_keys().key(who.as_str()),
                two.psk_keys().key(who.as_str())
            );
        }
    }
}

#[test]
fn an_operator_psk_racing_a_bootstrap_is_never_lost() {
    let Some(db) = postgres("an_operator_psk_racing_a_bootstrap_is_never_lost") else {
        return;
    };
    let engine = db.open();
    let admin = db.open();
    for n in 0..40 {
        let who = iccid(n);
        engine.put_device(device(n)).unwrap();
        let operator =
            PskRecord::operator(&format!("operator-key-{n}"), PskFormat::String).unwrap();
        let (e, a) = (engine.clone(), admin.clone());
        let (u, w, op) = (
            update(&who, SystemTime::now()),
            who.clone(),
            operator.clone(),
        );
        let (issued, set) = at_once(move || e.bootstrap(&u), move || a.set_psk(&w, &op));
        set.unwrap();
        let issued = issued.unwrap();
        let stored = admin.psk(&who).unwrap().unwrap();
        assert_eq!(
            stored.psk, operator.psk,
            "device {n}: the operator's PSK was lost"
        );
        // Ordered: the bootstrap either ran first (and issued a generated
        // PSK that the operator then replaced) or after (and kept it).
        assert!(
            issued.psk == operator.psk || issued.origin == coapgate_bootstrap::PskOrigin::Generated
        );
    }
}

#[test]
fn instances_starting_at_once_migrate_once() {
    let Some(mut db) = postgres("instances_starting_at_once_migrate_once") else {
        return;
    };
    for round in 0..5 {
        let url = db.server().create_database(&format!("fresh{round}"));
        let (a, b) = (url.clone(), url.clone());
        let (one, two) = at_once(
            move || coapgate_store::open(&a),
            move || coapgate_store::open(&b),
        );
        let (one, two) = (one.unwrap(), two.unwrap());
        let version = db.server().psql(
            &format!("fresh{round}"),
            "SELECT version FROM coapgate_schema",
        );
        assert_eq!(
            version,
            SCHEMA_VERSION.to_string(),
            "one row, the current version"
        );
        one.put_device(device(1)).unwrap();
        assert!(two.device(&iccid(1)).unwrap().is_some());
    }
}

#[test]
fn a_stopped_server_makes_calls_busy_and_the_store_recovers_when_it_is_back() {
    let Some(mut db) = postgres("a_stopped_server_makes_calls_busy") else {
        return;
    };
    let store = db.open();
    let who = iccid(1);
    store.put_device(device(1)).unwrap();
    let t0 = SystemTime::now();
    let issued = store.bootstrap(&update(&who, t0)).unwrap();

    db.server().stop();
    let started = Instant::now();
    let error = store.bootstrap(&update(&who, t0)).unwrap_err();
    assert!(matches!(error, StoreError::Busy { .. }), "{error:?}");
    assert!(error.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection fails at once, not after a pool timeout: {:?}",
        started.elapsed()
    );
    for error in [
        store.device(&who).unwrap_err(),
        store.put_device(device(2)).unwrap_err(),
        store.mark_registered(&who, t0).unwrap_err(),
        store.ping().unwrap_err(),
    ] {
        assert!(error.is_transient(), "{error:?}");
    }
    store.record(&who, Position::new(13.0, 52.0, "GPS", 100).unwrap());
    assert!(store.flush_positions().unwrap_err().is_transient());
    // The hot path's views still answer.
    assert!(store.directory().by_ip(device(1).ip).is_some());
    assert!(store.psk_keys().key(who.as_str()).is_some());

    db.server().restart();
    store.ping().unwrap();
    // Within the 5 minutes: the same PSK, the database did not forget.
    let again = store
        .bootstrap(&update(&who, t0 + Duration::from_secs(60)))
        .unwrap();
    assert_eq!(again.psk, issued.psk);
    // The position queued while the server was down was kept for this flush.
    assert_eq!(store.flush_positions().unwrap(), 1);
    assert_eq!(store.positions(&who).unwrap().len(), 1);
    store.mark_registered(&who, t0).unwrap();
    assert!(store.is_registered(&who));
    store.put_device(device(2)).unwrap();
}

#[test]
fn a_device_locked_by_another_session_makes_bootstrap_busy_after_the_lock_timeout() {
    let Some(db) = postgres("a_device_locked_by_another_session") else {
        return;
    };
    let store = db.open();
    let who = iccid(1);
    store.put_device(device(1)).unwrap();
    let mut other = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    let mut tx = other.transaction().unwrap();
    tx.execute(
        "SELECT 1 FROM devices WHERE iccid = $1 FOR UPDATE",
        &[&who.as_str()],
    )
    .unwrap();
    let started = Instant::now();
    let error = store
        .bootstrap(&update(&who, SystemTime::now()))
        .unwrap_err();
    assert!(matches!(error, StoreError::Busy { .. }), "{error:?}");
    assert!(started.elapsed() >= coapgate_store::BUSY_TIMEOUT / 2);
    assert!(
        store.psk_keys().key(who.as_str()).is_none(),
        "nothing issued"
    );
    tx.rollback().unwrap();
    store.bootstrap(&update(&who, SystemTime::now())).unwrap();
}

#[test]
fn an_unreachable_server_is_a_transient_connect_error_at_open() {
    let port = coapgate_testkit::free_tcp_port();
    let url = format!("postgres://gate:hunter2@127.0.0.1:{port}/coapgate?sslmode=disable");
    let error = coapgate_store::open(&url).unwrap_err();
    assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
    assert!(error.is_transient());
    let text = format!("{error} {error:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_wrong_password_is_a_connect_error_that_is_not_transient() {
    let Some(db) = postgres("a_wrong_password_is_a_connect_error") else {
        return;
    };
    let url = db
        .url()
        .replace(coapgate_testkit::POSTGRES_PASSWORD, "hunter2");
    let error = coapgate_store::open(&url).unwrap_err();
    assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
    assert!(!error.is_transient());
    let mut text = format!("{error} {error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        text.push_str(&format!(" / {e}"));
        source = e.source();
    }
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// The environment variable is read at open; tests cannot set it in their
/// own process (`set_var` is unsafe), so this test runs itself again as a
/// child with the variable set.
#[test]
fn the_password_may_come_from_the_environment() {
    const CHILD: &str = "COAPGATE_TEST_CHILD_URL";
    if let Ok(url) = std::env::var(CHILD) {
        let store = coapgate_store::open(&url).unwrap();
        store.put_device(device(7)).unwrap();
        return;
    }
    let Some(db) = postgres("the_password_may_come_from_the_environment") else {
        return;
    };
    let without = db
        .url()
        .replace(&format!(":{}@", coapgate_testkit::POSTGRES_PASSWORD), "@");
    assert!(!without.contains(coapgate_testkit::POSTGRES_PASSWORD));
    let error = coapgate_store::open(&without).unwrap_err();
    assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_password_may_come_from_the_environment",
            "--test-threads=1",
        ])
        .env(CHILD, &without)
        .env(
            "COAPGATE_STORE_PASSWORD",
            coapgate_testkit::POSTGRES_PASSWORD,
        )
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stdout)
    );
    assert!(db.open().device(&iccid(7)).unwrap().is_some());
}

#[test]
fn sslmode_require_refuses_a_server_without_tls() {
    let Some(db) = postgres("sslmode_require_refuses_a_server_without_tls") else {
        return;
    };
    let url = db.url().replace("sslmode=disable", "sslmode=require");
    let error = coapgate_store::open(&url).unwrap_err();
    assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
    // prefer: the server offers no TLS, so the connection is plain.
    let url = db.url().replace("sslmode=disable", "sslmode=prefer");
    coapgate_store::open(&url).unwrap();
}

#[test]
fn another_instances_writes_reach_the_views_on_resync() {
    let Some(db) = postgres("another_instances_writes_reach_the_views_on_resync") else {
        return;
    };
    let one = db.open();
    let two = db.open();
    one.put_device(device(1)).unwrap();
    one.set_psk(
        &iccid(1),
        &PskRecord::operator("secret12", PskFormat::String).unwrap(),
    )
    .unwrap();
    one.mark_registered(&iccid(1), SystemTime::now()).unwrap();
    one.put_position(&iccid(1), &Position::new(1.0, 2.0, "CellTower", 5).unwrap())
        .unwrap();
    assert!(two.directory().by_ip(device(1).ip).is_none());
    assert_eq!(two.resync().unwrap(), 1);
    assert_eq!(two.directory().by_ip(device(1).ip).unwrap().iccid, iccid(1));
    assert_eq!(
        two.psk_keys().key(iccid(1).as_str()).unwrap().as_slice(),
        b"secret12"
    );
    assert!(two.is_registered(&iccid(1)));
    assert_eq!(two.latest(&iccid(1)).unwrap().source(), "CellTower");
    one.remove_device(&iccid(1)).unwrap();
    assert_eq!(two.resync().unwrap(), 0);
    assert!(two.directory().by_ip(device(1).ip).is_none());
    assert!(two.psk_keys().is_empty());
    assert!(!two.is_registered(&iccid(1)));
}

/// Polls `done` every millisecond for at most `limit`; how long it took.
fn within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

#[test]
fn a_following_instance_holds_another_instances_changes_within_a_second() {
    let Some(db) = postgres("a_following_instance_holds_another_instances_changes") else {
        return;
    };
    let one = db.open();
    let two = db.open();
    let follower = two.follow().unwrap();
    assert!(follower.status().following && follower.status().connected);
    let second = Duration::from_secs(1);
    let mut delays = Vec::new();

    one.put_device(device(1)).unwrap();
    delays.push(within(second, "a new device", || {
        two.directory().by_ip(device(1).ip).is_some()
    }));
    one.put_device(Device {
        status: DeviceStatus::Inactive,
        ip: "10.9.9.9".parse().unwrap(),
        ..device(1)
    })
    .unwrap();
    delays.push(within(second, "a changed device", || {
        two.directory()
            .by_ip("10.9.9.9".parse().unwrap())
            .is_some_and(|d| d.status == DeviceStatus::Inactive)
    }));
    assert!(
        two.directory().by_ip(device(1).ip).is_none(),
        "the old address is gone"
    );
    one.set_psk(
        &iccid(1),
        &PskRecord::operator("secret12", PskFormat::String).unwrap(),
    )
    .unwrap();
    delays.push(within(second, "an operator's PSK", || {
        two.psk_keys()
            .key(iccid(1).as_str())
            .is_some_and(|k| k.as_slice() == b"secret12")
    }));
    let issued = one
        .bootstrap(&update(&iccid(1), SystemTime::now()))
        .unwrap();
    delays.push(within(second, "a bootstrapped PSK", || {
        two.psk_keys()
            .key(iccid(1).as_str())
            .is_some_and(|k| *k == *issued.key())
    }));
    one.mark_registered(&iccid(1), SystemTime::now()).unwrap();
    delays.push(within(second, "a registration", || {
        two.is_registered(&iccid(1))
    }));
    // A position written behind (the engine's path) and an operator's.
    one.record(&iccid(1), Position::new(13.4, 52.5, "GPS", 1_000).unwrap());
    one.flush_positions().unwrap();
    delays.push(within(second, "a position written behind", || {
        two.latest(&iccid(1))
            .is_some_and(|p| p.sample_time() == 1_000)
    }));
    one.put_position(
        &iccid(1),
        &Position::new(1.0, 2.0, "CellTower", 2_000).unwrap(),
    )
    .unwrap();
    delays.push(within(second, "an operator's position", || {
        two.latest(&iccid(1))
            .is_some_and(|p| p.source() == "CellTower" && p.latitude() == 2.0)
    }));
    let template = serde_json::json!({"sense": [{"asset": "T", "value": {"byte": 0, "bytelength": 2, "type": "int"}}]});
    one.set_coap_template("t1", &template, coapgate_store::TemplateStatus::Active)
        .unwrap();
    delays.push(within(second, "a template", || {
        two.coap_template().is_some_and(|t| t.name == "t1")
    }));
    assert!(two.active_template().is_some());
    one.remove_device(&iccid(1)).unwrap();
    delays.push(within(second, "a removed device", || {
        two.directory().is_empty() && two.psk_keys().is_empty()
    }));
    assert!(!two.is_registered(&iccid(1)));
    assert!(two.latest(&iccid(1)).is_none());

    let status = follower.status();
    assert!(status.changes >= 9, "{status:?}");
    assert!(status.lag.is_some_and(|lag| lag < second), "{status:?}");
    assert_eq!(status.resyncs, 0);
    delays.sort();
    println!(
        "propagation between two stores: median {:?}, max {:?} over {} changes",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
}

#[test]
fn a_change_made_with_psql_is_followed_too() {
    let Some(db) = postgres("a_change_made_with_psql_is_followed_too") else {
        return;
    };
    let store = db.open();
    store.put_device(device(1)).unwrap();
    let _follower = store.follow().unwrap();
    db.pg().psql(
        "coapgate",
        &format!(
            "UPDATE devices SET status = 'INACTIVE' WHERE iccid = '{}'",
            iccid(1)
        ),
    );
    within(Duration::from_secs(1), "an operator's UPDATE", || {
        store
            .directory()
            .by_ip(device(1).ip)
            .is_some_and(|d| d.status == DeviceStatus::Inactive)
    });
}

#[test]
fn a_follower_reconnects_after_a_restart_and_resynchronises() {
    let Some(mut db) = postgres("a_follower_reconnects_after_a_restart") else {
        return;
    };
    let one = db.open();
    let two = db.open();
    let follower = two.follow().unwrap();
    one.put_device(device(1)).unwrap();
    within(Duration::from_secs(1), "before the restart", || {
        two.directory().len() == 1
    });

    db.server().stop();
    within(Duration::from_secs(10), "the loss noticed", || {
        !follower.status().connected
    });
    // Views keep answering while the database is away.
    assert!(two.directory().by_ip(device(1).ip).is_some());
    db.server().restart();
    // A change made before the feed is back is found by the resync, one
    // made after by the feed.
    one.put_device(device(2)).unwrap();
    within(
        Duration::from_secs(5),
        "reconnected and resynchronised",
        || follower.status().connected && two.directory().len() == 2,
    );
    assert!(follower.status().resyncs >= 1, "{:?}", follower.status());
    one.put_device(device(3)).unwrap();
    within(Duration::from_secs(1), "a change after the restart", || {
        two.directory().len() == 3
    });
    follower.stop();
}

#[test]
fn a_sqlite_store_has_nothing_to_follow() {
    let store = Db::sqlite().open();
    let follower = store.follow().unwrap();
    let status = follower.status();
    assert!(!status.following && !status.connected, "{status:?}");
}

#[test]
fn a_database_at_version_0_is_migrated_leaving_other_tables_alone() {
    let Some(db) = postgres("a_database_at_version_0_is_migrated") else {
        return;
    };
    let pg = db.pg();
    pg.psql(
        "coapgate",
        "CREATE TABLE operator_notes (note TEXT); INSERT INTO operator_notes VALUES ('keep me')",
    );
    db.open().put_device(device(1)).unwrap();
    assert_eq!(
        pg.psql("coapgate", "SELECT version FROM coapgate_schema"),
        SCHEMA_VERSION.to_string()
    );
    assert_eq!(
        pg.psql("coapgate", "SELECT note FROM operator_notes"),
        "keep me"
    );
    assert_eq!(
        pg.psql(
            "coapgate",
            "SELECT iccid || ',' || ip || ',' || status FROM devices"
        ),
        format!("{},10.1.0.2,ACTIVE", iccid(1))
    );
    // Opening again at the current version changes nothing.
    db.open();
    assert_eq!(
        pg.psql("coapgate", "SELECT count(*) FROM coapgate_schema"),
        "1"
    );
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let Some(db) = postgres("a_database_from_a_newer_build_is_refused") else {
        return;
    };
    let pg = db.pg();
    pg.psql(
        "coapgate",
        &format!(
            "CREATE TABLE coapgate_schema (version INTEGER NOT NULL); INSERT INTO coapgate_schema VALUES ({})",
            SCHEMA_VERSION + 1
        ),
    );
    let error = coapgate_store::open(db.url()).unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaTooNew { found, supported }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{error:?}"
    );
    assert_eq!(
        pg.psql(
            "coapgate",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "1",
        "nothing created"
    );
}

#[test]
fn the_database_itself_refuses_a_second_device_on_one_ip_and_reports_bad_rows_at_open() {
    let Some(db) = postgres("the_database_itself_refuses_a_second_device_on_one_ip") else {
        return;
    };
    db.open();
    let mut client = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    let insert = "INSERT INTO devices (iccid, ip, status) VALUES ($1, $2, 'ACTIVE')";
    client
        .execute(insert, &[&iccid(1).as_str(), &"10.0.0.7"])
        .unwrap();
    let error = client
        .execute(insert, &[&iccid(2).as_str(), &"10.0.0.7"])
        .unwrap_err();
    assert_eq!(error.code().unwrap().code(), "23505", "{error}");
    client
        .execute(insert, &[&iccid(3).as_str(), &"not-an-ip"])
        .unwrap();
    let error = coapgate_store::open(db.url()).unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt { key, reason }
            if key == iccid(3).as_str() && reason.starts_with("ip")),
        "{error:?}"
    );
}

#[test]
fn the_test_server_restarts_with_its_data() {
    let Some(mut pg) = Postgres::start("the_test_server_restarts_with_its_data") else {
        return;
    };
    let url = pg.create_database("kept");
    coapgate_store::open(&url)
        .unwrap()
        .put_device(device(1))
        .unwrap();
    pg.stop();
    assert!(coapgate_store::open(&url).unwrap_err().is_transient());
    pg.restart();
    let store: Store = coapgate_store::open(&url).unwrap();
    assert_eq!(store.directory().len(), 1);
}

/// The server drops its last `Store` inside its async main task; the
/// blocking client's connections must not be closed on that thread.
#[test]
fn a_store_may_be_dropped_on_an_async_runtime() {
    let Some(db) = postgres("a_store_may_be_dropped_on_an_async_runtime") else {
        return;
    };
    let store = db.open();
    store.put_device(device(1)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async move { drop(store) });
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 (openssl's
/// command line), in `dir`: `ca.pem`, `server.crt`, `server.key`.
fn certificates(dir: &std::path::Path, test: &str) -> Option<()> {
    let openssl = coapgate_testkit::require("openssl", test)?;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&openssl)
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=coapgate test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);
    Some(())
}

#[test]
fn tls_verifies_the_server_against_sslrootcert() {
    let test = "tls_verifies_the_server_against_sslrootcert";
    let Some(db) = postgres(test) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    if certificates(certs.path(), test).is_none() || certificates(other.path(), test).is_none() {
        return;
    }
    let pg = db.pg();
    pg.enable_tls(
        &certs.path().join("server.crt"),
        &certs.path().join("server.key"),
    );
    let with = |mode: &str, root: &std::path::Path| {
        db.url().replace(
            "sslmode=disable",
            &format!(
                "sslmode={mode}&sslrootcert={}&application_name=tls-{mode}",
                root.display()
            ),
        )
    };
    // The server's CA: an encrypted connection.
    let store = coapgate_store::open(&with("require", &certs.path().join("ca.pem"))).unwrap();
    store.put_device(device(1)).unwrap();
    assert_eq!(
        pg.psql(
            "coapgate",
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'tls-require'"
        ),
        "t"
    );
    // Another CA: refused, under require and under prefer alike (no
    // fallback to an unverified or a plain connection).
    for mode in ["require", "prefer", "verify-full"] {
        let error = coapgate_store::open(&with(mode, &other.path().join("ca.pem"))).unwrap_err();
        assert!(
            matches!(error, StoreError::Connect { .. }),
            "{mode}: {error:?}"
        );
        assert!(!error.is_transient(), "{mode}: {error:?}");
    }
}
