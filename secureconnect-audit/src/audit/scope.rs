//! How a handler's [`Auditor`](crate::Auditor) finds its request's context without the
//! layer allocating anything for requests that never ask for it.
//!
//! The layer keeps the context it captured in its response future ([`Held::Owned`]) and
//! lends it to the thread for the time it polls the inner service ([`Scope`]), much as a
//! tracing span is entered. An `Auditor` taken in that time moves the context into an
//! `Arc` it shares with the future ([`Held::Shared`]): only requests whose handlers
//! record something pay for the reference count.

use std::cell::Cell;
use std::sync::Arc;

use crate::context::RequestContext;

/// A request's context as its response future holds it.
#[derive(Debug)]
// Inline on purpose: boxing the owned context is the allocation this avoids.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Held {
    /// Nobody else has it (the usual case): no allocation.
    Owned(RequestContext),
    /// An [`Auditor`](crate::Auditor) has it too.
    Shared(Arc<RequestContext>),
}

impl Held {
    pub(crate) fn get(&self) -> &RequestContext {
        match self {
            Self::Owned(ctx) => ctx,
            Self::Shared(ctx) => ctx,
        }
    }
}

thread_local! {
    /// The context of the request whose inner service this thread is polling.
    static CURRENT: Cell<Option<Held>> = const { Cell::new(None) };
}

/// Lends `slot`'s context to the thread until dropped (also on unwinding), then takes
/// it back, shared if an `Auditor` asked for it, and puts back what was lent before (an
/// outer layer's context).
pub(crate) struct Scope<'a> {
    slot: &'a mut Option<Held>,
    outer: Option<Held>,
    entered: bool,
}

impl<'a> Scope<'a> {
    pub(crate) fn enter(slot: &'a mut Option<Held>) -> Self {
        let mut lent = slot.take();
        let outer = CURRENT.try_with(|current| current.replace(lent.take()));
        // When the thread is being torn down nothing is lent: its handler finds no
        // context, the layer still records the response.
        let entered = outer.is_ok();
        if !entered {
            *slot = lent;
        }
        Self {
            slot,
            outer: outer.ok().flatten(),
            entered,
        }
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        if !self.entered {
            return;
        }
        let outer = self.outer.take();
        if let Ok(lent) = CURRENT.try_with(|current| current.replace(outer)) {
            *self.slot = lent;
        }
    }
}

/// The context lent to this thread, shared from now on; `None` outside a layer's poll.
pub(crate) fn share() -> Option<Arc<RequestContext>> {
    CURRENT
        .try_with(|current| {
            let shared = match current.take()? {
                Held::Owned(ctx) => Arc::new(ctx),
                Held::Shared(ctx) => ctx,
            };
            current.set(Some(Held::Shared(Arc::clone(&shared))));
            Some(shared)
        })
        .ok()
        .flatten()
}
