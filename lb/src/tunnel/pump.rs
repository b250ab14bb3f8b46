//! One direction of a tunnel: copying with small buffers while idle,
//! passing ends on, and what happens when either side goes away.

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::client_io::Activity;

/// What one direction shares with the tunnel.
pub struct Direction<'a> {
    /// Bytes copied.
    pub bytes: &'a AtomicU64,
    /// The tunnel's last activity, either way.
    pub activity: &'a Activity,
    /// Large buffers held by the tunnel.
    pub large_held: &'a AtomicUsize,
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
        large_held: &'a AtomicUsize,
        ended: &'a Notify,
    ) -> Direction<'a> {
        Direction {
            bytes,
            activity,
            large_held,
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

/// Bytes a direction reads while it waits for data: inline in the pump's
/// state, so this is what an idle direction costs.
const SMALL: usize = 1024;

/// Bytes per read while data keeps coming.
const LARGE: usize = 16 * 1024;

/// A large buffer, counted in `held` while it lives.
struct Large<'a> {
    buf: Vec<u8>,
    held: &'a AtomicUsize,
}

impl<'a> Large<'a> {
    fn new(held: &'a AtomicUsize) -> Large<'a> {
        held.fetch_add(1, Ordering::Relaxed);
        Large {
            buf: vec![0u8; LARGE],
            held,
        }
    }
}

impl Drop for Large<'_> {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads what the stream has ready now; `None` when it has nothing (the
/// read would wait). A read that is not ready consumes nothing, so giving
/// up on it loses no data.
async fn read_ready<R>(from: &mut R, buf: &mut [u8]) -> Option<std::io::Result<usize>>
where
    R: AsyncRead + Unpin,
{
    std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(&mut *buf);
        match Pin::new(&mut *from).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Ready(None),
            Poll::Ready(r) => Poll::Ready(Some(r.map(|()| rb.filled().len()))),
        }
    })
    .await
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
            let mut sink = [0u8; SMALL];
            while let Ok(1..) = from.read(&mut sink).await {}
            Err(e)
        }
    }
}

/// Copies one direction until EOF, counting bytes and marking activity.
///
/// Most of a tunnel's life is idle (a chat client waiting for the next
/// message), so a direction must not keep a large buffer while it waits:
/// with 16 KiB per direction for the whole life, an idle tunnel cost
/// 35 KiB where HAProxy, which takes buffers from a pool only while data
/// is in flight, needs 19 KiB (now: about 15 KiB, mostly TLS state). A generic `AsyncRead` has no way to wait
/// for readability without reading, so a direction waits by reading into
/// a small inline buffer (`SMALL`), which holds most messages whole. Only
/// when that read fills it is more data likely queued: then a `LARGE` heap
/// buffer is taken and read into for as long as the stream has data ready
/// at once, and freed as soon as a read would wait. So the large buffer
/// exists only during a burst, never across a wait for the peer (it may
/// be held across a wait for the writer, while data is in flight). The
/// allocator's free lists act as the pool; `large_held` counts the large
/// buffers this tunnel holds.
async fn copy<R, W>(from: &mut R, to: &mut W, dir: &Direction<'_>) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; SMALL];
    loop {
        let n = from.read(&mut small).await.map_err(CopyError::Read)?;
        if n == 0 {
            return Ok(());
        }
        forward(to, &small[..n], dir).await.map_err(CopyError::Write)?;
        if n < SMALL {
            continue;
        }
        // A full read: likely a burst. Read it in large chunks until the
        // stream has nothing ready, then free the buffer before waiting.
        let mut large = Large::new(dir.large_held);
        while let Some(r) = read_ready(from, &mut large.buf).await {
            let n = r.map_err(CopyError::Read)?;
            if n == 0 {
                return Ok(());
            }
            forward(to, &large.buf[..n], dir)
                .await
                .map_err(CopyError::Write)?;
        }
    }
}

/// Writes one read's bytes on and accounts for them.
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
    dir.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
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
    use tokio::io::duplex;

    /// Bytes that do not repeat at any buffer size.
    fn data(seed: u32, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn a_direction_without_data_in_flight_holds_no_large_buffer() {
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
        // The whole state of a waiting direction is small.
        assert!(
            std::mem::size_of_val(&*p) < 2 * SMALL,
            "{}",
            std::mem::size_of_val(&*p)
        );
        let wait = Duration::from_millis(50);
        // No data yet: waiting, no large buffer.
        assert!(tokio::time::timeout(wait, &mut p).await.is_err());
        assert_eq!(held.load(Ordering::Relaxed), 0);
        // A small message goes through the inline buffer alone.
        peer.write_all(b"hello").await.unwrap();
        assert!(tokio::time::timeout(wait, &mut p).await.is_err());
        assert_eq!(held.load(Ordering::Relaxed), 0);
        let mut got = [0u8; 5];
        out.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        // A burst takes a large buffer and frees it once it has passed.
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
    /// chunks (around the inline buffer's size too, so full reads switch
    /// to the large buffer and back) with `Pending` between them, and a
    /// scripted writer takes random partial writes and flushes, with
    /// `Pending` too. Whatever the interleaving, every byte arrives once,
    /// in order, the count matches, no large buffer is left held, and EOF
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
                3 => (SMALL - 2..=SMALL + 2).prop_map(Step::Ready),
                2 => (SMALL..3 * LARGE).prop_map(Step::Ready),
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
                reads.push(Step::Ready(SMALL));
                let mut writes = writes;
                writes.push(Step::Ready(LARGE));
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
