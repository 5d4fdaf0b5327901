//! A reload that moves `base_port` (with or without a new `backends`
//! count): blue/green. The new set starts on its own ports beside the old
//! one (which keeps serving), the balancer's pool switches to it in one swap
//! once every new backend passed its probe, and the old set is drained and
//! stopped. A new set that does not come up is stopped and the old one
//! keeps serving: nothing changed.
//!
//! The new ports must all be free and apart from the current ones (checked
//! before anything starts).

use tokio::time::Instant;

use super::STARTUP_TIMEOUT;
use super::ops::{Fleet, OpError, Out, list, not_serving, serving};
use crate::balancer::pool::Pool;
use crate::config::Config;

impl Fleet {
    /// Move the backends to `new`'s ports with `new`'s settings. `Err`: the
    /// new set is stopped, the old set and config are as they were.
    pub(super) async fn blue_green(&mut self, new: Config, out: &Out) -> Result<(), OpError> {
        let ports: Vec<u16> = new.ports().collect();
        let old_ports: Vec<u16> = self.jobs.keys().copied().collect();
        // `spawn` starts backends with the fleet's config.
        let old = std::mem::replace(&mut self.config, new);
        out.progress(format!(
            "starting {} beside {} (up to {})",
            list(&ports),
            list(&old_ports),
            humantime::format_duration(STARTUP_TIMEOUT)
        ))
        .await;
        // Not in the pool yet: the old set alone takes traffic meanwhile.
        for &p in &ports {
            let job = self.spawn(p);
            self.jobs.insert(p, job);
        }
        // They start together: one deadline for all, each `ready` ticket
        // resolving by it.
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut tickets = Vec::new();
        for &p in &ports {
            let left = deadline.saturating_duration_since(Instant::now());
            tickets.push((p, self.job(p).ready(left).await));
        }
        let mut failed = Vec::new();
        for (p, ticket) in tickets {
            match serving(ticket).await {
                Ok(pid) => {
                    out.progress(format!("backend {p}: passed (pid {pid})"))
                        .await
                }
                Err(why) => failed.push((p, why)),
            }
        }
        if !failed.is_empty() {
            // The pool never held them: they took no traffic.
            let started = ports.iter().filter_map(|p| self.jobs.remove(p)).collect();
            self.config = old;
            out.progress(format!(
                "the new set did not pass; stopping it ({} keep serving)",
                list(&old_ports)
            ))
            .await;
            self.retire(started, out).await;
            return Err(OpError::Invalid(format!(
                "reload: {}; rolled back: the old backends keep serving, nothing changed",
                not_serving(&failed)
            )));
        }
        // One swap to exactly the new set and the upstreams: no request sees
        // half of it.
        let slots = ports
            .iter()
            .map(|&p| self.job(p).slot().clone())
            .chain(self.upstreams.iter().map(|u| u.slot.clone()))
            .collect();
        self.backends.swap(Pool::new(slots));
        out.progress(format!(
            "switched the balancer to {}; draining {}",
            list(&ports),
            list(&old_ports)
        ))
        .await;
        // Out of the pool already; their in-flight work gets its drain
        // time, then each is retired and its task ends.
        self.drain(&old_ports, out).await;
        let retired = old_ports
            .iter()
            .filter_map(|p| self.jobs.remove(p))
            .collect();
        self.retire(retired, out).await;
        Ok(())
    }
}
