//! One direction of a tunnel: copying without holding a buffer while
//! idle, passing ends on, and what happens when either side goes away.

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::client_io::Activity;
use crate::thread_buffer::{self, ThreadBuffer};

/// What one direction shares with the tunnel.
pub struct Direction<'a> {
    /// Bytes copied.
    pub bytes: &'a AtomicU64,
    /// The tunnel's last activity, either way.
    pub activity: &'a Activity,
    /// Backlogs held by the tunnel: bytes read that their destination did
    /// not take at once.
    pub held: &'a AtomicUsize,
    /// Told once the direction can carry nothing more: its source ended
    /// (possibly seen ahead of a backlog, through `source_end`) or its
    /// destination failed.
    pub ended: &'a Notify,
    /// Tells whether the source has closed without reading it, for a
    /// source that is a socket.
    pub source_end: Option<EndProbe>,
}

impl<'a> Direction<'a> {
    /// A direction whose source end is seen only by reading it.
    pub fn new(
        bytes: &'a AtomicU64,
        activity: &'a Activity,
        held: &'a AtomicUsize,
        ended: &'a Notify,
    ) -> Direction<'a> {
        Direction {
            bytes,
            activity,
            held,
            ended,
            source_end: None,
        }
    }
}

/// Sees whether a server socket's peer has closed (FIN or reset), even
/// with data still queued before the close: that data cannot be read while
/// the other side is not taking it, so a read would not tell.
#[derive(Debug, Clone, Copy)]
pub struct EndProbe(RawFd);

impl EndProbe {
    /// A probe of `stream`; only used while the stream lives (the pump
    /// that probes it owns its read half).
    pub fn of(stream: &TcpStream) -> EndProbe {
        EndProbe(stream.as_raw_fd())
    }

    /// Whether the peer has closed its side (FIN or reset).
    #[cfg(target_os = "linux")]
    fn peer_closed(self) -> bool {
        let mut fd = libc::pollfd {
            fd: self.0,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a count of one and no wait; the fd is
        // open (see `of`), and poll only reads its state.
        let n = unsafe { libc::poll(&mut fd, 1, 0) };
        n == 1 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Elsewhere only a read tells.
    #[cfg(not(target_os = "linux"))]
    fn peer_closed(self) -> bool {
        false
    }
}

/// How often a write that waits looks whether its source has closed.
const STALL_PROBE: Duration = Duration::from_millis(250);

/// Bytes per read: a full TLS record's plaintext.
const CHUNK: usize = 16 * 1024;

thread_local! {
    /// The thread's read buffer, shared by every tunnel direction the
    /// thread drives. A direction borrows it only within one poll (read,
    /// then write what the destination takes at once), never across a
    /// wait, so a waiting direction holds no buffer at all.
    static SCRATCH: ThreadBuffer = thread_buffer::new(CHUNK);
}

fn with_scratch<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    thread_buffer::with(&SCRATCH, CHUNK, f)
}

/// Bytes read that the destination did not take at once, counted in
/// `held` while they wait.
struct Backlog<'a> {
    buf: Vec<u8>,
    held: &'a AtomicUsize,
}

impl<'a> Backlog<'a> {
    fn new(buf: Vec<u8>, held: &'a AtomicUsize) -> Backlog<'a> {
        held.fetch_add(1, Ordering::Relaxed);
        Backlog { buf, held }
    }
}

impl Drop for Backlog<'_> {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How copying one direction failed.
enum CopyError {
    /// Reading the source failed: it is gone.
    Read(std::io::Error),
    /// Writing the destination failed: it is gone.
    Write(std::io::Error),
}

/// One direction of a tunnel to its end: copies until the source ends and
/// passes the end on (shutdown), or, when the destination fails, reads the
/// source on and discards it until it ends. `ended` is told as soon as the
/// direction can carry nothing more (its source ended or its destination
/// failed), which starts `timeout client-fin` for the other direction.
pub async fn pump<R, W>(mut from: R, mut to: W, dir: &Direction<'_>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let copied = copy(&mut from, &mut to, dir).await;
    dir.ended.notify_one();
    match copied {
        Ok(()) => {
            // Pass the half-close on, as TCP would.
            let _ = to.shutdown().await;
            Ok(())
        }
        Err(CopyError::Read(e)) => {
            let _ = to.shutdown().await;
            Err(e)
        }
        Err(CopyError::Write(e)) => {
            let mut discard = |cx: &mut Context<'_>| {
                with_scratch(|buf| {
                    let mut rb = ReadBuf::new(buf);
                    ready!(Pin::new(&mut from).poll_read(cx, &mut rb))?;
                    Poll::Ready(Ok::<_, std::io::Error>(rb.filled().len()))
                })
            };
            while let Ok(1..) = std::future::poll_fn(&mut discard).await {}
            Err(e)
        }
    }
}

/// What one read moved.
enum Moved {
    /// The source ended.
    End,
    /// The destination took all of it.
    All,
    /// The destination took part or none of it; the rest, copied out of
    /// the thread's buffer.
    Part(Vec<u8>),
}

/// Reads what the source has into the thread's buffer and writes to the
/// destination as much as it takes at once, all within one poll.
fn poll_move<R, W>(from: &mut R, to: &mut W, dir: &Direction<'_>, cx: &mut Context<'_>) -> Poll<Result<Moved, CopyError>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    with_scratch(|buf| {
        let mut rb = ReadBuf::new(buf);
        ready!(Pin::new(&mut *from).poll_read(cx, &mut rb)).map_err(CopyError::Read)?;
        let data = rb.filled();
        if data.is_empty() {
            return Poll::Ready(Ok(Moved::End));
        }
        dir.activity.touch();
        let mut at = 0;
        while at < data.len() {
            match Pin::new(&mut *to).poll_write(cx, &data[at..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(CopyError::Write(std::io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(CopyError::Write(e))),
                Poll::Pending => break,
            }
        }
        dir.bytes.fetch_add(at as u64, Ordering::Relaxed);
        Poll::Ready(Ok(if at == data.len() {
            Moved::All
        } else {
            Moved::Part(data[at..].to_vec())
        }))
    })
}

/// Copies one direction until EOF, counting bytes and marking activity.
///
/// Most of a tunnel's life is idle (a chat client waiting for the next
/// message), so a waiting direction must hold no buffer: with 16 KiB per
/// direction for the whole life, an idle tunnel cost 35 KiB where
/// HAProxy, which takes buffers from a pool only while data is in flight,
/// needs 19 KiB. A generic `AsyncRead` has no way to wait for readability
/// without reading, so a direction waits in a read into the thread's
/// buffer (`SCRATCH`), which is handed back when the read waits; a read
/// that succeeds is written on within the same poll. Only what the
/// destination does not take at once (its peer is slow) is copied into a
/// buffer of the direction's own (`Backlog`, counted in `held`), freed
/// once written.
async fn copy<R, W>(from: &mut R, to: &mut W, dir: &Direction<'_>) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| poll_move(from, to, dir, cx)).await? {
            Moved::End => return Ok(()),
            Moved::All => forward(to, &[], dir).await.map_err(CopyError::Write)?,
            Moved::Part(rest) => {
                let rest = Backlog::new(rest, dir.held);
                forward(to, &rest.buf, dir).await.map_err(CopyError::Write)?;
                dir.bytes.fetch_add(rest.buf.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Writes `data` on (none: only flushes what the destination buffers).
async fn forward<W>(to: &mut W, data: &[u8], dir: &Direction<'_>) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let write = async {
        to.write_all(data).await?;
        to.flush().await
    };
    tokio::pin!(write);
    // Almost every write completes at once; one that waits (the peer does
    // not read) goes on in a boxed future, so a waiting direction stays small.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    match (first, dir.source_end) {
        (Poll::Ready(r), _) => r?,
        (Poll::Pending, None) => write.await?,
        (Poll::Pending, Some(probe)) => Box::pin(stalled(write, probe, dir.ended)).await?,
    }
    dir.activity.touch();
    Ok(())
}

/// Waits for a write that did not complete at once, looking every
/// `STALL_PROBE` whether the source has closed meanwhile: then the tunnel
/// is told at once, so a peer that stopped reading for good cannot hold it
/// past `timeout client-fin` after the other side closed.
async fn stalled<F>(write: Pin<&mut F>, probe: EndProbe, ended: &Notify) -> std::io::Result<()>
where
    F: Future<Output = std::io::Result<()>>,
{
    let mut write = write;
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + STALL_PROBE, STALL_PROBE);
    let mut told = false;
    loop {
        tokio::select! {
            r = write.as_mut() => return r,
            _ = every.tick(), if !told => {
                if probe.peer_closed() {
                    told = true;
                    ended.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt};

    use wsmesh_testkit::bytes::pattern as data;

    #[tokio::test]
    async fn a_waiting_direction_holds_no_buffer() {
        let (mut peer, from) = duplex(256 * 1024);
        let (to, mut out) = duplex(256 * 1024);
        let (bytes, activity, held, ended) = (
            AtomicU64::new(0),
            Activity::new(),
            AtomicUsize::new(0),
            Notify::new(),
        );
        let dir = Direction::new(&bytes, &activity, &held, &ended);
        let p = pump(from, to, &dir);
        tokio::pin!(p);
        // The whole state of a waiting direction is small: no buffer in it.
        assert!(
            std::mem::size_of_val(&*p) < 512,
            "{}",
            std::mem::size_of_val(&*p)
        );
        let wait = Duration::from_millis(50);
        // No data yet: waiting, no buffer of its own.
        assert!(tokio::time::timeout(wait, &mut p).await.is_err());
        assert_eq!(held.load(Ordering::Relaxed), 0);
        // A small message goes through the thread's buffer alone.
        peer.write_all(b"hello").await.unwrap();
        assert!(tokio::time::timeout(wait, &mut p).await.is_err());
        assert_eq!(held.load(Ordering::Relaxed), 0);
        let mut got = [0u8; 5];
        out.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        // A burst larger than the destination takes at once leaves a
        // backlog, freed once it has passed.
        let burst = data(7, 100_000);
        peer.write_all(&burst).await.unwrap();
        assert!(tokio::time::timeout(wait, &mut p).await.is_err());
        assert_eq!(held.load(Ordering::Relaxed), 0);
        let mut got = vec![0u8; burst.len()];
        out.read_exact(&mut got).await.unwrap();
        assert_eq!(got, burst);
        assert_eq!(bytes.load(Ordering::Relaxed), 100_005);
        // EOF is passed on.
        drop(peer);
        p.await.unwrap();
        assert_eq!(out.read(&mut got).await.unwrap(), 0);
        assert_eq!(held.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_mebibyte_each_way_arrives_intact() {
        const LEN: usize = 1024 * 1024;
        // Small pipes: partial reads and writes that wait on the reader.
        let (client, lb_client) = duplex(8 * 1024);
        let (lb_server, server) = duplex(8 * 1024);
        let (cr, cw) = tokio::io::split(lb_client);
        let (sr, sw) = tokio::io::split(lb_server);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let (activity, held) = (Activity::new(), AtomicUsize::new(0));
        let (up_ended, down_ended) = (Notify::new(), Notify::new());
        let up_dir = Direction::new(&up, &activity, &held, &up_ended);
        let down_dir = Direction::new(&down, &activity, &held, &down_ended);
        let to_server = pump(cr, sw, &up_dir);
        let to_client = pump(sr, cw, &down_dir);
        let (client_r, client_w) = tokio::io::split(client);
        let (server_r, server_w) = tokio::io::split(server);
        let send = |mut w: tokio::io::WriteHalf<tokio::io::DuplexStream>, bytes: Vec<u8>| async move {
            w.write_all(&bytes).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let recv = |mut r: tokio::io::ReadHalf<tokio::io::DuplexStream>| async move {
            let mut v = Vec::new();
            r.read_to_end(&mut v).await.unwrap();
            v
        };
        let (a, b, (), (), at_server, at_client) = tokio::join!(
            to_server,
            to_client,
            send(client_w, data(1, LEN)),
            send(server_w, data(2, LEN)),
            recv(server_r),
            recv(client_r),
        );
        a.unwrap();
        b.unwrap();
        assert!(at_server == data(1, LEN), "client to server corrupted");
        assert!(at_client == data(2, LEN), "server to client corrupted");
        assert_eq!(up.load(Ordering::Relaxed), LEN as u64);
        assert_eq!(down.load(Ordering::Relaxed), LEN as u64);
        assert_eq!(held.load(Ordering::Relaxed), 0);
    }

    /// Model test of `pump`: a scripted reader hands out the data in random
    /// chunks (around the read buffer's size too) with `Pending` between
    /// them, and a
    /// scripted writer takes random partial writes and flushes, with
    /// `Pending` too. Whatever the interleaving, every byte arrives once,
    /// in order, the count matches, no backlog is left held, and EOF
    /// is passed on.
    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;
        use std::task::Context;

        /// One poll of the scripted reader or writer.
        #[derive(Debug, Clone, Copy)]
        enum Step {
            /// Not ready now (the waker is woken at once, like a socket
            /// that becomes readable right after).
            Pending,
            /// Ready with up to this many bytes.
            Ready(usize),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                2 => Just(Step::Pending),
                3 => (1usize..64).prop_map(Step::Ready),
                3 => (CHUNK - 2..=CHUNK + 2).prop_map(Step::Ready),
                2 => (1024..3 * CHUNK).prop_map(Step::Ready),
            ]
        }

        /// Plays `script` over and over; the data runs out into EOF.
        struct Reader {
            data: Vec<u8>,
            at: usize,
            script: Vec<Step>,
            turn: usize,
        }

        impl Reader {
            fn next(&mut self) -> Step {
                let s = self.script[self.turn % self.script.len()];
                self.turn += 1;
                s
            }
        }

        impl AsyncRead for Reader {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                match self.next() {
                    Step::Pending => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Step::Ready(n) => {
                        let n = n.min(buf.remaining()).min(self.data.len() - self.at);
                        let at = self.at;
                        buf.put_slice(&self.data[at..at + n]);
                        self.at += n;
                        Poll::Ready(Ok(()))
                    }
                }
            }
        }

        /// Takes partial writes per `script`; flush and shutdown may wait.
        struct Writer {
            got: Vec<u8>,
            script: VecDeque<Step>,
            shut: bool,
        }

        impl Writer {
            fn next(&mut self) -> Step {
                let s = self.script.pop_front().unwrap_or(Step::Ready(usize::MAX));
                // Replay the script forever (it is only a pattern).
                self.script.push_back(s);
                s
            }

            fn wait(&mut self, cx: &mut Context<'_>) -> bool {
                match self.next() {
                    Step::Pending => {
                        cx.waker().wake_by_ref();
                        true
                    }
                    Step::Ready(_) => false,
                }
            }
        }

        impl AsyncWrite for Writer {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                data: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                assert!(!self.shut, "write after shutdown");
                match self.next() {
                    Step::Pending => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Step::Ready(n) => {
                        let n = n.min(data.len());
                        self.got.extend_from_slice(&data[..n]);
                        Poll::Ready(Ok(n))
                    }
                }
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                if self.wait(cx) {
                    return Poll::Pending;
                }
                Poll::Ready(Ok(()))
            }

            fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                if self.wait(cx) {
                    return Poll::Pending;
                }
                self.shut = true;
                Poll::Ready(Ok(()))
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            #[test]
            fn every_byte_arrives_once_in_order(
                len in 0usize..80_000,
                seed in any::<u32>(),
                reads in prop::collection::vec(step(), 1..24),
                writes in prop::collection::vec(step(), 1..24),
            ) {
                let sent = data(seed, len);
                let mut reads = reads;
                // At least one step of each script makes progress, or the
                // pump waits forever.
                reads.push(Step::Ready(1024));
                let mut writes = writes;
                writes.push(Step::Ready(CHUNK));
                let reader = Reader { data: sent.clone(), at: 0, script: reads, turn: 0 };
                let mut writer = Writer { got: Vec::new(), script: writes.into(), shut: false };
                let (bytes, activity, held, ended) = (AtomicU64::new(0), Activity::new(), AtomicUsize::new(0), Notify::new());
                let dir = Direction::new(&bytes, &activity, &held, &ended);
                let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
                rt.block_on(pump(reader, &mut writer, &dir)).expect("pump");
                prop_assert!(writer.got == sent, "{} bytes sent, {} arrived", sent.len(), writer.got.len());
                prop_assert_eq!(bytes.load(Ordering::Relaxed), len as u64);
                prop_assert_eq!(held.load(Ordering::Relaxed), 0);
                prop_assert!(writer.shut, "EOF passed on");
            }
        }
    }
}
