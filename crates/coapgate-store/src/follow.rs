//! Following what other processes write to a shared database (several
//! coapgate instances on one PostgreSQL database, issue 11).
//!
//! [`Store::follow`] starts a thread with a connection of its own that
//! receives the database's change announcements and brings the in-memory
//! views up to date: a changed device (its row, PSK or registration) is
//! read back, a new position is taken from the announcement, a changed
//! template is read back. Announcements that arrive together are applied
//! together, with one read. When the connection is lost the thread
//! reconnects (backing off up to [`RECONNECT_MAX`]) and reloads every view
//! ([`Store::resync`]), since what was announced meanwhile is lost.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use coapgate_model::Iccid;

use crate::backend::{Change, ChangeFeed, Notice, RawDevice, RawPosition, Snapshot, epoch_ms};
use crate::psk::PskKeys;
use crate::{Store, StoreError, positions, templates};

/// How long the thread waits for an announcement before it looks at its
/// stop flag (and, after [`PING_EVERY`] of silence, pings).
const WAIT: Duration = Duration::from_millis(250);
/// A connection silent this long is pinged, so that one lost without a
/// word (a dead host, a dropped NAT mapping) is found.
const PING_EVERY: Duration = Duration::from_secs(5);
/// The first pause before reconnecting; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// The longest pause between reconnection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// The thread started by [`Store::follow`]; it stops when this is dropped
/// (within a quarter of a second, or when the work at hand is done).
pub struct Follower {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

/// Where a [`Follower`] stands; [`Follower::status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FollowStatus {
    /// Whether there is anything to follow: `false` for SQLite, which one
    /// process owns.
    pub following: bool,
    /// Whether the change feed is connected now.
    pub connected: bool,
    /// Announced changes applied so far.
    pub changes: u64,
    /// Full reloads after a lost connection so far.
    pub resyncs: u64,
    /// How late the most recently applied announcement was: from the moment
    /// the change was made (the database's clock) to the moment this
    /// process's views held it (this host's clock; skew between the two
    /// shows up here). `None` before the first.
    pub lag: Option<Duration>,
}

#[derive(Default)]
struct State {
    stop: AtomicBool,
    following: bool,
    connected: AtomicBool,
    changes: AtomicU64,
    resyncs: AtomicU64,
    /// Microseconds, `u64::MAX` for none yet.
    lag_us: AtomicU64,
}

impl Follower {
    /// Where it stands now.
    pub fn status(&self) -> FollowStatus {
        let s = &self.state;
        let lag_us = s.lag_us.load(Ordering::Relaxed);
        FollowStatus {
            following: s.following,
            connected: s.connected.load(Ordering::Relaxed),
            changes: s.changes.load(Ordering::Relaxed),
            resyncs: s.resyncs.load(Ordering::Relaxed),
            lag: (lag_us != u64::MAX).then(|| Duration::from_micros(lag_us)),
        }
    }

    /// Stops the thread and waits for it to end.
    pub fn stop(mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

impl fmt::Debug for Follower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follower")
            .field("status", &self.status())
            .finish()
    }
}

impl Store {
    /// Starts following the changes other processes make to the database,
    /// so that this store's views — devices, PSK keys, latest positions,
    /// registrations, the template — hold them within moments of their
    /// commit (PostgreSQL `LISTEN`/`NOTIFY`; see the [module](self)).
    ///
    /// Blocks while it connects and then reloads every view once (changes
    /// made between [`open`](crate::open) and now would otherwise be
    /// missed). When the database cannot be reached just now, the follower
    /// starts disconnected and connects (and reloads) as soon as it can.
    /// On SQLite, which one process owns, there is nothing to follow: the
    /// returned `Follower` runs no thread and says `following: false`.
    /// Errors: what is not transient ([`StoreError::is_transient`]): a
    /// refused login, a damaged row.
    pub fn follow(&self) -> Result<Follower, StoreError> {
        let feed = match self.inner.db.listen() {
            Ok(None) => {
                return Ok(Follower {
                    state: Arc::new(State::default()),
                    thread: None,
                });
            }
            Ok(Some(feed)) => match self.resync() {
                Ok(_) => Some(feed),
                Err(error) if error.is_transient() => None,
                Err(error) => return Err(error),
            },
            Err(error) if error.is_transient() => None,
            Err(error) => return Err(error),
        };
        if feed.is_none() {
            tracing::warn!("store unreachable; following its changes once it is back");
        }
        let state = Arc::new(State {
            following: true,
            connected: AtomicBool::new(feed.is_some()),
            lag_us: AtomicU64::new(u64::MAX),
            ..State::default()
        });
        let store = self.clone();
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("coapgate-store-follow".into())
            .spawn(move || store.follow_until_stopped(feed, &shared))
            .map_err(|e| StoreError::Busy {
                context: "start following changes",
                source: Box::new(e),
            })?;
        tracing::info!(backend = self.backend(), "following the store's changes");
        Ok(Follower {
            state,
            thread: Some(thread),
        })
    }

    fn follow_until_stopped(&self, mut feed: Option<Box<dyn ChangeFeed>>, state: &State) {
        let mut pause = RECONNECT_MIN;
        let mut quiet_since = Instant::now();
        while !state.stop.load(Ordering::Relaxed) {
            let Some(current) = feed.as_mut() else {
                std::thread::sleep(pause);
                match self.reconnect() {
                    Ok(reopened) => {
                        feed = Some(reopened);
                        pause = RECONNECT_MIN;
                        quiet_since = Instant::now();
                        state.connected.store(true, Ordering::Relaxed);
                        state.resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "store change feed: reconnecting failed");
                        pause = (pause * 2).min(RECONNECT_MAX);
                    }
                }
                continue;
            };
            let outcome = match current.wait(WAIT) {
                Ok(notices) if notices.is_empty() => {
                    if quiet_since.elapsed() >= PING_EVERY {
                        quiet_since = Instant::now();
                        current.ping()
                    } else {
                        Ok(())
                    }
                }
                Ok(notices) => {
                    quiet_since = Instant::now();
                    self.apply(current.as_mut(), &notices, state)
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => {}
                Err(error) if error.is_transient() => {
                    tracing::warn!(%error, "store change feed lost; reconnecting, then reloading every view");
                    feed = None;
                    state.connected.store(false, Ordering::Relaxed);
                }
                // A row that breaks a rule: the views keep what they had for
                // it, and the next change or resync tries again.
                Err(error) => tracing::error!(%error, "store change not applied"),
            }
        }
    }

    /// A new feed, then every view reloaded: what was announced while the
    /// old one was gone is lost.
    fn reconnect(&self) -> Result<Box<dyn ChangeFeed>, StoreError> {
        let feed = self.inner.db.listen()?.ok_or(StoreError::Busy {
            context: "listen for changes",
            source: "the backend stopped announcing changes".into(),
        })?;
        let devices = self.resync()?;
        tracing::info!(devices, "store change feed back; every view reloaded");
        Ok(feed)
    }

    /// Applies announcements that arrived together.
    fn apply(
        &self,
        feed: &mut dyn ChangeFeed,
        notices: &[Notice],
        state: &State,
    ) -> Result<(), StoreError> {
        let mut devices = BTreeSet::new();
        let mut template = false;
        let mut everything = false;
        let mut positions: Vec<&RawPosition> = Vec::new();
        for notice in notices {
            match &notice.change {
                Change::Device(iccid) => {
                    devices.insert(iccid.clone());
                }
                Change::Position(position) => positions.push(position),
                Change::Template => template = true,
                Change::Unknown => everything = true,
            }
        }
        if everything {
            self.resync()?;
        } else if !devices.is_empty() || template {
            let keys: Vec<String> = devices.into_iter().collect();
            // Local writes wait: a read that raced one could otherwise put
            // back what it replaced.
            let _alone = self
                .inner
                .sync
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let rows = feed.read(&keys, template)?;
            self.apply_rows(&keys, rows, template)?;
        }
        for raw in positions {
            self.inner.tracking.remember_raw(raw)?;
        }
        let newest = notices.iter().map(|n| n.at_ms).max().unwrap_or(0);
        let lag_ms = epoch_ms(SystemTime::now()).saturating_sub(newest).max(0);
        state.lag_us.store(
            u64::try_from(lag_ms).unwrap_or(0).saturating_mul(1000),
            Ordering::Relaxed,
        );
        state
            .changes
            .fetch_add(notices.len() as u64, Ordering::Relaxed);
        tracing::debug!(changes = notices.len(), lag_ms, "store changes applied");
        Ok(())
    }

    /// Puts what was read for `keys` into the views; a key with no device
    /// row is a removed device. Everything is validated before anything
    /// changes.
    fn apply_rows(
        &self,
        keys: &[String],
        rows: Snapshot,
        template: bool,
    ) -> Result<(), StoreError> {
        let devices = rows
            .devices
            .into_iter()
            .map(RawDevice::into_device)
            .collect::<Result<Vec<_>, _>>()?;
        let psks = PskKeys::parse(&rows.psks)?;
        let tracking = positions::Tracking::parse(rows.latest, &rows.registered)?;
        let template = if template {
            Some(templates::Current::parse(rows.template)?)
        } else {
            None
        };
        let inner = &self.inner;
        for key in keys {
            let Ok(iccid) = key.parse::<Iccid>() else {
                continue;
            };
            if !devices.iter().any(|d| d.iccid == iccid) {
                inner.view.remove(&iccid);
                inner.psk_keys.remove(&iccid);
                inner.tracking.forget(&iccid);
            }
        }
        for device in devices {
            let iccid = device.iccid.clone();
            inner.view.put(&device);
            match psks.get(&iccid) {
                Some(key) => inner.psk_keys.set_key(&iccid, key),
                None => inner.psk_keys.remove(&iccid),
            }
        }
        inner.tracking.merge(tracking);
        if let Some(record) = template {
            inner.template.replace(record);
        }
        Ok(())
    }
}
