//! The proxy's loop: one poll over the listening socket and both ends of every client
//! connection. Authentication passes through untouched (the bus judges the credentials, which
//! are the same person's on both sides); from `BEGIN` on, every message is framed, judged by
//! the policy, renamed where it names a renamed name, and passed on with its file descriptors.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use zbus::message::{Flags, Message, Type};

use super::frame::{self, FrameError};
use super::names::{self, Names};
use super::owners::Owners;
use super::policy::{Level, Policy};

const DRIVER: &str = "org.freedesktop.DBus";

/// What the proxy is told at start.
pub struct Config {
    pub policy: Policy,
    /// The name element appended to names the clone owns (`Doppel_work`).
    pub suffix: String,
    /// The profile's display name for notifications ("Telegram Desktop (Work)").
    pub label: Option<String>,
    /// The profile's desktop-entry id for notifications' `desktop-entry` hint.
    pub desktop_entry: Option<String>,
    /// Print every refusal on stderr.
    pub log: bool,
    /// Where to note (by touching `opened-uri`) that the clone asked the desktop to open a web
    /// page: the login router takes a link that follows soon after as the clone's.
    pub record_dir: Option<std::path::PathBuf>,
}

/// Bytes (and descriptors) waiting to be written to one side.
struct Out {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    sent: usize,
}

/// One side of a client connection.
struct Side {
    sock: UnixStream,
    rbuf: Vec<u8>,
    rfds: VecDeque<OwnedFd>,
    out: VecDeque<Out>,
    closed: bool,
}

impl Side {
    fn new(sock: UnixStream) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(Self {
            sock,
            rbuf: Vec::new(),
            rfds: VecDeque::new(),
            out: VecDeque::new(),
            closed: false,
        })
    }

    fn queue(&mut self, bytes: Vec<u8>, fds: Vec<OwnedFd>) {
        self.out.push_back(Out {
            bytes,
            fds,
            sent: 0,
        });
    }

    /// Reads what is there; false once the peer has gone.
    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        loop {
            let mut cmsg = nix::cmsg_space!([RawFd; 64]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            match r {
                Ok(msg) => {
                    let n = msg.bytes;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(fds) = c {
                                // SAFETY: the kernel just gave us these descriptors; nothing
                                // else owns them.
                                self.rfds.extend(fds.into_iter().map(|fd| unsafe {
                                    <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                                }));
                            }
                        }
                    }
                    if n == 0 {
                        return false;
                    }
                    self.rbuf.extend_from_slice(&buf[..n]);
                    if n < buf.len() {
                        return true;
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Writes what it can; false on a write error.
    fn flush(&mut self) -> bool {
        while let Some(o) = self.out.front_mut() {
            let raw: Vec<RawFd> = o.fds.iter().map(AsRawFd::as_raw_fd).collect();
            let iov = [IoSlice::new(&o.bytes[o.sent..])];
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let cmsgs: &[ControlMessage] = if o.sent == 0 && !raw.is_empty() {
                &cmsg
            } else {
                &[]
            };
            match sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => {
                    if n > 0 && o.sent == 0 {
                        // The descriptors went with the first byte; ours can close.
                        o.fds.clear();
                    }
                    o.sent += n;
                    if o.sent >= o.bytes.len() {
                        self.out.pop_front();
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            }
        }
        true
    }
}

/// What a reply from the bus is to a call of the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Plain,
    /// A call to a name the client may talk to: its answerer may be talked to as well.
    Talked,
    Hello,
    /// ListNames / ListActivatableNames: only the names the client may see.
    Names,
}

/// The verdict on one message.
enum Verdict {
    Pass,
    Replace(Message),
    /// Refused; the error (for a call expecting a reply) goes back to the client.
    Refuse(Option<Message>),
    /// Answered by the proxy itself.
    Answer(Message),
}

struct Client {
    app: Side,
    bus: Side,
    begun: bool,
    /// Authentication lines sent to the bus and not answered yet.
    auth_replies: usize,
    unique: Option<String>,
    host_pid: Option<u32>,
    names: Names,
    /// The client's calls awaiting a reply, by serial.
    pending: HashMap<u32, Pending>,
    /// Calls to the client awaiting its reply: (caller, serial).
    incoming: HashSet<(String, u32)>,
    /// Peers the client has had replies from, and the level of the name it called them by.
    learned: HashMap<String, Level>,
}

/// Serves clients on `listener` until `stop` (a pipe's write end) reports its reader gone.
pub fn serve(
    listener: UnixListener,
    upstream: &str,
    cfg: &Config,
    owners: &Owners,
    stop: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let path = upstream_path(upstream)?;
    let mut clients: Vec<Client> = Vec::new();
    loop {
        let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if let Some(s) = stop {
            fds.push(PollFd::new(s, PollFlags::empty()));
        }
        let base = fds.len();
        for c in &clients {
            for side in [&c.app, &c.bus] {
                let mut f = PollFlags::POLLIN;
                if !side.out.is_empty() {
                    f |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(side.sock.as_fd(), f));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if stop.is_some() && !revents[1].is_empty() {
            return Ok(());
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let (ra, rb) = (revents[base + 2 * i], revents[base + 2 * i + 1]);
            let bad = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
            if ra.intersects(PollFlags::POLLIN | bad) && !c.app.fill() {
                c.app.closed = true;
            }
            if rb.intersects(PollFlags::POLLIN | bad) && !c.bus.fill() {
                c.bus.closed = true;
            }
            if let Err(e) = c.pump(cfg, owners) {
                if cfg.log {
                    eprintln!("doppel-bus-proxy: dropping a client: {e}");
                }
                c.app.closed = true;
            }
            if !c.app.flush() {
                c.app.closed = true;
            }
            if !c.bus.flush() {
                c.bus.closed = true;
            }
        }
        // A client whose either side is gone is done, once what it sent has been written.
        clients.retain(|c| !(c.app.closed || (c.bus.closed && c.app.out.is_empty())));
        if revents[0].contains(PollFlags::POLLIN) {
            loop {
                match listener.accept() {
                    Ok((sock, _)) => match accept(sock, &path, cfg) {
                        Ok(c) => clients.push(c),
                        Err(e) => eprintln!("doppel-bus-proxy: cannot reach the session bus: {e}"),
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Where `unix:path=…` or `unix:abstract=…` points.
pub enum Upstream {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

/// Undoes the `%xx` escaping of D-Bus address values.
fn unescape(v: &str) -> Vec<u8> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(x) => {
                out.push(x);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// Reads a D-Bus address of the kinds a session bus has (`unix:path=`, `unix:abstract=`); the
/// first usable one of a `;`-separated list.
pub fn upstream_path(address: &str) -> io::Result<Upstream> {
    use std::os::unix::ffi::OsStringExt;
    for a in address.split(';') {
        let Some(params) = a.strip_prefix("unix:") else {
            continue;
        };
        for kv in params.split(',') {
            if let Some(p) = kv.strip_prefix("path=") {
                return Ok(Upstream::Path(
                    std::ffi::OsString::from_vec(unescape(p)).into(),
                ));
            }
            if let Some(p) = kv.strip_prefix("abstract=") {
                return Ok(Upstream::Abstract(unescape(p)));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("the session bus address {address:?} has no unix:path= or unix:abstract= part"),
    ))
}

fn connect(up: &Upstream) -> io::Result<UnixStream> {
    match up {
        Upstream::Path(p) => UnixStream::connect(p),
        Upstream::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            UnixStream::connect_addr(&addr)
        }
    }
}

fn accept(sock: UnixStream, up: &Upstream, cfg: &Config) -> io::Result<Client> {
    let host_pid = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .and_then(|c| u32::try_from(c.pid()).ok())
        .filter(|p| *p > 0);
    let bus = connect(up)?;
    Ok(Client {
        app: Side::new(sock)?,
        bus: Side::new(bus)?,
        begun: false,
        auth_replies: 0,
        unique: None,
        host_pid,
        names: Names::new(&cfg.suffix, host_pid),
        pending: HashMap::new(),
        incoming: HashSet::new(),
        learned: HashMap::new(),
    })
}

fn err(e: impl std::fmt::Display) -> FrameError {
    FrameError(e.to_string())
}

impl Client {
    /// Moves every complete unit (auth line or message) across, both ways.
    fn pump(&mut self, cfg: &Config, owners: &Owners) -> Result<(), FrameError> {
        if !self.begun {
            self.auth()?;
        }
        // The bus answers each authentication line with one line, possibly after the client
        // has sent BEGIN and its first messages (clients pipeline them): until every answer is
        // in, what the bus sends is lines.
        while self.auth_replies > 0 {
            let Some(end) = self.bus.rbuf.windows(2).position(|w| w == b"\r\n") else {
                if self.bus.rbuf.len() > 16384 {
                    return Err(FrameError("authentication reply too long".into()));
                }
                break;
            };
            let line: Vec<u8> = self.bus.rbuf.drain(..end + 2).collect();
            self.app.queue(line, Vec::new());
            self.auth_replies -= 1;
        }
        if !self.begun || self.auth_replies > 0 {
            // Messages the client sent after BEGIN wait until the bus has finished answering.
            if self.begun {
                while let Some((msg, fds)) = take_message(&mut self.app)? {
                    let verdict = self.judge_outgoing(&msg, cfg, owners)?;
                    self.apply(verdict, msg, fds, true);
                }
            }
            return Ok(());
        }
        while let Some((msg, fds)) = take_message(&mut self.app)? {
            let verdict = self.judge_outgoing(&msg, cfg, owners)?;
            self.apply(verdict, msg, fds, true);
        }
        while let Some((msg, fds)) = take_message(&mut self.bus)? {
            let verdict = self.judge_incoming(&msg, cfg, owners)?;
            self.apply(verdict, msg, fds, false);
        }
        Ok(())
    }

    fn apply(&mut self, v: Verdict, msg: Message, fds: Vec<OwnedFd>, from_app: bool) {
        let (to, back) = if from_app {
            (&mut self.bus, &mut self.app)
        } else {
            (&mut self.app, &mut self.bus)
        };
        match v {
            Verdict::Pass => to.queue(msg.data().to_vec(), fds),
            // A rewritten message must announce the descriptors that go with it; one that does
            // not (rebuilt without them) goes out as it came instead.
            Verdict::Replace(m) if m.header().unix_fds().unwrap_or(0) as usize == fds.len() => {
                to.queue(m.data().to_vec(), fds)
            }
            Verdict::Replace(_) => to.queue(msg.data().to_vec(), fds),
            Verdict::Refuse(reply) => {
                if let Some(r) = reply {
                    back.queue(r.data().to_vec(), Vec::new());
                }
            }
            Verdict::Answer(r) => back.queue(r.data().to_vec(), Vec::new()),
        }
    }

    /// Passes authentication lines from the client to the bus until `BEGIN`.
    fn auth(&mut self) -> Result<(), FrameError> {
        while let Some(end) = self.app.rbuf.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = self.app.rbuf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&line);
            let begin = text.trim_start_matches('\0').trim_end() == "BEGIN";
            self.bus.queue(line, Vec::new());
            if !begin {
                self.auth_replies += 1;
            }
            if begin {
                self.begun = true;
                return Ok(());
            }
        }
        if self.app.rbuf.len() > 16384 {
            return Err(FrameError("authentication line too long".into()));
        }
        Ok(())
    }

    fn refuse(&self, msg: &Message, name: &str, text: &str, cfg: &Config) -> Verdict {
        if cfg.log {
            let h = msg.header();
            eprintln!(
                "doppel-bus-proxy: refused {:?} {}.{} to {}: {text}",
                msg.message_type(),
                h.interface().map(|i| i.as_str()).unwrap_or("-"),
                h.member().map(|m| m.as_str()).unwrap_or("-"),
                h.destination().map(|d| d.as_str()).unwrap_or("-"),
            );
        }
        if msg.message_type() != Type::MethodCall
            || msg
                .primary_header()
                .flags()
                .contains(Flags::NoReplyExpected)
        {
            return Verdict::Refuse(None);
        }
        Verdict::Refuse(self.error_reply(msg, name, text))
    }

    /// An error from "the bus" to the client's call `msg`.
    fn error_reply(&self, msg: &Message, name: &str, text: &str) -> Option<Message> {
        let header = msg.header();
        let mut b = Message::error(&header, name).ok()?.sender(DRIVER).ok()?;
        if let Some(u) = &self.unique {
            b = b.destination(u.clone()).ok()?;
        }
        b.build(&(text,)).ok()
    }

    fn answer<B>(&self, msg: &Message, body: &B) -> Option<Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let header = msg.header();
        let mut b = Message::method_return(&header).ok()?.sender(DRIVER).ok()?;
        if let Some(u) = &self.unique {
            b = b.destination(u.clone()).ok()?;
        }
        b.build(body).ok()
    }

    /// The level the client has towards the peer or name `dest`.
    fn level_of(&self, dest: &str, cfg: &Config, owners: &Owners) -> Level {
        if Some(dest) == self.unique.as_deref() {
            return Level::Own;
        }
        if dest.starts_with(':') {
            let known = owners.level(dest, &cfg.policy);
            let learned = self.learned.get(dest).copied().unwrap_or_default();
            return known.max(learned);
        }
        cfg.policy.level(dest)
    }

    /// A message from the client.
    fn judge_outgoing(
        &mut self,
        msg: &Message,
        cfg: &Config,
        owners: &Owners,
    ) -> Result<Verdict, FrameError> {
        let h = msg.header();
        let serial = frame::serial(msg).get();
        let expects_reply = !msg
            .primary_header()
            .flags()
            .contains(Flags::NoReplyExpected);
        match msg.message_type() {
            Type::MethodCall => {
                let Some(dest) = h.destination().map(|d| d.to_string()) else {
                    return Ok(self.refuse(
                        msg,
                        "org.freedesktop.DBus.Error.AccessDenied",
                        "a call needs a destination",
                        cfg,
                    ));
                };
                if dest == DRIVER {
                    return self.driver_call(msg, cfg, owners);
                }
                let iface = h.interface().map(|i| i.to_string());
                let member = h.member().map(|m| m.to_string());
                let path = h.path().map(|p| p.to_string());
                let allowed = if dest.starts_with(':') {
                    self.level_of(&dest, cfg, owners) >= Level::Talk
                        || owners.names(&dest).iter().any(|n| {
                            cfg.policy.may_call(
                                n,
                                iface.as_deref(),
                                member.as_deref(),
                                path.as_deref(),
                            )
                        })
                } else {
                    cfg.policy.level(&dest) == Level::Own
                        || cfg.policy.may_call(
                            &dest,
                            iface.as_deref(),
                            member.as_deref(),
                            path.as_deref(),
                        )
                };
                if !allowed {
                    return Ok(self.refuse(
                        msg,
                        "org.freedesktop.DBus.Error.AccessDenied",
                        &format!("Doppel's sandbox does not let this app call {dest}"),
                        cfg,
                    ));
                }
                if expects_reply {
                    let talked = self.level_of(&dest, cfg, owners) >= Level::Talk;
                    self.pending.insert(
                        serial,
                        if talked {
                            Pending::Talked
                        } else {
                            Pending::Plain
                        },
                    );
                }
                if iface.as_deref() == Some("org.freedesktop.portal.OpenURI")
                    && member.as_deref() == Some("OpenURI")
                {
                    if let Some(d) = &cfg.record_dir {
                        // Best effort: a missed note only makes a link go to the first copy.
                        let _ = std::fs::File::create(d.join("opened-uri"));
                    }
                }
                let notify = dest == "org.freedesktop.Notifications"
                    && member.as_deref() == Some("Notify")
                    && iface
                        .as_deref()
                        .map_or(true, |i| i == "org.freedesktop.Notifications");
                if notify {
                    if let Some(m) = self.label_notification(msg, cfg) {
                        return Ok(Verdict::Replace(m));
                    }
                }
                Ok(self.rename_out(msg, &dest))
            }
            Type::MethodReturn | Type::Error => {
                let to = h.destination().map(|d| d.to_string()).unwrap_or_default();
                let Some(rs) = h.reply_serial() else {
                    return Ok(Verdict::Refuse(None));
                };
                if self.incoming.remove(&(to, rs.get())) {
                    Ok(self
                        .rename_body_out(msg)
                        .map_or(Verdict::Pass, Verdict::Replace))
                } else {
                    Ok(self.refuse(msg, "", "a reply to no call", cfg))
                }
            }
            Type::Signal => match h.destination() {
                None => Ok(self
                    .rename_body_out(msg)
                    .map_or(Verdict::Pass, Verdict::Replace)),
                Some(d) => {
                    let d = d.to_string();
                    if self.level_of(&d, cfg, owners) >= Level::Talk {
                        Ok(self.rename_out(msg, &d))
                    } else {
                        Ok(self.refuse(msg, "", "a signal to a peer it may not talk to", cfg))
                    }
                }
            },
        }
    }

    /// A call to the bus itself.
    fn driver_call(
        &mut self,
        msg: &Message,
        cfg: &Config,
        owners: &Owners,
    ) -> Result<Verdict, FrameError> {
        let h = msg.header();
        let serial = frame::serial(msg).get();
        let iface = h.interface().map(|i| i.to_string()).unwrap_or_default();
        let member = h.member().map(|m| m.to_string()).unwrap_or_default();
        let denied = |s: &Self, why: &str| {
            s.refuse(msg, "org.freedesktop.DBus.Error.AccessDenied", why, cfg)
        };
        if !matches!(
            iface.as_str(),
            "" | DRIVER
                | "org.freedesktop.DBus.Peer"
                | "org.freedesktop.DBus.Introspectable"
                | "org.freedesktop.DBus.Properties"
        ) {
            // org.freedesktop.DBus.Monitoring (BecomeMonitor), .Debug.Stats, .Verbose …
            return Ok(denied(
                self,
                &format!("{iface} is not available in Doppel's sandbox"),
            ));
        }
        let pending = match member.as_str() {
            "Hello" => Pending::Hello,
            "ListNames" | "ListActivatableNames" => Pending::Names,
            "GetId" | "Ping" | "GetMachineId" | "Introspect" | "Get" | "GetAll" | "Features" => {
                Pending::Plain
            }
            "AddMatch" | "RemoveMatch" => {
                let (rule,): (String,) = msg.body().deserialize().map_err(err)?;
                if names::is_eavesdrop_rule(&rule) {
                    return Ok(denied(
                        self,
                        "eavesdropping is not allowed in Doppel's sandbox",
                    ));
                }
                let pol = &cfg.policy;
                let names = &mut self.names;
                let new = names::rewrite_match_rule(&rule, &mut |v| {
                    (pol.level(v) == Level::Own).then(|| names.to_host(v))
                });
                self.pending.insert(serial, Pending::Plain);
                if new != rule {
                    return Ok(self
                        .rebuild(msg, &(new,))
                        .map_or(Verdict::Pass, Verdict::Replace));
                }
                return Ok(Verdict::Pass);
            }
            "RequestName" | "ReleaseName" => {
                let (name, flags): (String, Option<u32>) = if member == "RequestName" {
                    let (n, f): (String, u32) = msg.body().deserialize().map_err(err)?;
                    (n, Some(f))
                } else {
                    let (n,): (String,) = msg.body().deserialize().map_err(err)?;
                    (n, None)
                };
                if cfg.policy.level(&name) != Level::Own {
                    return Ok(denied(
                        self,
                        &format!("Doppel's sandbox does not let this app own {name}"),
                    ));
                }
                let host = self.names.to_host(&name);
                self.pending.insert(serial, Pending::Plain);
                let rebuilt = match flags {
                    Some(f) => self.rebuild(msg, &(host, f)),
                    None => self.rebuild(msg, &(host,)),
                };
                return Ok(rebuilt.map_or(Verdict::Pass, Verdict::Replace));
            }
            "GetNameOwner"
            | "NameHasOwner"
            | "StartServiceByName"
            | "ListQueuedOwners"
            | "GetConnectionUnixUser"
            | "GetConnectionUnixProcessID"
            | "GetConnectionCredentials" => {
                let body = msg.body();
                let name: String = match member.as_str() {
                    "StartServiceByName" => body.deserialize::<(String, u32)>().map_err(err)?.0,
                    _ => body.deserialize::<(String,)>().map_err(err)?.0,
                };
                let need = if member == "StartServiceByName" {
                    Level::Talk
                } else {
                    Level::See
                };
                if self.level_of(&name, cfg, owners) < need {
                    let v = match member.as_str() {
                        "NameHasOwner" => self.answer(msg, &(false,)).map(Verdict::Answer),
                        "StartServiceByName" => Some(self.refuse(
                            msg,
                            "org.freedesktop.DBus.Error.ServiceUnknown",
                            &format!("The name {name} was not provided by any .service files"),
                            cfg,
                        )),
                        _ => Some(self.refuse(
                            msg,
                            "org.freedesktop.DBus.Error.NameHasNoOwner",
                            &format!("Could not get owner of name '{name}': no such name"),
                            cfg,
                        )),
                    };
                    return Ok(v.unwrap_or(Verdict::Refuse(None)));
                }
                self.pending.insert(serial, Pending::Plain);
                if cfg.policy.level(&name) == Level::Own && !name.starts_with(':') {
                    let host = self.names.to_host(&name);
                    let rebuilt = if member == "StartServiceByName" {
                        let (_, f): (String, u32) = msg.body().deserialize().map_err(err)?;
                        self.rebuild(msg, &(host, f))
                    } else {
                        self.rebuild(msg, &(host,))
                    };
                    return Ok(rebuilt.map_or(Verdict::Pass, Verdict::Replace));
                }
                return Ok(Verdict::Pass);
            }
            // BecomeMonitor, UpdateActivationEnvironment, ReloadConfig, GetAdtAuditSessionData, …
            other => {
                return Ok(denied(
                    self,
                    &format!("{other} is not available in Doppel's sandbox"),
                ))
            }
        };
        if !msg
            .primary_header()
            .flags()
            .contains(Flags::NoReplyExpected)
        {
            self.pending.insert(serial, pending);
        }
        Ok(Verdict::Pass)
    }

    /// The same message with another body (same header, serial and flags).
    fn rebuild<B>(&self, msg: &Message, body: &B) -> Option<Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let header = msg.header().to_owned();
        zbus::message::Builder::from(header).build(body).ok()
    }

    /// Notify with the profile's name as the app name and its launcher as `desktop-entry`.
    fn label_notification(&self, msg: &Message, cfg: &Config) -> Option<Message> {
        type Notify = (
            String,
            u32,
            String,
            String,
            String,
            Vec<String>,
            HashMap<String, zbus::zvariant::OwnedValue>,
            i32,
        );
        let (app, id, icon, summary, body, actions, mut hints, timeout): Notify =
            msg.body().deserialize().ok()?;
        let app = cfg.label.clone().unwrap_or(app);
        if let Some(d) = &cfg.desktop_entry {
            hints.insert(
                "desktop-entry".into(),
                zbus::zvariant::Value::from(d.as_str())
                    .try_to_owned()
                    .ok()?,
            );
        }
        if let Some(pid) = self.host_pid {
            // The PID the app knows is its PID inside the sandbox; the server wants a real one.
            hints.insert(
                "sender-pid".into(),
                zbus::zvariant::Value::from(i64::from(pid))
                    .try_to_owned()
                    .ok()?,
            );
        }
        let header = msg.header().to_owned();
        zbus::message::Builder::from(header)
            .build(&(app, id, icon, summary, body, actions, hints, timeout))
            .ok()
    }

    /// A call or signal to `dest`, with a renamed destination and renamed names in its body.
    fn rename_out(&mut self, msg: &Message, dest: &str) -> Verdict {
        let host_dest = self.names.host_of(dest).map(str::to_owned);
        let body = self.rename_body(msg, true);
        match readdress(msg, host_dest, body) {
            Ok(Some(m)) => Verdict::Replace(m),
            _ => Verdict::Pass,
        }
    }

    fn rename_body_out(&mut self, msg: &Message) -> Option<Message> {
        self.rename_body(msg, true)
    }

    /// The message with top-level string arguments that are renamed names swapped (client
    /// names to host names going out, back coming in); None when nothing changes.
    fn rename_body(&self, msg: &Message, out: bool) -> Option<Message> {
        if self.names.is_empty() {
            return None;
        }
        let data = msg.body();
        let bytes: &[u8] = data.data();
        let mut candidates: Vec<&str> = if out {
            self.names.client_names().collect()
        } else {
            self.names.host_names().collect()
        };
        candidates.retain(|n| contains(bytes, n.as_bytes()));
        if candidates.is_empty() {
            return None;
        }
        let s: zbus::zvariant::Structure = data.deserialize().ok()?;
        let mut changed = false;
        let fields: Vec<zbus::zvariant::Value> = s
            .into_fields()
            .into_iter()
            .map(|v| match &v {
                zbus::zvariant::Value::Str(st) => {
                    let swapped = if out {
                        self.names.host_of(st.as_str())
                    } else {
                        self.names.to_client(st.as_str())
                    };
                    match swapped {
                        Some(n) => {
                            changed = true;
                            zbus::zvariant::Value::from(n.to_owned())
                        }
                        None => v,
                    }
                }
                _ => v,
            })
            .collect();
        if !changed {
            return None;
        }
        let mut sb = zbus::zvariant::StructureBuilder::new();
        for f in fields {
            sb = sb.append_field(f);
        }
        let st = sb.build().ok()?;
        let header = msg.header().to_owned();
        zbus::message::Builder::from(header).build(&st).ok()
    }

    /// A message from the bus.
    fn judge_incoming(
        &mut self,
        msg: &Message,
        cfg: &Config,
        owners: &Owners,
    ) -> Result<Verdict, FrameError> {
        let h = msg.header();
        let sender = h.sender().map(|s| s.to_string()).unwrap_or_default();
        match msg.message_type() {
            Type::MethodReturn | Type::Error => {
                let Some(rs) = h.reply_serial() else {
                    return Ok(Verdict::Refuse(None));
                };
                let Some(kind) = self.pending.remove(&rs.get()) else {
                    return Ok(Verdict::Refuse(None));
                };
                match kind {
                    Pending::Hello => {
                        if let Ok((name,)) = msg.body().deserialize::<(String,)>() {
                            self.unique = Some(name);
                        }
                        Ok(Verdict::Pass)
                    }
                    Pending::Names if msg.message_type() == Type::MethodReturn => {
                        let (all,): (Vec<String>,) = msg.body().deserialize().map_err(err)?;
                        let seen: Vec<String> = all
                            .into_iter()
                            .filter_map(|n| {
                                if let Some(c) = self.names.to_client(&n) {
                                    return Some(c.to_owned());
                                }
                                (n == DRIVER || self.level_of(&n, cfg, owners) >= Level::See)
                                    .then_some(n)
                            })
                            .collect();
                        Ok(self
                            .rebuild(msg, &(seen,))
                            .map_or(Verdict::Refuse(None), Verdict::Replace))
                    }
                    _ => {
                        if kind == Pending::Talked
                            && msg.message_type() == Type::MethodReturn
                            && sender.starts_with(':')
                        {
                            // A peer that answered a call the policy allowed may keep talking
                            // at that level (its signals, for one).
                            self.learned.entry(sender.clone()).or_insert(Level::Talk);
                        }
                        Ok(self
                            .rename_body(msg, false)
                            .map_or(Verdict::Pass, Verdict::Replace))
                    }
                }
            }
            Type::Signal if sender == DRIVER => {
                let member = h.member().map(|m| m.to_string()).unwrap_or_default();
                match member.as_str() {
                    "NameOwnerChanged" => {
                        let (name, old, new): (String, String, String) =
                            msg.body().deserialize().map_err(err)?;
                        if let Some(c) = self.names.to_client(&name).map(str::to_owned) {
                            return Ok(self
                                .rebuild(msg, &(c, old, new))
                                .map_or(Verdict::Refuse(None), Verdict::Replace));
                        }
                        if self.level_of(&name, cfg, owners) >= Level::See
                            || (name.starts_with(':') && self.learned.contains_key(&name))
                        {
                            return Ok(Verdict::Pass);
                        }
                        Ok(Verdict::Refuse(None))
                    }
                    "NameAcquired" | "NameLost" => {
                        let (name,): (String,) = msg.body().deserialize().map_err(err)?;
                        match self.names.to_client(&name).map(str::to_owned) {
                            Some(c) => Ok(self
                                .rebuild(msg, &(c,))
                                .map_or(Verdict::Refuse(None), Verdict::Replace)),
                            None => Ok(Verdict::Pass),
                        }
                    }
                    _ => Ok(Verdict::Pass),
                }
            }
            Type::Signal => {
                let iface = h.interface().map(|i| i.to_string());
                let member = h.member().map(|m| m.to_string());
                let path = h.path().map(|p| p.to_string());
                let allowed = self.level_of(&sender, cfg, owners) >= Level::Talk
                    || owners.names(&sender).iter().any(|n| {
                        cfg.policy.may_receive(
                            n,
                            iface.as_deref(),
                            member.as_deref(),
                            path.as_deref(),
                        )
                    });
                if !allowed {
                    return Ok(Verdict::Refuse(None));
                }
                Ok(self
                    .rename_body(msg, false)
                    .map_or(Verdict::Pass, Verdict::Replace))
            }
            Type::MethodCall => {
                // Calls into the app pass (the tray host, the notification server call back);
                // the app may answer each once.
                if !msg
                    .primary_header()
                    .flags()
                    .contains(Flags::NoReplyExpected)
                {
                    self.incoming.insert((sender, frame::serial(msg).get()));
                }
                let dest = h.destination().map(|d| d.to_string());
                let back = dest
                    .as_deref()
                    .and_then(|d| self.names.to_client(d))
                    .map(str::to_owned);
                let body = self.rename_body(msg, false);
                Ok(readdress(msg, back, body)
                    .map_err(err)?
                    .map_or(Verdict::Pass, Verdict::Replace))
            }
        }
    }
}

/// `msg` sent to `dest` instead of its destination and with `body`'s body (the message with
/// renamed arguments) instead of its own, each when given; None when neither is.
fn readdress(
    msg: &Message,
    dest: Option<String>,
    body: Option<Message>,
) -> zbus::Result<Option<Message>> {
    if dest.is_none() && body.is_none() {
        return Ok(None);
    }
    let base = body.unwrap_or_else(|| msg.clone());
    let mut b = zbus::message::Builder::from(base.header().to_owned());
    if let Some(d) = dest {
        b = b.destination(d)?;
    }
    let sig = base.header().signature().clone();
    let raw = base.body();
    // SAFETY: the body bytes come from a message zbus already read with this signature.
    unsafe { b.build_raw_body(raw.data(), sig, Vec::new()) }.map(Some)
}

/// Runs `data` as one message through both judges of a client with a fixed policy: the entry
/// point of the fuzz target in core/fuzz. Any outcome is fine; a panic is a bug.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let Ok(Some(len)) = frame::message_len(data) else {
        return;
    };
    let Ok(msg) = frame::parse(data[..len.min(data.len())].to_vec()) else {
        return;
    };
    let Ok(policy) = Policy::from_args(&[
        "--own=org.example.App",
        "--own=org.kde.StatusNotifierItem-*",
        "--talk=org.freedesktop.Notifications",
        "--call=org.example.Narrow=org.example.Narrow.Ok@/ok",
    ]) else {
        return;
    };
    let cfg = Config {
        policy,
        suffix: "Doppel_fuzz".into(),
        label: Some("App (Fuzz)".into()),
        desktop_entry: Some("org.doppel.Doppel.fuzz".into()),
        log: false,
        record_dir: None,
    };
    let (Ok((a, _)), Ok((b, _))) = (UnixStream::pair(), UnixStream::pair()) else {
        return;
    };
    let (Ok(app), Ok(bus)) = (Side::new(a), Side::new(b)) else {
        return;
    };
    let mut c = Client {
        app,
        bus,
        begun: true,
        auth_replies: 0,
        unique: Some(":1.7".into()),
        host_pid: Some(4242),
        names: Names::new(&cfg.suffix, Some(4242)),
        pending: HashMap::new(),
        incoming: HashSet::new(),
        learned: HashMap::new(),
    };
    let _ = c.names.to_host("org.example.App");
    let owners = Owners::default();
    let _ = c.judge_outgoing(&msg, &cfg, &owners);
    let _ = c.judge_incoming(&msg, &cfg, &owners);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The next whole message on `side`, with its descriptors.
fn take_message(side: &mut Side) -> Result<Option<(Message, Vec<OwnedFd>)>, FrameError> {
    let Some(len) = frame::message_len(&side.rbuf)? else {
        return Ok(None);
    };
    if side.rbuf.len() < len {
        return Ok(None);
    }
    let bytes: Vec<u8> = side.rbuf.drain(..len).collect();
    let msg = frame::parse(bytes)?;
    let n = msg.header().unix_fds().unwrap_or(0) as usize;
    if n > side.rfds.len() {
        return Err(FrameError(format!(
            "a message with {n} descriptors arrived with {}",
            side.rfds.len()
        )));
    }
    let fds = side.rfds.drain(..n).collect();
    Ok(Some((msg, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::{Endian, OwnedValue};

    const ME: &str = ":1.7";

    fn cfg() -> Config {
        Config {
            policy: Policy::from_args(&[
                "--own=im.dino.Dino",
                "--own=org.kde.StatusNotifierItem-*",
                "--talk=org.freedesktop.Notifications",
                "--talk=org.kde.StatusNotifierWatcher",
                "--see=org.example.Seen",
                "--call=org.example.Narrow=org.example.Narrow.Ok@/ok",
                "--talk=org.freedesktop.portal.*",
            ])
            .unwrap(),
            suffix: "Doppel_work".into(),
            label: Some("Dino (Work)".into()),
            desktop_entry: Some("org.doppel.Doppel.work".into()),
            log: false,
            record_dir: None,
        }
    }

    fn client() -> Client {
        let (a, _) = UnixStream::pair().unwrap();
        let (b, _) = UnixStream::pair().unwrap();
        Client {
            app: Side::new(a).unwrap(),
            bus: Side::new(b).unwrap(),
            begun: true,
            auth_replies: 0,
            unique: Some(ME.into()),
            host_pid: Some(4242),
            names: Names::new("Doppel_work", Some(4242)),
            pending: HashMap::new(),
            incoming: HashSet::new(),
            learned: HashMap::new(),
        }
    }

    fn driver<B>(member: &str, body: &B) -> Message
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        Message::method_call("/org/freedesktop/DBus", member)
            .unwrap()
            .destination(DRIVER)
            .unwrap()
            .interface(DRIVER)
            .unwrap()
            .build(body)
            .unwrap()
    }

    fn reply_to<B>(call: &Message, sender: &str, body: &B) -> Message
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        Message::method_return(&call.header())
            .unwrap()
            .sender(sender)
            .unwrap()
            .destination(ME)
            .unwrap()
            .build(body)
            .unwrap()
    }

    fn signal<B>(sender: &str, iface: &str, member: &str, body: &B) -> Message
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        Message::signal("/x", iface, member)
            .unwrap()
            .sender(sender)
            .unwrap()
            .build(body)
            .unwrap()
    }

    fn replaced(v: Verdict) -> Message {
        match v {
            Verdict::Replace(m) => m,
            _ => panic!("expected a rewritten message"),
        }
    }

    fn refused_with(v: Verdict) -> Option<Message> {
        match v {
            Verdict::Refuse(r) => r,
            _ => panic!("expected a refusal"),
        }
    }

    fn passes(v: &Verdict) -> bool {
        matches!(v, Verdict::Pass)
    }

    #[test]
    fn hello_gives_the_client_its_name() {
        let (cfg, owners) = (cfg(), Owners::default());
        let mut c = client();
        c.unique = None;
        let hello = driver("Hello", &());
        assert!(passes(&c.judge_outgoing(&hello, &cfg, &owners).unwrap()));
        let r = reply_to(&hello, DRIVER, &(":1.9",));
        assert!(passes(&c.judge_incoming(&r, &cfg, &owners).unwrap()));
        assert_eq!(c.unique.as_deref(), Some(":1.9"));
    }

    #[test]
    fn owned_names_are_renamed_both_ways() {
        let (cfg, owners) = (cfg(), Owners::default());
        let mut c = client();
        let req = driver("RequestName", &("im.dino.Dino", 4u32));
        let out = replaced(c.judge_outgoing(&req, &cfg, &owners).unwrap());
        let (name, flags): (String, u32) = out.body().deserialize().unwrap();
        assert_eq!((name.as_str(), flags), ("im.dino.Dino.Doppel_work", 4));
        assert_eq!(
            frame::serial(&out),
            frame::serial(&req),
            "the serial is kept"
        );
        let acquired = Message::signal("/org/freedesktop/DBus", DRIVER, "NameAcquired")
            .unwrap()
            .sender(DRIVER)
            .unwrap()
            .destination(ME)
            .unwrap()
            .build(&("im.dino.Dino.Doppel_work",))
            .unwrap();
        let back = replaced(c.judge_incoming(&acquired, &cfg, &owners).unwrap());
        let (n,): (String,) = back.body().deserialize().unwrap();
        assert_eq!(n, "im.dino.Dino");
        // Its own name, asked about, is the renamed one on the host.
        let has = driver("NameHasOwner", &("im.dino.Dino",));
        let out = replaced(c.judge_outgoing(&has, &cfg, &owners).unwrap());
        let (n,): (String,) = out.body().deserialize().unwrap();
        assert_eq!(n, "im.dino.Dino.Doppel_work");
    }

    #[test]
    fn names_it_may_not_own_are_refused_with_an_error_to_it() {
        let (cfg, owners) = (cfg(), Owners::default());
        let mut c = client();
        let req = driver("RequestName", &("org.freedesktop.Notifications", 0u32));
        let err = refused_with(c.judge_outgoing(&req, &cfg, &owners).unwrap()).unwrap();
        let h = err.header();
        assert_eq!(err.message_type(), Type::Error);
        assert_eq!(
            h.error_name().unwrap().as_str(),
            "org.freedesktop.DBus.Error.AccessDenied"
        );
        assert_eq!(h.reply_serial(), Some(frame::serial(&req)));
        assert_eq!(h.destination().unwrap().as_str(), ME);
        assert_eq!(h.sender().unwrap().as_str(), DRIVER);
    }

    #[test]
    fn eavesdropping_and_monitoring_are_refused() {
        let (cfg, owners) = (cfg(), Owners::default());
        let mut c = client();
        let m = driver("AddMatch", &("type='method_call',eavesdrop='true'",));
        assert!(refused_with(c.judge_outgoing(&m, &cfg, &owners).unwrap()).is_some());
        let mon = Message::method_call("/org/freedesktop/DBus", "BecomeMonitor")
            .unwrap()
            .destination(DRIVER)
            .unwrap()
            .interface("org.freedesktop.DBus.Monitoring")
            .unwrap()
            .build(&(Vec::<String>::new(), 0u32))
            .unwrap();
        assert!(refused_with(c.judge_outgoing(&mon, &cfg, &owners).unwrap()).is_some());
        let env = driver(
            "UpdateActivationEnvironment",
            &(HashMap::<String, String>::new(),),
        );
        assert!(refused_with(c.judge_outgoing(&env, &cfg, &owners).unwrap()).is_some());
        // A plain match on its own name is rewritten, not refused.
        let m = driver("AddMatch", &("type='signal',arg0='im.dino.Dino'",));
        let out = replaced(c.judge_outgoing(&m, &cfg, &owners).unwrap());
        let (rule,): (String,) = out.body().deserialize().unwrap();
        assert_eq!(rule, "type='signal',arg0='im.dino.Dino.Doppel_work'");
    }

    #[test]
    fn calls_follow_the_policy() {
        let (cfg, owners) = (cfg(), Owners::default());
        let mut c = client();
        let call = |dest: &str, iface: &str, member: &str, path: &str| {
            Message::method_call(path, member)
                .unwrap()
                .destination(dest)
                .unwrap()
                .interface(iface)
                .unwrap()
                .build(&())
                .unwrap()
        };
        let denied = call("org.other.App", "org.other.App", "Do", "/");
        assert!(refused_with(c.judge_outgoing(&denied, &cfg, &owners).unwrap()).is_some());
        let narrow_ok = call("org.example.Narrow", "org.example.Narrow", "Ok", "/ok");
        assert!(passes(
            &c.judge_outgoing(&narrow_ok, &cfg, &owners).unwrap()
        ));
        let narrow_no = call("org.example.Narrow", "org.example.Narrow", "Other", "/ok");
        assert!(refused_with(c.judge_outgoing(&narrow_no, &cfg, &owners).unwrap()).is_some());
        // Seen is not talked to.
        let seen = call("org.example.Seen", "org.example.Seen", "Do", "/");
        assert!(refused_with(c.judge_outgoing(&seen, &cfg, &owners).unwrap()).is_some());
        // A unique name is judged by the names it owns.
        let direct = call(
            ":1.99",
            "org.freedesktop.Notifications",
            "GetServerInformation",
            "/",
        );
        assert!(refused_with(c.judge_outgoing(&direct, &cfg, &owners).unwrap()).is_some());
        owners.note("org.freedesktop.Notifications", ":1.99");
        assert!(passes(&c.judge_outgoing(&direct, &cfg, &owners).unwrap()));
        // NameHasOwner of a name it may not see says no, without asking the bus.
        let has = driver("NameHasOwner", &("org.other.App",));
        match c.judge_outgoing(&has, &cfg, &owners).unwrap() {
            Verdict::Answer(a) => {
                let (b,): (bool,) = a.body().deserialize().unwrap();
                assert!(!b);
            }
            _ => panic!("NameHasOwner of a hidden name must be answered by the proxy"),
        }
    }

    #[test]
    fn replies_and_signals_are_let_in_only_when_due() {
        let (cfg, owners) = (cfg(), Owners::default());
        let mut c = client();
        let unasked = Message::method_return(&driver("GetId", &()).header())
            .unwrap()
            .sender(":1.99")
            .unwrap()
            .build(&())
            .unwrap();
        assert!(refused_with(c.judge_incoming(&unasked, &cfg, &owners).unwrap()).is_none());
        let s = signal(
            ":1.99",
            "org.freedesktop.Notifications",
            "ActionInvoked",
            &(5u32, "default"),
        );
        assert!(refused_with(c.judge_incoming(&s, &cfg, &owners).unwrap()).is_none());
        owners.note("org.freedesktop.Notifications", ":1.99");
        assert!(passes(&c.judge_incoming(&s, &cfg, &owners).unwrap()));
        // A call into the app passes, and the app may answer it once.
        let call = Message::method_call("/StatusNotifierItem", "Activate")
            .unwrap()
            .sender(":1.50")
            .unwrap()
            .destination(ME)
            .unwrap()
            .build(&(0i32, 0i32))
            .unwrap();
        assert!(passes(&c.judge_incoming(&call, &cfg, &owners).unwrap()));
        let answer = Message::method_return(&call.header())
            .unwrap()
            .build(&())
            .unwrap();
        assert!(passes(&c.judge_outgoing(&answer, &cfg, &owners).unwrap()));
        assert!(refused_with(c.judge_outgoing(&answer, &cfg, &owners).unwrap()).is_none());
    }

    #[test]
    fn list_names_shows_only_what_it_may_see() {
        let (cfg, owners) = (cfg(), Owners::default());
        let mut c = client();
        let _ = c.names.to_host("im.dino.Dino");
        let list = driver("ListNames", &());
        assert!(passes(&c.judge_outgoing(&list, &cfg, &owners).unwrap()));
        let all = vec![
            DRIVER,
            ME,
            ":1.99",
            "org.other",
            "org.example.Seen",
            "im.dino.Dino.Doppel_work",
            "im.dino.Dino",
        ];
        let r = reply_to(&list, DRIVER, &(all,));
        let out = replaced(c.judge_incoming(&r, &cfg, &owners).unwrap());
        let (names,): (Vec<String>,) = out.body().deserialize().unwrap();
        // The host copy's im.dino.Dino is someone else's: the clone sees its own under that name.
        assert_eq!(
            names,
            [
                DRIVER,
                ME,
                "org.example.Seen",
                "im.dino.Dino",
                "im.dino.Dino"
            ]
        );
    }

    #[test]
    fn notifications_are_labelled_with_the_profile() {
        let (cfg, owners) = (cfg(), Owners::default());
        let mut c = client();
        let notify = Message::method_call("/org/freedesktop/Notifications", "Notify")
            .unwrap()
            .destination("org.freedesktop.Notifications")
            .unwrap()
            .interface("org.freedesktop.Notifications")
            .unwrap()
            .build(&(
                "Dino",
                0u32,
                "im.dino.Dino",
                "Hi",
                "there",
                vec!["default", "Open"],
                HashMap::<String, OwnedValue>::new(),
                -1i32,
            ))
            .unwrap();
        let out = replaced(c.judge_outgoing(&notify, &cfg, &owners).unwrap());
        type N = (
            String,
            u32,
            String,
            String,
            String,
            Vec<String>,
            HashMap<String, OwnedValue>,
            i32,
        );
        let (app, _, icon, summary, _, actions, hints, _): N = out.body().deserialize().unwrap();
        assert_eq!(app, "Dino (Work)");
        assert_eq!((icon.as_str(), summary.as_str()), ("im.dino.Dino", "Hi"));
        assert_eq!(actions, ["default", "Open"]);
        assert_eq!(
            String::try_from(hints["desktop-entry"].clone()).unwrap(),
            "org.doppel.Doppel.work"
        );
        assert_eq!(i64::try_from(hints["sender-pid"].clone()).unwrap(), 4242);
    }

    #[test]
    fn tray_item_names_carry_the_host_pid() {
        let (cfg, owners) = (cfg(), Owners::default());
        let mut c = client();
        let req = driver("RequestName", &("org.kde.StatusNotifierItem-2-1", 0u32));
        let out = replaced(c.judge_outgoing(&req, &cfg, &owners).unwrap());
        let (n, _): (String, u32) = out.body().deserialize().unwrap();
        assert_eq!(n, "org.kde.StatusNotifierItem-4242-1");
        let reg = Message::method_call("/StatusNotifierWatcher", "RegisterStatusNotifierItem")
            .unwrap()
            .destination("org.kde.StatusNotifierWatcher")
            .unwrap()
            .interface("org.kde.StatusNotifierWatcher")
            .unwrap()
            .build(&("org.kde.StatusNotifierItem-2-1",))
            .unwrap();
        let out = replaced(c.judge_outgoing(&reg, &cfg, &owners).unwrap());
        let (n,): (String,) = out.body().deserialize().unwrap();
        assert_eq!(n, "org.kde.StatusNotifierItem-4242-1");
        owners.note("org.kde.StatusNotifierWatcher", ":1.3");
        let s = signal(
            ":1.3",
            "org.kde.StatusNotifierWatcher",
            "StatusNotifierItemRegistered",
            &("org.kde.StatusNotifierItem-4242-1",),
        );
        let back = replaced(c.judge_incoming(&s, &cfg, &owners).unwrap());
        let (n,): (String,) = back.body().deserialize().unwrap();
        assert_eq!(n, "org.kde.StatusNotifierItem-2-1");
    }

    #[test]
    fn big_endian_messages_are_judged_and_renamed_too() {
        let (cfg, owners) = (cfg(), Owners::default());
        let mut c = client();
        let req = Message::method_call("/org/freedesktop/DBus", "RequestName")
            .unwrap()
            .destination(DRIVER)
            .unwrap()
            .interface(DRIVER)
            .unwrap()
            .endian(Endian::Big)
            .build(&("im.dino.Dino", 0u32))
            .unwrap();
        let parsed = frame::parse(req.data().to_vec()).unwrap();
        let out = replaced(c.judge_outgoing(&parsed, &cfg, &owners).unwrap());
        assert_eq!(
            out.data()[0],
            b'B',
            "the rewritten message keeps its byte order"
        );
        let (n, _): (String, u32) = out.body().deserialize().unwrap();
        assert_eq!(n, "im.dino.Dino.Doppel_work");
    }

    #[test]
    fn opening_a_web_page_is_noted_for_the_link_router() {
        let owners = Owners::default();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = cfg();
        cfg.record_dir = Some(dir.path().to_owned());
        let mut c = client();
        let open = Message::method_call("/org/freedesktop/portal/desktop", "OpenURI")
            .unwrap()
            .destination("org.freedesktop.portal.Desktop")
            .unwrap()
            .interface("org.freedesktop.portal.OpenURI")
            .unwrap()
            .build(&(
                "",
                "https://example.org/sso",
                HashMap::<String, OwnedValue>::new(),
            ))
            .unwrap();
        assert!(!dir.path().join("opened-uri").exists());
        assert!(passes(&c.judge_outgoing(&open, &cfg, &owners).unwrap()));
        assert!(dir.path().join("opened-uri").exists());
    }

    /// Mutated messages (a deterministic sample; `cargo fuzz` in core/fuzz goes further) are
    /// refused or judged, never a panic.
    #[test]
    fn mangled_messages_never_panic() {
        let (cfg, owners) = (cfg(), Owners::default());
        let seeds = [
            driver("RequestName", &("im.dino.Dino", 4u32))
                .data()
                .to_vec(),
            driver("AddMatch", &("type='signal',arg0='im.dino.Dino'",))
                .data()
                .to_vec(),
            signal(":1.3", "a.b", "C", &("im.dino.Dino.Doppel_work", 7u32))
                .data()
                .to_vec(),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut b = seeds[(next() % 3) as usize].clone();
            for _ in 0..=(next() % 4) {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            if next() % 5 == 0 {
                b.truncate((next() as usize) % b.len());
            }
            if frame::message_len(&b).is_err() {
                continue;
            }
            if let Ok(m) = frame::parse(b) {
                let mut c = client();
                let _ = c.judge_outgoing(&m, &cfg, &owners);
                let _ = c.judge_incoming(&m, &cfg, &owners);
            }
        }
    }
}
