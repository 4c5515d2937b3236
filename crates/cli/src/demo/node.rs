//! The demo's embedded node: `openledger init --dev` in the chain home, then the same code as
//! `openledger node` (sequencer, JSON-RPC, OpenLoRA with the base model, ModelFactory jobs) on
//! a thread of this process, bound to 127.0.0.1 only, until [`EmbeddedNode::stop`].

use crate::home::{self, Home, InitOptions};
use anyhow::{anyhow, bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

/// A running embedded node.
pub struct EmbeddedNode {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

/// A free port on 127.0.0.1 (the OS picks it; the node binds it right after).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl EmbeddedNode {
    /// Initialises a dev chain in `home` (which must not hold one) serving `model`, starts the
    /// node and waits until it answers.
    pub fn start(home_dir: &Path, model: &Path, port: Option<u16>) -> Result<EmbeddedNode> {
        let home = Home(home_dir.to_path_buf());
        home::init(
            &home,
            &InitOptions {
                dev: true,
                chain_id: home::DEFAULT_CHAIN_ID,
                force: false,
                accounts: Vec::new(),
                balance: alloy_primitives::U256::ZERO,
            },
        )
        .context("initialising the demo's dev chain")?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let url = format!("http://{addr}");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let session = crate::commands::Session::new(home_dir.to_path_buf(), Some(url.clone()));
        let model = model.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("demo-node".into())
            .spawn(move || {
                crate::commands::run_node(
                    &session,
                    true,
                    Some(addr),
                    None,
                    Some(model),
                    None,
                    Vec::new(),
                    async move {
                        let _ = rx.await;
                    },
                )
            })
            .context("starting the node's thread")?;
        let mut node = EmbeddedNode {
            url,
            stop: Some(tx),
            thread: Some(thread),
        };
        node.wait_ready()?;
        Ok(node)
    }

    /// Waits (bounded) until the node answers JSON-RPC, or fails with the node's own error.
    fn wait_ready(&mut self) -> Result<()> {
        let rpc = crate::wallet::Rpc {
            url: self.url.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if rpc.call("eth_chainId", serde_json::json!([])).is_ok() {
                return Ok(());
            }
            super::interrupt::check()?;
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let t = self.thread.take().expect("checked above");
                return match t.join() {
                    Ok(Err(e)) => Err(e.context("the embedded node stopped at start")),
                    Ok(Ok(())) => bail!("the embedded node stopped at start"),
                    Err(_) => bail!("the embedded node panicked at start"),
                };
            }
            if Instant::now() > deadline {
                bail!(
                    "the embedded node did not answer at {} within 120 s",
                    self.url
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the node: it seals what is pending and closes its stores.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the embedded node panicked"))?
                .context("stopping the embedded node"),
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedNode {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
