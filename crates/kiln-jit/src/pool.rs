//! The worker threads of a compiled model: started once with the model, handed one run at a
//! time. In a run, thread `t` computes the `t`-th slice of each kernel's parallel range, and
//! all threads meet at a barrier before the next kernel.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

/// A kernel: `fn(arena, begin, end)`.
pub type KernelFn = unsafe extern "C" fn(*mut u8, i64, i64);

/// One kernel of the run order and how many slices its range is cut into.
#[derive(Clone, Copy)]
pub struct Step {
    pub f: KernelFn,
    pub extent: usize,
    pub parts: usize,
}

/// The arena pointer, shared by the threads for the duration of one run.
#[derive(Clone, Copy)]
struct Arena(*mut u8);

// SAFETY: during a run the threads write disjoint parts of the arena (each index of a kernel's
// parallel range owns its outputs) and a barrier orders one kernel before the next; between
// runs no worker touches it.
unsafe impl Send for Arena {}

struct Job {
    arena: Arena,
    steps: Arc<[Step]>,
}

pub struct Pool {
    senders: Vec<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
    barrier: Arc<Barrier>,
}

/// Thread `t`'s share of every step, in order.
fn work(t: usize, arena: Arena, steps: &[Step], barrier: &Barrier) {
    for s in steps {
        if t < s.parts {
            let (b, e) = (s.extent * t / s.parts, s.extent * (t + 1) / s.parts);
            // SAFETY: a slice of the kernel's own range over the arena it was compiled for.
            unsafe { (s.f)(arena.0, b as i64, e as i64) };
        }
        barrier.wait();
    }
}

impl Pool {
    /// `threads − 1` workers; the caller's thread is thread 0 of every run.
    pub fn new(threads: usize) -> Pool {
        let barrier = Arc::new(Barrier::new(threads));
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for t in 1..threads {
            let (tx, rx): (Sender<Job>, Receiver<Job>) = channel();
            let barrier = Arc::clone(&barrier);
            handles.push(std::thread::spawn(move || {
                while let Ok(job) = rx.recv() {
                    work(t, job.arena, &job.steps, &barrier);
                }
            }));
            senders.push(tx);
        }
        Pool {
            senders,
            handles,
            barrier,
        }
    }

    /// Runs `steps` over `arena` on every thread; returns when all of them are done.
    ///
    /// # Safety
    /// `arena` must be valid for every kernel of `steps` and not be accessed by anyone else
    /// until this returns.
    pub unsafe fn run(&self, arena: *mut u8, steps: &Arc<[Step]>) {
        let arena = Arena(arena);
        for tx in &self.senders {
            // a worker only stops when the pool is dropped, so the send cannot fail here
            let _ = tx.send(Job {
                arena,
                steps: Arc::clone(steps),
            });
        }
        work(0, arena, steps, &self.barrier);
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
