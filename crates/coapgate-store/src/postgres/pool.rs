//! A small blocking connection pool.
//!
//! Hand-written rather than r2d2 (decision 66) for one behaviour: when the
//! server is down, a call fails at once with [`StoreError::Busy`] (the
//! connect is refused) instead of waiting out a pool timeout while a
//! background thread retries, which would hold the engine's store writer
//! for seconds per device. Connections are made on demand, kept idle after
//! use, dropped when they fail at connection level; each keeps its prepared
//! statements.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use postgres::{Client, Statement};

use super::Target;
use crate::error::Context;
use crate::{BUSY_TIMEOUT, StoreError};

/// One connection and the statements prepared on it.
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) statements: Statements,
}

/// Prepared statements by SQL text.
#[derive(Default)]
pub(crate) struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    /// The statement for `sql`, prepared on `client` the first time.
    pub(crate) fn get(
        &mut self,
        client: &mut impl postgres::GenericClient,
        sql: &'static str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        self.0.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Forgets every statement (after an error: one prepared inside a
    /// transaction that failed may be gone).
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

pub(crate) struct Pool {
    target: Arc<Target>,
    /// Which pool, for logs.
    name: &'static str,
    size: usize,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Default)]
struct State {
    idle: Vec<Conn>,
    /// Connections handed out now.
    out: usize,
}

/// A connection handed out by [`Pool::get`]; back to the pool on drop
/// unless [`discard`](Lease::discard)ed.
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Pool {
    pub(crate) fn new(target: Arc<Target>, name: &'static str, size: usize) -> Self {
        Pool {
            target,
            name,
            size,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, or a new one; waits up to [`BUSY_TIMEOUT`] while
    /// all `size` are in use. [`StoreError::Busy`] when that wait ends or
    /// the server cannot be reached.
    pub(crate) fn get(&self, context: &'static str) -> Result<Lease<'_>, StoreError> {
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let mut state = self.state();
        while state.out >= self.size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Busy {
                    context,
                    source: format!(
                        "all {} connections of the {} pool stayed in use for {:?}",
                        self.size, self.name, BUSY_TIMEOUT
                    )
                    .into(),
                });
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.out += 1;
        let idle = state.idle.pop();
        drop(state);
        // From here the slot is ours: the lease gives it back on drop.
        let mut lease = Lease {
            pool: self,
            conn: None,
        };
        lease.conn = Some(match idle {
            Some(conn) => conn,
            None => {
                let client = self.target.connect().context(context)?;
                tracing::debug!(pool = self.name, "store connection opened");
                Conn {
                    client,
                    statements: Statements::default(),
                }
            }
        });
        Ok(lease)
    }

    /// Drops every idle connection (after one failed at connection level:
    /// the server restarted or went away, so the others are dead too).
    fn drop_idle(&self) {
        let idle = std::mem::take(&mut self.state().idle);
        drop(idle);
    }
}

impl Drop for Pool {
    /// Closes the idle connections on a thread of their own: closing one
    /// blocks on its own small runtime, which panics on a thread that is
    /// driving a tokio runtime — where the last clone of a `Store` may well
    /// be dropped (the server's main task at shutdown).
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.state().idle);
        if idle.is_empty() {
            return;
        }
        let closing = std::thread::Builder::new()
            .name("coapgate-store-close".into())
            .spawn(move || drop(idle));
        if let Err(e) = closing {
            tracing::warn!(error = %e, "cannot close the store's connections");
        }
    }
}

impl Lease<'_> {
    pub(crate) fn conn(&mut self) -> &mut Conn {
        match &mut self.conn {
            Some(conn) => conn,
            // `get` fills it before handing the lease out; only `discard`
            // empties it, and it consumes the lease.
            None => unreachable!("a lease always holds its connection"),
        }
    }

    /// Closes this connection instead of returning it, and every idle one.
    pub(crate) fn discard(mut self) {
        self.conn = None;
        self.pool.drop_idle();
        tracing::debug!(
            pool = self.pool.name,
            "store connections dropped after an error"
        );
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state();
        state.out -= 1;
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() {
                state.idle.push(conn);
            }
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}
