//! Sending IPFIX messages: UDP (default) or TCP.
//!
//! UDP: one datagram per message, from a socket connected to the
//! collector; a failed send (e.g. the ICMP "port unreachable" of a
//! collector that is down, reported on a later send) is a collector error
//! and the message counts as dropped.
//!
//! TCP: a sender thread owns the connection. Messages wait in a bounded
//! queue; when it is full the newest message is dropped and counted. The
//! thread connects with exponential back-off (100 ms doubling up to the
//! configured maximum), sends the templates first on every new connection
//! (RFC 7011 §8.1: over TCP, templates are sent once per session), then the
//! queue in order. A message whose write fails stays at the head of the
//! queue and is sent again on the next connection. TCP cannot tell which
//! bytes an abruptly killed collector had received but not read: messages
//! the operating system accepted before the peer vanished count as sent.

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::ipfix::Encoded;

/// Transport counters (read by the metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages sent (accepted by the operating system).
    pub messages_sent: AtomicU64,
    /// Records in them.
    pub records_sent: AtomicU64,
    /// Messages dropped.
    pub messages_dropped: AtomicU64,
    /// Records in them.
    pub records_dropped: AtomicU64,
    /// Failed sends and connection attempts.
    pub errors: AtomicU64,
    /// Connections made (TCP).
    pub connections: AtomicU64,
    /// Messages queued (TCP).
    pub queued: AtomicU64,
    /// Connected (TCP); always true for UDP.
    pub up: AtomicBool,
}

/// Where encoded messages go.
pub trait Sink: Send {
    /// Hands over messages (in order).
    fn send(&mut self, messages: Vec<Encoded>);
    /// The counters.
    fn counters(&self) -> &Arc<Counters>;
    /// Whether the sink wants templates in the data stream (UDP).
    fn templates_inline(&self) -> bool;
    /// Waits up to `timeout` for queued messages to go out; true when none
    /// is left.
    fn drain(&mut self, timeout: Duration) -> bool;
    /// Whether a message carrying the templates was dropped since the last
    /// call (UDP): the encoder then sends them again.
    fn templates_lost(&mut self) -> bool {
        false
    }
}

/// UDP to one collector.
#[derive(Debug)]
pub struct Udp {
    socket: UdpSocket,
    counters: Arc<Counters>,
    templates_lost: bool,
}

impl Udp {
    /// A socket connected to `collector`.
    ///
    /// # Errors
    /// The socket error.
    pub fn new(collector: SocketAddr) -> std::io::Result<Self> {
        let local: SocketAddr = if collector.is_ipv6() {
            "[::]:0".parse().map_err(std::io::Error::other)?
        } else {
            "0.0.0.0:0".parse().map_err(std::io::Error::other)?
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(collector)?;
        let counters = Arc::new(Counters::default());
        counters.up.store(true, Ordering::Relaxed);
        Ok(Self {
            socket,
            counters,
            templates_lost: false,
        })
    }
}

impl Sink for Udp {
    fn send(&mut self, messages: Vec<Encoded>) {
        let c = &self.counters;
        for m in messages {
            // One retry: a refused send reports an earlier datagram's ICMP
            // error, not necessarily this one's.
            let ok = self.socket.send(&m.bytes).is_ok() || {
                c.errors.fetch_add(1, Ordering::Relaxed);
                self.socket.send(&m.bytes).is_ok()
            };
            if ok {
                c.messages_sent.fetch_add(1, Ordering::Relaxed);
                c.records_sent
                    .fetch_add(u64::from(m.records), Ordering::Relaxed);
            } else {
                self.templates_lost |= m.templates;
                c.errors.fetch_add(1, Ordering::Relaxed);
                c.messages_dropped.fetch_add(1, Ordering::Relaxed);
                c.records_dropped
                    .fetch_add(u64::from(m.records), Ordering::Relaxed);
            }
        }
    }

    fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    fn templates_inline(&self) -> bool {
        true
    }

    fn templates_lost(&mut self) -> bool {
        std::mem::take(&mut self.templates_lost)
    }

    fn drain(&mut self, _: Duration) -> bool {
        true
    }
}

struct Queue {
    messages: VecDeque<Encoded>,
    /// Message in flight (taken by the sender thread, not yet written).
    in_flight: bool,
    stop: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    counters: Arc<Counters>,
}

/// TCP to one collector, through a sender thread.
pub struct Tcp {
    shared: Arc<Shared>,
    capacity: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Tcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tcp")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Makes the templates-only message sent first on each connection, given
/// the sequence number of the next data message.
pub type TemplateMessage = Box<dyn Fn(u32) -> Vec<u8> + Send>;

impl Tcp {
    /// Starts the sender thread (it connects in the background).
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn new(
        collector: SocketAddr,
        capacity: usize,
        reconnect_max: Duration,
        templates: TemplateMessage,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                messages: VecDeque::new(),
                in_flight: false,
                stop: false,
            }),
            wake: Condvar::new(),
            counters: Arc::new(Counters::default()),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ipfix-tcp".into())
            .spawn(move || sender(&s, collector, reconnect_max, &templates))?;
        Ok(Self {
            shared,
            capacity: capacity.max(1),
            thread: Some(thread),
        })
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Queue> {
    s.queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sequence_of(m: &[u8]) -> u32 {
    m.get(8..12)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn sender(s: &Shared, collector: SocketAddr, reconnect_max: Duration, templates: &TemplateMessage) {
    let c = &s.counters;
    let mut pause = Duration::from_millis(100);
    'connect: loop {
        // Wait for something to send (or stop) before connecting.
        {
            let mut q = lock(s);
            while q.messages.is_empty() && !q.stop {
                q = s
                    .wake
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if q.stop && q.messages.is_empty() {
                return;
            }
        }
        let Ok(mut stream) = TcpStream::connect_timeout(&collector, Duration::from_secs(5)) else {
            c.errors.fetch_add(1, Ordering::Relaxed);
            c.up.store(false, Ordering::Relaxed);
            let q = lock(s);
            if q.stop {
                return; // stopping: what is left is counted by `drop`
            }
            let _ = s.wake.wait_timeout(q, pause);
            pause = (pause * 2).min(reconnect_max);
            continue 'connect;
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        c.connections.fetch_add(1, Ordering::Relaxed);
        let first_seq = lock(s)
            .messages
            .front()
            .map_or(0, |m| sequence_of(&m.bytes));
        if stream.write_all(&templates(first_seq)).is_err() {
            c.errors.fetch_add(1, Ordering::Relaxed);
            continue 'connect;
        }
        c.up.store(true, Ordering::Relaxed);
        pause = Duration::from_millis(100);
        loop {
            let message = {
                let mut q = lock(s);
                while q.messages.is_empty() && !q.stop {
                    q = s
                        .wake
                        .wait(q)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                let Some(m) = q.messages.pop_front() else {
                    return; // stop with nothing left
                };
                q.in_flight = true;
                m
            };
            // A collector never writes to the exporter: anything readable is
            // its end of the connection (EOF or a reset). Checked before
            // each write so that a message is not handed to a connection the
            // peer already closed (the write would succeed and the message
            // be lost).
            if peer_alive(&stream) && stream.write_all(&message.bytes).is_ok() {
                let mut q = lock(s);
                q.in_flight = false;
                c.queued.store(q.messages.len() as u64, Ordering::Relaxed);
                c.messages_sent.fetch_add(1, Ordering::Relaxed);
                c.records_sent
                    .fetch_add(u64::from(message.records), Ordering::Relaxed);
                s.wake.notify_all();
            } else {
                // Back to the head of the queue; reconnect.
                let mut q = lock(s);
                q.in_flight = false;
                q.messages.push_front(message);
                c.errors.fetch_add(1, Ordering::Relaxed);
                c.up.store(false, Ordering::Relaxed);
                continue 'connect;
            }
        }
    }
}

/// The peer has not closed or reset the connection (nothing to read).
fn peer_alive(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let alive =
        matches!(stream.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).is_ok() && alive
}

impl Sink for Tcp {
    fn send(&mut self, messages: Vec<Encoded>) {
        let c = &self.shared.counters;
        let mut q = lock(&self.shared);
        for m in messages {
            if q.messages.len() >= self.capacity {
                c.messages_dropped.fetch_add(1, Ordering::Relaxed);
                c.records_dropped
                    .fetch_add(u64::from(m.records), Ordering::Relaxed);
            } else {
                q.messages.push_back(m);
            }
        }
        c.queued.store(q.messages.len() as u64, Ordering::Relaxed);
        self.shared.wake.notify_all();
    }

    fn counters(&self) -> &Arc<Counters> {
        &self.shared.counters
    }

    fn templates_inline(&self) -> bool {
        false
    }

    fn drain(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut q = lock(&self.shared);
        while !q.messages.is_empty() || q.in_flight {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            q = self
                .shared
                .wake
                .wait_timeout(q, deadline - now)
                .map_or_else(|e| e.into_inner().0, |r| r.0);
        }
        true
    }
}

impl Drop for Tcp {
    fn drop(&mut self) {
        {
            let mut q = lock(&self.shared);
            q.stop = true;
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Whatever is still queued was never sent: count it.
        let q = lock(&self.shared);
        let c = &self.shared.counters;
        for m in &q.messages {
            c.messages_dropped.fetch_add(1, Ordering::Relaxed);
            c.records_dropped
                .fetch_add(u64::from(m.records), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::net::TcpListener;

    fn msg(seq: u32, records: u32) -> Encoded {
        let mut bytes = vec![0, 10, 0, 16];
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        Encoded {
            bytes,
            records,
            templates: false,
        }
    }

    #[test]
    fn tcp_queues_until_a_collector_appears_then_sends_templates_first() {
        // A port nobody listens on yet.
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let mut tcp = Tcp::new(
            addr,
            3,
            Duration::from_millis(200),
            Box::new(|seq| {
                let mut t = b"TMPL".to_vec();
                t.extend_from_slice(&seq.to_be_bytes());
                t
            }),
        )
        .unwrap();
        tcp.send(vec![msg(0, 2), msg(2, 1), msg(3, 4), msg(7, 5)]);
        let c = Arc::clone(tcp.counters());
        assert_eq!(
            c.messages_dropped.load(Ordering::Relaxed),
            1,
            "queue of 3: the 4th is dropped"
        );
        assert_eq!(c.records_dropped.load(Ordering::Relaxed), 5);
        assert!(!tcp.drain(Duration::from_millis(300)), "nobody listens yet");
        assert!(
            c.errors.load(Ordering::Relaxed) > 0,
            "failed connection attempts are counted"
        );
        let listener = TcpListener::bind(addr).unwrap();
        assert!(
            tcp.drain(Duration::from_secs(10)),
            "delivered once the collector is there"
        );
        let (mut conn, _) = listener.accept().unwrap();
        drop(tcp);
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        let mut expected = b"TMPL".to_vec();
        expected.extend_from_slice(&0u32.to_be_bytes());
        for m in [msg(0, 2), msg(2, 1), msg(3, 4)] {
            expected.extend_from_slice(&m.bytes);
        }
        assert_eq!(got, expected);
        assert_eq!(c.records_sent.load(Ordering::Relaxed), 7);
    }
}
