//! The worker threads of a model: started once with the model, handed one run at a
//! time. In a run, every thread takes part in each kernel whose range is split, and all
//! threads meet at a barrier before the next kernel.
//!
//! A split kernel's range is dealt out in equal shares, one per thread; a thread runs most of
//! what is left of its own share at a time (from the front), and when it is done takes half of
//! what is left of another's (from the back) until nothing is left. Static halves would make
//! every kernel as slow as its slower thread, and on a shared machine one core is often slower
//! for a while (another guest's work, an interrupt, a late start); taking from the back keeps
//! both busy. A kernel accepts any slice of its range and computes every element the same way
//! whichever slice it is in, so the results are bit-identical however the work was shared.
//!
//! A worker that cannot be started (the system's thread limit, memory) is not an error: the
//! pool runs on the threads it has, and the shares are dealt among them.
//!
//! A thread that waits (at a barrier, or a worker for the next run) spins for [`SPIN`] before
//! it sleeps, where the pool has no more threads than the CPUs the process may run on: waking
//! a sleeping thread costs tens of microseconds on a virtual machine, several times per run.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_jit::Step;

/// The arena pointer, shared by the threads for the duration of one run.
#[derive(Clone, Copy)]
struct Arena(*mut u8);

// SAFETY: during a run the threads write disjoint parts of the arena (each index of a kernel's
// parallel range owns its outputs, and every index is run by exactly one thread) and a
// barrier orders one kernel before the next; between runs no worker touches it.
unsafe impl Send for Arena {}

/// One input's copy into the arena at the start of a run ([`Pool::run_fed`]): `len` bytes
/// from `src` to the arena's byte `offset`.
#[derive(Clone, Copy)]
pub struct InputCopy {
    pub src: *const u8,
    pub offset: usize,
    pub len: usize,
}

/// The copies of one run, as the threads see them: `len` [`InputCopy`]s at `ptr` (the
/// caller's, alive until [`Pool::run_fed`] returns).
#[derive(Clone, Copy)]
struct Copies {
    ptr: *const InputCopy,
    len: usize,
}

// SAFETY: the copies and the inputs they read are only read, by the threads of one run, before
// the barrier that ends the copying, which the caller's thread passes too before
// `Pool::run_fed` returns; each thread writes its own bytes of each slot.
unsafe impl Send for Copies {}

/// Bytes `[b, e)` of a copy of `len` bytes that thread `t` of `n` makes: equal parts, cut at
/// cache lines.
fn copy_part(len: usize, t: usize, n: usize) -> (usize, usize) {
    let lines = len.div_ceil(64);
    let cut = |u: usize| (lines * u / n * 64).min(len);
    (cut(t), cut(t + 1))
}

/// What is left of one thread's share of a split step: grains `[lo, hi)` of the range of the
/// step whose number is `step` (a share of an earlier step is stale, and dealt anew).
#[derive(Default)]
struct Share {
    step: u64,
    lo: usize,
    hi: usize,
}

/// How long a waiting thread spins before it sleeps. Measured on a 2-vCPU Intel Xeon (KVM,
/// family 6 model 207), two threads, the median of 8–10 alternating pairs of processes, with
/// 100 µs against none (sleeping at once), over two sets of pairs: the dilated convolution
/// 0.88, LeNet-5 at batch 64 0.80, the VGG block 0.91–0.96, the MobileNet block 0.91–0.92,
/// ResNet-18 0.96–0.99, LeNet-5 at batch 1 1.03–1.05 (32–36 µs a run).
const SPIN: Duration = Duration::from_micros(100);

/// Spins until `done()` or for `spin` (checking the clock every 64 rounds, and yielding the
/// CPU there); whether `done()`. A new process's threads may all start on one CPU, where a
/// waiter spinning through its whole time holds up the thread it waits for: LeNet-5 at batch
/// 64 on two threads took 0.46 ms a run once the threads ran on their own CPUs and 1.7–1.9
/// until then, most of a short process's first runs; yielding there made those 0.9–1.0, and
/// changed nothing once spread (2-vCPU Intel Xeon, family 6 model 167: LeNet-5 0.016 ms either
/// way, at batch 64 0.445–0.464 against 0.449–0.466, ResNet-18 12.1–12.6 against 11.8–13.0,
/// the VGG and MobileNet blocks within 3 %).
fn spin_until(spin: Duration, mut done: impl FnMut() -> bool) -> bool {
    if spin.is_zero() {
        return done();
    }
    let start = Instant::now();
    let mut round = 0u32;
    loop {
        if done() {
            return true;
        }
        std::hint::spin_loop();
        round = round.wrapping_add(1);
        if round.is_multiple_of(64) {
            if start.elapsed() > spin {
                return done();
            }
            // a thread that shares its CPU with the one it waits for (the scheduler had not
            // yet spread a new process's threads) lets it run
            std::thread::yield_now();
        }
    }
}

/// A barrier for `n` threads whose waiters spin for `spin` before they sleep.
struct Gate {
    n: usize,
    spin: Duration,
    /// The threads at the barrier of this generation.
    count: AtomicUsize,
    /// The barriers passed so far.
    generation: AtomicU64,
    /// The threads asleep (changed under `lock`).
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    woken: Condvar,
}

impl Gate {
    fn new(n: usize, spin: Duration) -> Gate {
        Gate {
            n,
            spin,
            count: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            woken: Condvar::new(),
        }
    }

    /// Returns when all `n` threads have called it (once each per generation).
    fn wait(&self) {
        let g = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            // the last: the count is reset before the others can see the new generation (and
            // come to the next barrier); a sleeper checks the generation under the lock
            self.count.store(0, Ordering::Relaxed);
            let _l = lock(&self.lock);
            self.generation.store(g + 1, Ordering::Release);
            if self.sleepers.load(Ordering::Relaxed) > 0 {
                self.woken.notify_all();
            }
            return;
        }
        if spin_until(self.spin, || self.generation.load(Ordering::Acquire) != g) {
            return;
        }
        let mut l = lock(&self.lock);
        self.sleepers.fetch_add(1, Ordering::Relaxed);
        while self.generation.load(Ordering::Acquire) == g {
            l = self.woken.wait(l).unwrap_or_else(|e| e.into_inner());
        }
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One run, as every thread sees it.
struct Job {
    arena: Arena,
    steps: Arc<[Step]>,
    barrier: Arc<Gate>,
    /// One share per thread of the run.
    shares: Arc<[Mutex<Share>]>,
    /// The number of the run's first step (steps are numbered across runs, from 1).
    first: u64,
    /// The inputs every thread copies a part of before the first step.
    copies: Copies,
}

pub struct Pool {
    senders: Vec<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
    barrier: Arc<Gate>,
    shares: Arc<[Mutex<Share>]>,
    /// The steps run so far: where the next run's numbers start.
    numbered: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // a share or the gate's lock holds no invariant a panic could break half-way
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes `want(left)` indices (at least one) from the front of `share`, or from its back;
/// `None` when it is empty.
fn take(share: &Mutex<Share>, front: bool, want: fn(usize) -> usize) -> Option<(usize, usize)> {
    let mut s = lock(share);
    let left = s.hi - s.lo;
    if left == 0 {
        return None;
    }
    let k = want(left).clamp(1, left);
    Some(if front {
        s.lo += k;
        (s.lo - k, s.lo)
    } else {
        s.hi -= k;
        (s.hi, s.hi + k)
    })
}

/// Thread `t`'s part (of `n` threads, a share each) of the split step `s`, numbered `step`: the
/// first thread to reach it deals the shares; each thread then runs its own share two thirds
/// of what is left at a time, then halves of the others' from their back. A step that is not
/// [`Step::fine`] (or has one thread) is run a share per thread, each in one call. Shares and
/// slices are whole grains of the range ([`Step::grain`]; the last grain may be short): a
/// pooling kernel computes a register's lanes of planes at a time, and a slice of fewer costs it as much
/// (Inception v2's 3 × 3 average pools over 576 planes of 14 × 14 took 1.2–1.4× as long on two
/// threads as on one, in slices of a few planes).
fn run_split(t: usize, s: &Step, step: u64, arena: Arena, shares: &[Mutex<Share>]) {
    let n = shares.len();
    let grain = s.grain.max(1);
    // the range in grains: grains [b, e) are indices [b·grain, min(e·grain, extent))
    let grains = s.extent.div_ceil(grain);
    let run = |b: usize, e: usize| {
        // SAFETY: a slice of the kernel's own range over the arena it was compiled for, taken
        // by this thread alone (the shares are disjoint, and so are the slices of a share).
        unsafe {
            (s.f)(
                arena.0,
                (b * grain).min(s.extent) as i64,
                (e * grain).min(s.extent) as i64,
            )
        }
    };
    if !s.fine || n == 1 {
        run(grains * t / n, grains * (t + 1) / n);
        return;
    }
    for (u, share) in shares.iter().enumerate() {
        let mut g = lock(share);
        if g.step != step {
            *g = Share {
                step,
                lo: grains * u / n,
                hi: grains * (u + 1) / n,
            };
        }
    }
    for k in 0..n {
        let (u, front) = ((t + k) % n, k == 0);
        let want = if front {
            |left: usize| left - left / 3
        } else {
            |left: usize| left.div_ceil(2)
        };
        while let Some((b, e)) = take(&shares[u], front, want) {
            run(b, e);
        }
    }
}

/// Thread `t`'s part (of as many threads as the job has shares) of every step, in order. A
/// step that is not split runs on thread 0; between two such steps there is no barrier (thread
/// 0 runs both, in order, and the other threads wait at the next barrier), so a chain of small
/// kernels costs no synchronization. Every thread takes the same decisions, so all meet at
/// every barrier, and a split step always has one before it (or is the run's first) and one
/// after it.
fn work(t: usize, job: &Job) {
    if job.copies.len > 0 {
        // SAFETY: `Copies` (the caller's slice, alive until every thread has passed the
        // barrier below); each copy's source holds `len` bytes and its slot in the arena
        // `len` bytes from `offset` (`Pool::run_fed`'s contract), and the threads' parts are
        // disjoint.
        unsafe {
            for c in std::slice::from_raw_parts(job.copies.ptr, job.copies.len) {
                let (b, e) = copy_part(c.len, t, job.shares.len());
                std::ptr::copy_nonoverlapping(c.src.add(b), job.arena.0.add(c.offset + b), e - b);
            }
        }
        job.barrier.wait();
    }
    for (i, s) in job.steps.iter().enumerate() {
        if s.parts > 1 {
            run_split(t, s, job.first + i as u64, job.arena, &job.shares);
        } else if t == 0 {
            // SAFETY: the kernel's whole range over the arena it was compiled for.
            unsafe { (s.f)(job.arena.0, 0, s.extent as i64) };
        }
        let next_alone = job.steps.get(i + 1).is_some_and(|next| next.parts <= 1);
        if s.parts > 1 || !next_alone {
            job.barrier.wait();
        }
    }
}

/// Starts worker `t` running `body`; an error when the thread cannot be started.
type Spawn<'a> = dyn FnMut(usize, Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> + 'a;

impl Pool {
    /// Up to `threads − 1` workers (as many as can be started); the caller's thread is thread 0
    /// of every run.
    pub fn new(threads: usize) -> Pool {
        Pool::with_spawn(threads, &mut |t, body| {
            std::thread::Builder::new()
                .name(format!("kiln-worker-{t}"))
                .spawn(body)
        })
    }

    fn with_spawn(threads: usize, spawn: &mut Spawn<'_>) -> Pool {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        // (spinning threads beyond the CPUs would take the time of the threads they wait for)
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin = if threads <= cpus { SPIN } else { Duration::ZERO };
        for t in 1..threads.max(1) {
            let (tx, rx): (Sender<Job>, Receiver<Job>) = channel();
            let body = Box::new(move || {
                loop {
                    let mut got = Err(TryRecvError::Empty);
                    spin_until(spin, || {
                        got = rx.try_recv();
                        !matches!(got, Err(TryRecvError::Empty))
                    });
                    // (the channel closes when the pool is dropped)
                    let job = match got {
                        Ok(job) => job,
                        Err(TryRecvError::Empty) => match rx.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        },
                        Err(TryRecvError::Disconnected) => return,
                    };
                    work(t, &job);
                }
            });
            match spawn(t, body) {
                Ok(h) => {
                    handles.push(h);
                    senders.push(tx);
                }
                // run on the threads started so far
                Err(_) => break,
            }
        }
        Pool {
            barrier: Arc::new(Gate::new(senders.len() + 1, spin)),
            shares: (0..=senders.len()).map(|_| Mutex::default()).collect(),
            senders,
            handles,
            numbered: AtomicU64::new(1),
        }
    }

    /// The threads a run uses, the caller's included.
    pub fn threads(&self) -> usize {
        self.senders.len() + 1
    }

    /// Runs `steps` over `arena` on every thread; returns when all of them are done.
    ///
    /// # Safety
    /// `arena` must be valid for every kernel of `steps` and not be accessed by anyone else
    /// until this returns.
    pub unsafe fn run(&self, arena: *mut u8, steps: &Arc<[Step]>) {
        // SAFETY: forwarded from the caller; no copies.
        unsafe { self.run_fed(arena, &[], steps) }
    }

    /// [`Pool::run`] after copying `copies` into the arena, each thread a part of each (a
    /// barrier between the copies and the first step).
    ///
    /// # Safety
    /// As [`Pool::run`]; each copy's `src` must be valid for reading `len` bytes until this
    /// returns, and `[offset, offset + len)` lie inside the arena, not overlapping another
    /// copy's nor `src`.
    pub unsafe fn run_fed(&self, arena: *mut u8, copies: &[InputCopy], steps: &Arc<[Step]>) {
        let first = self.numbered.fetch_add(steps.len() as u64, Ordering::Relaxed);
        let job = || Job {
            arena: Arena(arena),
            steps: Arc::clone(steps),
            barrier: Arc::clone(&self.barrier),
            shares: Arc::clone(&self.shares),
            first,
            copies: Copies {
                ptr: copies.as_ptr(),
                len: copies.len(),
            },
        };
        for tx in &self.senders {
            // a worker only stops when the pool is dropped, so the send cannot fail here
            let _ = tx.send(job());
        }
        work(0, &job());
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.senders.clear(); // workers see the channel close and return
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds 1 to every byte of `begin..end`.
    unsafe extern "C" fn mark(arena: *mut u8, begin: i64, end: i64) {
        for i in begin..end {
            // SAFETY: the test's arena holds `extent` bytes and the range lies within it.
            unsafe { *arena.add(i as usize) += 1 };
        }
    }

    fn run_marks(pool: &Pool, fine: bool) -> Vec<u8> {
        let mut arena = vec![0u8; 100];
        let steps: Arc<[Step]> = [(8, fine), (1, true), (3, fine), (2, true)]
            .map(|(parts, fine)| Step {
                f: mark,
                extent: 100,
                parts,
                fine,
                grain: 1,
            })
            .into();
        // SAFETY: every step writes within the 100 bytes of `arena`, which nothing else touches.
        unsafe { pool.run(arena.as_mut_ptr(), &steps) };
        arena
    }

    #[test]
    fn every_slice_runs_once_on_any_number_of_threads() {
        for threads in [1, 2, 3, 8, 11] {
            let pool = Pool::new(threads);
            assert_eq!(pool.threads(), threads);
            for fine in [true, false] {
                // twice: the second run's shares are dealt over the first's
                for _ in 0..2 {
                    assert_eq!(run_marks(&pool, fine), vec![4u8; 100], "{threads} threads");
                }
            }
        }
    }

    /// Every thread of a round reaches the gate before any leaves it, over many rounds, with
    /// and without spinning, and with more threads than CPUs (threads that sleep).
    #[test]
    fn no_thread_passes_the_gate_before_all_arrive() {
        for (threads, spin) in [(2, SPIN), (4, SPIN), (5, Duration::ZERO), (16, Duration::ZERO)] {
            let gate = Arc::new(Gate::new(threads, spin));
            let arrived = Arc::new(AtomicUsize::new(0));
            let rounds = 500;
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (gate, arrived) = (Arc::clone(&gate), Arc::clone(&arrived));
                    std::thread::spawn(move || {
                        let mut early = 0;
                        for round in 0..rounds {
                            arrived.fetch_add(1, Ordering::SeqCst);
                            gate.wait();
                            // every thread of this round has arrived
                            if arrived.load(Ordering::SeqCst) < (round + 1) * threads {
                                early += 1;
                            }
                            gate.wait();
                        }
                        early
                    })
                })
                .collect();
            let early: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(early, 0, "{threads} threads");
            assert_eq!(arrived.load(Ordering::SeqCst), rounds * threads);
        }
    }

    /// Which thread ran each index of [`slow_worker`]'s range: 1 the caller's, 2 a worker, 3
    /// more than one call.
    static RAN_BY: Mutex<[u8; 90]> = Mutex::new([0; 90]);

    /// Records who runs `begin..end`, sleeping 30 ms first on a worker thread.
    unsafe extern "C" fn slow_worker(_: *mut u8, begin: i64, end: i64) {
        let worker = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("kiln-worker"));
        if worker {
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        // (no assertion here: a panic cannot unwind out of an `extern "C"` kernel)
        let mut ran = RAN_BY.lock().unwrap_or_else(|e| e.into_inner());
        for i in begin..end {
            let r = &mut ran[i as usize];
            *r = if *r != 0 {
                3
            } else if worker {
                2
            } else {
                1
            };
        }
    }

    /// The calls of `record`: `(begin, end)`.
    static CALLS: Mutex<Vec<(i64, i64)>> = Mutex::new(Vec::new());

    unsafe extern "C" fn record(_: *mut u8, begin: i64, end: i64) {
        lock(&CALLS).push((begin, end));
    }

    /// Shares and slices are whole grains (the last may be short) and cover the range once.
    #[test]
    fn slices_are_whole_grains() {
        for threads in [2, 3] {
            let pool = Pool::new(threads);
            for (fine, grain, extent) in [(true, 8, 100), (false, 8, 100), (true, 8, 5), (true, 3, 31)] {
                lock(&CALLS).clear();
                let steps: Arc<[Step]> = [Step {
                    f: record,
                    extent,
                    parts: threads,
                    fine,
                    grain,
                }]
                .into();
                // SAFETY: the kernel does not touch the arena.
                unsafe { pool.run(std::ptr::null_mut(), &steps) };
                let mut calls: Vec<(i64, i64)> = lock(&CALLS).iter().copied().filter(|c| c.0 < c.1).collect();
                calls.sort();
                let g = grain as i64;
                let e = extent as i64;
                assert!(
                    calls
                        .iter()
                        .all(|&(b, end)| b % g == 0 && (end % g == 0 || end == e)),
                    "{threads} threads, grain {grain}: {calls:?}"
                );
                let mut at = 0;
                for &(b, end) in &calls {
                    assert_eq!(b, at, "every index once: {calls:?}");
                    at = end;
                }
                assert_eq!(at, e, "{calls:?}");
            }
        }
    }

    #[test]
    fn a_slow_thread_leaves_part_of_its_share_to_the_other() {
        let pool = Pool::new(2);
        for fine in [true, false] {
            *RAN_BY.lock().unwrap() = [0; 90];
            let steps: Arc<[Step]> = [Step {
                f: slow_worker,
                extent: 90,
                parts: 2,
                fine,
                grain: 1,
            }]
            .into();
            // SAFETY: the kernel does not touch the arena.
            unsafe { pool.run(std::ptr::null_mut(), &steps) };
            let ran = *RAN_BY.lock().unwrap();
            assert!(
                ran.iter().all(|&r| r == 1 || r == 2),
                "every index runs once: {ran:?}"
            );
            // the caller's share is the first half; of the worker's, the caller takes what
            // the worker has not taken when it is done with its own, unless the step must run
            // a share per call
            let taken = ran[45..].iter().filter(|&&r| r == 1).count();
            if fine {
                assert!(
                    taken > 0,
                    "the caller took none of the slow worker's share: {ran:?}"
                );
                assert!(ran[..45].iter().all(|&r| r == 1), "{ran:?}");
            } else {
                assert_eq!(ran, std::array::from_fn(|i| if i < 45 { 1 } else { 2 }));
            }
        }
    }

    #[test]
    fn threads_that_cannot_start_leave_the_work_to_the_others() {
        let mut started = 0;
        let pool = Pool::with_spawn(8, &mut |_, body| {
            if started == 2 {
                return Err(std::io::Error::other("no more threads"));
            }
            started += 1;
            std::thread::Builder::new().spawn(body)
        });
        assert_eq!(pool.threads(), 3);
        assert_eq!(run_marks(&pool, true), vec![4u8; 100]);
        let alone = Pool::with_spawn(4, &mut |_, _| Err(std::io::Error::other("none")));
        assert_eq!(alone.threads(), 1);
        assert_eq!(run_marks(&alone, false), vec![4u8; 100]);
    }
}
