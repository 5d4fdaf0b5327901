//! A reload's changes to `upstreams:`: a new upstream joins the pool
//! unroutable and takes traffic only once it passed a health probe (the
//! reload waits for its task's verdict, up to the start-up limit, and fails
//! with nothing changed if it is not up); a removed one leaves the pool at
//! once and its health checks stop (out of rotation, as a drained backend
//! is), its requests in flight get until `shutdown.drain_timeout`.

use tokio::time::Instant;

use super::STARTUP_TIMEOUT;
use super::ops::{Fleet, OpError, Out};
use super::upstream::Health;
use crate::config::{HealthConfig, Upstream};

impl Fleet {
    /// Add `added` to the pool and wait until each has its first verdict.
    /// `Err`: they are removed again (they never took traffic).
    pub(super) async fn add_upstreams(
        &mut self,
        added: &[Upstream],
        health: &HealthConfig,
        out: &Out,
    ) -> Result<(), OpError> {
        if added.is_empty() {
            return Ok(());
        }
        let from = self.upstreams.len();
        for u in added {
            out.progress(format!(
                "upstream {}: health-checking it before it takes traffic (up to {})",
                u.name,
                humantime::format_duration(STARTUP_TIMEOUT)
            ))
            .await;
            let remote = self.spawn_upstream(u.clone(), health);
            self.upstreams.push(remote);
        }
        self.publish_pool();
        // One deadline for all: each task publishes its verdict; nothing polls.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut failed = Vec::new();
        for remote in &self.upstreams[from..] {
            let mut verdict = remote.verdict.clone();
            let _ = tokio::time::timeout_at(
                deadline,
                verdict.wait_for(|v| !matches!(v.health, Health::Unknown { .. })),
            )
            .await;
            let v = verdict.borrow().clone();
            if !v.health.routable() {
                let seen = v.reason.unwrap_or_else(|| "no probe answered".into());
                failed.push(format!(
                    "upstream {} did not pass its health probe within {}: {seen}",
                    remote.config.name,
                    humantime::format_duration(STARTUP_TIMEOUT),
                ));
            }
        }
        if failed.is_empty() {
            for u in added {
                out.progress(format!("upstream {}: passed, in rotation", u.name))
                    .await;
            }
            return Ok(());
        }
        self.remove_upstreams(added, out).await;
        Err(OpError::Invalid(format!(
            "reload: {}; nothing changed",
            failed.join("; ")
        )))
    }

    /// Take `gone` out of the pool and stop their health checks (which
    /// takes them out of rotation), then let their requests in flight
    /// finish, up to `shutdown.drain_timeout`.
    pub(super) async fn remove_upstreams(&mut self, gone: &[Upstream], out: &Out) {
        let (leaving, staying) = std::mem::take(&mut self.upstreams)
            .into_iter()
            .partition::<Vec<_>, _>(|u| gone.contains(&u.config));
        self.upstreams = staying;
        if leaving.is_empty() {
            return;
        }
        self.publish_pool();
        for u in &leaving {
            u.stop.cancel();
        }
        let drain = self.config.shutdown.drain_timeout;
        let deadline = Instant::now() + drain;
        for u in leaving {
            // Its task has ended once its verdicts' sender is gone: the slot
            // is out of rotation, so the last request to end wakes the wait.
            let mut verdict = u.verdict.clone();
            let ended = async { while verdict.changed().await.is_ok() {} };
            let idle = async {
                ended.await;
                u.slot.until_drained().await;
            };
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                out.progress(format!(
                    "upstream {}: {} still in flight after {}; removing it anyway",
                    u.config.name,
                    u.slot.active(),
                    humantime::format_duration(drain)
                ))
                .await;
            }
            out.progress(format!("upstream {}: drained and removed", u.config.name))
                .await;
        }
    }
}
