//! The PostgreSQL backend, on the blocking `postgres` client (decision 66).
//!
//! Two [pools](pool::Pool): the writer (one connection: the engine's writes,
//! from the store-writer thread) and the general pool (`pool_size`
//! connections: the admin API, reads, the views' loading). Several coapgate
//! instances may share one database:
//!
//! - migrations run under an advisory lock ([`PG_MIGRATION_LOCK`]), so
//!   instances starting together migrate one after the other;
//! - [`bootstrap`](Backend::bootstrap) and `set_psk` lock the device's row
//!   (`SELECT … FOR NO KEY UPDATE`) before reading its PSK record, in one
//!   READ COMMITTED transaction: the second of two calls for one device
//!   waits for the first to commit and then reads what it wrote (a fresh
//!   statement, so a fresh snapshot), so two instances never hand out two
//!   different PSKs, and an operator's PSK is never overwritten by a
//!   bootstrap that read the record before it;
//! - `mark_registered` is `INSERT … ON CONFLICT DO NOTHING`.
//!
//! A connection that fails at connection level (the server restarted or
//! went away) is dropped with every idle one; a read or a single-statement
//! write is then tried once more on a new connection, and so is a
//! transaction whose `BEGIN` failed (nothing ran). Serialization failures
//! and deadlocks retry the whole transaction (three tries). Everything else
//! is the caller's: [`StoreError::Busy`] for what may pass
//! ([`is_transient`]).

mod feed;
mod pool;
mod target;

use std::sync::Arc;

use coapgate_bootstrap::{PskRecord, PskUpdate};
use coapgate_location::Position;
use coapgate_model::{Device, Iccid};
use postgres::types::ToSql;
use postgres::{GenericClient, IsolationLevel, Row, Transaction};
use zeroize::Zeroizing;

pub(crate) use target::Target;

use self::pool::{Conn, Pool, Statements};
use crate::backend::{
    Backend, ChangeFeed, RawDevice, RawPosition, RawPsk, RawTemplate, Rows, Snapshot, epoch_ms,
    parse_iccid, sample_time,
};
use crate::error::Context;
use crate::psk::restore;
use crate::schema::{PG_MIGRATION_LOCK, POSTGRES as MIGRATIONS};
use crate::{BoxError, POSITIONS_KEPT, Put, SCHEMA_VERSION, StoreError, TemplateStatus};

impl<T> Context<T> for Result<T, postgres::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| {
            let busy = is_transient(&source);
            let source = Box::new(source);
            if busy {
                StoreError::Busy { context, source }
            } else {
                StoreError::Database { context, source }
            }
        })
    }
}

/// Whether a call that failed this way may succeed later: the connection
/// was refused, lost or timed out; a lock or statement timeout; a
/// serialization failure or deadlock; the server shutting down, starting,
/// out of connections or resources; a read-only server (a failover).
pub(crate) fn is_transient(e: &postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || matches!(code, "40001" | "40P01" | "55P03" | "57014" | "25006")
        }
        None => e.is_closed() || io_failure(e),
    }
}

/// [`is_transient`] for an error's boxed source.
pub(crate) fn is_transient_source(source: &BoxError) -> bool {
    source
        .downcast_ref::<postgres::Error>()
        .is_some_and(is_transient)
}

/// An I/O failure of the connection (refused, reset, timed out, closed):
/// not one that carries invalid data, as a TLS certificate that does not
/// verify does (tokio-rustls reports it as an `InvalidData` I/O error).
fn io_failure(e: &postgres::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            !matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            )
        })
}

/// The client's error inside a store error, if it came from the database.
fn pg_error(e: &StoreError) -> Option<&postgres::Error> {
    match e {
        StoreError::Busy { source, .. } | StoreError::Database { source, .. } => {
            source.downcast_ref::<postgres::Error>()
        }
        _ => None,
    }
}

/// The connection is unusable: closed, broken, or ended by the server.
fn connection_lost(e: &StoreError) -> bool {
    pg_error(e).is_some_and(|e| match e.code() {
        Some(code) => code.code().starts_with("08") || matches!(code.code(), "57P01" | "57P02"),
        None => e.is_closed() || io_failure(e),
    })
}

/// A conflict that PostgreSQL resolved by aborting this transaction.
fn conflict(e: &StoreError) -> bool {
    pg_error(e)
        .and_then(postgres::Error::code)
        .is_some_and(|code| matches!(code.code(), "40001" | "40P01"))
}

fn query<C: GenericClient>(
    client: &mut C,
    statements: &mut Statements,
    sql: &'static str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<Vec<Row>, StoreError> {
    let statement = statements.get(client, sql).context(context)?;
    client.query(&statement, params).context(context)
}

fn execute<C: GenericClient>(
    client: &mut C,
    statements: &mut Statements,
    sql: &'static str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<u64, StoreError> {
    let statement = statements.get(client, sql).context(context)?;
    client.execute(&statement, params).context(context)
}

/// A column, without panicking on a type the schema does not promise.
fn column<'a, T: postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
    context: &'static str,
) -> Result<T, StoreError> {
    row.try_get(index).context(context)
}

pub(crate) struct Postgres {
    /// Where the database is, for [`listen`](Backend::listen).
    target: Arc<Target>,
    /// The admin API's and the views' connections.
    pool: Pool,
    /// The engine's writes: one connection of their own.
    writer: Pool,
}

impl Postgres {
    /// Connects, migrates; returns the schema version found.
    pub(crate) fn open(target: Target) -> Result<(Self, u32), StoreError> {
        let target = Arc::new(target);
        let pool = Pool::new(target.clone(), "general", target.pool_size);
        let writer = Pool::new(target.clone(), "writer", 1);
        let found = {
            let mut lease = pool.get("connect to the database").map_err(|e| match e {
                StoreError::Busy { source, .. } | StoreError::Database { source, .. } => {
                    StoreError::Connect {
                        url: target.described.clone(),
                        source,
                    }
                }
                other => other,
            })?;
            migrate(&mut lease.conn().client)?
        };
        Ok((
            Postgres {
                target,
                pool,
                writer,
            },
            found,
        ))
    }

    /// Runs `work` (reads, or one idempotent statement) on a pooled
    /// connection; once more on a new connection when the first was lost.
    fn run<T>(
        &self,
        pool: &Pool,
        context: &'static str,
        mut work: impl FnMut(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut lease = pool.get(context)?;
            match work(lease.conn()) {
                Ok(value) => return Ok(value),
                Err(e) => {
                    if pg_error(&e).is_some() {
                        lease.conn().statements.clear();
                    }
                    if connection_lost(&e) {
                        lease.discard();
                        if tries < 2 {
                            continue;
                        }
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Runs `work` in one READ COMMITTED transaction and commits it. Tried
    /// again (three tries in all) after a serialization failure or
    /// deadlock, or when `BEGIN` failed on a lost connection.
    fn transaction<T>(
        &self,
        pool: &Pool,
        context: &'static str,
        mut work: impl FnMut(&mut Transaction<'_>, &mut Statements) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut lease = pool.get(context)?;
            let (error, at_begin) = match attempt(lease.conn(), context, &mut work) {
                Ok(value) => return Ok(value),
                Err(failed) => failed,
            };
            let lost = connection_lost(&error);
            if lost {
                lease.discard();
            }
            if tries < 3 && ((lost && at_begin) || conflict(&error)) {
                continue;
            }
            return Err(error);
        }
    }
}

/// One try of [`Postgres::transaction`]; the error says whether it was the
/// `BEGIN` that failed.
fn attempt<T>(
    conn: &mut Conn,
    context: &'static str,
    work: &mut impl FnMut(&mut Transaction<'_>, &mut Statements) -> Result<T, StoreError>,
) -> Result<T, (StoreError, bool)> {
    let Conn { client, statements } = conn;
    let mut tx = client
        .transaction()
        .context(context)
        .map_err(|e| (e, true))?;
    let outcome = match work(&mut tx, statements) {
        Ok(value) => tx.commit().context(context).map(|()| value),
        // Dropping the transaction rolls it back.
        Err(e) => Err(e),
    };
    outcome.map_err(|e| {
        if pg_error(&e).is_some() {
            statements.clear();
        }
        (e, false)
    })
}

/// Brings the database to [`SCHEMA_VERSION`] under the migration lock;
/// returns the version it was at.
fn migrate(client: &mut postgres::Client) -> Result<u32, StoreError> {
    // Another instance may be migrating: wait for it (longer than a normal
    // lock wait), and let no statement timeout cut a migration short.
    client
        .batch_execute("SET lock_timeout = '60s'; SET statement_timeout = 0")
        .context("prepare to migrate")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&PG_MIGRATION_LOCK])
        .context("take the migration lock")?;
    let migrated = migrate_locked(client);
    // Closing the connection would release the lock too.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&PG_MIGRATION_LOCK])
        .context("release the migration lock")
        .and_then(|_| {
            client
                .batch_execute("RESET lock_timeout; RESET statement_timeout")
                .context("end migrating")
        });
    let found = migrated?;
    unlocked?;
    Ok(found)
}

fn migrate_locked(client: &mut postgres::Client) -> Result<u32, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS coapgate_schema (version INTEGER NOT NULL);
             INSERT INTO coapgate_schema (version)
               SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM coapgate_schema)",
        )
        .context("create the schema version table")?;
    let version = |client: &mut postgres::Client| -> Result<u32, StoreError> {
        let row = client
            .query_one("SELECT max(version) FROM coapgate_schema", &[])
            .context("read the schema version")?;
        let version: i32 = column(&row, 0, "read the schema version")?;
        Ok(u32::try_from(version).unwrap_or(0))
    };
    let found = version(client)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = index as u32 + 1;
        let mut tx = client.transaction().context("start a migration")?;
        tx.batch_execute(sql).context("apply a schema migration")?;
        tx.execute(
            "UPDATE coapgate_schema SET version = $1",
            &[&i32::try_from(to).unwrap_or(i32::MAX)],
        )
        .context("record the schema version")?;
        tx.commit().context("commit a schema migration")?;
        tracing::info!(version = to, "store schema migrated");
    }
    Ok(found)
}

const SELECT_DEVICE: &str = "SELECT iccid, imsi, ip, status, name FROM devices WHERE iccid = $1";
const LOCK_DEVICE: &str = "SELECT 1 FROM devices WHERE iccid = $1 FOR NO KEY UPDATE";
const KEEP_DEVICE: &str = "SELECT 1 FROM devices WHERE iccid = $1 FOR KEY SHARE";
const SELECT_PSK: &str = "SELECT secret, origin, last_bootstrap_ms FROM psks WHERE iccid = $1";
const UPSERT_PSK: &str = "INSERT INTO psks (iccid, secret, origin, last_bootstrap_ms, updated_ms)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (iccid) DO UPDATE SET secret = EXCLUDED.secret, origin = EXCLUDED.origin,
       last_bootstrap_ms = EXCLUDED.last_bootstrap_ms, updated_ms = EXCLUDED.updated_ms";

fn raw_device(row: &Row, context: &'static str) -> Result<RawDevice, StoreError> {
    Ok(RawDevice {
        iccid: column(row, 0, context)?,
        imsi: column(row, 1, context)?,
        ip: column(row, 2, context)?,
        status: column(row, 3, context)?,
        name: column(row, 4, context)?,
    })
}

fn read_psk<C: GenericClient>(
    client: &mut C,
    statements: &mut Statements,
    iccid: &Iccid,
) -> Result<Option<PskRecord>, StoreError> {
    const CONTEXT: &str = "read a PSK";
    let rows = query(client, statements, SELECT_PSK, &[&iccid.as_str()], CONTEXT)?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let raw = RawPsk {
        iccid: iccid.to_string(),
        secret: Zeroizing::new(column(row, 0, CONTEXT)?),
        origin: column(row, 1, CONTEXT)?,
        last_bootstrap_ms: column(row, 2, CONTEXT)?,
    };
    restore(&raw).map(Some)
}

/// Locks the device's row against a concurrent PSK write (and removal)
/// until the transaction ends; `false` when there is no such device.
fn lock_device(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    iccid: &Iccid,
) -> Result<bool, StoreError> {
    let rows = query(
        tx,
        statements,
        LOCK_DEVICE,
        &[&iccid.as_str()],
        "lock a device",
    )?;
    Ok(!rows.is_empty())
}

fn write_psk(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    iccid: &Iccid,
    record: &PskRecord,
) -> Result<(), StoreError> {
    execute(
        tx,
        statements,
        UPSERT_PSK,
        &[
            &iccid.as_str(),
            &record.psk.expose(),
            &record.origin.as_str(),
            &record.last_bootstrap.map(epoch_ms),
            &epoch_ms(std::time::SystemTime::now()),
        ],
        "write a PSK",
    )?;
    Ok(())
}

fn unknown(iccid: &Iccid) -> StoreError {
    StoreError::UnknownDevice {
        iccid: iccid.clone(),
    }
}

const LOAD: &str = "load the views";

/// The rows the views hold, in one read-only snapshot (the views agree with
/// each other): every device's, or only those of `some`; the template when
/// asked.
fn read_rows(
    conn: &mut Conn,
    some: Option<&[String]>,
    template: bool,
) -> Result<Snapshot, StoreError> {
    // Two statements per table rather than `$1 IS NULL OR …`, so that a
    // read of a few devices plans as index lookups.
    fn pick(some: Option<&[String]>, all: &'static str, these: &'static str) -> &'static str {
        if some.is_some() { these } else { all }
    }
    let Conn { client, statements } = conn;
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .context(LOAD)?;
    let keys: Vec<&str> = some
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let key_params: [&(dyn ToSql + Sync); 1] = [&keys];
    let params: &[&(dyn ToSql + Sync)] = if some.is_some() {
        &key_params
    } else {
        &no_params
    };
    let mut snapshot = Snapshot::default();
    let sql = pick(
        some,
        "SELECT iccid, imsi, ip, status, name FROM devices",
        "SELECT iccid, imsi, ip, status, name FROM devices WHERE iccid = ANY($1)",
    );
    for row in query(&mut tx, statements, sql, params, LOAD)? {
        snapshot.devices.push(raw_device(&row, LOAD)?);
    }
    let sql = pick(
        some,
        "SELECT iccid, secret, origin, last_bootstrap_ms FROM psks",
        "SELECT iccid, secret, origin, last_bootstrap_ms FROM psks WHERE iccid = ANY($1)",
    );
    for row in query(&mut tx, statements, sql, params, LOAD)? {
        snapshot.psks.push(RawPsk {
            iccid: column(&row, 0, LOAD)?,
            secret: Zeroizing::new(column(&row, 1, LOAD)?),
            origin: column(&row, 2, LOAD)?,
            last_bootstrap_ms: column(&row, 3, LOAD)?,
        });
    }
    let sql = pick(
        some,
        "SELECT DISTINCT ON (iccid) iccid, longitude, latitude, source, sample_time
         FROM positions ORDER BY iccid, sample_time DESC, id DESC",
        "SELECT DISTINCT ON (iccid) iccid, longitude, latitude, source, sample_time
         FROM positions WHERE iccid = ANY($1) ORDER BY iccid, sample_time DESC, id DESC",
    );
    for row in query(&mut tx, statements, sql, params, LOAD)? {
        snapshot.latest.push(RawPosition {
            iccid: column(&row, 0, LOAD)?,
            longitude: column(&row, 1, LOAD)?,
            latitude: column(&row, 2, LOAD)?,
            source: column(&row, 3, LOAD)?,
            sample_time: column(&row, 4, LOAD)?,
        });
    }
    let sql = pick(
        some,
        "SELECT iccid FROM registrations",
        "SELECT iccid FROM registrations WHERE iccid = ANY($1)",
    );
    for row in query(&mut tx, statements, sql, params, LOAD)? {
        snapshot.registered.push(column(&row, 0, LOAD)?);
    }
    if template {
        let rows = query(
            &mut tx,
            statements,
            "SELECT name, template, status FROM templates WHERE protocol = 'COAP'",
            &[],
            LOAD,
        )?;
        if let Some(row) = rows.first() {
            snapshot.template = Some(RawTemplate {
                name: column(row, 0, LOAD)?,
                text: column(row, 1, LOAD)?,
                status: column(row, 2, LOAD)?,
            });
        }
    }
    tx.commit().context(LOAD)?;
    Ok(snapshot)
}

impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.run(&self.pool, "ping the database", |conn| {
            conn.client
                .batch_execute("SELECT 1")
                .context("ping the database")
        })
    }

    fn snapshot(&self, rows: &mut dyn Rows) -> Result<Snapshot, StoreError> {
        let mut snapshot = self.run(&self.pool, LOAD, |conn| read_rows(conn, None, true))?;
        let devices = std::mem::take(&mut snapshot.devices);
        let psks = std::mem::take(&mut snapshot.psks);
        rows.expect(devices.len(), psks.len());
        for device in &devices {
            rows.device(device.row())?;
        }
        drop(devices);
        for psk in &psks {
            rows.psk(psk.row())?;
        }
        Ok(snapshot)
    }

    fn put_device(&self, device: &Device) -> Result<Put, StoreError> {
        const CONTEXT: &str = "write a device";
        let ip = device.ip.to_string();
        self.run(&self.pool, CONTEXT, |conn| {
            let Conn { client, statements } = conn;
            // A holder found on conflict may be gone by the time it is read:
            // then the write is tried again.
            for _ in 0..3 {
                let written = query(
                    client,
                    statements,
                    "INSERT INTO devices (iccid, imsi, ip, status, name) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (iccid) DO UPDATE SET imsi = EXCLUDED.imsi, ip = EXCLUDED.ip,
                       status = EXCLUDED.status, name = EXCLUDED.name
                     RETURNING (xmax = 0)",
                    &[
                        &device.iccid.as_str(),
                        &device.imsi.as_ref().map(|imsi| imsi.as_str()),
                        &ip,
                        &device.status.as_str(),
                        &device.name,
                    ],
                    CONTEXT,
                );
                let e = match written {
                    Ok(rows) => {
                        let created: bool = match rows.first() {
                            Some(row) => column(row, 0, CONTEXT)?,
                            None => false,
                        };
                        return Ok(if created { Put::Created } else { Put::Replaced });
                    }
                    Err(e) => e,
                };
                let ip_taken = pg_error(&e)
                    .and_then(postgres::Error::as_db_error)
                    .is_some_and(|db| {
                        db.code().code() == "23505" && db.constraint() == Some("devices_ip")
                    });
                if !ip_taken {
                    return Err(e);
                }
                let holder = query(
                    client,
                    statements,
                    "SELECT iccid FROM devices WHERE ip = $1",
                    &[&ip],
                    "find the device holding an address",
                )?;
                if let Some(row) = holder.first() {
                    let holder: String = column(row, 0, "find the device holding an address")?;
                    return Err(StoreError::IpInUse {
                        iccid: parse_iccid(&holder, "iccid")?,
                    });
                }
            }
            Err(StoreError::Busy {
                context: CONTEXT,
                source: "the address changed hands three times during the write".into(),
            })
        })
    }

    fn device(&self, iccid: &Iccid) -> Result<Option<RawDevice>, StoreError> {
        const CONTEXT: &str = "read a device";
        self.run(&self.pool, CONTEXT, |conn| {
            let rows = query(
                &mut conn.client,
                &mut conn.statements,
                SELECT_DEVICE,
                &[&iccid.as_str()],
                CONTEXT,
            )?;
            rows.first().map(|row| raw_device(row, CONTEXT)).transpose()
        })
    }

    fn remove_device(&self, iccid: &Iccid) -> Result<bool, StoreError> {
        const CONTEXT: &str = "remove a device";
        self.run(&self.pool, CONTEXT, |conn| {
            let removed = execute(
                &mut conn.client,
                &mut conn.statements,
                "DELETE FROM devices WHERE iccid = $1",
                &[&iccid.as_str()],
                CONTEXT,
            )?;
            Ok(removed > 0)
        })
    }

    fn devices(&self, limit: u32, offset: i64) -> Result<Vec<RawDevice>, StoreError> {
        const CONTEXT: &str = "list devices";
        self.run(&self.pool, CONTEXT, |conn| {
            query(
                &mut conn.client,
                &mut conn.statements,
                "SELECT iccid, imsi, ip, status, name FROM devices ORDER BY iccid LIMIT $1 OFFSET $2",
                &[&i64::from(limit), &offset],
                CONTEXT,
            )?
            .iter()
            .map(|row| raw_device(row, CONTEXT))
            .collect()
        })
    }

    fn psk(&self, iccid: &Iccid) -> Result<Option<PskRecord>, StoreError> {
        self.run(&self.pool, "read a PSK", |conn| {
            read_psk(&mut conn.client, &mut conn.statements, iccid)
        })
    }

    fn set_psk(&self, iccid: &Iccid, record: &PskRecord) -> Result<(), StoreError> {
        self.transaction(&self.pool, "write a PSK", |tx, statements| {
            if !lock_device(tx, statements, iccid)? {
                return Err(unknown(iccid));
            }
            write_psk(tx, statements, iccid, record)
        })
    }

    fn bootstrap(&self, update: &PskUpdate) -> Result<(Option<PskRecord>, PskRecord), StoreError> {
        let iccid = &update.iccid;
        self.transaction(&self.writer, "update a PSK", |tx, statements| {
            // Waits for any other transaction writing this device's PSK;
            // the read below then sees what it committed.
            if !lock_device(tx, statements, iccid)? {
                return Err(unknown(iccid));
            }
            let current = read_psk(tx, statements, iccid)?;
            let next = update.apply(current.as_ref());
            write_psk(tx, statements, iccid, &next)?;
            Ok((current, next))
        })
    }

    fn put_position(&self, iccid: &Iccid, position: &Position) -> Result<(), StoreError> {
        const CONTEXT: &str = "write a position";
        self.transaction(&self.pool, CONTEXT, |tx, statements| {
            let kept = query(tx, statements, KEEP_DEVICE, &[&iccid.as_str()], CONTEXT)?;
            if kept.is_empty() {
                return Err(unknown(iccid));
            }
            execute(
                tx,
                statements,
                "INSERT INTO positions (iccid, sample_time, longitude, latitude, source)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &iccid.as_str(),
                    &sample_time(position),
                    &position.longitude(),
                    &position.latitude(),
                    &position.source(),
                ],
                CONTEXT,
            )?;
            trim_positions(tx, statements, &[iccid.to_string()])
        })
    }

    fn positions(&self, iccid: &Iccid) -> Result<Vec<RawPosition>, StoreError> {
        const CONTEXT: &str = "list positions";
        self.run(&self.pool, CONTEXT, |conn| {
            query(
                &mut conn.client,
                &mut conn.statements,
                "SELECT longitude, latitude, source, sample_time FROM positions
                 WHERE iccid = $1 ORDER BY sample_time DESC, id DESC",
                &[&iccid.as_str()],
                CONTEXT,
            )?
            .iter()
            .map(|row| {
                Ok(RawPosition {
                    iccid: iccid.to_string(),
                    longitude: column(row, 0, CONTEXT)?,
                    latitude: column(row, 1, CONTEXT)?,
                    source: column(row, 2, CONTEXT)?,
                    sample_time: column(row, 3, CONTEXT)?,
                })
            })
            .collect()
        })
    }

    fn write_positions(&self, queued: &[(Iccid, Position)]) -> Result<usize, StoreError> {
        const CONTEXT: &str = "write positions";
        let mut devices: Vec<String> = queued.iter().map(|(i, _)| i.to_string()).collect();
        devices.sort();
        devices.dedup();
        self.transaction(&self.writer, CONTEXT, |tx, statements| {
            // The devices that exist, kept from removal until the commit.
            let rows = query(
                tx,
                statements,
                "SELECT iccid FROM devices WHERE iccid = ANY($1) FOR KEY SHARE",
                &[&devices],
                CONTEXT,
            )?;
            let mut known = Vec::with_capacity(rows.len());
            for row in &rows {
                known.push(column::<String>(row, 0, CONTEXT)?);
            }
            let kept: Vec<&(Iccid, Position)> = queued
                .iter()
                .filter(|(iccid, _)| known.iter().any(|k| k == iccid.as_str()))
                .collect();
            if kept.is_empty() {
                return Ok(0);
            }
            let iccids: Vec<&str> = kept.iter().map(|(i, _)| i.as_str()).collect();
            let times: Vec<i64> = kept.iter().map(|(_, p)| sample_time(p)).collect();
            let longitudes: Vec<f64> = kept.iter().map(|(_, p)| p.longitude()).collect();
            let latitudes: Vec<f64> = kept.iter().map(|(_, p)| p.latitude()).collect();
            let sources: Vec<&str> = kept.iter().map(|(_, p)| p.source()).collect();
            // In queue order, so equal sample times keep it (by id).
            let written = execute(
                tx,
                statements,
                "INSERT INTO positions (iccid, sample_time, longitude, latitude, source)
                 SELECT q.iccid, q.sample_time, q.longitude, q.latitude, q.source
                 FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::float8[], $5::text[])
                   WITH ORDINALITY AS q (iccid, sample_time, longitude, latitude, source, n)
                 ORDER BY q.n",
                &[&iccids, &times, &longitudes, &latitudes, &sources],
                CONTEXT,
            )?;
            trim_positions(tx, statements, &known)?;
            Ok(usize::try_from(written).unwrap_or(usize::MAX))
        })
    }

    fn mark_registered(&self, iccid: &Iccid, at_ms: i64) -> Result<(), StoreError> {
        const CONTEXT: &str = "record a registration";
        self.run(&self.writer, CONTEXT, |conn| {
            let written = execute(
                &mut conn.client,
                &mut conn.statements,
                "INSERT INTO registrations (iccid, registered_ms)
                 SELECT $1::text, $2::bigint WHERE EXISTS (SELECT 1 FROM devices WHERE iccid = $1)
                 ON CONFLICT (iccid) DO NOTHING",
                &[&iccid.as_str(), &at_ms],
                CONTEXT,
            );
            match written {
                // The device was removed between the check and the insert.
                Err(e)
                    if pg_error(&e)
                        .and_then(postgres::Error::code)
                        .is_some_and(|c| c.code() == "23503") =>
                {
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        })
    }

    fn set_template(
        &self,
        name: &str,
        text: &str,
        status: TemplateStatus,
        updated_ms: i64,
    ) -> Result<(), StoreError> {
        const CONTEXT: &str = "write the template";
        self.run(&self.pool, CONTEXT, |conn| {
            execute(
                &mut conn.client,
                &mut conn.statements,
                "INSERT INTO templates (protocol, name, template, status, updated_ms)
                 VALUES ('COAP', $1, $2, $3, $4)
                 ON CONFLICT (protocol) DO UPDATE SET name = EXCLUDED.name,
                   template = EXCLUDED.template, status = EXCLUDED.status,
                   updated_ms = EXCLUDED.updated_ms",
                &[&name, &text, &status.as_str(), &updated_ms],
                CONTEXT,
            )?;
            Ok(())
        })
    }

    fn listen(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        Ok(Some(Box::new(feed::Feed::open(&self.target)?)))
    }
}

/// Keeps each listed device's newest [`POSITIONS_KEPT`] positions.
fn trim_positions(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    devices: &[String],
) -> Result<(), StoreError> {
    execute(
        tx,
        statements,
        "DELETE FROM positions WHERE id IN (
           SELECT id FROM (
             SELECT id, row_number() OVER (PARTITION BY iccid ORDER BY sample_time DESC, id DESC) AS rank
             FROM positions WHERE iccid = ANY($1)
           ) ranked WHERE ranked.rank > $2)",
        &[&devices, &(POSITIONS_KEPT as i64)],
        "trim positions",
    )?;
    Ok(())
}
