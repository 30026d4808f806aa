//! A consumer group at work, for black-box tests of what moves underneath it (a coordinator's
//! failover, partitions moving between brokers): a topic with three replicas per partition, a
//! steady idempotent `acks=all` producer, three consumer processes in one group
//! (`super::children`), and the checks at the end of a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset};

use super::children::{covering, ChildProc, ChildView, CHILD_COMMIT_EVERY};
use super::cluster::TestCluster;
use super::{admin_opts, block_on, committed, wait_for};

/// Bound on every wait: three or four brokers, three consumers and a producer share two cores.
pub const WAIT: Duration = Duration::from_secs(90);

/// The topic, the group, and the members' session.
pub struct GroupLoad {
    pub topic: &'static str,
    pub group: &'static str,
    pub parts: i32,
    /// The members' session timeout (ms): librdkafka gives a membership up when no heartbeat
    /// succeeds for this long, so it must outlast what the test does to the cluster.
    pub session_ms: u64,
}

/// An idempotent `acks=all` producer on its own thread: `s{seq}` to partition `seq % parts`,
/// one at a time, until stopped. Returns what was acknowledged: value -> (partition, offset).
/// Any send that fails (beyond librdkafka's own retries) fails the test.
pub struct SteadyProducer {
    stop: Arc<AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<JoinHandle<BTreeMap<String, (i32, i64)>>>,
}

impl SteadyProducer {
    pub fn start(bootstrap: &str, topic: &'static str, parts: i32) -> SteadyProducer {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            // Longer than any failover here: a send waits it out instead of failing.
            .set("message.timeout.ms", "60000")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .expect("producer");
        let (stopping, counting) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut acked = BTreeMap::new();
            let mut seq: u64 = 0;
            while !stopping.load(Ordering::Relaxed) {
                let value = format!("s{seq}");
                let partition = (seq % parts as u64) as i32;
                let r = block_on(
                    producer.send(
                        FutureRecord::<(), _>::to(topic)
                            .partition(partition)
                            .payload(&value),
                        Duration::from_secs(0),
                    ),
                );
                match r {
                    Ok(d) => {
                        acked.insert(value, (d.partition, d.offset));
                    }
                    Err((e, _)) => panic!("{value} was not acknowledged: {e}"),
                }
                seq += 1;
                counting.store(seq, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
            acked
        });
        SteadyProducer {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// How many records were acknowledged so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn finish(mut self) -> BTreeMap<String, (i32, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("running");
        t.join().expect("the producer thread panicked")
    }
}

impl Drop for SteadyProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Each child's assignment and rebalance count now, for [`assert_not_rebalanced`].
pub fn memberships(kids: &[ChildProc]) -> Vec<(BTreeSet<i32>, usize)> {
    kids.iter()
        .map(|k| {
            let v = k.view();
            (v.assigned, v.rebalances)
        })
        .collect()
}

/// No child was rebalanced since `before` ([`memberships`]); `by` names what happened meanwhile.
pub fn assert_not_rebalanced(kids: &[ChildProc], before: &[(BTreeSet<i32>, usize)], by: &str) {
    for (k, (assigned, rebalances)) in kids.iter().zip(before) {
        let v = k.view();
        assert_eq!(
            (&v.assigned, v.rebalances),
            (assigned, *rebalances),
            "{} was rebalanced by {by}: {:?}",
            k.name,
            v.tail
        );
    }
}

/// What [`GroupLoad::finish`] counted.
pub struct Finished {
    /// Records read more than once by the time every acknowledged record was read, before the
    /// children stopped (each leaving triggers a rebalance of its own).
    pub duplicates_while_running: usize,
    pub duplicates: usize,
    pub rebalances: usize,
    /// What the producer had acknowledged: value -> (partition, offset).
    pub acked: BTreeMap<String, (i32, i64)>,
}

impl GroupLoad {
    /// Creates the topic: `parts` partitions, three replicas each.
    pub fn create_topic(&self, bootstrap: &str) {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4");
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            c.create().expect("admin");
        let r = block_on(admin.create_topics(
            &[NewTopic::new(
                self.topic,
                self.parts,
                TopicReplication::Fixed(3),
            )],
            &admin_opts(),
        ))
        .expect("create topic");
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    }

    /// The high watermark of every partition, as a live node says.
    pub fn high_watermarks(&self, bootstrap: &str) -> BTreeMap<i32, i64> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4")
            .set("group.id", "hw-reader")
            .create()
            .expect("consumer");
        (0..self.parts)
            .map(|p| {
                let (_, high) = wait_for(
                    &format!("the high watermark of partition {p}"),
                    WAIT,
                    Duration::from_millis(200),
                    || {
                        c.fetch_watermarks(self.topic, p, Duration::from_secs(5))
                            .ok()
                    },
                );
                (p, high)
            })
            .collect()
    }

    /// The group, running: three children holding disjoint shares of the partitions, each
    /// having committed what it read of them.
    pub fn running_group(&self, cluster: &TestCluster, dir: &std::path::Path) -> Vec<ChildProc> {
        let kids: Vec<ChildProc> = (0..3)
            .map(|i| {
                let name = format!("child{i}");
                ChildProc::spawn_with(
                    &name,
                    &cluster.bootstrap(),
                    self.group,
                    self.topic,
                    dir,
                    self.session_ms,
                )
            })
            .collect();
        let shares = wait_for(
            "three children with disjoint assignments covering the partitions",
            WAIT,
            Duration::from_millis(100),
            || {
                covering(
                    &kids.iter().map(|k| k.view()).collect::<Vec<_>>(),
                    self.parts,
                )
            },
        );
        eprintln!("assignments: {shares:?}");
        wait_for(
            "every child to commit on each of its partitions",
            WAIT,
            Duration::from_millis(100),
            || {
                kids.iter()
                    .all(|k| {
                        let v = k.view();
                        v.assigned.iter().all(|p| v.committed.contains_key(p))
                    })
                    .then_some(())
            },
        );
        kids
    }

    /// Waits until every child has read a record produced after `mark` (values `s{seq}`), saying
    /// when the producer and each child got going again.
    pub fn all_read_past(
        &self,
        kids: &[ChildProc],
        producer: &SteadyProducer,
        mark: u64,
        what: &str,
    ) {
        let from = Instant::now();
        let mut produced_at = None;
        let mut read_at: Vec<Option<Duration>> = vec![None; kids.len()];
        wait_for(what, WAIT, Duration::from_millis(50), || {
            if produced_at.is_none() && producer.sent() > mark + self.parts as u64 {
                produced_at = Some(from.elapsed());
            }
            for (k, at) in kids.iter().zip(&mut read_at) {
                let past = k.view().recs.iter().any(|(_, _, v)| {
                    v.strip_prefix('s')
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_some_and(|s| s > mark)
                });
                if past && at.is_none() {
                    *at = Some(from.elapsed());
                }
            }
            read_at.iter().all(Option::is_some).then_some(())
        });
        eprintln!(
        "a write to every partition acknowledged after {produced_at:?}; each child reading new \
         records after {read_at:?}"
    );
    }

    /// The end of a run: the producer stops, every acknowledged record is read, the children
    /// stop (final commit); then nothing was skipped, every read matches its acknowledgement, no
    /// commit went backwards, and the group's committed offsets are the high watermarks.
    pub fn finish(
        &self,
        cluster: &mut TestCluster,
        producer: SteadyProducer,
        mut kids: Vec<ChildProc>,
        via: i32,
    ) -> Finished {
        let acked = producer.finish();
        eprintln!("{} records acknowledged", acked.len());
        wait_for(
            "every acknowledged record to be read by some child",
            WAIT,
            Duration::from_millis(200),
            || {
                let seen: BTreeSet<String> = kids
                    .iter()
                    .flat_map(|k| k.view().recs)
                    .map(|r| r.2)
                    .collect();
                acked.keys().all(|v| seen.contains(v)).then_some(())
            },
        );
        let read_while_running: usize = kids.iter().map(|k| k.view().recs.len()).sum();
        let duplicates_while_running = read_while_running.saturating_sub(acked.len());
        for k in &mut kids {
            let status = k.stop();
            assert!(status.success(), "{} exited with {status}", k.name);
            assert!(k.view().stopped, "{} did not log its final commit", k.name);
        }
        let views: Vec<ChildView> = kids.iter().map(|k| k.view()).collect();
        let reads: Vec<(i32, i64, String)> = views.iter().flat_map(|v| v.recs.clone()).collect();
        for (p, o, v) in &reads {
            assert_eq!(
                acked.get(v),
                Some(&(*p, *o)),
                "read {v:?} at {p}/{o}, which is not where it was acknowledged"
            );
        }
        let hw = self.high_watermarks(&cluster.bootstrap_of(&[via]));
        for (p, end) in &hw {
            let read: BTreeSet<i64> = reads.iter().filter(|r| r.0 == *p).map(|r| r.1).collect();
            let skipped: Vec<i64> = (0..*end).filter(|o| !read.contains(o)).collect();
            assert!(
                skipped.is_empty(),
                "partition {p}: offsets below the high watermark {end} nobody read: {skipped:?}"
            );
        }
        for (k, v) in kids.iter().zip(&views) {
            assert!(
                v.commits_backwards.is_empty(),
                "{}: committed offsets went backwards: {:?}",
                k.name,
                v.commits_backwards
            );
        }
        let got = committed(cluster.node(via), self.group, self.topic, self.parts);
        let want: BTreeMap<i32, Offset> =
            hw.iter().map(|(p, h)| (*p, Offset::Offset(*h))).collect();
        assert_eq!(got, want, "committed offsets vs high watermarks");
        let duplicates = reads.len() - acked.len();
        let rebalances: usize = views.iter().map(|v| v.rebalances).sum();
        // Beyond each child's first assignment, a rebalance hands a partition over at its last
        // commit: what was read after it is read again, at most a commit interval per partition.
        let window =
            rebalances.saturating_sub(kids.len()) * self.parts as usize * CHILD_COMMIT_EVERY;
        assert!(
            duplicates <= window,
            "{duplicates} records read twice, more than {rebalances} rebalances explain"
        );
        Finished {
            duplicates_while_running,
            duplicates,
            rebalances,
            acked,
        }
    }
}
