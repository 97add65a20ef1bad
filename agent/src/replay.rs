//! A round's events as the agent keeps them until its coordinator acknowledges them: each
//! numbered from 1 in the order sent, held in memory up to a bound and spilled to a file
//! in the agent's state directory past it, read again from any sequence number when a
//! coordinator resumes the stream after its connection broke. Also when the agent last
//! heard from the round's coordinator (a stream opened, an acknowledgement).
//!
//! Generic over the event's encoding (any protobuf message): the gRPC adapter keeps its
//! wire events here; nothing here names a generated type.

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Events kept in memory per round before the unacknowledged ones go to the spill file.
pub const MEMORY_EVENTS: usize = 16_384;

/// Why a round's events cannot be read from where the coordinator asks.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the round's spill file {path} cannot be read: {message}")]
    Spill { path: PathBuf, message: String },
}

/// One round's events, numbered.
#[derive(Debug)]
pub struct RoundLog<T> {
    state: Mutex<State<T>>,
    /// Told on every new event and at the end.
    changed: Notify,
    memory_events: usize,
    spill_path: PathBuf,
}

#[derive(Debug)]
struct State<T> {
    /// The sequence number the next event gets.
    next: u64,
    /// Every event up to this one is held by the coordinator.
    acked: u64,
    /// Events after the spilled ones, in order.
    memory: VecDeque<(u64, T)>,
    /// The spill file holds the events from `acked + 1` (those before were acknowledged)
    /// up to `spilled_to` (inclusive); 0: no file.
    spilled_to: u64,
    /// No event will come after the last one.
    ended: bool,
    last_heard: Instant,
    /// The stream reading the log now (each attach takes the next number; an older reader
    /// stops).
    reader: u64,
    /// The spill could not be written: the error, once.
    spill_error: Option<String>,
}

/// What a reader gets from the log.
#[derive(Debug)]
pub enum Read<T> {
    /// Events after the asked sequence number, in order.
    Events(Vec<(u64, T)>),
    /// None yet: wait for [`RoundLog::changed`].
    Wait,
    /// The round ended and the reader has it all.
    End,
    /// A newer stream reads the log now.
    Superseded,
}

impl<T: prost::Message + Default + Clone> RoundLog<T> {
    /// An empty log whose spill file (made only when needed) is `spill_path`.
    pub fn new(spill_path: PathBuf, memory_events: usize) -> RoundLog<T> {
        RoundLog {
            state: Mutex::new(State {
                next: 1,
                acked: 0,
                memory: VecDeque::new(),
                spilled_to: 0,
                ended: false,
                last_heard: Instant::now(),
                reader: 0,
                spill_error: None,
            }),
            changed: Notify::new(),
            memory_events: memory_events.max(1),
            spill_path,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event; its sequence number. Past the memory bound, the events in memory
    /// go to the spill file (if it cannot be written, they stay in memory, and the error is
    /// returned once).
    pub fn push(&self, event: T) -> (u64, Option<String>) {
        let mut s = self.lock();
        let seq = s.next;
        s.next += 1;
        s.memory.push_back((seq, event));
        let mut error = None;
        if s.memory.len() > self.memory_events && s.spill_error.is_none() {
            match self.spill(&mut s) {
                Ok(()) => {}
                Err(e) => {
                    s.spill_error = Some(e.clone());
                    error = Some(e);
                }
            }
        }
        drop(s);
        self.changed.notify_waiters();
        (seq, error)
    }

    /// Moves the events in memory to the end of the spill file.
    fn spill(&self, s: &mut State<T>) -> Result<(), String> {
        let describe = |e: std::io::Error| format!("{}: {e}", self.spill_path.display());
        if let Some(dir) = self.spill_path.parent() {
            std::fs::create_dir_all(dir).map_err(describe)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spill_path)
            .map_err(describe)?;
        let mut out = std::io::BufWriter::new(file);
        for (seq, e) in &s.memory {
            let bytes = e.encode_to_vec();
            out.write_all(&seq.to_le_bytes()).map_err(describe)?;
            out.write_all(&(bytes.len() as u32).to_le_bytes())
                .map_err(describe)?;
            out.write_all(&bytes).map_err(describe)?;
        }
        out.flush().map_err(describe)?;
        if let Some((last, _)) = s.memory.back() {
            s.spilled_to = *last;
        }
        s.memory.clear();
        Ok(())
    }

    /// No event comes after the last one pushed.
    pub fn end(&self) {
        self.lock().ended = true;
        self.changed.notify_waiters();
    }

    /// The coordinator holds every event up to `seq`: forgets them (and the spill file once
    /// all it holds is acknowledged). Counts as hearing from it.
    pub fn ack(&self, seq: u64) {
        let mut s = self.lock();
        s.last_heard = Instant::now();
        let seq = seq.min(s.next - 1);
        if seq <= s.acked {
            return;
        }
        s.acked = seq;
        while s.memory.front().is_some_and(|(q, _)| *q <= seq) {
            s.memory.pop_front();
        }
        if s.spilled_to != 0 && seq >= s.spilled_to {
            s.spilled_to = 0;
            let _ = std::fs::remove_file(&self.spill_path);
        }
    }

    /// A stream starts reading: it heard from the coordinator; the number that identifies
    /// this reader (older ones are superseded).
    pub fn attach(&self) -> u64 {
        let mut s = self.lock();
        s.last_heard = Instant::now();
        s.reader += 1;
        let r = s.reader;
        drop(s);
        // Wakes an older reader, which then finds itself superseded.
        self.changed.notify_waiters();
        r
    }

    /// How long since the agent last heard from the round's coordinator.
    pub fn silent_for(&self) -> Duration {
        self.lock().last_heard.elapsed()
    }

    /// Every event was pushed and the coordinator holds them all.
    pub fn done(&self) -> bool {
        let s = self.lock();
        s.ended && s.acked + 1 >= s.next
    }

    /// The events after `after` for reader `reader`, at most `max` of them.
    pub fn read(&self, reader: u64, after: u64, max: usize) -> Result<Read<T>, ReplayError> {
        let s = self.lock();
        if s.reader != reader {
            return Ok(Read::Superseded);
        }
        // What the coordinator acknowledged it holds; it never asks from before that.
        let after = after.max(s.acked);
        if after + 1 >= s.next {
            return Ok(if s.ended { Read::End } else { Read::Wait });
        }
        if s.spilled_to != 0 && after < s.spilled_to {
            let (path, spilled_to) = (self.spill_path.clone(), s.spilled_to);
            drop(s);
            let events = read_spill::<T>(&path, after, spilled_to, max)?;
            return Ok(Read::Events(events));
        }
        let events: Vec<(u64, T)> = s
            .memory
            .iter()
            .filter(|(q, _)| *q > after)
            .take(max)
            .cloned()
            .collect();
        Ok(if events.is_empty() {
            Read::Wait
        } else {
            Read::Events(events)
        })
    }

    /// Resolves when an event is pushed, the log ends or a newer reader attaches (create it
    /// before [`RoundLog::read`], so that nothing in between is missed).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Removes the spill file, if any (the round is forgotten).
    pub fn discard(&self) {
        let mut s = self.lock();
        s.memory.clear();
        if s.spilled_to != 0 {
            s.spilled_to = 0;
            let _ = std::fs::remove_file(&self.spill_path);
        }
    }
}

/// The spilled events after `after` (up to `to`), at most `max`.
fn read_spill<T: prost::Message + Default>(
    path: &Path,
    after: u64,
    to: u64,
    max: usize,
) -> Result<Vec<(u64, T)>, ReplayError> {
    let fail = |message: String| ReplayError::Spill {
        path: path.to_owned(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut input = std::io::BufReader::new(file);
    let mut out = Vec::new();
    let mut head = [0u8; 12];
    while out.len() < max {
        match input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(fail(e.to_string())),
        }
        let seq = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[8..].try_into().unwrap_or_default()) as usize;
        let mut body = vec![0u8; len];
        input
            .read_exact(&mut body)
            .map_err(|e| fail(format!("event {seq} is cut short: {e}")))?;
        if seq > to {
            break;
        }
        if seq > after {
            let e = T::decode(body.as_slice())
                .map_err(|e| fail(format!("event {seq} does not decode: {e}")))?;
            out.push((seq, e));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in event: any protobuf message will do.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Ev {
        #[prost(uint64, tag = "1")]
        n: u64,
        #[prost(string, tag = "2")]
        text: String,
    }

    fn ev(n: u64) -> Ev {
        Ev {
            n,
            text: format!("event {n}"),
        }
    }

    fn drain(log: &RoundLog<Ev>, reader: u64, mut after: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        loop {
            match log.read(reader, after, 7).expect("reads") {
                Read::Events(es) => {
                    for (q, e) in es {
                        assert_eq!(e, ev(q), "event {q} as pushed");
                        seen.push(q);
                        after = q;
                    }
                }
                Read::Wait | Read::End => return seen,
                Read::Superseded => panic!("superseded"),
            }
        }
    }

    fn spill_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "kvbench-replay-test-{}-{name}.spill",
            std::process::id()
        ))
    }

    proptest::proptest! {
        /// Whatever is pushed, acknowledged and spilled, a reader resuming after any
        /// sequence the coordinator holds gets every later event once, in order.
        #[test]
        fn a_resumed_reader_gets_every_later_event_once(
            pushes in 1u64..200,
            memory in 1usize..40,
            acks in proptest::collection::vec(0u64..200, 0..6),
            resume_after in 0u64..200,
        ) {
            let path = spill_path(&format!("prop-{pushes}-{memory}-{resume_after}"));
            let log = RoundLog::<Ev>::new(path.clone(), memory);
            let mut acked = 0;
            for n in 1..=pushes {
                let (seq, err) = log.push(ev(n));
                proptest::prop_assert_eq!(seq, n);
                proptest::prop_assert!(err.is_none());
                for a in &acks {
                    if *a == n {
                        log.ack(*a);
                        acked = acked.max(*a);
                    }
                }
            }
            log.end();
            // The coordinator holds at least what it acknowledged.
            let after = resume_after.min(pushes).max(acked);
            let reader = log.attach();
            let seen = drain(&log, reader, after);
            proptest::prop_assert_eq!(seen, ((after + 1)..=pushes).collect::<Vec<_>>());
            log.ack(pushes);
            proptest::prop_assert!(log.done());
            proptest::prop_assert!(!path.exists(), "the spill file is gone once all is held");
        }
    }

    #[test]
    fn past_the_memory_bound_events_go_to_the_spill_file() {
        let path = spill_path("bound");
        let log = RoundLog::<Ev>::new(path.clone(), 10);
        for n in 1..=25 {
            log.push(ev(n));
        }
        assert!(path.exists(), "spilled");
        assert!(log.lock().memory.len() <= 10, "memory stays bounded");
        let reader = log.attach();
        assert_eq!(drain(&log, reader, 0), (1..=25).collect::<Vec<_>>());
        log.ack(11);
        assert!(path.exists(), "events 12 to 22 are still only in the file");
        assert_eq!(drain(&log, reader, 11), (12..=25).collect::<Vec<_>>());
        log.ack(22);
        assert!(!path.exists());
        log.discard();
    }

    #[test]
    fn a_newer_reader_supersedes_the_older() {
        let log = RoundLog::<Ev>::new(spill_path("readers"), 10);
        log.push(ev(1));
        let old = log.attach();
        let new = log.attach();
        assert!(matches!(log.read(old, 0, 10), Ok(Read::Superseded)));
        assert!(matches!(log.read(new, 0, 10), Ok(Read::Events(e)) if e.len() == 1));
        assert!(matches!(log.read(new, 1, 10), Ok(Read::Wait)));
        log.end();
        assert!(matches!(log.read(new, 1, 10), Ok(Read::End)));
    }

    #[test]
    fn acknowledgements_count_as_hearing_from_the_coordinator() {
        let log = RoundLog::<Ev>::new(spill_path("heard"), 10);
        std::thread::sleep(Duration::from_millis(30));
        assert!(log.silent_for() >= Duration::from_millis(30));
        log.ack(0);
        assert!(log.silent_for() < Duration::from_millis(30));
    }
}
