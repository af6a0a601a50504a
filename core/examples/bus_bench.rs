//! A small D-Bus benchmark client and service, for benches/busproxy.sh: the round-trip latency
//! and the throughput of small method calls over a bus address, direct or through a proxy.
//!
//! ```text
//! bus_bench serve ADDRESS
//!     owns org.doppel.Bench on the bus and answers Echo(s) -> s; prints "ready" once it owns
//!     the name, then serves until killed
//! bus_bench latency ADDRESS [--target echo|bus] [--calls N] [--warmup W]
//!     N calls one after another; prints JSON: median and p99 in µs
//! bus_bench throughput ADDRESS [--target echo|bus] [--calls M] [--window K] [--warmup W]
//!     M calls over one connection with K outstanding at a time; prints JSON: calls/s
//! bus_bench hold ADDRESS
//!     connects, makes one call, prints "connected", and stays connected until stdin closes
//! bus_bench parse - [--calls N]
//!     no bus: times doppel-bus-proxy's framing of one Echo call and one reply (what its relay
//!     does to every message before judging it); prints JSON: ns per message
//! ```
//!
//! `--target echo` calls org.doppel.Bench.Echo("hello") on the service; `--target bus` calls
//! org.freedesktop.DBus.GetId on the bus itself (no service involved).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use zbus::blocking::{Connection, MessageIterator};
use zbus::message::{Message, Type};

const NAME: &str = "org.doppel.Bench";
const PATH: &str = "/org/doppel/Bench";
const PAYLOAD: &str = "hello";

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bus_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str =
    "usage: bus_bench serve|latency|throughput|hold|parse ADDRESS [--target echo|bus] \
                     [--calls N] [--window K] [--warmup W]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Echo,
    Bus,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Echo => "echo",
            Target::Bus => "bus",
        }
    }
}

struct Opts {
    target: Target,
    calls: usize,
    window: usize,
    warmup: usize,
}

fn parse_opts(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        target: Target::Echo,
        calls: 5000,
        window: 32,
        warmup: 200,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        let mut value = || -> Res<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().cloned().ok_or(format!("{key} wants a value")),
            }
        };
        let number = |v: String| -> Res<usize> {
            v.parse()
                .map_err(|_| format!("{key} wants a number, not {v:?}"))
        };
        match key {
            "--target" => {
                o.target = match value()?.as_str() {
                    "echo" => Target::Echo,
                    "bus" => Target::Bus,
                    other => return Err(format!("--target is echo or bus, not {other:?}")),
                }
            }
            "--calls" => o.calls = number(value()?)?,
            "--window" => o.window = number(value()?)?,
            "--warmup" => o.warmup = number(value()?)?,
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if o.calls == 0 || o.window == 0 {
        return Err("--calls and --window must be at least 1".into());
    }
    Ok(o)
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(address)) = (args.first(), args.get(1)) else {
        return Err(USAGE.into());
    };
    let opts = parse_opts(&args[2..])?;
    match mode.as_str() {
        "serve" => serve(address),
        "latency" => latency(address, &opts),
        "throughput" => throughput(address, &opts),
        "hold" => hold(address),
        "parse" => parse(&opts),
        other => Err(format!("unknown mode {other:?}\n{USAGE}")),
    }
}

fn connect(address: &str) -> Res<Connection> {
    zbus::blocking::connection::Builder::address(address)
        .and_then(|b| b.build())
        .map_err(|e| format!("cannot connect to {address}: {e}"))
}

/// The service: Echo(s) -> s, answered straight from the message stream (no object server, so
/// that the service costs as little as a zbus peer can).
fn serve(address: &str) -> Res<()> {
    let conn = connect(address)?;
    // Subscribe before owning the name: no call can arrive unseen.
    let messages = MessageIterator::from(&conn);
    conn.request_name(NAME)
        .map_err(|e| format!("cannot own {NAME}: {e}"))?;
    println!("ready");
    std::io::stdout()
        .flush()
        .map_err(|e| format!("stdout: {e}"))?;
    for msg in messages {
        let msg = msg.map_err(|e| format!("reading from the bus: {e}"))?;
        if msg.message_type() != Type::MethodCall {
            continue;
        }
        let header = msg.header();
        let echo = header.member().is_some_and(|m| m.as_str() == "Echo")
            && header.interface().map_or(true, |i| i.as_str() == NAME);
        let sent = if echo {
            match msg.body().deserialize::<(String,)>() {
                Ok(reply) => conn.reply(&header, &reply),
                Err(e) => conn.reply_dbus_error(
                    &header,
                    zbus::fdo::Error::InvalidArgs(format!("Echo wants one string: {e}")),
                ),
            }
        } else {
            conn.reply_dbus_error(
                &header,
                zbus::fdo::Error::UnknownMethod("org.doppel.Bench has only Echo".into()),
            )
        };
        sent.map_err(|e| format!("cannot reply: {e}"))?;
    }
    Ok(())
}

/// One call's message, to be sent as it is.
fn call_message(target: Target) -> Res<Message> {
    let built = match target {
        Target::Echo => Message::method_call(PATH, "Echo")
            .and_then(|b| b.destination(NAME))
            .and_then(|b| b.interface(NAME))
            .and_then(|b| b.build(&(PAYLOAD,))),
        Target::Bus => Message::method_call("/org/freedesktop/DBus", "GetId")
            .and_then(|b| b.destination("org.freedesktop.DBus"))
            .and_then(|b| b.interface("org.freedesktop.DBus"))
            .and_then(|b| b.build(&())),
    };
    built.map_err(|e| format!("cannot build a call: {e}"))
}

/// One blocking call; checks the answer.
fn call(conn: &Connection, target: Target) -> Res<()> {
    match target {
        Target::Echo => {
            let reply = conn
                .call_method(Some(NAME), PATH, Some(NAME), "Echo", &(PAYLOAD,))
                .map_err(|e| format!("Echo failed: {e}"))?;
            let (s,): (String,) = reply
                .body()
                .deserialize()
                .map_err(|e| format!("Echo's reply: {e}"))?;
            if s != PAYLOAD {
                return Err(format!("Echo answered {s:?}"));
            }
        }
        Target::Bus => {
            let reply = conn
                .call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    "GetId",
                    &(),
                )
                .map_err(|e| format!("GetId failed: {e}"))?;
            let (_,): (String,) = reply
                .body()
                .deserialize()
                .map_err(|e| format!("GetId's reply: {e}"))?;
        }
    }
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn latency(address: &str, o: &Opts) -> Res<()> {
    let conn = connect(address)?;
    for _ in 0..o.warmup {
        call(&conn, o.target)?;
    }
    let mut samples = Vec::with_capacity(o.calls);
    for _ in 0..o.calls {
        let t = Instant::now();
        call(&conn, o.target)?;
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    let n = samples.len();
    let median = if n % 2 == 1 {
        micros(samples[n / 2])
    } else {
        (micros(samples[n / 2 - 1]) + micros(samples[n / 2])) / 2.0
    };
    // The nearest-rank 99th percentile.
    let p99 = micros(samples[(n * 99).div_ceil(100).max(1) - 1]);
    let mean = samples.iter().map(|d| micros(*d)).sum::<f64>() / n as f64;
    println!(
        "{{\"mode\":\"latency\",\"target\":\"{}\",\"calls\":{n},\"median_us\":{median:.2},\
         \"p99_us\":{p99:.2},\"mean_us\":{mean:.2}}}",
        o.target.name()
    );
    Ok(())
}

/// Sends `n` calls with at most `window` outstanding; returns when every reply is in.
fn pipelined(
    conn: &Connection,
    messages: &mut MessageIterator,
    target: Target,
    n: usize,
    window: usize,
) -> Res<()> {
    let mut outstanding: HashSet<NonZeroU32> = HashSet::with_capacity(window);
    let (mut sent, mut done) = (0usize, 0usize);
    let send = |outstanding: &mut HashSet<NonZeroU32>| -> Res<()> {
        let m = call_message(target)?;
        outstanding.insert(m.primary_header().serial_num());
        conn.send(&m).map_err(|e| format!("cannot send: {e}"))
    };
    while sent < n.min(window) {
        send(&mut outstanding)?;
        sent += 1;
    }
    while done < n {
        let msg = messages
            .next()
            .ok_or("the connection closed")?
            .map_err(|e| format!("reading replies: {e}"))?;
        let kind = msg.message_type();
        if kind != Type::MethodReturn && kind != Type::Error {
            continue;
        }
        let header = msg.header();
        let Some(rs) = header.reply_serial() else {
            continue;
        };
        if !outstanding.remove(&rs) {
            continue;
        }
        if kind == Type::Error {
            let name = header.error_name().map(|e| e.to_string());
            return Err(format!(
                "a call failed: {}",
                name.as_deref().unwrap_or("(no error name)")
            ));
        }
        done += 1;
        if sent < n {
            send(&mut outstanding)?;
            sent += 1;
        }
    }
    Ok(())
}

fn throughput(address: &str, o: &Opts) -> Res<()> {
    let conn = connect(address)?;
    // Created before the first call goes out, so that no reply is missed.
    let mut messages = MessageIterator::from(&conn);
    if o.warmup > 0 {
        pipelined(&conn, &mut messages, o.target, o.warmup, o.window)?;
    }
    let cpu0 = own_cpu_ns();
    let t = Instant::now();
    pipelined(&conn, &mut messages, o.target, o.calls, o.window)?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = own_cpu_ns().saturating_sub(cpu0);
    println!(
        "{{\"mode\":\"throughput\",\"target\":\"{}\",\"calls\":{},\"window\":{},\
         \"seconds\":{secs:.4},\"calls_per_s\":{:.1},\"client_cpu_ns\":{cpu}}}",
        o.target.name(),
        o.calls,
        o.window,
        o.calls as f64 / secs
    );
    Ok(())
}

/// The proxy's per-message work without the sockets: `frame::parse` (the copy of the bytes
/// into their own buffer, the header-field check, zbus's header parse), zbus's header parse
/// alone, the header reads the relay's judge makes, and the copy the relay queues for writing.
fn parse(o: &Opts) -> Res<()> {
    use doppel_core::busproxy::frame;
    let call = call_message(Target::Echo)?;
    let reply = Message::method_return(&call.header())
        .and_then(|b| b.sender(":1.5"))
        .and_then(|b| b.destination(":1.9"))
        .and_then(|b| b.build(&(PAYLOAD,)))
        .map_err(|e| format!("cannot build a reply: {e}"))?;
    let mut out = String::new();
    for (name, msg) in [("call", &call), ("reply", &reply)] {
        let bytes = msg.data().to_vec();
        let n = o.calls.max(1);
        let time = |f: &mut dyn FnMut() -> Res<usize>| -> Res<f64> {
            let mut sink = 0usize;
            for _ in 0..n / 10 {
                sink = sink.wrapping_add(f()?);
            }
            let t = Instant::now();
            for _ in 0..n {
                sink = sink.wrapping_add(f()?);
            }
            let ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
            std::hint::black_box(sink);
            Ok(ns)
        };
        let copy = time(&mut || Ok(std::hint::black_box(bytes.clone()).len()))?;
        let parsed = time(&mut || {
            let m = frame::parse(bytes.clone()).map_err(|e| e.to_string())?;
            Ok(m.data().len())
        })?;
        // zbus's own part of that: its header parse alone, on the same bytes.
        let zbus_only = time(&mut || {
            let data = zbus::zvariant::serialized::Data::new(
                bytes.clone(),
                zbus::zvariant::serialized::Context::new_dbus(zbus::zvariant::Endian::Little, 0),
            );
            // SAFETY: the bytes are a message zbus itself has just built.
            let m = unsafe { Message::from_bytes(data) }.map_err(|e| e.to_string())?;
            Ok(m.data().len())
        })?;
        let m = frame::parse(bytes.clone()).map_err(|e| e.to_string())?;
        let judged = time(&mut || {
            let h = m.header();
            let fields = [
                h.destination().map(|d| d.to_string()),
                h.interface().map(|i| i.to_string()),
                h.member().map(|x| x.to_string()),
                h.path().map(|p| p.to_string()),
                h.sender().map(|s| s.to_string()),
            ];
            let serial = m.primary_header().serial_num().get() as usize;
            Ok(fields.iter().flatten().map(String::len).sum::<usize>() + serial)
        })?;
        let queued = time(&mut || Ok(std::hint::black_box(m.data().to_vec()).len()))?;
        out.push_str(&format!(
            "{}\"{name}\":{{\"bytes\":{},\"copy_ns\":{copy:.0},\"parse_ns\":{parsed:.0},\
             \"zbus_from_bytes_ns\":{zbus_only:.0},\"header_reads_ns\":{judged:.0},\"queue_copy_ns\":{queued:.0}}}",
            if out.is_empty() { "" } else { "," },
            bytes.len()
        ));
    }
    println!("{{\"mode\":\"parse\",{out}}}");
    Ok(())
}

/// CPU time of every thread of this process so far, in ns (0 where /proc cannot tell).
fn own_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// An idle client, for measuring a proxy's memory with one connection open.
fn hold(address: &str) -> Res<()> {
    let conn = connect(address)?;
    call(&conn, Target::Echo)?;
    println!("connected");
    std::io::stdout()
        .flush()
        .map_err(|e| format!("stdout: {e}"))?;
    let mut sink = Vec::new();
    std::io::stdin()
        .read_to_end(&mut sink)
        .map_err(|e| format!("stdin: {e}"))?;
    drop(conn);
    Ok(())
}
