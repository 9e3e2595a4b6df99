//! The worker threads of a model: started once with the model, handed one run at a
//! time. In a run, thread `t` of `n` computes the slices `t`, `t + n`, … of each kernel's
//! parallel range, and all threads meet at a barrier before the next kernel.
//!
//! A worker that cannot be started (the system's thread limit, memory) is not an error: the
//! pool runs on the threads it has, and each of them takes more slices. The slices are the
//! same, so the results are bit-identical whatever the number of threads.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

use kiln_jit::Step;

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
    barrier: Arc<Barrier>,
    /// The threads of the run, the caller's included: every one waits at the barrier.
    threads: usize,
}

pub struct Pool {
    senders: Vec<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
    barrier: Arc<Barrier>,
}

/// Thread `t`'s share (of `n` threads) of every step, in order. A step that is not split runs
/// on thread 0; between two such steps there is no barrier (thread 0 runs both, in order, and
/// the other threads wait at the next barrier), so a chain of small kernels costs no
/// synchronization. Every thread takes the same decisions, so all meet at every barrier.
fn work(t: usize, n: usize, arena: Arena, steps: &[Step], barrier: &Barrier) {
    for (i, s) in steps.iter().enumerate() {
        for part in (t..s.parts).step_by(n) {
            let (b, e) = (s.extent * part / s.parts, s.extent * (part + 1) / s.parts);
            // SAFETY: a slice of the kernel's own range over the arena it was compiled for.
            unsafe { (s.f)(arena.0, b as i64, e as i64) };
        }
        let next_alone = steps.get(i + 1).is_some_and(|next| next.parts <= 1);
        if s.parts > 1 || !next_alone {
            barrier.wait();
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
        for t in 1..threads.max(1) {
            let (tx, rx): (Sender<Job>, Receiver<Job>) = channel();
            let body = Box::new(move || {
                while let Ok(job) = rx.recv() {
                    work(t, job.threads, job.arena, &job.steps, &job.barrier);
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
            barrier: Arc::new(Barrier::new(senders.len() + 1)),
            senders,
            handles,
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
        let arena = Arena(arena);
        for tx in &self.senders {
            // a worker only stops when the pool is dropped, so the send cannot fail here
            let _ = tx.send(Job {
                arena,
                steps: Arc::clone(steps),
                barrier: Arc::clone(&self.barrier),
                threads: self.threads(),
            });
        }
        work(0, self.threads(), arena, steps, &self.barrier);
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

    fn run_marks(pool: &Pool) -> Vec<u8> {
        let mut arena = vec![0u8; 100];
        let steps: Arc<[Step]> = vec![
            Step {
                f: mark,
                extent: 100,
                parts: 8,
            },
            Step {
                f: mark,
                extent: 100,
                parts: 1,
            },
            Step {
                f: mark,
                extent: 100,
                parts: 3,
            },
        ]
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
            assert_eq!(run_marks(&pool), vec![3u8; 100], "{threads} threads");
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
        assert_eq!(run_marks(&pool), vec![3u8; 100]);
        let alone = Pool::with_spawn(4, &mut |_, _| Err(std::io::Error::other("none")));
        assert_eq!(alone.threads(), 1);
        assert_eq!(run_marks(&alone), vec![3u8; 100]);
    }
}
