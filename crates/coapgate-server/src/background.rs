//! The whole server on a thread of its own, for programs that are not async
//! and for tests.

use std::net::SocketAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::Duration;

use coapgate_store::Store;
use tokio::sync::oneshot;

use crate::{Config, Server, ServerError};

/// How long [`BackgroundServer::start`] waits for the server to bind.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A server running on its own thread with its own (current-thread) tokio
/// runtime. Stopped gracefully by [`stop`](Self::stop) or on drop.
///
/// ```no_run
/// let config = coapgate_server::Config::from_toml("[coap]\nbind = \"127.0.0.1:0\"")?;
/// let server = coapgate_server::BackgroundServer::start(config)?;
/// println!("CoAP on {}", server.coap_addr());
/// server.stop()?;
/// # Ok::<(), coapgate_server::ServerError>(())
/// ```
pub struct BackgroundServer {
    coap_addr: SocketAddr,
    coaps_addr: SocketAddr,
    admin_addr: SocketAddr,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl BackgroundServer {
    /// Starts the server and returns once it is bound ([`Server::bind`]),
    /// or with the error that kept it from binding (as the thread returned
    /// it; [`ServerError::Panicked`] when it panicked,
    /// [`ServerError::StartTimeout`] when it has not bound within a minute).
    pub fn start(config: Config) -> Result<Self, ServerError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("coapgate".into())
            .spawn(move || {
                // One thread, as the `coapgate` binary runs it.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| ServerError::Io {
                        what: "start the tokio runtime".into(),
                        source,
                    })?;
                runtime.block_on(async move {
                    // On an error the channel closes unsent and `start` takes
                    // the error from the thread's result.
                    let server = Server::bind(config).await?;
                    let bound = (
                        server.coap_addr(),
                        server.coaps_addr(),
                        server.admin_addr(),
                        server.store().clone(),
                    );
                    let _ = ready_tx.send(bound);
                    server
                        .serve(async {
                            let _ = stop_rx.await;
                        })
                        .await
                })
            })
            .map_err(|source| ServerError::Io {
                what: "spawn the server thread".into(),
                source,
            })?;
        let (coap_addr, coaps_addr, admin_addr, store) = match ready_rx.recv_timeout(START_TIMEOUT)
        {
            Ok(bound) => bound,
            Err(RecvTimeoutError::Disconnected) => {
                // The thread ended before binding: its own error.
                return Err(match thread.join() {
                    Ok(Err(error)) => error,
                    // Unreachable: it returns Ok only after serving.
                    Ok(Ok(())) | Err(_) => ServerError::Panicked,
                });
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(ServerError::StartTimeout(START_TIMEOUT));
            }
        };
        Ok(Self {
            coap_addr,
            coaps_addr,
            admin_addr,
            store,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound CoAP address.
    pub fn coap_addr(&self) -> SocketAddr {
        self.coap_addr
    }

    /// The bound CoAPS (DTLS) address.
    pub fn coaps_addr(&self) -> SocketAddr {
        self.coaps_addr
    }

    /// The bound admin API address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The device store the server reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Shuts down gracefully (see [`Server::serve`]) and waits for the thread.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServerError::Panicked),
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, "background server stopped with an error");
        }
    }
}
