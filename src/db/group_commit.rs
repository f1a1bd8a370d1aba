//! Group commit: many small pieces of work written in one transaction.
//!
//! Work submitted while this wing's writers are busy queues up; the next free
//! writer takes everything queued (up to a count and a weight) into one
//! transaction. A busy instance then pays a transaction's round trips, and
//! Postgres a commit, once per batch rather than once per piece. Nothing
//! waits to fill a batch: work that finds a writer and a connection free is
//! written at once, alone. Each piece gets its own answer, and it comes only
//! after the commit that made it durable.
//!
//! The wing knows no SQL: it is given the function that writes a batch, and
//! that function must write a batch of one exactly as it writes one piece
//! among many. That is what keeps one piece from failing another. When a
//! batch fails with nothing committed, each of its pieces is written again
//! alone, so only the pieces that fail by themselves get an error. (A batch
//! whose `COMMIT` outcome is unknown is not retried: it may have committed.)
//!
//! A piece waits at most its deadline (the pool's acquire timeout) to be
//! taken into a batch, or to be written alone; past that it gets
//! [`Error::NotStarted`] and is not written. A batch that failed because the
//! database is unavailable is not split: each piece alone would fail the
//! same way, only later. A piece whose caller stopped waiting before its batch started is
//! dropped unwritten, as if it had never been submitted.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::{Db, Error, Transaction};

/// Something the wing writes: how much of a batch's weight it takes.
pub trait Batched: Send + 'static {
    /// Counted against [`GroupCommitLimits::max_weight`].
    fn weight(&self) -> usize;
}

#[derive(Debug, Clone, Copy)]
pub struct GroupCommitLimits {
    /// Writers, each with at most one transaction open. Fewer writers than
    /// connections make bigger batches and leave connections for other work.
    pub writers: usize,
    /// Most pieces in one transaction.
    pub max_pieces: usize,
    /// Most weight in one transaction; a batch always takes its first piece.
    pub max_weight: usize,
    /// Pieces held before `submit` waits for room.
    pub queue: usize,
}

/// The submitting side. Dropped, its writers finish what they hold and stop.
pub struct GroupCommit<P, O> {
    queue: mpsc::Sender<Queued<P, O>>,
    deadline: Duration,
}

struct Queued<P, O> {
    piece: P,
    deadline: Instant,
    answer: oneshot::Sender<Result<O, Error>>,
}

impl<P: Batched, O: Send + 'static> GroupCommit<P, O> {
    /// Starts the writers as tasks local to the calling thread, which must
    /// run a [`tokio::task::LocalSet`] (every HTTP worker thread does): the
    /// writers use the connections of that thread's pool, which are driven
    /// by that thread. `write` writes a batch in the transaction it is given
    /// and returns one output per piece, in order.
    pub fn start<W>(db: Db, limits: GroupCommitLimits, write: W) -> Self
    where
        W: AsyncFn(&mut Transaction<'_>, &[P]) -> Result<Vec<O>, sqlx::Error> + 'static,
    {
        let (queue, receiver) = mpsc::channel(limits.queue.max(1));
        let deadline = db.pool.options().get_acquire_timeout();
        let shared = Rc::new(Writers {
            queue: Mutex::new(Queue {
                receiver,
                held_over: None,
            }),
            db,
            limits,
            deadline,
            write,
        });
        for _ in 0..limits.writers.max(1) {
            tokio::task::spawn_local(shared.clone().write_batches());
        }
        Self { queue, deadline }
    }

    /// Writes `piece`, with whatever else is queued, and answers once it has
    /// committed.
    pub async fn submit(&self, piece: P) -> Result<O, Error> {
        let stopped = || Error::Sql(sqlx::Error::PoolClosed);
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            piece,
            deadline: Instant::now() + self.deadline,
            answer,
        };
        self.queue.send(queued).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Pieces queued and not yet taken into a batch.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

struct Writers<P, O, W> {
    queue: Mutex<Queue<P, O>>,
    db: Db,
    limits: GroupCommitLimits,
    /// How long a piece may wait to be taken into a batch.
    deadline: Duration,
    write: W,
}

/// The pieces waiting for a writer, and the one that did not fit in the last
/// batch taken.
struct Queue<P, O> {
    receiver: mpsc::Receiver<Queued<P, O>>,
    held_over: Option<Queued<P, O>>,
}

impl<P: Batched, O> Queue<P, O> {
    async fn next(&mut self) -> Option<Queued<P, O>> {
        match self.held_over.take() {
            Some(queued) => Some(queued),
            None => self.receiver.recv().await,
        }
    }

    /// `first` and the pieces queued behind it, as many as the limits allow.
    fn batch(&mut self, first: Queued<P, O>, limits: &GroupCommitLimits) -> Vec<Queued<P, O>> {
        let mut weight = first.piece.weight();
        let mut batch = vec![first];
        while batch.len() < limits.max_pieces
            && let Ok(next) = self.receiver.try_recv()
        {
            weight += next.piece.weight();
            if weight > limits.max_weight {
                self.held_over = Some(next);
                break;
            }
            batch.push(next);
        }
        batch
    }
}

impl<P, O, W> Writers<P, O, W>
where
    P: Batched,
    O: Send + 'static,
    W: AsyncFn(&mut Transaction<'_>, &[P]) -> Result<Vec<O>, sqlx::Error>,
{
    async fn write_batches(self: Rc<Self>) {
        loop {
            let mut queue = self.queue.lock().await;
            let Some(first) = queue.next().await else {
                return;
            };
            // Pieces that arrive while a connection is found join this batch.
            let connection = self.db.acquire().await;
            let mut batch = queue.batch(first, &self.limits);
            drop(queue);
            batch = still_wanted(batch, self.deadline);
            if batch.is_empty() {
                continue;
            }
            let connection = match connection {
                Ok(connection) => connection,
                Err(error) => {
                    answer_all(batch.into_iter().map(|q| q.split().1).collect(), error);
                    continue;
                }
            };
            let (pieces, waiting): (Vec<P>, Vec<Waiting<O>>) =
                batch.into_iter().map(Queued::split).unzip();
            let outcome = connection
                .transaction(async |transaction| (self.write)(transaction, &pieces).await)
                .await;
            match outcome {
                Ok(outputs) if outputs.len() == pieces.len() => {
                    for (waiting, output) in waiting.into_iter().zip(outputs) {
                        let _ = waiting.answer.send(Ok(output));
                    }
                }
                Ok(outputs) => {
                    // A bug in `write`; its work is committed, but which
                    // output is whose cannot be told.
                    tracing::error!(
                        pieces = pieces.len(),
                        outputs = outputs.len(),
                        "A batch write returned the wrong number of outputs"
                    );
                    answer_all(waiting, wrong_number_of_outputs());
                }
                // Postgres refused something in the batch, not the batch as
                // such: find out which piece, by writing each alone. When
                // the database is unavailable, every piece alone would fail
                // the same way, only later.
                Err(error)
                    if pieces.len() > 1 && error.nothing_committed() && !error.is_unavailable() =>
                {
                    tracing::warn!(
                        pieces = pieces.len(),
                        error = %crate::telemetry::error_chain_line(&error),
                        "A batch failed; writing its pieces one at a time"
                    );
                    self.write_alone(pieces, waiting).await;
                }
                Err(error) => answer_all(waiting, error),
            }
        }
    }

    /// Writes each piece in a transaction of its own, so that only the
    /// pieces that fail by themselves fail. A piece past its deadline by
    /// then is answered without being written.
    async fn write_alone(&self, pieces: Vec<P>, waiting: Vec<Waiting<O>>) {
        for (piece, waiting) in pieces.into_iter().zip(waiting) {
            if waiting.answer.is_closed() {
                continue;
            }
            if Instant::now() >= waiting.deadline {
                let _ = waiting.answer.send(Err(Error::NotStarted(self.deadline)));
                continue;
            }
            let alone = std::slice::from_ref(&piece);
            let outcome = self
                .db
                .transaction(async |transaction| (self.write)(transaction, alone).await)
                .await
                .and_then(|mut outputs| match (outputs.pop(), outputs.is_empty()) {
                    (Some(output), true) => Ok(output),
                    _ => Err(wrong_number_of_outputs()),
                });
            let _ = waiting.answer.send(outcome);
        }
    }
}

impl<P, O> Queued<P, O> {
    /// The piece, and who waits for its answer.
    fn split(self) -> (P, Waiting<O>) {
        let waiting = Waiting {
            answer: self.answer,
            deadline: self.deadline,
        };
        (self.piece, waiting)
    }
}

/// The error for pieces whose `write` returned more or fewer outputs than
/// it was given pieces: a bug in `write`, whose outcome cannot be told apart.
fn wrong_number_of_outputs() -> Error {
    Error::Sql(sqlx::Error::Protocol(
        "the batch write returned the wrong number of outputs".into(),
    ))
}

/// A piece's caller, waiting for its answer until a deadline.
struct Waiting<O> {
    answer: oneshot::Sender<Result<O, Error>>,
    deadline: Instant,
}

/// Drops the pieces whose caller gave up, and answers those past their
/// deadline without writing them.
fn still_wanted<P, O>(batch: Vec<Queued<P, O>>, deadline: Duration) -> Vec<Queued<P, O>> {
    let now = Instant::now();
    batch
        .into_iter()
        .filter(|queued| !queued.answer.is_closed())
        .filter_map(|queued| {
            if now < queued.deadline {
                return Some(queued);
            }
            let _ = queued.answer.send(Err(Error::NotStarted(deadline)));
            None
        })
        .collect()
}

/// Gives every piece of a batch the batch's error.
fn answer_all<O>(waiting: Vec<Waiting<O>>, error: Error) {
    let mut waiting = waiting.into_iter();
    let Some(last) = waiting.next_back() else {
        return;
    };
    for other in waiting {
        let _ = other.answer.send(Err(copy_of(&error)));
    }
    let _ = last.answer.send(Err(error));
}

/// The same error for another piece of a batch. `sqlx::Error` cannot be
/// cloned; what callers branch on (whether the database is unavailable) and
/// what is logged (the message) survive the copy.
fn copy_of(error: &Error) -> Error {
    match error {
        Error::TimedOut(d) => Error::TimedOut(*d),
        Error::NotStarted(d) => Error::NotStarted(*d),
        Error::CommitUnknown(e) => Error::CommitUnknown(copy_sqlx(e)),
        Error::Sql(e) => Error::Sql(copy_sqlx(e)),
    }
}

fn copy_sqlx(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        other if super::is_unavailable(other) => sqlx::Error::Protocol(other.to_string()),
        other => sqlx::Error::Configuration(other.to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Piece(usize);

    impl Batched for Piece {
        fn weight(&self) -> usize {
            self.0
        }
    }

    fn queued(weight: usize) -> Queued<Piece, ()> {
        Queued {
            piece: Piece(weight),
            deadline: Instant::now() + Duration::from_secs(60),
            answer: oneshot::channel().0,
        }
    }

    fn limits(max_pieces: usize, max_weight: usize) -> GroupCommitLimits {
        GroupCommitLimits {
            writers: 1,
            max_pieces,
            max_weight,
            queue: 64,
        }
    }

    /// A queue holding pieces of the given weights, in order.
    fn queue_of(weights: &[usize]) -> Queue<Piece, ()> {
        let (sender, receiver) = mpsc::channel(64);
        for &weight in weights {
            sender.try_send(queued(weight)).ok().unwrap();
        }
        Queue {
            receiver,
            held_over: None,
        }
    }

    fn weights(batch: &[Queued<Piece, ()>]) -> Vec<usize> {
        batch.iter().map(|q| q.piece.0).collect()
    }

    #[tokio::test]
    async fn a_batch_stops_before_its_weight_limit_and_the_next_piece_starts_the_next() {
        let mut queue = queue_of(&[4, 4, 4, 1]);
        let limits = limits(10, 10);

        let first = queue.next().await.unwrap();
        assert_eq!(weights(&queue.batch(first, &limits)), [4, 4]);
        let next = queue.next().await.unwrap();
        assert_eq!(weights(&queue.batch(next, &limits)), [4, 1]);
    }

    #[tokio::test]
    async fn a_batch_takes_at_most_its_number_of_pieces() {
        let mut queue = queue_of(&[1, 1, 1, 1, 1]);

        let first = queue.next().await.unwrap();
        assert_eq!(queue.batch(first, &limits(3, 100)).len(), 3);
    }

    #[tokio::test]
    async fn a_piece_heavier_than_the_limit_is_still_written_alone() {
        let mut queue = queue_of(&[50, 1]);

        let first = queue.next().await.unwrap();
        assert_eq!(weights(&queue.batch(first, &limits(10, 10))), [50]);
    }

    #[test]
    fn pieces_past_their_deadline_are_answered_unwritten_and_abandoned_ones_dropped() {
        let (answer, mut late_answer) = oneshot::channel();
        let late = Queued {
            piece: Piece(1),
            deadline: Instant::now() - Duration::from_millis(1),
            answer,
        };
        let abandoned = queued(1);
        let on_time = queued(2);

        let (kept_answer, _kept_answered) = oneshot::channel::<Result<(), Error>>();
        let kept = Queued {
            answer: kept_answer,
            ..on_time
        };
        let batch = still_wanted(vec![late, abandoned, kept], Duration::from_secs(2));

        assert_eq!(weights(&batch), [2]);
        assert!(matches!(
            late_answer.try_recv(),
            Ok(Err(Error::NotStarted(_)))
        ));
    }
}
