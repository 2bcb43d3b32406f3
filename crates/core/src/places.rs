//! A cap on how many connections a server holds at once, which may change while it runs.
//!
//! A seed peer's upload cap comes from its seed-peer cluster's `load_limit` and changes when
//! an operator edits the cluster, so the cap cannot be a plain semaphore sized once. Raising
//! it adds places at once; lowering it never cuts a connection being served: the places
//! above the new cap are withdrawn as they come free, before anyone else can take them.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Places for connections, at most [`Places::cap`] taken at once.
#[derive(Debug)]
pub struct Places {
    free: Arc<Semaphore>,
    books: Mutex<Books>,
}

#[derive(Debug)]
struct Books {
    /// The cap in force.
    cap: usize,
    /// Places still held above the cap after it was lowered, withdrawn as they come free.
    owed: usize,
}

impl Places {
    /// `cap` places (at least one).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            free: Arc::new(Semaphore::new(cap)),
            books: Mutex::new(Books { cap, owed: 0 }),
        }
    }

    /// The cap in force.
    pub fn cap(&self) -> usize {
        self.books().cap
    }

    /// Sets the cap (at least one). Connections already held keep their places.
    pub fn set_cap(&self, cap: usize) {
        let cap = cap.max(1);
        let mut b = self.books();
        if cap > b.cap {
            let more = cap - b.cap;
            let forgiven = more.min(b.owed);
            b.owed -= forgiven;
            self.free.add_permits(more - forgiven);
        } else {
            b.owed += b.cap - cap;
        }
        b.cap = cap;
    }

    /// Waits for a place; it is given back when the permit drops. `None` once closed.
    pub async fn take(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            let place = self.free.clone().acquire_owned().await.ok()?;
            let mut b = self.books();
            if b.owed == 0 {
                return Some(place);
            }
            // A place above a lowered cap: withdraw it instead of handing it out.
            b.owed -= 1;
            place.forget();
        }
    }

    /// Places free now (for tests and reports).
    pub fn available(&self) -> usize {
        self.free
            .available_permits()
            .saturating_sub(self.books().owed)
    }

    /// Ends every wait: [`Places::take`] returns `None` from now on.
    pub fn close(&self) {
        self.free.close();
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Takes every place it can without waiting.
    async fn take_all(p: &Places) -> Vec<OwnedSemaphorePermit> {
        let mut held = Vec::new();
        while let Ok(Some(place)) = tokio::time::timeout(Duration::from_millis(10), p.take()).await
        {
            held.push(place);
        }
        held
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_cap_are_taken() {
        let p = Places::new(3);
        assert_eq!(take_all(&p).await.len(), 3);
        assert_eq!(
            Places::new(0).cap(),
            1,
            "a cap of none would stop the server"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn raising_the_cap_frees_places_at_once() {
        let p = Places::new(2);
        let mut held = take_all(&p).await;
        p.set_cap(5);
        held.extend(take_all(&p).await);
        assert_eq!(held.len(), 5);
        assert_eq!(p.cap(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn lowering_the_cap_keeps_held_places_and_withdraws_them_as_they_come_free() {
        let p = Places::new(4);
        let mut held = take_all(&p).await;
        p.set_cap(2);
        assert_eq!(p.available(), 0);
        // Two of four come free: both are withdrawn, so the two still held fill the cap.
        held.truncate(2);
        assert!(
            take_all(&p).await.is_empty(),
            "a place above the cap was handed out"
        );
        // One more comes free: it is under the cap now and can be taken again.
        held.truncate(1);
        assert_eq!(take_all(&p).await.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn raising_while_places_are_owed_forgives_the_debt_first() {
        let p = Places::new(4);
        let held = take_all(&p).await;
        p.set_cap(1);
        p.set_cap(3);
        drop(held);
        assert_eq!(take_all(&p).await.len(), 3);
        p.set_cap(3);
        assert_eq!(p.cap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_the_wait() {
        let p = Arc::new(Places::new(1));
        let _held = p.take().await.expect("a place");
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.take().await.is_none() }
        });
        tokio::task::yield_now().await;
        p.close();
        assert!(waiter.await.expect("waiter"));
    }
}
