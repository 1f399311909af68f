//! Three journals replicating over real gRPC on loopback: one leader takes
//! proposals, every member applies the same entries, a stopped leader is replaced
//! without losing an acknowledged entry, a lost follower does not stop the group,
//! and a member that comes back catches up to an identical state machine.

use std::sync::Arc;
use std::time::Duration;
use strata_common::proto::{self, file_system_master_client::FileSystemMasterClient};
use strata_common::Error;
use strata_master::journal::{Journal, RaftJournal};
use strata_tests::group::{create_entry, Group};

async fn propose_many(journal: &Arc<RaftJournal>, ids: std::ops::Range<u64>) {
    let tasks: Vec<_> = ids
        .map(|id| {
            let j = journal.clone();
            tokio::spawn(async move { j.propose(create_entry(id)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

fn assert_identical(g: &Group, files: usize) {
    let dumps: Vec<_> = g.members.iter().map(|m| m.store.dump().unwrap()).collect();
    assert!(
        dumps.windows(2).all(|w| w[0] == w[1]),
        "identical state machines"
    );
    for m in &g.members {
        assert_eq!(m.names().len(), files, "member {}", m.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_masters_replicate_and_survive_the_loss_of_their_leader() {
    let mut g = Group::start(3, Duration::from_millis(50)).await;

    let leader = g.leader().await;
    let (leader_id, journal) = (leader.id, leader.journal.clone());
    // A follower refuses proposals: only the leader orders entries.
    let follower = g.members.iter().find(|m| m.id != leader_id).unwrap();
    let refused = follower.journal.propose(create_entry(999)).await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
    propose_many(&journal, 2..42).await;
    // Reads on the leader confirm it leads (a round with the others), and see
    // every acknowledged entry.
    let reads: Vec<_> = (0..16)
        .map(|_| {
            let j = journal.clone();
            tokio::spawn(async move { j.read_index().await })
        })
        .collect();
    for r in reads {
        r.await.unwrap().unwrap();
    }
    assert_eq!(g.leader().await.names().len(), 40);
    g.caught_up().await;
    assert_identical(&g, 40);

    // The leader goes away; the other two elect one and go on, with every
    // acknowledged entry.
    assert!(g.stop_member(leader_id).await);
    let leader = g.leader().await;
    assert_ne!(leader.id, leader_id);
    let journal = leader.journal.clone();
    propose_many(&journal, 42..62).await;
    assert_eq!(g.leader().await.names().len(), 60);

    // The old leader comes back and catches up from the new leader's log.
    g.start_member(leader_id).await;
    g.leader().await;
    g.caught_up().await;
    assert_identical(&g, 60);

    // A follower goes away: the other two are a majority and go on; it catches up
    // when it returns.
    let leader_id = g.leader().await.id;
    let follower_id = g.members.iter().find(|m| m.id != leader_id).unwrap().id;
    assert!(g.stop_member(follower_id).await);
    let journal = g.leader().await.journal.clone();
    propose_many(&journal, 62..72).await;
    g.start_member(follower_id).await;
    g.leader().await;
    g.caught_up().await;
    assert_identical(&g, 70);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_its_majority_stops_serving() {
    let mut g = Group::start(3, Duration::from_millis(50)).await;
    let leader_id = g.leader().await.id;
    let others: Vec<u64> = g
        .members
        .iter()
        .map(|m| m.id)
        .filter(|id| *id != leader_id)
        .collect();
    for id in others {
        g.stop_member(id).await;
    }
    let alone = g.members[0].journal.clone();
    // A proposal made now is appended but cannot commit; a read cannot confirm
    // that this master still leads, so it is never answered from its state.
    let waiting = {
        let j = alone.clone();
        tokio::spawn(async move { j.propose(create_entry(4)).await })
    };
    let read = {
        let j = alone.clone();
        tokio::spawn(async move { j.read_index().await })
    };
    // It learns within an election timeout (checked quorum) that it leads no
    // majority: it steps down and takes no more proposals.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while alone.status().role == strata_master::journal::Role::Leader {
        assert!(std::time::Instant::now() < deadline, "still leading alone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = alone.propose(create_entry(5)).await;
    assert!(
        matches!(refused, Err(Error::Unavailable { .. })),
        "{refused:?}"
    );
    let serving = tokio::time::timeout(Duration::from_millis(500), alone.ready()).await;
    assert!(serving.is_err(), "not serving without a majority");
    // The waiting proposal is answered, not left hanging: its outcome is unknown.
    let answered = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered once the lead is lost")
        .unwrap();
    assert!(
        matches!(answered, Err(Error::Unavailable { .. })),
        "{answered:?}"
    );
    let read = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the read is answered once the lead is lost")
        .unwrap();
    assert!(matches!(read, Err(Error::Unavailable { .. })), "{read:?}");
    g.stop().await;
}

/// A port free on 127.0.0.1 (and, loopback being one interface, almost surely on
/// the other 127.0.0.x addresses the masters bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct RunningMaster {
    handle: strata_master::MasterHandle,
    stop: tokio_util::sync::CancellationToken,
    /// A client that knows only this master (and follows its `NotLeader`).
    fs: strata_client::FileSystem,
    address: String,
}

/// A call to this one master, no failover: its own answer.
async fn ask(m: &RunningMaster) -> Result<(), Error> {
    let mut client = FileSystemMasterClient::connect(format!("http://{}", m.address))
        .await
        .map_err(Error::unavailable)?;
    client
        .get_mount_table(proto::GetMountTableRequest {})
        .await
        .map(|_| ())
        .map_err(Error::from)
}

/// The master that serves clients, once exactly one does; the others answer
/// `NotLeader` naming it.
async fn serving(masters: &[RunningMaster]) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut answers = Vec::new();
        for m in masters {
            answers.push(ask(m).await);
        }
        let ok: Vec<usize> = (0..answers.len()).filter(|i| answers[*i].is_ok()).collect();
        if let [l] = ok[..] {
            let named = answers.iter().enumerate().filter(|(i, _)| *i != l).all(|(_, a)| {
                matches!(a, Err(Error::NotLeader { leader }) if *leader == masters[l].address)
            });
            if named {
                return l;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no single serving master: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three `strata_master` instances on 127.0.0.1-3 sharing an rpc port, each with
/// a client that knows only it.
async fn start_three(root: &std::path::Path) -> Vec<RunningMaster> {
    let (rpc_port, raft_port) = (free_port(), free_port());
    let peers: Vec<String> = (1..=3)
        .map(|id| format!("\"{id}@127.0.0.{id}:{raft_port}\""))
        .collect();
    let mut masters = Vec::new();
    for id in 1..=3u64 {
        let mut config = strata_tests::test_config(
            &root.join(format!("m{id}")),
            &[
                ("master.id", id.to_string()),
                ("master.bind_host", format!("\"127.0.0.{id}\"")),
                ("master.rpc_port", rpc_port.to_string()),
                ("master.raft_port", raft_port.to_string()),
                ("master.peers", format!("[{}]", peers.join(", "))),
                ("master.root_ufs", "\"\"".to_string()),
            ],
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let handle = strata_master::start(strata_master::MasterDeps {
            config: config.clone(),
            shutdown: stop.clone(),
            pause_after_under_store: None,
        })
        .await
        .expect("a master of a group starts without waiting for a leader");
        let address = format!("127.0.0.{id}:{rpc_port}");
        config.master_addresses = vec![address.clone()];
        let fs = strata_client::FileSystem::connect(&config).await.unwrap();
        masters.push(RunningMaster {
            handle,
            stop,
            fs,
            address,
        });
    }
    masters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_masters_serve_from_the_leader_and_point_clients_to_it() {
    let root = tempfile::tempdir().unwrap();
    let mut masters = start_three(root.path()).await;

    // A client that knows all three masters.
    let mut config = strata_tests::test_config(root.path(), &[]);
    config.master_addresses = masters.iter().map(|m| m.address.clone()).collect();
    let all = strata_client::FileSystem::connect(&config).await.unwrap();

    // A worker that knows all three masters registers with the leader.
    let worker_dir = tempfile::tempdir().unwrap();
    let mem = strata_tests::mem_tempdir();
    let mut worker_config = config.clone();
    worker_config.data_dir = worker_dir.path().to_path_buf();
    worker_config.worker.mem_dir = mem.path().to_path_buf();
    let worker_stop = tokio_util::sync::CancellationToken::new();
    let mut worker = strata_worker::start(strata_worker::WorkerDeps {
        config: worker_config,
        shutdown: worker_stop.clone(),
    })
    .await
    .unwrap();

    let l = serving(&masters).await;
    wait_for_workers(&all).await;
    let data = strata_tests::pattern(200_000, 7);
    let mut w = all
        .create(
            "/cached",
            strata_client::CreateOptions {
                write_type: Some(strata_client::WriteType::MustCache),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(&data).await.unwrap();
    w.close().await.unwrap();
    all.mkdir("/a", false).await.unwrap();
    all.mkdir("/b/c", true).await.unwrap();
    // A client that knows only a follower is sent to the leader, for reads and
    // writes alike.
    let f = (l + 1) % 3;
    assert!(masters[f].fs.exists("/a").await.unwrap());
    masters[f].fs.mkdir("/x", false).await.unwrap();
    masters[f].fs.delete("/x", false).await.unwrap();
    // Every master applied the same entries.
    let status = masters[l].handle.journal_status();
    for m in &masters {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while m.handle.journal_status().applied < status.applied {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The leader stops: another takes over with everything acknowledged, and the
    // last one points to it.
    let old = masters.remove(l);
    old.stop.cancel();
    let mut handle = old.handle;
    handle.wait().await.unwrap();
    serving(&masters).await;
    // The same client, unchanged, finds the new leader.
    let fs = &all;
    assert_eq!(
        strata_tests::list_names(fs, "/").await,
        vec!["a", "b", "cached"]
    );
    // The worker follows the leader too, and keeps its blocks: every master has
    // the same cluster id, journaled by the first leader.
    wait_for_workers(fs).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fs.get_status("/cached").await.unwrap().cached_percent < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "blocks reported again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read_all(fs, "/cached").await, data);
    assert!(fs.exists("/b/c").await.unwrap());
    fs.mkdir("/d", false).await.unwrap();
    let fresh = fs.mkdir("/e", false).await.unwrap();
    assert!(
        fresh.id.0 > fs.get_status("/b/c").await.unwrap().id.0,
        "the new leader's ids come after every id used before"
    );
    worker_stop.cancel();
    worker.wait().await.unwrap();
    for m in masters {
        m.stop.cancel();
        let mut h = m.handle;
        h.wait().await.unwrap();
    }
}

async fn wait_for_workers(fs: &strata_client::FileSystem) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fs.workers().await.map(|w| w.is_empty()).unwrap_or(true) {
        assert!(std::time::Instant::now() < deadline, "no worker registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read_all(fs: &strata_client::FileSystem, path: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut r = fs
        .open(path, strata_client::OpenOptions::default())
        .await
        .unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

/// A read that reaches a new leader before it has committed an entry of its
/// term must wait for that commit, not vanish: a lost round would leave every
/// later read on that leader waiting for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_during_an_election_are_answered() {
    let mut g = Group::start(3, Duration::from_millis(50)).await;
    let old = g.leader().await.id;
    let survivors: Vec<Arc<RaftJournal>> = g
        .members
        .iter()
        .filter(|m| m.id != old)
        .map(|m| m.journal.clone())
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Each survivor is asked to read without pause while the election runs:
    // followers refuse at once, the new leader must answer every read.
    let readers: Vec<_> = survivors
        .iter()
        .map(|j| {
            let (j, stop) = (j.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answered = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_secs(5), j.read_index()).await {
                        Err(_) => return Err("a read was never answered"),
                        Ok(Ok(())) => answered += 1,
                        Ok(Err(_)) => tokio::task::yield_now().await,
                    }
                }
                Ok(answered)
            })
        })
        .collect();
    assert!(g.stop_member(old).await);
    let new = g.leader().await.journal.clone();
    // Reads keep being answered on the new leader for a while after it serves.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for r in readers {
        answered += r.await.unwrap().unwrap();
    }
    assert!(answered > 0, "the new leader answered reads");
    tokio::time::timeout(Duration::from_secs(5), new.read_index())
        .await
        .expect("a read after the election is answered")
        .unwrap();
    g.stop().await;
}

/// A group of 3 whose members take a snapshot every 30 entries and keep 5 behind
/// it (restarted with those settings after the first start).
async fn compacting_group() -> Group {
    let mut g = Group::start(3, Duration::from_millis(50)).await;
    g.compaction = (30, 5);
    for id in 1..=3 {
        assert!(g.stop_member(id).await);
        g.start_member(id).await;
    }
    g
}

/// A member whose data was wiped (a format) while the others compacted their
/// logs cannot catch up from the log: it receives the leader's snapshot, streamed
/// in chunks, installs it and goes on from the log. Then it serves as leader
/// with the whole state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_member_catches_up_through_a_snapshot_and_can_lead() {
    let mut g = compacting_group().await;
    let journal = g.leader().await.journal.clone();
    propose_many(&journal, 2..42).await;
    g.caught_up().await;
    let leader_id = g.leader().await.id;
    let wiped = g.members.iter().find(|m| m.id != leader_id).unwrap().id;
    assert!(g.stop_member(wiped).await);
    g.wipe_member(wiped);
    let journal = g.leader().await.journal.clone();
    propose_many(&journal, 42..102).await;
    let first = g.leader().await.journal.status().first_index;
    assert!(
        first > 2,
        "the leader's log is compacted (starts at {first})"
    );

    g.start_member(wiped).await;
    g.leader().await;
    g.caught_up().await;
    assert_identical(&g, 100);
    let status = g
        .members
        .iter()
        .find(|m| m.id == wiped)
        .unwrap()
        .journal
        .status();
    assert!(
        status.first_index > 2,
        "it started from a snapshot, not from entry 1: {status:?}"
    );

    // The others stop in turn until the caught-up member leads (two of three
    // are always running): it serves everything, and goes on.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let leader = g.leader().await.id;
        if leader == wiped {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "it never led");
        assert!(g.stop_member(leader).await);
        let now = g.leader().await.id;
        if now == wiped {
            break;
        }
        g.start_member(leader).await;
        g.caught_up().await;
    }
    let leader = g.leader().await;
    assert_eq!(leader.names().len(), 100);
    let journal = leader.journal.clone();
    propose_many(&journal, 102..112).await;
    assert_eq!(g.leader().await.names().len(), 110);
    g.stop().await;
}

/// A master that crashed while it installed a snapshot (the log marks the
/// installation before the metastore is touched) finishes the installation when
/// it starts again, from the files it received, before anything reads its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_snapshot_installation_is_finished_at_start() {
    let mut g = compacting_group().await;
    let journal = g.leader().await.journal.clone();
    propose_many(&journal, 2..22).await;
    g.caught_up().await;
    let leader_id = g.leader().await.id;
    let crashed = g.members.iter().find(|m| m.id != leader_id).unwrap().id;
    assert!(g.stop_member(crashed).await);
    let journal = g.leader().await.journal.clone();
    propose_many(&journal, 22..62).await;
    let (index, term) = journal.checkpoint().await.unwrap();

    // What the crashed master had when it stopped: the leader's snapshot received
    // in full, and the installation marked in its log.
    let from = journal.snapshots().path(index, term);
    let to = strata_master::journal::snapshot::folder_for(&g.meta_dir(crashed))
        .join(format!("incoming-{index}-{term}"));
    std::fs::create_dir_all(&to).unwrap();
    for f in std::fs::read_dir(&from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
    {
        let log =
            strata_master::journal::log::LogStore::open(&g.journal_dir(crashed), crashed).unwrap();
        log.begin_install(index, term).unwrap();
    }

    // Alone (the others stopped), it can learn nothing from them: what it holds
    // at start comes from finishing the installation.
    let others: Vec<u64> = g.members.iter().map(|m| m.id).collect();
    for id in &others {
        assert!(g.stop_member(*id).await);
    }
    g.start_member(crashed).await;
    let m = g.members.iter().find(|m| m.id == crashed).unwrap();
    assert_eq!(m.store.applied_index().unwrap(), index);
    assert_eq!(m.names().len(), 60);
    // The node's thread publishes its state once it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while m.journal.status().first_index == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(m.journal.status().first_index, index + 1);
    for id in others {
        g.start_member(id).await;
    }
    let journal = g.leader().await.journal.clone();
    propose_many(&journal, 62..72).await;
    g.caught_up().await;
    assert_identical(&g, 70);
    g.stop().await;
}

/// The leader believes a member it had caught up still holds everything, so it
/// sends it nothing new while the group is quiet (and refuses its rejections as
/// stale). A member wiped and formatted meanwhile notices from the leader's
/// heartbeats, asks for a snapshot, and catches up with no write to prompt it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_member_of_a_quiet_group_catches_up() {
    let mut g = Group::start(3, Duration::from_millis(50)).await;
    let journal = g.leader().await.journal.clone();
    propose_many(&journal, 2..22).await;
    g.caught_up().await;
    let leader_id = g.leader().await.id;
    let wiped = g.members.iter().find(|m| m.id != leader_id).unwrap().id;
    assert!(g.stop_member(wiped).await);
    g.wipe_member(wiped);
    g.start_member(wiped).await;
    let index = journal.status().applied;
    let member = g
        .members
        .iter()
        .find(|m| m.id == wiped)
        .unwrap()
        .journal
        .clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while member.status().applied < index {
        assert!(
            std::time::Instant::now() < deadline,
            "it never caught up: {:?}",
            member.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(member);
    drop(journal);
    g.caught_up().await;
    assert_identical(&g, 20);
    g.stop().await;
}

/// A leader cut off from the others (it does not know yet) answers no refusal
/// from its state, which may be stale: a create of a name it holds is not
/// "already exists" until it has confirmed it still leads; here it cannot, so
/// the caller is told to go elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_leader_answers_no_refusal_from_its_state() {
    let root = tempfile::tempdir().unwrap();
    let mut masters = start_three(root.path()).await;
    let l = serving(&masters).await;
    masters[l].fs.mkdir("/x", false).await.unwrap();
    let leader = masters.remove(l);
    for m in masters {
        m.stop.cancel();
        let mut h = m.handle;
        h.wait().await.unwrap();
    }
    let mut client = FileSystemMasterClient::connect(format!("http://{}", leader.address))
        .await
        .unwrap();
    let answer = client
        .create_directory(proto::CreateDirectoryRequest {
            path: "/x".into(),
            recursive: false,
            request: None,
        })
        .await
        .map_err(Error::from);
    assert!(
        matches!(
            answer,
            Err(Error::Unavailable { .. } | Error::NotLeader { .. })
        ),
        "{answer:?}"
    );
    leader.stop.cancel();
    let mut h = leader.handle;
    h.wait().await.unwrap();
}
