//! An OpenMP-style team for the parallel phases of one CPU kernel call.
//!
//! A MiniLM forward is about 80 parallel phases (passes, packing B, summing depth slices), each
//! a few dozen µs to a few ms. Through rayon alone, every phase wakes the pool's sleeping
//! threads one after the other (a futex round trip each, slow on a VM's idle vCPUs) and its
//! idle threads go back to sleep after a few dozen yields. PyTorch's OpenMP threads instead
//! spin between regions. Here the thread that calls a kernel drives: at its first parallel
//! phase it enlists the rest of rayon's pool (one broadcast per call), whose threads then wait
//! for the next phase spinning for a while, then parked, until the call ends. A phase hands
//! out its task indices through an atomic counter, to the driver as well.
//!
//! Nothing the driver waits for goes through rayon's queues, so a member that rayon starts
//! inside some other job's wait cannot deadlock the call (it only delays that job until the
//! call ends). A task that forks again runs the inner phase on its own thread. Outside a
//! team (a kernel called from inside rayon's pool, `MIA_CPU_TEAM=0`), phases are rayon
//! parallel iterators as before.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

thread_local! {
    /// The team this thread drives, during a kernel call.
    static DRIVING: RefCell<Option<Arc<Team>>> = const { RefCell::new(None) };
    /// True while this thread runs a task of a phase: a fork inside one runs inline.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f(i)` for every `i` in `0..n`, in parallel when that can help; each index exactly
/// once. Returns when all have returned; a panic in any is resumed here.
pub fn fork(n: usize, f: impl Fn(usize) + Sync + Send) {
    if n <= 1 || IN_TASK.with(Cell::get) {
        return (0..n).for_each(f);
    }
    match DRIVING.with(|d| d.borrow().clone()) {
        Some(team) => team.fork(n, &f),
        None if rayon::current_num_threads() <= 1 => (0..n).for_each(f),
        None => {
            use rayon::prelude::*;
            (0..n).into_par_iter().for_each(f)
        }
    }
}

/// [`fork`] over `data` cut into chunks of `len` elements (the last may be shorter):
/// `f(i, chunk i)`.
pub fn fork_chunks_mut<T: Send>(
    data: &mut [T],
    len: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let (total, len) = (data.len(), len.max(1));
    let base = crate::rt::OutPtr(data.as_mut_ptr());
    fork(total.div_ceil(len), move |i| {
        let start = i * len;
        // SAFETY: `fork` calls each index once, so the chunks are disjoint; each lies inside
        // `data`, which is borrowed mutably until `fork` returns.
        let chunk = unsafe {
            std::slice::from_raw_parts_mut(base.get().add(start), len.min(total - start))
        };
        f(i, chunk)
    });
}

/// [`fork`] over the rows of `data` (`width` elements each), grouped into about four tasks
/// per thread: `f(r, row r)`.
pub fn fork_rows_mut<T: Send>(
    data: &mut [T],
    width: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let width = width.max(1);
    let rows = data.len().div_ceil(width);
    let per = rows
        .div_ceil(4 * rayon::current_num_threads().max(1))
        .max(1);
    fork_chunks_mut(data, per * width, |c, block| {
        for (k, row) in block.chunks_mut(width).enumerate() {
            f(c * per + k, row)
        }
    });
}

/// [`fork`] over owned items: `f(item)` for each.
pub fn fork_items<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    fork(slots.len(), |i| {
        let item = slots.get(i).and_then(|s| match s.lock() {
            Ok(mut s) => s.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        });
        if let Some(item) = item {
            f(item)
        }
    });
}

/// Whether a kernel call on this thread would drive a team: not on a rayon thread (there a
/// phase is one of rayon's own fork-joins), not while already driving, not with a pool of one
/// thread, not with `MIA_CPU_TEAM=0`.
pub fn can_drive() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    let off = *OFF.get_or_init(|| crate::rt::env_switch("MIA_CPU_TEAM") == Some(false));
    !off && rayon::current_thread_index().is_none()
        && rayon::current_num_threads() > 1
        && DRIVING.with(|d| d.borrow().is_none())
}

/// Runs `f` (a kernel call's CPU passes) with this thread driving a team; the pool's threads
/// join at the first parallel phase and leave when `f` returns or unwinds.
pub fn drive<T>(f: impl FnOnce() -> T) -> T {
    let team = Arc::new(Team::default());
    DRIVING.with(|d| *d.borrow_mut() = Some(team.clone()));
    /// Ends the team when the call returns or unwinds.
    struct End(Arc<Team>);
    impl Drop for End {
        fn drop(&mut self) {
            DRIVING.with(|d| d.borrow_mut().take());
            self.0.done.store(true, SeqCst);
            self.0.wake();
        }
    }
    let _end = End(team);
    f()
}

/// One phase: `f` over `0..n`, published to the team for the length of [`Team::fork`].
struct Phase<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    /// The next index to hand out.
    next: AtomicUsize,
    /// Indices not yet finished.
    left: AtomicUsize,
    /// The first panic of a task, resumed by the driver.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Phase<'_> {
    /// Takes indices until none are left.
    fn work(&self) {
        let was = IN_TASK.with(|t| t.replace(true));
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= self.n {
                break;
            }
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| (self.f)(i))) {
                let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(p);
            }
            self.left.fetch_sub(1, Release);
        }
        IN_TASK.with(|t| t.set(was));
    }
}

#[derive(Default)]
struct Team {
    /// Phases published so far.
    epoch: AtomicUsize,
    /// The phase in progress, or null. It lives on the driver's stack: a member counts itself
    /// in `users` before loading it, and the driver clears it and waits for `users` to drain
    /// before the phase ends (both sides `SeqCst`, so one always sees the other).
    phase: AtomicPtr<Phase<'static>>,
    users: AtomicUsize,
    /// Set when the call ends: members return to rayon.
    done: AtomicBool,
    enlisted: AtomicBool,
    /// Parked members, woken by the next phase.
    parked: Mutex<Vec<Thread>>,
    asleep: AtomicUsize,
}

impl Team {
    fn fork(self: &Arc<Self>, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if !self.enlisted.swap(true, Relaxed) {
            let team = self.clone();
            // Every pool thread but one joins: the driver is the other.
            rayon::spawn_broadcast(move |ctx| {
                if ctx.index() + 1 < ctx.num_threads() {
                    team.member()
                }
            });
        }
        let phase = Phase {
            f,
            n,
            next: AtomicUsize::new(0),
            left: AtomicUsize::new(n),
            panic: Mutex::new(None),
        };
        // The pointer's lifetime is erased; it is only read while `users` counts the reader,
        // and is cleared and drained below before `phase` goes out of scope.
        let ptr = &phase as *const Phase<'_> as *mut Phase<'static>;
        self.phase.store(ptr, SeqCst);
        self.epoch.fetch_add(1, SeqCst);
        self.wake();
        phase.work();
        wait_until(|| phase.left.load(Acquire) == 0);
        self.phase.store(std::ptr::null_mut(), SeqCst);
        wait_until(|| self.users.load(SeqCst) == 0);
        let panic = phase.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }

    /// Unparks parked members.
    fn wake(&self) {
        if self.asleep.load(SeqCst) > 0 {
            let parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
            parked.iter().for_each(Thread::unpark);
        }
    }

    /// A pool thread's part in the call: each new phase's tasks, until the call ends.
    fn member(&self) {
        let mut seen = 0;
        let mut idle = Instant::now();
        let mut spins = 0u32;
        while !self.done.load(Acquire) {
            let epoch = self.epoch.load(SeqCst);
            if epoch != seen {
                seen = epoch;
                self.users.fetch_add(1, SeqCst);
                let phase = self.phase.load(SeqCst);
                // SAFETY: non-null means the driver has not yet drained `users`, which counts
                // this thread, so the phase is still alive.
                if let Some(phase) = unsafe { phase.as_ref() } {
                    phase.work();
                }
                self.users.fetch_sub(1, SeqCst);
                (idle, spins) = (Instant::now(), 0);
                continue;
            }
            spins += 1;
            if !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let waited = idle.elapsed();
            let budget = spin_budget();
            if waited < budget / 8 {
                std::hint::spin_loop();
            } else if waited < budget {
                std::thread::yield_now();
            } else {
                self.park(seen);
                (idle, spins) = (Instant::now(), 0);
            }
        }
    }

    /// Sleeps until the next phase (or the call's end) unparks this thread.
    fn park(&self, seen: usize) {
        let me = std::thread::current();
        self.parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(me.clone());
        self.asleep.fetch_add(1, SeqCst);
        // Checked after counting as asleep: a phase published before this is seen here, one
        // published after sees `asleep` and unparks (an early unpark makes `park` return).
        if self.epoch.load(SeqCst) == seen && !self.done.load(SeqCst) {
            std::thread::park_timeout(Duration::from_millis(50));
        }
        self.asleep.fetch_sub(1, SeqCst);
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = parked.iter().position(|t| t.id() == me.id()) {
            parked.swap_remove(i);
        }
    }
}

/// Spins, then yields, until `done()`.
fn wait_until(done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        spins = spins.saturating_add(1);
        if spins < 1 << 12 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// How long an idle member waits for the next phase before it parks: spinning for an eighth,
/// yielding for the rest. `MIA_CPU_SPIN_US` sets it; by default 1 ms, or 50 µs when the
/// pool has more threads than the machine has CPUs (spinning would then take CPU time from
/// the threads with work).
fn spin_budget() -> Duration {
    static BUDGET: OnceLock<Duration> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let us = std::env::var("MIA_CPU_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse().ok());
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let crowded = rayon::current_num_threads() > cpus;
        Duration::from_micros(us.unwrap_or(if crowded { 50 } else { 1000 }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A pool of several threads even on a small machine (the first test to run sets it).
    fn pool() {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(6)
            .build_global();
    }

    /// Runs `f` on a fresh thread; a deadlock fails the test after a minute instead of hanging.
    fn within_a_minute(f: impl FnOnce() + Send + 'static) {
        pool();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the test panicked or deadlocked");
    }

    /// Runs `f` driving a team, within a minute.
    fn in_a_team(f: impl FnOnce() + Send + 'static) {
        within_a_minute(|| drive(f));
    }

    fn counts(n: usize) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(0)).collect()
    }

    fn once_each(c: &[AtomicU32]) -> bool {
        c.iter().all(|c| c.load(SeqCst) == 1)
    }

    /// Forks `n` counting tasks: whether each ran once.
    fn fork_counts(n: usize) -> bool {
        let c = counts(n);
        fork(n, |i| {
            c[i].fetch_add(1, SeqCst);
        });
        once_each(&c)
    }

    #[test]
    fn a_team_runs_every_index_once_on_several_threads() {
        in_a_team(|| {
            assert!(!can_drive(), "a driving thread starts no second team");
            for n in [0, 1, 2, 3, 7, 64, 1000, 4099] {
                for _ in 0..20 {
                    assert!(fork_counts(n), "n = {n}");
                }
            }
            // Tasks long enough for the members to arrive: more than one thread runs them
            // (tried again while other tests' teams hold the pool's threads).
            let mut seen = 0;
            for _ in 0..100 {
                let threads = Mutex::new(std::collections::HashSet::new());
                fork(64, |_| {
                    std::thread::sleep(Duration::from_millis(2));
                    let id = std::thread::current().id();
                    threads.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
                });
                seen = threads.lock().unwrap_or_else(|e| e.into_inner()).len();
                if seen > 1 {
                    break;
                }
            }
            assert!(seen > 1, "only {seen} thread ran the tasks");
        });
    }

    #[test]
    fn a_fork_inside_a_task_runs_on_that_thread() {
        in_a_team(|| {
            let c = counts(8 * 9);
            fork(8, |i| {
                let outer = std::thread::current().id();
                fork(9, |j| {
                    assert_eq!(std::thread::current().id(), outer);
                    c[i * 9 + j].fetch_add(1, SeqCst);
                })
            });
            assert!(once_each(&c));
        });
    }

    #[test]
    fn a_panicking_task_reaches_the_driver_and_the_team_goes_on() {
        in_a_team(|| {
            let r = catch_unwind(|| {
                fork(100, |i| {
                    if i == 37 {
                        panic!("task 37 fails");
                    }
                })
            });
            let msg = r.expect_err("the panic is resumed");
            assert_eq!(msg.downcast_ref::<&str>(), Some(&"task 37 fails"));
            assert!(fork_counts(100));
        });
    }

    #[test]
    fn chunks_rows_and_items_cover_their_data_once() {
        in_a_team(|| {
            for (len, width) in [(0, 3), (1, 1), (10, 3), (1000, 7), (4096, 384), (5, 0)] {
                let w = width.max(1);
                let by_row = |data: &[u32]| {
                    data.iter()
                        .enumerate()
                        .all(|(k, &x)| x == 1 + (k / w) as u32)
                };
                let mut data = vec![0u32; len];
                fork_chunks_mut(&mut data, width, |i, c| {
                    c.iter_mut().for_each(|x| *x += 1 + i as u32)
                });
                assert!(by_row(&data), "chunks of {width} in {len}");
                let mut data = vec![0u32; len];
                fork_rows_mut(&mut data, width, |r, row| {
                    row.iter_mut().for_each(|x| *x += 1 + r as u32)
                });
                assert!(by_row(&data), "rows of {width} in {len}");
            }
            let c = counts(77);
            fork_items((0..77).collect(), |i: usize| {
                c[i].fetch_add(1, SeqCst);
            });
            assert!(once_each(&c));
        });
    }

    /// Teams driven from several threads at once, while rayon runs nested joins that fork
    /// (inline, rayon's way) and members may start inside those joins' waits.
    #[test]
    fn concurrent_teams_and_rayon_work_finish() {
        use rayon::prelude::*;
        within_a_minute(|| {
            let drivers: Vec<_> = (0..4)
                .map(|_| {
                    std::thread::spawn(|| {
                        for _ in 0..100 {
                            drive(|| assert!([5, 50, 500].into_iter().all(fork_counts)));
                        }
                    })
                })
                .collect();
            for _ in 0..50 {
                let total: usize = (0..64usize)
                    .into_par_iter()
                    .map(|i| {
                        assert!(fork_counts(16));
                        i
                    })
                    .sum();
                assert_eq!(total, 64 * 63 / 2);
            }
            for d in drivers {
                d.join().expect("a driver thread panicked");
            }
        });
    }
}
