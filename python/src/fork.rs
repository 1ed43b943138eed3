//! The fork generation of this process: a counter that every fork raises in the child. Native
//! state records the generation that created it. A verification compares two integers to find
//! whether the state is its worker's own or was inherited through a fork, where comparing
//! process ids would cost a system call on every request.
//!
//! The counter is raised by a `pthread_atfork` handler, which the C library runs in the child of
//! every `fork()`: `os.fork()` as gunicorn and `multiprocessing` call it, and also a server that
//! forks without telling Python, such as uWSGI without `py-call-osafterfork`. A child created
//! with `vfork` or `posix_spawn` runs no Python before it executes another program, so it needs
//! no state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Whether the handler is registered, so that a second import registers no second handler and a
/// failed registration is tried again.
static REGISTERED: Mutex<bool> = Mutex::new(false);

/// Returns the fork generation of this process: 0 in the process that loaded the module, and one
/// more in each child than in its parent.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Registers the handler that raises the generation in every child of `fork()`. Returns the
/// error number when the C library cannot register it (it is out of memory).
pub(crate) fn register() -> Result<(), i32> {
    let mut registered = REGISTERED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !*registered {
        register_handler()?;
        *registered = true;
    }
    Ok(())
}

#[cfg(unix)]
fn register_handler() -> Result<(), i32> {
    // SAFETY: `after_fork_in_child` only performs an atomic add, which is async-signal-safe, as
    // a handler that runs in the child of a multithreaded process must be. The function pointer
    // stays valid because Python never unloads an extension module.
    let code = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    if code == 0 {
        Ok(())
    } else {
        Err(code)
    }
}

#[cfg(not(unix))]
fn register_handler() -> Result<(), i32> {
    // There is no fork without Unix, so the generation never changes.
    Ok(())
}

#[cfg(unix)]
extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}
