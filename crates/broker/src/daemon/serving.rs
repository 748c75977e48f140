//! Where a connection's frame loop runs: parked in the event loop while its peer is quiet, and
//! on a thread of its own while the peer is busy.
//!
//! Deno blocks on its socket for every check, so a busy connection is a ping-pong of one frame
//! and one answer. Served from the event loop, every turn of it costs an `epoll_wait`, a read
//! that finds nothing, and wake-ups between the loop's workers and the blocking pool. Served by
//! a thread that blocks in `read`, as the simplest possible broker would, a turn is one `read`
//! and one `write`. Idle connections (Deno processes live for hours) must not hold a thread
//! each, so a connection's thread gives it back to the event loop once its peer has been quiet
//! for [`linger`], and the loop hands it to a thread again when a frame arrives.
//!
//! The frame loop is one future ([`super::connection::Connection::run`]) whichever side polls
//! it, so every rule it keeps holds on both. [`drive`] moves it between the two sides; the
//! socket halves ([`unix::ConnRead`]) decide, from the side they are polled on, whether to block
//! in `read` (a connection thread) or register with the event loop (the loop), and ask to be
//! moved when the other side would serve them better.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// How long a connection thread waits for the next frame before it gives the connection back
/// to the event loop: longer than the gaps inside a burst of checks (a module graph being
/// loaded), short enough that a stop or a handover waiting for an idle connection is not held.
#[cfg(unix)]
pub const LINGER: Duration = Duration::from_millis(50);

/// The linger for a frame timeout: never longer than the timeout (a frame started on a
/// connection thread must still time out on time).
#[cfg(unix)]
pub fn linger(frame_timeout: Duration) -> Duration {
    LINGER.min(frame_timeout).max(Duration::from_millis(1))
}

/// Which side is polling the frame loop on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Not under [`drive`] (a refused connection, a test): plain asynchronous I/O.
    Outside,
    /// The event loop; `may_move` when a connection thread is free to take the connection.
    Loop { may_move: bool },
    /// A connection thread: reads block (up to the linger).
    Thread,
}

thread_local! {
    static SIDE: Cell<Side> = const { Cell::new(Side::Outside) };
    static MOVE: Cell<bool> = const { Cell::new(false) };
}

/// The side polling the current connection.
pub fn side() -> Side {
    SIDE.with(Cell::get)
}

/// Asks the driver to move the connection to the other side once this poll returns `Pending`.
/// Only a reader that returns `Pending` right after may call it: the driver polls again on the
/// other side at once, so no wake-up is owed.
#[cfg(unix)]
pub fn request_move() {
    MOVE.with(|m| m.set(true));
}

/// How many policy compiles are running. While one is, connections are served from the event
/// loop and not from connection threads: a compile of a large policy is one thread at normal
/// priority, and under saturation hundreds of runnable connection threads would leave it a
/// sliver of the cores, so that a reload never took effect. The loop's few workers leave it
/// its share, as they did before there were connection threads.
static COMPILING: AtomicUsize = AtomicUsize::new(0);

/// Held while a policy compiles: connection threads give their connections back to the event
/// loop at their next read, and the loop hands none out, until it is dropped.
#[derive(Debug)]
pub struct StepAside(());

impl StepAside {
    pub fn begin() -> StepAside {
        COMPILING.fetch_add(1, Ordering::SeqCst);
        StepAside(())
    }
}

impl Drop for StepAside {
    fn drop(&mut self) {
        COMPILING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether connection threads step aside now (a policy is compiling).
fn stepping_aside() -> bool {
    COMPILING.load(Ordering::Relaxed) > 0
}

/// The connection threads: how many may serve at once. A thread stuck in a lookup that does not
/// return keeps its place until the kernel lets it go.
#[derive(Debug)]
pub struct Threads {
    free: AtomicUsize,
    size: usize,
}

/// A place among the connection threads, given back when dropped.
#[derive(Debug)]
pub struct Place(Arc<Threads>);

impl Threads {
    pub fn new(size: usize) -> Arc<Threads> {
        Arc::new(Threads {
            free: AtomicUsize::new(size),
            size,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Connections on a thread of their own now.
    pub fn busy(&self) -> usize {
        self.size.saturating_sub(self.free.load(Ordering::Relaxed))
    }

    fn available(&self) -> bool {
        self.free.load(Ordering::Relaxed) > 0
    }

    fn take(self: &Arc<Self>) -> Option<Place> {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |free| {
                free.checked_sub(1)
            })
            .ok()
            .map(|_| Place(self.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.free.fetch_add(1, Ordering::AcqRel);
    }
}

/// A frame loop future, boxed so that it can move between the sides.
pub type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What one side's turn ended with.
enum Turn<T> {
    Done(T),
    Move(Boxed<T>),
}

/// Polls the frame loop on one side until it ends or asks to move.
struct OnSide<'a, T> {
    fut: Option<Boxed<T>>,
    thread: bool,
    threads: &'a Threads,
}

impl<T> Future for OnSide<'_, T> {
    type Output = Turn<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn<T>> {
        let side = match self.thread {
            true => Side::Thread,
            false => Side::Loop {
                may_move: self.threads.available() && !stepping_aside(),
            },
        };
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Pending;
        };
        let before = SIDE.with(|s| s.replace(side));
        MOVE.with(|m| m.set(false));
        let polled = fut.as_mut().poll(cx);
        SIDE.with(|s| s.set(before));
        let moved = MOVE.with(|m| m.replace(false));
        match (polled, moved) {
            (Poll::Ready(done), _) => Poll::Ready(Turn::Done(done)),
            (Poll::Pending, true) => match self.fut.take() {
                Some(fut) => Poll::Ready(Turn::Move(fut)),
                None => Poll::Pending,
            },
            (Poll::Pending, false) => Poll::Pending,
        }
    }
}

/// Runs a frame loop to its end: on the event loop while its connection is idle, on a
/// connection thread (one of `threads`) while it is busy. With no thread free it is served on
/// the event loop, as before there were connection threads. A connection thread stuck in a
/// lookup past the request deadline hands the connection on ([`in_place`]): the loop goes on
/// with the frame loop the watchdog rebuilt, and the stuck thread's is dropped once it returns.
pub async fn drive<T: Send + 'static>(mut fut: Boxed<T>, threads: &Arc<Threads>) -> T {
    loop {
        let turn = OnSide {
            fut: Some(fut),
            thread: false,
            threads,
        }
        .await;
        fut = match turn {
            Turn::Done(done) => return done,
            Turn::Move(fut) => fut,
        };
        let Some(place) = threads.take() else {
            continue;
        };
        let runtime = tokio::runtime::Handle::current();
        let on_thread = threads.clone();
        let (handoff, mut rescued) = tokio::sync::oneshot::channel();
        let mut job = tokio::task::spawn_blocking(move || {
            let _place = place;
            HANDOFF.with(|h| *h.borrow_mut() = Some(handoff));
            let turn = runtime.block_on(OnSide {
                fut: Some(fut),
                thread: true,
                threads: &on_thread,
            });
            HANDOFF.with(|h| h.borrow_mut().take());
            turn
        });
        fut = tokio::select! {
            // A rescue first: the stuck thread's own frame loop is stale once it is sent.
            biased;
            Ok(next) = &mut rescued => match next.downcast::<Boxed<T>>() {
                Ok(next) => *next,
                Err(_) => unreachable!("a rescue sends the frame loop it replaces"),
            },
            joined = &mut job => match joined {
                Ok(Turn::Done(done)) => return done,
                Ok(Turn::Move(fut)) => fut,
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // The runtime is shutting down, and drops this task with the rest.
                    Err(_) => std::future::pending().await,
                },
            },
        };
    }
}

/// Where a rescued frame loop goes: to the [`drive`] that sent its connection to a thread.
type Handoff = tokio::sync::oneshot::Sender<Box<dyn std::any::Any + Send>>;

thread_local! {
    /// Set while a connection thread serves, taken by a decision in place and given back.
    static HANDOFF: std::cell::RefCell<Option<Handoff>> = const { std::cell::RefCell::new(None) };
    static ENTRY: std::cell::OnceCell<Arc<Entry>> = const { std::cell::OnceCell::new() };
}

/// Whether a decision that may block can be made in place, on this connection thread.
pub fn can_decide_in_place() -> bool {
    side() == Side::Thread && HANDOFF.with(|h| h.borrow().is_some())
}

/// What takes a stuck connection over: called by the watchdog, at the deadline, with where to
/// send the frame loop that answers the request and goes on serving the connection.
pub type Rescue = Box<dyn FnOnce(&dyn Fn(Box<dyn std::any::Any + Send>)) + Send>;

/// Runs `work` (a decision that may block) here, on a connection thread, with the watchdog
/// armed to call `rescue` if it is not done by `deadline`. `None` when it was rescued: the
/// connection is served elsewhere now, and this frame loop must end without touching it.
pub fn in_place<T>(
    watchdog: &Watchdog,
    deadline: std::time::Instant,
    rescue: Rescue,
    work: impl FnOnce() -> T,
) -> Option<T> {
    let handoff = HANDOFF.with(|h| h.borrow_mut().take())?;
    let entry = ENTRY.with(|e| e.get_or_init(|| watchdog.entry()).clone());
    *entry.lock() = Some(Armed {
        deadline,
        handoff,
        rescue,
    });
    watchdog.armed();
    let done = work();
    let armed = entry.lock().take();
    watchdog.disarmed();
    let armed = armed?;
    HANDOFF.with(|h| *h.borrow_mut() = Some(armed.handoff));
    Some(done)
}

/// A decision in place, waiting on the watchdog.
struct Armed {
    deadline: std::time::Instant,
    handoff: Handoff,
    rescue: Rescue,
}

/// One connection thread's place in the watchdog's list.
#[derive(Default)]
struct Entry(std::sync::Mutex<Option<Armed>>);

impl Entry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Armed>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Rescues decisions in place that outlive the request deadline. It looks every `period` while
/// any is armed, and sleeps (no wake-ups) once a period has passed with none.
pub struct Watchdog {
    entries: std::sync::Mutex<Vec<Arc<Entry>>>,
    armed: AtomicUsize,
    sleeping: std::sync::atomic::AtomicBool,
    alive: std::sync::atomic::AtomicBool,
    parked: std::sync::Mutex<()>,
    wake: std::sync::Condvar,
    period: Duration,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("armed", &self.armed)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// A watchdog for `deadline`: a late answer comes at most a twentieth of it late.
    pub fn start(deadline: Duration) -> Arc<Watchdog> {
        let watchdog = Arc::new(Watchdog {
            entries: std::sync::Mutex::default(),
            armed: AtomicUsize::new(0),
            sleeping: std::sync::atomic::AtomicBool::new(false),
            alive: std::sync::atomic::AtomicBool::new(false),
            parked: std::sync::Mutex::new(()),
            wake: std::sync::Condvar::new(),
            period: (deadline / 20).clamp(Duration::from_millis(1), Duration::from_millis(50)),
        });
        let weak = Arc::downgrade(&watchdog);
        let spawned = std::thread::Builder::new()
            .name("watchdog".to_owned())
            .spawn(move || {
                let mut quiet = false;
                while let Some(watchdog) = weak.upgrade() {
                    watchdog.turn(&mut quiet);
                }
            });
        match spawned {
            Ok(_) => watchdog.alive.store(true, Ordering::SeqCst),
            // Decisions are then never made in place (nothing could rescue them).
            Err(e) => tracing::error!("cannot start the decision watchdog: {e}"),
        }
        watchdog
    }

    /// Whether decisions may be made in place: the watchdog's thread is running.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    fn entry(&self) -> Arc<Entry> {
        let entry = Arc::new(Entry::default());
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(entry.clone());
        entry
    }

    fn armed(&self) {
        self.armed.fetch_add(1, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let _parked = self
                .parked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.wake.notify_one();
        }
    }

    fn disarmed(&self) {
        self.armed.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits a period (or, after a quiet one, until something is armed), then rescues what is
    /// past its deadline.
    fn turn(&self, quiet: &mut bool) {
        {
            let parked = self
                .parked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let wait = if *quiet {
                // Said before looking, so that an arm either is seen here or sees this and
                // wakes it. Only after a period with nothing armed: a busy daemon's arms find
                // it awake and never pay for a wake-up, a quiet one is woken once.
                self.sleeping.store(true, Ordering::SeqCst);
                if self.armed.load(Ordering::SeqCst) == 0 {
                    // A second at most, so that a dropped daemon ends this thread.
                    Duration::from_secs(1)
                } else {
                    Duration::ZERO
                }
            } else {
                self.period
            };
            drop(self.wake.wait_timeout(parked, wait));
            self.sleeping.store(false, Ordering::SeqCst);
        }
        if *quiet {
            // Woken (or a second passed): look again after a period.
            *quiet = false;
            return;
        }
        *quiet = self.armed.load(Ordering::SeqCst) == 0;
        if *quiet {
            return;
        }
        let now = std::time::Instant::now();
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for entry in entries {
            let late = {
                let mut armed = entry.lock();
                match &*armed {
                    Some(a) if a.deadline <= now => armed.take(),
                    _ => None,
                }
            };
            if let Some(Armed {
                handoff, rescue, ..
            }) = late
            {
                let handoff = std::sync::Mutex::new(Some(handoff));
                rescue(&|next| {
                    if let Some(handoff) = handoff
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take()
                    {
                        // Refused only if the connection's driver is gone (a forced stop).
                        let _ = handoff.send(next);
                    }
                });
            }
        }
    }
}

/// Unix sockets that block on a connection thread and register with the event loop otherwise.
#[cfg(unix)]
pub mod unix {
    use super::{Side, request_move, side, stepping_aside};
    use nix::sys::socket::{MsgFlags, recv, send};
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
    use std::pin::Pin;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::task::{Context, Poll, ready};
    use std::time::Duration;
    use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

    /// Who holds a connection's descriptor: the event loop (registered with epoll,
    /// non-blocking), or a connection thread (not registered, so a frame wakes only the thread
    /// blocked on it; blocking, with a receive timeout of the linger).
    #[derive(Debug)]
    enum Held {
        Loop(tokio::net::UnixStream),
        Thread(std::os::unix::net::UnixStream),
        /// Only between two states, under the lock; never seen outside it.
        Moving,
    }

    /// A connection's socket, shared by its two halves. The lock is taken once per call by the
    /// connection's own future, which reads and writes one at a time: it is never contended.
    #[derive(Debug)]
    struct Socket {
        held: Mutex<Held>,
        /// The descriptor's number, the same in both states.
        fd: RawFd,
    }

    /// The reading half of a connection's socket.
    #[derive(Debug)]
    pub struct ConnRead(Arc<Socket>);

    /// The writing half. Dropping either half closes nothing while the other is open, and
    /// dropping both closes the descriptor without a `shutdown` (a copy kept by the service
    /// manager stays usable); [`shutdown`] ends the connection for every copy.
    #[derive(Debug)]
    pub struct ConnWrite(Arc<Socket>);

    /// The descriptor of a connection, borrowed while its state cannot change.
    pub struct Fd<'a>(MutexGuard<'a, Held>);

    impl AsFd for Fd<'_> {
        fn as_fd(&self) -> BorrowedFd<'_> {
            match &*self.0 {
                Held::Loop(stream) => stream.as_fd(),
                Held::Thread(stream) => stream.as_fd(),
                Held::Moving => unreachable!("a socket is moved only under its lock"),
            }
        }
    }

    /// Takes a connected socket (from `accept` or a handover) for serving; it starts on the
    /// event loop.
    pub fn split(
        stream: std::os::unix::net::UnixStream,
        linger: Duration,
    ) -> io::Result<(ConnRead, ConnWrite)> {
        // Applies only while the descriptor blocks, on a connection thread.
        stream.set_read_timeout(Some(linger))?;
        stream.set_nonblocking(true)?;
        let fd = stream.as_raw_fd();
        let socket = Arc::new(Socket {
            held: Mutex::new(Held::Loop(tokio::net::UnixStream::from_std(stream)?)),
            fd,
        });
        Ok((ConnRead(socket.clone()), ConnWrite(socket)))
    }

    /// The two halves as one socket again, for a descriptor handed on: `None` while another
    /// copy of a half is still alive.
    pub fn reunite(read: ConnRead, write: ConnWrite) -> Option<std::os::unix::net::UnixStream> {
        drop(write);
        let socket = Arc::try_unwrap(read.0).ok()?;
        match socket
            .held
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Held::Loop(stream) => stream.into_std().ok(),
            Held::Thread(stream) => Some(stream),
            Held::Moving => None,
        }
    }

    /// Shuts the socket down for every copy of it: its peer sees the connection end.
    pub fn shutdown(fd: RawFd) {
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
    }

    impl Socket {
        fn lock(&self) -> MutexGuard<'_, Held> {
            self.held.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// Makes the descriptor the connection thread's: out of epoll, blocking.
        fn for_thread(&self) -> io::Result<()> {
            let mut held = self.lock();
            if let Held::Loop(_) = &*held {
                let Held::Loop(stream) = std::mem::replace(&mut *held, Held::Moving) else {
                    unreachable!()
                };
                let stream = stream.into_std()?;
                stream.set_nonblocking(false)?;
                *held = Held::Thread(stream);
            }
            Ok(())
        }

        /// Makes the descriptor the event loop's again: non-blocking, registered.
        fn for_loop(&self) -> io::Result<MutexGuard<'_, Held>> {
            let mut held = self.lock();
            if let Held::Thread(_) = &*held {
                let Held::Thread(stream) = std::mem::replace(&mut *held, Held::Moving) else {
                    unreachable!()
                };
                stream.set_nonblocking(true)?;
                *held = Held::Loop(tokio::net::UnixStream::from_std(stream)?);
            }
            Ok(held)
        }
    }

    impl ConnWrite {
        /// A second handle on the same socket, for a rescued connection's frame loop.
        pub fn duplicate(&self) -> ConnWrite {
            ConnWrite(self.0.clone())
        }
    }

    impl ConnRead {
        /// A second handle on the same socket, for a rescued connection's frame loop.
        pub fn duplicate(&self) -> ConnRead {
            ConnRead(self.0.clone())
        }

        /// The descriptor, for a copy kept elsewhere (the service manager's store, a handover).
        pub fn fd(&self) -> Fd<'_> {
            Fd(self.0.lock())
        }

        /// The descriptor's number (it stays open while this half lives).
        pub fn raw_fd(&self) -> RawFd {
            self.0.fd
        }
    }

    fn io_result<T>(result: nix::Result<T>) -> io::Result<T> {
        result.map_err(io::Error::from)
    }

    /// The registered stream of a socket on the event loop.
    fn registered<'a>(held: &'a MutexGuard<'_, Held>) -> &'a tokio::net::UnixStream {
        match &**held {
            Held::Loop(stream) => stream,
            _ => unreachable!("for_loop registers the socket"),
        }
    }

    impl AsyncRead for ConnRead {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let socket = &self.0;
            let may_move = match side() {
                Side::Thread => {
                    if stepping_aside() {
                        // A policy is compiling: leave it the cores (the loop polls at once).
                        request_move();
                        return Poll::Pending;
                    }
                    socket.for_thread()?;
                    loop {
                        // The descriptor blocks now, for at most the linger.
                        match recv(socket.fd, buf.initialize_unfilled(), MsgFlags::empty()) {
                            Ok(n) => {
                                buf.advance(n);
                                return Poll::Ready(Ok(()));
                            }
                            Err(nix::errno::Errno::EINTR) => continue,
                            // Quiet for the linger: back to the event loop, which polls at once.
                            Err(nix::errno::Errno::EAGAIN) => {
                                request_move();
                                return Poll::Pending;
                            }
                            Err(e) => return Poll::Ready(Err(e.into())),
                        }
                    }
                }
                Side::Loop { may_move } => may_move,
                Side::Outside => false,
            };
            let held = socket.for_loop()?;
            let stream = registered(&held);
            loop {
                ready!(stream.poll_read_ready(cx))?;
                if may_move {
                    // A frame is (probably) here: a connection thread reads it. A stale
                    // readiness costs that thread one linger.
                    request_move();
                    return Poll::Pending;
                }
                let unfilled = buf.initialize_unfilled();
                match stream.try_io(Interest::READABLE, || {
                    io_result(recv(socket.fd, unfilled, MsgFlags::MSG_DONTWAIT))
                }) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
    }

    impl AsyncWrite for ConnWrite {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let socket = &self.0;
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            // Almost always there is room: write first, wait only when there is not.
            match send(socket.fd, buf, flags) {
                Err(nix::errno::Errno::EAGAIN) => {}
                sent => return Poll::Ready(io_result(sent)),
            }
            if side() == Side::Thread {
                // The peer is not reading: wait on the event loop, where the answer's
                // timeout can end the connection.
                request_move();
                return Poll::Pending;
            }
            let held = socket.for_loop()?;
            let stream = registered(&held);
            loop {
                ready!(stream.poll_write_ready(cx))?;
                match stream.try_io(Interest::WRITABLE, || {
                    io_result(send(socket.fd, buf, flags))
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    sent => return Poll::Ready(sent),
                }
            }
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(io_result(nix::sys::socket::shutdown(
                self.0.fd,
                nix::sys::socket::Shutdown::Write,
            )))
        }
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::{Side, StepAside, Threads, drive, side};
    use std::io::Write;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// Reads one byte per `step`, saying after each on which side it was read; the peer sends a
    /// byte when told to, and the reader holds a [`StepAside`] from the `aside`th byte on.
    fn sides(aside: Option<usize>) -> Vec<Side> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (send, recv) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            while recv.recv().is_ok() {
                theirs.write_all(b"x").unwrap();
            }
        });
        let sides = runtime.block_on(async move {
            let (mut read, _write) = super::unix::split(ours, Duration::from_secs(5)).unwrap();
            let frame_loop = Box::pin(async move {
                let mut sides = Vec::new();
                let mut held = None;
                for n in 0..4 {
                    if Some(n) == aside {
                        held = Some(StepAside::begin());
                    }
                    send.send(()).unwrap();
                    let mut byte = [0u8; 1];
                    assert_eq!(read.read(&mut byte).await.unwrap(), 1);
                    sides.push(side());
                }
                drop(held);
                sides
            });
            drive(frame_loop, &Threads::new(1)).await
        });
        writer.join().unwrap();
        sides
    }

    #[test]
    fn a_compiling_policy_takes_the_connections_off_their_threads() {
        // Without a compile, a busy connection is read on a connection thread.
        assert_eq!(sides(None), vec![Side::Thread; 4]);
        // A compile that starts while the connection is on its thread sends it back to the
        // event loop at its next read, and the loop hands it to no thread until it ends.
        let loop_side = Side::Loop { may_move: false };
        assert_eq!(
            sides(Some(2)),
            vec![Side::Thread, Side::Thread, loop_side, loop_side]
        );
        // One that was running before the frame arrived keeps it on the loop from the start.
        assert_eq!(sides(Some(0)), vec![loop_side; 4]);
    }
}
