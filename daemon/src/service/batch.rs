//! Group commit: concurrent writes to one room share one transaction.
//!
//! Writes to a room serialise on its lock anyway; one transaction per write would pay for a
//! commit (a WAL flush) and a lock hand-over each. Here the first writer to find the room idle
//! becomes the leader: it takes every write queued for the room so far, runs each in its own
//! savepoint (so one write's failure undoes only that write) inside one transaction holding the
//! room lock, commits, and only then answers each writer. A 200 still means durable.
//!
//! The batch runs in a task of its own, holding the room's leadership: a leader whose client
//! goes away (its request future dropped) neither abandons the other writers of its batch nor
//! turns their committed writes into errors.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use diesel::Connection;
use tokio::sync::oneshot;

use super::ServiceError;
use crate::store::{Db, DbConn, StoreError, rooms};

/// Writes per transaction at most: bounds how long the first writer of a batch waits.
const MAX_BATCH: usize = 64;

type Work<T> = Box<dyn FnOnce(&mut DbConn) -> Result<T, ServiceError> + Send>;

struct Job<T> {
    work: Work<T>,
    reply: oneshot::Sender<Result<T, ServiceError>>,
}

struct Queue<T> {
    jobs: Mutex<Vec<Job<T>>>,
    leader: Arc<tokio::sync::Mutex<()>>,
}

/// Per-room queues of writes that return `T`.
pub struct RoomBatches<T> {
    queues: Mutex<HashMap<String, Arc<Queue<T>>>>,
}

impl<T> std::fmt::Debug for RoomBatches<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomBatches").finish_non_exhaustive()
    }
}

impl<T> Default for RoomBatches<T> {
    fn default() -> Self {
        Self { queues: Mutex::new(HashMap::new()) }
    }
}

impl<T: Send + 'static> RoomBatches<T> {
    /// Runs `work` in a transaction holding `room_id`'s lock, possibly shared with other writes
    /// to the room; returns once that transaction has committed (or failed).
    pub async fn run(
        &self,
        db: &Db,
        room_id: &str,
        work: impl FnOnce(&mut DbConn) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            queues
                .entry(room_id.to_owned())
                .or_insert_with(|| {
                    Arc::new(Queue { jobs: Mutex::new(Vec::new()), leader: Default::default() })
                })
                .clone()
        };
        let (reply, mut answer) = oneshot::channel();
        queue
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Job { work: Box::new(work), reply });
        loop {
            let leader = queue.leader.clone().lock_owned().await;
            // A previous leader may have taken our write; it answers before letting go.
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(StoreError::Pool("the write was dropped".to_owned()).into());
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let jobs: Vec<Job<T>> = {
                let mut jobs = queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
                let n = jobs.len().min(MAX_BATCH);
                jobs.drain(..n).collect()
            };
            let (db, room) = (db.clone(), room_id.to_owned());
            let batch = tokio::spawn(async move {
                run_batch(&db, &room, jobs).await;
                drop(leader);
            });
            // Only a panic ends the task early; the answers then tell (their senders are gone).
            let _ = batch.await;
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(StoreError::Pool("the write was dropped".to_owned()).into());
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // Ours was beyond this batch's limit: lead (or wait for) the next one.
        }
    }
}

async fn run_batch<T: Send + 'static>(db: &Db, room_id: &str, mut jobs: Vec<Job<T>>) {
    let room = room_id.to_owned();
    if jobs.len() <= 1 {
        // Alone in the batch: the transaction itself undoes a failure, no savepoint needed.
        let Some(Job { work, reply }) = jobs.pop() else { return };
        let result = db
            .write(move |conn| -> Result<T, ServiceError> {
                rooms::lock(conn, &room)?;
                work(conn)
            })
            .await;
        let _ = reply.send(result);
        return;
    }
    let (works, replies): (Vec<Work<T>>, Vec<_>) =
        jobs.into_iter().map(|j| (j.work, j.reply)).unzip();
    let outcome = db
        .write(move |conn| -> Result<Vec<Result<T, ServiceError>>, ServiceError> {
            rooms::lock(conn, &room)?;
            // Each write in a savepoint: its error rolls back only its own changes.
            Ok(works.into_iter().map(|work| conn.transaction(work)).collect())
        })
        .await;
    match outcome {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let why = e.to_string();
            for reply in replies {
                let _ =
                    reply.send(Err(StoreError::Pool(format!("the write failed: {why}")).into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::RunQueryDsl;

    use super::*;
    use crate::store::DatabaseUrl;

    /// A SQLite database with an empty `batch_test` table (the directory lives as long as it).
    async fn test_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DatabaseUrl::sqlite(&dir.path().join("t.db"))).await.unwrap();
        db.write(|c| -> Result<(), ServiceError> {
            diesel::sql_query("CREATE TABLE batch_test (x BIGINT NOT NULL)").execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
        (dir, db)
    }

    fn insert(conn: &mut DbConn, x: i64) -> Result<(), ServiceError> {
        diesel::sql_query(format!("INSERT INTO batch_test (x) VALUES ({x})")).execute(conn)?;
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_write_undoes_only_itself_and_everyone_is_answered() {
        let (_dir, db) = test_db().await;
        let batches = Arc::new(RoomBatches::<i64>::default());
        let writes = (0..150).map(|i| {
            let (batches, db) = (batches.clone(), db.clone());
            tokio::spawn(async move {
                batches
                    .run(&db, "!r:x", move |c| {
                        insert(c, i)?;
                        // Every third write fails after writing.
                        if i % 3 == 0 {
                            return Err(ServiceError::Forbidden(format!("no {i}")));
                        }
                        Ok(i)
                    })
                    .await
            })
        });
        let answers: Vec<_> = futures::future::join_all(writes).await;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer.unwrap() {
                Ok(v) => assert_eq!(v, i as i64),
                Err(e) => assert!(i % 3 == 0 && e.to_string() == format!("no {i}"), "{i}: {e}"),
            }
        }
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            x: i64,
        }
        let rows: Vec<Row> = db
            .read(|c| -> Result<_, ServiceError> {
                Ok(diesel::sql_query("SELECT x FROM batch_test ORDER BY x").load(c)?)
            })
            .await
            .unwrap();
        let kept: Vec<i64> = rows.into_iter().map(|r| r.x).collect();
        assert_eq!(kept, (0..150).filter(|i| i % 3 != 0).collect::<Vec<_>>());
    }

    // Issue 15.3: the leader of a batch is a request; its client may go away mid-batch. The
    // other writes of its batch are still committed and answered as such.
    #[tokio::test]
    async fn a_leader_dropped_mid_batch_leaves_the_others_committed_and_answered() {
        let (_dir, db) = test_db().await;
        let batches = Arc::new(RoomBatches::<i64>::default());
        let slow = |i: i64| {
            move |c: &mut DbConn| {
                insert(c, i)?;
                std::thread::sleep(std::time::Duration::from_millis(300));
                Ok(i)
            }
        };
        let spawn = |i: i64| {
            let (batches, db) = (batches.clone(), db.clone());
            tokio::spawn(async move { batches.run(&db, "!r:x", slow(i)).await })
        };
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(60));
        // 1 leads a batch alone; 2 and 3 queue behind it, and 2 leads the next batch with 3.
        let first = spawn(1);
        pause().await;
        let second = spawn(2);
        pause().await;
        let third = spawn(3);
        // 2's batch is under way when its client goes away.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        second.abort();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(third.await.unwrap().expect("3 committed and answered"), 3);
        let count: i64 = db
            .read(|c| -> Result<_, ServiceError> {
                #[derive(diesel::QueryableByName)]
                struct N {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                let n: N =
                    diesel::sql_query("SELECT COUNT(*) AS n FROM batch_test").get_result(c)?;
                Ok(n.n)
            })
            .await
            .unwrap();
        assert_eq!(count, 3, "2's write commits with its batch");
    }
}
