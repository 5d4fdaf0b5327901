//! `fleet upgrade`: hand the running fleet to a new supervisor process (a new
//! fleet binary) without refusing a connection or failing a request.
//!
//! # The exchange
//! The old supervisor (the *leader*: it holds the `fleet upgrade` client and
//! decides) binds `handover.sock` in the state dir and starts the new binary
//! as `fleet up <its own flags> --detached-child --take-over handover.sock`
//! (re-exec, as `up -d` does: never a fork of the runtime). The new one (the
//! *follower*) connects, and over that connection:
//! 1. leader -> follower, with `SCM_RIGHTS`: the pid file (its `flock` is the
//!    open file's, so the lock passes with no moment where it is free), the
//!    balancer's listening sockets (those its `front` accepts on now: a
//!    reload may have moved them; on Linux one per engine thread, see
//!    `listener::Listening`), the control socket's and the admin
//!    address's. A new supervisor with more engine threads than sockets
//!    passed binds more into their `SO_REUSEPORT` group (or, where it
//!    cannot, shares them among its threads); with fewer, some of its
//!    threads accept on several. Every passed socket stays open and
//!    accepted on, so none drops the connections queued on it. Follower -> leader: `hello` (or the error that stops it);
//! 2. for each local backend, one at a time: the leader drains it and
//!    retires it (its job's `retire` ticket: the port must be free, ports
//!    are fixed), says `start`; the follower starts its own backend on that
//!    port and answers `started` once its `ready` ticket says it serves;
//! 3. after the first: `accept`. The follower starts accepting on the three
//!    sockets and says `accepting`; the leader stops accepting, and each of
//!    its client connections closes after its next response (which says
//!    `Connection: close`: `Roster::handover`), so its clients reconnect
//!    to the follower; those still idle after `shutdown.timeout` are
//!    closed (the front's balancer stops). Until then both accept from the
//!    same sockets, so no connection is refused;
//! 4. `done`: the follower writes its pid into the pid file and says
//!    `finished`; the leader answers `fleet upgrade` and exits, leaving the
//!    socket and pid file (now the follower's) in place.
//!
//! Replacing the backends (rather than adopting them) keeps one rule: a
//! supervisor only ever watches and reaps its own children, on Linux and
//! macOS alike.
//!
//! # Failure
//! Until step 3 the leader has stopped accepting nothing: if the new binary
//! does not start, exits, does not call in within [`CALL_IN_TIMEOUT`], or
//! its first backend does not pass, the leader kills it, starts its own
//! backend again on the port it freed, and `fleet upgrade` exits 1 saying
//! why. After step 3 the follower is the fleet: a later backend that does
//! not come back is reported like one in a rolling restart.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tracing::{info, warn};

use super::STARTUP_TIMEOUT;
use super::ops::{Fleet, OpError, Out, serving};
use crate::state_dir::{PidLock, StateDir};

/// How long the new supervisor has to start and call in.
const CALL_IN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest the other side may stay silent between two steps: each step
/// (a backend's drain, stop, start and first probe) is bounded by the
/// fleet's own timeouts, far below this.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the leader looks whether its client connections have closed.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// What comes with the descriptors: which of them there are, in order.
#[derive(Debug, Serialize, Deserialize)]
struct Passed {
    /// The pid file, the balancer's sockets, the control socket, then the admin address if set.
    admin: bool,
    /// How many balancer sockets (absent, from a fleet that had one: 1).
    #[serde(default = "one")]
    balancers: usize,
}

fn one() -> usize {
    1
}

/// The most balancer sockets a handover carries: one per engine thread.
const MAX_BALANCERS: usize = crate::config::MAX_ENGINE_THREADS as usize;

/// The descriptors the leader passes, in the order they go.
struct Passing {
    pid_file: OwnedFd,
    balancers: Vec<OwnedFd>,
    control: OwnedFd,
    admin: Option<OwnedFd>,
}

/// Leader -> follower, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
enum ToNew {
    Start { port: u16 },
    Accept,
    Done,
}

/// Follower -> leader, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "did", rename_all = "snake_case")]
enum ToOld {
    Hello { pid: u32 },
    Refused { why: String },
    Started { port: u16, pid: u32 },
    Failed { port: u16, why: String },
    Accepting,
    Finished { pid: u32 },
}

impl Fleet {
    /// `fleet upgrade`, the leader's side: run the exchange to its end.
    /// `Ok`: the new supervisor holds the fleet and this one holds nothing
    /// (the supervisor's loop then stops it, as after every handover).
    pub(super) async fn upgrade(
        &mut self,
        exe: Option<PathBuf>,
        out: &Out,
    ) -> Result<String, OpError> {
        match lead(self, exe, out).await {
            Ok(pid) => Ok(format!(
                "upgraded: the new supervisor (pid {pid}) holds the fleet; this one (pid {}) exits",
                std::process::id()
            )),
            Err(Failure::Before(why) | Failure::After(why)) => {
                Err(OpError::Invalid(format!("upgrade: {why}")))
            }
        }
    }
}

/// The leader's side. `Ok` is the new supervisor's pid.
async fn lead(fleet: &mut Fleet, exe: Option<PathBuf>, out: &Out) -> Result<u32, Failure> {
    let Some((balancers, kit)) = fleet.front.as_ref().and_then(|f| f.passable()) else {
        return Err(Failure::Before(
            "this supervisor could not keep copies of its sockets; see its log".into(),
        ));
    };
    // Copies of the copies: a failed handover leaves the front's as they were.
    let copies = (|| -> io::Result<Passing> {
        Ok(Passing {
            pid_file: kit.pid_file.try_clone()?,
            balancers: balancers
                .iter()
                .map(OwnedFd::try_clone)
                .collect::<io::Result<_>>()?,
            control: kit.control.try_clone()?,
            admin: kit.admin.as_ref().map(OwnedFd::try_clone).transpose()?,
        })
    })()
    .map_err(|e| Failure::Before(format!("cannot copy the sockets to pass on: {e}")))?;
    let exe = exe.unwrap_or_else(|| fleet.exe().to_path_buf());
    let state = fleet.state.clone();
    let path = state.handover_socket();
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .and_then(|l| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            Ok(l)
        })
        .map_err(|e| Failure::Before(format!("cannot create {}: {e}", path.display())))?;
    let log = state.supervisor_log();
    // Its log goes where ours does in a detached fleet, even when this one
    // runs in a terminal: the new one outlives it.
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(crate::state_dir::NO_FOLLOW)
        .open(&log)
        .map_or_else(|_| Stdio::inherit(), Stdio::from);
    let mut child = tokio::process::Command::new(&exe)
        .args(up_args(std::env::args_os().skip(1), &path))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| {
            let _ = std::fs::remove_file(&path);
            Failure::Before(format!(
                "cannot start {}: {e}; the fleet is unchanged",
                exe.display()
            ))
        })?;
    let child_pid = child.id().unwrap_or_default();
    out.progress(format!(
        "started the new supervisor {} (pid {child_pid})",
        exe.display()
    ))
    .await;
    let gone = |status: io::Result<std::process::ExitStatus>| {
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        format!(
            "the new supervisor ({}) exited before taking over ({status}); see {}; \
             the fleet is unchanged",
            exe.display(),
            log.display()
        )
    };
    let own_uid = nix::unistd::geteuid().as_raw();
    let called_in = tokio::select! {
        s = child.wait() => Err(gone(s)),
        a = tokio::time::timeout(CALL_IN_TIMEOUT, listener.accept()) => match a {
            Err(_) => Err(format!(
                "the new supervisor ({}) did not take over within {}s; see {}; the fleet is unchanged",
                exe.display(), CALL_IN_TIMEOUT.as_secs(), log.display()
            )),
            Ok(Err(e)) => Err(format!("handover socket: {e}; the fleet is unchanged")),
            Ok(Ok((stream, _))) => match stream.peer_cred() {
                Ok(c) if c.uid() == own_uid => Ok(stream),
                _ => Err("a process of another user called the handover socket; the fleet is unchanged".into()),
            },
        },
    };
    drop(listener);
    let _ = std::fs::remove_file(&path);
    let stream = match called_in {
        Ok(s) => s,
        Err(why) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(Failure::Before(why));
        }
    };
    let had: Vec<u16> = fleet.jobs.keys().copied().collect();
    let mut peer = Peer::new(stream, &copies).await;
    drop(copies);
    let result = match &mut peer {
        Ok(p) => lead_backends(fleet, p, out).await,
        Err(e) => Err(Failure::Before(format!("handing over the sockets: {e}"))),
    };
    match result {
        Ok(pid) => {
            // It exits on its own once it holds the fleet; it is no child of
            // ours to wait for any longer than that.
            drop(child);
            Ok(pid)
        }
        Err(Failure::Before(why)) => {
            // Nothing was handed over for good: the new one stops its
            // backend (or is killed), then we take the freed port back.
            drop(peer);
            let limit = fleet.restart_limit();
            if tokio::time::timeout(limit, child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            fleet_restore(fleet, &had, out).await;
            Err(Failure::Before(format!(
                "{why}; the old supervisor keeps serving"
            )))
        }
        Err(Failure::After(why)) => {
            drop(child);
            Err(Failure::After(why))
        }
    }
}

/// Why the exchange stopped: before the follower accepted (the leader keeps
/// the fleet and serves on) or after (the follower has it: the leader holds
/// nothing and exits as after a handover that went well).
pub(super) enum Failure {
    Before(String),
    After(String),
}

/// Steps 2-4 of the exchange, from the leader.
async fn lead_backends(fleet: &mut Fleet, peer: &mut Peer, out: &Out) -> Result<u32, Failure> {
    match peer.recv().await.map_err(Failure::Before)? {
        ToOld::Hello { .. } => {}
        ToOld::Refused { why } => return Err(Failure::Before(why)),
        other => return Err(Failure::Before(format!("unexpected {other:?}"))),
    }
    let ports: Vec<u16> = fleet.jobs.keys().copied().collect();
    let mut accepted = false;
    let mut failed = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        out.progress(format!(
            "backend {port}: draining, to start under the new supervisor ({}/{})",
            i + 1,
            ports.len()
        ))
        .await;
        release(fleet, port, out).await;
        let fail = |why: String| {
            if accepted {
                Failure::After(why)
            } else {
                Failure::Before(why)
            }
        };
        peer.send(&ToNew::Start { port }).await.map_err(fail)?;
        match peer.recv().await.map_err(fail)? {
            ToOld::Started { pid, .. } => {
                out.progress(format!(
                    "backend {port}: serving under the new supervisor (pid {pid})"
                ))
                .await
            }
            ToOld::Failed { why, .. } if !accepted => {
                return Err(Failure::Before(format!(
                    "backend {port} did not start under the new supervisor: {why}"
                )));
            }
            ToOld::Failed { why, .. } => failed.push(format!("backend {port}: {why}")),
            other => return Err(fail(format!("unexpected {other:?}"))),
        }
        if !accepted {
            hand_over_accepting(fleet, peer)
                .await
                .map_err(Failure::Before)?;
            accepted = true;
            out.progress("the new supervisor accepts; this one stopped accepting".into())
                .await;
        }
    }
    if !accepted {
        // Upstreams only: nothing to move but the sockets.
        hand_over_accepting(fleet, peer)
            .await
            .map_err(Failure::Before)?;
    }
    peer.send(&ToNew::Done).await.map_err(Failure::After)?;
    let pid = match peer.recv().await.map_err(Failure::After)? {
        ToOld::Finished { pid } => pid,
        other => return Err(Failure::After(format!("unexpected {other:?}"))),
    };
    if failed.is_empty() {
        Ok(pid)
    } else {
        Err(Failure::After(format!(
            "the new supervisor (pid {pid}) holds the fleet, but: {}",
            failed.join("; ")
        )))
    }
}

/// Step 3: the follower accepts, then the leader stops accepting; its
/// client connections close after their next response, and those still
/// idle after `shutdown.timeout` are closed.
async fn hand_over_accepting(fleet: &Fleet, peer: &mut Peer) -> Result<(), String> {
    peer.send(&ToNew::Accept).await?;
    match peer.recv().await? {
        ToOld::Accepting => {}
        other => return Err(format!("unexpected {other:?}")),
    }
    fleet.backends.handover.cancel();
    if let Some(front) = &fleet.front {
        front.admin_stop.cancel();
    }
    let limit = fleet.config.shutdown.timeout;
    let deadline = Instant::now() + limit;
    let active = || fleet.backends.metrics.active.get();
    while active() > 0 && Instant::now() < deadline {
        tokio::time::sleep(IDLE_POLL).await;
    }
    if active() > 0 {
        info!(
            target: "supervisor",
            "closing {} client connections still idle {}s after the handover",
            active(),
            limit.as_secs()
        );
    }
    if let Some(front) = &fleet.front {
        front.stop();
    }
    Ok(())
}

/// Drain one backend and retire it, so its port is free.
async fn release(fleet: &mut Fleet, port: u16, out: &Out) {
    fleet.drain(&[port], out).await;
    let Some(job) = fleet.jobs.remove(&port) else {
        return;
    };
    fleet.publish_pool();
    fleet.retire(vec![job], out).await;
}

/// After a handover that failed before the follower accepted: start our own
/// backends again on the ports this fleet had and freed.
async fn fleet_restore(fleet: &mut Fleet, had: &[u16], out: &Out) {
    let ports: Vec<u16> = had
        .iter()
        .copied()
        .filter(|p| !fleet.jobs.contains_key(p))
        .collect();
    for &p in &ports {
        let job = fleet.spawn(p);
        fleet.jobs.insert(p, job);
    }
    fleet.publish_pool();
    let mut tickets = Vec::new();
    for &p in &ports {
        tickets.push((p, fleet.job(p).ready(fleet.restart_limit()).await));
    }
    for (p, ticket) in tickets {
        match serving(ticket).await {
            Ok(pid) => out.progress(format!("backend {p}: back (pid {pid})")).await,
            Err(why) => out.progress(format!("backend {p}: {why}")).await,
        }
    }
}

/// `fleet up` with this supervisor's own flags, as the new supervisor that
/// takes over through `socket`.
fn up_args(
    own: impl Iterator<Item = std::ffi::OsString>,
    socket: &Path,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = own
        .filter(|a| {
            let a = a.to_string_lossy();
            a != "--detached-child" && !a.starts_with("--take-over")
        })
        .collect();
    args.push("--detached-child".into());
    let mut take_over = std::ffi::OsString::from("--take-over=");
    take_over.push(socket);
    args.push(take_over);
    args
}

/// One end of the handover connection, as JSON lines.
struct Peer {
    lines: Lines<BufReader<OwnedReadHalf>>,
    w: OwnedWriteHalf,
}

impl Peer {
    /// The leader's end: send the descriptors first.
    async fn new(stream: UnixStream, kit: &Passing) -> io::Result<Peer> {
        let passed = Passed {
            admin: kit.admin.is_some(),
            balancers: kit.balancers.len(),
        };
        let mut header = serde_json::to_vec(&passed).map_err(io::Error::other)?;
        header.push(b'\n');
        let mut fds: Vec<RawFd> = vec![kit.pid_file.as_raw_fd()];
        fds.extend(kit.balancers.iter().map(|f| f.as_raw_fd()));
        fds.push(kit.control.as_raw_fd());
        fds.extend(kit.admin.as_ref().map(|f| f.as_raw_fd()));
        loop {
            stream.writable().await?;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                nix::sys::socket::sendmsg::<UnixAddr>(
                    stream.as_raw_fd(),
                    &[IoSlice::new(&header)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::empty(),
                    None,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(n) if n == header.len() => break,
                Ok(_) => return Err(io::Error::other("the descriptors went with a short write")),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Peer::from(stream))
    }

    async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), String> {
        let mut line = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.w
            .write_all(&line)
            .await
            .map_err(|e| format!("the handover connection failed: {e}"))
    }

    async fn recv<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, String> {
        match tokio::time::timeout(STEP_TIMEOUT, self.lines.next_line()).await {
            Err(_) => Err(format!(
                "the other supervisor said nothing for {}s",
                STEP_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Err(format!("the handover connection failed: {e}")),
            Ok(Ok(None)) => Err("the other supervisor closed the handover connection".into()),
            Ok(Ok(Some(line))) => {
                serde_json::from_str(&line).map_err(|e| format!("bad handover message: {e}"))
            }
        }
    }
}

impl From<UnixStream> for Peer {
    fn from(stream: UnixStream) -> Self {
        let (r, w) = stream.into_split();
        Peer {
            lines: BufReader::new(r).lines(),
            w,
        }
    }
}

/// What a new supervisor receives from the old one: call in at `socket`
/// and take the descriptors. Blocking; runs before the runtime starts.
pub(crate) struct Received {
    /// The balancer's sockets, in the order the old supervisor had them.
    pub(crate) balancers: Vec<std::net::TcpListener>,
    pub(crate) control: std::os::unix::net::UnixListener,
    pub(crate) admin: Option<std::net::TcpListener>,
    /// The rest of the exchange, once the runtime runs.
    pub(crate) peer: std::os::unix::net::UnixStream,
}

/// The follower's step 1.
pub(crate) fn receive(socket: &Path, state: &StateDir) -> io::Result<(PidLock, Received)> {
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(CALL_IN_TIMEOUT))?;
    let mut buf = [0u8; 256];
    let mut space = nix::cmsg_space!([RawFd; 3 + MAX_BALANCERS]);
    let (n, raw) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )?;
        let mut raw = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                raw.extend(fds);
            }
        }
        (msg.bytes, raw)
    };
    let fds = own(raw);
    for fd in &fds {
        // Not inherited by the backends this supervisor starts.
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
    }
    // The header is one short line, sent with the descriptors; read the
    // rest of it should it come apart.
    let mut header = buf[..n].to_vec();
    while !header.ends_with(b"\n") {
        let mut byte = [0u8; 1];
        if (&stream).read(&mut byte)? == 0 {
            return Err(io::Error::other("the old supervisor closed the connection"));
        }
        header.push(byte[0]);
    }
    let passed: Passed = serde_json::from_slice(&header).map_err(io::Error::other)?;
    let want = 2 + passed.balancers + usize::from(passed.admin);
    if passed.balancers == 0 || passed.balancers > MAX_BALANCERS || fds.len() != want {
        return Err(io::Error::other(format!(
            "received {} descriptors, expected {want}",
            fds.len()
        )));
    }
    stream.set_read_timeout(None)?;
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("the count was checked");
    let lock = PidLock::adopt(File::from(next()), state.pid_file());
    let balancers: Vec<_> = (0..passed.balancers)
        .map(|_| std::net::TcpListener::from(next()))
        .collect();
    let control = std::os::unix::net::UnixListener::from(next());
    let admin = passed.admin.then(|| std::net::TcpListener::from(next()));
    for l in balancers.iter().chain(admin.as_ref()) {
        l.set_nonblocking(true)?;
    }
    control.set_nonblocking(true)?;
    Ok((
        lock,
        Received {
            balancers,
            control,
            admin,
            peer: stream,
        },
    ))
}

/// Descriptors the kernel just installed in this process (`SCM_RIGHTS`).
#[allow(unsafe_code)]
fn own(raw: Vec<RawFd>) -> Vec<OwnedFd> {
    use std::os::fd::FromRawFd;
    raw.into_iter()
        // SAFETY: each descriptor was created in this process by the
        // kernel for this `recvmsg` and is referred to by nothing else: it
        // is owned here, once.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// The follower's side, while the runtime runs.
pub(crate) struct Follower {
    peer: Peer,
}

impl Follower {
    pub(crate) fn new(stream: std::os::unix::net::UnixStream) -> io::Result<Follower> {
        stream.set_nonblocking(true)?;
        Ok(Follower {
            peer: Peer::from(UnixStream::from_std(stream)?),
        })
    }

    /// Steps 1-2 until `accept`: say hello, then start each backend the old
    /// supervisor frees. `Err` ends this supervisor (the old one serves on).
    pub(super) async fn until_accept(
        &mut self,
        fleet: &mut Fleet,
        listen: std::net::SocketAddr,
    ) -> Result<(), String> {
        // Addresses stay the running fleet's; a file that moved one would
        // leave this supervisor's config saying what it does not serve.
        let wanted = fleet.config.listen;
        if wanted.port() != 0 && wanted != listen {
            let why = format!(
                "fleet.yaml now says listen: {wanted}, but the fleet serves on {listen} \
                 and keeps its sockets across an upgrade; put {listen} back in fleet.yaml to upgrade"
            );
            self.peer.send(&ToOld::Refused { why: why.clone() }).await?;
            return Err(why);
        }
        self.peer
            .send(&ToOld::Hello {
                pid: std::process::id(),
            })
            .await?;
        loop {
            match self.peer.recv().await? {
                ToNew::Start { port } => {
                    if let Err(why) = start_one(fleet, port, &mut self.peer).await {
                        return Err(format!("backend {port} did not start: {why}"));
                    }
                }
                ToNew::Accept => return Ok(()),
                ToNew::Done => return Err("the old supervisor ended the handover early".into()),
            }
        }
    }

    /// After this supervisor accepts: say so, start the rest of the
    /// backends, and on `done` take the pid file.
    pub(super) async fn finish(mut self, fleet: &mut Fleet, lock: &mut PidLock) {
        if let Err(e) = self.run_rest(fleet, lock).await {
            warn!(target: "supervisor", "handover: {e}; this supervisor holds the fleet");
            // The old one stopped accepting: the fleet is ours either way.
            let _ = lock.write_pid();
        }
        fleet.config.backends = u16::try_from(fleet.jobs.len()).unwrap_or(u16::MAX);
    }

    async fn run_rest(&mut self, fleet: &mut Fleet, lock: &mut PidLock) -> Result<(), String> {
        self.peer.send(&ToOld::Accepting).await?;
        loop {
            match self.peer.recv().await? {
                ToNew::Start { port } => {
                    // Failed or not, it is in this fleet now; the old one reports it.
                    let _ = start_one(fleet, port, &mut self.peer).await;
                }
                ToNew::Accept => {}
                ToNew::Done => break,
            }
        }
        lock.write_pid()
            .map_err(|e| format!("cannot write the pid file: {e}"))?;
        info!(target: "supervisor", "took the fleet over");
        self.peer
            .send(&ToOld::Finished {
                pid: std::process::id(),
            })
            .await
    }
}

/// Start our backend on `port` (freed by the old supervisor) and report how
/// its first probe went.
async fn start_one(fleet: &mut Fleet, port: u16, peer: &mut Peer) -> Result<(), String> {
    let job = fleet.spawn(port);
    fleet.jobs.insert(port, job);
    fleet.publish_pool();
    match serving(fleet.job(port).ready(STARTUP_TIMEOUT).await).await {
        Ok(pid) => peer.send(&ToOld::Started { port, pid }).await,
        Err(why) => {
            peer.send(&ToOld::Failed {
                port,
                why: why.clone(),
            })
            .await?;
            Err(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<std::ffi::OsString> {
        v.iter().map(Into::into).collect()
    }

    #[test]
    fn the_new_supervisor_gets_our_flags_and_takes_over_once() {
        // A supervisor that itself took over passes on only the new socket.
        let own = strings(&[
            "up",
            "-f",
            "conf/fleet.yaml",
            "-d",
            "--detached-child",
            "--take-over=/s/old.sock",
        ]);
        assert_eq!(
            up_args(own.into_iter(), Path::new("/s/handover.sock")),
            strings(&[
                "up",
                "-f",
                "conf/fleet.yaml",
                "-d",
                "--detached-child",
                "--take-over=/s/handover.sock",
            ])
        );
    }

    #[test]
    fn handover_messages_are_tagged_json_lines() {
        let line = serde_json::to_string(&ToNew::Start { port: 9002 }).unwrap();
        assert_eq!(line, r#"{"do":"start","port":9002}"#);
        let back: ToOld = serde_json::from_str(r#"{"did":"started","port":9002,"pid":7}"#).unwrap();
        assert!(matches!(back, ToOld::Started { port: 9002, pid: 7 }));
    }
}
